"""The diffusion restorer on tiny random-weight SD inpainting models, loaded through the same
code as downloaded ones: determinism, soft inpainting, latent reuse per face, batching, the
pipeline and the live loop. (Random weights paint noise: these tests check where and how the
painting happens, not how it looks.)"""

from __future__ import annotations

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from lostface.config import load_settings
from lostface.factory import build_stages
from lostface.frame import CoverMask, Frame
from lostface.pipeline import Pipeline
from lostface.restore import align
from lostface.restore.painter import PaintJob
from lostface.stages import RestoreItem
from lostface.synthetic import draw_mask
from tests.conftest import tiny_settings

pytestmark = pytest.mark.diffusion


@pytest.fixture(scope="module")
def masked(astronaut_bgr):
    """The astronaut photo with a drawn surgical mask, its landmarks and covered pixels."""
    stages = build_stages(load_settings())  # embedded detector
    det = stages.detector.detect(astronaut_bgr)
    lm = det.landmarks[int(np.argmax(det.scores))]
    sm = draw_mask(astronaut_bgr, lm, kind="surgical", rng=np.random.default_rng(0))
    return sm.image, lm, sm.covered


def _restorer(tiny_models, *overrides, lora=True):
    from lostface.registry import build_restorer

    return build_restorer(tiny_settings(tiny_models, *overrides, lora=lora))


def _item(image, lm, track=None):
    """The aligned face and its covered region, as the painter hands them to a restorer."""
    from lostface.registry import build_painter

    painter = build_painter(load_settings())
    job = PaintJob.from_frame(track or 0, 0, image, lm)
    face = align.warp_to_canonical(job.pixels, job.local_to_canonical)
    canon = align.apply(job.to_canonical, lm[:5]).astype(np.float32)
    cover = painter.segmenter.segment(face, canon)
    assert cover.covered
    return RestoreItem(face, cover, canon, track)


def test_the_model_loads_once_with_its_lcm_lora_fused(tiny_models):
    from lostface.generative.loading import load_inpaint

    with_lora = load_inpaint(tiny_settings(tiny_models))
    assert load_inpaint(tiny_settings(tiny_models)) is with_lora  # shared, not loaded again
    plain = load_inpaint(tiny_settings(tiny_models, lora=False))
    a = dict(with_lora.unet.named_parameters())
    b = dict(plain.unet.named_parameters())
    assert a.keys() == b.keys()  # fused: no LoRA layers left behind
    changed = [k for k in a if "attn1.to_q.weight" in k and not np.allclose(a[k], b[k])]
    assert changed


def test_same_seed_same_painting_other_seed_other_painting(tiny_models, masked):
    image, lm, _ = masked
    item = _item(image, lm)
    one = _restorer(tiny_models).restore(*item)[0]
    again = _restorer(tiny_models).restore(*item)[0]
    other = _restorer(tiny_models, "diffusion.seed=7").restore(*item)[0]
    assert np.array_equal(one, again)
    assert not np.array_equal(one, other)


@pytest.mark.parametrize("soft", [True, False])
def test_nothing_outside_the_soft_mask_changes(tiny_models, masked, soft):
    image, lm, _ = masked
    item = _item(image, lm)
    out = _restorer(tiny_models, f"diffusion.soft={str(soft).lower()}").restore(*item)[0]
    outside = item.cover.alpha <= 0
    inside = item.cover.alpha >= 0.99
    assert np.array_equal(out[outside], item.face[outside])
    assert np.abs(out[inside].astype(int) - item.face[inside]).mean() > 10  # painted


def test_soft_inpainting_changes_each_latent_by_its_mask_value(tiny_models, masked):
    """With a mask that ramps from 0 to 1 across the face, soft inpainting changes each latent
    pixel more the higher its mask value (a pixel is free for that share of the schedule); the
    binarised mask changes the pixels on either side of 0.5 alike. (Measured on the latents:
    a random-weight VAE does not give the face back, so pixels cannot show it.)"""
    import torch

    image, lm, _ = masked
    item = _item(image, lm, track=1)
    h, w = item.cover.alpha.shape
    ramp = np.clip((np.arange(h, dtype=np.float32)[:, None] - 60) / 180, 0, 1) * np.ones((1, w))
    cover = CoverMask(True, ramp.astype(np.float32), ramp > 0.5, 1.0)
    changes = {}
    for soft in (True, False):
        r = _restorer(tiny_models, f"diffusion.soft={str(soft).lower()}", "diffusion.init=noise")
        r.restore(item.face, cover, item.landmarks, 1)
        with torch.inference_mode():
            own = r._encode(r._pixels(item.face)[None])[0]
        final = r._faces[1].latents  # what the face's next keyframe starts from
        change = (final - own).abs().mean(0).numpy()
        m = cv2.resize(ramp, change.shape[::-1], interpolation=cv2.INTER_AREA)
        bins = [(0.05, 0.25), (0.25, 0.45), (0.55, 0.75), (0.75, 0.95)]
        changes[soft] = [float(change[(m > lo) & (m < hi)].mean()) for lo, hi in bins]
    soft, hard = changes[True], changes[False]
    assert all(a < b for a, b in zip(soft, soft[1:], strict=False)), soft  # grows with the mask
    assert soft[0] < 0.8 * soft[-1], soft
    # binarised: alike below 0.5 and alike above it
    assert abs(hard[0] - hard[1]) < 0.2 * hard[3] and abs(hard[2] - hard[3]) < 0.2 * hard[3], hard


