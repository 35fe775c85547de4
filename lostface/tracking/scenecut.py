"""Scene-cut detection from regional colour histograms of a tiny thumbnail.

A cut changes the colours of the whole picture at once; motion inside a shot moves the
same colours around. Each frame is shrunk to 64x36, split into a 3x3 grid, and each cell
gets an HSV histogram (8 hue x 4 saturation x 4 value bins). The distance between two
frames is the mean Hellinger (Bhattacharyya) distance over the cells: the grid catches
cuts between shots of the same set that a global histogram misses. A cut also has to
stand out from the recent frames of the shot (`ratio` times their mean distance), so
sustained fast motion or a whip pan does not fire on every frame.
"""

from __future__ import annotations

import cv2
import numpy as np

THUMB_W, THUMB_H = 64, 36
GRID = 3
H_BINS, S_BINS, V_BINS = 8, 4, 4
_BINS = H_BINS * S_BINS * V_BINS


def _cell_index() -> np.ndarray:
    """Grid cell of every thumbnail pixel, pre-multiplied by the bins per cell."""
    ys = np.minimum(np.arange(THUMB_H) * GRID // THUMB_H, GRID - 1)
    xs = np.minimum(np.arange(THUMB_W) * GRID // THUMB_W, GRID - 1)
    return ((ys[:, None] * GRID + xs[None, :]) * _BINS).astype(np.int32)


class HistogramSceneCut:
    """SceneCutDetector: regional HSV histogram distance to the previous frame."""

    def __init__(self, threshold: float, ratio: float = 2.0, history: int = 8) -> None:
        self.threshold = float(threshold)
        self.ratio = float(ratio)
        self._thumb = np.empty((THUMB_H, THUMB_W, 3), np.uint8)
        self._hsv = np.empty((THUMB_H, THUMB_W, 3), np.uint8)
        self._cells = _cell_index()
        self._label = np.empty((THUMB_H, THUMB_W), np.int32)
        self._tmp = np.empty((THUMB_H, THUMB_W), np.int32)
        self._prev = np.zeros((GRID * GRID, _BINS), np.float64)
        self._cur = np.zeros((GRID * GRID, _BINS), np.float64)
        self._recent = np.zeros(max(int(history), 1), np.float64)
        self._n_recent = 0
        self._has_prev = False
        self.last_distance = 0.0

    def reset(self) -> None:
        self._has_prev = False
        self._n_recent = 0

    def _histograms(self, image: np.ndarray, out: np.ndarray) -> None:
        cv2.resize(image, (THUMB_W, THUMB_H), dst=self._thumb, interpolation=cv2.INTER_AREA)
        cv2.cvtColor(self._thumb, cv2.COLOR_BGR2HSV, dst=self._hsv)
        lab, tmp = self._label, self._tmp
        # bin = cell*BINS + h*(S*V) + s*V + v; OpenCV's 8-bit hue runs 0..179.
        np.multiply(self._hsv[:, :, 0], H_BINS, out=lab, dtype=np.int32)
        np.floor_divide(lab, 180, out=lab)
        np.multiply(lab, S_BINS * V_BINS, out=lab)
        np.right_shift(self._hsv[:, :, 1], 6, out=tmp)  # 256 / S_BINS
        np.multiply(tmp, V_BINS, out=tmp)
        np.add(lab, tmp, out=lab)
        np.right_shift(self._hsv[:, :, 2], 6, out=tmp)  # 256 / V_BINS
        np.add(lab, tmp, out=lab)
        np.add(lab, self._cells, out=lab)
        counts = np.bincount(lab.ravel(), minlength=out.size)
        np.sqrt(counts.reshape(out.shape), out=out)
        # Rows hold sqrt of probabilities, so a dot product is the Bhattacharyya coefficient.
        out /= np.sqrt(np.maximum((out * out).sum(axis=1, keepdims=True), 1.0))

    def distance(self, image: np.ndarray) -> float:
        """Distance of this frame to the previous one (0 on the first frame)."""
        self._histograms(image, self._cur)
        if self._has_prev:
            bc = np.einsum("ij,ij->i", self._prev, self._cur)
            d = float(np.sqrt(np.clip(1.0 - bc, 0.0, 1.0)).mean())
        else:
            d = 0.0
        self._prev, self._cur = self._cur, self._prev
        self._has_prev = True
        return d

    def is_cut(self, image: np.ndarray) -> bool:
        """True when this frame starts a new shot; the first frame after reset is not a cut."""
        first = not self._has_prev
        d = self.distance(image)
        self.last_distance = d
        if first:
            return False
        n = self._n_recent
        k = len(self._recent)
        mean = float(self._recent[: min(n, k)].mean()) if n else 0.0
        cut = d > self.threshold and d > self.ratio * mean
        if cut:
            self._n_recent = 0
        else:
            self._recent[n % k] = d
            self._n_recent = n + 1
        return cut
