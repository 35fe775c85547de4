"""Does a patch carried between keyframes stay on the head? Mesh following against the
similarity transform alone.

On ../shared/data/video/stage_clip.mp4 (real head turns, no mask drawn), for every keyframe
frame K (every 4th frame with a detected largest face) and each gap G: the patch is frame K's
own lower face (its canonical crop, the lower-face region feathered as alpha), carried onto
frame K+G (same shot) by the compositor with the face's landmarks detected there, once as
today (the similarity of the 5 landmarks) and once bent onto the face's mesh on K+G
(keyframe.follow_mesh). The truth is frame K+G itself: PSNR of the carried lower face against
it, over the pixels the patch covers. A patch that slides against the head scores low.

    python bench/follow.py [--gaps 4 8 16] [--step 4]

Prints medians and writes bench/results/follow.json (and a PNG of a few cases with --png).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import cv2
import numpy as np

from lostface.config import DetectSettings, Settings
from lostface.frame import FaceTrack, Patch
from lostface.restore import align
from lostface.restore.compositor import PatchCompositor, skin_mean
from lostface.restore.follow import MeshFollow
from lostface.restore.mesh import load_face_mesh
from lostface.restore.regions import lower_face_mask
from lostface.stream.video import read_frames
from lostface.tracking.detectors import CenterFaceDetector
from lostface.tracking.scenecut import HistogramSceneCut

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "data" / "video" / "stage_clip.mp4"


def alpha_region() -> np.ndarray:
    hard = lower_face_mask().astype(np.float32) / 255.0
    return np.clip(cv2.GaussianBlur(hard, (0, 0), 3.0) * 1.2, 0.0, 1.0)


def carried(frame: np.ndarray, track: FaceTrack, patch: Patch, comp: PatchCompositor):
    out = frame.copy()
    comp.reset()
    comp.composite(out, track, patch)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gaps", type=int, nargs="+", default=[4, 8, 16])
    ap.add_argument("--step", type=int, default=4)
    ap.add_argument("--png", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "follow.json")
    args = ap.parse_args()

    mesh = load_face_mesh()
    if mesh is None:
        raise SystemExit(
            "The face mesh model is missing: run `lostface models pull models.face_mesh`."
        )
    det = CenterFaceDetector(DetectSettings())
    cut = HistogramSceneCut(Settings().tracking.scene_cut_threshold)
    frames, faces, shot = [], [], []
    n_shot = 0
    for img in read_frames(CLIP):
        if cut.is_cut(img):
            n_shot += 1
        d = det.detect(img)
        if len(d):
            i = int(np.argmax((d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])))
            faces.append((d.boxes[i], d.landmarks[i][:5]))
        else:
            faces.append(None)
        frames.append(img)
        shot.append(n_shot)
    settings = Settings()
    plain = PatchCompositor(settings)
    follow = PatchCompositor(settings, MeshFollow(mesh))
    alpha = alpha_region()
    rows: dict[int, list[tuple[float, float]]] = {g: [] for g in args.gaps}
    times: list[float] = []
    tiles: list[np.ndarray] = []
    for k in range(0, len(frames), args.step):
        if faces[k] is None:
            continue
        box_k, lm_k = faces[k]
        m_k = align.to_canonical(lm_k)
        if 0.65 * align.CANON_SIZE / align.scale_of(m_k) < 40:  # too small to judge
            continue
        face_k = align.warp_to_canonical(frames[k], m_k)
        patch = Patch(-1, k, face_k, alpha, m_k, skin_mean(face_k))
        for g in args.gaps:
            j = k + g
            if j >= len(frames) or faces[j] is None or shot[j] != shot[k]:
                continue
            box_j, lm_j = faces[j]
            track = FaceTrack(0, box_j, lm_j, detected=True)
            a = carried(frames[j], track, patch, plain)
            t0 = time.perf_counter()
            b = carried(frames[j], track, patch, follow)
            times.append(time.perf_counter() - t0)
            m_j = align.to_canonical(lm_j)
            w = cv2.warpAffine(alpha, align.invert(m_j), frames[j].shape[1::-1]) > 0.5
            if int(w.sum()) < 100:
                continue
            truth = frames[j].astype(np.float32)
            ps = []
            for out in (a, b):
                mse = float(((out.astype(np.float32) - truth)[w] ** 2).mean())
                ps.append(10 * np.log10(255.0**2 / max(mse, 1e-6)))
            rows[g].append((ps[0], ps[1]))
            if args.png is not None and g == max(args.gaps) and len(tiles) < 6 and k % 24 == 0:
                x0, y0, x1, y1 = (int(v) for v in box_j)
                pad = (x1 - x0) // 3
                x0, y0 = max(x0 - pad, 0), max(y0 - pad, 0)
                crop = [t[y0 : y1 + pad, x0 : x1 + pad] for t in (a, b, frames[j])]
                tiles.append(np.hstack([cv2.resize(c, (200, 240)) for c in crop]))
    result = {
        "gaps": {
            str(g): {
                "pairs": len(v),
                "psnr_similarity_median": float(np.median([p[0] for p in v])),
                "psnr_mesh_median": float(np.median([p[1] for p in v])),
                "gain_db_median": float(np.median([p[1] - p[0] for p in v])),
                "mesh_better_share": float(np.mean([p[1] > p[0] for p in v])),
            }
            for g, v in rows.items()
            if v
        },
        "ms_per_followed_frame_median": 1000 * float(np.median(times)) if times else None,
    }
    print("gap  pairs  PSNR similarity  PSNR mesh  gain dB (median)  mesh better")
    for g, r in result["gaps"].items():
        print(
            f"{g:>3}  {r['pairs']:>5}  {r['psnr_similarity_median']:>15.2f}  "
            f"{r['psnr_mesh_median']:>9.2f}  {r['gain_db_median']:>+16.2f}  "
            f"{r['mesh_better_share']:>11.2f}"
        )
    print(
        "one followed composite (patch mesh, frame mesh, bend, warp): "
        f"{result['ms_per_followed_frame_median']:.1f} ms"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if args.png is not None and tiles:
        cv2.imwrite(str(args.png), np.vstack(tiles))


if __name__ == "__main__":
    main()
