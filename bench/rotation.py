"""Phone-video benchmark: masked faces found on a clip stored turned with a display matrix,
against the same clip upright.

    python bench/rotation.py [--runs 3] [--frames 275] [--synchronous]

The clip is ../shared/data/video/stage_clip.mp4 with a synthetic surgical mask drawn on its
largest face in every frame (landmarks smoothed within a shot, as the `bench` suite draws
them). It is written three more ways, as phones write portrait video: the pixels turned a
quarter turn with a display matrix that turns them back (rotation 90 and 270), and the same
turned pixels with no display matrix ("sideways": what a reader that ignores the matrix sees,
lostface before it applied the matrix). Each file goes through `lostface run` (the whole
command, default settings, no reference) with --tracks, and the frames with at least one face
judged masked are counted. Prints medians over the runs and the ratio to the upright clip in
the same run; writes bench/results/rotation.json (rotation_synchronous.json).

--synchronous runs the pipeline in this process with the keyframe work in the frame loop
(runner.process_video(synchronous=True)): the counts then repeat exactly and do not depend on
the machine's load, so the clips differ by their pixels alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
sys.path.insert(0, str(ROOT))

from lostface.config import load_settings  # noqa: E402
from lostface.frame import Frame  # noqa: E402
from tests.media import write_clip  # noqa: E402

# name -> (quarter turns applied to the stored pixels, display rotation written)
VARIANTS = {
    "upright": (0, 0),
    "rotation 90": (-1, 90),
    "rotation 270": (1, 270),
    "sideways": (-1, 0),
}


def masked_clip(frames: int) -> tuple[list[np.ndarray], float]:
    """The stage clip's first `frames` frames with a synthetic mask on the largest face."""
    from lostface.factory import build_detector
    from lostface.stream.video import VideoReader
    from lostface.synthetic import draw_mask, steady_landmarks
    from lostface.tracking.scenecut import HistogramSceneCut

    settings = load_settings()
    detector = build_detector(settings)
    cut = HistogramSceneCut(settings.tracking.scene_cut_threshold)
    images, lms, boxes, shots = [], [], [], []
    with VideoReader(DATA / "video" / "stage_clip.mp4") as reader:
        rate = float(reader.info.rate)
        for item in reader.items():
            if not isinstance(item, Frame):
                continue
            if len(images) >= frames:
                break
            images.append(item.image)
            new = cut.is_cut(item.image)
            shots.append(shots[-1] + int(new) if shots else 0)
            d = detector.detect(item.image)
            if len(d):
                b = d.boxes
                i = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
                lms.append(d.landmarks[i][:5].astype(np.float64))
                boxes.append(b[i].copy())
            else:
                lms.append(None)
                boxes.append(None)
    steady = steady_landmarks(lms, boxes, shots)
    out = []
    for img, lm in zip(images, steady, strict=True):
        if lm is not None:
            img = draw_mask(img, lm, kind="surgical", rng=np.random.default_rng(0)).image
        out.append(img)
    return out, rate


def masked_frames(src: Path, work: Path, synchronous: bool = False) -> int:
    tracks = work / f"{src.stem}.jsonl"
    out = work / f"{src.stem}_out.mp4"
    if synchronous:
        from lostface.factory import build_stages
        from lostface.runner import process_video

        settings = load_settings(overrides=["output.progress=false"])
        process_video(src, out, settings, build_stages(settings), tracks, synchronous=True)
        return count(tracks)
    proc = subprocess.run(
        [sys.executable, "-m", "lostface.cli", "run", str(src), "-o", str(out)]
        + ["--tracks", str(tracks), "-q"],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        check=False,
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return count(tracks)


def count(tracks: Path) -> int:
    """Frames of a --tracks file with at least one face judged masked."""
    rows = [json.loads(x) for x in tracks.read_text().splitlines()]
    return sum(any(f["masked"] for f in r["faces"]) for r in rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--frames", type=int, default=275)
    ap.add_argument("--synchronous", action="store_true", help="keyframe work in the frame loop")
    args = ap.parse_args()
    frames, rate = masked_clip(args.frames)
    counts: dict[str, list[int]] = {v: [] for v in VARIANTS}
    with tempfile.TemporaryDirectory(prefix="lostface-rotation-") as tmp:
        work = Path(tmp)
        files = {}
        for name, (turns, rotation) in VARIANTS.items():
            stored = [np.ascontiguousarray(np.rot90(f, turns)) for f in frames]
            path = work / (name.replace(" ", "_") + ".mp4")
            files[name] = write_clip(path, stored, rate=round(rate), rotation=rotation)
        for r in range(args.runs):
            for name, path in files.items():  # interleaved: this machine's load drifts
                counts[name].append(masked_frames(path, work, args.synchronous))
                print(f"run {r} {name}: {counts[name][-1]} frames with a masked face", flush=True)
    med = {k: statistics.median(v) for k, v in counts.items()}
    print(f"\nmasked faces found, frames of {len(frames)} (median of {args.runs} runs):")
    print(f"{'clip':<14} {'frames':>7} {'vs upright':>11}  runs")
    for name in VARIANTS:
        ratio = med[name] / med["upright"] if med["upright"] else float("nan")
        print(f"{name:<14} {med[name]:>7} {ratio:>11.3f}  {counts[name]}")
    name = "rotation_synchronous.json" if args.synchronous else "rotation.json"
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "synchronous": args.synchronous,
        "frames": len(frames),
        "runs": counts,
        "median": med,
        "ratio_vs_upright": {
            k: (v / med["upright"] if med["upright"] else None) for k, v in med.items()
        },
    }
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
