"""Recall and latency of the embedded CenterFace detector at a few settings.

Recall: share of the photos in ../shared/data/masked (one masked person each) where at least
one face is found; groups: faces found in ../shared/data/groups against the people the data
README names; false positives: faces found in face-free photos from scikit-image. Latency:
median wall time of one detect() call (decoded image in memory, session built once).

    python bench/detection.py            # all photos, writes bench/results/detection.json
    python bench/detection.py --limit 60 # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"
GROUP_PEOPLE = {"group1.jpg": 2, "group2.jpg": 4, "single_dark.jpg": 1}  # data/README.md

# (input_size, threshold, pad); the first row is the default in DetectSettings
SETTINGS = [
    (320, 0.3, 0.15),
    (320, 0.5, 0.15),
    (320, 0.3, 0.0),
    (256, 0.3, 0.15),
    (416, 0.3, 0.15),
    (512, 0.3, 0.15),
    (640, 0.3, 0.0),
]


def load_images(limit: int | None = None) -> dict[str, Any]:
    """Decoded BGR photos: masked (sorted, every one or the first `limit`), groups, face-free."""
    masked = sorted((DATA / "masked").glob("*.jpg"))
    if not masked:
        raise SystemExit(f"No photos under {DATA / 'masked'}; set LOSTFACE_SHARED_DATA.")
    if limit:
        masked = masked[:: max(1, len(masked) // limit)][:limit]
    groups = {name: cv2.imread(str(DATA / "groups" / name)) for name in GROUP_PEOPLE}
    free = {}
    try:
        from skimage import data as skdata

        free = {
            n: np.ascontiguousarray(getattr(skdata, n)()[:, :, ::-1])
            for n in ("coffee", "rocket", "chelsea")
        }
    except ImportError:
        pass
    return {
        "masked": [cv2.imread(str(p)) for p in masked],
        "groups": groups,
        "free": free,
    }


def measure(detect: Callable[[np.ndarray], int], images: dict[str, Any]) -> dict[str, Any]:
    """Run `detect` (image -> number of faces) over every image; recall, counts, latency."""
    detect(images["masked"][0])  # warm-up (first-run allocations)
    times = []
    found = 0
    for image in images["masked"]:
        t0 = time.perf_counter()
        n = detect(image)
        times.append(time.perf_counter() - t0)
        found += n > 0
    groups = {name: detect(image) for name, image in images["groups"].items()}
    free = {name: detect(image) for name, image in images["free"].items()}
    return {
        "photos": len(images["masked"]),
        "recall": round(found / len(images["masked"]), 4),
        "median_ms": round(1000 * statistics.median(times), 2),
        "p90_ms": round(1000 * float(np.percentile(times, 90)), 2),
        "groups_found": groups,
        "groups_people": GROUP_PEOPLE,
        "false_positives": sum(free.values()),
    }


def table(rows: list[dict[str, Any]]) -> str:
    head = f"{'detector':<42} {'recall':>6} {'median ms':>9} {'p90 ms':>7} {'groups':>9} {'FP':>3}"
    lines = [head, "-" * len(head)]
    for r in rows:
        g = r["groups_found"]
        groups = "/".join(str(g.get(k, "-")) for k in GROUP_PEOPLE)
        lines.append(
            f"{r['name']:<42} {r['recall']:>6.3f} {r['median_ms']:>9.1f} {r['p90_ms']:>7.1f} "
            f"{groups:>9} {r['false_positives']:>3}"
        )
    want = "/".join(str(v) for v in GROUP_PEOPLE.values())
    lines.append(f"(groups: faces found in group1/group2/single_dark, people there {want})")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--limit", type=int, default=None, help="masked photos to use")
    parser.add_argument("--out", type=Path, default=RESULTS / "detection.json")
    args = parser.parse_args()

    from lostface.config import DetectSettings
    from lostface.models import load_centerface
    from lostface.tracking.detectors import CenterFaceDetector

    images = load_images(args.limit)
    session = load_centerface()  # one session for every setting
    rows = []
    for size, threshold, pad in SETTINGS:
        settings = DetectSettings(input_size=size, threshold=threshold, pad=pad)
        det = CenterFaceDetector(settings, session=session)
        row = measure(lambda im, d=det: len(d.detect(im)), images)
        row.update(
            name=f"centerface in={size} th={threshold} pad={pad}",
            input_size=size,
            threshold=threshold,
            pad=pad,
        )
        rows.append(row)
        print(table(rows[-1:]).splitlines()[2], flush=True)
    print()
    print(table(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cpu_count": os.cpu_count(), "rows": rows}, indent=2))
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
