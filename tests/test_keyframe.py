"""Keyframe policy: each reason fires on its own kind of change and not on the others."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lostface.config import KeyframeSettings
from lostface.frame import FaceTrack
from lostface.restore.align import pitch_proxy, yaw_proxy
from lostface.stages import CarriedFit
from lostface.tracking.keyframe import ThresholdKeyframePolicy, roll_angle

REL = np.array([[0.33, 0.40], [0.67, 0.40], [0.50, 0.58], [0.37, 0.76], [0.63, 0.76]])
CENTRE = np.array([320.0, 240.0])
SIZE = 100.0


def face(
    yaw: float = 0.0, pitch: float = 0.0, roll: float = 0.0, scale: float = 1.0, **kw: object
) -> FaceTrack:
    """A confirmed, detected face; yaw/pitch move the nose (in eye distances), roll and
    scale transform the whole face about its centre."""
    lm = (REL - 0.5) * SIZE
    eye_dist = (REL[1, 0] - REL[0, 0]) * SIZE
    lm[2] += np.array([yaw, pitch]) * eye_dist
    rot = np.array([[math.cos(roll), -math.sin(roll)], [math.sin(roll), math.cos(roll)]])
    lm = (lm @ rot.T) * scale + CENTRE
    half = SIZE * scale / 2
    box = np.array([*(CENTRE - half), *(CENTRE + half)], np.float32)
    args = {"confirmed": True, "detected": True, "hits": 5, **kw}
    return FaceTrack(track_id=1, box=box, landmarks=lm.astype(np.float32), **args)  # type: ignore[arg-type]


@pytest.fixture
def policy() -> ThresholdKeyframePolicy:
    p = ThresholdKeyframePolicy(KeyframeSettings())
    p.painted(face(), 100)
    return p


def test_geometry_helpers_measure_what_the_face_builder_sets() -> None:
    f = face(yaw=0.1, pitch=0.05, roll=0.3)
    base = face(roll=0.3)
    assert yaw_proxy(f.landmarks) - yaw_proxy(base.landmarks) == pytest.approx(0.1, abs=1e-5)
    assert pitch_proxy(f.landmarks) - pitch_proxy(base.landmarks) == pytest.approx(0.05, abs=1e-5)
    assert roll_angle(base.landmarks) == pytest.approx(0.3, abs=1e-5)
    assert face(scale=1.4).size == pytest.approx(140.0, rel=1e-4)


def test_new_track_is_due_then_recorded() -> None:
    p = ThresholdKeyframePolicy(KeyframeSettings())
    assert p.due(face(), 0, scene_cut=False) == "new"
    p.painted(face(), 0)
    assert p.due(face(), 1, scene_cut=False) is None
    p.forget(1)
    assert p.due(face(), 2, scene_cut=False) == "new"
    p.painted(face(), 2)
    p.reset()
    assert p.due(face(), 3, scene_cut=False) == "new"


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"yaw": 0.2}, "pose"),
        ({"yaw": -0.2}, "pose"),
        ({"pitch": 0.2}, "pose"),
        ({"roll": 0.3}, "roll"),
        ({"roll": -0.3}, "roll"),
        ({"scale": 1.4}, "scale"),
        ({"scale": 0.7}, "scale"),
    ],
)
def test_each_change_calls_for_its_reason(
    policy: ThresholdKeyframePolicy, change: dict, reason: str
) -> None:
    assert policy.due(face(**change), 101, scene_cut=False) == reason


@pytest.mark.parametrize(
    "change",
    [{"yaw": 0.08}, {"pitch": -0.08}, {"roll": 0.1}, {"scale": 1.15}, {"scale": 0.85}],
)
def test_changes_below_thresholds_call_for_nothing(
    policy: ThresholdKeyframePolicy, change: dict
) -> None:
    assert policy.due(face(**change), 101, scene_cut=False) is None


def test_roll_or_scale_alone_do_not_look_like_pose(policy: ThresholdKeyframePolicy) -> None:
    # The yaw/pitch proxies are in eye distances along the eye line: a rotated or
    # resized face keeps them, so only roll and scale fire.
    assert policy.due(face(roll=0.5, scale=1.0), 101, scene_cut=False) == "roll"
    assert policy.due(face(scale=1.6), 101, scene_cut=False) == "scale"


def test_age_fires_only_at_max_age(policy: ThresholdKeyframePolicy) -> None:
    max_age = KeyframeSettings().max_age
    assert policy.due(face(), 100 + max_age - 1, scene_cut=False) is None
    assert policy.due(face(), 100 + max_age, scene_cut=False) == "age"
    policy.painted(face(), 100 + max_age)
    assert policy.due(face(), 101 + max_age, scene_cut=False) is None


def test_a_patch_that_no_longer_fits_its_covering_calls_for_a_new_one(
    policy: ThresholdKeyframePolicy,
) -> None:
    """The newest patch's fit to the covering in view (keyframe.fit_drop) is compared with
    the best it measured on this face: a drop past the setting asks for a new patch ('fit'),
    a smaller one does not; a new patch starts its own best, and 0 switches the reason off.
    The fit is asked only when no other reason applies."""
    drop = KeyframeSettings().fit_drop
    assert 0 < drop < 1

    def due(keyframe: int, fit: float, **change: float) -> str | None:
        return policy.due(face(**change), 104, False, None, lambda: CarriedFit(keyframe, fit))

    assert due(100, 0.8) is None  # its best so far
    assert due(100, 0.8 * (1 - drop) + 0.01) is None
    assert due(100, 0.8 * (1 - drop) - 0.01) == "fit"
    assert due(104, 0.6) is None  # a new patch: its own best
    assert due(104, 0.6 * (1 - drop) - 0.01) == "fit"
    assert due(104, 0.1, yaw=0.2) == "pose"  # the first reason that applies
    asked = []
    policy.due(face(yaw=0.2), 104, False, None, lambda: asked.append(1))  # type: ignore[arg-type, return-value]
    assert not asked
    assert policy.due(face(), 104, False, None, lambda: None) is None  # nothing to ask about
    off = ThresholdKeyframePolicy(KeyframeSettings(fit_drop=0.0))
    off.painted(face(), 100)
    for fit in (0.8, 0.1, -0.5):
        assert off.due(face(), 104, False, None, lambda f=fit: CarriedFit(100, f)) is None


def test_scene_cut_is_its_own_reason(policy: ThresholdKeyframePolicy) -> None:
    assert policy.due(face(), 101, scene_cut=True) == "cut"
    assert policy.due(face(), 101, scene_cut=False) is None


@pytest.mark.parametrize(
    "state", [{"confirmed": False}, {"detected": False}, {"confirmed": False, "detected": False}]
)
def test_only_confirmed_detected_tracks_are_eligible(state: dict) -> None:
    p = ThresholdKeyframePolicy(KeyframeSettings())
    assert p.due(face(**state), 0, scene_cut=True) is None
    p.painted(face(), 0)
    assert p.due(face(yaw=0.5, **state), 200, scene_cut=True) is None


def test_thresholds_come_from_settings() -> None:
    p = ThresholdKeyframePolicy(KeyframeSettings(pose_change=0.3, scale_change=0.5, max_age=5))
    p.painted(face(), 0)
    assert p.due(face(yaw=0.2), 1, scene_cut=False) is None
    assert p.due(face(yaw=0.35), 1, scene_cut=False) == "pose"
    assert p.due(face(scale=1.4), 1, scene_cut=False) is None
    assert p.due(face(), 5, scene_cut=False) == "age"
