"""Live frame sources: a webcam, a video file played at its own rate, a WebRTC track.

Every source reads on its own thread into a one-frame slot where the newest frame replaces
an unread one, so a slow consumer never builds a backlog and always gets the freshest
picture. `get(timeout)` hands out (Frame, capture_time) pairs; capture_time is
`time.monotonic()` when the frame was read, the start of its end-to-end latency.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np

from lostface.errors import InputError, LostfaceError
from lostface.frame import Frame

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Captured:
    """A frame and when it entered the process (time.monotonic())."""

    frame: Frame
    t_capture: float


class SourceEnded(Exception):
    """The source has no more frames (end of file, camera gone): `error` says why, if not EOF."""

    def __init__(self, error: BaseException | None = None):
        super().__init__(str(error) if error else "end of stream")
        self.error = error


class LatestSlot:
    """A one-item mailbox between threads: put() replaces an unread item (counted as dropped)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: object | None = None
        self._closed: BaseException | None = None
        self.dropped = 0
        self.put_count = 0

    def put(self, item: object) -> None:
        with self._cond:
            if self._item is not None:
                self.dropped += 1
            self._item = item
            self.put_count += 1
            self._cond.notify_all()

    def get(self, timeout: float) -> object | None:
        """The newest item, or None after `timeout` seconds; raises SourceEnded once closed."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._item is None:
                if self._closed is not None:
                    raise self._closed
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)
            item, self._item = self._item, None
            return item

    def close(self, reason: BaseException | None = None) -> None:
        with self._cond:
            self._closed = reason if reason is not None else SourceEnded()
            self._cond.notify_all()


class ThreadedSource:
    """Base: a reader thread fills a LatestSlot; subclasses implement _open/_read/_release."""

    name = "source"

    def __init__(self) -> None:
        self.slot = LatestSlot()
        self.rate: float = 30.0
        self.size: tuple[int, int] = (0, 0)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_read = 0

    # subclass hooks ---------------------------------------------------------------------
    def _open(self) -> None:
        raise NotImplementedError

    def _read(self) -> np.ndarray | None:
        """One BGR frame, or None at the end."""
        raise NotImplementedError

    def _release(self) -> None:
        pass

    def _stamp(self, now: float, t0: float) -> tuple[int, Fraction]:
        """The timestamp of the frame just read: by default when it was read (90 kHz)."""
        return int(round((now - t0) * 90000)), Fraction(1, 90000)

    # ------------------------------------------------------------------------------------
    def start(self) -> ThreadedSource:
        """Open the device/file (errors raise here, in the caller) and start reading."""
        self._open()
        self._thread = threading.Thread(target=self._run, name=f"lostface-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.monotonic()
        reason: BaseException | None = None
        try:
            while not self._stop.is_set():
                img = self._read()
                if img is None:
                    break
                now = time.monotonic()
                pts, tb = self._stamp(now, t0)
                self.slot.put(Captured(Frame(img, self.frames_read, pts, tb), now))
                self.frames_read += 1
        except LostfaceError as exc:  # the source's own message, or a sink's (on_audio)
            reason = exc
        except Exception as exc:  # a device error ends the stream with its message
            log.debug("source failed", exc_info=True)
            reason = InputError(f"The {self.name} failed while reading ({exc}).")
        finally:
            with suppress(Exception):
                self._release()
            self.slot.close(SourceEnded(reason))

    def get(self, timeout: float = 1.0) -> Captured | None:
        return self.slot.get(timeout)  # type: ignore[return-value]

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ThreadedSource:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def _camera_help() -> str:
    if sys.platform.startswith("linux"):
        return "list cameras with `ls /dev/video*` (or `v4l2-ctl --list-devices`)"
    return "check that a camera is connected and that this program may use it"


def parse_device(device: str | int) -> int | str:
    """'0' -> 0 (an index); '/dev/video2' stays a path."""
    if isinstance(device, int):
        return device
    text = str(device).strip()
    return int(text) if text.isdigit() else text


class CameraSource(ThreadedSource):
    """A webcam through OpenCV (V4L2 on Linux), by index or device path."""

    name = "camera"

    def __init__(
        self,
        device: str | int = 0,
        width: int = 640,
        height: int = 480,
        fps: float = 30.0,
        read_failures: int = 30,
    ) -> None:
        super().__init__()
        self.device = parse_device(device)
        self.want = (int(width), int(height), float(fps))
        self.read_failures = read_failures
        self._cap: Any = None

    def _open(self) -> None:
        import cv2

        dev = self.device
        if isinstance(dev, str) and not Path(dev).exists():
            raise InputError(f"No camera at {dev}; {_camera_help()}.")
        if isinstance(dev, int) and sys.platform.startswith("linux"):
            if not Path(f"/dev/video{dev}").exists():
                raise InputError(
                    f"No camera {dev} (/dev/video{dev} does not exist); {_camera_help()}, "
                    "or play a file with --file to test without a camera."
                )
        if isinstance(dev, str) and not os.access(dev, os.R_OK | os.W_OK):
            raise InputError(
                f"Camera {dev} cannot be opened (permission denied); add yourself to the "
                "`video` group or check the device's permissions."
            )
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(dev, backend)
        if not cap.isOpened():
            cap.release()
            raise InputError(
                f"Camera {dev} could not be opened; it may be busy in another program "
                "(close it there) or not be a capture device."
            )
        w, h, fps = self.want
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, w)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, h)
        cap.set(cv2.CAP_PROP_FPS, fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # the newest picture, not a queue of old ones
        ok, img = cap.read()
        if not ok or img is None:
            cap.release()
            raise InputError(
                f"Camera {dev} opened but gives no picture; it may be busy in another program."
            )
        self._cap = cap
        self._first: np.ndarray | None = img
        self.size = (int(img.shape[1]), int(img.shape[0]))
        self.rate = float(cap.get(cv2.CAP_PROP_FPS) or fps) or fps
        if self.size != (w, h):
            log.info("Camera %s gives %dx%d (asked for %dx%d).", dev, *self.size, w, h)

    def _read(self) -> np.ndarray | None:
        if self._first is not None:
            img, self._first = self._first, None
            return img
        failures = 0
        while not self._stop.is_set():
            ok, img = self._cap.read()
            if ok and img is not None:
                return img
            failures += 1
            if failures >= self.read_failures:
                raise InputError(
                    f"Camera {self.device} stopped giving pictures (disconnected?); "
                    "reconnect it and start again."
                )
            time.sleep(0.02)
        return None

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class FileSource(ThreadedSource):
    """A video file played at its own frame rate (live paths without a camera), from its first
    frame, upright (see VideoReader), with the file's own timestamps.

    audio: the file's audio stream (None without one), the template for a sink that carries
    the sound; set on_audio before start() and every audio packet is handed to it, on the
    reading thread, its timestamps on the same clock as the frames' (loops continue it)."""

    name = "file"

    def __init__(self, path: str | Path, loop: bool = False, limit: int | None = None) -> None:
        super().__init__()
        from lostface.stream.video import VideoReader

        self.path = Path(path)
        self.loop = loop
        self.limit = limit
        # opened now: a bad file fails here with a clear message, and its audio stream is
        # there for sinks to copy; nothing is read until start()
        self._reader: Any = VideoReader(self.path)
        self.rate = float(self._reader.info.rate) or 30.0
        self.size = (self._reader.info.width, self._reader.info.height)
        self.audio = self._reader.audio
        self.on_audio: Callable[[Any], None] | None = None
        self._items: Any = None
        self._next_t = 0.0
        self._count = 0
        self._offset = Fraction(0)  # seconds added to the file's times (each loop goes on)
        self._first: Fraction | None = None  # the file's first frame time
        self._last = Fraction(0)  # the last frame's time in the file
        self._time: tuple[int, Fraction] = (0, Fraction(1, 90000))
        self._audio_last: Fraction | None = None  # the last audio packet handed on (seconds)

    def _open(self) -> None:
        self._items = iter(self._reader.items())
        self._next_t = time.monotonic()

    def _rewind(self) -> None:
        """Back to the first frame for another loop; times go on from the last frame's end."""
        if self._first is not None:
            self._offset += self._last + Fraction(1) / Fraction(self.rate) - self._first
        self._reader.container.seek(0)
        self._items = iter(self._reader.items())

    def _shift(self, packet: Any) -> Any:
        if self._offset and packet.time_base:
            ticks = int(round(self._offset / packet.time_base))
            if packet.pts is not None:
                packet.pts += ticks
            if packet.dts is not None:
                packet.dts += ticks
        return packet

    def _stamp(self, now: float, t0: float) -> tuple[int, Fraction]:
        return self._time

    def _read(self) -> np.ndarray | None:
        if self.limit is not None and self._count >= self.limit:
            return None
        while True:
            item = next(self._items, None)
            if item is None:
                if not self.loop or self._first is None:
                    return None
                self._rewind()
                continue
            if isinstance(item, Frame):
                break
            if self.on_audio is not None:
                packet = self._shift(item)
                t = packet.dts if packet.dts is not None else packet.pts
                if t is not None and packet.time_base:
                    at = Fraction(t) * packet.time_base
                    # a new pass's first sound can overlap the last one's tail (encoder
                    # priming and padding): that sliver is left out, the clock only goes on
                    if self._audio_last is None or at > self._audio_last:
                        self._audio_last = at
                        self.on_audio(packet)
        t = Fraction(item.pts or 0) * (item.time_base or 0)
        if self._first is None:
            self._first = t
        self._last = t
        tb = item.time_base or Fraction(1, 90000)
        self._time = (int(round((t + self._offset) / tb)), tb)
        # pace: each frame leaves at its slot in the file's rate, never faster
        self._next_t += 1.0 / self.rate
        delay = self._next_t - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)
        elif delay < -1.0:
            self._next_t = time.monotonic()  # fell far behind: do not rush to catch up
        self._count += 1
        return item.image

    def _release(self) -> None:
        if self._reader is not None:
            self._reader.close()

    def close(self) -> None:
        super().close()
        self._reader.close()  # also when it was never started


