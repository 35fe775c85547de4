"""Small faces found and tracked: masked faces 45-60 px wide in 640x360 footage.

The benchmark builds its own clip (300 frames, 640x360, 30 frames/s): four real masked faces
from ../shared/data/masked, cut out with a soft edge, scaled to 45-60 px wide (the face box
CenterFace finds on the photo) and moved over a blurred frame of the stage clip on known
paths. Two pairs swing past each other, so each pair crosses twice (the later-drawn face
passes in front). The clip runs through `lostface run` (runner.process_video, `--tracks`),
and the tracked boxes are compared with the known ones per frame (motmetrics, IoU >= 0.3):
recall (share of the true face-frames with a track on them) and id switches.

    python bench/small_faces.py [--set KEY=VALUE ...] [--png DIR] [--enter FRAME]

Prints the figures and writes bench/results/small_faces.json; --png writes a few frames with
the true boxes (green) and the tracked ones (red, with their ids). --enter FRAME: the faces
come into the clip at that frame (the frames before show the background alone), as a face
does that walks into a shot; recall and id switches are then counted from that frame on,
with the frames each face waited until it was first tracked (written to
small_faces_enter<FRAME>.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from lostface.config import load_settings
from lostface.factory import build_detector, build_stages
from lostface.frame import Frame
from lostface.runner import process_video
from lostface.stream.video import VideoInfo, VideoWriter, read_frames

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
W, H, N = 640, 360, 300
PHOTOS = ("0001.jpg", "0010.jpg", "0020.jpg", "0030.jpg")
WIDTHS = (45, 52, 60, 48)  # face box widths, frame pixels
# (x centre, y centre) of each face at frame t: two pairs swinging past each other
PERIOD = 300.0


def path(k: int, t: int) -> tuple[float, float]:
    phase = 2 * np.pi * (t + 37) / PERIOD
    side = 1 if k % 2 == 0 else -1
    x = 320 + side * 220 * np.sin(phase)
    y = (110 if k < 2 else 250) + 12 * (k % 2) + 10 * np.sin(3 * phase + k)
    return float(x), float(y)


def cutouts(detector) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(BGR patch, alpha, face box in patch pixels) per face, scaled to its width."""
    out = []
    for name, width in zip(PHOTOS, WIDTHS, strict=True):
        img = cv2.imread(str(DATA / "masked" / name))
        d = detector.detect(img)
        i = int(np.argmax((d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])))
        x0, y0, x1, y1 = d.boxes[i]
        k = width / (x1 - x0)
        cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, 0.8 * max(x1 - x0, y1 - y0)
        m = np.float32([[k, 0, half * k - cx * k], [0, k, half * k - cy * k]])
        side = int(round(2 * half * k))
        patch = cv2.warpAffine(img, m, (side, side), flags=cv2.INTER_AREA)
        alpha = np.zeros((side, side), np.float32)
        cv2.ellipse(alpha, (side // 2, side // 2), (side // 2 - 2, side // 2 - 2), 0, 0, 360, 1, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), side / 14)
        box = np.array([x0 - cx, y0 - cy, x1 - cx, y1 - cy]) * k + side / 2
        out.append((patch, alpha, box))
    return out


def build_clip(dst: Path, detector, enter: int = 0) -> list[list[np.ndarray]]:
    """Writes the clip (the faces drawn from frame `enter` on); returns the true face boxes
    per frame."""
    stage = read_frames(DATA / "video" / "stage_clip.mp4", 1)[0]
    back = cv2.GaussianBlur(cv2.resize(stage, (W, H)), (0, 0), 12)  # no face left in it
    faces = cutouts(detector)
    info = VideoInfo(W, H, Fraction(30), Fraction(1, 30), N, False)
    truth = []
    writer = VideoWriter(dst, info, load_settings(overrides=["video.crf=18"]).video, None)
    for t in range(N):
        img = back.astype(np.float32)
        boxes = []
        for k, (patch, alpha, box) in enumerate(faces if t >= enter else []):
            cx, cy = path(k, t)
            s = patch.shape[0]
            x0, y0 = int(round(cx - s / 2)), int(round(cy - s / 2))
            region = img[y0 : y0 + s, x0 : x0 + s]
            a = alpha[..., None]
            region[:] = region * (1 - a) + patch * a
            boxes.append(box + [x0, y0, x0, y0])
        truth.append(boxes)
        writer.write(Frame(np.clip(img + 0.5, 0, 255).astype(np.uint8), t, t, Fraction(1, 30)))
    writer.commit()
    return truth


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def waits(truth: list[list[np.ndarray]], records: list[dict], enter: int) -> list[int | None]:
    """Per face, the frames from `enter` until a track first lies on it (IoU >= 0.3); None
    when none ever does."""
    out: list[int | None] = []
    for k in range(len(truth[enter]) if enter < len(truth) else 0):
        found = None
        for t in range(enter, len(truth)):
            boxes = [np.asarray(f["box"]) for f in records[t]["faces"]]
            if any(iou(truth[t][k], b) >= 0.3 for b in boxes):
                found = t - enter
                break
        out.append(found)
    return out


def score(truth: list[list[np.ndarray]], records: list[dict]) -> dict:
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for boxes, rec in zip(truth, records, strict=True):
        hyp = [f for f in rec["faces"]]
        dist = np.full((len(boxes), len(hyp)), np.nan)
        for i, b in enumerate(boxes):
            for j, f in enumerate(hyp):
                v = iou(b, np.asarray(f["box"]))
                if v >= 0.3:
                    dist[i, j] = 1.0 - v
        acc.update(list(range(len(boxes))), [f["track_id"] for f in hyp], dist)
    s = mm.metrics.create().compute(
        acc, metrics=["recall", "precision", "num_switches", "num_false_positives"], name="all"
    )
    return {
        "recall": float(s["recall"].iloc[0]),
        "precision": float(s["precision"].iloc[0]),
        "id_switches": int(s["num_switches"].iloc[0]),
        "false_positive_boxes": int(s["num_false_positives"].iloc[0]),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--png", type=Path, default=None, help="write a few annotated frames here")
    ap.add_argument("--out", type=Path, default=None, help="the JSON (default: in bench/results)")
    ap.add_argument(
        "--enter",
        type=int,
        default=0,
        metavar="FRAME",
        help="the faces come in at this frame (default 0: there from the start)",
    )
    args = ap.parse_args(argv)
    if not 0 <= args.enter < N:
        print(f"--enter must lie in 0..{N - 1}.", file=sys.stderr)
        return 2
    if args.out is None:
        name = f"small_faces_enter{args.enter}.json" if args.enter else "small_faces.json"
        args.out = RESULTS / name
    if not (DATA / "masked").is_dir():
        print(f"{DATA / 'masked'} is absent: this benchmark needs ../shared/data", file=sys.stderr)
        return 2
    settings = load_settings(overrides=args.overrides)
    with tempfile.TemporaryDirectory(prefix="lostface-small-") as tmp:
        clip = Path(tmp) / "small_faces.mp4"
        truth = build_clip(clip, build_detector(load_settings()), args.enter)
        tracks = Path(tmp) / "tracks.jsonl"
        out = Path(tmp) / "out.mp4"
        stats = process_video(clip, out, settings, build_stages(settings), tracks)
        records = [json.loads(line) for line in tracks.read_text().splitlines()]
        if args.png is not None:
            args.png.mkdir(parents=True, exist_ok=True)
            frames = read_frames(out)
            for t in (0, 113, 200, 263):
                img = frames[t].copy()
                for b in truth[t]:
                    cv2.rectangle(img, tuple(map(int, b[:2])), tuple(map(int, b[2:])), (0, 255, 0))
                for f in records[t]["faces"]:
                    b = [int(v) for v in f["box"]]
                    cv2.rectangle(img, (b[0], b[1]), (b[2], b[3]), (0, 0, 255))
                    cv2.putText(img, str(f["track_id"]), (b[0], b[1] - 2), 0, 0.4, (0, 0, 255))
                cv2.imwrite(str(args.png / f"small_faces_{t:03d}.png"), img)
    e = args.enter
    result = {"settings": args.overrides, "enter": e, **score(truth[e:], records[e:])}
    result["frames_per_second"] = round(float(getattr(stats, "fps", 0.0) or 0.0), 1)
    line = (
        f"small faces (4 masked faces 45-60 px, 640x360, {N} frames): recall "
        f"{result['recall']:.3f} at IoU 0.3 (target >= 0.90), {result['id_switches']} id "
        f"switches (target <= 2), precision {result['precision']:.3f}"
    )
    if e:
        result["frames_to_first_track"] = waits(truth, records, e)
        shown = ", ".join("never" if w is None else str(w) for w in result["frames_to_first_track"])
        line += f"; coming in at frame {e} (counted from there): first tracked after {shown} frames"
    print(line)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
