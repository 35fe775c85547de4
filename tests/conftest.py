"""Shared fixtures: real photos from ../shared/data (skipped with a reason when absent),
real images shipped in PyPI packages, and generated media in tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))


def shared_path(*parts: str) -> Path:
    """A path under ../shared/data, or a skip when that folder is absent (fresh clones)."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: ../shared/data ships beside the project in CI only")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return shared_path()


@pytest.fixture(scope="session")
def astronaut_bgr() -> np.ndarray:
    """A real unmasked face photo that ships with scikit-image (512x512)."""
    skimage_data = pytest.importorskip("skimage.data")
    rgb = skimage_data.astronaut()
    return np.ascontiguousarray(rgb[:, :, ::-1])


@pytest.fixture(scope="session", autouse=True)
def _yolo_config_dir(tmp_path_factory: pytest.TempPathFactory) -> None:
    os.environ.setdefault("YOLO_CONFIG_DIR", str(tmp_path_factory.mktemp("yolo_cfg")))


@pytest.fixture(scope="session")
def stage_masked() -> tuple[list, list, list]:
    """The first 90 frames of stage_clip with synthetic masks: (masked, covered, original)."""
    from tests.live_helpers import masked_stage_clip

    return masked_stage_clip(str(shared_path("video", "stage_clip.mp4")), 90)


@pytest.fixture(scope="session")
def stage_reference() -> np.ndarray:
    """The unmasked photo of stage_clip's main person."""
    import cv2

    return cv2.imread(str(shared_path("identity", "stage_clip_reference.png")))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Random-weight SD inpainting models in the layout users download (diffusers folders,
    saved with save_pretrained): "inpaint" with its "lora" (an LCM-LoRA stand-in), "lcm" (an
    LCM-distilled UNet, no LoRA needed), and "other_lora" (a LoRA for a wider UNet, which fits
    neither)."""
    pytest.importorskip("diffusers")
    pytest.importorskip("peft")
    from lostface.generative.random_init import TINY_UNET, save_inpaint_model, save_lora

    root = tmp_path_factory.mktemp("tiny_models")
    out = {
        "inpaint": save_inpaint_model(root / "inpaint"),
        "lcm": save_inpaint_model(root / "lcm", lcm_distilled=True, seed=1),
    }
    out["lora"] = save_lora(root / "lora", out["inpaint"])
    wide = root / "wide"
    save_inpaint_model(wide, seed=2, unet={**TINY_UNET, "block_out_channels": (48, 96)})
    out["other_lora"] = save_lora(root / "other_lora", wide)
    return out


def tiny_settings(models: dict[str, Path], *overrides: str, lora: bool = True):
    """Settings for the diffusion engine on the tiny models (4 steps at 256 px: fast on a CPU)."""
    from lostface.config import load_settings

    return load_settings(
        overrides=[
            "restore.engine=diffusion",
            f'models.inpaint="{models["inpaint"]}"',
            f'models.lcm_lora="{models["lora"] if lora else ""}"',
            "models.device=cpu",
            "diffusion.size=256",
            *overrides,
        ]
    )


@pytest.fixture(scope="session")
def tiny_sam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Segment Anything checkpoint (a 2-block ViT image encoder)."""
    pytest.importorskip("mobile_sam")
    from lostface.generative.random_init import save_sam

    return save_sam(tmp_path_factory.mktemp("sam") / "tiny_sam.pth")


@pytest.fixture(scope="session")
def tiny_x4(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight SD x4 upscaler saved as a diffusers folder."""
    pytest.importorskip("diffusers")
    from lostface.generative.random_init import save_upscale_model

    return save_upscale_model(tmp_path_factory.mktemp("x4") / "x4")


@pytest.fixture
def main():
    """The `lostface` program's main(argv) (every command, the live ones included)."""
    from lostface.cli import main

    return main
