"""Segmentation benchmark: IoU per synthetic mask kind, presence accuracy, ms per face.

IoU is also measured without the edge cut (mask.refine=false: the colour shape alone) on
the same faces, as the baseline of the same run. Landmark shift: how far the detector's points
on the synthetic-masked photo lie from its points on the same photo unmasked, in eye
distances (what restore.refine's eye fit corrects for the reference). Mesh shift: the same
for the face mesh's jaw line, mouth and chin points (lostface.restore.mesh; the model predicts
them under the covering from the visible face), when `lostface models pull models.face_mesh`
has fetched the model. Face outline under the covering: the mesh's oval found on the masked
crop, as found and lengthened below the nose tip (lostface.restore.reference.COVERED_CHIN, the
painter's outline of the face), against the oval found on the same crop unmasked, within the
covering grown by the feather band (mask.dilate + mask.feather_radius): the share of the face
there that the outline leaves out (painted as background beside the jaw) and the share of what
is not face there that it takes in (painted as skin).

    python bench/segmentation.py [--sample 100] [--overlays /tmp/seg_overlays]

Faces come from the embedded detector (largest face per photo); photos are the real
../shared/data/unmasked (synthetic masks drawn on them, ground truth known) and
../shared/data/masked (real coverings, presence only). Prints a table and writes
bench/results/segmentation.json.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

from lostface.config import DetectSettings, MaskSettings
from lostface.restore import mesh as face_mesh
from lostface.restore.align import apply, invert, to_canonical, warp_to_canonical
from lostface.restore.reference import COVERED_CHIN
from lostface.restore.segment import GeometrySegmenter
from lostface.synthetic import KINDS, draw_mask
from lostface.tracking.detectors import CenterFaceDetector

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def sample(folder: Path, n: int) -> list[Path]:
    """A deterministic, evenly spaced sample of the photos in a folder."""
    files = sorted(folder.glob("*.jpg"))
    step = max(1, len(files) // n)
    return files[::step][:n]


def largest_face(detector: CenterFaceDetector, image: np.ndarray) -> np.ndarray | None:
    det = detector.detect(image)
    if len(det) == 0:
        return None
    area = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
    return det.landmarks[int(np.argmax(area))]


def landmark_shift(
    detector: CenterFaceDetector, masked: np.ndarray, lm: np.ndarray
) -> np.ndarray | None:
    """(3, 2) shift of the eyes' midpoint, the nose and the mouth's midpoint found on the
    masked image from those found unmasked (lm), in eye distances; None when the face is lost."""
    det = detector.detect(masked)
    if len(det) == 0:
        return None
    eye = float(np.linalg.norm(lm[1] - lm[0]))
    mid = lm[:2].mean(0)
    k = int(np.argmin(np.linalg.norm(det.landmarks[:, :2].mean(1) - mid, axis=1)))
    found = det.landmarks[k]
    if np.linalg.norm(found[:2].mean(0) - mid) > eye:
        return None  # another face
    return (_eyes_nose_mouth(found) - _eyes_nose_mouth(lm)) / eye


_MESH_GROUPS = {
    "jaw": face_mesh.JAW,
    "mouth": face_mesh.LIPS,
    "chin": (face_mesh.CHIN,),
    "eyes": face_mesh.LEFT_EYE + face_mesh.RIGHT_EYE,
}


def frame_mesh(
    mesh: face_mesh.FaceMesh, image: np.ndarray, lm: np.ndarray, min_score: float = 0.5
) -> np.ndarray | None:
    """The face mesh of the face with landmarks lm, in the image's pixels."""
    m = to_canonical(lm)
    pts = mesh.points(warp_to_canonical(image, m), min_score)
    return None if pts is None else apply(invert(m), pts[:, :2])


