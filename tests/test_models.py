"""`lostface models list | pull | verify`, the GPU preset, and every bad model a user can name:
one sentence each, a non-zero exit, nothing written. Downloads run against a hub on loopback
(tests/hub_server.py) through the hub client's endpoint setting."""

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

from lostface.config import load_settings
from lostface.errors import ConfigError, ModelError
from lostface.models import cached_snapshot, is_hub_id, model_entry, resolve
from tests.conftest import tiny_settings
from tests.hub_server import HubServer

pytestmark = pytest.mark.diffusion


def _cli(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "lostface.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def _one_sentence(stderr: str) -> str:
    lines = [ln for ln in stderr.strip().splitlines() if ln.startswith("lostface: error:")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_hub_ids_and_paths_are_told_apart(tmp_path, monkeypatch):
    assert is_hub_id("stable-diffusion-v1-5/stable-diffusion-inpainting")
    assert not is_hub_id("./models/inpaint") and not is_hub_id("/abs/path")
    (tmp_path / "a").mkdir()
    monkeypatch.chdir(tmp_path)
    assert not is_hub_id("a")
    assert model_entry("inpaint").key == "models.inpaint"
    with pytest.raises(ConfigError, match="known models: models.inpaint"):
        model_entry("segmenter")


def test_pull_list_verify_then_run_offline(tiny_models, tmp_path, astronaut_bgr):
    """pull fetches the tiny models from a hub on loopback into models.cache; list and verify
    see them; restoring a photo then loads them from the cache with the network off."""
    cache = tmp_path / "cache"
    sets = [
        "--set",
        'models.inpaint="someone/tiny-inpaint"',
        "--set",
        'models.lcm_lora="someone/tiny-lcm"',
        "--set",
        f'models.cache="{cache}"',
    ]
    repos = {
        "someone/tiny-inpaint": tiny_models["inpaint"],
        "someone/tiny-lcm": tiny_models["lora"],
    }
    online = {"HF_HUB_OFFLINE": ""}
    with HubServer(repos) as hub:
        env = {**online, "HF_ENDPOINT": hub.url}
        done = _cli("models", "pull", "models.inpaint", "models.lcm_lora", *sets, "-q", env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        assert any("/resolve/" in r for r in hub.requests)
    settings = load_settings(overrides=[s for s in sets if s != "--set"])
    snapshot = cached_snapshot("someone/tiny-inpaint", str(cache))
    assert snapshot is not None and (snapshot / "unet" / "config.json").is_file()
    assert resolve(settings, "models.inpaint") == snapshot
    assert str(snapshot) in done.stdout

    listed = _cli("models", "list", "--json", *sets, "--set", "restore.engine=diffusion")
    rows = {r["key"]: r for r in map(json.loads, listed.stdout.splitlines())}
    assert rows["models.inpaint"]["path"] == str(snapshot) and rows["models.inpaint"]["used"]
    assert rows["models.inpaint"]["bytes"] > 1_000_000
    assert rows["detect.model"]["path"] is None and not rows["detect.model"]["used"]

    verified = _cli("models", "verify", "models.inpaint", "models.lcm_lora", *sets)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.count(": ok (") == 2

    photo = tmp_path / "masked.png"
    _write_masked(astronaut_bgr, photo)
    out = tmp_path / "out.png"
    run = _cli(
        "restore", str(photo), "-o", str(out), *sets, "--set", "restore.engine=diffusion",
        "--set", "diffusion.size=256", env={"HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    assert cv2.imread(str(out)).shape == astronaut_bgr.shape


def _write_masked(image: np.ndarray, path: Path) -> None:
    from lostface.factory import build_detector
    from lostface.synthetic import draw_mask

    det = build_detector(load_settings()).detect(image)
    lm = det.landmarks[int(np.argmax(det.scores))]
    cv2.imwrite(str(path), draw_mask(image, lm, kind="cloth", rng=np.random.default_rng(0)).image)


def test_pull_refuses_with_the_network_forbidden_and_names_an_unknown_repo(tmp_path):
    sets = ["--set", 'models.inpaint="someone/nothing-here"', "--set", f'models.cache="{tmp_path}"']
    done = _cli("models", "pull", "models.inpaint", *sets, env={"HF_HUB_OFFLINE": "1"})
    assert done.returncode == 3
    assert "HF_HUB_OFFLINE is set" in _one_sentence(done.stderr)
    with HubServer({}) as hub:
        env = {"HF_HUB_OFFLINE": "", "HF_ENDPOINT": hub.url}
        done = _cli("models", "pull", "models.inpaint", *sets, env=env)
    assert done.returncode == 3
    assert "Could not download models.inpaint 'someone/nothing-here'" in _one_sentence(done.stderr)
    assert not list(tmp_path.glob("models--*/snapshots/*/*"))


@pytest.fixture()
def photo(tmp_path, astronaut_bgr) -> Path:
    path = tmp_path / "in.png"
    _write_masked(astronaut_bgr, path)
    return path


def _restore(photo: Path, *sets: str, env: dict | None = None) -> tuple[int, str, Path]:
    out = photo.with_name("out.png")
    done = _cli("restore", str(photo), "-o", str(out), *sets, env=env)
    return done.returncode, done.stderr, out


def test_a_model_that_is_not_downloaded_names_the_pull_command(photo, tmp_path):
    code, err, out = _restore(photo, "--preset", "gpu", "--set", f'models.cache="{tmp_path}"')
    assert code == 3 and not out.exists()
    sentence = _one_sentence(err)
    assert "models.inpaint 'stable-diffusion-v1-5/stable-diffusion-inpainting' is not" in sentence
    assert "lostface models pull models.inpaint" in sentence
    assert "no CUDA GPU" in err  # the preset's GPU is absent here: said, and the CPU used


def test_the_gpu_preset_without_a_gpu_stops_when_told_to(photo, tiny_models):
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    s = tiny_settings(tiny_models)
    sets = ["--preset", "gpu", "--set", f'models.inpaint="{s.models.inpaint}"']
    sets += ["--set", f'models.lcm_lora="{s.models.lcm_lora}"']
    code, err, out = _restore(photo, *sets, "--set", "models.cpu_fallback=false")
    assert code == 3 and not out.exists()
    assert "models.device is cuda but this machine has no CUDA GPU" in _one_sentence(err)


def _corrupt(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    weights = dst / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return dst


def _text_to_image(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "unet" / "config.json").read_text())
    cfg["in_channels"] = 4
    (dst / "unet" / "config.json").write_text(json.dumps(cfg))
    return dst


def _not_a_model(src: Path, dst: Path) -> Path:
    dst.mkdir()
    (dst / "readme.txt").write_text("photos, not a model")
    return dst


def _wrong_shapes(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "unet" / "config.json").read_text())
    cfg["cross_attention_dim"] = 48  # the weights were made for 32
    (dst / "unet" / "config.json").write_text(json.dumps(cfg))
    return dst


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_corrupt, "is truncated"),
        (_text_to_image, "takes 4 input channels, not a Stable Diffusion inpainting model (9)"),
        (_not_a_model, "is not a diffusers model folder (no model_index.json)"),
    ],
)
def test_bad_inpainting_models_get_one_sentence(photo, tiny_models, tmp_path, make, words):
    bad = make(tiny_models["inpaint"], tmp_path / "bad")
    sets = ["--set", "restore.engine=diffusion", "--set", f'models.inpaint="{bad}"']
    sets += ["--set", 'models.lcm_lora=""']
    code, err, out = _restore(photo, *sets)
    assert code == 3 and not out.exists()
    assert words in _one_sentence(err)
    verified = _cli("models", "verify", "models.inpaint", *sets)
    assert verified.returncode == 3 and words in verified.stdout


def test_verify_finds_weights_that_do_not_match_their_config(tiny_models, tmp_path):
    bad = _wrong_shapes(tiny_models["inpaint"], tmp_path / "bad")
    verified = _cli("models", "verify", "models.inpaint", "--set", f'models.inpaint="{bad}"')
    assert verified.returncode == 3
    assert "unet:" in verified.stdout and "tensors of the wrong shape" in verified.stdout


def test_an_lcm_lora_for_another_model_is_refused(photo, tiny_models):
    s = tiny_settings(tiny_models)
    sets = ["--set", "restore.engine=diffusion", "--set", f'models.inpaint="{s.models.inpaint}"']
    sets += ["--set", f'models.lcm_lora="{tiny_models["other_lora"]}"']
    code, err, out = _restore(photo, *sets)
    assert code == 3 and not out.exists()
    sentence = _one_sentence(err)
    assert "does not fit models.inpaint" in sentence and "inputs where the model has" in sentence
    verified = _cli("models", "verify", "models.lcm_lora", *sets)
    assert verified.returncode == 3 and "inputs where the model has" in verified.stdout


def test_missing_local_model_path(photo, tmp_path):
    sets = ["--set", "restore.engine=diffusion", "--set", f'models.inpaint="{tmp_path}/nope"']
    code, err, out = _restore(photo, *sets)
    assert code == 3 and not out.exists()
    assert f"models.inpaint {tmp_path}/nope does not exist" in _one_sentence(err)


def test_the_gpu_preset_selects_the_full_engines():
    s = load_settings("gpu")
    assert s.restore.engine == "diffusion" and s.models.device == "cuda"
    assert s.keyframe.batch > 1
    with pytest.raises(ModelError, match="not downloaded"):
        resolve(load_settings("gpu", overrides=['models.cache="/nonexistent"']), "inpaint")


def test_onnxruntime_sessions_block_instead_of_spinning():
    """Every CPU session of the product (the detector's, the enlarged look's, the identity
    network's) lets its pool's threads sleep between runs: a spinning thread takes a core
    from the decoder, the encoder and the keyframe worker."""
    from lostface.models import dlib_model_paths, load_centerface
    from lostface.restore.dlib_net import FaceNet

    try:
        _, network = dlib_model_paths(5)
    except ModelError as exc:
        pytest.skip(str(exc))
    sessions = [load_centerface("cpu", 2), FaceNet(network, 2).session]
    for session in sessions:
        opts = session.get_session_options()
        assert opts.intra_op_num_threads == 2
        assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
