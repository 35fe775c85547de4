"""Building the diffusion models from the files lostface.models finds, once per process.

    model = load_inpaint(settings)     # cached: every pipeline and live session shares it
    problems = verify_model(settings, "models.inpaint")   # files and tensor shapes, offline

The device and dtype are chosen here, once (models.device, models.dtype); a GPU named but
absent falls back to the CPU with a warning, or stops when models.cpu_fallback is false. Every
failure is a ModelError naming the setting and what to do.
"""

from __future__ import annotations

import json
import logging
import struct
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from lostface.config import ModelSettings, Settings
from lostface.errors import ModelError
from lostface.models import model_spec, resolve

log = logging.getLogger(__name__)

COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
WEIGHT_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors"),
    "text_encoder": ("model.safetensors", "model.fp16.safetensors"),
}
INPAINT_CHANNELS = 9  # noisy latents (4) + mask (1) + masked-image latents (4)
UPSCALE_CHANNELS = 7  # noisy latents (4) + the small image (3)
_EXAMPLE = "stable-diffusion-v1-5/stable-diffusion-inpainting"
_LORA_SUFFIXES = {
    ".lora_A.weight": "down",
    ".lora_B.weight": "up",
    ".lora.down.weight": "down",
    ".lora.up.weight": "up",
}


# -- device and dtype -----------------------------------------------------------------------
def choose_device(models: ModelSettings) -> tuple[torch.device, torch.dtype]:
    """The device and dtype of models.device / models.dtype on this machine."""
    want = models.device
    mps = getattr(torch.backends, "mps", None)
    has_mps = bool(mps is not None and mps.is_available())
    if want == "auto":
        name = "cuda" if torch.cuda.is_available() else ("mps" if has_mps else "cpu")
    elif want.startswith("cuda") and not torch.cuda.is_available():
        name = _fallback(models, f"models.device is {want} but this machine has no CUDA GPU")
    elif want.startswith("cuda") and torch.cuda.device_count() <= _cuda_index(want):
        name = _fallback(models, f"models.device is {want} but that GPU does not exist")
    elif want == "mps" and not has_mps:
        name = _fallback(models, "models.device is mps but this machine has no Apple GPU")
    else:
        name = want
    device = torch.device(name)
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}.get(
        models.dtype, torch.float16 if device.type in ("cuda", "mps") else torch.float32
    )
    if device.type == "cpu" and dtype == torch.float16:
        log.warning("models.dtype float16 does not run on the CPU; using float32.")
        dtype = torch.float32
    return device, dtype


def _cuda_index(name: str) -> int:
    return int(name.split(":", 1)[1]) if ":" in name else 0


def _fallback(models: ModelSettings, why: str) -> str:
    if not models.cpu_fallback:
        raise ModelError(
            f"{why}; set models.device=cpu (slow) or models.cpu_fallback=true to run on the CPU."
        )
    log.warning(
        "%s: the diffusion engine runs on the CPU, far slower (set models.device=cpu to "
        "silence this, or models.cpu_fallback=false to stop instead).",
        why,
    )
    return "cpu"


# -- checking files -------------------------------------------------------------------------
def safetensors_header(path: Path) -> dict[str, Any]:
    """The tensor table of a .safetensors file (name -> dtype, shape, offsets), read without
    loading a tensor; a ModelError when the file is not a complete safetensors file."""
    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            if n > 100_000_000:
                raise ValueError("header too large")
            header = json.loads(f.read(n))
    except (OSError, ValueError, struct.error, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not a readable safetensors file ({exc}).") from None
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if path.stat().st_size < 8 + n + end:
        raise ModelError(f"{path} is truncated ({path.stat().st_size} bytes); download it again.")
    return header


def _weights(folder: Path, component: str) -> Path | None:
    for name in WEIGHT_FILES[component]:
        if (folder / component / name).is_file():
            return folder / component / name
    return None


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} is not a readable JSON config ({exc}).") from None


@dataclass(frozen=True)
class _Kind:
    """What a diffusers folder named by a setting must hold."""

    what: str
    channels: int  # the UNet's input channels
    components: tuple[str, ...]
    example: str


KINDS = {
    "models.inpaint": _Kind(
        "a Stable Diffusion inpainting model", INPAINT_CHANNELS, COMPONENTS, _EXAMPLE
    ),
    "models.upscale": _Kind(
        "a Stable Diffusion x4 upscaler",
        UPSCALE_CHANNELS,
        (*COMPONENTS, "low_res_scheduler"),
        "stabilityai/stable-diffusion-x4-upscaler",
    ),
}


