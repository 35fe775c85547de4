"""The diffusion restorer: Stable Diffusion inpainting of the aligned face, LCM-sampled in a
few steps, with soft inpainting and latents reused per face.

Each keyframe's canonical face crop is enlarged to diffusion.size, encoded by the VAE, and
denoised by the inpainting UNet (inputs: the noisy latents, the covered region, the latents of
the face with that region blanked) under an LCM scheduler.

Soft inpainting: the stock inpainting pipeline binarises the mask. Here the feathered mask
stays continuous inside the loop (differential-diffusion style): before each step the latents
are pulled toward the face's own latents, noised to that step's level, by how much of the
schedule each latent pixel is still allowed to change. A pixel the mask covers fully changes
at every step, one on the feathered edge only during the first steps, and one outside the mask
never. With 4 LCM steps there are only 4 levels, so the weight is interpolated between them.
An LCM step predicts the clean latents afresh from the noisy ones, so a pixel held back before
the last step keeps little of the earlier steps: the last step's prediction is therefore
blended with the face's own latents by the mask value itself, and the painted latents move
from the face (mask 0) to the painting (mask 1) continuously. The final composite takes the
crop's own pixels wherever the mask is 0: nothing outside the covered region changes.

Temporal consistency: per face (track id) the restorer keeps the last keyframe's latents, its
noise and its seed. The next keyframe of that face starts from those latents noised again to
diffusion.reuse_strength instead of from fresh noise: the canonical alignment lines successive
crops up, so the painting changes only as much as the face did. diffusion.temporal =
"fixed-noise" (the same noise per face, as StreamDiffusion does) and "fresh" are the baselines.
State is dropped by forget (track ended, scene cut) and reset.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from lostface.config import DiffusionSettings
from lostface.frame import CoverMask
from lostface.generative.graphs import Graphed
from lostface.generative.loading import InpaintModel
from lostface.identities import Identity
from lostface.restore.align import CANON_HEIGHT, CANON_SIZE
from lostface.restore.reference import Reference
from lostface.stages import RestoreItem, Restorer

_SUPPORT = 0.01  # alpha above which a pixel belongs to the painted region


@dataclass
class _FaceState:
    """What one face keeps between its keyframes."""

    noise: torch.Tensor  # (4, h, w) latent noise, fixed per face
    latents: torch.Tensor | None = None  # (4, h, w) the last keyframe's painted latents
    keyframes: int = 0


@dataclass
class _Job:
    index: int  # position in the caller's list
    item: RestoreItem
    state: _FaceState | None  # None: a photo, nothing kept
    strength: float  # how far the start latents are noised (1: pure noise)
    start: np.ndarray | None  # BGR canonical crop to start from (init = reference)


def guidance_embedding(w: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of the guidance scale for LCM-distilled UNets (time_cond_proj_dim):
    the same construction as the timestep embedding, of (guidance - 1) x 1000."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
    args = (w.float() * 1000.0)[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return torch.nn.functional.pad(emb, (0, dim % 2))


def keep_weights(mask: torch.Tensor, step: int, steps: int, soft: bool) -> torch.Tensor:
    """How much of the painting each latent pixel keeps before step `step` (1..steps-1): the
    rest is the face's own latents at that noise level. Soft: a pixel with mask value m is free
    for the first m of the schedule, interpolated between the steps' levels; hard: the binary
    mask (m >= 0.5) throughout."""
    if not soft:
        return (mask >= 0.5).to(mask.dtype)
    return ((mask - step / steps) * steps).clamp(0.0, 1.0)


class DiffusionRestorer(Restorer):
    """Restorer (see lostface.stages) painting covered faces with an SD inpainting model.

    guide: the restorer whose painting a face's first keyframe starts from (diffusion.init =
    "reference"; the embedded reference restorer, or its neutral fill without a photo);
    identity: a trained identity (its LoRA fused into the model) whose token the prompt names."""

    def __init__(
        self,
        model: InpaintModel,
        settings: DiffusionSettings,
        guide: Restorer | None = None,
        identity: Identity | None = None,
    ) -> None:
        from diffusers import LCMScheduler

        self.model = model
        self.settings = settings
        self.guide = guide
        # a trained identity is called up by its token: "a photo of sks person, ..."
        self.prompt = (
            f"a photo of {identity.prompt}, {settings.prompt}" if identity else settings.prompt
        )
        self.scheduler = LCMScheduler.from_config(model.scheduler_config)
        self.width = settings.size
        self.height = int(round(settings.size * CANON_HEIGHT / CANON_SIZE / 8.0)) * 8
        self._faces: dict[int, _FaceState] = {}
        self.profile: dict[str, list[float]] | None = None  # seconds per stage (benchmarks)
        self._unet: Callable[..., torch.Tensor] = self._unet_eager
        self._encode_vae: Callable[[torch.Tensor], torch.Tensor] = self._encode_eager
        self._decode_vae: Callable[[torch.Tensor], torch.Tensor] = self._decode_eager
        if settings.cuda_graphs and model.device.type == "cuda":
            self._unet = Graphed(self._unet_eager, "unet")
            self._encode_vae = Graphed(self._encode_eager, "vae encoder")
            self._decode_vae = Graphed(self._decode_eager, "vae decoder")

    # -- lifecycle ------------------------------------------------------------------------
    def forget(self, track_id: int) -> None:
        self._faces.pop(track_id, None)

    def reset(self) -> None:
        self._faces.clear()

    def close(self) -> None:
        self._faces.clear()

    def learn(self, person: str, references: Sequence[Reference]) -> None:
        """A person learned while running starts their faces from the guide's painting."""
        if self.guide is not None:
            self.guide.learn(person, references)

    # -- painting -------------------------------------------------------------------------
    def restore(
        self,
        face: np.ndarray,
        cover: CoverMask,
        landmarks: np.ndarray,
        track_id: int | None = None,
        person: str | None = None,
    ) -> tuple[np.ndarray, str | None]:
        return self.restore_many([RestoreItem(face, cover, landmarks, track_id, person)])[0]

    def restore_many(self, items: Sequence[RestoreItem]) -> list[tuple[np.ndarray, str | None]]:
        """Paint several faces; faces that start from the same noise level share one batch."""
        out: list[tuple[np.ndarray, str | None]] = [(it.face.copy(), None) for it in items]
        jobs = [self._job(i, it) for i, it in enumerate(items) if _has_region(it.cover)]
        for strength in sorted({j.strength for j in jobs}):
            batch = [j for j in jobs if j.strength == strength]
            for job, painted in zip(batch, self._paint(batch, strength), strict=True):
                out[job.index] = (_composite(job.item.face, painted, job.item.cover.alpha), None)
        return out

    def _job(self, index: int, item: RestoreItem) -> _Job:
        s = self.settings
        state = None
        if item.track_id is not None:
            state = self._faces.get(item.track_id)
            if state is None:
                state = self._faces[item.track_id] = _FaceState(self._noise(item.track_id, 0))
            elif s.temporal == "fresh":
                state.noise = self._noise(item.track_id, state.keyframes)
        if state is not None and state.latents is not None and s.temporal == "reuse":
            return _Job(index, item, state, s.reuse_strength, None)
        if s.init == "reference" and self.guide is not None and s.init_strength < 1.0:
            start, _ = self.guide.restore(item.face, item.cover, item.landmarks, person=item.person)
            return _Job(index, item, state, s.init_strength, start)
        return _Job(index, item, state, 1.0, None)

    def _noise(self, track_id: int | None, keyframe: int) -> torch.Tensor:
        """Latent noise from a generator seeded by the settings' seed, the face and (for
        temporal = "fresh") its keyframe count: runs repeat exactly."""
        gen = torch.Generator().manual_seed(_seed(self.settings.seed, track_id or 0, keyframe))
        shape = (4, self.height // 8, self.width // 8)
        return torch.randn(shape, generator=gen)

    def _paint(self, jobs: list[_Job], strength: float) -> list[np.ndarray]:
        """The model's painting (BGR uint8, canonical size) of each job's face."""
        m = self.model
        dev, dt = m.device, m.dtype
        n = len(jobs)
        faces = torch.stack([self._pixels(j.item.face) for j in jobs]).to(dev, dt)
        alpha = np.stack([_resize(j.item.cover.alpha, (self.width, self.height)) for j in jobs])
        support = torch.from_numpy((alpha > _SUPPORT).astype(np.float32))[:, None].to(dev, dt)
        lat_size = (self.height // 8, self.width // 8)
        soft = torch.from_numpy(np.stack([_resize(a, lat_size[::-1]) for a in alpha]))
        soft = soft[:, None].to(dev, dt)
        cond_mask = torch.nn.functional.interpolate(support, size=lat_size, mode="nearest")
        noise = torch.stack([self._face_noise(j) for j in jobs]).to(dev, dt)
        gens = [torch.Generator().manual_seed(self._step_seed(j)) for j in jobs]
        guided = [(j, j.start) for j in jobs if j.start is not None]
        pixels = [faces, faces * (1.0 - support)]
        if guided:
            pixels.append(torch.stack([self._pixels(img) for _, img in guided]).to(dev, dt))
        with m.lock, torch.inference_mode():
            with self._stage("encode"):
                latents = self._encode(torch.cat(pixels))  # one VAE pass for everything
            own, blanked = latents[:n], latents[n : 2 * n]
            starts = {id(j): lat for (j, _), lat in zip(guided, latents[2 * n :], strict=True)}
            self.scheduler.set_timesteps(self.settings.steps, device=dev, strength=strength)
            timesteps = self.scheduler.timesteps
            if strength < 1.0:
                start = torch.stack(
                    [starts[id(j)] if id(j) in starts else self._last(j) for j in jobs]
                )
                z = self.scheduler.add_noise(start, noise, timesteps[:1].repeat(n))
            else:
                z = noise * self.scheduler.init_noise_sigma
            text, cfg = self._text(n)
            cond = self._guidance(n)
            for i, t in enumerate(timesteps):
                if i > 0:
                    w = keep_weights(soft, i, len(timesteps), self.settings.soft)
                    z = w * z + (1.0 - w) * self.scheduler.add_noise(own, noise, t.repeat(n))
                inp = torch.cat([z, cond_mask, blanked], dim=1)
                with self._stage("unet"):
                    eps = self._unet(torch.cat([inp, inp]) if cfg else inp, t, text, cond)
                if cfg:
                    uncond, cond_eps = eps.chunk(2)
                    eps = uncond + self.settings.guidance * (cond_eps - uncond)
                z, denoised = self.scheduler.step(eps, t, z, generator=gens, return_dict=False)
            keep = soft if self.settings.soft else (soft >= 0.5).to(soft.dtype)
            final = keep * denoised + (1.0 - keep) * own
            with self._stage("decode"):
                images = self._decode_vae(final / m.latent_scale)
        for j, lat in zip(jobs, final, strict=True):
            if j.state is not None:
                j.state.latents = lat.detach().clone()
                j.state.keyframes += 1
        return [self._bgr(x) for x in images]

    @staticmethod
    def _last(job: _Job) -> torch.Tensor:
        """The latents of the face's last keyframe (a job that reuses them has some)."""
        assert job.state is not None and job.state.latents is not None
        return job.state.latents

    def _face_noise(self, job: _Job) -> torch.Tensor:
        return job.state.noise if job.state is not None else self._noise(None, 0)

    def _step_seed(self, job: _Job) -> int:
        """Seed of the noise the scheduler adds between steps, per face and keyframe."""
        keyframe = job.state.keyframes if job.state is not None else 0
        return _seed(self.settings.seed, job.item.track_id or 0, keyframe) + 1

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Time a stage into self.profile when a benchmark asks for it (None: no timing, and
        no device synchronisation, which would stall a GPU's queue)."""
        if self.profile is None:
            yield
            return
        sync = torch.cuda.synchronize if self.model.device.type == "cuda" else (lambda: None)
        sync()
        t0 = time.perf_counter()
        yield
        sync()
        self.profile.setdefault(name, []).append(time.perf_counter() - t0)

    def _encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self._encode_vae(pixels) * self.model.latent_scale

    # the model's calls, as functions of tensors alone (what a CUDA graph records)
    def _unet_eager(
        self, x: torch.Tensor, t: torch.Tensor, text: torch.Tensor, cond: torch.Tensor | None
    ) -> torch.Tensor:
        return self.model.unet(x, t, encoder_hidden_states=text, timestep_cond=cond).sample

    def _encode_eager(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.vae.encode(pixels).latent_dist.mean

    def _decode_eager(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.vae.decode(latents).sample

    def _text(self, n: int) -> tuple[torch.Tensor, bool]:
        """Prompt embeddings for n faces; with classifier-free guidance (a model without a
        guidance embedding and guidance > 1) the negative prompt's come first."""
        m = self.model
        pos = m.prompt_embeds(self.prompt).expand(n, -1, -1)
        if m.guidance_dim is None and self.settings.guidance > 1.0:
            neg = m.prompt_embeds(self.settings.negative_prompt).expand(n, -1, -1)
            return torch.cat([neg, pos]), True
        return pos, False

    def _guidance(self, n: int) -> torch.Tensor | None:
        dim = self.model.guidance_dim
        if dim is None:
            return None
        w = torch.full((n,), self.settings.guidance - 1.0)
        return guidance_embedding(w, dim).to(self.model.device, self.model.dtype)

    def _pixels(self, bgr: np.ndarray) -> torch.Tensor:
        """A canonical BGR crop as the model's input: RGB in [-1, 1] at its working size."""
        big = cv2.resize(bgr, (self.width, self.height), interpolation=cv2.INTER_CUBIC)
        rgb = np.ascontiguousarray(big[:, :, ::-1], dtype=np.float32) / 127.5 - 1.0
        return torch.from_numpy(rgb).permute(2, 0, 1)

    @staticmethod
    def _bgr(x: torch.Tensor) -> np.ndarray:
        rgb = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().byte().permute(1, 2, 0).cpu()
        bgr = np.ascontiguousarray(rgb.numpy()[:, :, ::-1])
        return cv2.resize(bgr, (CANON_SIZE, CANON_HEIGHT), interpolation=cv2.INTER_AREA)


def _has_region(cover: CoverMask) -> bool:
    return bool(cover.covered and float(cover.alpha.max()) > _SUPPORT)


def _resize(a: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.resize(a.astype(np.float32), size, interpolation=cv2.INTER_AREA)


def _composite(face: np.ndarray, painted: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The painting blended in by the soft mask; the crop's own pixels where the mask is 0."""
    a = np.clip(alpha.astype(np.float32), 0.0, 1.0)[..., None]
    out = face.astype(np.float32) * (1.0 - a) + painted.astype(np.float32) * a
    out = np.clip(out + 0.5, 0, 255).astype(np.uint8)
    keep = a[..., 0] <= 0.0
    out[keep] = face[keep]
    return out


def _seed(seed: int, track_id: int, keyframe: int) -> int:
    return (seed * 1_000_003 + track_id * 7919 + keyframe * 104_729) % (2**63)
