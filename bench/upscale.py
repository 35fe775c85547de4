"""What an upscaler does for small faces: segmentation and identity with and without it.

Every --every-th frame of ../shared/data/video/stage_clip.mp4: each face the embedded detector
finds whose box is narrower than --max-side pixels gets a synthetic mask (lostface.synthetic,
the truth region known) on a copy of the frame, alone; that face is then painted as one
keyframe by lostface's Painter with each upscale engine (`resize`, today's resampling, and
`realesrgan`, Real-ESRGAN x4plus on the CPU), in the same run:

- judged covered: the share of masked faces the segmenter judged covered;
- IoU: the covered region found (the segmenter's hard region, canonical space) against the
  synthetic truth warped into the same space, over the faces judged covered;
- identity: dlib's identity distance between the original face and the restored frame (the
  patch composited), on the original's face chip; the masked input is the baseline (faces this
  small are near the edge of what dlib's embedding resolves: read it with that in mind);
- keyframe ms: the painter's wall time per face.

The restorer is the embedded one with the clip's reference photo. Prints a table and writes
bench/results/upscale.json and a grid of faces (original | masked | resize | realesrgan).

    python bench/upscale.py [--every 3] [--max-side 64] [--limit 0]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"
ENGINES = ("resize", "realesrgan")

from lostface.config import load_settings  # noqa: E402
from lostface.factory import build_detector, load_references  # noqa: E402
from lostface.frame import FaceTrack, Frame  # noqa: E402
from lostface.metrics import IdentityMetric  # noqa: E402
from lostface.registry import build_painter  # noqa: E402
from lostface.restore import align  # noqa: E402
from lostface.restore.compositor import PatchCompositor  # noqa: E402
from lostface.restore.painter import PaintJob  # noqa: E402
from lostface.stream.video import VideoReader  # noqa: E402
from lostface.synthetic import draw_mask  # noqa: E402


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.logical_or(a, b).sum())
    return float(np.logical_and(a, b).sum()) / union if union else 0.0


def tile(image: np.ndarray, box: np.ndarray, side: int = 96) -> np.ndarray:
    x1, y1, x2, y2 = box.astype(int)
    pad = (x2 - x1) // 3
    h, w = image.shape[:2]
    crop = image[max(0, y1 - pad) : min(h, y2 + pad), max(0, x1 - pad) : min(w, x2 + pad)]
    return cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--every", type=int, default=3, help="use every Nth frame of the clip")
    ap.add_argument("--max-side", type=int, default=64, help="faces narrower than this (px)")
    ap.add_argument("--limit", type=int, default=0, help="stop after this many faces (0: all)")
    args = ap.parse_args()
    clip = SHARED / "video" / "stage_clip.mp4"
    if not clip.exists():
        sys.exit(f"{clip} is absent: this benchmark needs ../shared/data.")
    settings = load_settings()
    detector = build_detector(settings)
    bank = load_references(
        settings, detector, [SHARED / "identity" / "stage_clip_reference.png"], None
    )
    painters = {
        e: build_painter(load_settings(overrides=[f"upscale.engine={e}"]), bank) for e in ENGINES
    }
    compositor = PatchCompositor(settings)
    identity = IdentityMetric(upsample=2)
    rows: list[dict] = []
    grid: list[np.ndarray] = []
    with VideoReader(clip) as reader:
        frames = [f for f in reader.items() if isinstance(f, Frame)]
    for frame in frames[:: args.every]:
        dets = detector.detect(frame.image)
        for k in range(len(dets)):
            box, lm = dets.boxes[k], dets.landmarks[k]
            if box[2] - box[0] >= args.max_side:
                continue
            rng = np.random.default_rng(frame.index)
            sm = draw_mask(frame.image, lm, kind="surgical", rng=rng)
            if not sm.covered.any():
                continue
            job = PaintJob.from_frame(k, frame.index, sm.image, lm)
            if job is None:
                continue
            truth = cv2.warpAffine(
                sm.covered.astype(np.uint8), job.to_canonical, align.CANON_DSIZE
            ).astype(bool)
            anchor = identity.anchor(frame.image, box)
            row: dict = {"frame": frame.index, "width": float(box[2] - box[0])}
            if anchor is not None:
                row["identity_masked"] = identity.distance(anchor, sm.image)
            tiles = [tile(frame.image, box), tile(sm.image, box)]
            for engine, painter in painters.items():
                painter.reset()
                t0 = time.perf_counter()
                painted = painter.paint(job)
                row[f"{engine}_ms"] = (time.perf_counter() - t0) * 1e3
                row[f"{engine}_covered"] = painted.covered
                restored = sm.image.copy()
                if painted.covered and painted.cover is not None and painted.patch is not None:
                    row[f"{engine}_iou"] = iou(painted.cover.hard, truth)
                    compositor.reset()
                    compositor.composite(restored, FaceTrack(k, box, lm), painted.patch)
                if anchor is not None:
                    row[f"{engine}_identity"] = identity.distance(anchor, restored)
                tiles.append(tile(restored, box))
            rows.append(row)
            if len(grid) < 24:
                grid.append(np.hstack(tiles))
            if args.limit and len(rows) >= args.limit:
                break
        if args.limit and len(rows) >= args.limit:
            break
    summary: dict = {"faces": len(rows), "max_side": args.max_side, "every": args.every}
    for engine in ENGINES:
        ious = [r[f"{engine}_iou"] for r in rows if f"{engine}_iou" in r]
        ids = [r[f"{engine}_identity"] for r in rows if f"{engine}_identity" in r]
        summary[engine] = {
            "judged_covered": float(np.mean([r[f"{engine}_covered"] for r in rows])) if rows else 0,
            "iou_median": statistics.median(ious) if ious else None,
            "iou_mean": float(np.mean(ious)) if ious else None,
            "identity_median": statistics.median(ids) if ids else None,
            "keyframe_ms_median": statistics.median(r[f"{engine}_ms"] for r in rows)
            if rows
            else None,
        }
    masked_ids = [r["identity_masked"] for r in rows if "identity_masked" in r]
    summary["identity_masked_median"] = statistics.median(masked_ids) if masked_ids else None
    print(f"{len(rows)} masked faces under {args.max_side} px (every {args.every}th frame)")
    print("engine       judged covered   IoU median   identity median   keyframe ms")
    for engine in ENGINES:
        s = summary[engine]
        print(
            f"{engine:12s} {s['judged_covered']:14.3f}   {s['iou_median'] or 0:10.3f}   "
            f"{s['identity_median'] or 0:15.3f}   {s['keyframe_ms_median'] or 0:11.0f}"
        )
    print(f"masked input identity median {summary['identity_masked_median'] or 0:.3f}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "upscale.json").write_text(json.dumps({"summary": summary, "faces": rows}, indent=1))
    if grid:
        cv2.imwrite(str(RESULTS / "upscale_faces.png"), np.vstack(grid))
    print(f"wrote {RESULTS / 'upscale.json'}")


if __name__ == "__main__":
    main()
