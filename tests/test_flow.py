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


def test_a_face_passing_behind_another_keeps_its_id(astronaut_bgr, face):
    """Two real faces cross, the second passing in front of the first, detected every 4th
    frame and the hidden one not at all while it is mostly covered. The pixels in the hidden
    face's box move as the front face does, so following them by flow would carry the hidden
    track off with the front face (and swap the ids): overlapping tracks are predicted from
    their own motion instead, and keep it while the face behind is missed."""
    x0, y0, x1, y1 = (int(round(v)) for v in face[0])
    a = np.ascontiguousarray(astronaut_bgr[y0:y1, x0:x1])
    b = np.ascontiguousarray(cv2.flip(a, 1)[:, :, ::-1])  # another face: mirrored, recoloured
    h, w = a.shape[:2]
    back = cv2.GaussianBlur(cv2.resize(astronaut_bgr, (640, 360)), (0, 0), 9)
    tracker = KalmanTracker(TrackingSettings(flow=True))
    ids: dict[str, set[int]] = {"a": set(), "b": set()}
    behind: dict[str, int] = {"a": 0, "b": 0}  # frames each face's track was marked hidden
    for t in range(90):
        xa, xb = int(80 + 5 * t), int(480 - 5 * t)  # they meet near frame 40
        ya, yb = 120, 135
        img = back.copy()
        img[ya : ya + h, xa : xa + w] = a
        img[yb : yb + h, xb : xb + w] = b  # b is drawn last: in front
        box_a = np.array([xa, ya, xa + w, ya + h], np.float32)
        box_b = np.array([xb, yb, xb + w, yb + h], np.float32)
        dets = None
        if t % 4 == 0:
            hidden = max(0, w - abs(xa - xb)) * max(0, h - abs(ya - yb)) / (w * h)
            boxes = [box_b] + ([box_a] if hidden < 0.4 else [])
            lms = [
                apply_similarity(
                    np.float32([[1, 0, bx[0] - x0], [0, 1, bx[1] - y0]]), face[1].astype(np.float32)
                )
                for bx in boxes
            ]
            dets = Detections(np.array(boxes), np.full(len(boxes), 0.9), np.array(lms))
        tracks = tracker.update(dets, image=img)
        if t < 4:
            continue
        for tr in tracks:
            c = (tr.box[:2] + tr.box[2:]) / 2
            ca, cb = (box_a[:2] + box_a[2:]) / 2, (box_b[:2] + box_b[2:]) / 2
            who = "a" if np.hypot(*(c - ca)) < np.hypot(*(c - cb)) else "b"
            ids[who].add(tr.track_id)
            behind[who] += tr.hidden
    assert len(ids["a"]) == 1 and len(ids["b"]) == 1 and ids["a"] != ids["b"], ids
    # the face behind is marked hidden (its patch is not drawn over the face in front)
    assert behind["a"] >= 4 and behind["b"] == 0, behind
