"""Batch throughput on Dask, against its baselines in the same run.

Inputs: 8 copies of ../shared/data/video/stage_clip.mp4 (640x360, 9 s, its reference photo;
--seconds cuts them shorter: 3 was this benchmark's earlier setting), re-encoded with a
keyframe every second, and the clip played 20 times over (about 3 minutes) for the segments'
overhead. Rows (wall time of the whole command, frames per second of output, medians over
--runs):

- batch, 1 worker of 1 thread: the cluster with no parallelism;
- batch, 2 workers of 1 thread each: the goal is at least 1.6 times the row above (this
  machine has 2 cores, so the cluster itself must cost little);
- 8 sequential `lostface run` processes: the default batch (one worker per core) should not
  be slower;
- the 3-minute clip as one `lostface batch` task against the same clip cut into segments with
  the default settings (60 s, each with a 3-second warm-up) on 1 worker: the segments'
  overhead, goal under 10%.

    python bench/batch.py [--runs 3] [--rows workers,sequential,segments] [--seconds 3]

Writes bench/results/batch.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"


def cut(src: Path, dst: Path, seconds: float, loops: int = 1) -> Path:
    """The first `seconds` of src (played `loops` times over, timestamps running on),
    re-encoded with a keyframe every second, with its audio."""
    import av

    from lostface.config import load_settings
    from lostface.frame import Frame
    from lostface.stream.video import VideoReader, VideoWriter

    vs = load_settings().video
    with VideoReader(src) as first:
        writer = VideoWriter(dst, first.info, vs, first.audio if loops == 1 else None)
        writer.stream.codec_context.gop_size = max(1, int(round(float(first.info.rate))))
    offset = 0
    for _ in range(loops):
        last = 0
        with VideoReader(src) as reader:
            for item in reader.items():
                if isinstance(item, Frame):
                    if item.pts is not None and item.pts * reader.info.time_base >= seconds:
                        break
                    last = item.pts or 0
                    item.pts = (item.pts or 0) + offset
                    writer.write(item)
                elif isinstance(item, av.Packet) and item.pts is not None and loops == 1:
                    if item.pts * item.time_base < seconds:
                        writer.write_audio(item)
        offset += last + int(round(1 / (first.info.rate * first.info.time_base)))
    writer.commit()
    return dst


def _frames(path: Path) -> int:
    import av

    with av.open(str(path)) as c:
        return sum(1 for _ in c.demux(c.streams.video[0]) if _.size)


def timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument(
        "--rows",
        default="workers,sequential,segments",
        help="which comparisons to run (comma-separated): workers, sequential, segments",
    )
    ap.add_argument(
        "--seconds",
        type=float,
        default=0.0,
        help="length of the 8 copies (default 0: the whole clip)",
    )
    args = ap.parse_args()
    want = set(args.rows.split(","))
    if not want or not want <= {"workers", "sequential", "segments"}:
        sys.exit(f"--rows takes workers, sequential and segments, not {args.rows!r}.")
    if "sequential" in want:
        want.add("workers")  # compared with the 2-worker batch
    clip = SHARED / "video" / "stage_clip.mp4"
    ref = SHARED / "identity" / "stage_clip_reference.png"
    if not clip.exists():
        sys.exit(f"{clip} is absent: this benchmark needs ../shared/data.")
    lostface = [sys.executable, "-m", "lostface.cli"]
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="lostface-batch-bench-") as tmp:
        root = Path(tmp)
        short = cut(clip, root / "short.mp4", args.seconds or 1e9)
        copies = []
        for i in range(8):
            copies.append(root / f"copy{i}.mp4")
            shutil.copy(short, copies[-1])
        whole = cut(clip, root / "whole.mp4", 60.0, loops=20) if "segments" in want else clip
        frames_8 = 8 * _frames(short)
        for run in range(args.runs):

            def batch(name: str, inputs: list[Path], *extra: str, _run: int = run) -> None:
                out = root / f"{name}-{_run}"
                cmd = [*lostface, "batch", *map(str, inputs), "-o", str(out), "-r", str(ref)]
                rows.setdefault(name, []).append(timed([*cmd, "-q", *extra]))

            if "workers" in want:
                batch("batch_1_worker", copies, "--workers", "1")
                batch("batch_2_workers", copies, "--workers", "2")
            if "sequential" in want:
                t = 0.0
                for i, c in enumerate(copies):
                    out = root / f"seq-{run}-{i}.mp4"
                    t += timed([*lostface, "run", str(c), "-o", str(out), "-r", str(ref), "-q"])
                rows.setdefault("sequential_8_runs", []).append(t)
            if "segments" in want:
                batch("one_task", [whole], "--workers", "1", "--set", "batch.segment_seconds=0")
                batch("segments_60s", [whole], "--workers", "1")
    med = {k: statistics.median(v) for k, v in rows.items()}
    result: dict = {
        "runs": args.runs,
        "cores": os.cpu_count(),
        "copy_seconds": args.seconds or "whole clip",
        "frames_per_copy": frames_8 // 8,
        "load_average": os.getloadavg(),
        "seconds": {k: [round(x, 2) for x in v] for k, v in rows.items()},
        "median_s": {k: round(v, 2) for k, v in med.items()},
        "frames_per_s": {
            k: round(frames_8 / v, 1)
            for k, v in med.items()
            if k in ("batch_1_worker", "batch_2_workers", "sequential_8_runs")
        },
    }
    for k, v in result["median_s"].items():
        print(f"{k:20s} {v:8.2f} s")
    if "workers" in want:
        result["speedup_2_vs_1_worker"] = round(med["batch_1_worker"] / med["batch_2_workers"], 2)
        print(f"2 workers vs 1: x{result['speedup_2_vs_1_worker']}")
    if "sequential" in want:
        result["batch_vs_sequential"] = round(med["sequential_8_runs"] / med["batch_2_workers"], 2)
        print(f"batch vs 8 sequential runs: x{result['batch_vs_sequential']}")
    if "segments" in want:
        result["segment_overhead"] = round(med["segments_60s"] / med["one_task"] - 1.0, 3)
        print(f"segments' overhead: {100 * result['segment_overhead']:.1f}%")
    print(f"load average (1, 5, 15 min) at the end: {result['load_average']}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "batch.json" if want == {"workers", "sequential", "segments"} else "batch_rows.json"
    (RESULTS / name).write_text(json.dumps(result, indent=1))
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
