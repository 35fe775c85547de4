"""Speed of the full-size engines on a GPU, at random init: YOLOv8 detection and the
diffusion restorer.

No pretrained face weights can be fetched where lostface is developed, so this times the
architectures a user plugs in (`detect.engine=yolov8`, `detect.model=...`) with random
weights: the cost of a forward pass does not depend on the weights' values. For each model
it times lostface's own `YoloV8Detector.detect` (preprocessing, the forward pass, NMS and
the copy back to the CPU: what the frame loop pays), at fp32 and fp16, on 640x360 and
1280x720 frames, at the detector's input sizes 320 and 640. The baseline in the same run is
the embedded CenterFace detector on the same frames on the CPU.

Then the frame loop itself (lostface.pipeline.Pipeline, neutral fill, no reference) is run
on a clip of a moving real face, with the embedded detector and with YOLOv8 on the GPU.
Random weights find random boxes, so that part measures the loop's overhead around the
detector, not restoration quality; faces per frame are reported with it. With --cli,
`lostface run` itself runs on an encoded clip with each detector (a fresh process per run),
and the output's frame count is checked: the whole command works on the device.

The diffusion section builds Stable Diffusion 1.5's inpainting architecture (UNet, VAE, CLIP
text encoder) at random init with a rank-64 LoRA in LCM-LoRA's place, saves it as a diffusers
folder and loads it through lostface's own loading code (the LoRA fused), then times the
diffusion restorer: one keyframe (4 LCM steps at 512 px, a face's first keyframe and a later
one that reuses its latents) for 1 and 4 faces at once, per stage, with the peak GPU memory;
and a live loop of 1280x720 frames at 30 frames/s with a masked face, keyframes painted on the
pipeline's worker thread while frames flow (frames out, dropped frames, latency). Targets on
the GPU: a keyframe under 150 ms, the loop at 30 frames/s with no dropped frame, peak memory
under 8 GB.

    python bench/gpu_check.py [--iters 100] [--out DIR] [--cli] [--sections detector,diffusion]

--device cpu --quick is a smoke test on the CPU (the tiny diffusion model instead of SD 1.5).
Prints tables and writes DIR/gpu_check.json (default bench/results/).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import statistics
import sys
import tempfile
import time
import traceback
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lostface.config import load_settings  # noqa: E402
from lostface.factory import build_detector  # noqa: E402
from lostface.frame import Frame  # noqa: E402

MODELS = [  # (name, yaml the architecture comes from, face-pose variant with 5 keypoints)
    ("yolov8n-face-pose", "yolov8-pose.yaml", True),
    ("yolov8s-face-pose", "yolov8-pose.yaml", True),
    ("yolov8m-face-pose", "yolov8-pose.yaml", True),
    ("yolov8n", "yolov8.yaml", False),
    ("yolov8s", "yolov8.yaml", False),
    ("yolov8m", "yolov8.yaml", False),
    ("yolov8l", "yolov8.yaml", False),
]
SIZES = [(640, 360), (1280, 720)]


def real_face_frame(width: int, height: int, shift: int = 0, scale: float = 0.8) -> np.ndarray:
    """A real photo (scikit-image's astronaut, `scale` of the frame's height) on a grey frame,
    moved right by `shift` px."""
    from skimage import data

    face = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    side = int(height * scale)
    face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    frame = np.full((height, width, 3), 96, np.uint8)
    x = _shift(width, height, shift, scale)
    y = (height - side) // 2
    frame[y : y + side, x : x + side] = face
    return frame


def build_weights(folder: Path) -> dict[str, Path]:
    """Random-init .pt files, saved by ultralytics as a user's trained model would be."""
    import torch
    import yaml
    from ultralytics import YOLO
    from ultralytics.utils.checks import check_yaml

    torch.manual_seed(0)
    paths = {}
    for name, base, face_pose in MODELS:
        cfg = yaml.safe_load(Path(check_yaml(base)).read_text())
        if face_pose:
            cfg.update(kpt_shape=[5, 3], nc=1)
        spec = folder / f"{name}.yaml"  # the scale letter in the name picks the model size
        spec.write_text(yaml.safe_dump(cfg))
        paths[name] = folder / f"{name}.pt"
        YOLO(str(spec)).save(paths[name])
    return paths


