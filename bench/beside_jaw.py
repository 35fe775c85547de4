"""The neutral fill beside the jaw: what a covering that stands off the face comes back as.

Synthetic coverings (lostface.synthetic, every kind in turn) are drawn on the largest face of
open photos (../shared/data/unmasked); each face is segmented by the product's painter (no
reference: the neutral fill paints it) and filled twice: bounded by the face's outline (the
oval of the face mesh the painter found under the covering, CoverMask.mesh; as shipped) and
without it (the whole covered region skin-toned, as before). Per face, in the canonical crop,
the mean colour error (CIE76 delta E, Lab with L 0..100) against the open photo over the
drawn covering, split into the part inside the face's true outline (the mesh's oval on the
open photo) and the part beyond it (background, hair, collar). Faces whose mesh does not fit
their 5 points (turned far aside) are filled alike both ways and are counted apart. The change
beyond the face is also given by head turn (align.yaw_proxy, eye distances).

    python bench/beside_jaw.py [--photos 300] [--tiles FILE.png]

Prints means and medians, and writes bench/results/beside_jaw.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from lostface.config import load_settings
from lostface.factory import build_stages
from lostface.restore import align
from lostface.restore.fill import face_outline
from lostface.restore.mesh import outline_mask
from lostface.restore.painter import PaintJob
from lostface.synthetic import KINDS, draw_mask

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
_MIN_PIXELS = 50  # a part of the covering smaller than this is not measured
_TURNS = (0.0, 0.1, 0.2, 0.3)  # head-turn bands (|yaw_proxy| from each to the next)


def _lab(bgr: np.ndarray) -> np.ndarray:
    """CIE Lab, L 0..100."""
    return cv2.cvtColor(bgr.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--photos", type=int, default=300, help="open photos (kinds in turn)")
    ap.add_argument("--tiles", type=Path, default=None, help="PNG of the first 12 faces")
    ap.add_argument("--out", type=Path, default=RESULTS / "beside_jaw.json")
    args = ap.parse_args()
    if not (DATA / "unmasked").is_dir():
        sys.exit(f"{DATA / 'unmasked'} is absent: this benchmark needs ../shared/data.")
    stages = build_stages(load_settings())
    painter = stages.painter
    if painter.mesh is None:
        sys.exit("the face mesh is absent: run `lostface models pull models.face_mesh`.")
    errors: dict[str, dict[str, list[float]]] = {
        way: {"inside": [], "beyond": []} for way in ("bounded", "plain")
    }
    counts = {"faces": 0, "covered": 0, "no_fit": 0}
    turns: list[float] = []  # |yaw_proxy| of the faces measured beyond their outline
    tiles: list[np.ndarray] = []
    for k, path in enumerate(sorted((DATA / "unmasked").glob("*.jpg"))[: args.photos]):
        image = cv2.imread(str(path))
        found = stages.detector.detect(image) if image is not None else None
        if found is None or not len(found):
            continue
        lm = found.landmarks[int(np.argmax(found.boxes[:, 2] - found.boxes[:, 0]))]
        m = align.to_canonical(lm)
        truth = align.warp_to_canonical(image, m)
        open_mesh = painter.mesh.points(truth)
        if open_mesh is None:
            continue
        counts["faces"] += 1
        true_face = outline_mask(open_mesh) > 0
        drawn = draw_mask(image, lm, KINDS[k % len(KINDS)], rng=k)
        job = PaintJob.from_frame(1, 0, drawn.image, lm)
        if job is None:
            continue
        painted = painter.paint(job)
        painter.reset()
        cover = painted.cover
        if cover is None or not cover.covered:
            continue
        counts["covered"] += 1
        canon_lm = align.apply(m, np.asarray(lm)[:5])
        if face_outline(cover, canon_lm) is None:
            counts["no_fit"] += 1
            continue
        covering = align.warp_to_canonical(drawn.covered.astype(np.uint8) * 255, m) > 127
        face = align.warp_to_canonical(drawn.image, m)
        outs = {}
        parts = (("inside", covering & true_face), ("beyond", covering & ~true_face))
        for way, c in (("bounded", cover), ("plain", replace(cover, mesh=None))):
            outs[way] = stages.painter.restorer.restore(face, c, canon_lm)[0]
            err = np.linalg.norm(_lab(outs[way]) - _lab(truth), axis=-1)
            for part, sel in parts:
                if int(sel.sum()) >= _MIN_PIXELS:
                    errors[way][part].append(float(err[sel].mean()))
        if int(parts[1][1].sum()) >= _MIN_PIXELS:
            turns.append(abs(float(align.yaw_proxy(canon_lm))))
        if args.tiles is not None and len(tiles) < 12:
            tiles.append(np.hstack([truth, face, outs["plain"], outs["bounded"]]))
    report: dict = {"photos": args.photos, **counts}
    for way, parts in errors.items():
        for part, values in parts.items():
            v = np.asarray(values)
            report[f"{way}_{part}_mean"] = float(v.mean()) if len(v) else None
            report[f"{way}_{part}_median"] = float(np.median(v)) if len(v) else None
            report[f"{way}_{part}_faces"] = len(v)
    gain = np.asarray(errors["bounded"]["beyond"]) - np.asarray(errors["plain"]["beyond"])
    report["beyond_better_share"] = float((gain < 0).mean()) if len(gain) else None
    turn = np.asarray(turns)
    report["by_turn"] = []
    for lo, hi in zip(_TURNS, (*_TURNS[1:], np.inf), strict=True):
        sel = (turn >= lo) & (turn < hi)
        if sel.any():
            report["by_turn"].append(
                {
                    "turn_from": lo,
                    "faces": int(sel.sum()),
                    "beyond_change_mean": float(gain[sel].mean()),
                    "beyond_better_share": float((gain[sel] < 0).mean()),
                }
            )
    report["beyond_change_median"] = float(np.median(gain)) if len(gain) else None
    print(
        f"{counts['faces']} faces, {counts['covered']} judged covered, "
        f"{counts['no_fit']} with no fitting mesh (filled alike)"
    )
    for way in ("plain", "bounded"):
        print(
            f"{way:8s} delta E inside the face: mean {report[f'{way}_inside_mean']:.2f}, "
            f"median {report[f'{way}_inside_median']:.2f} ({report[f'{way}_inside_faces']}); "
            f"beyond it: mean {report[f'{way}_beyond_mean']:.2f}, "
            f"median {report[f'{way}_beyond_median']:.2f} ({report[f'{way}_beyond_faces']})"
        )
    change, better = report["beyond_change_median"], 100 * report["beyond_better_share"]
    print(
        f"beyond the face, bounded against plain: median change {change:+.2f}, "
        f"better on {better:.0f} %"
    )
    for row in report["by_turn"]:
        print(
            f"  head turn from {row['turn_from']:.1f}: {row['faces']} faces, beyond the face "
            f"{row['beyond_change_mean']:+.2f} (mean), better on "
            f"{100 * row['beyond_better_share']:.0f} %"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.out}")
    if tiles and args.tiles is not None:
        cv2.imwrite(str(args.tiles), np.vstack(tiles))


if __name__ == "__main__":
    main()
