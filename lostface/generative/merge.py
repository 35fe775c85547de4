"""Model merging by task arithmetic, and LoRA merging.

    merge_models(base, [ft1, ft2], [0.7, 0.3], out)             # base + sum w_i (ft_i - base)
    merge_models(sd15, [custom], [1.0], out, onto=sd15_inpaint)  # add-difference: inpainting
    merge_loras([a, b], [0.5, 0.5], out, combination="ties")

Task vectors (ft - base) are only meaningful between models fine-tuned from the same initial
weights: every tensor name and shape must match, and the first one that does not is named.
Models are diffusers folders (unet/, vae/, text_encoder/ weights) or single .safetensors
checkpoints (as community models are shared); the inputs must all be of one form, and the
output is written in the form of the model the task vectors are added onto (a folder gets that
folder's configs, tokenizer and scheduler copied). Adding onto an inpainting model, whose UNet
takes 9 input channels where the text-to-image models take 4, adds the difference of the first
convolution to its first 4 input channels (the noisy latents) and leaves the mask and
masked-image channels as they are.

LoRAs merge on their weight deltas (B @ A per layer): "linear" keeps the weighted sum exactly
(the ranks add up), "ties" (trim, elect sign, disjoint merge) trims each delta to its largest
`density` share, keeps the sign most of the weight agrees on, and factors the result back to a
LoRA of the largest input rank by SVD.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch

from lostface.errors import InputError

log = logging.getLogger(__name__)

_COMPONENTS = {
    "unet": "diffusion_pytorch_model.safetensors",
    "vae": "diffusion_pytorch_model.safetensors",
    "text_encoder": "model.safetensors",
}
_CONV_IN = ("unet.conv_in.weight", "model.diffusion_model.input_blocks.0.0.weight")


def _form(path: Path) -> str:
    if path.is_dir() and (path / "model_index.json").is_file():
        return "folder"
    if path.is_file() and path.suffix == ".safetensors":
        return "file"
    raise InputError(
        f"{path} is neither a diffusers model folder (model_index.json) nor a .safetensors "
        "checkpoint; give one of those."
    )


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a model: a folder's components as "unet.<name>", "vae.<name>",
    "text_encoder.<name>"; a single checkpoint's as they are named in it."""
    from safetensors.torch import load_file

    if _form(path) == "file":
        return load_file(str(path))
    out: dict[str, torch.Tensor] = {}
    for component, filename in _COMPONENTS.items():
        file = path / component / filename
        if not file.is_file():
            raise InputError(f"{path} has no {component}/{filename}; give a complete model.")
        out.update({f"{component}.{k}": v for k, v in load_file(str(file)).items()})
    return out


def _check_alike(base: dict[str, torch.Tensor], other: dict[str, torch.Tensor], name: str) -> None:
    for key in sorted(set(base) | set(other)):
        if key not in base or key not in other:
            raise InputError(
                f"{name} and the base are not the same architecture: {key} is in only one of "
                "them (task vectors need models fine-tuned from the same weights)."
            )
        if base[key].shape != other[key].shape:
            raise InputError(
                f"{name} and the base differ at {key} ({list(other[key].shape)} against "
                f"{list(base[key].shape)}); task vectors need models of the same shapes."
            )


def merge_models(
    base: Path,
    finetuned: list[Path],
    weights: list[float],
    out: Path,
    onto: Path | None = None,
) -> Path:
    """(onto or base) + sum_i weights[i] * (finetuned[i] - base), written to `out` in the form
    of the model added onto. Float tensors are merged in float32 and stored in their dtype."""
    if len(finetuned) != len(weights):
        raise InputError(f"{len(finetuned)} models but {len(weights)} weights; give one each.")
    if out.exists():
        raise InputError(f"{out} exists; give a new path for the merged model.")
    forms = {_form(p) for p in [base, *finetuned]}
    if len(forms) > 1:
        raise InputError(
            "The base and the fine-tuned models mix diffusers folders and single checkpoints; "
            "give them all in one form (their tensor names differ)."
        )
    target = onto or base
    if _form(target) not in forms:
        raise InputError(f"{target} is not in the same form as the base; give it as the base.")
    base_w = load_weights(base)
    merged = {k: v.clone() for k, v in (load_weights(onto) if onto else base_w).items()}
    for path, w in zip(finetuned, weights, strict=True):
        ft = load_weights(path)
        _check_alike(base_w, ft, path.name)
        for key, b in base_w.items():
            if not b.is_floating_point():
                continue
            delta = (ft[key].float() - b.float()) * w
            if key not in merged:
                raise InputError(f"{target} has no {key}; it is not the base's architecture.")
            dst = merged[key]
            if dst.shape == delta.shape:
                merged[key] = (dst.float() + delta).to(dst.dtype)
            elif (
                key in _CONV_IN and dst.shape[1] > delta.shape[1] and dst.shape[0] == delta.shape[0]
            ):
                # inpainting UNet: the first input channels are the noisy latents
                part = dst[:, : delta.shape[1]].float() + delta
                merged[key] = torch.cat([part.to(dst.dtype), dst[:, delta.shape[1] :]], dim=1)
            else:
                raise InputError(
                    f"{target} differs from the base at {key} ({list(dst.shape)} against "
                    f"{list(delta.shape)}); it cannot take this task vector."
                )
    _write(merged, target, out)
    return out


