"""Can a masked face be matched to its reference photo? (measurement for an identity gate)

References are applied to every masked face today, since dlib's distance between a masked
face and an unmasked reference does not separate people. This measures two comparisons on
../shared/data/video/stage_clip.mp4, where the largest face is the reference's person on
some frames and other people on the rest (told apart by dlib on the unmasked originals):

- masked face vs the unmasked reference (what fails today);
- masked face vs the reference wearing the same synthetic mask (both faces hide the same
  part, so only the visible upper face differs).

    python bench/identity_gate.py [--step 3]

Prints the distance spread per group and, for a few thresholds, the share of each group
that would keep the reference; writes bench/results/identity_gate.json. Needs the quality
extra (dlib, face-recognition-models).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from lostface.benchmark.common import largest
from lostface.config import load_settings
from lostface.factory import build_detector
from lostface.metrics import SAME_PERSON_DISTANCE, IdentityMetric
from lostface.stream.video import read_frames
from lostface.synthetic import draw_mask

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CLIP = DATA / "video" / "stage_clip.mp4"
REFERENCE = DATA / "identity" / "stage_clip_reference.png"
THRESHOLDS = (0.5, 0.55, 0.58, 0.6, 0.65)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--step", type=int, default=3, help="use every Nth frame")
    ap.add_argument("--kind", default="surgical", help="synthetic mask kind on both faces")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "identity_gate.json")
    args = ap.parse_args(argv)
    if not CLIP.is_file() or not REFERENCE.is_file():
        print(f"{CLIP} or {REFERENCE} is absent: it needs ../shared/data", file=sys.stderr)
        return 2
    detector = build_detector(load_settings())
    identity = IdentityMetric()
    ref = cv2.imread(str(REFERENCE))
    d = detector.detect(ref)
    i = largest(d)
    if i is None:
        print(f"no face found on {REFERENCE}", file=sys.stderr)
        return 2
    ref_anchor = identity.anchor(ref, d.boxes[i])
    ref_masked = draw_mask(ref, d.landmarks[i][:5], kind=args.kind, rng=np.random.default_rng(0))
    ref_masked_anchor = identity.anchor(ref_masked.image, d.boxes[i])
    if ref_anchor is None or ref_masked_anchor is None:
        print(f"dlib finds no face on {REFERENCE}", file=sys.stderr)
        return 2
    rows: list[tuple[bool, float, float]] = []
    for k, img in enumerate(read_frames(CLIP)):
        if k % args.step:
            continue
        dets = detector.detect(img)
        j = largest(dets)
        if j is None:
            continue
        original = identity.anchor(img, dets.boxes[j])
        if original is None:
            continue
        same = IdentityMetric.between(original, ref_anchor) < SAME_PERSON_DISTANCE
        masked = draw_mask(img, dets.landmarks[j][:5], kind=args.kind, rng=np.random.default_rng(0))
        anchor = identity.anchor(masked.image, dets.boxes[j])
        if anchor is None:
            continue
        rows.append(
            (
                same,
                IdentityMetric.between(anchor, ref_masked_anchor),
                IdentityMetric.between(anchor, ref_anchor),
            )
        )
    r = np.array(rows, np.float64)
    groups = {"reference_person": r[:, 0] == 1, "others": r[:, 0] == 0}
    result: dict = {"frames": len(r), "step": args.step, "kind": args.kind, "groups": {}}
    for name, sel in groups.items():
        g: dict = {"n": int(sel.sum())}
        for col, label in ((1, "vs_masked_reference"), (2, "vs_reference")):
            vals = r[sel, col]
            if len(vals):
                g[label] = {
                    "min": float(vals.min()),
                    "median": float(np.median(vals)),
                    "max": float(vals.max()),
                    "kept_below": {str(t): float((vals < t).mean()) for t in THRESHOLDS},
                }
        result["groups"][name] = g
    for name, g in result["groups"].items():
        print(f"{name} ({g['n']} frames)")
        for label in ("vs_masked_reference", "vs_reference"):
            if label in g:
                v = g[label]
                kept = ", ".join(f"<{t}: {x:.2f}" for t, x in v["kept_below"].items())
                print(
                    f"  {label:<20} min {v['min']:.3f} median {v['median']:.3f} "
                    f"max {v['max']:.3f} | share below {kept}"
                )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