def yolo_overrides(path: Path, device: str, half: bool, input_size: int) -> list[str]:
    """The --set items that select the YOLOv8 engine with these weights, device and precision."""
    return [
        "detect.engine=yolov8",
        f'detect.model="{path}"',
        f'detect.device="{device}"',
        f"detect.half={str(half).lower()}",
        f"detect.input_size={input_size}",
    ]


def time_calls(fn, frames: list[np.ndarray], warmup: int, iters: int) -> dict:
    for i in range(warmup):
        fn(frames[i % len(frames)])
    times, faces = [], []
    for i in range(iters):
        t0 = time.perf_counter()
        det = fn(frames[i % len(frames)])
        times.append(time.perf_counter() - t0)
        faces.append(len(det))
    times.sort()
    med = statistics.median(times)
    return {
        "median_ms": round(med * 1e3, 3),
        "p90_ms": round(times[int(0.9 * (len(times) - 1))] * 1e3, 3),
        "calls_per_s": round(1.0 / med, 1),
        "faces_per_call": round(float(np.mean(faces)), 2),
    }


def detector_table(weights: dict[str, Path], device: str, warmup: int, iters: int) -> list[dict]:
    import torch

    from lostface.tracking.detectors import CenterFaceDetector, YoloV8Detector

    rows = []
    for w, h in SIZES:
        frames = [real_face_frame(w, h, s) for s in range(0, 40, 4)]
        cf = CenterFaceDetector(load_settings().detect)
        rows.append(
            {"model": "centerface (embedded, CPU, 1 thread)", "frame": f"{w}x{h}", "input": 320}
            | {"precision": "fp32", "device": "cpu"}
            | time_calls(cf.detect, frames, warmup, iters)
        )
        print(_row_text(rows[-1]), flush=True)
        for name, path in weights.items():
            for imgsz in (320, 640):
                for half in (False, True) if device.startswith("cuda") else (False,):
                    overrides = yolo_overrides(path, device, half, imgsz)
                    settings = load_settings(overrides=overrides).detect
                    base = 0
                    if device.startswith("cuda"):
                        gc.collect()  # the previous model's tensors must not count here
                        torch.cuda.empty_cache()
                        base = torch.cuda.memory_allocated()
                        torch.cuda.reset_peak_memory_stats()
                    det = YoloV8Detector(settings)
                    row = {"model": name, "frame": f"{w}x{h}", "input": imgsz}
                    row |= {"precision": "fp16" if half else "fp32", "device": device}
                    row |= time_calls(det.detect, frames, warmup, iters)
                    if device.startswith("cuda"):
                        peak = torch.cuda.max_memory_allocated() - base
                        row["gpu_peak_mb"] = round(peak / 2**20, 1)
                    rows.append(row)
                    print(_row_text(row), flush=True)
                    del det
    return rows


def loop_fps(overrides: list[str], frames: list[np.ndarray], runs: int) -> dict:
    """Frames per second of Pipeline.push over the clip (medians of `runs`), one pipeline."""
    from lostface.factory import build_stages
    from lostface.pipeline import Pipeline

    settings = load_settings(overrides=overrides)
    stages = build_stages(settings)
    fps, faces = [], []
    for _ in range(runs):
        pipe = Pipeline(settings, stages)
        n = 0
        t0 = time.perf_counter()
        for i, image in enumerate(frames):
            outs = pipe.push(Frame(image=image, index=i, pts=i, time_base=None))
            n += len(outs)
            faces.extend(len(o.faces) for o in outs)
        outs = pipe.flush()
        n += len(outs)
        faces.extend(len(o.faces) for o in outs)
        fps.append(n / (time.perf_counter() - t0))
        pipe.close()
    return {
        "loop_fps": round(statistics.median(fps), 1),
        "runs": [round(f, 1) for f in fps],
        "faces_per_frame": round(float(np.mean(faces)), 2) if faces else 0.0,
    }


