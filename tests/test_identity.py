"""Identities (DreamBooth LoRA training, LCM distillation) and model merging, on tiny
random-weight models loaded through the project's code."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from lostface.config import load_settings
from lostface.errors import InputError
from tests.conftest import shared_path, tiny_settings

pytestmark = pytest.mark.diffusion


def _settings(tiny_models, folder: Path, *more: str):
    return tiny_settings(
        tiny_models,
        f'identity.dir="{folder}"',
        "identity.steps=40",
        "identity.size=256",
        "identity.rank=4",
        "identity.learning_rate=1e-3",
        *more,
    )


def _cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lostface.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )


def _sets(settings) -> list[str]:
    out = []
    for item in (
        f'models.inpaint="{settings.models.inpaint}"',
        f'models.lcm_lora="{settings.models.lcm_lora}"',
        f'identity.dir="{settings.identity.dir}"',
        "models.device=cpu",
        "diffusion.size=256",
    ):
        out += ["--set", item]
    return out


@pytest.fixture(scope="module")
def trained(tiny_models, tmp_path_factory):
    """An identity trained on the four Obama photos of ../shared/data."""
    from lostface.generative.identity import train_identity

    photos = shared_path("identity", "obama")
    folder = tmp_path_factory.mktemp("identities")
    settings = _settings(tiny_models, folder)
    return settings, train_identity(settings, [photos], "obama", progress=False)


def test_training_writes_an_identity_whose_loss_fell(trained):
    settings, ident = trained
    meta = ident.meta
    assert meta["loss_after"] < 0.97 * meta["loss_before"], meta
    assert ident.token == "sks" and ident.prompt == "sks person"
    assert ident.lora.is_file() and len(ident.faces) == 4
    assert (ident.folder / "training.toml").is_file()
    preview = cv2.imread(str(ident.folder / "preview.png"))
    assert preview is not None and preview.shape[1] == 3 * 256  # masked | painted | original
    assert not [p for p in ident.folder.parent.iterdir() if p.name.startswith(".")]  # no leftovers
    listed = _cli("identity", "list", "--json", *_sets(settings))
    rows = [json.loads(line) for line in listed.stdout.splitlines()]
    assert [r["name"] for r in rows] == ["obama"] and rows[0]["faces"] == 4


def _masked_photo(tmp_path: Path) -> Path:
    from lostface.factory import build_detector
    from lostface.synthetic import draw_mask

    image = cv2.imread(str(shared_path("identity", "obama", "obama1.jpg")))
    image = cv2.resize(image, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    det = build_detector(load_settings()).detect(image)
    lm = det.landmarks[int(np.argmax(det.scores))]
    path = tmp_path / "masked.png"
    cv2.imwrite(str(path), draw_mask(image, lm, kind="cloth", rng=np.random.default_rng(0)).image)
    return path


def test_painting_with_the_identity_changes_the_face(trained, tmp_path):
    """`--identity NAME` paints with the diffusion engine and the identity's LoRA (and its
    faces as the guide's references): the covered region differs from the same run without the
    identity; the saved configuration names it."""
    settings, _ = trained
    photo = _masked_photo(tmp_path)
    outs = {}
    for name, extra in (("with", ["--identity", "obama"]), ("without", [])):
        out = tmp_path / f"{name}.png"
        sets = _sets(settings) + ["--set", "restore.engine=diffusion"]
        done = _cli("restore", str(photo), "-o", str(out), *sets, *extra)
        assert done.returncode == 0, done.stderr[-2000:]
        outs[name] = cv2.imread(str(out)).astype(int)
    assert np.abs(outs["with"] - outs["without"]).mean() > 0.5
    saved = (tmp_path / "with.png.lostface.toml").read_text()
    assert 'identity = "obama"' in saved


def test_distillation_gives_the_identity_its_own_lcm_lora(trained, tmp_path):
    from lostface.generative.identity import distill_identity
    from lostface.generative.loading import load_inpaint

    settings, _ = trained
    ident = distill_identity(settings, "obama", steps=6, progress=False)
    assert ident.lcm_lora is not None and ident.meta["distilled_steps"] == 6
    assert np.isfinite(ident.meta["distill_loss"])
    with_id = load_inpaint(
        load_settings(overrides=[*_overrides(settings), 'restore.identity="obama"'])
    )
    plain = load_inpaint(load_settings(overrides=_overrides(settings)))
    a = dict(with_id.unet.named_parameters())
    b = dict(plain.unet.named_parameters())
    assert any(not torch.equal(a[k], b[k]) for k in a)  # the distilled LoRA is fused


def _overrides(settings) -> list[str]:
    return [
        "restore.engine=diffusion",
        f'models.inpaint="{settings.models.inpaint}"',
        f'models.lcm_lora="{settings.models.lcm_lora}"',
        f'identity.dir="{settings.identity.dir}"',
        "models.device=cpu",
        "diffusion.size=256",
    ]


def test_identity_bad_input(trained, tmp_path, astronaut_bgr):
    from lostface.generative.identity import train_identity
    from lostface.identities import get_identity

    settings, _ = trained
    few = tmp_path / "few"
    few.mkdir()
    for i, src in enumerate(sorted(shared_path("identity", "obama").glob("*.jpg"))[:2]):
        shutil.copy(src, few / f"{i}.jpg")
    cv2.imwrite(str(few / "sky.png"), np.full((200, 200, 3), 200, np.uint8))  # no face
    with pytest.raises(InputError, match=r"Only 2 usable face photo\(s\)"):
        train_identity(settings, [few], "few", progress=False)
    with pytest.raises(InputError, match="already exists"):
        train_identity(settings, [few], "obama", progress=False)
    with pytest.raises(InputError, match="not usable"):
        train_identity(settings, [few], "../escape", progress=False)
    with pytest.raises(InputError, match="No identity named nobody"):
        get_identity(settings, "nobody")
    done = _cli("restore", str(tmp_path / "x.png"), "-o", str(tmp_path / "y.png"))
    assert done.returncode == 2
    done = _cli("identity", "show", "nobody", *_sets(settings))
    assert done.returncode == 2 and "No identity named nobody" in done.stderr
    assert "Traceback" not in done.stderr


# -- merging ------------------------------------------------------------------------------
def _perturbed(src: Path, dst: Path, seed: int, scale: float = 0.01) -> Path:
    """A "fine-tune" of src: every float tensor moved a little (same names and shapes)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    gen = torch.Generator().manual_seed(seed)
    for f in dst.glob("*/*.safetensors"):
        state = load_file(str(f))
        save_file(
            {k: v + torch.randn(v.shape, generator=gen) * scale for k, v in state.items()}, str(f)
        )
    return dst


