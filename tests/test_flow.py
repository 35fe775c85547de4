"""Optical-flow face following between detections (lostface.tracking.flow) and its use in
the Kalman tracker, on a real face photo moved by known transforms."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from lostface.config import TrackingSettings, load_settings
from lostface.factory import build_detector
from lostface.frame import Detections
from lostface.tracking.flow import FaceFlow, apply_similarity
from lostface.tracking.tracker import KalmanTracker


def similarity(dx: float, dy: float, angle_deg: float = 0.0, scale: float = 1.0) -> np.ndarray:
    """2x3 similarity about the photo's centre, then shifted."""
    m = cv2.getRotationMatrix2D((256.0, 256.0), angle_deg, scale)
    m[:, 2] += (dx, dy)
    return m


def frame_of(photo: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The photo moved by m (a 512x512 frame, borders reflected: no black edge to track)."""
    return cv2.warpAffine(
        photo, m, (512, 512), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
    )


@pytest.fixture(scope="module")
def face(astronaut_bgr):
    """Box and 5 landmarks of the astronaut's face, found by the embedded detector."""
    dets = build_detector(load_settings()).detect(astronaut_bgr)
    assert len(dets) >= 1
    i = int(np.argmax(dets.scores))
    return dets.boxes[i][:4].astype(np.float64), dets.landmarks[i][:5].astype(np.float64)


def test_flow_recovers_a_known_face_motion(astronaut_bgr, face):
    box0, lm0 = face
    a = similarity(0.0, 0.0)
    b = similarity(6.5, -4.0, angle_deg=2.0, scale=1.04)  # shift, roll and zoom in one frame
    flow = FaceFlow()
    flow.remember(frame_of(astronaut_bgr, a), {1: box0})
    m = flow.motion(frame_of(astronaut_bgr, b), 1, box0)
    assert m is not None
    moved = apply_similarity(m, lm0)
    truth = apply_similarity(b, lm0)  # a is the identity
    assert np.abs(moved - truth).max() < 0.5


def test_flow_says_nothing_without_a_previous_crop_or_on_a_blank_frame(astronaut_bgr, face):
    box0, _ = face
    flow = FaceFlow()
    assert flow.motion(astronaut_bgr, 1, box0) is None  # nothing remembered yet
    flow.remember(np.full_like(astronaut_bgr, 90), {1: box0})  # no corners to follow
    assert flow.motion(astronaut_bgr, 1, box0) is None


def run_tracker(
    frames: list[np.ndarray],
    truth: list[np.ndarray],
    box0: np.ndarray,
    moves: list[np.ndarray],
    flow: bool,
    still: bool = False,
) -> np.ndarray:
    """Landmark error (px) per frame of a tracker fed exact detections every 4th frame."""
    tr = KalmanTracker(replace(TrackingSettings(), flow=flow, birth_hits=1))
    errors = []
    corners = np.array([[box0[0], box0[1]], [box0[2], box0[3]]])
    for i, (img, lm) in enumerate(zip(frames, truth, strict=True)):
        dets = None
        if i % 4 == 0:
            c = apply_similarity(moves[i], corners)
            dets = Detections(
                np.array([[*c[0], *c[1]]], np.float32),
                np.array([0.9], np.float32),
                lm[None].astype(np.float32),
            )
        tracks = tr.update(dets, image=img, still={1} if still else ())
        assert len(tracks) == 1 and tracks[0].track_id == 1
        errors.append(np.linalg.norm(tracks[0].landmarks - lm, axis=1).mean())
    return np.asarray(errors)


def test_flow_keeps_landmarks_on_a_face_that_changes_speed(astronaut_bgr, face):
    """A head that moves to and fro (not at constant velocity): between detection rounds
    the Kalman prediction overshoots, the flow stays on the face."""
    box0, lm0 = face
    n = 32
    moves = [
        similarity(14.0 * np.sin(i / 3.0), 6.0 * np.sin(i / 2.0), 3.0 * np.sin(i / 5.0))
        for i in range(n)
    ]
    frames = [frame_of(astronaut_bgr, m) for m in moves]
    truth = [apply_similarity(m, lm0) for m in moves]
    with_flow = run_tracker(frames, truth, box0, moves, flow=True)
    without = run_tracker(frames, truth, box0, moves, flow=False)
    still = run_tracker(frames, truth, box0, moves, flow=True, still=True)
    predicted = [i for i in range(4, n) if i % 4]  # frames between detection rounds
    assert with_flow[predicted].mean() < 1.5
    assert with_flow[predicted].mean() < 0.4 * without[predicted].mean()
    # a face named still is only predicted, exactly as without flow
    np.testing.assert_allclose(still, without, atol=1e-4)
