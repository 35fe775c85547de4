"""Soak of `lostface serve`: many connect / stream / disconnect cycles with real aiortc peers,
some of them killed without a goodbye, against the real command in its own process.

    .venv/bin/python bench/live_soak.py [--cycles 500] [--clients 2] [--kill-every 10]
                                        # writes bench/results/live_soak.json

Two client workers (by default) run the cycles side by side against a server with
live.max_sessions = 2: a cycle connects, waits for `--frames` restored frames to come back and
closes; every 10th cycle is a client process that is SIGKILLed once its frames come back (no
BYE, no DTLS close: the server has to notice the silence, live.idle_timeout). An offer the server
refuses because it is full (503) is retried after a pause; that is the limit at work, not a
failure. The server's log says how many sessions it holds at each start and close.

After a warm-up (`--warmup` cycles) and at checkpoints after it, the clients pause until every
session is closed, and the server process's resident memory, open file descriptors and threads
are read from /proc. Targets (issue 21): every session freed, resident memory growth under
20 MB after warm-up, descriptors and threads flat, the session limit never exceeded. At the end
SIGTERM stops the server, which must exit 0. "Flat" means no sample in the second half of
the run above the highest of the first half (from the warm-up on): the event loop's thread
pool fills once, a leak keeps rising.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lostface.stream.webrtc import FrameTrack, connect  # noqa: E402

RSS_TARGET_MB = 20.0
STARTED = re.compile(r"Session (\w+) started \((\d+) of (\d+)\)")
CLOSED = re.compile(r"Session (\w+) closed \((\d+) left\)")

_KILLED_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np
    from lostface.stream.webrtc import FrameTrack, connect
    async def main():
        img = np.load(sys.argv[2])
        while True:
            try:
                pc, task, _ = await connect(sys.argv[1], FrameTrack([img], 30.0),
                                            on_frame=lambda f, t: print("frame", flush=True))
                break
            except ConnectionRefusedError:  # full: try again, as the other clients do
                await asyncio.sleep(0.5)
        await asyncio.sleep(600)
    asyncio.run(main())
    """
)


