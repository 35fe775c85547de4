"""Restoration quality measures shared by the benchmarks and the tests.

- identity: dlib's face-recognition ResNet (128-d embedding; distance < 0.6 means the same
  person). The landmarks that place the 150x150 face chip are found once, on the ORIGINAL
  image, and reused for every variant, so a variant cannot move the chip it is judged on.
- region PSNR: fidelity of the pixels inside the ground-truth covered region.
- detail: Laplacian energy inside a region (blurry fills score low).
- seam: gradient on the region's outline relative to the gradient just beside it (a pasted
  patch with a visible edge scores high; a seamless fill scores about the same as the original).
- flicker: mean absolute change of a region between consecutive frames after warping the
  previous frame onto the current one with optical flow computed on the ORIGINAL frames,
  skipping pairs across scene cuts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import cv2
import numpy as np

from lostface.errors import ModelError
from lostface.models import dlib_model_paths

log = logging.getLogger(__name__)

SAME_PERSON_DISTANCE = 0.6  # dlib's own threshold for its face-recognition embedding


@dataclass(slots=True)
class FaceAnchor:
    """Where one face sits on the original image: the dlib box, the 68-point shape placed
    on the original, and the original's embedding."""

    box: tuple[int, int, int, int]
    shape: object  # dlib.full_object_detection
    descriptor: np.ndarray
    from_detector: bool  # True: dlib's HOG detector found the box; False: the hint box was used


