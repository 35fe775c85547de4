"""Shared media for the live tests: the real stage clip with a synthetic mask on its main
face, letterboxed to 640x480 (the ground truth under the mask is kept)."""

from __future__ import annotations

import asyncio
import threading
from functools import lru_cache

import numpy as np

from lostface.config import load_settings
from lostface.frame import Frame

PAD_TOP = 60  # 640x360 -> 640x480: black bands above and below


def letterbox(image: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    out = np.zeros((h + 2 * PAD_TOP, w) + image.shape[2:], image.dtype)
    out[PAD_TOP : PAD_TOP + h] = image
    return out


@lru_cache(maxsize=3)
def masked_stage_clip(path: str, n: int = 48, letterboxed: bool = True) -> tuple[list, list, list]:
    """(masked 640x480 BGR frames, covered masks, original frames) of the first n frames
    where a face is found (640x360 as in the clip when not letterboxed)."""
    from lostface.factory import build_detector
    from lostface.stream.video import VideoReader
    from lostface.synthetic import draw_mask

    detector = build_detector(load_settings())
    masked, covered, original = [], [], []
    with VideoReader(path) as r:
        for item in r.items():
            if not isinstance(item, Frame):
                continue
            d = detector.detect(item.image)
            if not len(d):
                continue
            b = d.boxes
            k = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            sm = draw_mask(item.image, d.landmarks[k], kind="surgical", rng=0, variant="light_blue")
            fit = letterbox if letterboxed else np.ascontiguousarray
            masked.append(fit(sm.image))
            covered.append(fit(sm.covered))
            original.append(fit(item.image))
            if len(masked) >= n:
                break
    return masked, covered, original


class ServerThread:
    """A LiveServer on its own event loop in a thread (for clients that block: selenium, raw
    sockets, a table of requests against one server)."""

    def __init__(self, server) -> None:
        self.server = server
        self.loop = asyncio.new_event_loop()
        self.url = ""
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.url = self.loop.run_until_complete(self.server.start(port=0))
        self._ready.set()
        self.loop.run_forever()

    def __enter__(self) -> ServerThread:
        self._thread.start()
        assert self._ready.wait(60)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@lru_cache(maxsize=2)
def singer_frames(path: str, letterboxed: bool = True, n: int = 45) -> tuple[list, list, list]:
    """The stage clip's singer facing the camera: (open frames 90.., masked frames 150.. with
    a synthetic mask on his face, their covered masks). A capture learns him from the open
    frames; the masked ones are his face to restore."""
    from lostface.factory import build_detector
    from lostface.stream.video import VideoReader
    from lostface.synthetic import draw_mask

    detector = build_detector(load_settings())
    fit = letterbox if letterboxed else np.ascontiguousarray
    wanted = set(range(90, 90 + n)) | set(range(150, 150 + n))
    open_, masked, covered = [], [], []
    with VideoReader(path) as r:
        index = -1
        for item in r.items():
            if not isinstance(item, Frame):
                continue
            index += 1
            if index not in wanted:
                continue
            if index < 150:
                open_.append(fit(item.image))
                continue
            d = detector.detect(item.image)
            b = d.boxes
            k = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
            sm = draw_mask(item.image, d.landmarks[k], kind="surgical", rng=0, variant="light_blue")
            masked.append(fit(sm.image))
            covered.append(fit(sm.covered))
            if index >= 150 + n - 1:
                break
    return open_, masked, covered
