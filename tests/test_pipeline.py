"""The frame pipeline with its real stages: order, delay line, the worker off the loop,
unmasked faces untouched."""

from __future__ import annotations

import sys
import threading
import time

import cv2
import numpy as np
import pytest

from lostface.config import load_settings
from lostface.factory import build_stages
from lostface.frame import Frame, Patch
from lostface.pipeline import Pipeline
from lostface.stages import Restorer, Segmenter


def _moving(image: np.ndarray, n: int, size: int = 320) -> list[np.ndarray]:
    out = []
    for i in range(n):
        m = np.float32([[1, 0, 1.5 * i - 10], [0, 1, 0.8 * i - 5]])
        img = cv2.warpAffine(image, m, image.shape[1::-1], borderMode=cv2.BORDER_REFLECT)
        out.append(np.ascontiguousarray(cv2.resize(img, (size, size))))
    return out


@pytest.fixture(scope="module")
def settings():
    return load_settings()  # the default delay line (8 frames)


@pytest.fixture(scope="module")
def masked_frames(astronaut_bgr, settings):
    from lostface.synthetic import draw_mask

    stages = build_stages(settings)
    frames, covered = [], []
    for img in _moving(astronaut_bgr, 20):
        d = stages.detector.detect(img)
        k = int(np.argmax(d.scores))
        sm = draw_mask(img, d.landmarks[k], kind="cloth", rng=np.random.default_rng(1))
        frames.append(sm.image)
        covered.append(sm.covered)
    return frames, covered


def _run(pipe: Pipeline, images: list[np.ndarray]) -> list:
    outs = []
    for i, img in enumerate(images):
        outs += pipe.push(Frame(img.copy(), i, i * 100, None))
    outs += pipe.flush()
    pipe.close()
    return outs


def test_unmasked_faces_pass_pixel_for_pixel(astronaut_bgr, settings):
    frames = _moving(astronaut_bgr, 16)
    pipe = Pipeline(settings, build_stages(settings, reference_images=[("a", astronaut_bgr)]))
    outs = _run(pipe, frames)
    assert [o.frame.index for o in outs] == list(range(16))
    assert any(o.faces for o in outs)
    for o, f in zip(outs, frames, strict=True):
        assert np.array_equal(o.frame.image, f)
        assert all(v.masked is not True for v in o.faces)
    # only a painted face's keyframe is timed as a wait for its patch
    assert pipe.keyframes >= 1 and "keyframe_wait" not in pipe.timings.samples