def _keyframes(tiny_models, image, lm, temporal: str) -> tuple[np.ndarray, np.ndarray, CoverMask]:
    """Two keyframes of one face a few pixels apart (a moving head), painted in turn."""
    r = _restorer(tiny_models, f"diffusion.temporal={temporal}")
    first = _item(image, lm, track=5)
    m = np.float32([[1, 0, 3], [0, 1, 2]])
    moved = cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
    second = _item(moved, lm + np.float32([3, 2]), track=5)
    return r.restore(*first)[0], r.restore(*second)[0], first.cover


def test_latent_reuse_keeps_consecutive_keyframes_closer_than_fresh_noise(tiny_models, masked):
    image, lm, _ = masked
    diffs = {}
    for temporal in ("reuse", "fixed-noise", "fresh"):
        a, b, cover = _keyframes(tiny_models, image, lm, temporal)
        core = cover.alpha >= 0.99
        diffs[temporal] = np.abs(a.astype(int) - b)[core].mean()
    assert diffs["reuse"] < 0.7 * diffs["fresh"], diffs
    assert diffs["reuse"] < diffs["fixed-noise"], diffs


def test_forget_and_scene_cuts_start_a_face_afresh(tiny_models, masked):
    image, lm, _ = masked
    r = _restorer(tiny_models)
    item = _item(image, lm, track=3)
    first = r.restore(*item)[0]
    second = r.restore(*item)[0]  # from the first one's latents
    assert not np.array_equal(first, second)
    r.forget(3)
    assert np.array_equal(r.restore(*item)[0], first)
    r.reset()
    assert np.array_equal(r.restore(*item)[0], first)


def test_a_batch_paints_each_face_as_it_would_alone(tiny_models, masked, astronaut_bgr):
    image, lm, _ = masked
    small = cv2.resize(image, None, fx=0.6, fy=0.6, interpolation=cv2.INTER_AREA)
    items = [_item(image, lm, track=1), _item(small, lm * 0.6, track=2)]
    together = _restorer(tiny_models).restore_many(items)
    alone = [_restorer(tiny_models).restore(*it)[0] for it in items]
    for (img, _), ref in zip(together, alone, strict=True):
        assert np.abs(img.astype(int) - ref).max() <= 2


@pytest.mark.parametrize(("lora", "guidance"), [(True, "2.0"), (False, "8.0")])
def test_guidance_is_wired_for_both_kinds_of_model(tiny_models, masked, lora, guidance):
    """LCM-LoRA models get classifier-free guidance (two UNet passes); LCM-distilled models
    get the guidance embedding. Either way the guidance changes the painting."""
    image, lm, _ = masked
    item = _item(image, lm)
    models = dict(tiny_models)
    if not lora:
        models["inpaint"] = tiny_models["lcm"]
    base = _restorer(models, "diffusion.guidance=1.0", lora=lora).restore(*item)[0]
    guided = _restorer(models, f"diffusion.guidance={guidance}", lora=lora).restore(*item)[0]
    assert not np.array_equal(base, guided)