class ArraySource(ThreadedSource):
    """In-memory frames played at a given rate (tests and benchmarks)."""

    name = "frames"

    def __init__(self, images: list[np.ndarray], rate: float = 30.0, loops: int = 1) -> None:
        super().__init__()
        if not images:
            raise InputError("ArraySource needs at least one frame.")
        self.images = images
        self.rate = rate
        self.loops = loops
        self.size = (int(images[0].shape[1]), int(images[0].shape[0]))
        self._i = 0
        self._next_t = 0.0

    def _open(self) -> None:
        self._next_t = time.monotonic()

    def _read(self) -> np.ndarray | None:
        if self._i >= len(self.images) * self.loops:
            return None
        self._next_t += 1.0 / self.rate
        delay = self._next_t - time.monotonic()
        if delay > 0:
            self._stop.wait(delay)
        img = self.images[self._i % len(self.images)].copy()
        self._i += 1
        return img


def open_source(
    camera: str | int | None = None,
    file: str | Path | None = None,
    width: int = 640,
    height: int = 480,
    fps: float = 30.0,
    loop: bool = False,
) -> ThreadedSource:
    """The command line's source: a file when given, else the camera."""
    if file is not None:
        return FileSource(file, loop=loop)
    return CameraSource(camera if camera is not None else 0, width, height, fps)


