"""WebRTC round trip at 640x480: a Python peer sends the synthetic-masked stage clip at
30 frames/s to the server and times each frame that comes back (a frame index is stamped in
the letterbox band, so latency needs no shared clock in the stream).

Three runs in one process, on the same machine and load:
  relay    - a plain aiortc relay (the received track sent straight back): the baseline;
  lostface - the lostface server with the embedded engines and the clip's reference photo;
  two      - two concurrent lostface sessions.

    .venv/bin/python bench/live.py [--seconds 12]     # writes bench/results/live.json

Targets (issue): lostface holds 30 frames/s with median latency at most 100 ms and p95 at
most 150 ms above the relay's; two sessions hold 15 frames/s each.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lostface.config import load_settings  # noqa: E402
from lostface.stream.webrtc import (  # noqa: E402
    FrameTrack,
    LiveServer,
    connect,
    read_index,
    stamp_index,
)
from tests.live_helpers import masked_stage_clip  # noqa: E402

DATA = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
WARMUP_S = 3.0  # ICE, DTLS, the encoder's bitrate ramp and the first keyframes


class Client:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.track = FrameTrack(frames, 30.0, stamp=stamp_index)
        self.got: list[tuple[int, float]] = []
        self.pc = None
        self.task = None

    def on_frame(self, vf, t: float) -> None:
        idx = read_index(vf.to_ndarray(format="gray"))
        if idx is not None:
            self.got.append((idx, t))

    def figures(self, t_from: float, t_to: float) -> dict:
        sent_at = self.track.sent_at
        rows = [(i, t) for i, t in self.got if t_from <= t <= t_to and i in sent_at]
        if len(rows) < 2:
            return {"fps": 0.0, "frames": len(rows)}
        lat = np.array([t - sent_at[i] for i, t in rows]) * 1000
        return {
            "fps": round(len(rows) / (t_to - t_from), 2),
            "frames": len(rows),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 1),
        }


async def run(server: LiveServer, frames: list[np.ndarray], clients: int, seconds: float) -> list:
    url = await server.start(host="127.0.0.1", port=0)
    cs = [Client(frames) for _ in range(clients)]
    try:
        for c in cs:
            c.pc, c.task, _ = await connect(url, c.track, on_frame=c.on_frame)
        t0 = time.monotonic()
        await asyncio.sleep(seconds)
        t1 = time.monotonic()
        out = [c.figures(t0 + WARMUP_S, t1) for c in cs]
        server_side = [s.stats() for s in server.sessions.values()]
    finally:
        for c in cs:
            if c.pc is not None:
                await c.pc.close()
        await server.close()
    for o, s in zip(out, server_side, strict=False):
        o["server_capture_to_send_p50_ms"] = s["latency_p50_ms"]
        o["server_capture_to_send_p95_ms"] = s["latency_p95_ms"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0, help="length of each run")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "live.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    clip = DATA / "video" / "stage_clip.mp4"
    frames, _, _ = masked_stage_clip(str(clip), 90)
    reference = cv2.imread(str(DATA / "identity" / "stage_clip_reference.png"))
    settings = load_settings()
    refs = [("stage_clip_reference.png", reference)]
    load0 = os.getloadavg()
    results = {
        "relay": asyncio.run(run(LiveServer(settings, relay=True), frames, 1, args.seconds))[0],
        "lostface": asyncio.run(
            run(LiveServer(settings, reference_images=refs), frames, 1, args.seconds)
        )[0],
        "two_sessions": asyncio.run(
            run(LiveServer(settings, reference_images=refs), frames, 2, args.seconds)
        ),
    }
    relay, lf, two = results["relay"], results["lostface"], results["two_sessions"]
    extra50 = lf.get("latency_p50_ms", 1e9) - relay.get("latency_p50_ms", 0)
    extra95 = lf.get("latency_p95_ms", 1e9) - relay.get("latency_p95_ms", 0)
    targets = {
        "lostface_fps>=30": lf["fps"] >= 29.5,  # 30 fps source: 29.5 allows window rounding
        "median_above_relay<=100ms": extra50 <= 100,
        "p95_above_relay<=150ms": extra95 <= 150,
        "two_sessions_fps>=15_each": all(c["fps"] >= 15 for c in two),
    }
    report = {
        "size": "640x480",
        "source_fps": 30,
        "seconds_per_run": args.seconds,
        "warmup_s": WARMUP_S,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load0],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        },
        **results,
        "latency_above_relay_ms": {"p50": round(extra50, 1), "p95": round(extra95, 1)},
        "targets_met": targets,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"{'run':<14}{'fps':>7}{'p50 ms':>9}{'p95 ms':>9}")
    rows = [("relay", relay), ("lostface", lf)] + [(f"two #{i + 1}", c) for i, c in enumerate(two)]
    for name, r in rows:
        print(
            f"{name:<14}{r['fps']:>7.1f}{r.get('latency_p50_ms', 0):>9.1f}"
            f"{r.get('latency_p95_ms', 0):>9.1f}"
        )
    print(f"lostface above relay: p50 {extra50:+.1f} ms, p95 {extra95:+.1f} ms")
    print("targets:", ", ".join(f"{k} {'met' if v else 'MISSED'}" for k, v in targets.items()))
    print(f"load average before/after: {load0[0]:.2f} / {os.getloadavg()[0]:.2f} (2 cores shared)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
