"""Segment Anything for the covered region (mask.engine = "sam", models.sam).

    seg = SamSegmenter(load_sam(settings), GeometrySegmenter(settings.mask), settings.mask)

The embedded segmenter stays in charge of the decision (is a covering worn, with its
hysteresis) and is the fallback: SAM only redraws the region of a face it judged covered.
SAM sees the aligned face crop once per keyframe (one image embedding) and is prompted with
the embedded region's box, positive points where a covering sits (mouth, upper lip, chin)
and negative points where it does not (eyes, brow middle). Of its three masks the one with the
highest predicted IoU among those that agree with the embedded region is taken, kept within
mask.sam_reach pixels of it (SAM may follow a collar or the neck); when SAM is not sure
(predicted IoU below mask.sam_min_iou) or disagrees (overlap below mask.sam_min_agreement) the
embedded region stays.

Checkpoints: segment-anything's vit_b, vit_l, vit_h and MobileSAM's vit_t (the mobilesam-mirror
package builds all four). The architecture is read off the checkpoint's tensors (embedding
width, depth, which blocks attend globally, input size), so any of them, or a smaller model
built the same way, loads without naming its type.
"""

from __future__ import annotations

import logging
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lostface.config import MaskSettings, Settings
from lostface.errors import ModelError
from lostface.frame import CoverMask
from lostface.generative.loading import choose_device
from lostface.models import resolve
from lostface.restore.regions import feather
from lostface.stages import Segmenter

log = logging.getLogger(__name__)

_KNOWN_HEADS = {768: 12, 1024: 16, 1280: 16}  # vit_b, vit_l, vit_h