def check_inpaint_folder(folder: Path, key: str = "models.inpaint") -> None:
    """Files of the diffusers model named by `key` (models.inpaint or models.upscale): a
    ModelError saying what is wrong, if anything. (Tensor shapes: verify_model.)"""
    kind = KINDS[key]
    if not folder.is_dir() or not (folder / "model_index.json").is_file():
        raise ModelError(
            f"{key} {folder} is not a diffusers model folder (no model_index.json); give "
            f"{kind.what}: a folder, or a hub id such as {kind.example}."
        )
    index = _read_config(folder / "model_index.json")
    missing = [c for c in kind.components if not (folder / c).is_dir()]
    if missing:
        raise ModelError(
            f"{key} {folder} ({index.get('_class_name', 'a diffusers model')}) has no "
            f"{', '.join(missing)} folder; give {kind.what}."
        )
    unet = _read_config(folder / "unet" / "config.json")
    channels = unet.get("in_channels")
    if channels != kind.channels:
        raise ModelError(
            f"{key} {folder} is a {index.get('_class_name', 'diffusers model')} whose UNet takes "
            f"{channels} input channels, not {kind.what} ({kind.channels}); give one such as "
            f"{kind.example}."
        )
    for component in WEIGHT_FILES:
        weights = _weights(folder, component)
        if weights is None:
            raise ModelError(
                f"{key} {folder} has no {component} weights (.safetensors); download it again "
                f"with `lostface models pull {key}`."
            )
        safetensors_header(weights)  # a truncated or foreign file, named before torch reads it


def lora_file(path: Path, key: str = "models.lcm_lora") -> Path:
    """The .safetensors file of a LoRA given as a file or a folder holding one."""
    if path.is_file():
        return path
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else []
    preferred = [f for f in files if f.name == "pytorch_lora_weights.safetensors"]
    if preferred or len(files) == 1:
        return (preferred or files)[0]
    raise ModelError(
        f"{key} {path} holds {len(files) or 'no'} .safetensors files; give the LoRA's file."
    )