def test_a_whole_photo_changes_only_under_the_patch(tiny_models, masked):
    from lostface.restore_image import restore_image

    image, lm, covered = masked
    # without the invisible watermark nothing changes beyond the patch
    settings = tiny_settings(tiny_models, "provenance.watermark=false")
    result = restore_image(image, build_stages(settings), settings)
    assert result.masked == 1 and len(result.patches) == 1
    patch = result.patches[0]

    def footprint(canonical: np.ndarray) -> np.ndarray:
        warped = cv2.warpAffine(
            canonical.astype(np.uint8),
            align.invert(patch.to_canonical),
            image.shape[1::-1],
            flags=cv2.INTER_NEAREST,
        )
        return cv2.dilate(warped, np.ones((5, 5), np.uint8)) > 0  # bilinear sampling's reach

    support = footprint(patch.alpha > 0)
    changed = np.any(result.image != image, axis=2)
    assert changed[covered].mean() > 0.9
    assert not changed[~support].any()
    # with the default watermark (the frame mark) every pixel outside the patch moves by at
    # most 2 levels, and the painting is the same
    framed = restore_image(image, build_stages(tiny_settings(tiny_models)), settings).image
    diff = np.abs(framed.astype(np.int16) - image.astype(np.int16)).max(axis=2)
    assert diff[~support].max() <= 2 and diff[~support].any()
    again = np.abs(framed.astype(np.int16) - result.image.astype(np.int16)).max(axis=2)
    assert again.max() <= 2
    # with RivaGAN's mark in the faces (provenance.engine "faces"), the rest of the face's crop
    # changes by a level or two and nothing outside it changes
    marked = tiny_settings(tiny_models, 'provenance.engine="faces"')
    out = restore_image(image, build_stages(marked), marked).image
    crop = footprint(np.ones(align.CANON_SHAPE, bool))
    diff = np.abs(out.astype(np.int16) - image.astype(np.int16)).max(axis=2)
    assert not diff[~crop].any()
    assert diff[crop & ~support].any() and diff[crop & ~support].mean() < 3.0


def _moving_clip(image: np.ndarray, n: int) -> list[np.ndarray]:
    out = []
    for i in range(n):
        m = np.float32([[1, 0, i - n / 2], [0, 1, 0.5 * i]])
        shifted = cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
        out.append(np.ascontiguousarray(cv2.resize(shifted, (320, 320))))
    return out


def test_the_frame_loop_keeps_its_rate_while_diffusion_keyframes_run(tiny_models, masked):
    """A live loop at 30 frames/s with the diffusion engine (a fraction of a second to a few
    seconds per keyframe on this CPU): frames keep flowing while keyframes are painted, and
    the patches land."""
    from lostface.stream.live import LiveLoop, close_pipeline, live_pipeline
    from lostface.stream.sources import ArraySource

    image, _, _ = masked
    frames = _moving_clip(image, 180)  # 6 s: room for a keyframe on a busy machine
    settings = tiny_settings(tiny_models)
    pipe = live_pipeline(settings, build_stages(settings))
    source = ArraySource(frames, rate=30.0)
    seen: list[Frame] = []

    class Keep:
        def send(self, frame: Frame) -> None:
            seen.append(Frame(frame.image.copy(), frame.index))

        def close(self) -> None:
            pass

    loop = LiveLoop(source, pipe, [Keep()], badge=False, max_seconds=30)
    t0 = time.perf_counter()
    with source:
        stats = loop.run()
    wall = time.perf_counter() - t0
    keyframes = pipe.keyframes
    close_pipeline(pipe)
    assert stats.frames >= 0.8 * len(frames), (stats, wall)
    assert keyframes >= 1
    painted = [f for f in seen if not np.array_equal(f.image, frames[f.index])]
    assert painted and painted[-1].index >= len(frames) - 10


