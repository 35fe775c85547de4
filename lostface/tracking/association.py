"""Matching predicted track boxes to detections: Hungarian assignment on 1 - IoU.

IoU alone loses fast faces (a face that moved more than its own width between two
detection rounds has IoU 0 with its prediction), so pairs that fail the IoU gate may
still match on centre distance measured in face sizes, at a cost above every IoU match.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment

_INFEASIBLE = 1e6
_MAX_SIZE_RATIO = 2.0  # a distance match must keep the face size within this factor


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of boxes a (N,4) and b (M,4), x1,y1,x2,y2 -> (N,M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix1 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy1 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix2 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix2 - ix1, 0.0, None) * np.clip(iy2 - iy1, 0.0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-9), 0.0)


def _sizes(boxes: np.ndarray) -> np.ndarray:
    w = np.clip(boxes[:, 2] - boxes[:, 0], 1.0, None)
    h = np.clip(boxes[:, 3] - boxes[:, 1], 1.0, None)
    return np.sqrt(w * h)


def centre_distance_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise centre distance of boxes a (N,4) and b (M,4), in face sizes
    (divided by the geometric mean of both boxes' sqrt(area)) -> (N,M)."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ca = (a[:, :2] + a[:, 2:]) * 0.5
    cb = (b[:, :2] + b[:, 2:]) * 0.5
    d = np.hypot(ca[:, None, 0] - cb[None, :, 0], ca[:, None, 1] - cb[None, :, 1])
    return d / np.sqrt(_sizes(a)[:, None] * _sizes(b)[None, :])


def cost_matrix(
    tracks: np.ndarray, dets: np.ndarray, match_iou: float, match_distance: float
) -> tuple[np.ndarray, np.ndarray]:
    """(cost, iou): cost 1 - IoU where IoU >= match_iou, 1 + d/match_distance where only
    the centre distance d (face sizes) is within match_distance and sizes agree, else
    infeasible."""
    iou = iou_matrix(tracks, dets)
    cost = np.full(iou.shape, _INFEASIBLE)
    if match_distance > 0:
        dist = centre_distance_matrix(tracks, dets)
        ratio = (
            _sizes(np.asarray(tracks, np.float64).reshape(-1, 4))[:, None]
            / _sizes(np.asarray(dets, np.float64).reshape(-1, 4))[None, :]
        )
        near = (
            (dist <= match_distance) & (ratio <= _MAX_SIZE_RATIO) & (ratio >= 1 / _MAX_SIZE_RATIO)
        )
        cost = np.where(near, 1.0 + dist / match_distance, cost)
    cost = np.where(iou >= match_iou, 1.0 - iou, cost)
    return cost, iou


def associate(
    tracks: np.ndarray, dets: np.ndarray, match_iou: float, match_distance: float = 1.0
) -> tuple[list[tuple[int, int]], list[int], list[int], np.ndarray]:
    """Globally cheapest one-to-one matching of track boxes to detection boxes.

    Returns (matches as (track_index, detection_index), unmatched track indices,
    unmatched detection indices, the IoU matrix).
    """
    n, m = len(tracks), len(dets)
    if n == 0 or m == 0:
        return [], list(range(n)), list(range(m)), np.zeros((n, m))
    cost, iou = cost_matrix(tracks, dets, match_iou, match_distance)
    rows, cols = linear_sum_assignment(cost)
    matches = [
        (int(r), int(c)) for r, c in zip(rows, cols, strict=True) if cost[r, c] < _INFEASIBLE
    ]
    matched_t = {r for r, _ in matches}
    matched_d = {c for _, c in matches}
    return (
        matches,
        [i for i in range(n) if i not in matched_t],
        [j for j in range(m) if j not in matched_d],
        iou,
    )
