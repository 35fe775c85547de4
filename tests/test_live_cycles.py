"""100 connect/disconnect cycles with real aiortc peers leave no session, thread, track or
pipeline behind (a light pipeline setting: a small detector input, no reference)."""

from __future__ import annotations

import asyncio
import gc
import resource
import threading
import time
import weakref

import numpy as np

from lostface.config import load_settings
from lostface.stream.webrtc import FrameTrack, LiveServer, connect

CYCLES = 100


def _lostface_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lostface-")]


def test_100_connect_disconnect_cycles_leave_nothing_behind(astronaut_bgr):
    import cv2

    img = cv2.resize(astronaut_bgr, (320, 240))
    settings = load_settings(overrides=["detect.input_size=128", "tracking.detect_every=4"])

    async def main():
        server = LiveServer(settings)
        url = await server.start(port=0)
        refs: list[weakref.ref] = []
        served = 0
        rss = []
        try:
            for cycle in range(CYCLES):
                got = asyncio.Event()
                pc, task, _ = await connect(
                    url, FrameTrack([img], 30.0), on_frame=lambda f, t, e=got: e.set()
                )
                await asyncio.wait_for(got.wait(), 30)  # media flowed both ways
                served += 1
                (session,) = server.sessions.values()
                refs += [weakref.ref(session), weakref.ref(session.pc), weakref.ref(session.out)]
                refs.append(weakref.ref(session.pipe))
                del session
                await pc.close()
                task.cancel()
                deadline = time.monotonic() + 10
                while server.sessions and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
                assert not server.sessions, f"cycle {cycle}: session left open"
                if cycle in (9, CYCLES - 1):
                    gc.collect()
                    rss.append(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
        finally:
            await server.close()
        return served, refs, rss

    served, refs, rss = asyncio.run(main())
    assert served == CYCLES
    gc.collect()
    alive = [r() for r in refs if r() is not None]
    assert not alive, f"{len(alive)} session objects still alive: {alive[:3]}"
    deadline = time.monotonic() + 5
    while _lostface_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _lostface_threads() == []
    # peak memory after 100 cycles: within 150 MiB of the peak after the first 10
    assert (rss[1] - rss[0]) / 1024 < 150, rss
    assert np.all(np.asarray(rss) > 0)