def test_lostface_run_with_the_diffusion_engine(tiny_models, masked, tmp_path):
    """The command line end to end: a clip restored with the diffusion engine, every frame
    written, the mask painted over; the saved configuration names the engine and models."""
    import av

    image, lm, covered = masked
    clip = tmp_path / "masked.mp4"
    frames = [np.ascontiguousarray(cv2.resize(image, (256, 256))) for _ in range(12)]
    with av.open(str(clip), "w") as out:
        stream = out.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 256, 256, "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    settings = tiny_settings(tiny_models)
    overrides = [
        "--set",
        "restore.engine=diffusion",
        "--set",
        f'models.inpaint="{settings.models.inpaint}"',
        "--set",
        f'models.lcm_lora="{settings.models.lcm_lora}"',
        "--set",
        "diffusion.size=256",
    ]
    target = tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "lostface.cli", "run", str(clip), "-o", str(target), "-q"]
    done = subprocess.run(cmd + overrides, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    with av.open(str(target)) as c:
        got = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(got) == len(frames)
    small_cover = cv2.resize(covered.astype(np.uint8), (256, 256)) > 0
    assert np.abs(got[-1].astype(int) - frames[-1])[small_cover].mean() > 10
    saved = (tmp_path / "out.mp4.lostface.toml").read_text()
    assert 'engine = "diffusion"' in saved and str(settings.models.inpaint) in saved


def test_pipeline_restores_a_clip_synchronously(tiny_models, masked):
    """Synchronous keyframes (benchmark mode): every frame after the first keyframe carries
    the painted face, and the painter's per-face latents are dropped when the clip ends."""
    image, _, _ = masked
    frames = _moving_clip(image, 16)
    settings = tiny_settings(tiny_models, "keyframe.max_age=6")
    stages = build_stages(settings)
    pipe = Pipeline(settings, stages, synchronous=True)
    outs = []
    for i, img in enumerate(frames):
        outs += pipe.push(Frame(img.copy(), i))
    outs += pipe.flush()
    assert pipe.keyframes >= 2
    restorer = stages.painter.restorer
    assert restorer._faces  # latents kept per face between its keyframes
    changed = [not np.array_equal(o.frame.image, f) for o, f in zip(outs, frames, strict=True)]
    assert all(changed[4:])
    pipe.reset()
    assert not restorer._faces
    pipe.close()


def test_gpu_check_diffusion_sections_run_on_the_cpu(tmp_path):
    """bench/gpu_check.py's diffusion and engines sections (full-size models on a lent GPU)
    in their CPU smoke mode: the tiny models built, loaded and fused through lostface's code,
    keyframes timed per stage for 1 and 4 faces, SAM, the x4 upscaler and a whole small-face
    keyframe timed, and live loops that paint the masked face while frames flow."""
    pytest.importorskip("mobile_sam")
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "bench" / "gpu_check.py"), "--device", "cpu", "--quick"]
    cmd += ["--iters", "1", "--frames", "45", "--sections", "diffusion,engines,identity"]
    done = subprocess.run(
        cmd + ["--out", str(tmp_path)], capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, done.stderr[-2000:]
    everything = json.loads((tmp_path / "gpu_check.json").read_text())
    assert everything["identity"]["seconds_per_step"] > 0
    engines = everything["engines"]
    for name in ("vit_b", "vit_t"):
        assert engines[f"sam_{name}_ms"] > 0 and engines[f"keyframe_sam_{name}_x4_lcm4_ms"] > 0
    assert engines["sd_x4_32px_ms"] > 0
    assert engines["live_loop_1280x720_sam_vit_t_x4"]["keyframes"] >= 1
    result = everything["diffusion"]
    assert set(result["keyframe"]) == {
        "batch1_first", "batch1_reuse", "batch4_first", "batch4_reuse"
    }  # fmt: skip
    for row in result["keyframe"].values():
        assert set(row["stages_ms_per_call"]) == {"encode", "unet", "decode"}
        assert row["median_ms"] > 0
    live = result["live_loop_1280x720"]
    assert live["frames_out"] + live["dropped"] == 45 and live["keyframes"] >= 1


_CUDA = pytest.mark.skipif(
    not __import__("torch").cuda.is_available(),
    reason="CUDA graphs need a CUDA device (bench/gpu_check.py measures them on one)",
)


@_CUDA
@pytest.mark.parametrize("lora", [True, False])
def test_cuda_graphs_paint_what_the_eager_model_paints(tiny_models, masked, lora):
    """diffusion.cuda_graphs records the UNet and VAE calls once per shape and replays them:
    the painting is the eager one's (fp32: to rounding), for a first keyframe and a reuse."""
    image, lm, _ = masked
    item = _item(image, lm, track=1)
    cuda = ("models.device=cuda", "models.dtype=float32")
    eager = _restorer(tiny_models, *cuda, "diffusion.cuda_graphs=false", lora=lora)
    graphed = _restorer(tiny_models, *cuda, lora=lora)
    for _ in range(2):  # the face's first keyframe, then one that reuses its latents
        a = eager.restore(*item)[0].astype(np.int16)
        b = graphed.restore(*item)[0].astype(np.int16)
        assert np.abs(a - b).max() <= 1
    assert graphed._unet.recorded >= 1 and graphed._unet.replays >= 3
    assert graphed._decode_vae.recorded == 1 and graphed._decode_vae.replays == 2


@_CUDA
def test_a_graphed_call_keeps_each_result_and_records_each_shape_once():
    import torch

    from lostface.generative.graphs import Graphed

    conv = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.SiLU()).cuda()
    fn = Graphed(lambda x, c: conv(x) * c, "test")
    x1, x2 = (torch.randn(1, 4, 16, 16, device="cuda") for _ in range(2))
    c = torch.tensor(2.0, device="cuda")
    with torch.inference_mode():
        y1 = fn(x1, c)
        y2 = fn(x2, c)
        y3 = fn(torch.randn(3, 4, 8, 8, device="cuda"), c)
        torch.testing.assert_close(y1, conv(x1) * 2)  # the first result outlives the second call
        torch.testing.assert_close(y2, conv(x2) * 2)
    assert y3.shape == (3, 8, 8, 8)
    assert fn.recorded == 2 and fn.replays == 3
