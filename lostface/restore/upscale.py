"""Upscalers: enlarge a small face's pixels before the canonical warp (keyframes only).

The embedded engine is the warp's own bilinear resampling: `ResizeUpscaler` hands the pixels
back as they are and the painter's warp to the 256-pixel canonical crop does the enlarging.
"""

from __future__ import annotations

import numpy as np

from lostface.stages import Upscaler


class ResizeUpscaler(Upscaler):
    """Upscaler (see lostface.stages) that leaves the resampling to the canonical warp."""

    def upscale(self, image: np.ndarray, factor: int) -> np.ndarray:
        return image
