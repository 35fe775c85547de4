"""Tracking suite: ID switches and fragmentation (py-motmetrics) of the Kalman tracker against
ground-truth tracks, on a clip made by moving and scaling real masked photos along known
paths over a real face-free background; the baseline is a frame-to-frame IoU matcher that
detects on every frame (no motion model)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from lostface.benchmark.common import Context, largest, metric, png_bytes, pyplot, read_bgr, sample
from lostface.frame import Detections, FaceTrack

log = logging.getLogger(__name__)

SIZE = (640, 360)
N_FACES = 3


@dataclass
class Sprite:
    crop: np.ndarray  # BGR crop around the face
    alpha: np.ndarray  # feathered ellipse, float32
    box: np.ndarray  # face box inside the crop


@dataclass
class MotClip:
    frames: list[np.ndarray]
    truth: list[dict[int, np.ndarray]]  # frame -> {gt id: box} of faces at least 40 % visible


def _sprites(ctx: Context, detector) -> list[Sprite]:
    files = sample(list((ctx.data / "masked").glob("*.jpg")), 60)
    order = ctx.rng(3).permutation(len(files))
    out: list[Sprite] = []
    for k in order:
        img = read_bgr(files[k], None)
        dets = detector.detect(img)
        j = largest(dets)
        if j is None:
            continue
        x0, y0, x1, y1 = dets.boxes[j]
        side = 1.7 * max(x1 - x0, y1 - y0)
        if side < 80:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        a0, b0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
        a1, b1 = int(min(cx + side / 2, img.shape[1])), int(min(cy + side / 2, img.shape[0]))
        crop = img[b0:b1, a0:a1].copy()
        h, w = crop.shape[:2]
        alpha = np.zeros((h, w), np.float32)
        cv2.ellipse(alpha, (w // 2, h // 2), (int(w * 0.46), int(h * 0.48)), 0, 0, 360, 1.0, -1)
        alpha = np.asarray(cv2.GaussianBlur(alpha, (0, 0), max(w, h) * 0.03), np.float32)
        box = np.array([x0 - a0, y0 - b0, x1 - a0, y1 - b0], np.float64)
        out.append(Sprite(crop, alpha, box))
        if len(out) == N_FACES:
            break
    return out


def make_mot_clip(ctx: Context, detector) -> MotClip:
    """Three faces: two cross each other (one passes in front), one zooms in and out."""
    from skimage import data as skdata

    bg = cv2.resize(np.ascontiguousarray(skdata.coffee()[:, :, ::-1]), SIZE)
    sprites = _sprites(ctx, detector)
    n = ctx.scale.mot_frames
    t = np.linspace(0.0, 1.0, n)
    w, h = SIZE
    # centre x, centre y, face height in pixels, per face and frame
    paths = [
        (60 + (w - 120) * t, 150 + 40 * np.sin(2 * np.pi * t), 110 + 20 * t),
        (w - 60 - (w - 120) * t, 190 - 30 * np.sin(2 * np.pi * t), 120 - 20 * t),
        (w * 0.5 + 120 * np.sin(np.pi * t), 90 + 0 * t, 70 + 60 * np.sin(np.pi * t) ** 2),
    ]
    frames, truth = [], []
    for f in range(n):
        canvas = bg.astype(np.float32)
        owner = np.full((h, w), -1, np.int32)
        placed = {}
        for gid, (sp, (px, py, ph)) in enumerate(zip(sprites, paths, strict=False)):
            s = ph[f] / (sp.box[3] - sp.box[1])
            crop = cv2.resize(sp.crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
            alpha = cv2.resize(sp.alpha, crop.shape[1::-1])
            box = sp.box * s
            ox = px[f] - (box[0] + box[2]) / 2
            oy = py[f] - (box[1] + box[3]) / 2
            x0, y0 = int(round(ox)), int(round(oy))
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + crop.shape[1], w), min(y0 + crop.shape[0], h)
            if cx1 <= cx0 or cy1 <= cy0:
                continue
            sub = (slice(cy0 - y0, cy1 - y0), slice(cx0 - x0, cx1 - x0))
            a = alpha[sub][..., None]
            canvas[cy0:cy1, cx0:cx1] = canvas[cy0:cy1, cx0:cx1] * (1 - a) + crop[sub] * a
            owner[cy0:cy1, cx0:cx1][alpha[sub] > 0.5] = gid
            placed[gid] = box + [x0, y0, x0, y0]
        visible = {}
        for gid, box in placed.items():
            b = np.clip(box, 0, [w, h, w, h]).astype(int)
            area = max((b[2] - b[0]) * (b[3] - b[1]), 1)
            own = (owner[b[1] : b[3], b[0] : b[2]] == gid).sum()
            full = (box[2] - box[0]) * (box[3] - box[1])
            if own / area > 0.4 and area / full > 0.6:
                visible[gid] = b.astype(np.float64)
        frames.append(np.clip(canvas, 0, 255).astype(np.uint8))
        truth.append(visible)
    return MotClip(frames, truth)


class IouMatcher:
    """Baseline tracker: detections every frame, each matched greedily to the previous
    frame's box of highest IoU (>= 0.3), else a new id."""

    def __init__(self) -> None:
        self.prev: dict[int, np.ndarray] = {}
        self.next_id = 1

    def update(self, dets: Detections) -> dict[int, np.ndarray]:
        from lostface.tracking.detectors import box_iou_matrix

        out: dict[int, np.ndarray] = {}
        ids = list(self.prev)
        iou = (
            box_iou_matrix(dets.boxes, np.array([self.prev[i] for i in ids]))
            if ids and len(dets)
            else np.zeros((len(dets), 0))
        )
        for j in np.argsort(-dets.scores):
            k = int(np.argmax(iou[j])) if iou.shape[1] else -1
            if k >= 0 and iou[j, k] >= 0.3:
                out[ids[k]] = dets.boxes[j]
                iou[:, k] = -1
            else:
                out[self.next_id] = dets.boxes[j]
                self.next_id += 1
        self.prev = out
        return out


