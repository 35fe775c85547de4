"""Canonical face space: every face is aligned to one crop by a similarity transform.

Segmentation, restoration and patches all live in this space, so a patch painted on a
keyframe can be carried onto any later frame by the transform of that frame's face.
The template is the common 5-point face template (eyes, nose tip, mouth corners),
scaled so the whole head from forehead to below the chin fits in the crop: CANON_SIZE wide,
CANON_HEIGHT tall (the extra rows below the chin hold the part of a face covering that reaches
under it, also when the landmarks of a masked face sit a little high).
"""

from __future__ import annotations

import cv2
import numpy as np

CANON_SIZE = 256  # width; canonical coordinates are in these pixels
CANON_HEIGHT = 288
CANON_SHAPE = (CANON_HEIGHT, CANON_SIZE)  # numpy shape of a canonical mask
CANON_DSIZE = (CANON_SIZE, CANON_HEIGHT)  # cv2 (width, height) of a canonical crop

# 5-point face template for a 112x112 crop (eyes, nose tip, mouth corners), widely used
# for face alignment; re-centred and scaled x2 so the eye midpoint sits at (128, 100).
_TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float64,
)
_EYE_MID_112 = (_TEMPLATE_112[0] + _TEMPLATE_112[1]) / 2
CANON_SCALE = 2.0 * CANON_SIZE / 256
CANON_LANDMARKS = (
    (_TEMPLATE_112 - _EYE_MID_112) * CANON_SCALE + np.array([128.0, 100.0]) * CANON_SIZE / 256
).astype(np.float32)
# the template's eye distance (canonical px): the unit of distances between faces' points
CANON_EYE_DISTANCE = float(np.hypot(*(CANON_LANDMARKS[1] - CANON_LANDMARKS[0])))

# Eyes and nose stay visible above a face mask; mouth corners under a mask are only the
# detector's guess, so they pull the alignment far less.
VISIBLE_WEIGHTS = np.array([1.0, 1.0, 0.8, 0.15, 0.15], dtype=np.float64)


def similarity(src: np.ndarray, dst: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst.

    Weighted Umeyama; returns a 2x3 float64 matrix. Needs at least two distinct points.
    """
    src = np.asarray(src, np.float64).reshape(-1, 2)
    dst = np.asarray(dst, np.float64).reshape(-1, 2)
    w = np.ones(len(src)) if weights is None else np.asarray(weights, np.float64)[: len(src)]
    w = w / w.sum()
    mu_s = (w[:, None] * src).sum(0)
    mu_d = (w[:, None] * dst).sum(0)
    s = src - mu_s
    d = dst - mu_d
    var_s = float((w * (s**2).sum(1)).sum())
    if var_s < 1e-9:
        raise ValueError("similarity: source points coincide")
    cov = (w[:, None, None] * d[:, :, None] * s[:, None, :]).sum(0)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = float((sig * np.diag(sign)).sum() / var_s)
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def to_canonical(landmarks: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """2x3 transform image -> canonical space from a face's first five landmarks."""
    return similarity(
        np.asarray(landmarks)[:5], CANON_LANDMARKS, VISIBLE_WEIGHTS if weights is None else weights
    )


def invert(m: np.ndarray) -> np.ndarray:
    """Inverse of a 2x3 affine transform."""
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


def compose(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The 2x3 affine map `a` applied after `b`."""
    out = np.empty((2, 3))
    out[:, :2] = a[:, :2] @ b[:, :2]
    out[:, 2] = a[:, :2] @ b[:, 2] + a[:, 2]
    return out


def apply(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine transform to (N,2) points."""
    p = np.asarray(points, np.float64).reshape(-1, 2)
    return p @ np.asarray(m, np.float64)[:, :2].T + np.asarray(m, np.float64)[:, 2]


def warp_to_canonical(image: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Crop and align a face: image -> (CANON_HEIGHT, CANON_SIZE) crop (border replicated)."""
    return cv2.warpAffine(
        image, m, CANON_DSIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )


def in_picture(shape: tuple[int, ...], m: np.ndarray) -> np.ndarray | None:
    """Where the canonical crop of transform `m` (image -> canonical) samples an image of
    this shape (bool, CANON_SHAPE), for a face the image's edge cuts; None when the crop lies
    inside the image everywhere (warp_to_canonical repeats the edge's pixels beyond it)."""
    h, w = shape[:2]
    cw, ch = CANON_DSIZE
    corners = np.array([[0, 0], [cw - 1, 0], [cw - 1, ch - 1], [0, ch - 1]], np.float64)
    pts = apply(invert(m), corners)
    if (pts >= -0.5).all() and (pts[:, 0] <= w - 0.5).all() and (pts[:, 1] <= h - 0.5).all():
        return None
    ones = np.full((h, w), 255, np.uint8)
    seen = cv2.warpAffine(
        ones, m, CANON_DSIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
    return np.asarray(seen >= 128)


def scale_of(m: np.ndarray) -> float:
    """Uniform scale factor of a similarity transform."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(m, np.float64)[:, :2]))))


def roll_of(m: np.ndarray) -> float:
    """Rotation angle (radians) of a similarity transform."""
    a = np.asarray(m, np.float64)
    return float(np.arctan2(a[1, 0], a[0, 0]))


def yaw_proxy(landmarks: np.ndarray) -> float:
    """Head turn from 2-D landmarks: nose offset from the eye midpoint, in eye distances.

    0 for a frontal face, negative when the nose points to the image's left.
    """
    lm = np.asarray(landmarks, np.float64)
    eye_mid = (lm[0] + lm[1]) / 2
    eye_vec = lm[1] - lm[0]
    dist = float(np.hypot(*eye_vec)) or 1.0
    return float(np.dot(lm[2] - eye_mid, eye_vec) / dist**2)


def pitch_proxy(landmarks: np.ndarray) -> float:
    """Head tilt from 2-D landmarks: nose drop below the eye line, in eye distances."""
    lm = np.asarray(landmarks, np.float64)
    eye_mid = (lm[0] + lm[1]) / 2
    eye_vec = lm[1] - lm[0]
    dist = float(np.hypot(*eye_vec)) or 1.0
    normal = np.array([-eye_vec[1], eye_vec[0]]) / dist
    return float(np.dot(lm[2] - eye_mid, normal) / dist)