def _iou(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    area = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / area if area > 0 else 0.0


class IdentityMetric:
    """Face-identity distance with dlib; models are loaded once per instance."""

    def __init__(self, upsample: int = 1) -> None:
        try:
            import dlib
        except ImportError:
            raise ModelError(
                "The identity metric needs dlib; install it: pip install dlib-bin."
            ) from None
        shape_path, rec_path = dlib_model_paths()
        self._dlib = dlib
        self._hog = dlib.get_frontal_face_detector()
        self._shape = dlib.shape_predictor(str(shape_path))
        self._rec = dlib.face_recognition_model_v1(str(rec_path))
        self.upsample = int(upsample)

    @staticmethod
    def _rgb(image_bgr: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.asarray(image_bgr, np.uint8)[:, :, ::-1])

    def descriptor(self, image_bgr: np.ndarray, shape: object) -> np.ndarray:
        """128-d embedding of the face chip that `shape` places on this image."""
        return np.asarray(
            self._rec.compute_face_descriptor(self._rgb(image_bgr), shape), np.float64
        )

    def anchor(
        self, original_bgr: np.ndarray, hint_box: np.ndarray | None = None
    ) -> FaceAnchor | None:
        """Locate the face on the original: dlib's HOG box that best overlaps `hint_box` (or
        the largest one); the hint box itself, squared, when HOG finds none (profile faces).
        None when there is neither."""
        rgb = self._rgb(original_bgr)
        h, w = rgb.shape[:2]
        rects = list(self._hog(rgb, self.upsample))
        hint: tuple[float, float, float, float] | None = None
        if hint_box is not None:
            x1, y1, x2, y2 = (float(v) for v in np.asarray(hint_box)[:4])
            hint = (x1, y1, x2, y2)
        best = None
        if rects:
            boxes = [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
            if hint is None:
                best = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
            else:
                scored = [(_iou(b, hint), b) for b in boxes]
                iou, b = max(scored)
                best = b if iou > 0.2 else None
        from_detector = best is not None
        if best is None:
            if hint is None:
                return None
            # A HOG box is roughly square and sits from the brows to the chin: shrink the
            # detector's box (forehead included) towards that.
            cx, cy = (hint[0] + hint[2]) / 2, (hint[1] + hint[3]) / 2
            side = 0.85 * max(hint[2] - hint[0], hint[3] - hint[1])
            cy += 0.08 * side
            best = (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)
        x0, y0, x1, y1 = (round(v) for v in best)
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, w - 1), min(y1, h - 1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            return None
        shape = self._shape(rgb, self._dlib.rectangle(x0, y0, x1, y1))
        desc = self.descriptor(original_bgr, shape)
        return FaceAnchor((x0, y0, x1, y1), shape, desc, from_detector)

    def distance(self, anchor: FaceAnchor, image_bgr: np.ndarray) -> float:
        """Embedding distance between `image_bgr` and the original, on the original's chip."""
        return float(np.linalg.norm(self.descriptor(image_bgr, anchor.shape) - anchor.descriptor))

    def distances(self, anchor: FaceAnchor, variants: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {name: self.distance(anchor, img) for name, img in variants.items()}

    @staticmethod
    def between(a: FaceAnchor, b: FaceAnchor) -> float:
        """Distance between two faces, each on its own image (e.g. two photos of people)."""
        return float(np.linalg.norm(a.descriptor - b.descriptor))


def region_psnr(image: np.ndarray, original: np.ndarray, region: np.ndarray) -> float:
    """PSNR (dB, 8-bit peak) over the pixels of `region`; inf when they are identical."""
    sel = np.asarray(region, bool)
    if not sel.any():
        raise ValueError("region_psnr: the region is empty")
    diff = image[sel].astype(np.float64) - original[sel].astype(np.float64)
    mse = float(np.mean(diff**2))
    if mse == 0.0:
        return float("inf")
    return float(10.0 * np.log10(255.0**2 / mse))


def _gray(image: np.ndarray) -> np.ndarray:
    img = np.asarray(image)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    return img.astype(np.float32)


def detail_score(image: np.ndarray, region: np.ndarray | None = None) -> float:
    """Mean absolute Laplacian inside `region` (whole image if None): fine texture energy."""
    lap = np.abs(cv2.Laplacian(_gray(image), cv2.CV_32F, ksize=3))
    if region is None:
        return float(lap.mean())
    sel = np.asarray(region, bool)
    if not sel.any():
        raise ValueError("detail_score: the region is empty")
    return float(lap[sel].mean())


def _ring(region: np.ndarray, inner: int, outer: int) -> np.ndarray:
    """Pixels whose distance to the region's outline lies in [inner, outer)."""
    m = np.asarray(region, np.uint8)
    d_in = cv2.distanceTransform(m, cv2.DIST_L2, 3)
    d_out = cv2.distanceTransform(1 - m, cv2.DIST_L2, 3)
    d = np.where(m > 0, d_in, d_out)
    return (d >= inner) & (d < outer)


def seam_score(image: np.ndarray, region: np.ndarray, width: int = 2, context: int = 8) -> float:
    """Gradient on the outline of `region` over the gradient a little inside and outside it.

    About 1 where the outline is invisible in the image, well above 1 where a patch with a
    hard edge was pasted. Compare a restored image's score with the original's.
    """
    sel = np.asarray(region, bool)
    if not sel.any() or sel.all():
        raise ValueError("seam_score: the region must be neither empty nor the whole image")
    g = _gray(image)
    mag = np.hypot(cv2.Sobel(g, cv2.CV_32F, 1, 0), cv2.Sobel(g, cv2.CV_32F, 0, 1))
    edge = _ring(sel, 0, width)
    near = _ring(sel, width + 1, width + 1 + context)
    return float(mag[edge].mean() / max(float(mag[near].mean()), 1e-3))


def backward_flow(flow_engine: cv2.DISOpticalFlow, prev: np.ndarray, cur: np.ndarray) -> np.ndarray:
    """Flow from `cur` to `prev`: cur(x) ~ prev(x + flow(x)), for warping prev onto cur."""
    flow = flow_engine.calc(  # type: ignore[call-overload]
        _gray(cur).astype(np.uint8), _gray(prev).astype(np.uint8), None
    )
    return np.asarray(flow)


def warp_with_flow(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Warp `image` (the previous frame) by a backward flow; returns (warped, valid pixels)."""
    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    warped = cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    valid = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    return warped, valid


@dataclass
class FlickerMeter:
    """Temporal flicker of several variants of one clip, on the same regions and flows. Feed frames
    in order with `add(original, region, variants)`. The flow is computed on the originals
    (own_flow=False: every variant is judged against the original's motion, talking mouth
    included) or on each variant itself (own_flow=True: what is left after that clip's own
    motion is compensated, i.e. the flicker a viewer sees). A pair is skipped when it
    crosses a scene cut (the mean absolute residual of the flow-warped original exceeds
    `cut_residual`, or the histogram scene-cut detector fires), or when the region is empty
    on the current frame.
    """

    cut_residual: float = 20.0
    use_histogram_cuts: bool = True
    own_flow: bool = False
    sums: dict[str, list[float]] = field(default_factory=dict)
    pairs: int = 0
    skipped_cuts: int = 0
    skipped_empty: int = 0

    def __post_init__(self) -> None:
        self._dis = cv2.DISOpticalFlow_create(  # type: ignore[attr-defined]
            cv2.DISOPTICAL_FLOW_PRESET_MEDIUM
        )
        self._prev_original: np.ndarray | None = None
        self._prev: dict[str, np.ndarray] = {}
        self._scene = None
        if self.use_histogram_cuts:
            try:
                from lostface.tracking.scenecut import HistogramSceneCut

                self._scene = HistogramSceneCut(0.35)
            except ImportError:
                self._scene = None

    def add(
        self, original: np.ndarray, region: np.ndarray, variants: Mapping[str, np.ndarray]
    ) -> None:
        cut = bool(self._scene.is_cut(original)) if self._scene is not None else False
        prev_o = self._prev_original
        self._prev_original = original
        prev_v = self._prev
        self._prev = {k: v for k, v in variants.items()}
        if prev_o is None:
            return
        sel = np.asarray(region, bool)
        if not sel.any():
            self.skipped_empty += 1
            return
        flow = backward_flow(self._dis, prev_o, original)
        warped_o, valid = warp_with_flow(prev_o, flow)
        residual = float(np.abs(_gray(warped_o) - _gray(original))[valid].mean())
        if cut or residual > self.cut_residual:
            self.skipped_cuts += 1
            return
        sel = sel & valid
        if not sel.any():
            self.skipped_empty += 1
            return
        self.pairs += 1
        for name, cur in variants.items():
            if name not in prev_v:
                continue
            f = backward_flow(self._dis, prev_v[name], cur) if self.own_flow else flow
            warped, _ = warp_with_flow(prev_v[name], f)
            d = np.abs(warped[sel].astype(np.float32) - cur[sel].astype(np.float32)).mean()
            self.sums.setdefault(name, []).append(float(d))

    def result(self) -> dict[str, float]:
        """Mean flicker per variant (NaN for a variant without a counted pair)."""
        return {k: float(np.mean(v)) if v else float("nan") for k, v in self.sums.items()}

    def percentile(self, q: float) -> dict[str, float]:
        """A percentile of the per-pair flicker: the median shows steady shimmer, a high
        percentile shows jumps (e.g. when a new patch replaces the old one)."""
        return {k: float(np.percentile(v, q)) if v else float("nan") for k, v in self.sums.items()}


def temporal_flicker(
    frames: list[np.ndarray],
    regions: list[np.ndarray] | None = None,
    originals: list[np.ndarray] | None = None,
    cut_residual: float = 20.0,
) -> float:
    """Flicker of one clip (mean over counted pairs; see FlickerMeter); flow from `originals`
    (default: the frames themselves); regions default to the whole frame."""
    originals = frames if originals is None else originals
    if len(frames) != len(originals) or (regions is not None and len(regions) != len(frames)):
        raise ValueError("temporal_flicker: frames, originals and regions differ in length")
    meter = FlickerMeter(cut_residual=cut_residual)
    full = np.ones(frames[0].shape[:2], bool)
    for i, (f, o) in enumerate(zip(frames, originals, strict=True)):
        meter.add(o, full if regions is None else regions[i], {"clip": f})
    return meter.result().get("clip", float("nan"))
