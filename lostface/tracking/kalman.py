"""Constant-velocity Kalman filter over one face box (filterpy).

State: box centre (cx, cy), scale s = sqrt(w*h) in pixels and aspect r = w/h, each with
its velocity per frame. Noise scales with the face size, so one setting suits a 30-px
face in a crowd and a 300-px close-up alike: detector jitter and head acceleration are
both roughly proportional to the face's size in the image.
"""

from __future__ import annotations

import numpy as np
from filterpy.kalman import KalmanFilter

# Noise settings are given for a 100-px face and scale with its size: measurement_noise=4
# is a 4-px (4 %) standard deviation of the detected centre and scale; process_noise=1 is
# a 2-px/frame^2 acceleration (lively head motion; less lags a moving face, more passes
# detector jitter through).
_REF_SIZE = 100.0
_PROCESS_SCALE = 2.0
# Aspect is unitless and changes slowly: its noise is a fixed fraction of the settings.
_ASPECT_MEAS = 0.01  # aspect std per unit of measurement_noise
_ASPECT_PROC = 0.001  # aspect acceleration std per unit of process_noise
# Faces change size (walking closer, zooming) far more gently than they move across the
# picture, so the scale gets a fraction of the position's process noise.
_SCALE_PROC = 0.25
_INIT_VEL = 0.1  # initial velocity uncertainty, in face sizes per frame
_MIN_SCALE = 2.0


def box_to_z(box: np.ndarray, out: np.ndarray) -> np.ndarray:
    """x1,y1,x2,y2 -> (cx, cy, s, r) written into out (4,)."""
    w = max(float(box[2] - box[0]), 1.0)
    h = max(float(box[3] - box[1]), 1.0)
    out[0] = (box[0] + box[2]) * 0.5
    out[1] = (box[1] + box[3]) * 0.5
    out[2] = np.sqrt(w * h)
    out[3] = w / h
    return out


def z_to_box(z: np.ndarray, out: np.ndarray) -> np.ndarray:
    """(cx, cy, s, r) -> x1,y1,x2,y2 written into out (4,)."""
    s = max(float(z[2]), _MIN_SCALE)
    r = min(max(float(z[3]), 0.2), 5.0)
    w = s * np.sqrt(r)
    h = s / np.sqrt(r)
    out[0] = z[0] - w * 0.5
    out[1] = z[1] - h * 0.5
    out[2] = z[0] + w * 0.5
    out[3] = z[1] + h * 0.5
    return out


class BoxKalman:
    """One face's filter. Matrices are built once here; per frame only their noise
    entries are rescaled in place to the current face size."""

    def __init__(self, box: np.ndarray, process_noise: float, measurement_noise: float) -> None:
        kf = KalmanFilter(dim_x=8, dim_z=4)
        for i in range(4):
            kf.F[i, i + 4] = 1.0
        kf.H[:, :4] = np.eye(4)
        sm = measurement_noise / _REF_SIZE
        self._r_unit = np.diag([sm**2, sm**2, sm**2, 0.0])
        self._r_const = np.diag([0.0, 0.0, 0.0, (_ASPECT_MEAS * measurement_noise) ** 2])
        # Discrete white-noise acceleration: per axis [[1/4, 1/2], [1/2, 1]] * sigma_a^2.
        block = np.array([[0.25, 0.5], [0.5, 1.0]])
        sa = process_noise * _PROCESS_SCALE / _REF_SIZE
        sr = process_noise * _ASPECT_PROC
        self._q_unit = np.zeros((8, 8))
        self._q_const = np.zeros((8, 8))
        for i in range(4):
            if i == 3:
                target, sigma = self._q_const, sr
            else:
                target, sigma = self._q_unit, sa * (_SCALE_PROC if i == 2 else 1.0)
            idx = np.ix_([i, i + 4], [i, i + 4])
            target[idx] = block * sigma**2
        self._z = np.zeros(4)
        self.kf = kf
        self.reset(box)

    def reset(self, box: np.ndarray) -> None:
        """Start from one measured box, velocities unknown."""
        z = box_to_z(box, self._z)
        s = float(z[2])
        self.kf.x[:] = 0.0
        self.kf.x[:4, 0] = z
        self._rescale(s)
        p = self.kf.P
        p[:] = 0.0
        p[:4, :4] = self.kf.R
        vel = (_INIT_VEL * s) ** 2
        p[4, 4] = p[5, 5] = p[6, 6] = vel
        p[7, 7] = (_INIT_VEL * 0.5) ** 2

    def _rescale(self, s: float) -> None:
        s2 = s * s
        np.multiply(self._q_unit, s2, out=self.kf.Q)
        np.add(self.kf.Q, self._q_const, out=self.kf.Q)
        np.multiply(self._r_unit, s2, out=self.kf.R)
        np.add(self.kf.R, self._r_const, out=self.kf.R)

    @property
    def scale(self) -> float:
        return float(self.kf.x[2, 0])

    def predict(self) -> None:
        self._rescale(max(self.scale, _MIN_SCALE))
        self.kf.predict()
        x = self.kf.x
        if x[2, 0] < _MIN_SCALE:
            x[2, 0] = _MIN_SCALE
            x[6, 0] = 0.0
        x[3, 0] = min(max(x[3, 0], 0.2), 5.0)

    def update(self, box: np.ndarray, doubt: float = 1.0) -> None:
        """Correct with a measured box; `doubt` multiplies the measurement's standard
        deviation (a loose measurement moves the estimate less)."""
        z = box_to_z(box, self._z)
        self._rescale(max(0.5 * (self.scale + float(z[2])), _MIN_SCALE))
        if doubt == 1.0:
            self.kf.update(z)
        else:
            self.kf.update(z, R=self.kf.R * doubt**2)

    def damp(self, factor: float) -> None:
        """Shrink the velocities: a face lost to the detector is more likely to have
        stopped than to keep moving at full speed."""
        self.kf.x[4:, 0] *= factor

    def box(self, out: np.ndarray) -> np.ndarray:
        """Current estimate as x1,y1,x2,y2, written into out."""
        return z_to_box(self.kf.x[:4, 0], out)
