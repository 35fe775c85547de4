"""Reference restoration on same-person pairs, against the masked input and cv2.inpaint Telea.

For every ordered pair (reference photo, target photo) of one person in
../shared/data/identity: a flat synthetic mask is painted over the target's lower face, the
face is detected on the masked image (so the mouth corners are the detector's guesses, as in
real use), restored from the reference, and compared with the unmasked original in
canonical space. Also times one restore and one composite.

    python bench/restore_pairs.py            # writes bench/results/restore_pairs.json
    python bench/restore_pairs.py --grids /tmp/grids  # + masked/poisson/alpha/Telea/original PNGs
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import time
from pathlib import Path

import cv2
import dlib
import numpy as np

from lostface.config import DetectSettings, RestoreSettings, Settings
from lostface.frame import CoverMask, FaceTrack, Patch
from lostface.restore import align
from lostface.restore.compositor import PatchCompositor, skin_mean
from lostface.restore.fill import NeutralFill
from lostface.restore.reference import ReferenceBank, ReferenceRestorer, read_image
from lostface.restore.regions import lower_face_mask
from lostface.tracking.detectors import CenterFaceDetector

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "identity"
MASK_BGR = (200, 170, 120)  # a light-blue surgical mask


def dlib_models() -> tuple[object, object]:
    pkg = Path(importlib.util.find_spec("face_recognition_models").submodule_search_locations[0])
    sp = dlib.shape_predictor(str(pkg / "models" / "shape_predictor_5_face_landmarks.dat"))
    rec = dlib.face_recognition_model_v1(
        str(pkg / "models" / "dlib_face_recognition_resnet_model_v1.dat")
    )
    return sp, rec


def cover_from_hard(hard: np.ndarray, dilate: int = 4, feather: int = 6) -> CoverMask:
    """The covered region as a segmenter would return it: grown, then feathered."""
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1))
    grown = cv2.dilate(hard.astype(np.uint8), k)
    alpha = cv2.GaussianBlur(
        grown.astype(np.float32), (2 * feather + 1, 2 * feather + 1), feather / 2
    )
    alpha = np.where(grown > 0, np.maximum(alpha, 0.5), alpha)
    alpha = cv2.GaussianBlur(alpha, (2 * feather + 1, 2 * feather + 1), feather / 2)
    alpha[grown > 0] = np.maximum(alpha[grown > 0], 0.999)
    return CoverMask(True, alpha.astype(np.float32), hard.astype(bool), 1.0)


def mask_image(image: np.ndarray, detector: CenterFaceDetector) -> tuple[np.ndarray, np.ndarray]:
    """A flat mask over the lower face of the largest face: (masked image, mask pixels)."""
    det = detector.detect(image)
    i = int(np.argmax((det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])))
    m = align.to_canonical(det.landmarks[i][:5])
    inv = align.invert(m)
    hard = cv2.warpAffine(
        lower_face_mask(), inv, (image.shape[1], image.shape[0]), flags=cv2.INTER_NEAREST
    )
    masked = image.copy()
    masked[hard > 0] = MASK_BGR
    return masked, hard


def metrics(
    sp: object, rec: object, variants: dict[str, np.ndarray], original: np.ndarray, cover: CoverMask
) -> dict[str, dict[str, float]]:
    rgb = np.ascontiguousarray(original[:, :, ::-1])
    shape = sp(rgb, dlib.rectangle(48, 44, 208, 228))  # one box/shape for every variant
    ref_desc = np.array(rec.compute_face_descriptor(rgb, shape))
    region = cover.alpha > 0.5
    band = (
        cv2.morphologyEx(region.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((5, 5), np.uint8)) > 0
    )
    lab_o = cv2.cvtColor(original, cv2.COLOR_BGR2Lab).astype(np.float32)

    def grad(img: np.ndarray) -> np.ndarray:
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        return np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))

    g_o = float(grad(original)[band].mean())
    out = {}
    for name, img in variants.items():
        desc = np.array(rec.compute_face_descriptor(np.ascontiguousarray(img[:, :, ::-1]), shape))
        mse = float(((img.astype(np.float32) - original.astype(np.float32))[region] ** 2).mean())
        lab = cv2.cvtColor(img, cv2.COLOR_BGR2Lab).astype(np.float32)
        out[name] = {
            "identity": float(np.linalg.norm(desc - ref_desc)),
            "psnr": float(10 * np.log10(255.0**2 / max(mse, 1e-6))),
            "seam": float(grad(img)[band].mean()) / max(g_o, 1e-6),
            "delta_lab": float(np.linalg.norm(lab[region].mean(0) - lab_o[region].mean(0))),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--grids", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "restore_pairs.json")
    args = ap.parse_args()
    detector = CenterFaceDetector(DetectSettings())
    sp, rec = dlib_models()
    configs = {
        "poisson": RestoreSettings(blend="poisson", refine=False),
        "alpha": RestoreSettings(blend="alpha", refine=False),
        "poisson+ecc": RestoreSettings(blend="poisson", refine=True),
    }
    rows = []
    times: dict[str, list[float]] = {k: [] for k in configs}
    if args.grids:
        args.grids.mkdir(parents=True, exist_ok=True)
    for person in ("obama", "biden"):
        files = sorted((DATA / person).glob("*.jpg"))
        banks = {f: ReferenceBank.from_paths([f], detector) for f in files}
        for ref_f, tgt_f in itertools.permutations(files, 2):
            original_img = read_image(tgt_f)
            masked_img, _ = mask_image(original_img, detector)
            det = detector.detect(masked_img)
            i = int(np.argmax(det.scores))
            m = align.to_canonical(det.landmarks[i][:5])
            face = align.warp_to_canonical(masked_img, m)
            original = align.warp_to_canonical(original_img, m)
            lm = align.apply(m, det.landmarks[i][:5]).astype(np.float32)
            hard = np.all(np.abs(face.astype(int) - MASK_BGR) < 3, axis=-1)
            hard = cv2.morphologyEx(
                hard.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8)
            )
            cover = cover_from_hard(hard > 0)
            variants = {"masked": face}
            sup = (cover.alpha > 0.01).astype(np.uint8)
            telea = cv2.inpaint(
                face, cv2.dilate(sup, np.ones((3, 3), np.uint8)), 5, cv2.INPAINT_TELEA
            )
            variants["telea"] = telea
            variants["neutral"] = NeutralFill().restore(face, cover, lm)[0]
            for name, rs in configs.items():
                restorer = ReferenceRestorer(banks[ref_f], rs)
                t0 = time.perf_counter()
                variants[name] = restorer.restore(face, cover, lm)[0]
                times[name].append(1000 * (time.perf_counter() - t0))
            res = metrics(sp, rec, variants, original, cover)
            rows.append({"person": person, "reference": ref_f.name, "target": tgt_f.name, **res})
            if args.grids:
                grid = np.hstack([face, variants["poisson"], variants["alpha"], telea, original])
                cv2.imwrite(str(args.grids / f"{person}_{ref_f.stem}_to_{tgt_f.stem}.png"), grid)
    names = list(rows[0].keys())[3:]
    summary = {
        n: {
            k: float(np.mean([r[n][k] for r in rows]))
            for k in ("identity", "psnr", "seam", "delta_lab")
        }
        for n in names
    }
    summary["original_vs_reference_identity_note"] = (
        "identity: dlib distance to the original (<0.6 same person)"
    )
    # composite timing: a patch carried onto a 640x360 frame with a face of ~110 px.
    img = cv2.resize(read_image(DATA / "obama" / "obama2.jpg"), (360, 690))
    frame = np.zeros((360, 640, 3), np.uint8)
    frame[:, 140:500] = img[165:525]
    det = detector.detect(frame)
    lm5 = det.landmarks[int(np.argmax(det.scores))][:5]
    m = align.to_canonical(lm5)
    crop = align.warp_to_canonical(frame, m)
    cover = cover_from_hard(lower_face_mask() > 0)
    patch = Patch(0, 0, crop[:, ::-1].copy(), cover.alpha, m, skin_mean(crop))
    comp = PatchCompositor(Settings())
    track = FaceTrack(0, det.boxes[0], lm5)
    work = frame.copy()
    comp.composite(work, track, patch)
    t0 = time.perf_counter()
    n = 300
    for k in range(n):
        track.landmarks = lm5 + np.float32(0.3 * np.sin(k))
        comp.composite(work, track, patch)
    ms_comp = 1000 * (time.perf_counter() - t0) / n
    face_px = float(
        np.sqrt((det.boxes[0][2] - det.boxes[0][0]) * (det.boxes[0][3] - det.boxes[0][1]))
    )
    result = {
        "pairs": len(rows),
        "summary": summary,
        "ms_per_restore_median": {k: float(np.median(v)) for k, v in times.items()},
        "ms_per_composite": ms_comp,
        "composite_face_px": face_px,
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))


if __name__ == "__main__":
    main()