def _import_sam() -> Any:
    try:
        with warnings.catch_warnings():  # timm's notes on its own module layout, at import
            warnings.simplefilter("ignore", FutureWarning)
            import mobile_sam
    except ImportError as exc:
        raise ModelError(
            f"mask.engine=sam needs mobilesam-mirror and timm ({exc.name} is missing); run "
            "`pip install 'lostface[sam]'`."
        ) from None
    return mobile_sam


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's tensors (a plain state dict, or one under "model"), read without running
    any pickled code."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for foreign or damaged files
        raise ModelError(
            f"models.sam {path} is not a readable checkpoint ({type(exc).__name__}); give a "
            "segment-anything or MobileSAM .pth/.pt file."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not any(k.startswith("image_encoder.") for k in state):
        raise ModelError(
            f"models.sam {path} holds no Segment Anything image encoder; give a "
            "segment-anything or MobileSAM checkpoint."
        )
    return state


def build_sam(state: dict[str, torch.Tensor]) -> Any:
    """The Sam module whose architecture the checkpoint's tensors describe (weights not loaded)."""
    ms = _import_sam()
    if "image_encoder.patch_embed.seq.0.c.weight" in state:  # TinyViT: MobileSAM
        return ms.sam_model_registry["vit_t"](checkpoint=None)
    from mobile_sam.modeling import (
        ImageEncoderViT,
        MaskDecoder,
        PromptEncoder,
        Sam,
        TwoWayTransformer,
    )

    embed_dim = int(state["image_encoder.patch_embed.proj.weight"].shape[0])
    patch = int(state["image_encoder.patch_embed.proj.weight"].shape[-1])
    grid = int(state["image_encoder.pos_embed"].shape[1])
    depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("image_encoder.blocks."))
    rel = [int(state[f"image_encoder.blocks.{i}.attn.rel_pos_h"].shape[0]) for i in range(depth)]
    global_blocks = [i for i, n in enumerate(rel) if n == 2 * grid - 1]
    window = next(((n + 1) // 2 for n in rel if n != 2 * grid - 1), 14)
    out_chans = int(state["image_encoder.neck.0.weight"].shape[0])
    prompt_dim = int(state["prompt_encoder.point_embeddings.0.weight"].shape[1])
    mlp_dim = int(state["mask_decoder.transformer.layers.0.mlp.lin1.weight"].shape[0])
    img_size = grid * patch
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=depth,
            embed_dim=embed_dim,
            img_size=img_size,
            mlp_ratio=4,
            norm_layer=lambda d: torch.nn.LayerNorm(d, eps=1e-6),
            num_heads=_KNOWN_HEADS.get(embed_dim, max(1, embed_dim // 64)),
            patch_size=patch,
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=global_blocks,
            window_size=window,
            out_chans=out_chans,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim,
            image_embedding_size=(grid, grid),
            input_image_size=(img_size, img_size),
            mask_in_chans=16,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=2, embedding_dim=prompt_dim, mlp_dim=mlp_dim, num_heads=8
            ),
            transformer_dim=prompt_dim,
            iou_head_depth=3,
            iou_head_hidden_dim=256,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


def sam_problems(path: Path) -> list[str]:
    """Whether a checkpoint loads into the architecture it describes (for `models verify`)."""
    try:
        state = load_state(path)
        with torch.device("meta"):
            model = build_sam(state)
    except (ModelError, KeyError, IndexError, ValueError) as exc:
        return [str(exc) if isinstance(exc, ModelError) else f"unexpected layout ({exc})"]
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    have = {k: tuple(v.shape) for k, v in state.items()}
    missing = sorted(set(want) - set(have))
    wrong = sorted(k for k in set(want) & set(have) if want[k] != have[k])
    problems = []
    if missing:
        problems.append(f"{len(missing)} tensors missing (first: {missing[0]})")
    if wrong:
        problems.append(f"{len(wrong)} tensors of the wrong shape (first: {wrong[0]})")
    return problems


@dataclass
class SamModel:
    """A loaded SAM and its predictor, shared by the process; `lock` keeps one image's
    embedding and its prompts together."""

    predictor: Any
    device: torch.device
    lock: threading.Lock = field(default_factory=threading.Lock)

    def masks(
        self, image: np.ndarray, box: np.ndarray, points: np.ndarray, labels: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """SAM's three masks (3, H, W) bool and their predicted IoUs for a BGR image."""
        with self.lock, torch.inference_mode():
            self.predictor.set_image(np.ascontiguousarray(image[:, :, ::-1]))
            masks, ious, _ = self.predictor.predict(
                point_coords=points.astype(np.float32),
                point_labels=labels.astype(np.int32),
                box=box.astype(np.float32),
                multimask_output=True,
            )
        return masks.astype(bool), ious.astype(np.float32)


_LOADED: dict[tuple[str, str], SamModel] = {}
_LOADING = threading.Lock()


def load_sam(settings: Settings) -> SamModel:
    """The SAM checkpoint of models.sam, loaded once per process on models.device."""
    path = resolve(settings, "models.sam")
    device, _ = choose_device(settings.models)
    key = (str(path), str(device))
    with _LOADING:
        if key not in _LOADED:
            state = load_state(path)
            try:
                model = build_sam(state)
                model.load_state_dict(state)
            except (KeyError, IndexError, RuntimeError) as exc:
                raise ModelError(
                    f"models.sam {path} does not load as Segment Anything ({type(exc).__name__}); "
                    "check it with `lostface models verify models.sam`."
                ) from None
            model.to(device).eval()
            ms = _import_sam()
            log.info("Loaded Segment Anything %s on %s.", path.name, device)
            _LOADED[key] = SamModel(ms.SamPredictor(model), device)
        return _LOADED[key]


def prompts(landmarks: np.ndarray, region: np.ndarray) -> tuple[np.ndarray, ...]:
    """Box, points and labels for SAM in canonical pixels: the embedded region's box; inside,
    the mouth, the upper lip and the chin; outside, both eyes and the middle of the brows."""
    lm = np.asarray(landmarks, np.float64)[:5]
    eyes = (lm[0] + lm[1]) / 2
    mouth = (lm[3] + lm[4]) / 2
    down = mouth - eyes
    ys, xs = np.nonzero(region)
    box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)
    inside = [mouth, (lm[2] + mouth) / 2, mouth + 0.45 * down]
    outside = [lm[0], lm[1], eyes - 0.35 * down]
    points = np.array(inside + outside)
    labels = np.array([1] * len(inside) + [0] * len(outside))
    return box, points, labels


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = int(np.logical_or(a, b).sum())
    return float(np.logical_and(a, b).sum()) / union if union else 0.0


class SamSegmenter(Segmenter):
    """Segmenter (see lostface.stages): the embedded segmenter decides and is the fallback;
    SAM redraws the region of covered faces (see the module docstring)."""

    def __init__(self, model: SamModel, embedded: Segmenter, settings: MaskSettings) -> None:
        import cv2

        self.model = model
        self.embedded = embedded
        self.settings = settings
        r = max(1, int(settings.sam_reach))
        self._reach = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        self.used = 0  # keyframes whose region SAM drew
        self.fell_back = 0  # keyframes where the embedded region stayed

    def segment(
        self,
        face: np.ndarray,
        landmarks: np.ndarray | None = None,
        was_covered: bool | None = None,
        outline: bool = True,
        mesh: Callable[[], np.ndarray | None] | None = None,
        inside: np.ndarray | None = None,
    ) -> CoverMask:
        import cv2

        base = self.embedded.segment(face, landmarks, was_covered, outline, mesh, inside)
        if not outline or not base.covered or landmarks is None or not base.hard.any():
            return base
        box, points, labels = prompts(landmarks, base.hard)
        masks, ious = self.model.masks(face, box, points, labels)
        agree = np.array([_iou(m, base.hard) for m in masks])
        ok = agree >= self.settings.sam_min_agreement
        if not ok.any() or float(ious[ok].max()) < self.settings.sam_min_iou:
            self.fell_back += 1
            return base
        best = masks[int(np.argmax(np.where(ok, ious, -1.0)))]
        limit = cv2.dilate(base.hard.astype(np.uint8), self._reach) > 0
        hard = best & limit
        self.used += 1
        alpha = feather(hard, self.settings.dilate, self.settings.feather_radius)
        return CoverMask(covered=True, alpha=alpha, hard=hard, score=base.score)

    def forget(self, track_id: int) -> None:
        self.embedded.forget(track_id)

    def reset(self) -> None:
        self.embedded.reset()

    def close(self) -> None:
        self.embedded.close()
