"""What "Capture my face now" costs the live loop, how long it takes to learn, and how often
its judgement lets a masked face through.

live: a Python peer sends the stage clip's singer without a mask (640x480, 30 frames/s) to the
lostface server (embedded engines, no reference photo); after a warm-up, each cycle measures a
window without a capture, then sends {"capture": "me"} over the data channel and measures the
frames during the collection (2 s), while the last frames are judged, and for ADOPT_S after the
references are ready (the pipeline adopts them: painter.adopt on the keyframe worker). Latency
is the client's round trip per frame (a frame index is stamped in the letterbox band). The
capture's own timings come from the session: the builder's seconds (detector and segmenter on
the capture's thread) and the wait between the end of the collection and the references being
ready.

judge: each photo of ../shared/data/masked and unmasked as a one-frame capture: how many the
capture learns from, against the reference photos' own check (ReferenceBank.from_image with
the segmenter) on the same face region.

    .venv/bin/python bench/live_capture.py [--cycles 4] [--window 3] [--sections live,judge]
    .venv/bin/python bench/live_capture.py --sections live --cycles 8 --nice 10,0   # A/B
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lostface.stream.capture as capture_module  # noqa: E402
from lostface.config import load_settings  # noqa: E402
from lostface.stream.webrtc import (  # noqa: E402
    FrameTrack,
    LiveServer,
    connect,
    read_index,
    stamp_index,
)
from tests.live_helpers import singer_frames  # noqa: E402

DATA = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))
WARMUP_S = 4.0
ADOPT_S = 1.5  # after the references are ready: the frames the adoption (painter.adopt) reaches
# windows of each cycle: before the button; the collection; the building after it; the adoption
PARTS = ("plain", "collect", "build", "adopt")


class Client:
    def __init__(self, frames: list[np.ndarray]) -> None:
        self.track = FrameTrack(frames, 30.0, stamp=stamp_index)
        self.got: list[tuple[int, float]] = []

    def on_frame(self, vf, t: float) -> None:
        idx = read_index(vf.to_ndarray(format="gray"))
        if idx is not None:
            self.got.append((idx, t))

    def window(self, t_from: float, t_to: float) -> dict:
        sent = self.track.sent_at
        lat = [t - sent[i] for i, t in self.got if t_from <= t <= t_to and i in sent]
        if len(lat) < 2:
            return {"frames": len(lat)}
        a = np.asarray(lat) * 1000
        return {
            "frames": len(a),
            "fps": round(len(a) / (t_to - t_from), 2),
            "p50_ms": round(float(np.percentile(a, 50)), 1),
            "p95_ms": round(float(np.percentile(a, 95)), 1),
            "max_ms": round(float(a.max()), 1),
        }


async def live(cycles: int, window: float, nices: list[int]) -> dict:
    frames, _, _ = singer_frames(str(DATA / "video" / "stage_clip.mp4"))
    with tempfile.TemporaryDirectory() as tmp:
        server = LiveServer(load_settings(), capture_dir=tmp)
        url = await server.start(port=0)
        client = Client(frames)
        messages: list = []
        pc, _, channel = await connect(
            url, client.track, on_frame=client.on_frame, channel_messages=messages
        )
        rows = []
        try:
            await asyncio.sleep(WARMUP_S)
            (session,) = server.sessions.values()
            for cycle in range(cycles):
                # the capture thread's priority (lostface.stream.capture.NICE), alternated so
                # both settings meet the same load
                nice = nices[cycle % len(nices)]
                capture_module.NICE = nice
                t0 = time.monotonic()
                await asyncio.sleep(window)
                plain = client.window(t0, time.monotonic())
                before = session.last_capture
                t_send = time.monotonic()
                channel.send(json.dumps({"capture": "me"}))
                while session.last_capture is before and time.monotonic() - t_send < 60:
                    await asyncio.sleep(0.01)
                cap = session.last_capture
                await asyncio.sleep(ADOPT_S + 0.5)  # the frames the adoption reaches
                res = cap.result if cap is not None else None
                parts = {"plain": plain}
                if cap is not None and cap.t_end is not None and cap.t_done is not None:
                    parts["collect"] = client.window(t_send, cap.t_end)
                    parts["build"] = client.window(cap.t_end, cap.t_done)
                    parts["adopt"] = client.window(cap.t_done, cap.t_done + ADOPT_S)
                rows.append(
                    {
                        "nice": nice,
                        **parts,
                        "learned": res.summary() if res is not None else cap and cap.error,
                        "frames_judged": res.frames if res is not None else None,
                        "seen": res.seen if res is not None else None,
                        "build_s": round(res.seconds, 3) if res is not None else None,
                        "collect_s": round(cap.t_end - cap.t_first, 3) if cap else None,
                        "ready_after_collect_s": round(cap.t_done - cap.t_end, 3) if cap else None,
                        "send_to_ready_s": round(cap.t_done - t_send, 3) if cap else None,
                    }
                )
                print(
                    f"  nice {nice:2d}: "
                    + " | ".join(
                        f"{k} p50 {v.get('p50_ms', 0):5.0f} max {v.get('max_ms', 0):5.0f}"
                        for k, v in parts.items()
                    )
                    + f" ms | {rows[-1]['learned']}, ready {rows[-1]['ready_after_collect_s']} s "
                    "after the collection",
                    flush=True,
                )
        finally:
            await pc.close()
            await server.close()

    def summary(sel: list[dict]) -> dict:
        def med(key: str, part: str) -> float:
            vals = [r[part][key] for r in sel if key in r.get(part, {})]
            return round(float(np.median(vals)), 1) if vals else 0.0

        out: dict = {
            part: {k: med(k, part) for k in ("fps", "p50_ms", "p95_ms", "max_ms")} for part in PARTS
        }
        for k in ("build_s", "ready_after_collect_s", "send_to_ready_s"):
            vals = [r[k] for r in sel if r[k] is not None]
            out[k] = round(float(np.median(vals)), 3) if vals else None
        return out

    medians = {f"nice {n}": summary([r for r in rows if r["nice"] == n]) for n in nices}
    return {"cycles": rows, "median_over_cycles": medians}


def judge(limit: int) -> dict:
    import cv2

    from lostface.factory import build_detector
    from lostface.registry import build_segmenter
    from lostface.restore.reference import CoveredReference, ReferenceBank
    from lostface.stream.capture import Builder, _Found, _largest, face_region

    settings = load_settings()
    detector = build_detector(settings)
    segmenter = build_segmenter(settings)
    out = {}
    for kind in ("masked", "unmasked"):
        files = sorted((DATA / kind).glob("*.jpg"))[:limit]
        capture = reference = 0
        t0 = time.perf_counter()
        for f in files:
            image = cv2.imread(str(f))
            b = Builder("me", detector, segmenter, open_threshold=settings.mask.presence_threshold)
            capture += b.look(image) == "open"
            # the reference photos' own check, on the same region
            dets = detector.detect(image)
            if not len(dets):
                continue
            region, _ = face_region(image, dets.boxes[_largest(dets)])
            again = detector.detect(region)
            if not len(again):
                continue
            try:
                found = _Found(again.subset([_largest(again)]))
                ReferenceBank.from_image("x", region, found, segmenter)
                reference += 1
            except CoveredReference:
                pass
        out[kind] = {
            "photos": len(files),
            "capture_learns": capture,
            "reference_check_accepts": reference,
            "seconds_per_photo": round((time.perf_counter() - t0) / max(1, len(files)), 3),
        }
        print(
            f"  {kind}: the capture learns from {capture}/{len(files)}, the reference photo "
            f"check accepts {reference}/{len(files)}",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cycles", type=int, default=4, help="captures in the live section")
    ap.add_argument("--window", type=float, default=3.0, help="seconds without a capture")
    ap.add_argument("--sections", default="live,judge")
    ap.add_argument(
        "--nice",
        default=str(capture_module.NICE),
        help="capture thread priorities to alternate over the cycles, e.g. 10,0",
    )
    ap.add_argument("--limit", type=int, default=300, help="photos per folder (judge)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "live_capture.json"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    sections = set(args.sections.split(","))
    load0 = os.getloadavg()
    report: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "loadavg_before": [round(x, 2) for x in load0],
        }
    }
    if "live" in sections:
        print("live (640x480, 30 frames/s; client round trip per frame):", flush=True)
        nices = [int(n) for n in args.nice.split(",")]
        report["live"] = asyncio.run(live(args.cycles, args.window, nices))
        for name, m in report["live"]["median_over_cycles"].items():
            print(
                f"median over cycles, {name}: "
                + "; ".join(f"{k} p50 {m[k]['p50_ms']} ms, max {m[k]['max_ms']} ms" for k in PARTS)
                + f"; judging {m['build_s']} s of work, ready {m['ready_after_collect_s']} s "
                f"after the collection, {m['send_to_ready_s']} s after the button"
            )
    if "judge" in sections:
        print("judge (one photo = one capture):", flush=True)
        report["judge"] = judge(args.limit)
    report["machine"]["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"load average before/after: {load0[0]:.2f} / {os.getloadavg()[0]:.2f} (2 cores)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