def _accumulate(truth: list[dict[int, np.ndarray]], hyps: list[dict[int, np.ndarray]], name: str):
    import motmetrics as mm

    acc = mm.MOTAccumulator(auto_id=True)
    for gt, hy in zip(truth, hyps, strict=True):
        acc.update(list(gt), list(hy), iou_distance(gt, hy))
    mh = mm.metrics.create()
    names = [
        "num_switches",
        "num_fragmentations",
        "mota",
        "idf1",
        "num_misses",
        "num_false_positives",
        "mostly_tracked",
        "num_unique_objects",
    ]
    summary = mh.compute(acc, metrics=names, name=name)
    return {k: float(summary[k].iloc[0]) for k in names}


def iou_distance(gt: dict[int, np.ndarray], hyp: dict[int, np.ndarray]) -> np.ndarray:
    """1 - IoU, NaN (no match allowed) below IoU 0.5: what motmetrics' iou_matrix gives, whose
    1.4.0 release calls np.asfarray, removed in NumPy 2."""
    from lostface.tracking.detectors import box_iou_matrix

    if not gt or not hyp:
        return np.empty((len(gt), len(hyp)))
    iou = box_iou_matrix(np.array(list(gt.values())), np.array(list(hyp.values())))
    return np.where(iou >= 0.5, 1.0 - iou, np.nan)


def run_tracking(ctx: Context) -> dict:
    from lostface.factory import build_detector
    from lostface.runner import progress
    from lostface.tracking.tracker import KalmanTracker

    detector = build_detector(ctx.settings)
    clip = make_mot_clip(ctx, detector)
    tracker = KalmanTracker(ctx.settings.tracking)
    every = ctx.settings.tracking.detect_every
    ours: list[dict[int, np.ndarray]] = []
    base: list[dict[int, np.ndarray]] = []
    matcher = IouMatcher()
    for f, img in enumerate(progress(clip.frames, ctx.settings, "bench: tracking", unit="frame")):
        dets = detector.detect(img)
        need = f % every == 0 or tracker.needs_detection
        tracks: list[FaceTrack] = tracker.update(dets if need else None, image=img)
        ours.append({t.track_id: t.box.copy() for t in tracks if t.confirmed})
        base.append(matcher.update(dets))
    m_ours = _accumulate(clip.truth, ours, "kalman")
    m_base = _accumulate(clip.truth, base, "iou")
    metrics = [
        metric(
            "ID switches", m_ours["num_switches"], m_base["num_switches"], "IoU matcher", "lower"
        ),
        metric(
            "fragmentations",
            m_ours["num_fragmentations"],
            m_base["num_fragmentations"],
            "IoU matcher",
            "lower",
        ),
        metric("IDF1", m_ours["idf1"], m_base["idf1"], "IoU matcher", "higher"),
        metric("MOTA", m_ours["mota"], m_base["mota"], "IoU matcher", "higher"),
    ]
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6))
    mid = len(clip.frames) // 2
    axes[0].imshow(clip.frames[mid][:, :, ::-1])
    axes[0].set_title(f"synthetic clip, frame {mid}")
    axes[0].axis("off")
    for gid in range(N_FACES):
        pts = [
            (f, (b[0] + b[2]) / 2)
            for f, gt in enumerate(clip.truth)
            for g, b in gt.items()
            if g == gid
        ]
        if pts:
            axes[1].plot(*zip(*pts, strict=True), "k--", lw=3, alpha=0.3)
    ids = sorted({i for h in ours for i in h})
    for i in ids:
        pts = [(f, (h[i][0] + h[i][2]) / 2) for f, h in enumerate(ours) if i in h]
        axes[1].plot(*zip(*pts, strict=True), ".", ms=3, label=f"track {i}")
    axes[1].set_xlabel("frame")
    axes[1].set_ylabel("face centre x")
    axes[1].set_title("ground truth (grey) and Kalman tracks (colour)")
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    ctx.figures["tracking"] = png_bytes(fig)
    return {
        "frames": len(clip.frames),
        "faces": N_FACES,
        "detect_every": every,
        "kalman": m_ours,
        "iou_matcher": m_base,
        "metrics": metrics,
    }
