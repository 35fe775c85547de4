"""How far the track's landmarks, which keyframes are judged and placed on, lie from the
detector's own on the same frame, and what the covered decision makes of each.

The stage clip (unmasked) runs through the Kalman tracker as the pipeline feeds it (the
detector every `tracking.detect_every` frames, optical flow between) from 40 frames before
FIRST. On every frame from FIRST to LAST, each followed face at least 60 px wide is matched
to that frame's nearest fresh detection; the script prints the largest distance between
their five points (in eye distances) and the covered score judged on each set of points
(the painter's decision, as `lostface detect --json` gives it; 0.5 and more: covered).

    python bench/landmark_drift.py [--frames 96:125] [--set KEY=VALUE ...]

Writes bench/results/landmark_drift.json.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from lostface.config import load_settings
from lostface.factory import build_detector
from lostface.registry import build_painter
from lostface.restore.painter import PaintJob
from lostface.stream.video import read_frames
from lostface.tracking.tracker import KalmanTracker

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RUN_IN = 40  # frames tracked before FIRST, so the track has its history


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", default="96:125", help="FIRST:LAST (LAST not included)")
    ap.add_argument("--set", action="append", default=[], help="a setting, KEY=VALUE")
    args = ap.parse_args()
    first, last = (int(x) for x in args.frames.split(":"))
    settings = load_settings(overrides=args.set)
    detector = build_detector(settings)
    painter = build_painter(settings, None)
    frames = read_frames(SHARED / "video" / "stage_clip.mp4")
    tracker = KalmanTracker(settings.tracking)
    every = settings.tracking.detect_every
    rows = []
    for i in range(max(0, first - RUN_IN), min(last, len(frames))):
        image = frames[i]
        tracks = tracker.update(detector.detect(image) if i % every == 0 else None, image=image)
        if i < first:
            continue
        fresh = detector.detect(image)
        if not len(fresh.boxes):
            continue
        centres = (fresh.boxes[:, :2] + fresh.boxes[:, 2:]) / 2
        for t in tracks:
            if t.box[2] - t.box[0] < 60:
                continue
            k = int(np.argmin(np.linalg.norm(centres - (t.box[:2] + t.box[2:]) / 2, axis=1)))
            seen = fresh.landmarks[k][:5]
            eye = float(np.linalg.norm(seen[0] - seen[1]))
            off = float(np.linalg.norm(t.landmarks[:5] - seen, axis=1).max()) / max(eye, 1.0)
            scores = [
                painter.judge(PaintJob.from_frame(t.track_id, i, image, lm)).score
                for lm in (t.landmarks, fresh.landmarks[k])
            ]
            row = {
                "frame": i,
                "detected": i % every == 0,
                "track": t.track_id,
                "offset_eye_distances": round(off, 3),
                "score_track_points": round(scores[0], 3),
                "score_detection_points": round(scores[1], 3),
            }
            rows.append(row)
            print(
                f"frame {i:4d}{' det' if row['detected'] else '    '} track {t.track_id}: "
                f"points {off:.2f} eye distances apart, covered score {scores[0]:.3f} on the "
                f"track's, {scores[1]:.3f} on the detection's"
            )
    out = ROOT / "bench" / "results" / "landmark_drift.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {"frames": args.frames, "settings": args.set, "rows": rows}
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
