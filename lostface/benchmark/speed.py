"""Speed suite: per-stage latency, end-to-end frames/s and peak memory of the keyframe
pipeline, each compared in the same run with a plain decode + encode of the same clip and
with a naive pipeline that detects, segments and restores every frame (restore_image).

Each variant runs in a fresh process (spawned), so its peak resident memory is its own.
Decode and encode run on their own threads as in `lostface run`; they are timed by thin
subclasses of VideoReader / VideoWriter.
"""

from __future__ import annotations

import logging
import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from lostface.benchmark.common import Context, latency, metric, png_bytes, pyplot
from lostface.config import Settings
from lostface.frame import Frame
from lostface.stream.video import VideoReader, VideoWriter

log = logging.getLogger(__name__)

VARIANTS = ("plain", "keyframe", "naive")


class TimedReader(VideoReader):
    """VideoReader that records the wall time of decoding each frame."""

    def __init__(self, path: Path, limit: int) -> None:
        super().__init__(path)
        self.limit = limit
        self.seconds: list[float] = []

    def items(self):  # type: ignore[override]
        it = super().items()
        while len(self.seconds) < self.limit:
            t0 = time.perf_counter()
            try:
                item = next(it)
            except StopIteration:
                return
            if isinstance(item, Frame):
                self.seconds.append(time.perf_counter() - t0)
                yield item


class TimedWriter(VideoWriter):
    """VideoWriter that records the wall time of encoding each frame."""

    seconds: list[float]

    def write(self, frame: Frame) -> None:
        t0 = time.perf_counter()
        super().write(frame)
        self.__dict__.setdefault("seconds", []).append(time.perf_counter() - t0)


