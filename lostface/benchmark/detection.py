"""Detection and segmentation suites.

Detection: recall on the masked photos, faces found on the group photos, false positives on
face-free crops, per-image latency; per detector, against OpenCV's Haar cascade (the detector
that ships with OpenCV) as the baseline.
Segmentation: IoU of the covered region found by the segmenter against the ground truth of
synthetic masks drawn on unmasked photos, per mask kind, against the fixed lower-face
template (where a mask usually sits, without looking at the pixels) as the baseline.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from lostface.benchmark.common import (
    Context,
    largest,
    latency,
    metric,
    png_bytes,
    pyplot,
    read_bgr,
    sample,
)
from lostface.frame import Detections

log = logging.getLogger(__name__)

GROUP_PEOPLE = {"group1.jpg": 2, "group2.jpg": 4, "single_dark.jpg": 1}  # data README
FACE_FREE = ("coffee", "rocket", "chelsea", "coins", "hubble_deep_field", "immunohistochemistry")


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: the classic detector every OpenCV install has."""

    name = "haar"

    def __init__(self) -> None:
        path = cv2.data.haarcascades + "haarcascade_frontalface_default.xml"  # type: ignore[attr-defined]
        self.cascade = cv2.CascadeClassifier(path)

    def detect(self, image: np.ndarray) -> Detections:
        gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        found = self.cascade.detectMultiScale(gray, 1.1, 5, minSize=(24, 24))
        if len(found) == 0:
            return Detections.empty()
        boxes = np.array([[x, y, x + w, y + h] for x, y, w, h in found], np.float32)
        lms = np.zeros((len(boxes), 5, 2), np.float32)
        return Detections(boxes, np.ones(len(boxes), np.float32), lms)


def face_free_crops(ctx: Context) -> list[np.ndarray]:
    """Crops of real photos without faces (scikit-image's bundled photos), random sizes."""
    from skimage import data as skdata

    rng = ctx.rng(7)
    crops = []
    for name in FACE_FREE:
        try:
            img = getattr(skdata, name)()
        except Exception as exc:  # noqa: BLE001 - a photo that needs a download is skipped
            log.debug("face-free photo %s unavailable: %s", name, exc)
            continue
        img = np.ascontiguousarray(img if img.ndim == 3 else np.dstack([img] * 3))[..., :3]
        bgr = np.ascontiguousarray(img[:, :, ::-1]).astype(np.uint8)
        h, w = bgr.shape[:2]
        crops.append(bgr)
        for _ in range(ctx.scale.free_crops - 1):
            side = int(rng.uniform(0.35, 0.8) * min(h, w))
            y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
            crops.append(np.ascontiguousarray(bgr[y : y + side, x : x + side]))
    return crops


def _detectors(ctx: Context) -> dict[str, Any]:
    from lostface.factory import build_detector

    out: dict[str, Any] = {ctx.settings.detect.engine: build_detector(ctx.settings)}
    out["haar"] = HaarDetector()
    return out


def _measure(
    detect: Callable[[np.ndarray], Detections], photos, groups, free, ctx: Context, name: str
) -> dict:
    from lostface.runner import progress

    detect(photos[0])  # warm-up: first-call allocations are not per-image latency
    times, found = [], 0
    for img in progress(photos, ctx.settings, f"bench: detection, {name}", unit="photo"):
        t0 = time.perf_counter()
        n = len(detect(img))
        times.append(time.perf_counter() - t0)
        found += n > 0
    return {
        "photos": len(photos),
        "recall": found / len(photos),
        "groups_found": {k: len(detect(v)) for k, v in groups.items()},
        "groups_people": GROUP_PEOPLE,
        "free_crops": len(free),
        "false_positives": int(sum(len(detect(c)) for c in free)),
        "latency": latency(times),
    }


