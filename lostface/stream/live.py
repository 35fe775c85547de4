"""The live frame loop: source -> pipeline -> sinks, at the source's rate.

The loop always takes the newest captured frame (older unread ones are dropped), pushes it
through a zero-delay Pipeline (keyframe work runs on the pipeline's own worker thread, so
the loop only detects, tracks and composites), stamps the "AI-restored" badge and hands the
frame to sinks that encode/send on their own threads from one-frame slots. End-to-end
latency (capture -> handed to the sinks) is measured for every frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Protocol

import cv2
import numpy as np

from lostface.errors import LostfaceError, OutputError
from lostface.frame import Frame
from lostface.pipeline import Pipeline
from lostface.stages import Detector
from lostface.stream.sources import Captured, LatestSlot, SourceEnded

log = logging.getLogger(__name__)

BADGE_TEXT = "AI-restored"


def draw_badge(image: np.ndarray, text: str = BADGE_TEXT) -> None:
    """A visible label in the bottom-left corner: viewers should know the face was painted."""
    h, w = image.shape[:2]
    scale = max(0.4, h / 720.0)
    thick = max(1, int(round(scale * 2)))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = int(6 * scale) + 2
    x0, y1 = pad, h - pad
    x1, y0 = min(w, x0 + tw + 2 * pad), max(0, y1 - th - base - 2 * pad)
    roi = image[y0:y1, x0:x1]
    roi[...] = (roi.astype(np.uint16) * 2 // 5 + np.array([102, 30, 0], np.uint16) * 3 // 5).astype(
        np.uint8
    )  # dark blue panel over the picture, 60 % opaque
    cv2.putText(
        image,
        text,
        (x0 + pad, y1 - pad - base // 2),
        cv2.FONT_HERSHEY_SIMPLEX,
        scale,
        (255, 255, 255),
        thick,
        cv2.LINE_AA,
    )


def badge_box(width: int, height: int, text: str = BADGE_TEXT) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1) the badge covers on a width x height frame (for tests and layouts)."""
    img = np.zeros((height, width, 3), np.uint8)
    draw_badge(img, text)
    ys, xs = np.nonzero(img.any(axis=2))
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


class LatencyMeter:
    """Per-frame latencies (seconds) and a frames/s estimate over a sliding window."""

    def __init__(self, window: int = 600) -> None:
        self._lat: deque[float] = deque(maxlen=window)
        self._times: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()
        self.count = 0

    def add(self, latency: float, now: float | None = None) -> None:
        with self._lock:
            self._lat.append(latency)
            self._times.append(time.monotonic() if now is None else now)
            self.count += 1

    def fps(self, span: float = 2.0) -> float:
        with self._lock:
            if len(self._times) < 2:
                return 0.0
            end = self._times[-1]
            recent = [t for t in self._times if t >= end - span]
        if len(recent) < 2 or recent[-1] <= recent[0]:
            return 0.0
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def summary(self) -> dict[str, float]:
        with self._lock:
            a = np.asarray(self._lat, np.float64) * 1000
        if a.size == 0:
            return {"frames": self.count, "fps": 0.0, "p50_ms": 0.0, "p95_ms": 0.0}
        return {
            "frames": self.count,
            "fps": round(self.fps(), 2),
            "p50_ms": round(float(np.percentile(a, 50)), 2),
            "p95_ms": round(float(np.percentile(a, 95)), 2),
        }


def process_frame(pipe: Pipeline, frame: Frame, badge: bool) -> Frame:
    """One live frame through a zero-delay pipeline; the badge when restoration is on."""
    outs = pipe.push(frame)
    out = outs[-1].frame if outs else frame
    if badge and pipe.restore_enabled:
        draw_badge(out.image)
    return out


class BackgroundDetector(Detector):
    """Runs face detection on its own thread so a slow detection never holds a live frame.

    The pipeline asks on every frame (give it tracking.detect_every=1); every `every`-th ask
    hands a copy of the frame to the thread, and an ask returns the newest finished result
    once, else None ("no measurement": the tracker predicts). Results arrive a frame or two
    after their picture, which the Kalman filter absorbs; the frame loop no longer waits the
    30-70 ms of a detection on a small CPU.
    """

    def __init__(self, inner, every: int = 3, name: str = "detect") -> None:
        self.inner = inner
        self.every = max(1, every)
        self._cond = threading.Condition()
        self._buf: np.ndarray | None = None
        self._job = False
        self._busy = False
        self._result = None
        self._closed = False
        self._calls = 0
        self._want = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"lostface-{name}", daemon=True)
        self._thread.start()

    def detect(self, image: np.ndarray):
        if self.error is not None:
            raise self.error
        with self._cond:
            result, self._result = self._result, None
            if self._calls % self.every == 0:
                self._want = True  # due; sent as soon as the thread is free
            self._calls += 1
            if self._want and not self._busy and not self._job:
                self._want = False
                if self._buf is None or self._buf.shape != image.shape:
                    self._buf = np.empty_like(image)
                np.copyto(self._buf, image)  # the loop composites into `image` afterwards
                self._job = True
                self._cond.notify()
        return result

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._job and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                self._job, self._busy = False, True
                image = self._buf
            try:
                dets = self.inner.detect(image)
            except BaseException as exc:
                log.exception("Face detection failed")
                self.error = exc
                dets = None
            with self._cond:
                self._busy = False
                self._result = dets  # the buffer is free again: one job at a time

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=10)