def _meta_modules(folder: Path) -> dict[str, dict[str, torch.Size]]:
    """The weight shapes of the UNet, VAE and text encoder built from their configs on the
    meta device (no memory, no weights): component -> parameter name -> shape."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    out = {}
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_read_config(folder / "unet" / "config.json"))
        vae = AutoencoderKL.from_config(_read_config(folder / "vae" / "config.json"))
        text_cfg = CLIPTextConfig.from_dict(_read_config(folder / "text_encoder" / "config.json"))
        text = CLIPTextModel(text_cfg)
    for name, module in (("unet", unet), ("vae", vae), ("text_encoder", text)):
        out[name] = {k: v.shape for k, v in module.state_dict().items()}
    return out


def _shape_problems(folder: Path) -> list[str]:
    problems = []
    shapes = _meta_modules(folder)
    for component, want in shapes.items():
        path = _weights(folder, component)
        assert path is not None  # check_inpaint_folder ran first
        have = {k: tuple(v["shape"]) for k, v in safetensors_header(path).items()}
        missing = sorted(set(want) - set(have))
        wrong = sorted(k for k in set(want) & set(have) if tuple(want[k]) != have[k])
        if missing:
            problems.append(f"{component}: {len(missing)} tensors missing (first: {missing[0]})")
        if wrong:
            k = wrong[0]
            problems.append(
                f"{component}: {len(wrong)} tensors of the wrong shape "
                f"(first: {k} is {list(have[k])}, the config needs {list(want[k])})"
            )
    return problems


def lora_problems(lora: Path, folder: Path) -> list[str]:
    """Whether a LoRA fits the inpainting model in `folder`: every layer it names exists there
    with matching input and output sizes."""
    from diffusers import StableDiffusionInpaintPipeline

    try:
        state, _ = StableDiffusionInpaintPipeline.lora_state_dict(str(lora))
    except Exception as exc:  # diffusers raises ValueError/KeyError/OSError on foreign files
        return [f"{lora} is not a LoRA diffusers can read ({type(exc).__name__}: {exc})"]
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(_read_config(folder / "unet" / "config.json"))
    modules = dict(unet.named_modules())
    problems: list[str] = []
    seen = 0
    for key, tensor in state.items():
        if not key.startswith("unet."):
            continue
        suffix = next((s for s in _LORA_SUFFIXES if key.endswith(s)), None)
        if suffix is None:
            continue
        seen += 1
        name = key[len("unet.") : -len(suffix)]
        module = modules.get(name)
        if module is None or not hasattr(module, "weight"):
            problems.append(f"it names layer {name}, which the inpainting model does not have")
            break
        out_ch, in_ch = module.weight.shape[0], module.weight.shape[1]
        got = tensor.shape[1] if _LORA_SUFFIXES[suffix] == "down" else tensor.shape[0]
        want = in_ch if _LORA_SUFFIXES[suffix] == "down" else out_ch
        if got != want:
            problems.append(
                f"its layer {name} has {got} {'inputs' if want == in_ch else 'outputs'} "
                f"where the model has {want}"
            )
            break
    if not seen and not problems:
        problems.append("it holds no UNet layers")
    return problems


def verify_model(settings: Settings, key: str) -> list[str]:
    """Problems with the model named by `key` (files, tensor shapes, fit to the base model),
    checked offline; an empty list when it is sound. A missing model raises ModelError."""
    from lostface.models import model_entry

    entry = model_entry(key)
    path = resolve(settings, entry.key)
    try:
        if entry.kind in ("inpaint", "upscale"):
            check_inpaint_folder(path, entry.key)
            return _shape_problems(path)
        if entry.kind == "lora":
            base = resolve(settings, "models.inpaint")
            check_inpaint_folder(base)
            return lora_problems(lora_file(path, entry.key), base)
    except ModelError as exc:
        return [str(exc)]
    return []


# -- loading --------------------------------------------------------------------------------
_LOADED: dict[tuple, Any] = {}  # models loaded by this process, shared by every pipeline
_LOADING = threading.Lock()


@dataclass
class UpscaleModel:
    """A loaded SD x4 upscaler pipeline (LCM scheduler), shared by the process; `lock`
    serialises its use (the pipeline's scheduler keeps per-call state)."""

    pipe: Any
    device: torch.device
    dtype: torch.dtype
    lock: threading.Lock = field(default_factory=threading.Lock)
    _prompts: dict[str, torch.Tensor] = field(default_factory=dict)

    def prompt_embeds(self, prompt: str) -> torch.Tensor:
        """The text encoder's output for a prompt, computed once (call under lock)."""
        if prompt not in self._prompts:
            with torch.inference_mode():
                embeds, _ = self.pipe.encode_prompt(prompt, self.device, 1, False)
            self._prompts[prompt] = embeds
        return self._prompts[prompt]


def load_upscale(settings: Settings) -> UpscaleModel:
    """The SD x4 upscaler of models.upscale, loaded once per process."""
    from diffusers import LCMScheduler, StableDiffusionUpscalePipeline

    device, dtype = choose_device(settings.models)
    folder = resolve(settings, "models.upscale")
    check_inpaint_folder(folder, "models.upscale")
    key = ("upscale", str(folder), str(device), str(dtype))
    with _LOADING:
        if key not in _LOADED:
            _quiet_libraries()
            log.info("Loading %s on %s ...", model_spec(settings, "upscale"), device)
            try:
                pipe = StableDiffusionUpscalePipeline.from_pretrained(
                    str(folder), dtype=dtype, local_files_only=True
                )
            except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise ModelError(
                    f"Could not load models.upscale {folder} ({type(exc).__name__}); check it "
                    "with `lostface models verify models.upscale`."
                ) from None
            pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
            pipe.set_progress_bar_config(disable=True)
            pipe.to(device)
            _LOADED[key] = UpscaleModel(pipe, device, dtype)
        return _LOADED[key]


def encode_prompt(tokenizer: Any, text_encoder: Any, prompt: str, device: Any) -> torch.Tensor:
    """The text encoder's last hidden states for a prompt padded to the tokenizer's length."""
    ids = tokenizer(
        prompt,
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)
    return text_encoder(ids)[0]


@dataclass
class InpaintModel:
    """A loaded SD inpainting model (LCM-LoRA fused when one is given), shared by every
    diffusion restorer of the process. `lock` serialises its use (one GPU, one batch at a time);
    a restorer keeps its own scheduler, so per-call state never lives here."""

    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    scheduler_config: dict[str, Any]
    device: torch.device
    dtype: torch.dtype
    name: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    _prompts: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def guidance_dim(self) -> int | None:
        """The UNet's guidance-embedding size (LCM-distilled checkpoints), else None."""
        return self.unet.config.time_cond_proj_dim

    @property
    def latent_scale(self) -> float:
        return float(self.vae.config.scaling_factor)

    def prompt_embeds(self, prompt: str) -> torch.Tensor:
        """The text encoder's output for a prompt, computed once per prompt (call under lock)."""
        if prompt not in self._prompts:
            with torch.inference_mode():
                embeds = encode_prompt(self.tokenizer, self.text_encoder, prompt, self.device)
                self._prompts[prompt] = embeds.to(self.dtype)
        return self._prompts[prompt]


@dataclass(frozen=True)
class _Lora:
    """A LoRA fused into the inpainting model at load: its adapter name, file, weight, and what
    to tell the user when it does not fit."""

    adapter: str
    path: Path
    weight: float
    misfit: str


def load_inpaint(settings: Settings) -> InpaintModel:
    """The inpainting model of settings.models, with its LCM-LoRA and the identity of
    restore.identity fused, loaded once per process (later calls with the same models,
    identity, device and dtype return the same object)."""
    from lostface.identities import identity_for

    device, dtype = choose_device(settings.models)
    folder = resolve(settings, "models.inpaint")
    check_inpaint_folder(folder)
    ident = identity_for(settings)
    loras: list[_Lora] = []
    if ident is not None and ident.lcm_lora is not None:
        # distilled from base + identity: it carries both
        why = f"identity {ident.name} was learnt on another base model ({ident.meta.get('base')})"
        loras.append(_Lora("lcm", ident.lcm_lora, 1.0, why))
    else:
        if settings.models.lcm_lora:
            path = lora_file(resolve(settings, "models.lcm_lora"))
            loras.append(_Lora("lcm", path, 1.0, _LCM_MISFIT))
        if ident is not None:
            why = (
                f"identity {ident.name} was learnt on another base model ({ident.meta.get('base')})"
            )
            loras.append(_Lora("identity", ident.lora, settings.identity.weight, why))
    key = ("inpaint", str(folder), tuple(loras), str(device), str(dtype))
    with _LOADING:
        if key not in _LOADED:
            _LOADED[key] = _load(folder, loras, device, dtype, model_spec(settings, "inpaint"))
        return _LOADED[key]


_LCM_MISFIT = (
    "give the LCM-LoRA made for that base model (SD 1.5: latent-consistency/lcm-lora-sdv1-5), "
    "or set models.lcm_lora= (empty) for an LCM-distilled inpainting model"
)


def _quiet_libraries() -> None:
    """diffusers and transformers print progress bars and notes on every load."""
    import diffusers
    import transformers

    for lib in (diffusers, transformers):
        lib.utils.logging.disable_progress_bar()
        if not log.isEnabledFor(logging.DEBUG):
            lib.utils.logging.set_verbosity_error()


def open_inpaint_pipeline(folder: Path, dtype: torch.dtype) -> Any:
    """The diffusers inpainting pipeline of a checked folder, from local files only, without a
    safety checker (what is painted is a face's own lower half)."""
    from diffusers import StableDiffusionInpaintPipeline

    _quiet_libraries()
    return StableDiffusionInpaintPipeline.from_pretrained(
        str(folder),
        dtype=dtype,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
        local_files_only=True,
    )


def _load(
    folder: Path, loras: list[_Lora], device: torch.device, dtype: torch.dtype, name: str
) -> InpaintModel:
    for lora in loras:
        problems = lora_problems(lora.path, folder)
        if problems:
            raise ModelError(
                f"The LoRA {lora.path} does not fit models.inpaint {folder}: {problems[0]}; "
                f"{lora.misfit}."
            )
    log.info("Loading %s on %s (%s) ...", name, device, str(dtype).replace("torch.", ""))
    try:
        pipe = open_inpaint_pipeline(folder, dtype)
        if loras:
            for lora in loras:
                pipe.load_lora_weights(str(lora.path), adapter_name=lora.adapter)
            names = [lora.adapter for lora in loras]
            pipe.set_adapters(names, adapter_weights=[lora.weight for lora in loras])
            pipe.fuse_lora(adapter_names=names)
            pipe.unload_lora_weights()
        pipe.to(device)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError) as exc:
        raise ModelError(
            f"Could not load models.inpaint {folder} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else ''}); check it with "
            "`lostface models verify`."
        ) from None
    for module in (pipe.unet, pipe.vae, pipe.text_encoder):
        module.eval().requires_grad_(False)
    if not any(x.adapter == "lcm" for x in loras) and pipe.unet.config.time_cond_proj_dim is None:
        log.warning(
            "models.lcm_lora is empty but %s is not LCM-distilled: a few LCM steps give a "
            "poor picture without one. Set models.lcm_lora to its LCM-LoRA.",
            name,
        )
    return InpaintModel(
        unet=pipe.unet,
        vae=pipe.vae,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        scheduler_config=dict(pipe.scheduler.config),
        device=device,
        dtype=dtype,
        name=name,
    )
