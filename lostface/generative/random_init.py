"""Stable Diffusion inpainting models at random init, saved in the layout users download.

No machine where lostface is developed can download pretrained weights, so the diffusion
restorer is proven with models built here: a tiny one (seconds on a CPU, for tests) and the
full SD 1.5 inpainting architecture (for timings on a GPU: the cost of a forward pass does not
depend on the weights). Both are saved with `save_pretrained`, so they load through the same
code (lostface.generative.loading) as a downloaded model. Their pictures are meaningless.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

# SD 1.5's architecture (public model configs): UNet with 9 input channels for inpainting
# (noisy latents, mask, masked-image latents), 4-block VAE, CLIP ViT-L/14 text encoder.
SD15_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 9,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
}
SD15_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 2,
    "sample_size": 512,
}
SD15_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "max_position_embeddings": 77,
    "projection_dim": 768,
    "hidden_act": "quick_gelu",
}

# Tiny: a 4-block VAE (8x down, as in SD) keeps a 512-pixel crop at 64x72 latents, which a
# 2-level UNet of 32/64 channels runs in well under a second per step on a CPU.
TINY_UNET: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 9,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"),
    "cross_attention_dim": 32,
    "attention_head_dim": (2, 4),
    "norm_num_groups": 8,
}
TINY_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (32, 32, 64, 64),
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 128,
}
TINY_TEXT: dict[str, Any] = {
    "vocab_size": 1000,
    "hidden_size": 32,
    "intermediate_size": 37,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 77,
    "projection_dim": 32,
}
SIZES = {"tiny": (TINY_UNET, TINY_VAE, TINY_TEXT), "sd15": (SD15_UNET, SD15_VAE, SD15_TEXT)}

# The scheduler SD 1.5 ships with (its betas), as an LCM scheduler.
SCHEDULER: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "beta_start": 0.00085,
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "prediction_type": "epsilon",
}


def write_tokenizer(folder: Path) -> None:
    """A CLIP tokenizer with a small vocabulary (letters, their word-final forms and the
    special tokens), enough to turn any ASCII prompt into ids."""
    folder.mkdir(parents=True, exist_ok=True)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in "abcdefghijklmnopqrstuvwxyz0123456789'!,.-":
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    special = "<|endoftext|>"
    config = {
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": special,
        "unk_token": special,
        "pad_token": special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))


def save_inpaint_model(
    folder: Path,
    size: str = "tiny",
    lcm_distilled: bool = False,
    seed: int = 0,
    unet: dict[str, Any] | None = None,
) -> Path:
    """A random-init SD inpainting model saved as a diffusers folder (model_index.json, unet/,
    vae/, text_encoder/, tokenizer/, scheduler/). lcm_distilled: the UNet takes a guidance
    embedding (time_cond_proj_dim), as an LCM-distilled checkpoint does; unet: a UNet config
    to use instead of the size's."""
    from diffusers import (
        AutoencoderKL,
        LCMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    unet_cfg, vae_cfg, text_cfg = SIZES[size]
    torch.manual_seed(seed)
    unet_args = dict(unet if unet is not None else unet_cfg)
    if lcm_distilled:
        unet_args["time_cond_proj_dim"] = 256 if size == "sd15" else 32
    model = UNet2DConditionModel(**unet_args)
    vae = AutoencoderKL(**vae_cfg)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, **text_cfg))
    tok_dir = Path(folder) / "tokenizer"
    write_tokenizer(tok_dir)
    tokenizer = CLIPTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
    pipe = StableDiffusionInpaintPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=model,
        scheduler=LCMScheduler(**SCHEDULER),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder))  # type: ignore[attr-defined]
    return Path(folder)


def save_lora(
    folder: Path,
    model: Path,
    rank: int = 4,
    scale: float = 0.05,
    seed: int = 0,
    targets: tuple[str, ...] = ("to_q", "to_k", "to_v", "to_out.0", "conv1", "conv2"),
) -> Path:
    """A random LoRA for the UNet of the model in `model`, saved as
    pytorch_lora_weights.safetensors (diffusers' LoRA format, as LCM-LoRA ships)."""
    from diffusers import StableDiffusionInpaintPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(str(model), subfolder="unet", local_files_only=True)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=list(targets)))
    gen = torch.Generator().manual_seed(seed)
    layers = get_peft_model_state_dict(unet)
    with torch.no_grad():
        for tensor in layers.values():  # peft starts B at zero: give it weights that matter
            tensor.copy_(torch.randn(tensor.shape, generator=gen) * scale)
    StableDiffusionInpaintPipeline.save_lora_weights(
        str(folder), unet_lora_layers=layers, safe_serialization=True
    )
    return Path(folder)


