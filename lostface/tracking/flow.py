"""Face motion between consecutive frames from sparse optical flow (pyramidal Lucas-Kanade).

The detector runs every `tracking.detect_every` frames. Between its rounds a constant-velocity
Kalman prediction only guesses where a face went, and a talking, turning head does not move
at constant velocity: a patch placed on the guess slides off the mask it should cover. Here
the face's own pixels say how it moved: corners found in the face box on the previous frame
are followed into the current one (forward and back, so points that do not return to where
they started are dropped), and a similarity (shift, scale, roll) is fitted to the survivors
with RANSAC, so the background inside the box and a moving hand are outvoted.

Only small grey crops around each face are kept from one frame to the next (never a whole
frame), so a frame composited in place later does not disturb the next flow step.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

_MARGIN = 0.3  # crop around the box, in box sizes per side: room for the face to move
_MAX_POINTS = 40
_REFRESH = 20  # fewer points kept from the last step than this: look for corners again
_QUALITY = 0.01
_MIN_POINTS = 8  # fewer surviving points than this: no estimate (the tracker predicts)
_FB_MAX = 1.0  # px: forward-backward error above which a point is dropped
_RANSAC_PX = 1.5
_SCALE_RANGE = (0.8, 1.25)  # per-frame scale change beyond this is a failed fit, not motion
_MAX_SHIFT = 0.5  # per-frame shift beyond this many box sizes is a failed fit
_LK_WIN = (11, 11)
_LK_LEVELS = 2
_LK_STOP = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03)


@dataclass(slots=True)
class _Crop:
    x0: int
    y0: int
    grey: np.ndarray
    points: np.ndarray  # (N,1,2) float32, crop coordinates


def _rect(box: np.ndarray, shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    w, h = float(box[2] - box[0]), float(box[3] - box[1])
    if w < 4 or h < 4:
        return None
    x0 = max(int(box[0] - _MARGIN * w), 0)
    y0 = max(int(box[1] - _MARGIN * h), 0)
    x1 = min(int(box[2] + _MARGIN * w) + 1, shape[1])
    y1 = min(int(box[3] + _MARGIN * h) + 1, shape[0])
    if x1 - x0 < 8 or y1 - y0 < 8:
        return None
    return x0, y0, x1, y1


def _grey(image: np.ndarray, x0: int, y0: int, x1: int, y1: int) -> np.ndarray:
    roi = image[y0:y1, x0:x1]
    if roi.ndim == 2:
        return roi.copy()
    return cv2.cvtColor(roi, cv2.COLOR_BGR2GRAY)


def _lk(a: np.ndarray, b: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    out = cv2.calcOpticalFlowPyrLK(  # type: ignore[call-overload]
        a, b, pts, None, winSize=_LK_WIN, maxLevel=_LK_LEVELS, criteria=_LK_STOP
    )
    return out[0], out[1], out[2]


class FaceFlow:
    """Per-track motion from the previous frame to the current one (2x3 similarity)."""

    def __init__(self) -> None:
        self._crops: dict[int, _Crop] = {}
        self._kept: dict[int, np.ndarray] = {}  # points that followed well, image coordinates

    def reset(self) -> None:
        self._crops.clear()
        self._kept.clear()

    def motion(self, image: np.ndarray, track_id: int, box: np.ndarray) -> np.ndarray | None:
        """The similarity that maps the track's points on the previous frame to `image`
        (image coordinates), or None when the face's pixels do not say (too few points,
        a failed fit, no previous crop). `box` is the track's box on the previous frame."""
        crop = self._crops.get(track_id)
        if crop is None or len(crop.points) < _MIN_POINTS:
            return None
        h, w = crop.grey.shape
        if crop.y0 + h > image.shape[0] or crop.x0 + w > image.shape[1]:
            return None  # the frame size changed
        cur = _grey(image, crop.x0, crop.y0, crop.x0 + w, crop.y0 + h)
        p0 = crop.points
        p1, st, _ = _lk(crop.grey, cur, p0)
        if p1 is None:
            return None
        back, st_b, _ = _lk(cur, crop.grey, p1)
        if back is None:
            return None
        fb = np.linalg.norm((back - p0).reshape(-1, 2), axis=1)
        good = (st.ravel() == 1) & (st_b.ravel() == 1) & (fb < _FB_MAX)
        if int(good.sum()) < _MIN_POINTS:
            return None
        m, inliers = cv2.estimateAffinePartial2D(
            p0[good], p1[good], method=cv2.RANSAC, ransacReprojThreshold=_RANSAC_PX
        )
        if m is None or inliers is None or int(inliers.sum()) < _MIN_POINTS:
            return None
        scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
        size = float(np.sqrt(max(box[2] - box[0], 1.0) * max(box[3] - box[1], 1.0)))
        if not _SCALE_RANGE[0] <= scale <= _SCALE_RANGE[1]:
            return None
        if float(np.abs(m[:, 2]).max()) > _MAX_SHIFT * size + 2.0 * size * abs(scale - 1.0):
            return None
        # only a fit that passed keeps its points for the next frame
        kept = p1[good][inliers.ravel() == 1].reshape(-1, 2)
        self._kept[track_id] = kept + np.array([crop.x0, crop.y0], np.float32)
        # crop coordinates -> image coordinates (both crops share the origin)
        o = np.array([crop.x0, crop.y0], np.float64)
        out = m.astype(np.float64)
        out[:, 2] = m[:, 2] + o - m[:, :2] @ o
        return out

    def remember(self, image: np.ndarray, boxes: dict[int, np.ndarray]) -> None:
        """Keep a grey crop and points of each face on this frame for the next motion():
        the points that followed the face well so far, or fresh corners in its box."""
        crops: dict[int, _Crop] = {}
        kept_all, self._kept = self._kept, {}
        for tid, box in boxes.items():
            r = _rect(box, image.shape)
            if r is None:
                continue
            x0, y0, x1, y1 = r
            grey = _grey(image, x0, y0, x1, y1)
            # points inside the face box itself (the margin only gives them room to move)
            bx0, by0 = int(max(box[0] - x0, 0)), int(max(box[1] - y0, 0))
            bx1, by1 = int(min(box[2] - x0, x1 - x0)), int(min(box[3] - y0, y1 - y0))
            kept = kept_all.get(tid)
            if kept is not None:
                kept = kept - np.array([x0, y0], np.float32)
                inside = (
                    (kept[:, 0] >= bx0)
                    & (kept[:, 0] < bx1)
                    & (kept[:, 1] >= by0)
                    & (kept[:, 1] < by1)
                )
                kept = kept[inside]
            if kept is not None and len(kept) >= _REFRESH:
                points = np.ascontiguousarray(kept.reshape(-1, 1, 2), np.float32)
            else:
                mask = np.zeros_like(grey)
                mask[by0:by1, bx0:bx1] = 255
                side = max(min(bx1 - bx0, by1 - by0), 1)
                pts = cv2.goodFeaturesToTrack(
                    grey, _MAX_POINTS, _QUALITY, max(side / 12.0, 2.0), mask=mask, blockSize=3
                )
                points = np.zeros((0, 1, 2), np.float32) if pts is None else pts.astype(np.float32)
            crops[tid] = _Crop(x0, y0, grey, points)
        self._crops = crops


def apply_similarity(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,2) points through a 2x3 matrix."""
    pts = np.asarray(points, np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def move_box(m: np.ndarray, box: np.ndarray) -> np.ndarray:
    """A box carried by a similarity: its centre mapped, its size scaled (no rotation)."""
    c = apply_similarity(m, np.array([(box[0] + box[2]) * 0.5, (box[1] + box[3]) * 0.5]))[0]
    s = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    hw, hh = 0.5 * s * float(box[2] - box[0]), 0.5 * s * float(box[3] - box[1])
    return np.array([c[0] - hw, c[1] - hh, c[0] + hw, c[1] + hh], np.float64)