def run_detection(ctx: Context) -> dict:
    photos = [
        read_bgr(p, None)
        for p in sample(list((ctx.data / "masked").glob("*.jpg")), ctx.scale.photos)
    ]
    groups = {n: read_bgr(ctx.data / "groups" / n, None) for n in GROUP_PEOPLE}
    free = face_free_crops(ctx)
    per = {
        name: _measure(d.detect, photos, groups, free, ctx, name)
        for name, d in _detectors(ctx).items()
    }
    main, base = ctx.settings.detect.engine, per["haar"]
    m = per[main]
    people = sum(GROUP_PEOPLE.values())
    found = lambda r: sum(min(r["groups_found"][k], v) for k, v in GROUP_PEOPLE.items())  # noqa: E731
    metrics = [
        metric(f"{main} recall, masked photos", m["recall"], base["recall"], "haar", "higher"),
        metric(
            f"{main} people found on group photos (of {people})",
            found(m),
            found(base),
            "haar",
            "higher",
        ),
        metric(
            f"{main} false positives on {len(free)} face-free crops",
            m["false_positives"],
            base["false_positives"],
            "haar",
            "lower",
        ),
        metric(
            f"{main} latency per image p50",
            m["latency"]["p50_ms"],
            base["latency"]["p50_ms"],
            "haar",
            "lower",
            "ms",
        ),
        metric(
            f"{main} latency per image p95",
            m["latency"]["p95_ms"],
            base["latency"]["p95_ms"],
            "haar",
            "lower",
            "ms",
        ),
    ]
    plt = pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    names = list(per)
    axes[0].bar(names, [per[n]["recall"] for n in names], color=["C0", "C7"][: len(names)])
    axes[0].set_title("recall on masked photos")
    axes[0].set_ylim(0, 1.05)
    axes[1].bar(names, [per[n]["false_positives"] for n in names], color=["C0", "C7"][: len(names)])
    axes[1].set_title(f"false positives ({len(free)} face-free crops)")
    axes[2].bar(
        names, [per[n]["latency"]["p50_ms"] for n in names], color=["C0", "C7"][: len(names)]
    )
    axes[2].set_title("latency p50 (ms per image)")
    fig.tight_layout()
    ctx.figures["detection"] = png_bytes(fig)
    return {"detectors": per, "metrics": metrics}


def run_segmentation(ctx: Context) -> dict:
    from lostface.factory import build_detector
    from lostface.restore.align import apply, to_canonical, warp_to_canonical
    from lostface.restore.regions import lower_face_mask
    from lostface.restore.segment import GeometrySegmenter
    from lostface.synthetic import KINDS, draw_mask

    detector = build_detector(ctx.settings)
    seg = GeometrySegmenter(ctx.settings.mask)
    template = lower_face_mask() > 0
    iou: dict[str, list[float]] = {k: [] for k in KINDS}
    iou_base: dict[str, list[float]] = {k: [] for k in KINDS}
    detected: dict[str, list[bool]] = {k: [] for k in KINDS}
    times: list[float] = []
    from lostface.runner import progress

    files = sample(list((ctx.data / "unmasked").glob("*.jpg")), ctx.scale.seg_photos)
    for i, path in enumerate(progress(files, ctx.settings, "bench: segmentation", unit="photo")):
        image = read_bgr(path, None)
        dets = detector.detect(image)
        j = largest(dets)
        if j is None:
            continue
        lm = dets.landmarks[j]
        m = to_canonical(lm)
        for k, kind in enumerate(KINDS):
            syn = draw_mask(image, lm, kind, rng=ctx.seed + 10 * i + k)
            face = warp_to_canonical(syn.image, m)
            size = face.shape[1::-1]
            truth = (
                cv2.warpAffine(syn.covered.astype(np.uint8), m, size, flags=cv2.INTER_NEAREST) > 0
            )
            t0 = time.perf_counter()
            cover = seg.segment(face, apply(m, lm[:5]))
            times.append(time.perf_counter() - t0)
            found = cover.hard if cover.covered else np.zeros_like(truth)
            iou[kind].append(_iou(found, truth))
            iou_base[kind].append(_iou(template, truth))
            detected[kind].append(bool(cover.covered))
    metrics = [
        metric(
            f"IoU, {kind} (mean of {len(iou[kind])})",
            float(np.mean(iou[kind])) if iou[kind] else None,
            float(np.mean(iou_base[kind])) if iou_base[kind] else None,
            "lower-face template",
            "higher",
        )
        for kind in KINDS
    ]
    lat = latency(times)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3))
    pos = np.arange(len(KINDS))
    ax.boxplot([iou[k] for k in KINDS], positions=pos - 0.18, widths=0.3, patch_artist=True)
    ax.boxplot(
        [iou_base[k] for k in KINDS],
        positions=pos + 0.18,
        widths=0.3,
        patch_artist=True,
        boxprops={"facecolor": "lightgrey"},
    )
    ax.set_xticks(pos, KINDS)
    ax.set_ylabel("IoU")
    ax.set_ylim(0, 1)
    ax.set_title("covered region vs ground truth: segmenter (blue) | template (grey)")
    ctx.figures["segmentation"] = png_bytes(fig)
    return {
        "kinds": {
            k: {
                "iou_mean": float(np.mean(iou[k])) if iou[k] else None,
                "iou_median": float(np.median(iou[k])) if iou[k] else None,
                "iou_p10": float(np.percentile(iou[k], 10)) if iou[k] else None,
                "template_iou_mean": float(np.mean(iou_base[k])) if iou_base[k] else None,
                "detected_as_covered": float(np.mean(detected[k])) if detected[k] else None,
                "n": len(iou[k]),
            }
            for k in KINDS
        },
        "latency_per_face": lat,
        "metrics": metrics,
    }


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0