def mesh_shift(
    mesh: face_mesh.FaceMesh,
    detector: CenterFaceDetector,
    masked: np.ndarray,
    lm: np.ndarray,
    truth: np.ndarray,
) -> dict[str, float] | None:
    """Median distance (eye distances) of each mesh group found on the masked image (from the
    landmarks the detector finds there, as in use) from the same points found unmasked."""
    det = detector.detect(masked)
    if len(det) == 0:
        return None
    eye = float(np.linalg.norm(lm[1] - lm[0]))
    mid = lm[:2].mean(0)
    k = int(np.argmin(np.linalg.norm(det.landmarks[:, :2].mean(1) - mid, axis=1)))
    if np.linalg.norm(det.landmarks[k][:2].mean(0) - mid) > eye:
        return None
    found = frame_mesh(mesh, masked, det.landmarks[k], 0.0)  # as the restorer takes it
    if found is None:
        return None
    d = np.linalg.norm(found - truth, axis=1) / eye
    return {g: float(np.median(d[list(ix)])) for g, ix in _MESH_GROUPS.items()}


def _eyes_nose_mouth(lm: np.ndarray) -> np.ndarray:
    """(3, 2): the eyes' midpoint, the nose tip and the mouth's midpoint of 5 landmarks."""
    return np.array([lm[:2].mean(0), lm[2], lm[3:5].mean(0)])


# lengthenings of the masked face's oval below the nose tip measured (the painter's among them)
_LENGTHENINGS = tuple(sorted({1.0, 1.1, 1.2, COVERED_CHIN}))


def outline_errors(
    found: np.ndarray, truth: np.ndarray, covering: np.ndarray, band: int
) -> dict[float, tuple[float, float]]:
    """Per lengthening of the oval found under the covering (mesh points, canonical): the
    share of the face (truth: the oval found uncovered) within the covering grown by `band`
    px that the outline leaves out, and the share of what is not face there that it takes in."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    region = cv2.dilate(covering.astype(np.uint8), kernel) > 0
    face = region & (face_mesh.outline_mask(truth) > 0)
    other = region & ~face
    out = {}
    for k in _LENGTHENINGS:
        inside = face_mesh.outline_mask(found, k) > 0
        out[k] = (
            float((face & ~inside).sum() / max(face.sum(), 1)),
            float((other & inside).sum() / max(other.sum(), 1)),
        )
    return out


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks."""
    return float(np.logical_and(a, b).sum() / max(np.logical_or(a, b).sum(), 1))