def peak_rss_mb() -> float:
    """This process's peak resident memory. VmHWM belongs to the process image, so a spawned
    child does not inherit its parent's peak (ru_maxrss survives exec on Linux)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_variant(
    variant: str, clip: Path, reference: Path, settings: Settings, frames: int, out: Path
) -> dict[str, Any]:
    """One timed run (in a child process): decode -> [pipeline] -> encode."""
    from lostface.factory import build_stages
    from lostface.pipeline import Output, Pipeline
    from lostface.restore_image import restore_image
    from lostface.stream.video import ThreadedReader, ThreadedWriter

    t_build = time.perf_counter()
    stages = None if variant == "plain" else build_stages(settings, [reference])
    pipe = Pipeline(settings, stages) if variant == "keyframe" and stages else None
    build_s = time.perf_counter() - t_build
    reader = TimedReader(clip, frames)
    writer = TimedWriter(out, reader.info, settings.video, None)
    twriter = ThreadedWriter(writer, settings.video.queue_size)
    per_frame: list[float] = []
    keyframes: list[int] = []
    t0 = time.perf_counter()
    treader = ThreadedReader(reader, settings.video.queue_size)
    n = 0
    try:
        for item in treader:
            if not isinstance(item, Frame):
                continue
            t1 = time.perf_counter()
            outs = [Output(item, [])]  # plain: the frame passes through
            if pipe is not None:
                outs = pipe.push(item)
            elif stages is not None:
                item.image = restore_image(item.image, stages, settings, afresh=False).image
            per_frame.append(time.perf_counter() - t1)
            for o in outs:
                keyframes.extend(o.frame.index for f in o.faces if f.keyframe)
                twriter.put(o.frame)
            n += 1
        if pipe is not None:
            for o in pipe.flush():
                keyframes.extend(o.frame.index for f in o.faces if f.keyframe)
                twriter.put(o.frame)
        twriter.commit()
    finally:
        treader.close()
        reader.close()
        if pipe is not None:
            pipe.close()
    wall = time.perf_counter() - t0
    return {
        "variant": variant,
        "frames": n,
        "wall_s": wall,
        "fps": n / wall if wall > 0 else 0.0,
        "build_s": build_s,
        "peak_rss_mb": peak_rss_mb(),
        "decode": latency(reader.seconds),
        "encode": latency(writer.__dict__.get("seconds", [])),
        "loop": latency(per_frame),
        "per_frame_ms": [round(1000 * s, 3) for s in per_frame],
        "keyframes": sorted(set(keyframes)),
        "stages": pipe.timings.summary() if pipe is not None else {},
        "keyframe_jobs": pipe.keyframes if pipe is not None else 0,
        "dropped_jobs": pipe.worker.dropped if pipe is not None else 0,
    }


def run_speed(ctx: Context, clip: Path) -> dict:
    from lostface.runner import progress_bar

    reference = ctx.data / "identity" / "stage_clip_reference.png"
    n = ctx.scale.speed_frames
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    spawn = get_context("spawn")
    bar = progress_bar(
        ctx.scale.speed_runs * len(VARIANTS), ctx.settings, "bench: speed, whole runs", unit="run"
    )
    for r in range(ctx.scale.speed_runs):
        for v in VARIANTS:  # interleaved: this machine's load drifts
            with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                out = ctx.work / f"speed_{v}.mp4"
                res = pool.submit(run_variant, v, clip, reference, ctx.settings, n, out).result()
            log.info("speed run %d %s: %.1f frames/s", r, v, res["fps"])
            runs[v].append(res)
            bar.update(1)
    bar.close()
    best = {v: max(rs, key=lambda x: x["fps"]) for v, rs in runs.items()}
    fps = {v: float(np.median([x["fps"] for x in rs])) for v, rs in runs.items()}
    key, plain, naive = best["keyframe"], best["plain"], best["naive"]
    st = key["stages"]
    stage_rows = {
        "decode": key["decode"],
        "detect": st.get("detect"),
        "track": st.get("track"),
        "keyframe restoration (segment)": st.get("segment"),
        "keyframe restoration (restore)": st.get("restore"),
        "composite": st.get("composite"),
        "frame loop (push)": key["loop"],
        "encode": key["encode"],
    }
    stage_rows = {k: v for k, v in stage_rows.items() if v}
    speedup = fps["keyframe"] / fps["naive"] if fps["naive"] else None
    metrics = [
        metric(
            "end-to-end frames/s, keyframe pipeline",
            fps["keyframe"],
            fps["plain"],
            "plain decode + encode",
            "higher",
            "frames/s",
        ),
        metric(
            "end-to-end frames/s, keyframe pipeline",
            fps["keyframe"],
            fps["naive"],
            "naive (restore every frame)",
            "higher",
            "frames/s",
            note=f"target >= 5x: {'pass' if speedup and speedup >= 5 else 'FAIL'}",
        ),
        metric(
            "peak memory, keyframe pipeline",
            key["peak_rss_mb"],
            plain["peak_rss_mb"],
            "plain decode + encode",
            "lower",
            "MB",
        ),
        metric(
            "peak memory, keyframe pipeline",
            key["peak_rss_mb"],
            naive["peak_rss_mb"],
            "naive (restore every frame)",
            "lower",
            "MB",
        ),
        metric(
            "frame-loop latency p95",
            key["loop"]["p95_ms"],
            naive["loop"]["p95_ms"],
            "naive (restore every frame)",
            "lower",
            "ms",
        ),
        metric(
            "decode latency p50",
            key["decode"]["p50_ms"],
            plain["decode"]["p50_ms"],
            "plain decode + encode",
            "lower",
            "ms",
        ),
        metric(
            "encode latency p50",
            key["encode"]["p50_ms"],
            plain["encode"]["p50_ms"],
            "plain decode + encode",
            "lower",
            "ms",
        ),
    ]
    _figures(ctx, key, naive, stage_rows, fps)
    slim = {v: [{k: x[k] for k in x if k != "per_frame_ms"} for x in rs] for v, rs in runs.items()}
    return {
        "frames": n,
        "runs_per_variant": ctx.scale.speed_runs,
        "fps_median": fps,
        "speedup_vs_naive": speedup,
        "speedup_target_5x_pass": bool(speedup and speedup >= 5),
        "stages": stage_rows,
        "runs": slim,
        "timeline": {
            "keyframe_ms": key["per_frame_ms"],
            "naive_ms": naive["per_frame_ms"],
            "keyframes": key["keyframes"],
        },
        "metrics": metrics,
    }


def _figures(ctx: Context, key: dict, naive: dict, stages: dict, fps: dict) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(11, 3.4))
    ax.plot(naive["per_frame_ms"], color="C3", lw=0.8, label="naive: restore every frame")
    ax.plot(key["per_frame_ms"], color="C0", lw=0.8, label="keyframe pipeline: push()")
    for i, k in enumerate(key["keyframes"]):
        ax.axvline(k, color="C2", lw=0.6, alpha=0.6, label="keyframe" if i == 0 else None)
    ax.set_yscale("log")
    ax.set_xlabel("frame")
    ax.set_ylabel("frame-loop ms (log)")
    ax.set_title("per-frame latency of the frame loop, keyframes marked")
    ax.legend(fontsize=8)
    ctx.figures["timeline"] = png_bytes(fig)

    fig, axes = plt.subplots(1, 2, figsize=(12, 3.4), gridspec_kw={"width_ratios": [2, 1]})
    names = list(stages)
    y = np.arange(len(names))
    axes[0].barh(y - 0.2, [stages[k]["p50_ms"] for k in names], 0.4, label="p50")
    axes[0].barh(y + 0.2, [stages[k]["p95_ms"] for k in names], 0.4, label="p95")
    axes[0].set_yticks(y, names, fontsize=8)
    axes[0].invert_yaxis()
    axes[0].set_xlabel("ms")
    axes[0].set_title("per-stage latency, keyframe pipeline")
    axes[0].legend()
    axes[1].bar(list(fps), list(fps.values()), color=["C7", "C0", "C3"])
    axes[1].set_title("end-to-end frames/s")
    fig.tight_layout()
    ctx.figures["speed"] = png_bytes(fig)
