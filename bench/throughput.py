"""Throughput and peak memory of `lostface run`, against a plain PyAV decode + encode.

Inputs: stage_clip (640x360) with a synthetic mask drawn on its faces, and the same clip
scaled to 1280x720. For each, in the same run and interleaved (this machine is noisy):
- plain: decode -> BGR array -> encode with the same encoder settings, one Python loop;
- lostface: the `lostface run` command in a fresh process (with the clip's reference photo).
Figures are medians over --runs runs. Writes bench/results/throughput.json (with --set,
throughput_<settings>.json).

--repeat N plays each clip N times over, forwards and backwards in turn (so the joins are no
scene cuts), for a longer clip of the same shots: the start-up (loading the models, the
enlarged look's first run, every face's first keyframe) weighs less in it, as in a video of
minutes (writes throughput_repeat<N>.json).

    python bench/throughput.py [--runs 5] [--repeat N] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SHARED = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))

from lostface.config import VideoSettings, load_settings  # noqa: E402
from lostface.frame import Frame  # noqa: E402
from lostface.stream.video import VideoReader, VideoWriter  # noqa: E402


def prepare(src: Path) -> tuple[Path, Path]:
    """Masked 640x360 clip and its 1280x720 version (cached in bench/results)."""
    from lostface.demo import mask_video
    from lostface.factory import build_detector

    RESULTS.mkdir(parents=True, exist_ok=True)
    masked = RESULTS / "stage_clip_masked.mp4"
    big = RESULTS / "stage_clip_masked_720p.mp4"
    settings = load_settings(overrides=["video.crf=18"])
    if not masked.exists():
        mask_video(src, masked, settings, build_detector(settings), "surgical")
    if not big.exists():
        enlarge(masked, big, settings.video)
    return masked, big


def enlarge(src: Path, dst: Path, vs: VideoSettings) -> None:
    """The clip scaled to 1280x720."""
    from dataclasses import replace

    with VideoReader(src) as r:
        info = replace(r.info, width=1280, height=720)
        w = VideoWriter(dst, info, vs, None)
        for item in r.items():
            if isinstance(item, Frame):
                item.image = cv2.resize(item.image, (1280, 720), interpolation=cv2.INTER_CUBIC)
                w.write(item)
        w.commit()


def repeated(src: Path, times: int, vs: VideoSettings) -> Path:
    """The clip played `times` times, forwards and backwards in turn (cached in bench/results)."""
    from dataclasses import replace

    dst = RESULTS / f"{src.stem}_x{times}.mp4"
    if dst.exists():
        return dst
    with VideoReader(src) as r:
        info = r.info
        frames = [item.image for item in r.items() if isinstance(item, Frame)]
    tmp = dst.with_name(f".{dst.name}")
    w = VideoWriter(tmp, replace(info, frames=len(frames) * times), vs, None)
    n, frame_time = 0, 1 / info.rate
    for k in range(times):
        for image in frames if k % 2 == 0 else frames[::-1]:
            w.write(Frame(image, n, n, frame_time))  # pts in frame durations
            n += 1
    w.commit()
    tmp.replace(dst)
    return dst


def plain(src: Path, dst: Path, vs: VideoSettings) -> float:
    """Frames/s of the plain job: decode, convert to BGR, convert back, encode."""
    t0 = time.perf_counter()
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        v = i.streams.video[0]
        v.thread_type = "AUTO"
        s = o.add_stream("libx264", rate=v.average_rate)
        s.width, s.height, s.pix_fmt = v.codec_context.width, v.codec_context.height, vs.pix_fmt
        s.codec_context.options = {"preset": vs.preset, "crf": str(vs.crf)}
        n = 0
        for f in i.decode(v):
            img = f.to_ndarray(format="bgr24")
            g = av.VideoFrame.from_ndarray(img, format="bgr24")
            g.pts = f.pts
            for p in s.encode(g):
                o.mux(p)
            n += 1
        for p in s.encode(None):
            o.mux(p)
    return n / (time.perf_counter() - t0)


PLAIN_SCRIPT = """
import sys, av
src, dst, preset, crf, pix_fmt = sys.argv[1:6]
with av.open(src) as i, av.open(dst, "w") as o:
    v = i.streams.video[0]
    v.thread_type = "AUTO"
    s = o.add_stream("libx264", rate=v.average_rate)
    s.width, s.height, s.pix_fmt = v.codec_context.width, v.codec_context.height, pix_fmt
    s.codec_context.options = {"preset": preset, "crf": crf}
    for f in i.decode(v):
        g = av.VideoFrame.from_ndarray(f.to_ndarray(format="bgr24"), format="bgr24")
        g.pts = f.pts
        for p in s.encode(g):
            o.mux(p)
    for p in s.encode(None):
        o.mux(p)