def _unet(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "unet" / "diffusion_pytorch_model.safetensors"))


@pytest.fixture(scope="module")
def text2img(tmp_path_factory):
    """A tiny text-to-image-style model (UNet on 4 channels) and two fine-tunes of it."""
    from lostface.generative.random_init import TINY_UNET, save_inpaint_model

    root = tmp_path_factory.mktemp("merge")
    base = save_inpaint_model(root / "base", unet={**TINY_UNET, "in_channels": 4}, seed=5)
    return base, _perturbed(base, root / "ft1", 1), _perturbed(base, root / "ft2", 2)


def test_task_arithmetic_algebra(text2img, tmp_path):
    from lostface.generative.merge import merge_models

    base, ft1, ft2 = text2img
    zero = merge_models(base, [ft1], [0.0], tmp_path / "zero")
    one = merge_models(base, [ft1], [1.0], tmp_path / "one")
    both = merge_models(base, [ft1, ft2], [1.0, 1.0], tmp_path / "both")
    b, f1, f2 = _unet(base), _unet(ft1), _unet(ft2)
    for k in b:
        assert torch.equal(_unet(zero)[k], b[k])
        assert torch.allclose(_unet(one)[k], f1[k], atol=1e-6)
        assert torch.allclose(_unet(both)[k], f1[k] + f2[k] - b[k], atol=1e-5)
    assert (tmp_path / "one" / "unet" / "config.json").is_file()  # in the form of the base