class TrackSource:
    """Frames of a remote WebRTC track, pulled on the asyncio loop, handed to a thread.

    `pump()` is a coroutine on the event loop: it only awaits `track.recv()` and drops the
    av.VideoFrame into the slot; conversion to BGR happens in the consumer thread
    (`get()`), never on the loop.
    """

    def __init__(self, track) -> None:  # an aiortc MediaStreamTrack of kind "video"
        self.track = track
        self.slot = LatestSlot()
        self.received = 0
        self.index = 0

    async def pump(self) -> None:
        from aiortc.mediastreams import MediaStreamError

        reason: BaseException | None = None
        try:
            while True:
                vf = await self.track.recv()
                self.received += 1
                self.slot.put((vf, time.monotonic()))
        except MediaStreamError:
            pass
        except Exception as exc:  # the peer vanished or sent something undecodable
            reason = exc
        finally:
            self.slot.close(SourceEnded(reason))

    def get(self, timeout: float = 1.0) -> tuple[Captured, Any] | None:
        """(Captured BGR frame, the av.VideoFrame it came from) or None on timeout."""
        item: Any = self.slot.get(timeout)
        if item is None:
            return None
        vf, t = item
        img = vf.to_ndarray(format="bgr24")
        frame = Frame(img, self.index, vf.pts, vf.time_base)
        self.index += 1
        return Captured(frame, t), vf

    def close(self) -> None:
        self.slot.close()
