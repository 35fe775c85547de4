"""Quality metrics on real images: identity (dlib), region PSNR, detail, seam, flicker."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lostface.metrics import (
    SAME_PERSON_DISTANCE,
    FlickerMeter,
    IdentityMetric,
    detail_score,
    region_psnr,
    seam_score,
    temporal_flicker,
)
from tests.conftest import shared_path

# The astronaut's face in scikit-image's 512x512 photo (x0, y0, x1, y1).
FACE_BOX = (160, 60, 260, 190)


def _face_region(shape: tuple[int, ...]) -> np.ndarray:
    region = np.zeros(shape[:2], bool)
    x0, y0, x1, y1 = FACE_BOX
    region[y0:y1, x0:x1] = True
    return region


def _read_small(path, long_side: int = 800) -> np.ndarray:
    img = cv2.imread(str(path))
    assert img is not None
    s = long_side / max(img.shape[:2])
    return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img


@pytest.fixture(scope="module")
def identity() -> IdentityMetric:
    pytest.importorskip("dlib")
    return IdentityMetric()


def test_identity_of_an_image_to_itself_is_zero(identity, astronaut_bgr) -> None:
    anchor = identity.anchor(astronaut_bgr)
    assert anchor is not None and anchor.from_detector
    x0, y0, x1, y1 = anchor.box
    assert 120 < (x0 + x1) / 2 < 300 and 40 < (y0 + y1) / 2 < 220  # the astronaut's face
    assert identity.distance(anchor, astronaut_bgr) < 1e-6


def test_identity_grows_when_the_lower_face_is_covered(identity, astronaut_bgr) -> None:
    anchor = identity.anchor(astronaut_bgr)
    x0, y0, x1, y1 = anchor.box
    covered = astronaut_bgr.copy()
    covered[(y0 + y1) // 2 : y1 + 10, x0 - 5 : x1 + 5] = (200, 170, 120)
    assert identity.distance(anchor, covered) > 0.1


def test_identity_separates_people(identity) -> None:
    obama = [_read_small(shared_path("identity", "obama", f"obama{i}.jpg")) for i in (1, 2)]
    biden = _read_small(shared_path("identity", "biden", "biden1.jpg"))
    a1, a2, b = (identity.anchor(img) for img in (*obama, biden))
    assert a1 is not None and a2 is not None and b is not None
    assert IdentityMetric.between(a1, b) > SAME_PERSON_DISTANCE
    assert IdentityMetric.between(a2, b) > SAME_PERSON_DISTANCE
    assert IdentityMetric.between(a1, a2) < SAME_PERSON_DISTANCE


def test_identity_falls_back_to_the_hint_box(identity, astronaut_bgr) -> None:
    # A hint far from any face HOG finds: the hint box itself places the chip.
    anchor = identity.anchor(astronaut_bgr, hint_box=np.array([330, 300, 480, 470]))
    assert anchor is not None and not anchor.from_detector
    assert identity.anchor(np.full((200, 200, 3), 128, np.uint8)) is None


def test_region_psnr(astronaut_bgr) -> None:
    region = _face_region(astronaut_bgr.shape)
    assert region_psnr(astronaut_bgr, astronaut_bgr.copy(), region) == float("inf")
    rng = np.random.default_rng(0)
    noisy = np.clip(astronaut_bgr + rng.normal(0, 5, astronaut_bgr.shape), 0, 255).astype(np.uint8)
    assert 32.0 < region_psnr(noisy, astronaut_bgr, region) < 36.0
    # Only the region counts: damage outside it leaves the figure unchanged.
    damaged = astronaut_bgr.copy()
    damaged[400:] = 0
    assert region_psnr(damaged, astronaut_bgr, region) == float("inf")
    with pytest.raises(ValueError):
        region_psnr(astronaut_bgr, astronaut_bgr, np.zeros_like(region))


def test_blur_lowers_the_detail_score(astronaut_bgr) -> None:
    region = _face_region(astronaut_bgr.shape)
    sharp = detail_score(astronaut_bgr, region)
    blurred = detail_score(cv2.GaussianBlur(astronaut_bgr, (0, 0), 3), region)
    assert blurred < 0.5 * sharp


def test_a_pasted_square_raises_the_seam_score(astronaut_bgr) -> None:
    region = np.zeros(astronaut_bgr.shape[:2], bool)
    region[120:200, 170:250] = True
    before = seam_score(astronaut_bgr, region)
    pasted = astronaut_bgr.copy()
    pasted[120:200, 170:250] = astronaut_bgr[400:480, 20:100]  # suit fabric over the face
    after = seam_score(pasted, region)
    assert after > 1.5 * before
    # A seamless change (the original region blurred softly) stays near the original's score.
    soft = astronaut_bgr.copy()
    soft[region] = cv2.GaussianBlur(astronaut_bgr, (0, 0), 1.0)[region]
    assert seam_score(soft, region) < 0.5 * after


def test_flicker_of_a_static_clip_is_zero_and_noise_raises_it(astronaut_bgr) -> None:
    region = _face_region(astronaut_bgr.shape)
    static = [astronaut_bgr.copy() for _ in range(5)]
    assert temporal_flicker(static, [region] * 5) < 1e-6
    rng = np.random.default_rng(1)
    noisy = [
        np.clip(astronaut_bgr + rng.normal(0, 6, astronaut_bgr.shape), 0, 255).astype(np.uint8)
        for _ in range(5)
    ]
    # Flow from the clean frames; the noise is what flickers.
    assert temporal_flicker(noisy, [region] * 5, originals=static) > 4.0


def test_flow_compensates_camera_motion(astronaut_bgr) -> None:
    # A pan of 3 px per frame: without flow every pixel would change; with it little does.
    frames = [np.ascontiguousarray(astronaut_bgr[20:420, 3 * i : 3 * i + 400]) for i in range(6)]
    region = np.zeros(frames[0].shape[:2], bool)
    region[60:180, 120:220] = True
    raw = float(
        np.mean(
            [np.abs(frames[i].astype(float) - frames[i - 1])[region].mean() for i in range(1, 6)]
        )
    )
    warped = temporal_flicker(frames, [region] * 6)
    assert warped < 0.35 * raw


def test_flicker_skips_scene_cuts(astronaut_bgr) -> None:
    other = cv2.cvtColor(
        cv2.cvtColor(astronaut_bgr[::-1, ::-1], cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR
    )
    frames = [astronaut_bgr] * 3 + [other] * 3
    region = _face_region(astronaut_bgr.shape)
    meter = FlickerMeter()
    for f in frames:
        meter.add(f, region, {"clip": f})
    assert meter.skipped_cuts == 1 and meter.pairs == 4
    assert meter.result()["clip"] < 1e-6


def test_quality_benchmark_quick(tmp_path) -> None:
    """The benchmark's --quick run end to end: real clip, real pipeline, JSON and grids."""
    pytest.importorskip("dlib")
    shared_path("video", "stage_clip.mp4")
    shared_path("identity", "obama")
    import importlib.util
    import json
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "quality.py"
    spec = importlib.util.spec_from_file_location("bench_quality", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = mod  # dataclasses look their module up there
    try:
        spec.loader.exec_module(mod)
    finally:
        sys.modules.pop("bench_quality", None)
    out = tmp_path / "quality.json"
    assert mod.main(["--quick", "--out", str(out), "--grids", str(tmp_path)]) == 0
    res = json.loads(out.read_text())
    video, pairs = res["video"], res["pairs"]
    assert video["frames"] == 40 and video["frames_with_mask"] >= 30
    assert video["flicker_pairs"] >= 30
    # The flow-compensated original barely changes; a mask drawn per frame changes more.
    assert video["flicker"]["original"] < video["flicker"]["masked"]
    assert pairs["pairs"] == 6  # obama1 <-> obama2, three mask kinds
    # Telea as the pipeline's own restorer: it paints where the pipeline paints, which beats
    # leaving the mask on; photo pairs have no pipeline run.
    vpsnr = video["metrics"]["psnr"]
    assert vpsnr["telea_pipeline"]["mean"] > vpsnr["masked"]["mean"] + 1.0
    assert "identity_below_telea_pipeline" in video["targets"]
    assert "telea_pipeline" not in pairs["metrics"]["psnr"]
    # The restored frame with the masked input outside the true region: its covered-region
    # pixels are the restored ones, its identity a diagnostic, not a target.
    assert vpsnr["restored_true_region"]["mean"] == pytest.approx(vpsnr["restored"]["mean"])
    assert 0.0 < video["metrics"]["identity"]["restored_true_region"]["mean"] < 1.5
    assert not any("restored_true_region" in t for t in video["targets"])
    assert "restored_true_region" not in pairs["metrics"]["psnr"]
    # The first 40 frames show the singer (the reference's person), then a man in profile:
    # every masked frame counts in exactly one of the two groups.
    assert video["main_person"]["items"] > 0 and video["other_people"]["items"] > 0
    assert (
        video["main_person"]["items"] + video["other_people"]["items"] == video["frames_with_mask"]
    )
    for part in (video, pairs):
        psnr = part["metrics"]["psnr"]
        # A flat mask is the worst guess of the face under it; any inpainting beats it.
        assert psnr["masked"]["mean"] < psnr["telea"]["mean"]
        ident = part["metrics"]["identity"]
        assert all(0.0 < ident[v]["mean"] < 1.5 for v in ("masked", "restored", "telea"))
        assert {t["pass"] for t in part["targets"].values()} <= {True, False}
    for name in ("quality_grid_video.png", "quality_grid_pairs.png"):
        grid = cv2.imread(str(tmp_path / name))
        # Four face crops side by side per row, real picture content (not blank).
        assert grid is not None and grid.shape[0] >= 200 and grid.shape[1] >= 600
        assert grid.std() > 20
