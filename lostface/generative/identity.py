"""Learning a person's face: DreamBooth LoRA training of the inpainting model, and consistency
distillation of the result into an LCM-LoRA.

    ident = train_identity(settings, ["photos/"], "alex")    # NAME/ folder, see lostface.identities
    distill_identity(settings, "alex", steps=200)            # NAME/lcm_lora.safetensors

Training (DreamBooth with LoRA, in process): the faces of the photos are found, aligned to the
canonical crop (the same alignment the restorer paints in) and covered with synthetic masks of
every kind (lostface.synthetic), so the inpainting UNet learns what it will be asked: to fill a
covered lower face with this person's, given `[noisy latents, mask, masked-face latents]` and
the prompt "a photo of sks person". The VAE and text encoder stay frozen (their outputs are
computed once); only a peft LoRA on the UNet's attention (optionally the text encoder's) learns,
with AdamW. Prior preservation, when asked for, teaches on every step that the class prompt
("a photo of a person") keeps painting what the base model paints (its own predictions with the
LoRA switched off are the targets), so "person" does not become this person.

Distillation follows the latent consistency recipe: the teacher is the base model with the
identity, sampled with classifier-free guidance; the student is the base model with a new LoRA
that learns to map a noisy latent straight to the teacher's trajectory's end (consistency with
its own prediction one DDIM step later, Huber loss). The result runs in 2 to 8 LCM steps with
no separate LCM-LoRA.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from lostface.config import Settings, dump_toml
from lostface.errors import InputError, ModelError
from lostface.identities import (
    LCM_FILE,
    META_FILE,
    Identity,
    check_name,
    get_identity,
    identities_dir,
)
from lostface.restore import align
from lostface.restore.regions import feather

log = logging.getLogger(__name__)

MIN_FACES = 3
_ATTENTION = ["to_q", "to_k", "to_v", "to_out.0"]
_TEXT_ATTENTION = ["q_proj", "k_proj", "v_proj", "out_proj"]


# -- data ---------------------------------------------------------------------------------
def collect_faces(settings: Settings, photos: list[str | Path]) -> list[tuple[str, np.ndarray]]:
    """(photo name, aligned canonical face) for every usable photo: the largest face of each,
    aligned as the restorer aligns faces; photos with no face or a covered one are skipped
    with a warning."""
    from lostface.registry import build_detector, build_segmenter
    from lostface.restore.reference import CoveredReference, ReferenceBank
    from lostface.stream.image import read_image

    detector = build_detector(settings)
    segmenter = build_segmenter(settings)
    faces = []
    for path, _ in ReferenceBank.expand(photos):
        try:
            ref = ReferenceBank.from_image(str(path), read_image(path).bgr, detector, segmenter)
        except CoveredReference:
            log.warning("Skipping %s: the face looks covered (train on unmasked photos).", path)
            continue
        except InputError as exc:
            log.warning("Skipping %s: %s", path, exc)
            continue
        faces.append((path.name, ref.image))
    return faces


@dataclass
class _Example:
    image: torch.Tensor  # (3, H, W) in [-1, 1]
    mask: torch.Tensor  # (1, H, W) in {0, 1}


def _examples(faces: list[np.ndarray], settings: Settings, seed: int) -> list[_Example]:
    """Every face, and its mirror image, under a synthetic covering of every kind."""
    from lostface.synthetic import KINDS, draw_mask

    rng = np.random.default_rng(seed)
    width = settings.identity.size
    height = _height(width)
    out = []
    for face in faces:
        for img in (face, np.ascontiguousarray(face[:, ::-1])):
            for kind in KINDS:
                sm = draw_mask(img, align.CANON_LANDMARKS, kind=kind, rng=rng)
                region = feather(sm.covered, settings.mask.dilate, settings.mask.feather_radius)
                mask = cv2.resize((region > 0.01).astype(np.float32), (width, height))
                big = cv2.resize(img, (width, height), interpolation=cv2.INTER_CUBIC)
                rgb = torch.from_numpy(np.ascontiguousarray(big[:, :, ::-1])).permute(2, 0, 1)
                out.append(
                    _Example(rgb.float() / 127.5 - 1.0, torch.from_numpy(mask > 0.5)[None].float())
                )
    return out


def _height(width: int) -> int:
    return int(round(width * align.CANON_HEIGHT / align.CANON_SIZE / 8.0)) * 8


# -- the models -----------------------------------------------------------------------------
@dataclass
class _Parts:
    pipe: Any  # StableDiffusionInpaintPipeline (not LCM-fused)
    device: torch.device
    dtype: torch.dtype  # of the frozen weights
    folder: Path  # the base model's folder


def _load_base(settings: Settings) -> _Parts:
    from lostface.generative.loading import (
        check_inpaint_folder,
        choose_device,
        open_inpaint_pipeline,
    )
    from lostface.models import resolve

    device, dtype = choose_device(settings.models)
    folder = resolve(settings, "models.inpaint")
    check_inpaint_folder(folder)
    try:
        pipe = open_inpaint_pipeline(folder, dtype)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(
            f"Could not load models.inpaint {folder} ({type(exc).__name__}); check it with "
            "`lostface models verify models.inpaint`."
        ) from None
    pipe.to(device)
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.requires_grad_(False)
    return _Parts(pipe, device, dtype, folder)


def _check_token(pipe: Any, token: str) -> None:
    ids = pipe.tokenizer(token, add_special_tokens=False).input_ids
    if len(ids) != 1:
        log.warning(
            "identity.token %r is %d tokens for this tokenizer; a single rare token binds a "
            "person best.",
            token,
            len(ids),
        )


def _embed(pipe: Any, prompt: str) -> torch.Tensor:
    from lostface.generative.loading import encode_prompt

    return encode_prompt(pipe.tokenizer, pipe.text_encoder, prompt, pipe.device)


def _add_lora(module: Any, rank: int, targets: list[str], name: str) -> list[torch.nn.Parameter]:
    """A LoRA adapter on `module`; its parameters in float32 (the frozen weights may be half)."""
    from peft import LoraConfig

    module.add_adapter(
        LoraConfig(r=rank, lora_alpha=rank, init_lora_weights="gaussian", target_modules=targets),
        adapter_name=name,
    )
    params = [p for n, p in module.named_parameters() if "lora_" in n]
    for p in params:
        p.data = p.data.float()
        p.requires_grad_(True)
    return params


class _Batches:
    """Encoded examples (VAE latents of the face and of the masked face, the mask at latent
    size), computed once, drawn at random."""

    def __init__(self, parts: _Parts, examples: list[_Example], batch: int, seed: int) -> None:
        vae = parts.pipe.vae
        scale = float(vae.config.scaling_factor)
        self.items = []
        with torch.no_grad():
            for ex in examples:
                img = ex.image[None].to(parts.device, parts.dtype)
                mask = ex.mask[None].to(parts.device, parts.dtype)
                both = torch.cat([img, img * (1.0 - mask)])
                lat = vae.encode(both).latent_dist.mean * scale
                small = torch.nn.functional.interpolate(mask, size=lat.shape[-2:])
                self.items.append((lat[0], lat[1], small[0]))
        self.batch = batch
        self.gen = torch.Generator().manual_seed(seed)

    def draw(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.randint(len(self.items), (self.batch,), generator=self.gen).tolist()
        return tuple(torch.stack([self.items[i][k] for i in idx]) for k in range(3))  # type: ignore[return-value]


def _held_out(batches: _Batches, sched: Any, seed: int, n: int = 8) -> list[tuple]:
    """Fixed examples with fixed noise and timesteps spread over the schedule: the loss on
    them before and after training says whether the LoRA learnt (the training loss jumps
    with the random timesteps)."""
    gen = torch.Generator().manual_seed(seed)
    steps = sched.config.num_train_timesteps
    out = []
    for i in range(n):
        lat, masked, mask = batches.items[i % len(batches.items)]
        noise = torch.randn(lat.shape, generator=gen).to(lat)
        t = torch.tensor([int((i + 0.5) * steps / n)], device=lat.device)
        out.append((lat[None], masked[None], mask[None], noise[None], t))
    return out


def _loss_on(pipe: Any, held: list[tuple], text: torch.Tensor, sched: Any, parts: _Parts) -> float:
    losses = []
    with torch.no_grad(), _autocast(parts):
        for lat, masked, mask, noise, t in held:
            noisy = sched.add_noise(lat, noise, t)
            target = noise
            if sched.config.prediction_type == "v_prediction":
                target = sched.get_velocity(lat, noise, t)
            inp = torch.cat([noisy, mask, masked], dim=1)
            pred = pipe.unet(inp, t, encoder_hidden_states=text).sample
            losses.append(float(torch.nn.functional.mse_loss(pred.float(), target.float())))
    return float(np.mean(losses))


def _step(optimizer: Any, loss: torch.Tensor, losses: list[float], bar: Any) -> None:
    """One optimiser step, the loss recorded and shown (its running mean) on the bar."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    losses.append(float(loss.detach()))
    bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.update(1)