def cli_runs(weights: dict[str, Path], folder: Path, device: str, frames: int, runs: int) -> dict:
    """`lostface run` end to end (a fresh process each: decode, pipeline, encode) on a
    1280x720 clip of a moving real face, with the embedded detector and with YOLOv8 on the
    device; wall time per run, medians of `runs`, and the output's frame count checked."""
    import subprocess
    from fractions import Fraction

    from lostface.config import VideoSettings
    from lostface.stream.video import VideoInfo, VideoWriter, read_frames

    clip = folder / "clip.mp4"
    info = VideoInfo(1280, 720, Fraction(30), Fraction(1, 30), frames, False)
    writer = VideoWriter(clip, info, VideoSettings(crf=18), None)
    for i in range(frames):
        writer.write(Frame(image=real_face_frame(1280, 720, 2 * i), index=i, pts=i))
    writer.commit()
    variants: dict[str, list[str]] = {"centerface_cpu": []}
    for half in (False, True) if device.startswith("cuda") else (False,):
        variants[f"yolov8n-face-pose_{device}_{'fp16' if half else 'fp32'}"] = yolo_overrides(
            weights["yolov8n-face-pose"], device, half, 640
        )
    out: dict[str, dict] = {}
    for name, sets in variants.items():
        seconds = []
        for r in range(runs):
            target = folder / f"out_{name}_{r}.mp4"
            cmd = [sys.executable, "-m", "lostface.cli", "run", str(clip), "-o", str(target)]
            for item in [*sets, "output.progress=false"]:
                cmd += ["--set", item]
            t0 = time.perf_counter()
            done = subprocess.run(cmd, capture_output=True, text=True)
            seconds.append(time.perf_counter() - t0)
            if done.returncode != 0:
                raise SystemExit(f"lostface run failed for {name}:\n{done.stderr[-2000:]}")
            n_out = len(read_frames(target))
            if n_out != frames:
                raise SystemExit(f"lostface run for {name} wrote {n_out} frames of {frames}")
        med = statistics.median(seconds)
        out[name] = {
            "seconds_median": round(med, 2),
            "seconds": [round(x, 2) for x in seconds],
            "frames_per_s_whole_process": round(frames / med, 1),
            "frames_out": frames,
        }
        print(f"  lostface run {name:34s} {med:6.2f} s  {frames / med:6.1f} frames/s", flush=True)
    return out


def masked_clip(width: int, height: int, frames: int, scale: float = 0.8) -> list[np.ndarray]:
    """real_face_frame moving right, with a cloth mask drawn on the face (found once by the
    embedded detector and moved with it)."""
    from lostface.synthetic import draw_mask

    first = real_face_frame(width, height, 0, scale)
    det = build_detector(load_settings(overrides=["detect.input_size=640"])).detect(first)
    lm = det.landmarks[int(np.argmax(det.scores))]
    out = []
    for i in range(frames):
        image = real_face_frame(width, height, 2 * i, scale)
        dx = _shift(width, height, 2 * i, scale) - _shift(width, height, 0, scale)
        out.append(
            draw_mask(
                image, lm + np.float32([dx, 0]), kind="cloth", rng=np.random.default_rng(0)
            ).image
        )
    return out


def _shift(width: int, height: int, shift: int, scale: float = 0.8) -> int:
    side = int(height * scale)
    return (width - side) // 4 + shift % max(1, width - side - (width - side) // 4)