def _write(weights: dict[str, torch.Tensor], template: Path, out: Path) -> None:
    """Weights in the form of `template`, written whole or not at all."""
    from safetensors.torch import save_file

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        if _form(template) == "file":
            save_file({k: v.contiguous() for k, v in weights.items()}, str(tmp / "model"))
            (tmp / "model").replace(out)
            return
        shutil.copytree(
            template,
            tmp / "model",
            ignore=shutil.ignore_patterns("*.safetensors", "*.bin", "*.ckpt"),
        )
        for component, filename in _COMPONENTS.items():
            part = {
                k[len(component) + 1 :]: v.contiguous()
                for k, v in weights.items()
                if k.startswith(component + ".")
            }
            save_file(part, str(tmp / "model" / component / filename))
        (tmp / "model").rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -- LoRAs --------------------------------------------------------------------------------
def _lora_pairs(state: dict[str, torch.Tensor], name: str) -> dict[str, tuple[torch.Tensor, ...]]:
    """layer -> (down/A, up/B) of a LoRA in diffusers' or peft's naming."""
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in state.items():
        for down, up in (
            (".lora_A.weight", ".lora_B.weight"),
            (".lora.down.weight", ".lora.up.weight"),
        ):
            if key.endswith(down):
                pairs.setdefault(key[: -len(down)], {})["A"] = tensor
            elif key.endswith(up):
                pairs.setdefault(key[: -len(up)], {})["B"] = tensor
    if not pairs:
        raise InputError(f"{name} holds no LoRA layers (lora_A/lora_B or lora.down/lora.up).")
    return {k: (v["A"], v["B"]) for k, v in pairs.items() if "A" in v and "B" in v}


def merge_loras(
    loras: list[Path],
    weights: list[float],
    out: Path,
    combination: str = "linear",
    density: float = 0.5,
) -> Path:
    """One LoRA from several of the same base model (see the module docstring); written in
    peft's naming (lora_A/lora_B), which diffusers' load_lora_weights reads."""
    from safetensors.torch import load_file, save_file

    if len(loras) != len(weights):
        raise InputError(f"{len(loras)} LoRAs but {len(weights)} weights; give one each.")
    if combination not in ("linear", "ties"):
        raise InputError(f"Unknown combination {combination!r}; use linear or ties.")
    if out.exists():
        raise InputError(f"{out} exists; give a new path for the merged LoRA.")
    files = [_lora_file(p) for p in loras]
    states = [_lora_pairs(load_file(str(f)), f.name) for f in files]
    layers = set(states[0])
    for f, st in zip(files[1:], states[1:], strict=True):
        if set(st) != layers:
            diff = sorted(layers ^ set(st))[0]
            raise InputError(f"{f.name} and {files[0].name} differ: layer {diff} is in one only.")
    merged: dict[str, torch.Tensor] = {}
    for layer in sorted(layers):
        a_s = [st[layer][0].float() for st in states]
        b_s = [st[layer][1].float() for st in states]
        shapes = {(b.shape[0],) + tuple(a.shape[1:]) for a, b in zip(a_s, b_s, strict=True)}
        if len(shapes) > 1:
            raise InputError(f"The LoRAs differ in the shape of layer {layer}; not one base model.")
        if combination == "linear":
            a = torch.cat([a * w for a, w in zip(a_s, weights, strict=True)], dim=0)
            b = torch.cat(b_s, dim=1)
        else:
            a, b = _ties(a_s, b_s, weights, density)
        merged[f"{layer}.lora_A.weight"] = a.contiguous()
        merged[f"{layer}.lora_B.weight"] = b.contiguous()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    save_file(merged, str(tmp), metadata={"combination": combination})
    tmp.replace(out)
    return out


def _lora_file(path: Path) -> Path:
    from lostface.generative.loading import lora_file

    return lora_file(path, key=path.name)


def _ties(
    a_s: list[torch.Tensor], b_s: list[torch.Tensor], weights: list[float], density: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """TIES on the layer's deltas, factored back to a LoRA of the largest rank."""
    deltas = []
    for a, b, w in zip(a_s, b_s, weights, strict=True):
        d = (b.flatten(1) @ a.flatten(1)) * w
        k = max(1, int(density * d.numel()))
        cut = d.abs().flatten().kthvalue(d.numel() - k + 1).values
        deltas.append(torch.where(d.abs() >= cut, d, torch.zeros_like(d)))
    stack = torch.stack(deltas)
    sign = torch.sign(stack.sum(0))
    agree = (torch.sign(stack) == sign) & (stack != 0)
    merged = (stack * agree).sum(0) / agree.sum(0).clamp(min=1)
    u, s, vh = torch.linalg.svd(merged, full_matrices=False)
    rank = min(max(a.shape[0] for a in a_s), s.shape[0])
    root = s[:rank].sqrt()
    b = (u[:, :rank] * root).reshape(b_s[0].shape[0], rank, *b_s[0].shape[2:])
    a = (root[:, None] * vh[:rank]).reshape(rank, *a_s[0].shape[1:])
    return a, b


def describe(path: Path) -> str:
    """One line about a merged output, for the command's report."""
    if path.is_dir():
        index = json.loads((path / "model_index.json").read_text())
        return f"{path} ({index.get('_class_name', 'diffusers model')})"
    return str(path)
