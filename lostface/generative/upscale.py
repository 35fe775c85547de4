"""The Stable Diffusion x4 upscaler as an Upscaler (upscale.engine = "sd-x4"), for GPUs: a
small face is enlarged 4x by the diffusion model, LCM-sampled in upscale.steps steps, before
the painter aligns it. Its model is shared by the process (lostface.generative.loading)."""

from __future__ import annotations

import numpy as np
import torch

from lostface.config import UpscaleSettings
from lostface.generative.loading import UpscaleModel
from lostface.stages import Upscaler


class SdX4Upscaler(Upscaler):
    """Upscaler (see lostface.stages): 4x, whatever factor is asked for."""

    def __init__(self, model: UpscaleModel, settings: UpscaleSettings, seed: int = 0) -> None:
        self.model = model
        self.settings = settings
        self.seed = seed

    def upscale(self, image: np.ndarray, factor: int) -> np.ndarray:
        m = self.model
        rgb = torch.from_numpy(np.ascontiguousarray(image[:, :, ::-1])).permute(2, 0, 1)
        small = (rgb.float() / 255.0)[None].to(m.device, m.dtype)  # the pipeline takes [0, 1]
        gen = torch.Generator().manual_seed(self.seed)  # the same face, the same detail
        with m.lock, torch.inference_mode():
            out = m.pipe(
                prompt_embeds=m.prompt_embeds(self.settings.prompt),
                image=small,
                num_inference_steps=self.settings.steps,
                guidance_scale=0.0,
                noise_level=self.settings.noise_level,
                generator=gen,
                output_type="np",
            ).images[0]
        bgr = np.clip(out[:, :, ::-1] * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(bgr)