def _progress(total: int, desc: str, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="step", disable=not enabled, dynamic_ncols=True)


def _autocast(parts: _Parts) -> Any:
    if parts.device.type == "cuda" and parts.dtype != torch.float32:
        return torch.autocast("cuda", dtype=parts.dtype)
    return _nothing()


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# -- training -----------------------------------------------------------------------------
def train_identity(
    settings: Settings,
    photos: list[str | Path],
    name: str,
    progress: bool = True,
) -> Identity:
    """Train an identity from photos of one person and save it under identity.dir/NAME (the
    folder appears whole, or not at all)."""
    from diffusers import DDPMScheduler, StableDiffusionInpaintPipeline
    from peft.utils import get_peft_model_state_dict

    s = settings.identity
    check_name(name)
    root = identities_dir(settings)
    folder = root / name
    if folder.exists():
        raise InputError(
            f"An identity named {name} already exists in {root}; remove it first "
            f"(`lostface identity remove {name}`) or choose another name."
        )
    faces = collect_faces(settings, photos)
    if len(faces) < MIN_FACES:
        raise InputError(
            f"Only {len(faces)} usable face photo(s) of {name} were found; give at least "
            f"{MIN_FACES} sharp, unmasked photos of the person (different days and poses help)."
        )
    torch.manual_seed(s.seed)
    parts = _load_base(settings)
    pipe = parts.pipe
    _check_token(pipe, s.token)
    examples = _examples([f for _, f in faces], settings, s.seed)
    batches = _Batches(parts, examples, s.batch, s.seed)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)
    prompt = f"a photo of {s.token} {s.class_word}"
    class_prompt = f"a photo of a {s.class_word}"
    params = _add_lora(pipe.unet, s.rank, _ATTENTION, "identity")
    if s.text_encoder:
        params += _add_lora(pipe.text_encoder, s.rank, _TEXT_ATTENTION, "identity")
    with torch.no_grad():
        fixed = {p: _embed(pipe, p) for p in (prompt, class_prompt)}
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(s.seed + 1)
    held = _held_out(batches, noise_sched, seed=s.seed + 3)
    before = _loss_on(pipe, held, fixed[prompt], noise_sched, parts)
    losses: list[float] = []
    t0 = time.perf_counter()
    bar = _progress(s.steps, f"training {name}", progress)
    for _ in range(s.steps):
        lat, masked, mask = batches.draw()
        n = lat.shape[0]
        noise = torch.randn(lat.shape, generator=gen).to(lat)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (n,), generator=gen)
        t = t.to(parts.device)
        noisy = noise_sched.add_noise(lat, noise, t)
        inp = torch.cat([noisy, mask, masked], dim=1)
        target = noise
        if noise_sched.config.prediction_type == "v_prediction":
            target = noise_sched.get_velocity(lat, noise, t)
        with _autocast(parts):
            text = _embed(pipe, prompt) if s.text_encoder else fixed[prompt]
            pred = pipe.unet(inp, t, encoder_hidden_states=text.expand(n, -1, -1)).sample
            loss = torch.nn.functional.mse_loss(pred.float(), target.float())
            if s.prior_preservation:
                cls = fixed[class_prompt].expand(n, -1, -1)
                with torch.no_grad():
                    pipe.unet.disable_adapters()
                    keep = pipe.unet(inp, t, encoder_hidden_states=cls).sample
                    pipe.unet.enable_adapters()
                mine = pipe.unet(inp, t, encoder_hidden_states=cls).sample
                loss = loss + torch.nn.functional.mse_loss(mine.float(), keep.float())
        _step(optimizer, loss, losses, bar)
    bar.close()
    seconds = time.perf_counter() - t0
    after = _loss_on(
        pipe, held, _embed(pipe, prompt) if s.text_encoder else fixed[prompt], noise_sched, parts
    )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root))
    try:
        text_layers = (
            get_peft_model_state_dict(pipe.text_encoder, adapter_name="identity")
            if s.text_encoder
            else None
        )
        StableDiffusionInpaintPipeline.save_lora_weights(
            str(tmp),
            unet_lora_layers=get_peft_model_state_dict(pipe.unet, adapter_name="identity"),
            text_encoder_lora_layers=text_layers,
            safe_serialization=True,
        )
        (tmp / "faces").mkdir()
        for i, (_, face) in enumerate(faces):
            cv2.imwrite(str(tmp / "faces" / f"{i:03d}.png"), face)
        meta = {
            "name": name,
            "token": s.token,
            "class": s.class_word,
            "base": settings.models.inpaint,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "photos": [n for n, _ in faces],
            "steps": s.steps,
            "rank": s.rank,
            "text_encoder": s.text_encoder,
            "prior_preservation": s.prior_preservation,
            # the loss on fixed examples, noise and timesteps, before and after training
            "loss_before": before,
            "loss_after": after,
            "seconds": round(seconds, 1),
            "device": str(parts.device),
        }
        (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
        (tmp / "training.toml").write_text(dump_toml(settings))
        ident = Identity(name, tmp, meta)
        _preview(settings, parts, ident, [f for _, f in faces[:3]], tmp / "preview.png")
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(
        "Identity %s: %d faces, %d steps in %.0f s, loss %.4f -> %.4f.",
        name,
        len(faces),
        s.steps,
        seconds,
        before,
        after,
    )
    return get_identity(settings, name)


def _preview(
    settings: Settings, parts: _Parts, ident: Identity, faces: list[np.ndarray], path: Path
) -> None:
    """masked | painted with the identity | original, for a few of its training faces."""
    from lostface.frame import CoverMask
    from lostface.generative.diffusion import DiffusionRestorer
    from lostface.generative.loading import InpaintModel
    from lostface.synthetic import draw_mask

    pipe = parts.pipe
    model = InpaintModel(
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler_config=dict(pipe.scheduler.config),
        device=parts.device,
        dtype=parts.dtype,
        name=ident.name,
    )
    restorer = DiffusionRestorer(model, settings.diffusion, identity=ident)
    rows = []
    rng = np.random.default_rng(0)
    for face in faces:
        sm = draw_mask(face, align.CANON_LANDMARKS, kind="surgical", rng=rng)
        alpha = feather(sm.covered, settings.mask.dilate, settings.mask.feather_radius)
        cover = CoverMask(True, alpha, sm.covered, 1.0)
        painted, _ = restorer.restore(sm.image, cover, align.CANON_LANDMARKS)
        rows.append(np.hstack([sm.image, painted, face]))
    if rows:
        cv2.imwrite(str(path), np.vstack(rows))


# -- distillation -------------------------------------------------------------------------
_SIGMA_DATA = 0.5
_TIMESTEP_SCALING = 10.0


def _boundary(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The consistency model's skip and output scalings at timestep t (LCM's choice)."""
    scaled = t.float() * _TIMESTEP_SCALING
    c_skip = _SIGMA_DATA**2 / (scaled**2 + _SIGMA_DATA**2)
    c_out = scaled / (scaled**2 + _SIGMA_DATA**2) ** 0.5
    return c_skip[:, None, None, None], c_out[:, None, None, None]


def _x0(pred: torch.Tensor, x: torch.Tensor, a: torch.Tensor, kind: str) -> torch.Tensor:
    """The clean latents a prediction implies (alpha_cumprod a at the step)."""
    if kind == "v_prediction":
        return a.sqrt() * x - (1 - a).sqrt() * pred
    return (x - (1 - a).sqrt() * pred) / a.sqrt()


def _eps(pred: torch.Tensor, x: torch.Tensor, a: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "v_prediction":
        return a.sqrt() * pred + (1 - a).sqrt() * x
    return pred


def distill_identity(
    settings: Settings,
    name: str,
    steps: int = 200,
    guidance: tuple[float, float] = (3.0, 9.0),
    progress: bool = True,
) -> Identity:
    """Consistency-distil base + identity into an LCM-LoRA (NAME/lcm_lora.safetensors)."""
    from diffusers import DDPMScheduler, StableDiffusionInpaintPipeline
    from peft.utils import get_peft_model_state_dict

    ident = get_identity(settings, name)
    s = settings.identity
    faces = [img for p in ident.faces if (img := cv2.imread(str(p))) is not None]
    if len(faces) < MIN_FACES:
        raise InputError(f"Identity {name} holds {len(faces)} faces; train it again.")
    torch.manual_seed(s.seed)
    teacher = _load_base(settings)
    _load_lora(teacher.pipe, ident.lora, "identity", settings.identity.weight)
    student = _load_base(settings)
    params = _add_lora(student.pipe.unet, max(s.rank, 32), _ATTENTION + ["conv1", "conv2"], "lcm")
    batches = _Batches(student, _examples(faces, settings, s.seed), s.batch, s.seed)
    sched = DDPMScheduler.from_config(student.pipe.scheduler.config)
    kind = sched.config.prediction_type
    alphas = sched.alphas_cumprod.to(student.device)
    k = sched.config.num_train_timesteps // 50  # the DDIM solver's skip (50 original steps)
    grid = torch.arange(1, 51, device=student.device) * k - 1
    with torch.no_grad():
        cond = _embed(teacher.pipe, f"a photo of {ident.prompt}")
        uncond = _embed(teacher.pipe, "")
    optimizer = torch.optim.AdamW(params, lr=s.learning_rate, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(s.seed + 2)
    losses: list[float] = []
    bar = _progress(steps, f"distilling {name}", progress)
    for _ in range(steps):
        lat, masked, mask = batches.draw()
        n = lat.shape[0]
        idx = torch.randint(1, len(grid), (n,), generator=gen).to(student.device)
        t, s_prev = grid[idx], grid[idx] - k
        a_t = alphas[t][:, None, None, None]
        a_s = alphas[s_prev.clamp(min=0)][:, None, None, None]
        noise = torch.randn(lat.shape, generator=gen).to(lat)
        x_t = sched.add_noise(lat, noise, t)
        inp = torch.cat([x_t, mask, masked], dim=1)
        c_skip, c_out = _boundary(t)
        with _autocast(student):
            pred = student.pipe.unet(inp, t, encoder_hidden_states=cond.expand(n, -1, -1)).sample
            mine = c_skip * x_t + c_out * _x0(pred.float(), x_t, a_t, kind)
        with torch.no_grad(), _autocast(teacher):
            w = torch.empty(n, 1, 1, 1).uniform_(*guidance, generator=gen).to(lat)
            both = teacher.pipe.unet(
                torch.cat([inp, inp]),
                torch.cat([t, t]),
                encoder_hidden_states=torch.cat([uncond.expand(n, -1, -1), cond.expand(n, -1, -1)]),
            ).sample.float()
            pu, pc = both.chunk(2)
            x0_t = _x0(pu, x_t, a_t, kind) + w * (_x0(pc, x_t, a_t, kind) - _x0(pu, x_t, a_t, kind))
            eps_t = _eps(pu, x_t, a_t, kind) + w * (
                _eps(pc, x_t, a_t, kind) - _eps(pu, x_t, a_t, kind)
            )
            x_s = a_s.sqrt() * x0_t + (1 - a_s).sqrt() * eps_t  # one DDIM step back
            c_skip_s, c_out_s = _boundary(s_prev)
            inp_s = torch.cat([x_s.to(lat.dtype), mask, masked], dim=1)
            with _autocast(student):
                ps = student.pipe.unet(
                    inp_s, s_prev, encoder_hidden_states=cond.expand(n, -1, -1)
                ).sample.float()
            target = c_skip_s * x_s + c_out_s * _x0(ps, x_s, a_s, kind)
        loss = (torch.sqrt((mine - target) ** 2 + 1e-6) - 1e-3).mean()  # Huber
        _step(optimizer, loss, losses, bar)
    bar.close()
    tmp = Path(tempfile.mkdtemp(prefix=".lcm-", dir=ident.folder))
    try:
        StableDiffusionInpaintPipeline.save_lora_weights(
            str(tmp),
            unet_lora_layers=get_peft_model_state_dict(student.pipe.unet, adapter_name="lcm"),
            weight_name=LCM_FILE,
            safe_serialization=True,
        )
        (tmp / LCM_FILE).replace(ident.folder / LCM_FILE)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    meta = dict(ident.meta, distilled_steps=steps, distill_loss=float(np.mean(losses[-10:])))
    (ident.folder / META_FILE).write_text(json.dumps(meta, indent=1))
    return get_identity(settings, name)


def _load_lora(pipe: Any, path: Path, adapter: str, weight: float) -> None:
    pipe.load_lora_weights(str(path), adapter_name=adapter)
    pipe.set_adapters([adapter], adapter_weights=[weight])
    pipe.fuse_lora(adapter_names=[adapter])
    pipe.unload_lora_weights()