# SD x4 upscaler's architecture (Stability AI's x4-upscaling config): a UNet on 4 latent
# channels plus the 3 channels of the small image, its noise level as a class embedding,
# v-prediction; a 3-block VAE (4x down); OpenCLIP ViT-H's text tower (penultimate layer).
X4_UNET: dict[str, Any] = {
    "sample_size": 128,
    "in_channels": 7,
    "out_channels": 4,
    "layers_per_block": 2,
    "block_out_channels": (256, 512, 512, 1024),
    "down_block_types": (
        "DownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
    ),
    "up_block_types": (
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "UpBlock2D",
    ),
    "only_cross_attention": (True, True, True, False),
    "cross_attention_dim": 1024,
    "attention_head_dim": 8,
    "num_class_embeds": 1000,
    "use_linear_projection": True,
}
X4_VAE: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "block_out_channels": (128, 256, 512),
    "down_block_types": ("DownEncoderBlock2D",) * 3,
    "up_block_types": ("UpDecoderBlock2D",) * 3,
    "layers_per_block": 2,
    "scaling_factor": 0.08333,
    "sample_size": 256,
}
X4_TEXT: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 1024,
    "intermediate_size": 4096,
    "num_hidden_layers": 23,
    "num_attention_heads": 16,
    "max_position_embeddings": 77,
    "projection_dim": 512,
    "hidden_act": "gelu",
}
TINY_X4_UNET: dict[str, Any] = {
    "sample_size": 32,
    "in_channels": 7,
    "out_channels": 4,
    "layers_per_block": 1,
    "block_out_channels": (32, 32, 64),
    "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    "only_cross_attention": (True, True, False),
    "cross_attention_dim": 32,
    "attention_head_dim": 4,
    "num_class_embeds": 1000,
    "use_linear_projection": True,
    "norm_num_groups": 8,
}
TINY_X4_VAE: dict[str, Any] = {
    **X4_VAE,
    "block_out_channels": (32, 32, 64),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 128,
}
X4_SIZES = {"tiny": (TINY_X4_UNET, TINY_X4_VAE, TINY_TEXT), "x4": (X4_UNET, X4_VAE, X4_TEXT)}


def save_upscale_model(folder: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A random-init SD x4 upscaler saved as a diffusers folder (as users download it)."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        DDPMScheduler,
        StableDiffusionUpscalePipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    unet_cfg, vae_cfg, text_cfg = X4_SIZES[size]
    torch.manual_seed(seed)
    text = CLIPTextModel(CLIPTextConfig(bos_token_id=0, eos_token_id=1, pad_token_id=1, **text_cfg))
    write_tokenizer(Path(folder) / "tokenizer")
    tokenizer = CLIPTokenizer.from_pretrained(
        str(Path(folder) / "tokenizer"), local_files_only=True
    )
    low = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02}
    pipe = StableDiffusionUpscalePipeline(
        vae=AutoencoderKL(**vae_cfg),
        text_encoder=text,
        tokenizer=tokenizer,
        unet=UNet2DConditionModel(**unet_cfg),
        low_res_scheduler=DDPMScheduler(**low, beta_schedule="linear"),
        scheduler=DDIMScheduler(**{**SCHEDULER, "prediction_type": "v_prediction"}),
    )
    pipe.save_pretrained(str(folder))  # type: ignore[attr-defined]
    return Path(folder)


def save_sam(path: Path, size: str = "tiny", seed: int = 0) -> Path:
    """A random-init Segment Anything checkpoint (a state dict, as the released .pth files):
    "tiny" (a 2-block ViT of width 64 on 256-pixel images, the real prompt encoder and mask
    decoder), or the released architectures "vit_b", "vit_l", "vit_h", "vit_t" (MobileSAM)."""
    from lostface.generative.sam import _import_sam

    mobile_sam = _import_sam()
    from mobile_sam.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    torch.manual_seed(seed)
    if size != "tiny":
        model = mobile_sam.sam_model_registry[size](checkpoint=None)
    else:
        model = Sam(
            image_encoder=ImageEncoderViT(
                depth=2,
                embed_dim=64,
                img_size=256,
                num_heads=1,
                patch_size=16,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=[1],
                window_size=4,
                out_chans=256,
                norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=256,
                image_embedding_size=(16, 16),
                input_image_size=(256, 256),
                mask_in_chans=16,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=3,
                transformer=TwoWayTransformer(
                    depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8
                ),
                transformer_dim=256,
                iou_head_depth=3,
                iou_head_hidden_dim=256,
            ),
            pixel_mean=[123.675, 116.28, 103.53],
            pixel_std=[58.395, 57.12, 57.375],
        )
    torch.save(model.state_dict(), path)
    return Path(path)
