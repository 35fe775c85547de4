"""The frame pipeline: detect and track every frame, restore on keyframes off the loop,
composite the newest patch of each face on every frame.

    pipe = Pipeline(settings, stages)
    for frame in source:
        for out in pipe.push(frame):   # frames leave after `keyframe.delay_frames`
            sink.write(out.frame)
    for out in pipe.flush():
        sink.write(out.frame)
    pipe.close()

Keyframe work (lostface.restore.painter: segment, upscale, restore) runs on a worker thread fed
by a bounded queue; when the queue is full the newest job replaces the oldest (files: the
oldest of a face still in view, which asks again if it has no patch yet, and not the second
look of a face found covered once after being open, Painted.recheck).
Frames wait in a short delay line before compositing, so a patch painted on a keyframe
also reaches the frames just before it (a face is restored from its first frame on, in files;
between two keyframes a frame takes the patch that fits its face's covering better,
KeyframeWorker.result and Compositor.fit);
a frame whose face's keyframe is still being painted stays up to _HOLD times the line's length,
and past that the loop waits for it. Live sources set delay_frames = 0: the loop never waits
for the worker.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial

import cv2
import numpy as np

from lostface.config import Settings
from lostface.frame import Detections, FaceTrack, Frame, Patch
from lostface.provenance.framemark import FrameMarker
from lostface.restore import align
from lostface.restore.painter import Painted, Painter, PaintJob
from lostface.stages import (
    CarriedFit,
    Compositor,
    Detector,
    KeyframePolicy,
    SceneCutDetector,
    Tracker,
)

log = logging.getLogger(__name__)

# a frame whose face's keyframe is still being painted is held in the delay line up to this
# many times its length (files; live has no line)
_HOLD = 4
# results kept per face: keyframes come at most once per detection (every 4th frame by default),
# so these span the delay line held _HOLD times its length
_RESULTS_KEPT = 16


@dataclass
class Stages:
    """The pipeline's stage objects, built by lostface.factory (models are passed in)."""

    detector: Detector
    tracker: Tracker
    scene_cut: SceneCutDetector
    policy: KeyframePolicy
    painter: Painter  # the keyframe work: segment, upscale, restore
    compositor: Compositor
    # marks every frame a face was painted on (provenance.watermark; a FrameMarker)
    marker: FrameMarker | None = None


@dataclass(slots=True)
class FaceView:
    """A track as it was on one frame (the frame is composited later, after the delay line)."""

    track_id: int
    box: np.ndarray
    landmarks: np.ndarray
    keyframe: bool
    masked: bool | None = None
    identity: str | None = None
    reference: str | None = None  # what painted it: "given", "self" or None (Painted.source)
    hidden: bool = False  # behind another face (FaceTrack.hidden): its patch is not drawn
    detected: bool = False  # measured by the detector here (keyframe.follow_mesh bends there)


@dataclass(slots=True)
class Output:
    frame: Frame
    faces: list[FaceView]
    scene_cut: bool = False
    # the frame's compositing, when the pipeline leaves it to the caller's thread
    # (Pipeline(composite_later=True)); finish() runs it once
    pending: Callable[[], None] | None = None

    def finish(self) -> Frame:
        """Composite the frame now if that was left for later; returns the frame."""
        if self.pending is not None:
            run, self.pending = self.pending, None
            run()
        return self.frame

    def record(self) -> dict:
        """The per-frame JSON line of `--tracks`."""
        return {
            "frame": self.frame.index,
            "pts": self.frame.pts,
            "faces": [
                {
                    "track_id": f.track_id,
                    "box": [round(float(v), 1) for v in f.box],
                    "masked": bool(f.masked),
                    "keyframe": f.keyframe,
                    "identity": f.identity,
                    "reference": f.reference,
                }
                for f in self.faces
            ],
        }


@dataclass(slots=True)
class _Arrival:
    frame: Frame
    cut: bool
    detections: Future | Detections | None  # None: no detection scheduled for this frame


def _ready(pending: Future | Detections | None) -> bool:
    return not isinstance(pending, Future) or pending.done()


