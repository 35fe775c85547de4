"""When a track needs a freshly painted patch.

A patch painted on one keyframe is warped onto later frames by a similarity transform;
that holds while the head keeps roughly the same pose and size. The policy compares the
track's current geometry with the geometry recorded when its last keyframe job was taken
and asks for a new one when the difference would show (or when the patch is simply old).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from lostface.config import KeyframeSettings
from lostface.frame import FaceTrack
from lostface.restore.align import pitch_proxy, yaw_proxy


@dataclass(slots=True)
class _Painted:
    frame_index: int
    yaw: float
    pitch: float
    roll: float
    size: float


def roll_angle(landmarks: np.ndarray) -> float:
    """In-plane head rotation (radians): angle of the line from eye to eye."""
    lm = np.asarray(landmarks, np.float64)
    return math.atan2(float(lm[1, 1] - lm[0, 1]), float(lm[1, 0] - lm[0, 0]))


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


class ThresholdKeyframePolicy:
    """KeyframePolicy: fixed thresholds on pose, roll, scale and patch age.

    Only confirmed tracks that matched a detection on this frame are eligible: their
    landmarks are measured, not predicted, so the keyframe aligns well.
    """

    def __init__(self, settings: KeyframeSettings) -> None:
        self.settings = settings
        self._painted: dict[int, _Painted] = {}

    def due(self, track: FaceTrack, frame_index: int, scene_cut: bool) -> str | None:
        """'new', 'cut', 'pose', 'roll', 'scale' or 'age' (first that applies), or None."""
        if not (track.confirmed and track.detected):
            return None
        last = self._painted.get(track.track_id)
        if last is None:
            return "new"
        if scene_cut:
            return "cut"
        s = self.settings
        lm = track.landmarks
        if (
            abs(yaw_proxy(lm) - last.yaw) > s.pose_change
            or abs(pitch_proxy(lm) - last.pitch) > s.pose_change
        ):
            return "pose"
        if _angle_diff(roll_angle(lm), last.roll) > s.roll_change:
            return "roll"
        if abs(track.size / max(last.size, 1e-6) - 1.0) > s.scale_change:
            return "scale"
        if frame_index - last.frame_index >= s.max_age:
            return "age"
        return None

    def painted(self, track: FaceTrack, frame_index: int) -> None:
        lm = track.landmarks
        self._painted[track.track_id] = _Painted(
            frame_index, yaw_proxy(lm), pitch_proxy(lm), roll_angle(lm), track.size
        )

    def forget(self, track_id: int) -> None:
        self._painted.pop(track_id, None)

    def reset(self) -> None:
        self._painted.clear()