def _face_frame(width: int, height: int) -> np.ndarray:
    """A real face (scikit-image's astronaut photo), so the pipeline detects and paints."""
    from skimage import data

    return cv2.resize(np.ascontiguousarray(data.astronaut()[:, :, ::-1]), (width, height))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerLog:
    """Reads the server's stderr on a thread: session counts, refusals, anything alarming."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.open: set[str] = set()
        self.started = 0
        self.closed = 0
        self.most = 0  # most sessions the server reported at once
        self.limit = 0
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
            if m := STARTED.search(line):
                self.open.add(m.group(1))
                self.started += 1
                self.most = max(self.most, int(m.group(2)), len(self.open))
                self.limit = int(m.group(3))
            elif m := CLOSED.search(line):
                self.open.discard(m.group(1))
                self.closed += 1

    def count(self, pattern: str) -> int:
        return sum(1 for line in self.lines if pattern in line)


def proc_figures(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return {
        "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
        "threads": int(fields["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "cpu_s": round((int(stat[11]) + int(stat[12])) / ticks, 1),  # utime + stime
    }


def flat(values: list[int]) -> bool:
    """No growth in the second half of the samples over the first (a pool that fills once,
    such as the event loop's executor, is not a leak; a count that keeps rising is)."""
    half = max(1, len(values) // 2)
    return max(values[half:] or values) <= max(values[:half])


class Soak:
    def __init__(self, args: argparse.Namespace, url: str, log: ServerLog, frame_path: str):
        self.args = args
        self.url = url
        self.log = log
        self.frame = np.load(frame_path)
        self.frame_path = frame_path
        self.next = 0
        self.done = 0
        self.killed = 0
        self.refused = 0
        self.failures: list[str] = []
        self.cycle_s: list[float] = []

    async def _normal(self) -> None:
        got = asyncio.Event()
        count = [0]

        def on_frame(_f, _t) -> None:
            count[0] += 1
            if count[0] >= self.args.frames:
                got.set()

        deadline = time.monotonic() + 120
        while True:
            try:
                pc, task, _ = await connect(
                    self.url, FrameTrack([self.frame], 30.0), on_frame=on_frame
                )
                break
            except ConnectionRefusedError as exc:
                if not str(exc).startswith("503") or time.monotonic() > deadline:
                    raise
                self.refused += 1
                await asyncio.sleep(0.5)
        try:
            await asyncio.wait_for(got.wait(), 60)
        finally:
            await pc.close()
            task.cancel()

    async def _killed(self) -> None:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _KILLED_CLIENT,
            self.url,
            self.frame_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            frames = 0
            assert proc.stdout is not None
            while frames < self.args.frames:
                line = await asyncio.wait_for(proc.stdout.readline(), 120)
                if not line:
                    raise RuntimeError("the killed client ended before its frames came back")
                frames += 1
        finally:
            if proc.returncode is None:
                proc.send_signal(signal.SIGKILL)
            await proc.wait()

    async def worker(self, until: int) -> None:
        while self.next < until:
            i = self.next
            self.next += 1
            t0 = time.monotonic()
            try:
                if self.args.kill_every and i % self.args.kill_every == self.args.kill_every - 1:
                    await self._killed()
                    self.killed += 1
                else:
                    await self._normal()
            except Exception as exc:
                self.failures.append(f"cycle {i}: {type(exc).__name__}: {exc}")
            self.cycle_s.append(time.monotonic() - t0)
            self.done += 1

    async def quiet(self, timeout: float = 60.0) -> float:
        """Wait until the server reports no open session; returns the wait."""
        t0 = time.monotonic()
        while self.log.open and time.monotonic() - t0 < timeout:
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # its last close finishes (threads joined, pc closed)
        return time.monotonic() - t0


async def run(args: argparse.Namespace, pid: int, url: str, log: ServerLog, frame_path: str):
    soak = Soak(args, url, log, frame_path)
    marks = [args.warmup] + list(range(args.warmup + args.every, args.cycles, args.every))
    marks = [m for m in marks if m < args.cycles] + [args.cycles]
    samples = []
    t_start = time.monotonic()
    for mark in marks:
        await asyncio.gather(*(soak.worker(mark) for _ in range(args.clients)))
        waited = await soak.quiet()
        row = {
            "cycles": soak.done,
            "open_sessions": len(log.open),
            "quiet_wait_s": round(waited, 1),
            "elapsed_s": round(time.monotonic() - t_start, 1),
            **proc_figures(pid),
        }
        samples.append(row)
        print(
            f"after {row['cycles']:>4} cycles: RSS {row['rss_mb']:7.1f} MB, fds {row['fds']:>4}, "
            f"threads {row['threads']:>3}, open sessions {row['open_sessions']}, "
            f"{row['elapsed_s']:7.1f} s",
            flush=True,
        )
    return soak, samples, time.monotonic() - t_start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=500)
    ap.add_argument("--clients", type=int, default=2, help="concurrent client workers")
    ap.add_argument("--kill-every", type=int, default=10, help="every Nth cycle is SIGKILLed")
    ap.add_argument("--frames", type=int, default=30, help="restored frames per cycle")
    ap.add_argument("--warmup", type=int, default=50, help="cycles before the baseline sample")
    ap.add_argument("--every", type=int, default=100, help="cycles between later samples")
    ap.add_argument("--size", default="640x480", help="frame size sent by the clients")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "live_soak.json"))
    args = ap.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frame_path = str(out.parent / "live_soak_frame.npy")
    np.save(frame_path, _face_frame(width, height))

    port = _free_port()
    cmd = [sys.executable, "-m", "lostface.cli", "serve", "--port", str(port)]
    for o in args.overrides:
        cmd += ["--set", o]
    server = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    log = ServerLog(server.stderr)
    assert server.stdout is not None
    banner = server.stdout.readline()
    if "serving" not in banner:
        server.kill()
        raise SystemExit(f"the server did not start: {banner}{chr(10).join(log.lines)}")
    url = f"http://127.0.0.1:{port}/"
    load0 = os.getloadavg()
    start_figures = proc_figures(server.pid)
    print(f"server pid {server.pid} at {url}: {start_figures}", flush=True)
    try:
        soak, samples, seconds = asyncio.run(run(args, server.pid, url, log, frame_path))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            code = server.wait(60)
        except subprocess.TimeoutExpired:
            server.kill()
            code = server.wait(10)
    time.sleep(0.3)
    tail = server.stdout.read()
    base, last = samples[0], samples[-1]
    later = samples[1:] or samples
    cycles_after = last["cycles"] - base["cycles"]
    cpu_per_cycle = (last["cpu_s"] - base["cpu_s"]) / cycles_after if cycles_after else 0.0
    rss_growth = last["rss_mb"] - base["rss_mb"]
    rss_peak_growth = max(s["rss_mb"] for s in later) - base["rss_mb"]
    fds_growth = max(s["fds"] for s in later) - base["fds"]
    threads_growth = max(s["threads"] for s in later) - base["threads"]
    freed = (
        log.started == log.closed and not log.open and all(s["open_sessions"] == 0 for s in samples)
    )
    targets = {
        "every_session_freed": freed,
        "rss_growth_after_warmup<20MB": rss_peak_growth < RSS_TARGET_MB,
        "fds_flat": flat([s["fds"] for s in samples]),
        "threads_flat": flat([s["threads"] for s in samples]),
        "limit_never_exceeded": log.most <= log.limit,
        "clean_exit_0": code == 0,
        "every_cycle_served": not soak.failures and soak.done == args.cycles,
    }
    report = {
        "cycles": soak.done,
        "clients": args.clients,
        "killed": soak.killed,
        "frames_per_cycle": args.frames,
        "size": args.size,
        "settings": args.overrides,
        "seconds": round(seconds, 1),
        "cycle_seconds_median": round(float(np.median(soak.cycle_s)), 2),
        "server_cpu_s_per_cycle_after_warmup": round(cpu_per_cycle, 3),
        "refused_503_retries": soak.refused,
        "failures": soak.failures,
        "server": {
            "sessions_started": log.started,
            "sessions_closed": log.closed,
            "most_sessions_at_once": log.most,
            "max_sessions": log.limit,
            "closed_for_silence": log.count("no video from the peer"),
            "closed_no_first_frame": log.count("sent no video within"),
            "closed_never_connected": log.count("did not connect within"),
            "refused_lines": log.count("Refused "),
            "tracebacks": log.count("Traceback"),
            "loop_errors": log.count("Task exception was never retrieved"),
            "exit_code": code,
            "stdout_at_exit": tail.strip(),
            "at_start": start_figures,
        },
        "samples": samples,
        "growth_after_warmup": {
            "rss_mb_end": round(rss_growth, 1),
            "rss_mb_peak": round(rss_peak_growth, 1),
            "fds": fds_growth,
            "threads": threads_growth,
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load0],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "targets_met": targets,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    Path(frame_path).unlink(missing_ok=True)
    print(
        f"{soak.done} cycles ({soak.killed} killed) in {seconds:.0f} s "
        f"(median cycle {report['cycle_seconds_median']} s), {soak.refused} offers refused "
        f"as full and retried, {len(soak.failures)} failures"
    )
    print(
        f"server: {log.started} sessions started, {log.closed} closed, at most {log.most} "
        f"of {log.limit} at once; {report['server']['closed_for_silence']} let go for silence; "
        f"exit code {code}"
    )
    print(
        f"after warm-up ({base['cycles']} cycles): RSS {base['rss_mb']} -> {last['rss_mb']} MB "
        f"(peak growth {rss_peak_growth:+.1f} MB), fds {base['fds']} -> {last['fds']}, "
        f"threads {base['threads']} -> {last['threads']}; server CPU {cpu_per_cycle:.2f} s a cycle"
    )
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets.items()))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