"""


def plain_process(src: Path, dst: Path, vs: VideoSettings) -> float:
    """Wall seconds of the plain job as its own Python process (start-up included, like
    the `lostface run` process it is compared with)."""
    t0 = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-c",
            PLAIN_SCRIPT,
            str(src),
            str(dst),
            vs.preset,
            str(vs.crf),
            vs.pix_fmt,
        ],
        check=True,
    )
    return time.perf_counter() - t0


SETS: list[str] = []  # --set KEY=VALUE arguments handed to every `lostface run`


def lostface_run(src: Path, dst: Path, ref: Path) -> dict:
    """One `lostface run` in a fresh process: wall time (with start-up) and in-loop time."""
    cmd = [sys.executable, "-m", "lostface.cli", "run", str(src), "-o", str(dst), "-r", str(ref)]
    cmd += SETS
    env = dict(os.environ, HF_HUB_OFFLINE="1", YOLO_OFFLINE="1")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    out, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"lostface run failed: {err.strip()}")
    m = re.search(r"(\d+) frames in ([\d.]+) s", err)
    if m is None:
        raise RuntimeError(f"no frame count in the output of lostface run: {err.strip()}")
    frames, seconds = int(m.group(1)), float(m.group(2))
    return {"wall_s": wall, "frames": frames, "loop_s": seconds, "stderr": err}


def peak_rss_mb(src: Path, dst: Path, ref: Path) -> float:
    """Peak resident memory of one `lostface run` process (ru_maxrss of that child alone)."""
    cmd = [
        sys.executable,
        "-m",
        "lostface.cli",
        "run",
        str(src),
        "-o",
        str(dst),
        "-r",
        str(ref),
        "-q",
        *SETS,
    ]
    pid = os.posix_spawn(cmd[0], cmd, dict(os.environ, HF_HUB_OFFLINE="1"))
    _, status, usage = os.wait4(pid, 0)  # this child's own peak, not the largest so far
    if status != 0:
        raise RuntimeError("lostface run failed while measuring memory")
    return usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a setting for `lostface run`, e.g. --set upscale.engine=realesrgan (repeatable)",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=1,
        metavar="N",
        help="play each clip N times over, forwards and backwards in turn (a longer clip)",
    )
    args = ap.parse_args()
    if args.repeat < 1:
        sys.exit("--repeat must be 1 or more.")
    SETS[:] = [x for item in args.overrides for x in ("--set", item)]
    src = SHARED / "video" / "stage_clip.mp4"
    ref = SHARED / "identity" / "stage_clip_reference.png"
    if not src.exists():
        sys.exit(f"{src} is absent: this benchmark needs ../shared/data.")
    # an installed package, or one run before, imports from its compiled bytecode; where
    # Python is told not to write it (PYTHONDONTWRITEBYTECODE), every `lostface run` would
    # compile the package's sources anew, which no user's second run does
    compiled = compileall.compile_dir(str(ROOT / "lostface"), quiet=1)
    masked, big = prepare(src)
    vs = load_settings().video
    if args.repeat > 1:
        masked, big = repeated(masked, args.repeat, vs), repeated(big, args.repeat, vs)
    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "av": av.__version__,
            "opencv": cv2.__version__,
        },
        "bytecode_compiled": bool(compiled),
        "runs": args.runs,
        "repeat": args.repeat,
        "settings": args.overrides,
        "clips": {},
    }
    for name, clip in [("640x360", masked), ("1280x720", big)]:
        out = RESULTS / f"tp_out_{name}.mp4"
        plains, plain_procs, walls, loops = [], [], [], []
        for _ in range(args.runs):
            plains.append(plain(clip, RESULTS / "tp_plain.mp4", vs))
            r = lostface_run(clip, out, ref)
            walls.append(r["frames"] / r["wall_s"])
            loops.append(r["frames"] / r["loop_s"])
            plain_procs.append(r["frames"] / plain_process(clip, RESULTS / "tp_plain.mp4", vs))
        mem = peak_rss_mb(clip, out, ref)
        row = {
            "plain_fps_median": float(np.median(plains)),
            "lostface_fps_end_to_end_median": float(np.median(walls)),
            "lostface_fps_pipeline_median": float(np.median(loops)),
            "plain_process_fps_median": float(np.median(plain_procs)),
            "ratio_end_to_end_vs_plain_process": float(np.median(walls) / np.median(plain_procs)),
            "ratio_pipeline_vs_plain": float(np.median(loops) / np.median(plains)),
            "peak_rss_mb": mem,
            "plain_fps_runs": plains,
            "plain_process_fps_runs": plain_procs,
            "lostface_fps_end_to_end_runs": walls,
            "lostface_fps_pipeline_runs": loops,
        }
        report["clips"][name] = row
        print(
            f"{name}: in-loop: plain {row['plain_fps_median']:.1f} fps, lostface "
            f"{row['lostface_fps_pipeline_median']:.1f} fps "
            f"(x{row['ratio_pipeline_vs_plain']:.2f}) | "
            f"whole process: plain {row['plain_process_fps_median']:.1f} fps, lostface "
            f"{row['lostface_fps_end_to_end_median']:.1f} fps "
            f"(x{row['ratio_end_to_end_vs_plain_process']:.2f}) | peak RSS {mem:.0f} MB",
            flush=True,
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    parts = [f"repeat{args.repeat}"] if args.repeat > 1 else []
    tag = "_".join(parts + [re.sub(r"[^\w.-]+", "-", item) for item in args.overrides])
    path = RESULTS / (f"throughput_{tag}.json" if tag else "throughput.json")
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