@dataclass
class Timings:
    """Seconds spent per stage, per call (for benchmarks and the run summary)."""

    samples: dict[str, list[float]] = field(default_factory=dict)

    def add(self, stage: str, seconds: float) -> None:
        self.samples.setdefault(stage, []).append(seconds)

    def summary(self) -> dict[str, dict[str, float]]:
        out = {}
        for k, v in self.samples.items():
            a = np.asarray(v) * 1000
            out[k] = {
                "count": len(v),
                "p50_ms": float(np.percentile(a, 50)),
                "p95_ms": float(np.percentile(a, 95)),
                "total_s": float(a.sum() / 1000),
            }
        return out


def _lower_priority(nice: int) -> None:
    """Add `nice` to the calling thread's niceness (Linux: a thread is a task of its own;
    elsewhere setpriority would reach the whole process, so nothing is done)."""
    if not sys.platform.startswith("linux"):
        return
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + nice, 19))
    except OSError as exc:  # a sandbox may refuse it: the worker then runs as the loop does
        log.debug("Keyframe worker keeps its priority: %s", exc)


class KeyframeWorker:
    """Runs keyframe jobs through the painter on one background thread; the newest job wins
    over a backlog. Every call of the painter (paint, forget, reset) happens on that thread
    (or in the caller's, when synchronous), so engines need no locks of their own."""

    def __init__(
        self,
        painter: Painter,
        queue_size: int,
        timings: Timings,
        synchronous: bool = False,
        batch: int = 1,
        keep_within: int = 0,
        nice: int = 0,
    ):
        """keep_within: a face's pending job is superseded by its newer one only when that is
        more than this many frames later (as long as a delay line holds a frame for its
        face's keyframe: the frames between the two still wait for the older job's patch;
        0, live: always). nice: niceness added to the worker's thread (Linux only)."""
        self.painter = painter
        self.nice = nice
        self.keep_within = keep_within
        self.timings = timings
        self.synchronous = synchronous
        self.batch = max(1, batch)
        self.queue_size = queue_size
        self._jobs: deque[PaintJob] = deque()
        # when each queued job was sent (track id, frame index): a covered face's wait for its
        # patch is timed as "keyframe_wait" (how long a painted face lags its keyframe)
        self._sent: dict[tuple[int, int], float] = {}
        # per face, its newest results with the frame each was painted on: a frame leaving the
        # delay line takes the one of its own time (result(track_id, frame_index))
        self._results: dict[int, deque[tuple[int, Painted]]] = {}
        self._working: list[PaintJob] = []  # the jobs being painted now
        self._forgets: set[int] = set()
        self._rechecks: set[int] = set()  # faces whose newest result asks for another look
        self._reset = False
        self._adopt: list[tuple[str, list]] = []  # people to paint from (painter.adopt)
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._busy = 0
        self._closed = False
        self.dropped = 0
        self.error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if not synchronous:
            self._thread = threading.Thread(
                target=self._run, name="lostface-keyframes", daemon=True
            )
            self._thread.start()

    def submit(self, job: PaintJob, live: Collection[int] = ()) -> int | None:
        """Queue a job; returns the track whose pending job it pushed out of a full queue: the
        oldest. In files (keep_within) only a job whose frames can do without it: the oldest
        of a face still in the loop (`live`: it can ask again) with a keyframe painted already
        (its frames take that one meanwhile) that does not wait for a second look
        (Painted.recheck, which decides whether it is painted at all). A face's first job,
        its second look and the jobs of a face gone from the loop stay, as the frames held in
        the delay line wait for them (a scene cut's new faces pushed out the last shot's
        pending keyframes, whose frames then took an older patch, and each other's first,
        whose frames left the line unpainted); with none to push out, the queue grows past
        its size (the loop waits for those keyframes anyway)."""
        if self.synchronous:
            self._sent[(job.track_id, job.frame_index)] = time.perf_counter()
            self._work([job])
            return None
        with self._wake:
            # a newer keyframe of the same face supersedes its pending one, unless the frames
            # between them still wait in the delay line for the older one's patch
            late = job.frame_index - self.keep_within
            for old in [j for j in self._jobs if j.track_id == job.track_id]:
                if old.frame_index >= late:
                    continue
                self._jobs.remove(old)
                self._sent.pop((old.track_id, old.frame_index), None)
            evicted = None
            if len(self._jobs) >= self.queue_size:
                oldest: PaintJob | None = self._jobs[0]
                if self.keep_within:
                    spare = (
                        j
                        for j in self._jobs
                        if j.track_id in live
                        and j.track_id in self._results
                        and not self._awaits_recheck(j.track_id)
                    )
                    oldest = next(spare, None)
                if oldest is not None:
                    self.dropped += 1
                    self._jobs.remove(oldest)
                    evicted = oldest.track_id
                    self._sent.pop((oldest.track_id, oldest.frame_index), None)
            self._sent[(job.track_id, job.frame_index)] = time.perf_counter()
            self._jobs.append(job)
            self._wake.notify()
            return evicted

    def _awaits_recheck(self, track_id: int) -> bool:
        """Whether the face's newest result asks for a second look (with the lock held)."""
        kept = self._results.get(track_id)
        return bool(kept) and kept[-1][1].recheck  # type: ignore[index]

    def _run(self) -> None:
        if self.nice > 0:
            _lower_priority(self.nice)
        while True:
            with self._wake:
                while not self._jobs and not self._closed and not self._chores():
                    self._wake.wait()
                if self._closed and not self._jobs:
                    return
                jobs: list[PaintJob] = []
                # a batch holds one job per face (a face's jobs are painted in order)
                while (
                    self._jobs
                    and len(jobs) < self.batch
                    and all(j.track_id != self._jobs[0].track_id for j in jobs)
                ):
                    jobs.append(self._jobs.popleft())
                self._working = jobs
                self._busy += 1
            try:
                self._housekeeping()
                if jobs:
                    self._work(jobs)
            except BaseException as exc:  # reported to the loop, which raises it
                log.exception("Keyframe job failed")
                self.error = exc
            finally:
                with self._wake:
                    self._working = []
                    self._busy -= 1
                    self._wake.notify_all()

    def _chores(self) -> bool:
        return self._reset or bool(self._forgets) or bool(self._adopt)

    def _housekeeping(self) -> None:
        """Forgets, resets and new people asked for by the loop, run here, between
        paintings."""
        with self._lock:
            forgets, self._forgets = self._forgets, set()
            reset, self._reset = self._reset, False
            adopt, self._adopt = self._adopt, []
        if reset:
            self.painter.reset()
        for track_id in forgets:
            self.painter.forget(track_id)
        for person, references in adopt:
            self.painter.adopt(person, references)

    def adopt(self, person: str, references: list) -> None:
        """Paint `person` from these references (lostface.restore.reference.Reference) from
        now on; done on the painter's thread, between paintings (Painter.adopt)."""
        with self._wake:
            self._adopt.append((person, list(references)))
            self._wake.notify()
        if self.synchronous:
            self._housekeeping()

    def _work(self, jobs: list[PaintJob]) -> None:
        for job, painted in zip(jobs, self.painter.paint_many(jobs), strict=True):
            for step, seconds in painted.seconds.items():
                self.timings.add(step, seconds)
            with self._lock:
                kept = self._results.setdefault(painted.track_id, deque(maxlen=_RESULTS_KEPT))
                kept.append((job.frame_index, painted))
                if painted.recheck:
                    self._rechecks.add(painted.track_id)
                else:
                    self._rechecks.discard(painted.track_id)
                sent = self._sent.pop((job.track_id, job.frame_index), None)
            if sent is not None and painted.patch is not None:
                self.timings.add("keyframe_wait", time.perf_counter() - sent)

    def result(
        self,
        track_id: int,
        frame_index: int | None = None,
        reach: int | None = None,
        fit: Callable[[Patch], float | None] | None = None,
        since: int = -1,
    ) -> Painted | None:
        """The face's newest result. With frame_index (a frame leaving the delay line), the
        result nearest that frame's time that decides the face as its time did:
        - the next keyframe's when it decides alike, is nearer in time than the newest
          painted on the frame or before it, and was painted at most `reach` frames after
          this one (a patch asked for on a head turn reaches the later frames of the turn;
          `reach` is the delay line's length, so that a frame held longer for a pending
          keyframe is painted as it would have been without the wait); else the newest
          painted on the frame or before it; a frame before the face's first keyframe takes
          that one. With `fit` (how well a patch fits the face on that frame: see
          Compositor.fit), of those two the one that fits better, not the nearer in time
          (not on a keyframe's own frame); and never one painted before `since` (the
          keyframe whose patch the face's previous frame took: a face does not go back to
          an older patch);
        - never a later one that decides otherwise (a face open on the frame and covered
          later in the shot, someone putting a covering on, is not painted there);
        - not the newest either when the frame waited long in the line (a patch painted far
          later is of another pose), unless the person the face was found to be is only
          known later: then the first result that paints that person (the delay line hides
          the identity gate's first looks)."""
        with self._lock:
            kept = list(self._results.get(track_id, ()))
        if not kept:
            return None
        if frame_index is None:
            return kept[-1][1]
        own = max((k for k, (i, _) in enumerate(kept) if i <= frame_index), default=None)
        nxt = own + 1 if own is not None else 0
        pick = own
        if own is None:
            pick = nxt
        elif nxt < len(kept):
            ahead, behind = kept[nxt][0] - frame_index, frame_index - kept[own][0]
            alike = kept[nxt][1].covered == kept[own][1].covered
            if alike and (reach is None or ahead <= reach):
                later = ahead < behind
                if kept[own][0] < since:
                    later = True
                elif fit is not None and behind > 0:
                    a, b = kept[own][1].patch, kept[nxt][1].patch
                    fa = None if a is None else fit(a)
                    fb = None if b is None else fit(b)
                    if fa is not None and fb is not None and fa != fb:
                        later = fb > fa
                if later:
                    pick = nxt
        assert pick is not None
        run = pick
        while run + 1 < len(kept) and kept[run + 1][1].covered == kept[pick][1].covered:
            run += 1
        person = kept[run][1].identity
        while kept[pick][1].identity != person and pick < run:
            pick += 1
        return kept[pick][1]

    def take_rechecks(self) -> set[int]:
        """The faces whose newest result asks for another keyframe (Painted.recheck), once."""
        with self._lock:
            out, self._rechecks = self._rechecks, set()
        return out

    def pending(self, track_id: int) -> bool:
        """Whether a job of this face is queued or being painted."""
        with self._lock:
            return any(j.track_id == track_id for j in (*self._working, *self._jobs))

    def _owed(self, track_ids: Collection[int], frame_index: int) -> bool:
        """Whether a job that a frame of these faces takes its patch from is queued or being
        painted: one sent on that frame or before, or a face's first (with the lock held)."""
        return any(
            j.track_id in track_ids
            and (j.frame_index <= frame_index or j.track_id not in self._results)
            for j in (*self._working, *self._jobs)
        )

    def wait_painted(self, track_ids: Collection[int], frame_index: int) -> None:
        """Block until the jobs that frame `frame_index` of these faces takes its patch from
        are painted (or dropped): those sent on it or before, and a face's first; or until
        the worker failed or closed."""
        with self._wake:
            while self._owed(track_ids, frame_index) and self.error is None and not self._closed:
                self._wake.wait(timeout=0.1)

    def drop(self, track_ids: set[int]) -> None:
        """Forget these faces: their results now, the painter's state on its thread."""
        with self._wake:
            for t in track_ids:
                self._results.pop(t, None)
            self._rechecks -= track_ids
            for key in [k for k in self._sent if k[0] in track_ids]:
                del self._sent[key]
            self._forgets |= track_ids
            self._wake.notify()
        if self.synchronous:
            self._housekeeping()

    def reset(self) -> None:
        """Forget every face (results now, the painter's state on its thread)."""
        with self._wake:
            self._results.clear()
            self._rechecks.clear()
            self._jobs.clear()
            self._sent.clear()
            self._forgets.clear()
            self._reset = True
            self._wake.notify()
        if self.synchronous:
            self._housekeeping()

    def known(self) -> set[int]:
        with self._lock:
            return set(self._results)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Block until queued jobs, forgets and resets are done (used at the end of a stream,
        never per frame)."""
        if self.synchronous:
            return
        deadline = time.monotonic() + timeout
        with self._wake:
            while (self._jobs or self._busy or self._chores()) and time.monotonic() < deadline:
                self._wake.wait(timeout=0.1)

    def close(self) -> None:
        with self._wake:
            self._closed = True
            self._jobs.clear()
            self._wake.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.painter.close()


class Pipeline:
    """Frames in, restored frames out; see the module docstring."""

    def __init__(
        self,
        settings: Settings,
        stages: Stages,
        *,
        synchronous: bool = False,
        delay_frames: int | None = None,
        detect_ahead: int | None = None,
        composite_later: bool = False,
    ):
        """composite_later: outputs leave with their faces decided (what --tracks records) and
        their compositing left to Output.finish(), which the caller runs in frame order on
        another thread (files: the encoder's), so the frame loop's thread does not paint."""
        self.settings = settings
        self.composite_later = composite_later
        self.stages = stages
        self.timings = Timings()
        self.delay = settings.keyframe.delay_frames if delay_frames is None else delay_frames
        self.worker = KeyframeWorker(
            stages.painter,
            settings.keyframe.queue_size,
            self.timings,
            synchronous,
            settings.keyframe.batch,
            _HOLD * self.delay,
            # files only: the delay line gives a lower-priority worker time; live, a patch
            # that waits for CPU shows late
            settings.keyframe.nice if self.delay > 0 else 0,
        )
        self._line: deque[Output] = deque()
        self._frame_no = 0
        self._live_ids: set[int] = set()
        self._confirmed: set[int] = set()  # tracks ever confirmed (tentative ones may be noise)
        self._submitted: set[int] = set()  # tracks with a keyframe job sent to the worker
        self._took: dict[int, int] = {}  # the keyframe whose patch each face took last
        self.restore_enabled = True
        self.debug_overlay = settings.output.debug_overlay
        self.keyframes = 0
        self.painted_faces = 0  # faces composited with a painted patch, over all frames
        # frames whose detection may still run on the detector thread (0: detect in the loop)
        self.detect_ahead = settings.tracking.detect_ahead if detect_ahead is None else detect_ahead
        self._arrivals: deque[_Arrival] = deque()
        self._detector_pool = (
            ThreadPoolExecutor(1, thread_name_prefix="lostface-detect")
            if self.detect_ahead > 0
            else None
        )

    # -- frame loop -------------------------------------------------------------------
    def push(self, frame: Frame) -> list[Output]:
        """Take one frame; return the frames whose delay has passed, composited.

        A frame arrives (scene-cut check; its detection starts on the detector thread when
        detect_ahead > 0), is tracked once its detection is back (in frame order), waits in
        the delay line, and leaves composited.
        """
        if self.worker.error is not None:
            raise self.worker.error
        t0 = time.perf_counter()
        cut = self.stages.scene_cut.is_cut(frame.image) if self._frame_no > 0 else False
        scheduled = self._frame_no % self.settings.tracking.detect_every == 0 or cut
        if not scheduled and not self._arrivals and self._tracker_waits():
            # every earlier frame is tracked, so this is the frame that confirms a tentative
            # face: start its detection now instead of waiting for it in _track
            scheduled = True
        pending = self._detect_async(frame.image, cut) if scheduled else None
        self._arrivals.append(_Arrival(frame, cut, pending))
        self._frame_no += 1
        out: list[Output] = []
        leaving = 0.0  # the frames leaving (timed as "composite" when composited here)
        while self._trackable():
            self._track(self._arrivals.popleft())
            t1 = time.perf_counter()
            self._release(out)
            leaving += time.perf_counter() - t1
        self.timings.add("loop", time.perf_counter() - t0 - leaving)
        return out

    def _release(self, out: list[Output]) -> None:
        """Frames past the delay line leave it, decided from the results known now.

        Called after each tracked frame: a frame leaves when the frame `delay` later is
        tracked, however many frames one push tracks (detections come back from their thread
        at any time), so with synchronous keyframes what each frame is painted with does not
        depend on timing."""
        while len(self._line) > self.delay:
            # a face whose keyframe is still being painted holds its frame longer (up to
            # _HOLD times the delay), so the frame gets the patch (and the person) of the
            # keyframe the loop already sent; a frame held that long waits for the keyframes
            # sent on it or before it, rather than leave with a patch of another pose
            head = self._line[0]
            if self.delay and self._patch_pending(head):  # live (no line): never
                if len(self._line) <= _HOLD * self.delay:
                    break
                t0 = time.perf_counter()
                self.worker.wait_painted(self._painted_faces(head), head.frame.index)
                self.timings.add("keyframe_hold", time.perf_counter() - t0)
            out.append(self._finish(self._line.popleft()))

    def flush(self) -> list[Output]:
        """End of stream: track what is pending, let keyframes land, release the delay line."""
        out: list[Output] = []
        while self._arrivals:
            self._track(self._arrivals.popleft())
            self._release(out)
        self.worker.wait_idle()
        if self.worker.error is not None:
            raise self.worker.error
        out += [self._finish(o) for o in self._line]
        self._line.clear()
        return out

    def close(self) -> None:
        self.worker.close()
        if self._detector_pool is not None:
            self._detector_pool.shutdown(wait=True, cancel_futures=True)

    def adopt(self, person: str, references: list) -> None:
        """Paint `person` from these aligned references from now on, as if given as photos
        (a face captured live, lostface.stream.capture); the frame loop does not wait."""
        self.worker.adopt(person, references)
        self.stages.policy.reset()  # every face is looked at again with the new person

    def reset(self) -> None:
        """Forget every face (a new source, or a seek)."""
        self.stages.tracker.reset()
        self.stages.scene_cut.reset()
        self.stages.policy.reset()
        self.stages.compositor.reset()
        self.worker.reset()
        self._arrivals.clear()
        self._line.clear()
        self._took.clear()
        self._frame_no = 0

    # -- internals ----------------------------------------------------------------------
    def _timed_detect(self, image: np.ndarray, cut: bool = False) -> Detections | None:
        td = time.perf_counter()
        if cut:
            self.stages.detector.new_shot()
        dets = self.stages.detector.detect(image)
        self.timings.add("detect", time.perf_counter() - td)
        return dets

    def _detect_async(self, image: np.ndarray, cut: bool = False) -> Future | Detections | None:
        """Start a detection (of the first frame of a shot, with cut): on the detector thread
        (detect-ahead) or right here."""
        if self._detector_pool is None:
            return self._timed_detect(image, cut)
        return self._detector_pool.submit(self._timed_detect, image, cut)

    def _trackable(self) -> bool:
        """The oldest arrival is tracked now when its detection is back or the detector is
        detect_ahead frames ahead. A tracker still being built (DeferredTracker) counts as a
        detection not yet back: frames keep arriving and detecting up to detect_ahead, as they
        do while a slow detection runs, and then the loop waits for it."""
        if not self._arrivals:
            return False
        if len(self._arrivals) > self.detect_ahead:
            return True
        return _ready(self._arrivals[0].detections) and self.stages.tracker.ready

    def _tracker_waits(self) -> bool:
        """True while a tentative track waits for a confirming detection on the next frame.

        That extra detection only gets a new face restored sooner. With a delay line longer
        than the detection interval (files), the face's first frames are still in the line
        when the next scheduled detection confirms it, so none is spent."""
        if self.delay > self.settings.tracking.detect_every:
            return False
        return self.stages.tracker.needs_detection

    def _track(self, arrival: _Arrival) -> None:
        """Tracker, keyframe policy and jobs for one frame, in frame order."""
        frame, cut = arrival.frame, arrival.cut
        pending = arrival.detections
        detections = pending.result() if isinstance(pending, Future) else pending
        if pending is None and self._tracker_waits():
            # a tentative face waits for its confirming detection on the next frame
            again = self._detect_async(frame.image)
            detections = again.result() if isinstance(again, Future) else again
        tt = time.perf_counter()
        tracks = self.stages.tracker.update(
            detections, scene_cut=cut, image=frame.image, still=self._open_faces()
        )
        self.timings.add("track", time.perf_counter() - tt)
        if self._arrivals and self._arrivals[0].detections is None and self._tracker_waits():
            # the next frame will need this detection: start it now, on the detector thread,
            # so the loop does not stall on it when that frame is tracked
            nxt = self._arrivals[0]
            nxt.detections = self._detect_async(nxt.frame.image)
        for tid in self.worker.take_rechecks():
            # found covered once after being open: its next detection takes a keyframe
            self.stages.policy.forget(tid)
        views = []
        # the faces in the loop now (after a scene cut, not the last shot's): a full queue
        # pushes out their pending jobs before those of faces gone, whose frames wait for them
        live = {tr.track_id for tr in tracks if tr.confirmed}
        for tr in tracks:
            if not tr.confirmed:
                # kept in the delay line: if the track is confirmed before this frame leaves it,
                # its first frame is restored too (no masked flash after a cut)
                views.append(FaceView(tr.track_id, tr.box.copy(), tr.landmarks.copy(), False))
                continue
            self._confirmed.add(tr.track_id)
            key = False
            policy = self.stages.policy
            fit = partial(self._carried_fit, frame.image, tr)
            if (
                self.restore_enabled
                and policy.due(tr, frame.index, cut, frame.image, fit) is not None
            ):
                self._submit(frame, tr, cut, live)
                policy.painted(tr, frame.index, frame.image)
                key = True
            views.append(
                FaceView(
                    tr.track_id,
                    tr.box.copy(),
                    tr.landmarks.copy(),
                    key,
                    hidden=tr.hidden,
                    detected=tr.detected,
                )
            )
        for gone in self._live_ids - live:
            self.stages.policy.forget(gone)
        self._live_ids = live
        self._line.append(Output(frame, views, cut))

    def _carried_fit(self, image: np.ndarray, track: FaceTrack) -> CarriedFit | None:
        """How well the face's newest patch lies on the covering in this frame (the keyframe
        policy's 'fit' reason): only a covered face's, and not while its next keyframe is
        being painted (that one is measured when it lands)."""
        if self.worker.pending(track.track_id):
            return None
        res = self.worker.result(track.track_id)
        if res is None or not res.covered or res.patch is None:
            return None
        value = self.stages.compositor.fit(image, track, res.patch)
        return None if value is None else CarriedFit(res.patch.frame_index, value)

    def _open_faces(self) -> set[int]:
        """Live faces judged uncovered on their last keyframe: nothing follows them closely."""
        out = set()
        for tid in self._live_ids:
            res = self.worker.result(tid)
            if res is not None and not res.covered:
                out.add(tid)
        return out

    def _submit(self, frame: Frame, track: FaceTrack, cut: bool, live: set[int]) -> None:
        job = PaintJob.from_frame(
            track.track_id,
            frame.index,
            frame.image,
            track.landmarks,
            cut,
            box=track.box,
            score=track.score,
            look_below=self.settings.mask.closer_look_below,
        )
        if job is None:
            return
        evicted = self.worker.submit(job, live)
        if evicted is not None:
            res = self.worker.result(evicted)
            if res is None or res.recheck:
                # live: that face lost its first keyframe, or its second look, to a full queue:
                # ask again on its next frame, not only when its pose changes or its patch ages
                # (a face with a patch keeps it; files keep both jobs: KeyframeWorker.submit)
                self.stages.policy.forget(evicted)
        self._submitted.add(track.track_id)
        self.keyframes += 1

    def _finish(self, out: Output) -> Output:
        """Decide each face of a frame leaving the delay line (the newest patch of its track)
        and composite it, now or in out.finish() (composite_later)."""
        out.faces = [v for v in out.faces if v.track_id in self._confirmed]
        paints: list[tuple[FaceTrack, Patch]] = []
        patches: dict[int, Patch | None] = {}
        for view in out.faces:
            track = FaceTrack(view.track_id, view.box, view.landmarks, detected=view.detected)
            fit = partial(self.stages.compositor.fit, out.frame.image, track)
            took = self._took.get(view.track_id, -1)
            res = self.worker.result(view.track_id, out.frame.index, self.delay, fit, took)
            if res is None:
                continue
            if res.patch is not None:
                self._took[view.track_id] = res.patch.frame_index
            view.masked = res.covered
            view.identity = res.identity
            view.reference = res.source
            patches[view.track_id] = res.patch
            if res.patch is not None and self.restore_enabled and not view.hidden:
                paints.append((track, res.patch))
                self.painted_faces += 1
        dead = self._forget_dead(out)
        overlay = self.debug_overlay

        def composite() -> None:
            t0 = time.perf_counter()
            compositor = self.stages.compositor
            compositor.begin_frame(out.frame.index)
            painted = [
                compositor.composite(out.frame.image, track, patch) for track, patch in paints
            ]
            if any(painted) and self.stages.marker is not None:
                self.stages.marker.apply(out.frame.image)
            if overlay:
                draw_overlay(out.frame.image, out, patches.get)
            for t in dead:
                compositor.forget(t)
            self.timings.add("composite", time.perf_counter() - t0)

        if self.composite_later:
            out.pending = composite
        else:
            composite()
        return out

    def _painted_faces(self, out: Output) -> set[int]:
        """The faces of a frame that are painted, or not decided yet (a face found open
        on its last keyframe is left as it is whichever keyframe it takes)."""
        faces = set()
        for v in out.faces:
            if v.track_id in self._submitted:
                res = self.worker.result(v.track_id)
                if res is None or res.covered:
                    faces.add(v.track_id)
        return faces

    def _patch_pending(self, out: Output) -> bool:
        return any(
            v.track_id in self._submitted and self.worker.pending(v.track_id) for v in out.faces
        )

    def _forget_dead(self, out: Output) -> set[int]:
        """Every 32 frames: drop the work of tracks gone from the loop and the delay line;
        returns them, for the compositor to forget after this frame."""
        if out.frame.index % 32:
            return set()
        alive = set(self._live_ids)
        for o in self._line:
            alive.update(v.track_id for v in o.faces)
        alive.update(v.track_id for v in out.faces)
        dead = self.worker.known() - alive
        self._confirmed &= alive
        self._submitted &= alive
        for t in dead:
            self._took.pop(t, None)
        if dead:
            self.worker.drop(dead)
        return dead


def draw_overlay(image: np.ndarray, out: Output, patch_of: Callable[[int], Patch | None]) -> None:
    """Boxes, track ids, covered-region outlines and keyframe marks (--debug-overlay)."""
    for v in out.faces:
        patch = patch_of(v.track_id)
        colour = (
            (160, 160, 160) if v.masked is None else ((0, 200, 0) if v.masked else (200, 120, 0))
        )
        x1, y1, x2, y2 = (int(round(c)) for c in v.box)
        cv2.rectangle(image, (x1, y1), (x2, y2), colour, 2)
        label = f"#{v.track_id}" + (" mask" if v.masked else (" open" if v.masked is False else ""))
        cv2.putText(
            image,
            label,
            (x1, max(12, y1 - 4)),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.45,
            colour,
            1,
            cv2.LINE_AA,
        )
        if patch is not None:
            try:
                inv = align.invert(align.to_canonical(v.landmarks))
            except ValueError:
                continue
            hard = (patch.alpha > 0.5).astype(np.uint8)
            contours, _ = cv2.findContours(hard, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            for c in contours:
                pts = align.apply(inv, c.reshape(-1, 2)).round().astype(np.int32)
                cv2.polylines(image, [pts], True, (0, 255, 255), 1, cv2.LINE_AA)
        if v.keyframe:
            cv2.circle(image, (x2 - 6, y1 + 6), 5, (0, 0, 255), -1)
    if out.scene_cut:
        cv2.putText(
            image, "CUT", (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 255), 2, cv2.LINE_AA
        )