def diffusion_check(
    folder: Path,
    device: str,
    quick: bool,
    iters: int,
    frames: int,
    profile: bool = False,
    candidates: bool = False,
) -> dict:
    """The diffusion restorer at SD 1.5 size (tiny with quick): keyframe times per stage for 1
    and 4 faces, peak GPU memory, and a live loop with keyframes in flight."""
    import torch

    from lostface.factory import build_stages
    from lostface.generative.loading import load_inpaint
    from lostface.generative.random_init import save_inpaint_model, save_lora
    from lostface.registry import build_painter
    from lostface.restore.painter import PaintJob
    from lostface.stream.live import LiveLoop, close_pipeline, live_pipeline
    from lostface.stream.sources import ArraySource

    cuda = device.startswith("cuda")
    size = "tiny" if quick else "sd15"
    t0 = time.perf_counter()
    model_dir = save_inpaint_model(folder / "inpaint", size=size)
    lora_dir = save_lora(folder / "lora", model_dir, rank=4 if quick else 64)
    build_s = time.perf_counter() - t0
    overrides = [
        "restore.engine=diffusion",
        f'models.inpaint="{model_dir}"',
        f'models.lcm_lora="{lora_dir}"',
        f"models.device={device}",
        f"models.dtype={'float16' if cuda else 'float32'}",
        f"diffusion.size={256 if quick else 512}",
        f"detect.device={device}",
    ]
    settings = load_settings(overrides=overrides)
    base = 0
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    model = load_inpaint(settings)
    load_s = time.perf_counter() - t0
    weights_mb = (torch.cuda.memory_allocated() - base) / 2**20 if cuda else None
    image = masked_clip(1280, 720, 1)[0]
    det = build_stages(settings).detector.detect(image)
    lm = det.landmarks[int(np.argmax(det.scores))]
    out: dict = {
        "model": size,
        "size_px": settings.diffusion.size,
        "steps": settings.diffusion.steps,
        "dtype": str(model.dtype).replace("torch.", ""),
        "build_random_model_s": round(build_s, 1),
        "load_and_fuse_s": round(load_s, 2),
        "weights_gpu_mb": round(weights_mb, 1) if weights_mb is not None else None,
    }
    # the baseline (CUDA graphs off) first, then the default, in the same run
    variants = ("eager", "cuda_graphs") if cuda else ("eager",)
    paintings = {}

    def measure(name: str, painter) -> None:
        """Keyframe times of this painter, and its painting of a face's first keyframe."""
        out[f"keyframe_{name}"] = keyframe_times(painter, image, lm, iters, cuda)
        painter.restorer.reset()
        painted = painter.paint(PaintJob.from_frame(0, 0, image, lm))  # type: ignore[arg-type]
        assert painted.patch is not None
        paintings[name] = painted.patch.image.astype(np.int16)

    for variant in variants:
        graphs = str(variant == "cuda_graphs").lower()
        painter = build_painter(
            load_settings(overrides=[*overrides, f"diffusion.cuda_graphs={graphs}"])
        )
        print(f"  {variant}:")
        measure(variant, painter)
    out["keyframe"] = out[f"keyframe_{variants[-1]}"]
    if cuda and profile:
        out["cpu_profile_top"] = profile_keyframe(painter, image, lm)
    if cuda and candidates:
        # candidates, not settings: cuDNN's autotuner (torch.backends.cudnn.benchmark), then
        # the UNet and VAE in channels-last memory format as well, each on CUDA graphs
        def autotune() -> None:
            torch.backends.cudnn.benchmark = True

        def channels_last(fmt=torch.channels_last, m=model) -> None:
            for module in (m.unet, m.vae):
                module.to(memory_format=fmt)

        for name, setup in (("cudnn_benchmark", autotune), ("channels_last", channels_last)):
            setup()
            print(f"  cuda_graphs, {name}{' (and cudnn_benchmark)' * (name != 'cudnn_benchmark')}:")
            measure(name, build_painter(settings))
        torch.backends.cudnn.benchmark = False  # the live loop below runs on the defaults
        channels_last(torch.contiguous_format)
    for variant in paintings:
        if variant != "eager":
            diff = np.abs(paintings["eager"] - paintings[variant])
            px = {"max": int(diff.max()), "mean": round(float(diff.mean()), 3)}
            out[f"{variant}_vs_eager_px"] = px
            print(f"  {variant} vs eager, the same keyframe: {px} grey levels")
    if cuda:
        out["peak_gpu_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
    clip = masked_clip(1280, 720, frames)
    stages = build_stages(settings)
    pipe = live_pipeline(settings, stages)
    source = ArraySource(clip, rate=30.0)
    loop = LiveLoop(source, pipe, [], badge=True, max_seconds=frames / 30.0 + 30)
    with source:
        stats = loop.run()
    out["live_loop_1280x720"] = {
        "frames_in": len(clip),
        "frames_out": stats.frames,
        "dropped": stats.dropped,
        "fps": round(stats.fps, 1),
        "latency_p50_ms": stats.latency.get("p50_ms"),
        "latency_p95_ms": stats.latency.get("p95_ms"),
        "keyframes": pipe.keyframes,
        "keyframe_p50_ms": round(pipe.timings.summary().get("restore", {}).get("p50_ms", 0), 1),
    }
    close_pipeline(pipe)
    live = out["live_loop_1280x720"]
    print(f"  live loop 1280x720 at 30 fps: {live}")
    first = out["keyframe"]["batch1_first"]["median_ms"]
    out["targets"] = {
        "keyframe_under_150_ms": first < 150,
        "loop_30_fps_no_drops": live["dropped"] == 0 and live["fps"] >= 29.0,
        "peak_gpu_under_8_gb": out.get("peak_gpu_mb", float("inf")) < 8192,
    }
    print(f"  targets: {out['targets']}")
    del model
    return out


def keyframe_times(painter, image: np.ndarray, lm: np.ndarray, iters: int, cuda: bool) -> dict:
    """Median time of painter.paint_many for 1 and 4 faces, a face's first keyframe (the
    restorer reset: guide init) and a later one (latents reused), with the time per stage and
    the rest (the CPU's part: segmenting, aligning, compositing)."""
    import torch

    from lostface.restore.painter import PaintJob

    restorer = painter.restorer
    rows: dict = {}
    for batch in (1, 4):
        jobs = [PaintJob.from_frame(t, 0, image, lm) for t in range(batch)]
        for kind in ("first", "reuse"):

            def call(jobs=jobs, kind=kind) -> float:
                if kind == "first":
                    restorer.reset()  # every call a face's first keyframe (guide init)
                t = time.perf_counter()
                painted = painter.paint_many(jobs)
                if cuda:
                    torch.cuda.synchronize()
                assert all(p.patch is not None for p in painted), "the masked face was not painted"
                return time.perf_counter() - t

            for _ in range(2):  # warm-up (and, with CUDA graphs, their recording)
                call()
            # timed calls as the pipeline makes them (no synchronisation between stages) ...
            median = statistics.median(call() for _ in range(iters)) * 1e3
            # ... then as many with each stage synchronised and timed (slower: the CPU cannot
            # queue the next stage while the GPU runs one)
            restorer.profile = {}
            profiled = statistics.median(call() for _ in range(iters)) * 1e3
            stages = {k: round(sum(v) / iters * 1e3, 2) for k, v in restorer.profile.items()}
            restorer.profile = None
            row = {
                "median_ms": round(median, 1),
                "per_face_ms": round(median / batch, 1),
                "profiled_median_ms": round(profiled, 1),
                "stages_ms_per_call": stages,
                "rest_ms": round(profiled - sum(stages.values()), 1),
            }
            rows[f"batch{batch}_{kind}"] = row
            print(
                f"    {batch} face(s), {kind:5s}: {row['median_ms']:8.1f} ms "
                f"(stages timed: {row['profiled_median_ms']:.1f} ms, {stages})"
            )
    return rows


def profile_keyframe(painter, image: np.ndarray, lm: np.ndarray, calls: int = 10) -> list[str]:
    """The functions that take the most time (own time, cProfile) in a face's later keyframes:
    where a keyframe's time goes besides the model."""
    import cProfile
    import io
    import pstats

    from lostface.restore.painter import PaintJob

    job = PaintJob.from_frame(0, 0, image, lm)
    painter.paint(job)
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        painter.paint(job)
    prof.disable()
    text = io.StringIO()
    pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(25)
    lines = [ln for ln in text.getvalue().splitlines() if ln.strip()]
    print("\n".join(lines[-27:]))
    return lines[-27:]


def engines_check(folder: Path, device: str, quick: bool, iters: int, frames: int) -> dict:
    """Segment Anything (vit_b and MobileSAM's vit_t) on a keyframe's face crop, the SD x4
    upscaler on a 128-pixel face, and a whole keyframe of a small face (SAM + x4 + 4 LCM steps
    at 512) with each SAM, then the live loop with that keyframe in flight. At random init
    (tiny models with quick)."""
    import torch

    from lostface.factory import build_stages
    from lostface.generative.random_init import (
        save_inpaint_model,
        save_lora,
        save_sam,
        save_upscale_model,
    )
    from lostface.registry import build_painter
    from lostface.restore.painter import PaintJob
    from lostface.stream.live import LiveLoop, close_pipeline, live_pipeline
    from lostface.stream.sources import ArraySource

    cuda = device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    t0 = time.perf_counter()
    sams = {
        n: save_sam(folder / f"sam_{n}.pth", "tiny" if quick else n) for n in ("vit_b", "vit_t")
    }
    x4 = save_upscale_model(folder / "x4", "tiny" if quick else "x4")
    inpaint = folder / "inpaint"
    if not (inpaint / "model_index.json").is_file():
        save_inpaint_model(inpaint, size="tiny" if quick else "sd15")
    lora = folder / "lora"
    if not lora.is_dir():
        save_lora(lora, inpaint, rank=4 if quick else 64)
    out: dict = {"build_random_models_s": round(time.perf_counter() - t0, 1)}
    base = [
        f"models.device={device}",
        f"models.dtype={'float16' if cuda else 'float32'}",
        f'models.upscale="{x4}"',
        f'models.inpaint="{inpaint}"',
        f'models.lcm_lora="{lora}"',
        f"diffusion.size={256 if quick else 512}",
        "mask.sam_min_iou=0",  # random weights: take SAM's answer, so its cost is counted
        "mask.sam_min_agreement=0",
        # a random x4 upscaler returns noise, which no segmenter judges covered: judge every
        # face covered, so the whole keyframe runs
        "mask.presence_threshold=0",
        "detect.input_size=640",  # a 50-pixel face in a 720p frame
    ]
    small_scale = 0.15  # the photo 108 px tall in a 720p frame: a face about 50 px wide
    small = masked_clip(1280, 720, 1, small_scale)[0]
    det = build_detector(load_settings(overrides=base)).detect(small)
    lm = det.landmarks[int(np.argmax(det.scores))]
    job = PaintJob.from_frame(1, 0, small, lm)
    assert job is not None

    def timed(fn, n: int) -> float:
        fn()  # warm-up
        times = []
        for _ in range(n):
            sync()
            t = time.perf_counter()
            fn()
            sync()
            times.append(time.perf_counter() - t)
        return round(statistics.median(times) * 1e3, 1)

    big = masked_clip(1280, 720, 1)[0]
    face = np.ascontiguousarray(cv2.resize(big, (256, 288)))  # a crop's size
    prompt = (
        np.array([40.0, 120.0, 216.0, 270.0]),
        np.array([[128.0, 200.0], [100.0, 100.0]]),
        np.array([1, 0]),
    )
    for name, ckpt in sams.items():
        sam = [*base, "mask.engine=sam", f'models.sam="{ckpt}"']
        model = build_painter(load_settings(overrides=sam)).segmenter.model  # type: ignore[attr-defined]
        out[f"sam_{name}_ms"] = timed(lambda m=model: m.masks(face, *prompt), iters)
        full = build_painter(
            load_settings(overrides=[*sam, "upscale.engine=sd-x4", "restore.engine=diffusion"])
        )

        def keyframe(p=full) -> None:
            p.reset()
            painted = p.paint(job)
            assert painted.covered and "upscale" in painted.seconds

        whole = out[f"keyframe_sam_{name}_x4_lcm4_ms"] = timed(keyframe, iters)
        print(f"  SAM {name}: {out[f'sam_{name}_ms']} ms; whole keyframe {whole} ms")
    up = build_painter(load_settings(overrides=[*base, "upscale.engine=sd-x4"])).upscaler
    side = 32 if quick else 128
    face_small = np.ascontiguousarray(cv2.resize(big[100:600, 400:880], (side, side)))
    out[f"sd_x4_{side}px_ms"] = timed(lambda: up.upscale(face_small, 4), iters)
    print(f"  SD x4 upscaler, {side} -> {4 * side} px: {out[f'sd_x4_{side}px_ms']} ms")
    settings = load_settings(
        overrides=[
            *base,
            "mask.engine=sam",
            f'models.sam="{sams["vit_t"]}"',
            "upscale.engine=sd-x4",
            "restore.engine=diffusion",
        ]
    )
    pipe = live_pipeline(settings, build_stages(settings))
    # The clip plays on until `frames` frames are out and a keyframe was asked for: on a busy
    # CPU the background detector may not confirm the small face within one play.
    source = ArraySource(masked_clip(1280, 720, frames, small_scale), rate=30.0, loops=100)
    loop = LiveLoop(source, pipe, [], badge=True, max_seconds=frames / 30.0 + 60)

    def enough(_frame, _latency, loop=loop, pipe=pipe) -> None:
        if loop.stats.frames >= frames and pipe.keyframes >= 1:
            loop.stop()

    loop.on_frame = enough
    with source:
        stats = loop.run()
    pipe.worker.wait_idle()  # a keyframe still painting finishes before the models go
    live = out["live_loop_1280x720_sam_vit_t_x4"] = {
        "frames_out": stats.frames,
        "dropped": stats.dropped,
        "fps": round(stats.fps, 1),
        "keyframes": pipe.keyframes,
    }
    close_pipeline(pipe)
    print(f"  live loop with SAM vit_t + x4 + LCM keyframes: {live}")
    out["targets"] = {
        "keyframe_sam_vit_b_under_300_ms": out["keyframe_sam_vit_b_x4_lcm4_ms"] < 300,
        "keyframe_mobilesam_under_200_ms": out["keyframe_sam_vit_t_x4_lcm4_ms"] < 200,
        "loop_30_fps": stats.dropped == 0 and stats.fps >= 29.0,
    }
    print(f"  targets: {out['targets']}")
    return out


def identity_check(folder: Path, device: str, quick: bool, steps: int) -> dict:
    """DreamBooth LoRA training of an identity on the SD 1.5 inpainting UNet at 512 (fp16
    weights, float32 LoRA, autocast) through `lostface identity train`'s code: seconds per step,
    a 400-step run at that pace, and the peak GPU memory. Three photos of one face (the
    astronaut, moved and scaled) stand in for a user's photos."""
    import torch

    from lostface.generative.identity import train_identity
    from lostface.generative.random_init import save_inpaint_model

    cuda = device.startswith("cuda")
    inpaint = folder / "inpaint"
    if not (inpaint / "model_index.json").is_file():
        save_inpaint_model(inpaint, size="tiny" if quick else "sd15")
    photos = folder / "photos"
    photos.mkdir(exist_ok=True)
    for i, (scale, shift) in enumerate([(0.8, 0), (0.7, 60), (0.9, 120)]):
        cv2.imwrite(str(photos / f"{i}.png"), real_face_frame(1280, 720, shift, scale))
    size = 256 if quick else 512
    settings = load_settings(
        overrides=[
            f'models.inpaint="{inpaint}"',
            'models.lcm_lora=""',
            f"models.device={device}",
            f"models.dtype={'float16' if cuda else 'float32'}",
            f'identity.dir="{folder / "identities"}"',
            f"identity.steps={steps}",
            f"identity.size={size}",
            f"diffusion.size={size}",
        ]
    )
    base = 0
    if cuda:
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    ident = train_identity(settings, [photos], "bench", progress=False)
    per_step = ident.meta["seconds"] / steps
    out = {
        "size_px": size,
        "steps": steps,
        "seconds_per_step": round(per_step, 3),
        "seconds_400_steps": round(400 * per_step, 1),
        "loss_before": round(ident.meta["loss_before"], 4),
        "loss_after": round(ident.meta["loss_after"], 4),
    }
    if cuda:
        out["peak_gpu_mb"] = round((torch.cuda.max_memory_allocated() - base) / 2**20, 1)
        out["target_under_24_gb"] = out["peak_gpu_mb"] < 24 * 1024
    print(f"  identity training: {out}")
    return out


def _row_text(row: dict) -> str:
    mem = f"  {row['gpu_peak_mb']:7.1f} MB" if "gpu_peak_mb" in row else ""
    return (
        f"{row['model']:38s} {row['frame']:>9s} {row['input']:4d} {row['precision']:4s} "
        f"{row['median_ms']:8.2f} ms  p90 {row['p90_ms']:8.2f}  {row['calls_per_s']:8.1f}/s  "
        f"faces {row['faces_per_call']:5.1f}{mem}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iters", type=int, default=100, help="timed calls per configuration")
    ap.add_argument("--frames", type=int, default=300, help="frames in the loop clip")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu for a smoke test")
    ap.add_argument("--quick", action="store_true", help="the n-size models only (smoke test)")
    ap.add_argument(
        "--cli", action="store_true", help="also time `lostface run` end to end (needs PyAV)"
    )
    ap.add_argument(
        "--profile", action="store_true", help="diffusion: print where a keyframe's time goes"
    )
    ap.add_argument(
        "--candidates",
        action="store_true",
        help="diffusion: also time cuDNN's autotuner and channels-last memory format",
    )
    ap.add_argument(
        "--sections",
        default="detector,diffusion,engines,identity",
        help="comma-separated: detector (YOLOv8 and the frame loop), diffusion (the restorer), "
        "engines (Segment Anything and the SD x4 upscaler), identity (DreamBooth LoRA training)",
    )
    args = ap.parse_args()
    sections = set(args.sections.split(","))
    logging.basicConfig(level=logging.ERROR)
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit(
            "No CUDA device is visible to torch; run this on a GPU machine or add --device cpu."
        )
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "cpu_cores": __import__("os").cpu_count(),
    }
    print(json.dumps(env))
    result: dict = {"env": env}
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "gpu_check.json"

    def section(name: str, title: str, run) -> None:
        """One section; its failure is printed and recorded, and the next one still runs (a
        device lease is short). The JSON is written after each section."""
        print(f"\n{title}:")
        try:
            result[name] = run()
        except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
            traceback.print_exc()
            result[name] = {"error": f"{type(exc).__name__}: {exc}"}
        path.write_text(json.dumps(result, indent=1))

    with tempfile.TemporaryDirectory() as tmp:
        dev, quick, folder = args.device, args.quick, Path(tmp)
        if "diffusion" in sections:
            section(
                "diffusion",
                "diffusion restorer (random init)",
                lambda: diffusion_check(
                    folder,
                    dev,
                    quick,
                    min(args.iters, 20),
                    args.frames,
                    args.profile,
                    args.candidates,
                ),
            )
        if "identity" in sections:
            section(
                "identity",
                "identity training (random init)",
                lambda: identity_check(folder, dev, quick, 5 if quick else 30),
            )
        if "engines" in sections:
            section(
                "engines",
                "Segment Anything and the SD x4 upscaler (random init)",
                lambda: engines_check(folder, dev, quick, min(args.iters, 10), args.frames),
            )
        if "detector" in sections:
            result.update(detector_section(args, folder))
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")