def live_pipeline(settings, stages, background_detection: bool = True) -> Pipeline:
    """A zero-delay Pipeline for live sources; detection on its own thread by default."""
    import dataclasses

    if background_detection and not isinstance(stages.detector, BackgroundDetector):
        every = settings.tracking.detect_every
        stages.detector = BackgroundDetector(stages.detector, every)
        settings = dataclasses.replace(
            settings, tracking=dataclasses.replace(settings.tracking, detect_every=1)
        )
    return Pipeline(settings, stages, delay_frames=0, detect_ahead=0)


def close_pipeline(pipe: Pipeline) -> None:
    """Pipeline.close() plus its detector's threads (live_pipeline's background detector)."""
    pipe.close()
    pipe.stages.detector.close()


class Sink(Protocol):
    def send(self, frame: Frame) -> None: ...

    def close(self) -> None: ...


class ThreadedSink:
    """Runs a sink on its own thread from a one-frame slot: the loop never waits for I/O,
    and a slow sink skips frames instead of building a backlog."""

    def __init__(self, inner: Sink, name: str = "sink") -> None:
        self.inner = inner
        self.name = name
        self.slot = LatestSlot()
        self.error: BaseException | None = None
        self.sent = 0
        self._thread = threading.Thread(target=self._run, name=f"lostface-{name}", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                frame = self.slot.get(0.5)
            except SourceEnded:
                return
            if frame is None or self.error is not None:
                continue
            try:
                self.inner.send(frame)  # type: ignore[arg-type]
                self.sent += 1
            except BaseException as exc:
                log.debug("sink %s failed", self.name, exc_info=True)
                self.error = exc

    def send(self, frame: Frame) -> None:
        if self.error is not None:
            if isinstance(self.error, LostfaceError):
                raise self.error
            raise OutputError(f"The {self.name} output failed: {self.error}") from self.error
        self.slot.put(frame)

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def close(self) -> None:
        self.slot.close()
        self._thread.join(timeout=10)
        with suppress(Exception):
            self.inner.close()


@dataclass
class LiveStats:
    frames: int = 0
    captured: int = 0
    dropped: int = 0  # captured frames the loop never took (the newest won)
    seconds: float = 0.0
    latency: dict = field(default_factory=dict)
    stopped_by: str = ""

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class LiveLoop:
    """Source -> pipeline -> sinks until the source ends, `stop()`, or a limit is reached."""

    def __init__(
        self,
        source,
        pipeline: Pipeline,
        sinks: Sequence[Sink],
        badge: bool = True,
        max_frames: int | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self.source = source
        self.pipe = pipeline
        self.sinks = sinks
        self.badge = badge
        self.max_frames = max_frames
        self.max_seconds = max_seconds
        self.meter = LatencyMeter()
        self._stop = threading.Event()
        self.stats = LiveStats()
        self.on_frame: Callable[[Frame, float], None] | None = None  # readouts

    def stop(self) -> None:
        self._stop.set()

    def run(self) -> LiveStats:
        """Blocking; returns the stats. A source error (camera gone) is raised after cleanup."""
        st = self.stats
        t0 = time.monotonic()
        error: BaseException | None = None
        try:
            while not self._stop.is_set():
                if self.max_frames is not None and st.frames >= self.max_frames:
                    st.stopped_by = "max_frames"
                    break
                if self.max_seconds is not None and time.monotonic() - t0 >= self.max_seconds:
                    st.stopped_by = "max_seconds"
                    break
                try:
                    cap: Captured | None = self.source.get(0.25)
                except SourceEnded as end:
                    st.stopped_by = "source_ended"
                    error = end.error
                    break
                if cap is None:
                    continue
                out = process_frame(self.pipe, cap.frame, self.badge)
                for sink in self.sinks:
                    sink.send(out)
                now = time.monotonic()
                lat = now - cap.t_capture
                self.meter.add(lat, now)
                st.frames += 1
                if self.on_frame is not None:
                    self.on_frame(out, lat)
            else:
                st.stopped_by = st.stopped_by or "stop"
        finally:
            st.seconds = time.monotonic() - t0
            st.latency = self.meter.summary()
            slot = getattr(self.source, "slot", None)
            if slot is not None:
                st.captured = slot.put_count
                st.dropped = slot.dropped
        if error is not None:
            raise error
        return st