def test_add_difference_onto_an_inpainting_model(text2img, tiny_models, tmp_path):
    """A text-to-image fine-tune's task vector onto an inpainting model: the first 4 input
    channels of conv_in take the difference, the mask and masked-image channels keep theirs."""
    from lostface.generative.merge import merge_models

    base, ft1, _ = text2img
    # an inpainting model of the base's architecture but 9 input channels
    from lostface.generative.random_init import TINY_UNET, save_inpaint_model

    onto = save_inpaint_model(tmp_path / "inpaint", unet=TINY_UNET, seed=5)
    out = merge_models(base, [ft1], [1.0], tmp_path / "out", onto=onto)
    got, tgt, b, f = _unet(out), _unet(onto), _unet(base), _unet(ft1)
    w = "conv_in.weight"
    assert got[w].shape[1] == 9
    assert torch.allclose(got[w][:, :4], tgt[w][:, :4] + f[w] - b[w], atol=1e-5)
    assert torch.equal(got[w][:, 4:], tgt[w][:, 4:])
    other = "conv_out.weight"
    assert torch.allclose(got[other], tgt[other] + f[other] - b[other], atol=1e-5)
    done = _cli("models", "verify", "models.inpaint", "--set", f'models.inpaint="{out}"')
    assert done.returncode == 0, done.stdout


def test_single_file_checkpoints_merge_and_mismatches_are_refused(tmp_path):
    from safetensors.torch import save_file

    from lostface.generative.merge import merge_models

    gen = torch.Generator().manual_seed(0)
    base = {"a.weight": torch.randn(4, 3, generator=gen), "b.bias": torch.randn(3, generator=gen)}
    ft = {k: v + 1.0 for k, v in base.items()}
    for name, st in (("base", base), ("ft", ft)):
        save_file(st, str(tmp_path / f"{name}.safetensors"))
    out = merge_models(
        tmp_path / "base.safetensors",
        [tmp_path / "ft.safetensors"],
        [0.5],
        tmp_path / "m.safetensors",
    )
    from safetensors.torch import load_file

    assert torch.allclose(load_file(str(out))["a.weight"], base["a.weight"] + 0.5)
    save_file(
        {"a.weight": torch.zeros(4, 4), "b.bias": torch.zeros(3)}, str(tmp_path / "x.safetensors")
    )
    done = _cli(
        "models", "merge", str(tmp_path / "base.safetensors"), str(tmp_path / "x.safetensors"),
        "--weights", "1", "-o", str(tmp_path / "bad.safetensors"),
    )  # fmt: skip
    assert done.returncode == 2 and "differ at a.weight" in done.stderr, done.stderr
    assert not (tmp_path / "bad.safetensors").exists()


def test_lora_merges(tiny_models, tmp_path):
    from safetensors.torch import load_file

    from lostface.generative.merge import _lora_pairs, merge_loras
    from lostface.generative.random_init import save_lora

    a = tiny_models["lora"]
    b = save_lora(tmp_path / "b", tiny_models["inpaint"], seed=9)
    lin = merge_loras([a, b], [0.25, 0.75], tmp_path / "lin.safetensors")
    pa = _lora_pairs(load_file(str(a / "pytorch_lora_weights.safetensors")), "a")
    pb = _lora_pairs(load_file(str(b / "pytorch_lora_weights.safetensors")), "b")
    pm = _lora_pairs(load_file(str(lin)), "m")
    for layer, (ma, mb) in pm.items():
        want = 0.25 * pa[layer][1].flatten(1) @ pa[layer][0].flatten(1)
        want += 0.75 * pb[layer][1].flatten(1) @ pb[layer][0].flatten(1)
        assert torch.allclose(mb.flatten(1) @ ma.flatten(1), want, atol=1e-5)
    ties = merge_loras([a, b], [0.5, 0.5], tmp_path / "ties.safetensors", "ties")
    settings = tiny_settings(tiny_models)
    from lostface.generative.loading import lora_problems

    assert lora_problems(ties, Path(settings.models.inpaint)) == []
    with pytest.raises(InputError, match="differ"):
        merge_loras([a, tiny_models["other_lora"]], [0.5, 0.5], tmp_path / "x.safetensors")