def test_masked_faces_restored_from_first_frame(masked_frames, astronaut_bgr, settings):
    frames, covered = masked_frames
    pipe = Pipeline(settings, build_stages(settings, reference_images=[("a", astronaut_bgr)]))
    outs = _run(pipe, frames)
    assert [o.frame.index for o in outs] == list(range(len(frames)))
    changed = [
        not np.array_equal(o.frame.image[c], f[c])
        for o, f, c in zip(outs, frames, covered, strict=True)
    ]
    # the worker runs beside the loop: a patch may land a few frames after the track is born,
    # and the delay line lets it reach most of those frames
    assert all(changed[len(frames) // 2 :]) and sum(changed) >= len(frames) - 5
    assert sum(v.masked is True for o in outs for v in o.faces) >= len(frames) - 2


def test_compositing_left_for_later_paints_the_same_frames(masked_frames, astronaut_bgr, settings):
    """composite_later (files: the encoder's thread composites): outputs leave decided but
    untouched, and finish() paints each exactly as the pipeline would have, in frame order."""
    frames, covered = masked_frames

    def pipe(later: bool) -> Pipeline:
        stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
        return Pipeline(settings, stages, synchronous=True, composite_later=later)

    now = _run(pipe(False), frames)
    later = _run(pipe(True), frames)
    assert [o.frame.index for o in later] == list(range(len(frames)))
    for a, b, f in zip(now, later, frames, strict=True):
        assert np.array_equal(b.frame.image, f)  # nothing painted yet
        assert [(v.track_id, v.masked, v.identity) for v in a.faces] == [
            (v.track_id, v.masked, v.identity) for v in b.faces
        ]
    painted = 0
    for a, b, f, c in zip(now, later, frames, covered, strict=True):
        assert b.finish() is b.frame and b.pending is None
        b.finish()  # once only
        assert np.array_equal(a.frame.image, b.frame.image)
        painted += not np.array_equal(b.frame.image[c], f[c])
    assert painted >= len(frames) - 5


class _Uneven:
    """Wraps the real detector: some calls come back late (a busy machine's detector thread)."""

    def __init__(self, inner, late: set[int]) -> None:
        self.inner, self.late, self.calls = inner, late, 0

    def detect(self, image):
        self.calls += 1
        if self.calls in self.late:
            time.sleep(0.05)
        return self.inner.detect(image)

    def close(self) -> None:
        self.inner.close()


def test_synchronous_keyframes_paint_the_same_frames_whatever_the_detector_s_timing(
    masked_frames, astronaut_bgr
):
    """With keyframes painted in the loop (benchmarks), each frame leaves the delay line when
    the frame `delay` later is tracked, however late detections come back from their thread:
    the frames painted are the same, pixel for pixel."""
    settings = load_settings(overrides=["keyframe.max_age=3", "tracking.detect_every=1"])
    frames, covered = masked_frames
    runs = []
    for late in (set(), {2, 3, 7, 8, 9, 13}, set(range(1, 40, 2))):
        stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
        stages.detector = _Uneven(stages.detector, late)
        runs.append(_run(Pipeline(settings, stages, synchronous=True), frames))
    first = runs[0]
    assert (
        sum(
            not np.array_equal(o.frame.image[c], f[c])
            for o, f, c in zip(first, frames, covered, strict=True)
        )
        >= len(frames) - 5
    )
    for other in runs[1:]:
        for a, b in zip(first, other, strict=True):
            assert a.frame.index == b.frame.index
            assert np.array_equal(a.frame.image, b.frame.image), a.frame.index


class _Gate(Restorer):
    """Wraps the real restorer and holds every job until released (the worker's clock)."""

    def __init__(self, inner):
        self.inner = inner
        self.open = threading.Event()
        self.calls = 0
        self.finished = 0  # calls that got past the gate

    def restore(self, face, cover, landmarks, track_id=None, person=None):
        self.calls += 1
        self.open.wait(timeout=30)
        self.finished += 1
        return self.inner.restore(face, cover, landmarks, track_id, person)

    def wait_taken(self, calls: int) -> None:
        """Until the worker has taken a job past `calls` calls (it is then held here)."""
        deadline = time.monotonic() + 30
        while self.calls == calls and time.monotonic() < deadline:
            time.sleep(0.01)


def _gated(settings, astronaut_bgr):
    """Stages with the astronaut as reference, whose restorer waits at a _Gate."""
    stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
    gate = _Gate(stages.painter.restorer)
    stages.painter.restorer = gate
    return stages, gate


# a short line and frequent keyframes; the detector at most 6 frames ahead, so that the 20
# frames reach a face's second keyframe
_HELD_KEYFRAMES = ["keyframe.delay_frames=2", "keyframe.max_age=4", "tracking.detect_ahead=6"]


def _next_keyframe_held(pipe, gate, frames):
    """A face's first keyframe painted at once, then frames pushed until its next keyframe is
    sent and held at the gate; returns the face, the next frame to push, and the frames that
    left meanwhile."""
    gate.open.set()
    outs = []
    i = 0
    while not pipe.keyframes:
        outs += pipe.push(Frame(frames[i].copy(), i, i, None))
        i += 1
    pipe.worker.wait_idle()
    (tid,) = pipe.worker.known()
    assert not pipe.worker.pending(tid)
    gate.open.clear()  # the next keyframes wait at the gate
    start = gate.calls
    while not pipe.worker.pending(tid) and i < len(frames):
        outs += pipe.push(Frame(frames[i].copy(), i, i, None))
        i += 1
    gate.wait_taken(start)
    assert gate.calls > start, "no second keyframe: the clip is too short for this test"
    return tid, i, outs


def test_frame_loop_runs_ahead_of_keyframes_and_waits_only_past_the_line_s_hold(
    masked_frames, astronaut_bgr
):
    """Files: while a covered face's keyframe is being painted, the loop goes on and frames
    wait in the delay line, up to 4 times its length; past that, the loop waits for the
    keyframes the line's oldest frame takes its patch from (the face's first, here), so no
    frame leaves unpainted or with an older keyframe's patch. Live, with no line, the loop
    never waits (test_queue_is_bounded_and_newest_wins pushes every frame past a held
    restorer)."""
    settings = load_settings(overrides=["keyframe.delay_frames=2"])
    frames, covered = masked_frames
    stages, gate = _gated(settings, astronaut_bgr)
    pipe = Pipeline(settings, stages)
    outs: list = []
    pushed: list[int] = []

    def feed() -> None:
        for i, img in enumerate(frames):
            outs.extend(pipe.push(Frame(img.copy(), i, i, None)))
            pushed.append(i)

    loop = threading.Thread(target=feed, daemon=True)
    loop.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # until the loop stops taking frames
        seen = len(pushed)
        time.sleep(0.5)
        if len(pushed) == seen and gate.calls >= 1:
            break
    # the loop waits for the keyframe held at the gate, with the line at its hold
    assert loop.is_alive() and gate.finished == 0
    hold = 4 * settings.keyframe.delay_frames
    assert len(pipe._line) == hold + 1 and not outs
    assert len(pushed) < len(frames)
    time.sleep(0.3)  # the restorer stays held a while
    gate.open.set()
    loop.join(timeout=60)
    assert not loop.is_alive()
    outs += pipe.flush()
    pipe.close()
    assert [o.frame.index for o in outs] == list(range(len(frames)))
    # the wait of a covered face's keyframe for its patch counts the time it was held
    waits = pipe.timings.samples["keyframe_wait"]
    assert 1 <= len(waits) <= pipe.keyframes and max(waits) >= 0.3
    assert pipe.timings.samples["keyframe_hold"]  # the loop's waits are timed too
    # every frame, the first ones too, left with a patch over its covering
    for o, f, c in zip(outs, frames, covered, strict=True):
        assert not np.array_equal(o.frame.image[c], f[c]), o.frame.index


def test_frames_wait_in_the_line_for_their_face_s_keyframe_being_painted(
    masked_frames, astronaut_bgr
):
    """A face's newer keyframe still being painted holds its frames in the delay line (up to
    4x its length), so they leave with that keyframe's patch; the worker says which faces
    have a job queued or being painted."""
    settings = load_settings(overrides=_HELD_KEYFRAMES)
    frames, covered = masked_frames
    stages, gate = _gated(settings, astronaut_bgr)
    pipe = Pipeline(settings, stages)
    tid, i, outs = _next_keyframe_held(pipe, gate, frames)
    assert pipe.worker.pending(tid) and not pipe.worker.pending(tid + 1000)
    before = len(outs)
    for j in range(i, min(i + 3, len(frames))):
        outs += pipe.push(Frame(frames[j].copy(), j, j, None))
    held = len(pipe._line)  # frames waiting in the line for that keyframe
    assert held > settings.keyframe.delay_frames
    # frames leave only past the line's hold (those sent before that keyframe, whose own
    # patches are painted)
    assert len(outs) - before <= 1 or held == 4 * settings.keyframe.delay_frames
    gate.open.set()
    outs += pipe.flush()
    pipe.close()
    assert not pipe.worker.pending(tid)
    assert [o.frame.index for o in outs] == list(range(len(outs)))


def test_a_frame_held_past_the_line_s_hold_takes_the_keyframe_sent_on_it(
    masked_frames, astronaut_bgr
):
    """Files: a frame that reaches the line's hold while the keyframe sent on it is still
    being painted makes the loop wait for that keyframe, so it leaves with that keyframe's
    patch, not the older one of another pose."""
    settings = load_settings(overrides=_HELD_KEYFRAMES)
    frames, _ = masked_frames
    stages, gate = _gated(settings, astronaut_bgr)
    pipe = Pipeline(settings, stages)
    tid, i, _ = _next_keyframe_held(pipe, gate, frames)
    (held,) = pipe.worker._working
    left: list[tuple[int, bool]] = []  # (frame, whether the held keyframe was painted by then)
    finish = pipe._finish

    def recorded(out):
        painted = [k for k, _ in pipe.worker._results.get(tid, ())]
        left.append((out.frame.index, held.frame_index in painted))
        return finish(out)

    pipe._finish = recorded

    def feed(start: int) -> None:
        for j in range(start, len(frames)):
            pipe.push(Frame(frames[j].copy(), j, j, None))
        pipe.flush()  # the clip's end: its last frames are tracked and released too

    loop = threading.Thread(target=feed, args=(i,), daemon=True)
    loop.start()
    deadline = time.monotonic() + 30
    while loop.is_alive() and time.monotonic() < deadline:
        if len(pipe._line) > 4 * settings.keyframe.delay_frames:
            time.sleep(0.5)  # the line at its hold: the loop waits
            break
        time.sleep(0.05)
    assert loop.is_alive() and pipe._line[0].frame.index == held.frame_index
    gate.open.set()
    loop.join(timeout=60)
    pipe.close()
    later = [painted for index, painted in left if index >= held.frame_index]
    assert later and all(later)


def _niceness(thread: threading.Thread | None) -> int:
    assert thread is not None and thread.native_id is not None
    with open(f"/proc/self/task/{thread.native_id}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])  # stat's 19th field


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="thread priorities: Linux")
def test_the_keyframe_worker_yields_the_cpu_to_the_loop_in_files_only():
    """Files, with keyframe.nice set (0 by default): the worker's thread runs that many steps
    nicer than the loop's, so on a busy CPU the detector and the encoder, which every frame
    waits for, go first; live (no delay line), a patch that waited for the CPU would show
    late, so it runs as the loop does."""
    settings = load_settings(overrides=["keyframe.nice=5"])
    base = _niceness(threading.main_thread())
    stages = build_stages(settings)
    for delay, expected in [(None, min(base + settings.keyframe.nice, 19)), (0, base)]:
        pipe = Pipeline(settings, stages, delay_frames=delay)
        deadline = time.monotonic() + 10
        while _niceness(pipe.worker._thread) != expected and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _niceness(pipe.worker._thread) == expected, delay
        pipe.close()
    assert settings.keyframe.nice > 0 and _niceness(threading.main_thread()) == base


def test_queue_is_bounded_and_newest_wins(masked_frames, astronaut_bgr):
    settings = load_settings(
        overrides=[
            "keyframe.queue_size=2",
            "keyframe.delay_frames=0",
            "keyframe.max_age=1",
            "tracking.detect_every=1",
        ]
    )
    frames, _ = masked_frames
    stages, gate = _gated(settings, astronaut_bgr)
    pipe = Pipeline(settings, stages)
    for i, img in enumerate(frames):
        pipe.push(Frame(img.copy(), i, i, None))
        assert len(pipe.worker._jobs) <= 2
    assert pipe.keyframes > 3
    gate.open.set()
    pipe.flush()
    pipe.close()
    assert gate.calls < pipe.keyframes  # superseded jobs were dropped, not queued


@pytest.mark.parametrize("keep_within", [0, 16])
def test_a_newer_keyframe_supersedes_a_pending_one_only_past_the_delay_line(
    masked_frames, astronaut_bgr, keep_within
):
    """Files (a delay line of 16 frames): while the worker is busy, a face's newer keyframe
    within the line's length is queued beside its pending one, whose patch the frames between
    them still wait for; one further on replaces both. Live (no line): the newest replaces
    the pending one at once."""
    from lostface.pipeline import KeyframeWorker, Timings
    from lostface.restore.painter import PaintJob

    frames, _ = masked_frames
    stages, gate = _gated(load_settings(), astronaut_bgr)
    worker = KeyframeWorker(stages.painter, 8, Timings(), keep_within=keep_within)
    d = stages.detector.detect(frames[0])
    lm = d.landmarks[int(np.argmax(d.scores))]

    def submit(index: int) -> None:
        job = PaintJob.from_frame(1, index, frames[0], lm)
        assert job is not None
        worker.submit(job)

    submit(0)
    gate.wait_taken(0)
    submit(10)
    submit(20)
    queued = [j.frame_index for j in worker._jobs]
    assert queued == ([10, 20] if keep_within else [20])
    submit(50)  # 30 frames on: the frames waiting for 10 and 20 have left the line
    assert [j.frame_index for j in worker._jobs] == [50]
    gate.open.set()
    worker.wait_idle()
    worker.close()
    assert gate.finished == 2  # frame 0's keyframe and frame 50's
    assert worker.result(1, 50, 16).patch.frame_index == 50  # type: ignore[union-attr]


def _gated_worker(masked_frames, astronaut_bgr, keep_within: int):
    """A keyframe worker with a queue of 2 over gated stages (_gated), and a submit(track_id,
    frame_index, live) of the first masked frame's face that returns the face it pushed out."""
    from lostface.pipeline import KeyframeWorker, Timings
    from lostface.restore.painter import PaintJob

    frames, _ = masked_frames
    stages, gate = _gated(load_settings(), astronaut_bgr)
    worker = KeyframeWorker(stages.painter, 2, Timings(), keep_within=keep_within)
    d = stages.detector.detect(frames[0])
    lm = d.landmarks[int(np.argmax(d.scores))]

    def submit(track_id: int, index: int, live: set[int]) -> int | None:
        job = PaintJob.from_frame(track_id, index, frames[0], lm)
        assert job is not None
        return worker.submit(job, live)

    return worker, gate, submit


@pytest.mark.parametrize("keep_within", [0, 64])
def test_a_full_queue_drops_a_job_its_face_can_ask_again(masked_frames, astronaut_bgr, keep_within):
    """Files: a full queue drops the oldest job of a face still in the loop that has a patch
    to carry meanwhile (it asks again), not the job of a face gone from it, whose frames wait
    in the delay line for that patch and can have no other. Live: the oldest job, as the
    newest wins."""
    worker, gate, submit = _gated_worker(masked_frames, astronaut_bgr, keep_within)

    gate.open.set()
    for face in (1, 2, 3):  # each face has a patch
        submit(face, face - 5, {face})
    worker.wait_idle()
    gate.open.clear()
    submit(9, 0, {9})
    gate.wait_taken(gate.calls)
    submit(1, 10, {1})  # face 1's last keyframe: it leaves the loop after this
    submit(2, 20, {2})
    dropped = submit(3, 30, {2, 3})  # the queue is full
    queued = [j.track_id for j in worker._jobs]
    if keep_within:
        assert dropped == 2 and queued == [1, 3]
    else:
        assert dropped == 1 and queued == [2, 3]
    gate.open.set()
    worker.wait_idle()
    worker.close()


def test_a_full_queue_in_files_keeps_the_jobs_held_frames_wait_for(masked_frames, astronaut_bgr):
    """Files: after a scene cut, the new faces' first keyframes find the queue full of the
    last shot's, whose frames wait in the delay line for them. None of those goes, nor a new
    face's first (its frames have no patch to carry): the queue grows and every job is
    painted, so each frame takes the patch of its own time."""
    worker, gate, submit = _gated_worker(masked_frames, astronaut_bgr, 64)

    gate.open.set()
    submit(1, 0, {1})
    worker.wait_idle()
    gate.open.clear()
    submit(1, 8, {1})
    gate.wait_taken(gate.calls)  # painting
    submit(1, 16, {1})
    submit(1, 24, {1})  # the queue is full; then a cut: face 1 is gone
    assert submit(2, 28, {2, 3, 4}) is None
    assert submit(3, 28, {2, 3, 4}) is None
    assert submit(4, 28, {2, 3, 4}) is None
    assert [(j.track_id, j.frame_index) for j in worker._jobs] == [
        (1, 16),
        (1, 24),
        (2, 28),
        (3, 28),
        (4, 28),
    ]
    gate.open.set()
    worker.wait_idle()
    worker.close()
    for frame in (8, 16, 24):
        res = worker.result(1, frame, 16)
        assert res is not None and res.patch is not None and res.patch.frame_index == frame
    for face in (2, 3, 4):
        res = worker.result(face, 28, 16)
        assert res is not None and res.patch is not None and res.patch.frame_index == 28


def test_after_a_scene_cut_the_last_shot_s_pending_keyframes_are_painted(
    masked_frames, astronaut_bgr
):
    """Files: a face's keyframes wait in a full queue when the shot cuts to a new face. The
    new face's jobs do not push them out (the face gone counts as in the loop no longer), so
    the last shot's frames take the keyframes sent on them, and the new shot is painted."""
    from lostface.synthetic import draw_mask

    settings = load_settings(
        overrides=[
            "keyframe.queue_size=2",
            "keyframe.delay_frames=8",
            "keyframe.max_age=2",
            "tracking.detect_every=1",
            "tracking.detect_ahead=0",
        ]
    )
    shot_a = masked_frames[0][:14]
    detector = build_stages(settings).detector
    shot_b = []  # the same face mirrored, its colours swapped: a cut to another shot
    for img in _moving(astronaut_bgr, 10):
        img = np.ascontiguousarray(cv2.flip(img, 1)[:, :, ::-1])
        d = detector.detect(img)
        k = int(np.argmax(d.scores))
        shot_b.append(
            draw_mask(img, d.landmarks[k], kind="cloth", rng=np.random.default_rng(1)).image
        )
    stages, gate = _gated(settings, astronaut_bgr)
    pipe = Pipeline(settings, stages)
    outs = []
    gate.open.set()
    for i, img in enumerate(shot_a[:3]):
        outs += pipe.push(Frame(img.copy(), i, i, None))
    pipe.worker.wait_idle()
    gate.open.clear()  # face 1's next keyframes wait at the gate and in the queue
    for i, img in enumerate(shot_a[3:], start=3):
        outs += pipe.push(Frame(img.copy(), i, i, None))
    queued = [j.frame_index for j in pipe.worker._jobs if j.track_id == 1]
    assert len(queued) == 2
    for i, img in enumerate(shot_b, start=14):
        outs += pipe.push(Frame(img.copy(), i, i, None))
    assert [j.frame_index for j in pipe.worker._jobs if j.track_id == 1] == queued
    gate.open.set()
    outs += pipe.flush()
    pipe.close()
    cut = next(o.frame.index for o in outs if o.scene_cut)
    assert cut == 14
    for frame in queued:
        res = pipe.worker.result(1, frame, pipe.delay)
        assert res is not None and res.patch is not None and res.patch.frame_index == frame
    assert all(v.masked is True for o in outs for v in o.faces)
    assert {v.track_id for o in outs if o.frame.index >= cut for v in o.faces} == {2}


def test_a_full_queue_keeps_a_face_s_second_look(masked_frames, astronaut_bgr):
    """Files: a face found covered once after being open waits for its second look
    (Painted.recheck, mask.confirm_below); a full queue drops another face's job (one with a
    patch to carry meanwhile) before that one, which decides whether the face is painted at
    all."""
    from lostface.pipeline import KeyframeWorker, Timings
    from lostface.restore.painter import PaintJob

    frames, _ = masked_frames
    stages, gate = _gated(load_settings(overrides=["mask.confirm_below=1"]), astronaut_bgr)
    worker = KeyframeWorker(stages.painter, 2, Timings(), keep_within=64)

    def submit(track_id: int, index: int, live: set[int], image=None) -> int | None:
        image = frames[0] if image is None else image
        d = stages.detector.detect(image)
        job = PaintJob.from_frame(track_id, index, image, d.landmarks[int(np.argmax(d.scores))])
        assert job is not None
        return worker.submit(job, live)

    gate.open.set()
    submit(5, 0, {5}, _moving(astronaut_bgr, 1)[0])  # open
    submit(5, 4, {5})  # covered: judged open once more, asks for a second look
    submit(1, 5, {1, 5})  # face 1 has a patch
    worker.wait_idle()
    first = worker.result(5)
    assert first is not None and first.recheck and not first.covered
    assert worker.take_rechecks() == {5}
    gate.open.clear()
    submit(9, 6, {9})
    gate.wait_taken(gate.calls)
    submit(5, 10, {1, 5})  # the second look
    submit(1, 12, {1, 5})
    assert submit(2, 14, {1, 2, 5}) == 1  # full: face 1's job goes, not the older second look
    assert [j.track_id for j in worker._jobs] == [5, 2]
    gate.open.set()
    worker.wait_idle()
    second = worker.result(5)
    assert second is not None and second.covered and not second.recheck
    worker.close()


class _CountingDetector:
    """Wraps the real detector and counts its calls (any thread)."""

    def __init__(self, inner):
        self.inner = inner
        self.calls = 0
        self._lock = threading.Lock()

    def detect(self, image):
        with self._lock:
            self.calls += 1
        return self.inner.detect(image)


def _tracks(outs) -> list:
    return [[(v.track_id, v.box.round(3).tolist(), v.keyframe) for v in o.faces] for o in outs]


def test_background_tracker_gives_the_same_tracks(masked_frames, astronaut_bgr, settings):
    """A tracker built on a thread (lostface run) tracks every frame exactly as one built up
    front, with the same number of detections (confirming detections included)."""
    frames, _ = masked_frames
    runs = []
    for background in (False, True):
        stages = build_stages(
            settings, reference_images=[("a", astronaut_bgr)], background_tracker=background
        )
        counter = _CountingDetector(stages.detector)
        stages.detector = counter
        outs = _run(Pipeline(settings, stages), frames)
        runs.append((_tracks(outs), counter.calls))
    assert runs[0] == runs[1]
    assert any(runs[0][0])


class _SlowTracker:
    """A tracker that is not `ready` until released (a DeferredTracker still loading)."""

    def __init__(self, inner):
        self.inner = inner
        self.loaded = threading.Event()

    @property
    def ready(self) -> bool:
        return self.loaded.is_set()

    @property
    def needs_detection(self) -> bool:
        return self.inner.needs_detection if self.ready else False

    def update(self, detections, scene_cut=False, image=None, still=()):
        self.loaded.wait(timeout=30)
        return self.inner.update(detections, scene_cut=scene_cut, image=image, still=still)

    def reset(self):
        self.inner.reset()


def test_loading_tracker_holds_frames_like_a_running_detection(astronaut_bgr, settings):
    frames = _moving(astronaut_bgr, 12)
    stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
    slow = _SlowTracker(stages.tracker)
    stages.tracker = slow
    pipe = Pipeline(settings, stages)
    for i, img in enumerate(frames[: pipe.detect_ahead]):
        assert pipe.push(Frame(img.copy(), i, i, None)) == []
    # detections ran ahead, nothing was tracked: the loop did not wait for the tracker yet
    assert len(pipe._arrivals) == pipe.detect_ahead and not pipe._line
    slow.loaded.set()
    outs = []
    for i, img in enumerate(frames[pipe.detect_ahead :], start=pipe.detect_ahead):
        outs += pipe.push(Frame(img.copy(), i, i, None))
    outs += pipe.flush()
    pipe.close()
    assert [o.frame.index for o in outs] == list(range(len(frames)))
    assert any(o.faces for o in outs)


def test_turned_unmasked_faces_in_real_footage_pass_untouched(settings):
    """The stage clip's last shot: an audience turned to the stage, a hand at one chin. The
    far cheek of a turned face shows the background beside it, which is no covering."""
    from lostface.stream.video import read_frames
    from tests.conftest import shared_path

    frames = read_frames(shared_path("video", "stage_clip.mp4"))[205:275]
    pipe = Pipeline(settings, build_stages(settings), synchronous=True)
    outs = _run(pipe, frames)
    assert sum(len(o.faces) for o in outs) > 3 * len(frames)  # several faces per frame
    for o, f in zip(outs, frames, strict=True):
        assert all(v.masked is not True for v in o.faces), o.frame.index
        assert np.array_equal(o.frame.image, f)


def test_face_whose_job_a_full_queue_pushed_out_is_painted_soon(masked_frames, astronaut_bgr):
    """Three masked faces appear at once while the worker is busy and the queue holds one job:
    the faces whose jobs were pushed out ask again, instead of waiting for their patch to age."""
    settings = load_settings(
        overrides=[
            "keyframe.queue_size=1",
            "keyframe.delay_frames=0",
            "keyframe.max_age=1000",
            "tracking.detect_every=1",
            "tracking.detect_ahead=0",
        ]
    )
    frames, _ = masked_frames
    crowd = [np.hstack([f, f, f]) for f in frames]  # the same masked face three times
    stages, gate = _gated(settings, astronaut_bgr)
    pipe = Pipeline(settings, stages)
    for i, img in enumerate(crowd[:6]):
        pipe.push(Frame(img.copy(), i, i, None))
    assert pipe.worker.dropped > 0
    gate.open.set()
    outs = []
    for i, img in enumerate(crowd[6:12], start=6):
        pipe.worker.wait_idle()  # the worker keeps up from now on
        outs += pipe.push(Frame(img.copy(), i, i, None))
    outs += pipe.flush()
    pipe.close()
    assert all(len(o.faces) == 3 for o in outs)
    # the queue holds one job: at worst one face gets its job in per frame (6, 7, 8), each
    # painted before the next frame arrives; by the third frame after the worker freed up,
    # every face has been painted (each copy's face known by its place in the row). Later
    # keyframes judge the moving face afresh: on a busy machine the jobs land on other frames,
    # and frame 11's second keyframe came out open in 2 of 14 runs, which is not this test's.
    first = {}
    for o in outs:
        for v in o.faces:
            if v.masked is True:
                first.setdefault(int(v.box[0] // frames[0].shape[1]), o.frame.index)
    assert sorted(first) == [0, 1, 2] and max(first.values()) <= 9, first
    ninth = next(o for o in outs if o.frame.index == 9)
    assert all(v.masked is True for v in ninth.faces)  # painted there, all three


class _Recorder(Segmenter):
    """The real segmenter, noting the previous decision each keyframe job hands it."""

    def __init__(self, inner):
        self.inner = inner
        self.calls: list[bool | None] = []

    def segment(self, face, landmarks=None, was_covered=None, outline=True, mesh=None, inside=None):
        self.calls.append(was_covered)
        return self.inner.segment(face, landmarks, was_covered, outline, mesh, inside)


def test_keyframes_hand_the_face_s_previous_decision_to_the_segmenter(masked_frames, astronaut_bgr):
    """A face's first keyframe is judged afresh; later ones start from its last decision
    (mask.presence_hysteresis keeps a borderline face from flipping)."""
    settings = load_settings(overrides=["keyframe.max_age=3"])
    stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
    rec = _Recorder(stages.painter.segmenter)
    stages.painter.segmenter = rec
    frames, _ = masked_frames
    outs = _run(Pipeline(settings, stages, synchronous=True), frames)
    assert len(rec.calls) >= 3
    assert rec.calls[0] is None
    assert all(c is True for c in rec.calls[1:])  # the masked face stays covered
    assert all(v.masked for o in outs for v in o.faces)


def test_a_covering_put_on_mid_shot_is_not_painted_on_the_frames_before(astronaut_bgr):
    """A face open at first and covered later in the same shot (someone putting a covering
    on): each frame leaving the delay line takes the decision of its own time, so the frames
    before the keyframe that found the covering leave as they came (the newest patch used to
    reach back over the whole delay line), and the covered ones are painted."""
    from lostface.synthetic import draw_mask

    settings = load_settings(overrides=["keyframe.max_age=6"])
    stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
    frames, on = _moving(astronaut_bgr, 40), 20
    for i in range(on, len(frames)):
        d = stages.detector.detect(frames[i])
        k = int(np.argmax(d.scores))
        rng = np.random.default_rng(1)
        frames[i] = draw_mask(frames[i], d.landmarks[k], kind="cloth", rng=rng).image
    assert settings.keyframe.delay_frames > 6  # the line holds frames from before the covering
    outs = _run(Pipeline(settings, stages, synchronous=True), frames)
    assert [o.frame.index for o in outs] == list(range(len(frames)))
    for o, f in zip(outs[:on], frames[:on], strict=True):
        assert np.array_equal(o.frame.image, f), o.frame.index
        assert all(v.masked is not True for v in o.faces)
    painted = [not np.array_equal(o.frame.image, f) for o, f in zip(outs, frames, strict=True)]
    assert all(painted[on + 8 :])


def test_a_frame_leaving_the_line_takes_the_keyframe_nearest_its_time(
    masked_frames, astronaut_bgr, settings
):
    """KeyframeWorker.result for a frame that waited in the delay line: the keyframe nearest
    in time among the frame's own and the next one, the next only when it decides the face
    as the frame's own time did (a head turn's patch reaches the later frames of the turn);
    never one painted far later on another pose, and never a later decision that differs (a
    covering put on or taken off after the frame)."""
    from lostface.pipeline import KeyframeWorker, Timings
    from lostface.restore.painter import PaintJob

    frames, _ = masked_frames
    stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
    worker = KeyframeWorker(stages.painter, 8, Timings(), synchronous=True)
    open_face = _moving(astronaut_bgr, 20)[8]
    for index in (2, 8, 14, 17, 19):
        image = open_face if index == 8 else frames[index]
        d = stages.detector.detect(image)
        job = PaintJob.from_frame(1, index, image, d.landmarks[int(np.argmax(d.scores))])
        assert job is not None
        worker.submit(job)

    def painted_on(frame_index: int | None) -> tuple[bool, int | None]:
        res = worker.result(1, frame_index)
        assert res is not None
        return res.covered, None if res.patch is None else res.patch.frame_index

    assert painted_on(None) == (True, 19)  # the newest
    assert painted_on(0) == (True, 2)  # before the first keyframe: the first
    assert painted_on(4) == (True, 2)  # the next one (8) judged the face open
    assert painted_on(9) == (False, None)  # open at 8; covered again only from 14 on
    assert painted_on(12) == (False, None)
    assert painted_on(15) == (True, 14)  # nearer than the next one
    assert painted_on(16) == (True, 17)  # the next one, nearer; not the newest
    assert painted_on(17) == (True, 17)  # its own keyframe's
    assert painted_on(18) == (True, 17)  # as near as the next one: its own time's
    assert painted_on(19) == (True, 19)
    # the next one only within `reach` frames (the delay line's length): a frame held longer
    # in the line is painted as it would have been without the wait
    assert worker.result(1, 16, reach=1).patch.frame_index == 17
    assert worker.result(1, 16, reach=0).patch.frame_index == 14
    assert worker.result(1, 0, reach=1).patch.frame_index == 2  # before the first: the first

    # with how well each patch fits the face on the frame (Compositor.fit), of the frame's own
    # keyframe and the next the one that fits better, within `reach`, not on a keyframe's
    # own frame, never one that decides otherwise, and never older than `since`
    def taken(frame_index: int, favoured: int, reach: int = 8, since: int = -1) -> int | None:
        def fit(patch: Patch) -> float:
            return 1.0 if patch.frame_index == favoured else 0.5

        res = worker.result(1, frame_index, reach, fit, since)
        assert res is not None
        return None if res.patch is None else res.patch.frame_index

    assert taken(15, favoured=17) == 17  # 14 is nearer in time
    assert taken(16, favoured=14) == 14  # 17 is nearer in time
    assert taken(16, favoured=14, reach=0) == 14 and taken(16, favoured=17, reach=0) == 14
    assert taken(17, favoured=19) == 17  # its own keyframe's
    assert taken(4, favoured=8) == 2  # the next one (8) judged the face open
    assert taken(16, favoured=14, since=17) == 17  # the previous frame took 17 already
    assert worker.result(1, 15, 8, lambda patch: None).patch.frame_index == 14  # no opinion
    worker.close()


class _Slow(Restorer):
    """Wraps the real restorer; each job after the first takes `seconds` longer (a busy
    keyframe worker)."""

    def __init__(self, inner, seconds):
        self.inner, self.seconds, self.calls = inner, seconds, 0

    def restore(self, face, cover, landmarks, track_id=None, person=None):
        if self.calls:
            time.sleep(self.seconds)
        self.calls += 1
        return self.inner.restore(face, cover, landmarks, track_id, person)


class _Seen:
    """Wraps the real compositor and records, per frame, the keyframe each patch came from
    and whether the face was measured on that frame."""

    def __init__(self, inner):
        self.inner, self.frame, self.seen = inner, -1, []

    def begin_frame(self, index):
        self.frame = index
        self.inner.begin_frame(index)

    def composite(self, image, track, patch):
        self.seen.append((self.frame, patch.frame_index, track.detected))
        return self.inner.composite(image, track, patch)

    def fit(self, image, track, patch):
        return self.inner.fit(image, track, patch)

    def forget(self, track_id):
        self.inner.forget(track_id)

    def reset(self):
        self.inner.reset()


def test_a_frame_held_for_a_pending_keyframe_is_not_painted_from_one_far_later(astronaut_bgr):
    """A frame held in the delay line while its face's keyframe is painted (a slow keyframe
    worker) takes the patch it would have taken without the wait: its own time's, or the next
    keyframe's within the line's length, never one painted many frames later on another pose
    that was done by the time the frame left. The compositor learns on which frames the
    detector measured the face (it bends the patch onto the face's mesh there)."""
    from lostface.synthetic import draw_mask

    settings = load_settings(
        overrides=[
            "keyframe.delay_frames=2",
            "keyframe.max_age=3",
            "keyframe.queue_size=32",
            "tracking.detect_every=2",
        ]
    )
    stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
    frames = []
    for img in _moving(astronaut_bgr, 40):
        d = stages.detector.detect(img)
        k = int(np.argmax(d.scores))
        rng = np.random.default_rng(1)
        frames.append(draw_mask(img, d.landmarks[k], kind="cloth", rng=rng).image)
    stages.painter.restorer = _Slow(stages.painter.restorer, 0.1)
    seen = _Seen(stages.compositor)
    stages.compositor = seen
    pipe = Pipeline(settings, stages)
    for i, img in enumerate(frames):  # 25 frames/s
        pipe.push(Frame(img.copy(), i, i, None))
        time.sleep(0.04)
    pipe.flush()
    pipe.close()
    delay = settings.keyframe.delay_frames
    assert len(seen.seen) >= 30
    assert all(key <= frame + delay for frame, key, _ in seen.seen), seen.seen
    assert any(key > frame for frame, key, _ in seen.seen)  # the line works ahead
    measured = [detected for _, _, detected in seen.seen]
    assert any(measured) and not all(measured)  # detected every 2nd frame, predicted between


def test_a_patch_that_no_longer_lies_on_its_covering_is_repainted(astronaut_bgr):
    """From frame 20 on the covering's outline changes under the carried patch (its top edge
    a third of the eye distance lower: a pitch or a camera move that the similarity transform
    of the landmarks does not carry), while the landmarks, and so the pose, roll and size the
    keyframe policy compares, stay as they were. The patch's fit to the covering in view
    drops, and the detection on frame 20 takes a keyframe (reason 'fit'): from there on
    nothing beyond the covering's feather band is painted. With keyframe.fit_drop=0 the old
    patch is carried until it ages out (keyframe.max_age), over skin beside the covering."""
    from lostface.restore import align
    from lostface.restore.regions import lower_face_mask

    colour = (200, 60, 20)  # a flat blue covering (BGR)
    frames = _moving(astronaut_bgr, 60)
    detector = build_stages(load_settings()).detector
    key = lower_face_mask() > 0
    now = key.copy()
    now[: int(np.nonzero(key.any(axis=1))[0][0]) + 24] = False  # canonical px
    coverings = []
    for i, img in enumerate(frames):
        d = detector.detect(img)
        inv = align.invert(align.to_canonical(d.landmarks[int(np.argmax(d.scores))][:5]))
        region = (key if i < 20 else now).view(np.uint8)
        covering = cv2.warpAffine(region, inv, img.shape[1::-1], flags=cv2.INTER_NEAREST) > 0
        img[covering] = colour
        coverings.append(covering)

    def run(overrides: list[str]) -> tuple[list[int], list[float]]:
        """The keyframes the patches came from, and per frame from 24 to 47 the share of the
        covering's area painted beyond its band of 5 px."""
        settings = load_settings(overrides=overrides)
        stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
        seen = _Seen(stages.compositor)
        stages.compositor = seen
        outs = _run(Pipeline(settings, stages, synchronous=True), frames)
        beyond = []
        for i in range(24, 48):
            changed = np.abs(outs[i].frame.image.astype(np.int16) - frames[i]).max(axis=2) > 8
            band = cv2.dilate(coverings[i].view(np.uint8), np.ones((11, 11), np.uint8)) > 0
            beyond.append(float((changed & ~band).sum() / coverings[i].sum()))
            assert (outs[i].frame.image[coverings[i]] != colour).any(axis=1).all()
        return sorted({k for _, k, _ in seen.seen}), beyond

    keys, beyond = run([])
    assert keys == [4, 20], keys  # the first detection of the face, then the misfit
    assert max(beyond) < 0.001, beyond
    keys, beyond = run(["keyframe.fit_drop=0"])
    assert keys[:1] == [4] and keys[1] > 45, keys
    assert max(beyond) > 0.02, beyond


@pytest.mark.parametrize("put_on", [True, False])
def test_a_covering_put_on_or_taken_off_mid_shot_is_seen_at_once(astronaut_bgr, put_on):
    """A face covered from frame 20 on (or uncovered from frame 20 on) with the pose and
    size the same: its lower face's look changes, so the next detection frame takes a
    keyframe (reason 'look') instead of the old decision holding until the patch ages out
    (keyframe.max_age, 45 frames): the covering is painted, or the open face left alone,
    from there on. With keyframe.look_change=0 (never) a covering taken off is still seen at
    the next detection, by the patch's fit to its covering (keyframe.fit_drop); with both off
    the old decision holds: a covering put on is not painted yet, and the patch of a covering
    taken off is kept, but the compositor does not paint it where no covering is seen under
    it."""
    from lostface.synthetic import draw_mask

    frames, change = _moving(astronaut_bgr, 60), 20
    detector = build_stages(load_settings()).detector
    covered = range(change, 60) if put_on else range(change)
    for i in covered:
        d = detector.detect(frames[i])
        k = int(np.argmax(d.scores))
        rng = np.random.default_rng(1)
        frames[i] = draw_mask(frames[i], d.landmarks[k], kind="cloth", rng=rng).image

    def painted(overrides: list[str]) -> tuple[list[bool], list[bool]]:
        settings = load_settings(overrides=overrides)
        assert settings.keyframe.max_age == 45
        stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
        outs = _run(Pipeline(settings, stages, synchronous=True), frames)
        changed = [not np.array_equal(o.frame.image, f) for o, f in zip(outs, frames, strict=True)]
        return changed, [any(v.masked for v in o.faces) for o in outs]

    seen, _ = painted([])
    after = seen[change + 4 :]  # from the detection frame after the change
    assert all(after) if put_on else not any(after), np.nonzero(seen)[0]
    if not put_on:
        _, decided = painted(["keyframe.look_change=0"])
        assert not any(decided[change + 4 :]), np.nonzero(decided)[0]
    held, decided = painted(["keyframe.look_change=0", "keyframe.fit_drop=0"])
    assert not any(held[change + 4 : 45]), np.nonzero(held)[0]
    assert all(decided[change + 4 : 45]) is not put_on  # the old decision held


@pytest.mark.parametrize("synchronous", [True, False])
def test_an_open_face_covered_on_one_keyframe_only_is_not_painted(astronaut_bgr, synchronous):
    """Something held to an open face's mouth on one keyframe only (a microphone, a hand, a
    cup passing; here a covering drawn on frames 20-23, one detection's frames) leaves the
    face untouched: a face judged open turns covered, short of clear evidence
    (mask.confirm_below), only when its next keyframe agrees, which it asks for at its next
    detection. Held on (frames 20-59), the covering is painted from that detection (frame 24)
    on (beside the loop, from the first detection after the first look is back). The
    covering drawn here is clear evidence (it scores over the default level, and is painted
    from frame 20 with it), so the level is raised to 1 here: every finding waits."""
    from lostface.synthetic import draw_mask

    frames = _moving(astronaut_bgr, 60)
    detector = build_stages(load_settings()).detector
    for i in range(20, 60):
        d = detector.detect(frames[i])
        rng = np.random.default_rng(1)
        drawn = draw_mask(frames[i], d.landmarks[int(np.argmax(d.scores))], kind="cloth", rng=rng)
        frames[i] = drawn.image
    passing = frames[:24] + _moving(astronaut_bgr, 60)[24:]

    def changed(images: list[np.ndarray], level: float) -> list[bool]:
        settings = load_settings(overrides=[f"mask.confirm_below={level}"])
        stages = build_stages(settings, reference_images=[("a", astronaut_bgr)])
        pipe = Pipeline(settings, stages, synchronous=synchronous)
        outs = []
        for i, img in enumerate(images):
            outs += pipe.push(Frame(img.copy(), i, i * 100, None))
            # beside the loop: the keyframe worker keeps up with the frames, as it does in a
            # file's frame loop that decodes and encodes, however busy the machine
            pipe.worker.wait_idle()
        outs += pipe.flush()
        pipe.close()
        return [not np.array_equal(o.frame.image, f) for o, f in zip(outs, images, strict=True)]

    passed = changed(passing, 1.0)
    assert not any(passed), np.nonzero(passed)[0]
    held = changed(frames, 1.0)
    assert not any(held[:20]), np.nonzero(held)[0]
    if not synchronous:
        # beside the loop, the second look comes with the first detection after the first
        # look's result is back: from then on the covering is painted on every frame
        start = int(np.argmax(held))
        assert held[start] and start >= 24 and all(held[start:]), np.nonzero(held)[0]
    else:
        assert not any(held[20:24]) and all(held[24:]), np.nonzero(held)[0]
        at_once = changed(passing, load_settings().mask.confirm_below)
        assert not any(at_once[:20]) and all(at_once[20:24]), np.nonzero(at_once)[0]
