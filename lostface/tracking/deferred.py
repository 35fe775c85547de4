"""A KalmanTracker built on a background thread, so a video run opens its model, its
references and its input while the tracker's libraries load.

The tracker needs filterpy's KalmanFilter and scipy's linear_sum_assignment; importing them
(scipy.stats and scipy.optimize) is about half a second of pure Python. Decoding (FFmpeg) and
detection (onnxruntime) release the GIL, so the first frames can be decoded and detected on
the other core meanwhile. The pipeline asks `ready` before it tracks and treats a tracker
still loading like a detection still running: frames arrive and detect up to
tracking.detect_ahead, then the loop waits; every frame is tracked in order, with the same
detections, as with a tracker built up front.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection

import numpy as np

from lostface.config import TrackingSettings
from lostface.frame import Detections, FaceTrack
from lostface.stages import Tracker


def _kalman_tracker(settings: TrackingSettings) -> Tracker:
    from lostface.tracking.tracker import KalmanTracker

    return KalmanTracker(settings)


class DeferredTracker(Tracker):
    """Tracker protocol: a KalmanTracker(settings) (or build(settings)) built on a thread
    started here.

    `ready` never blocks; every other use waits for the tracker (and re-raises the error
    that building it raised, e.g. a missing filterpy).
    """

    def __init__(
        self,
        settings: TrackingSettings,
        build: Callable[[TrackingSettings], Tracker] | None = None,
    ) -> None:
        self._settings = settings
        self._build_fn = build or _kalman_tracker
        self._tracker: Tracker | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: list[Callable[[], None]] = []
        self._thread = threading.Thread(
            target=self._build, name="lostface-tracker-load", daemon=True
        )
        self._thread.start()

    def _build(self) -> None:
        try:
            self._tracker = self._build_fn(self._settings)
        except BaseException as exc:  # raised again where the tracker is used
            self._error = exc
        finally:
            # callbacks run before `ready` turns true, so whoever waits for the tracker
            # finds their effects done
            while True:
                with self._lock:
                    callbacks, self._callbacks = self._callbacks, []
                    if not callbacks:
                        self._done.set()
                        break
                for fn in callbacks:
                    fn()

    def when_ready(self, fn: Callable[[], None]) -> None:
        """Call fn once the tracker is built (or failed): now if it already is, else on the
        loading thread before `ready` turns true."""
        with self._lock:
            if not self._done.is_set():
                self._callbacks.append(fn)
                return
        fn()

    @property
    def ready(self) -> bool:
        """True once the tracker is built (or failed to build): using it will not wait."""
        return self._done.is_set()

    @property
    def tracker(self) -> Tracker:
        """The built tracker, waiting for it if need be."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        assert self._tracker is not None
        return self._tracker

    @property
    def needs_detection(self) -> bool:
        # Before the first update there are no tracks, so none waits for a detection.
        if self._tracker is None:
            return False
        return self._tracker.needs_detection

    @property
    def tracks(self) -> list[FaceTrack]:
        if self._tracker is None:
            return []
        return list(self._tracker.tracks)

    def update(
        self,
        detections: Detections | None,
        scene_cut: bool = False,
        image: np.ndarray | None = None,
        still: Collection[int] = (),
    ) -> list[FaceTrack]:
        return self.tracker.update(detections, scene_cut=scene_cut, image=image, still=still)

    def reset(self) -> None:
        self.tracker.reset()