def overlay(
    face: np.ndarray, hard: np.ndarray, truth: np.ndarray | None, score: float
) -> np.ndarray:
    vis = face.copy()
    vis[hard] = (0.5 * vis[hard] + [0, 0, 127]).astype(np.uint8)
    if truth is not None:
        contours, _ = cv2.findContours(
            truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
        )
        cv2.drawContours(vis, contours, -1, (0, 255, 0), 1)
    cv2.putText(vis, f"{score:.2f}", (4, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 255, 255), 1)
    return vis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sample", type=int, default=100, help="photos per folder")
    ap.add_argument("--overlays", type=Path, default=None, help="write overlay PNG mosaics here")
    args = ap.parse_args()

    detector = CenterFaceDetector(DetectSettings())
    settings = MaskSettings()
    seg = GeometrySegmenter(settings)
    uncut = GeometrySegmenter(replace(settings, refine=False))
    iou: dict[str, list[float]] = {k: [] for k in KINDS}
    iou_uncut: dict[str, list[float]] = {k: [] for k in KINDS}
    cut_times: list[float] = []
    shifts: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    syn_hits: dict[str, list[bool]] = {k: [] for k in KINDS}
    presence: dict[str, list[bool]] = {"unmasked": [], "masked": []}
    times: list[float] = []
    tiles: dict[str, list[np.ndarray]] = {
        "synthetic": [],
        "panels": [],
        "masked": [],
        "unmasked": [],
    }
    mesh = face_mesh.load_face_mesh()
    mesh_shifts: dict[str, list[dict[str, float]]] = {k: [] for k in KINDS}
    mouth_5: dict[str, list[float]] = {k: [] for k in KINDS}
    iou_mesh: dict[str, list[float]] = {k: [] for k in KINDS}
    iou_panels: dict[str, list[float]] = {k: [] for k in KINDS}
    panels_hits: dict[str, list[bool]] = {k: [] for k in KINDS}
    outline: dict[float, list[tuple[float, float]]] = {k: [] for k in _LENGTHENINGS}
    band = settings.dilate + settings.feather_radius

    for i, path in enumerate(sample(DATA / "unmasked", args.sample)):
        image = cv2.imread(str(path))
        if image is None:
            continue
        lm = largest_face(detector, image)
        if lm is None:
            continue
        m = to_canonical(lm)
        face = warp_to_canonical(image, m)
        lm_c = apply(m, lm[:5])  # what the pipeline passes: the head turn matters
        t0 = time.perf_counter()
        cover = seg.segment(face, lm_c)
        times.append(time.perf_counter() - t0)
        presence["unmasked"].append(cover.covered)
        if len(tiles["unmasked"]) < 12 and (i % 4 == 0 or cover.covered):
            tiles["unmasked"].append(overlay(face, cover.hard, None, cover.score))
        truth_mesh = frame_mesh(mesh, image, lm) if mesh is not None else None
        open_mesh = mesh.points(face) if mesh is not None else None  # canonical
        for j, kind in enumerate(KINDS):
            syn = draw_mask(image, lm, kind, rng=1000 * i + j)
            shift = landmark_shift(detector, syn.image, lm)
            if shift is not None:
                shifts[kind].append(shift)
                mouth_5[kind].append(float(np.linalg.norm(shift[2])))
            if mesh is not None and truth_mesh is not None:
                ms = mesh_shift(mesh, detector, syn.image, lm, truth_mesh)
                if ms is not None:
                    mesh_shifts[kind].append(ms)
            face_s = warp_to_canonical(syn.image, m)
            truth = (
                cv2.warpAffine(
                    syn.covered.astype(np.uint8), m, face_s.shape[1::-1], flags=cv2.INTER_NEAREST
                )
                > 0
            )
            t0 = time.perf_counter()
            cover_s = seg.segment(face_s, lm_c)
            t1 = time.perf_counter()
            plain = uncut.segment(face_s, lm_c)
            cut_times.append((t1 - t0) - (time.perf_counter() - t1))
            iou[kind].append(overlap(cover_s.hard, truth))
            if mesh is not None:
                # the painter's way: the mesh of the masked crop after the 5 points
                pts = mesh.points(face_s, 0.0)
                ext = lm_c if pts is None else np.vstack([lm_c, pts[:, :2]])
                iou_mesh[kind].append(overlap(seg.segment(face_s, ext).hard, truth))
                if pts is not None and open_mesh is not None:
                    for k, v in outline_errors(pts, open_mesh, truth, band).items():
                        outline[k].append(v)
            iou_uncut[kind].append(overlap(plain.hard, truth))
            syn_hits[kind].append(cover_s.covered)
            if len(tiles["synthetic"]) < 12 and i % 7 == 0:
                tiles["synthetic"].append(overlay(face_s, cover_s.hard, truth, cover_s.score))
            # the same kind in two colours, in parts wider than the zone over the nose and mouth
            panels = draw_mask(image, lm, kind, rng=1000 * i + j, variant="panels")
            face_p = warp_to_canonical(panels.image, m)
            truth_p = (
                cv2.warpAffine(
                    panels.covered.astype(np.uint8), m, face_p.shape[1::-1], flags=cv2.INTER_NEAREST
                )
                > 0
            )
            pts = mesh.points(face_p, 0.0) if mesh is not None else None
            ext = lm_c if pts is None else np.vstack([lm_c, pts[:, :2]])
            cover_p = seg.segment(face_p, ext)
            panels_hits[kind].append(cover_p.covered)
            if cover_p.covered:
                iou_panels[kind].append(overlap(cover_p.hard, truth_p))
            if len(tiles["panels"]) < 12 and i % 7 == 0:
                tiles["panels"].append(overlay(face_p, cover_p.hard, truth_p, cover_p.score))

    for i, path in enumerate(sample(DATA / "masked", args.sample)):
        image = cv2.imread(str(path))
        if image is None:
            continue
        lm = largest_face(detector, image)
        if lm is None:
            continue
        m = to_canonical(lm)
        face = warp_to_canonical(image, m)
        t0 = time.perf_counter()
        cover = seg.segment(face, apply(m, lm[:5]))
        times.append(time.perf_counter() - t0)
        presence["masked"].append(cover.covered)
        if len(tiles["masked"]) < 12 and (i % 4 == 0 or not cover.covered):
            tiles["masked"].append(overlay(face, cover.hard, None, cover.score))

    result = {
        "sample_per_folder": args.sample,
        "iou": {
            k: {
                "mean": float(np.mean(v)),
                "median": float(np.median(v)),
                "p10": float(np.percentile(v, 10)),
                "n": len(v),
            }
            for k, v in iou.items()
        },
        "iou_with_mesh_bound": {
            k: {"mean": float(np.mean(v)), "median": float(np.median(v)), "n": len(v)}
            for k, v in iou_mesh.items()
            if v
        },
        "iou_panels": {
            k: {
                "mean": float(np.mean(v)),
                "p10": float(np.percentile(v, 10)),
                "detected": float(np.mean(panels_hits[k])),
                "n": len(v),
            }
            for k, v in iou_panels.items()
            if v
        },
        "iou_without_cut": {
            k: {"mean": float(np.mean(v)), "median": float(np.median(v))}
            for k, v in iou_uncut.items()
        },
        "landmark_shift_eye_distances": {
            k: {
                "eyes_dy_median": float(np.median([v[0, 1] for v in vs])),
                "eyes_dx_median": float(np.median([v[0, 0] for v in vs])),
                "eyes_abs_dy_p90": float(np.percentile([abs(v[0, 1]) for v in vs], 90)),
                "nose_dy_median": float(np.median([v[1, 1] for v in vs])),
                "mouth_dy_median": float(np.median([v[2, 1] for v in vs])),
                "n": len(vs),
            }
            for k, vs in shifts.items()
            if vs
        },
        "mesh_shift_eye_distances": {
            k: {
                **{f"{g}_median": float(np.median([v[g] for v in vs])) for g in _MESH_GROUPS},
                **{f"{g}_p90": float(np.percentile([v[g] for v in vs], 90)) for g in _MESH_GROUPS},
                "five_point_mouth_median": float(np.median(mouth_5[k])) if mouth_5[k] else None,
                "n": len(vs),
            }
            for k, vs in mesh_shifts.items()
            if vs
        },
        "outline_under_covering": {
            str(k): {
                "face_left_out_mean": float(np.mean([v[0] for v in vs])),
                "face_left_out_p90": float(np.percentile([v[0] for v in vs], 90)),
                "other_taken_in_mean": float(np.mean([v[1] for v in vs])),
                "other_taken_in_p90": float(np.percentile([v[1] for v in vs], 90)),
                "painter": k == COVERED_CHIN,
                "n": len(vs),
            }
            for k, vs in outline.items()
            if vs
        },
        "synthetic_detected": {k: float(np.mean(v)) for k, v in syn_hits.items()},
        "presence": {
            "masked_true_positive": float(np.mean(presence["masked"])),
            "masked_faces": len(presence["masked"]),
            "unmasked_true_negative": 1.0 - float(np.mean(presence["unmasked"])),
            "unmasked_faces": len(presence["unmasked"]),
        },
        "ms_per_face": {
            "median": 1000 * float(np.median(times)),
            "p90": 1000 * float(np.percentile(times, 90)),
            "cut_extra_median": 1000 * float(np.median(cut_times)),
        },
        "settings": {
            "presence_threshold": settings.presence_threshold,
            "dilate": settings.dilate,
            "feather_radius": settings.feather_radius,
            "refine": settings.refine,
        },
    }
    print(
        f"{'kind':<10}{'mean IoU':>10}{'median':>8}{'p10':>8}{'no cut':>8}{'detected':>10}{'n':>5}"
    )
    for k in KINDS:
        r = result["iou"][k]
        print(
            f"{k:<10}{r['mean']:>10.3f}{r['median']:>8.3f}{r['p10']:>8.3f}"
            f"{result['iou_without_cut'][k]['mean']:>8.3f}"
            f"{result['synthetic_detected'][k]:>10.3f}{r['n']:>5}"
        )
    for k, r in result["iou_with_mesh_bound"].items():
        print(f"  {k:<9} with the face mesh's outline: mean IoU {r['mean']:.3f} (n={r['n']})")
    print("coverings of two colours (variant panels: broad bands or side panels), judged covered:")
    for k, r in result["iou_panels"].items():
        print(
            f"  {k:<9} mean IoU {r['mean']:.3f}, p10 {r['p10']:.3f}, judged covered "
            f"{r['detected']:.3f} (n={r['n']})"
        )
    print("landmarks on the masked photo minus unmasked, eye distances (median; + is down):")
    for k, r in result["landmark_shift_eye_distances"].items():
        print(
            f"  {k:<9} eyes dy {r['eyes_dy_median']:+.3f} (|dy| p90 {r['eyes_abs_dy_p90']:.3f}),"
            f" dx {r['eyes_dx_median']:+.3f}; nose dy {r['nose_dy_median']:+.3f};"
            f" mouth dy {r['mouth_dy_median']:+.3f} (n={r['n']})"
        )
    if result["mesh_shift_eye_distances"]:
        print("face mesh on the masked photo against unmasked, eye distances (median / p90):")
        for k, r in result["mesh_shift_eye_distances"].items():
            groups = ", ".join(
                f"{g} {r[g + '_median']:.3f}/{r[g + '_p90']:.3f}" for g in _MESH_GROUPS
            )
            print(
                f"  {k:<9} {groups}; 5-point mouth {r['five_point_mouth_median']:.3f} (n={r['n']})"
            )
        print(
            "face outline under the covering (the oval lengthened below the nose tip) against "
            "the same face's uncovered, within the covering and its feather band (mean / p90):"
        )
        for k, r in result["outline_under_covering"].items():
            mark = "  (the painter's)" if r["painter"] else ""
            print(
                f"  x{float(k):.2f}: face left out {r['face_left_out_mean']:.3f}/"
                f"{r['face_left_out_p90']:.3f}, not face taken in {r['other_taken_in_mean']:.3f}/"
                f"{r['other_taken_in_p90']:.3f} (n={r['n']}){mark}"
            )
    else:
        print("face mesh: not measured (run `lostface models pull models.face_mesh`)")
    p = result["presence"]
    print(
        f"presence: masked covered={p['masked_true_positive']:.3f} (n={p['masked_faces']}), "
        f"unmasked not covered={p['unmasked_true_negative']:.3f} (n={p['unmasked_faces']})"
    )
    ms = result["ms_per_face"]
    print(
        f"segment: {ms['median']:.2f} ms per face (median), {ms['p90']:.2f} ms (p90); "
        f"the edge cut adds {ms['cut_extra_median']:.1f} ms per covered face (median)"
    )
    out = ROOT / "bench" / "results" / "segmentation.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    if args.overlays is not None:
        args.overlays.mkdir(parents=True, exist_ok=True)
        for name, t in tiles.items():
            if t:
                t = t + [np.zeros_like(t[0])] * (-len(t) % 6)
                rows = [np.hstack(t[r : r + 6]) for r in range(0, len(t), 6)]
                cv2.imwrite(str(args.overlays / f"{name}.png"), np.vstack(rows))


if __name__ == "__main__":
    main()