def detector_section(args: argparse.Namespace, tmp: Path) -> dict:
    """YOLOv8 detector timings, the frame loop, and (--cli) `lostface run` end to end."""
    if args.quick:
        MODELS[:] = [m for m in MODELS if m[0].startswith("yolov8n")]
    weights = build_weights(tmp)
    rows = detector_table(weights, args.device, warmup=10, iters=args.iters)
    w, h = 1280, 720
    clip = [real_face_frame(w, h, 2 * i) for i in range(args.frames)]
    loops = {
        "centerface_cpu": loop_fps([], clip, 3),
    }
    for name in [n for n in ("yolov8n-face-pose", "yolov8m-face-pose") if n in weights]:
        for half in (False, True) if args.device.startswith("cuda") else (False,):
            key = f"{name}_{args.device}_{'fp16' if half else 'fp32'}"
            overrides = yolo_overrides(weights[name], args.device, half, 640)
            loops[key] = loop_fps(overrides, clip, 3)
    runs_cli = None
    if args.cli:
        print("\nlostface run, 1280x720 clip, whole process (medians of 3):")
        runs_cli = cli_runs(weights, tmp, args.device, args.frames, 3)
    print("\nframe loop, 1280x720, neutral fill, detect_every=4 (medians of 3):")
    for key, value in loops.items():
        faces = value["faces_per_frame"]
        print(f"  {key:34s} {value['loop_fps']:7.1f} frames/s  faces/frame {faces}")
    result: dict = {"detector": rows, "frame_loop_1280x720": loops}
    if runs_cli is not None:
        result["lostface_run_1280x720"] = runs_cli
    return result


if __name__ == "__main__":
    main()
