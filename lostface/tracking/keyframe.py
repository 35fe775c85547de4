"""When a track needs a freshly painted patch.

A patch painted on one keyframe is warped onto later frames by a similarity transform;
that holds while the head keeps roughly the same pose and size. The policy compares the
track's current geometry with the geometry recorded when its last keyframe job was taken
and asks for a new one when the difference would show (or when the patch is simply old).

It also compares how the lower face looks (the mean Lab colour of a 4x3 grid between the
nose and the chin, from the frame as it came in): a covering put on or taken off mid-shot
changes it at once, while the pose and size stay, so without this the face would keep its
old decision until the patch ages out (`max_age`, a second and a half): a covering left
unpainted, or a painted patch over a face that took its covering off. Between a face's
keyframes, open faces' looks move by about 3 units (median; on the stage clip, with its
stage lights and singing, 20 on one detection in ten and 25 on one in twenty), and a
synthetic covering drawn on a face moves it by 40-60 (median; lostface.synthetic): measured
with a probe, not a bench. What it costs shows in `lostface run`'s keyframe count with and
without `--set keyframe.look_change=0` (a few keyframes more on the unmasked stage clip's
60 or so; the count moves by a few between runs, keyframes being painted beside the loop).

And it asks how well the newest patch still lies on the covering in view (the compositor's
covering_fit, on the frames the detector measured the face): a camera move, a zoom or a turn
that stays under the pose, roll and scale thresholds can still change the covering's outline
under the carried patch, which then lies over a cheek, the background or the lower lids. When
the fit falls more than keyframe.fit_drop below the best that patch measured on the face, a
new patch is painted (`python bench/paint_region.py --video`: the stage clip's eyes and brows
unchanged on 99.4 % of the frames with a synthetic covering against 98.4 % without, with 63
keyframes against 57 over its three coverings).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from lostface.config import KeyframeSettings
from lostface.frame import FaceTrack
from lostface.restore.align import pitch_proxy, to_canonical, yaw_proxy
from lostface.stages import CarriedFit

# the lower face in canonical pixels (x0, y0, x1, y1: beside the nose tip down to the chin),
# sampled at _THUMB pixels and averaged over a _GRID of cells
_LOWER_FACE = (72.0, 136.0, 184.0, 232.0)
_THUMB = (32, 24)
_GRID = (4, 3)


@dataclass(slots=True)
class _Painted:
    frame_index: int
    yaw: float
    pitch: float
    roll: float
    size: float
    look: np.ndarray | None  # lower_face_look on that keyframe


def lower_face_look(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray | None:
    """(12, 3) float32: the mean Lab colour (8-bit units) of each cell of a 4x3 grid over the
    lower face, or None when the landmarks give no alignment."""
    try:
        m = to_canonical(np.asarray(landmarks, np.float64)[:5])
    except ValueError:
        return None
    x0, y0, x1, y1 = _LOWER_FACE
    sx, sy = _THUMB[0] / (x1 - x0), _THUMB[1] / (y1 - y0)
    to_thumb = np.array([[sx, 0.0, -x0 * sx], [0.0, sy, -y0 * sy]]) @ np.vstack([m, [0, 0, 1]])
    thumb = cv2.warpAffine(
        image, to_thumb, _THUMB, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    cells = cv2.resize(thumb, _GRID, interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(cells, cv2.COLOR_BGR2LAB).reshape(-1, 3).astype(np.float32)


def look_change(a: np.ndarray, b: np.ndarray) -> float:
    """How differently two lower faces look: the median over the grid's cells of their Lab
    distance (a mouth that opens changes a few cells; a covering, most)."""
    return float(np.median(np.linalg.norm(a - b, axis=1)))


def roll_angle(landmarks: np.ndarray) -> float:
    """In-plane head rotation (radians): angle of the line from eye to eye."""
    lm = np.asarray(landmarks, np.float64)
    return math.atan2(float(lm[1, 1] - lm[0, 1]), float(lm[1, 0] - lm[0, 0]))


def _angle_diff(a: float, b: float) -> float:
    return abs((a - b + math.pi) % (2 * math.pi) - math.pi)


class ThresholdKeyframePolicy:
    """KeyframePolicy: fixed thresholds on pose, roll, scale, the lower face's look, the
    patch's fit to its covering and patch age.

    Only confirmed tracks that matched a detection on this frame are eligible: their
    landmarks are measured, not predicted, so the keyframe aligns well.
    """

    def __init__(self, settings: KeyframeSettings) -> None:
        self.settings = settings
        self._painted: dict[int, _Painted] = {}
        self._best: dict[int, CarriedFit] = {}  # each face's newest patch's best fit so far

    def due(
        self,
        track: FaceTrack,
        frame_index: int,
        scene_cut: bool,
        image: np.ndarray | None = None,
        fit: Callable[[], CarriedFit | None] | None = None,
    ) -> str | None:
        """'new', 'cut', 'pose', 'roll', 'scale', 'look', 'fit' or 'age' (first that applies),
        or None. image: the frame as it came in (the 'look' reason needs it); fit: how well the
        face's newest patch lies on the covering in view now (the 'fit' reason: asked only
        when no other reason applies before it)."""
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
        if image is not None and last.look is not None and s.look_change > 0:
            now = lower_face_look(image, lm)
            if now is not None and look_change(now, last.look) > s.look_change:
                return "look"
        if fit is not None and s.fit_drop > 0 and self._misfit(track.track_id, fit()):
            return "fit"
        if frame_index - last.frame_index >= s.max_age:
            return "age"
        return None

    def _misfit(self, track_id: int, now: CarriedFit | None) -> bool:
        """Whether the newest patch's fit fell more than fit_drop below the best it measured
        on this face (see KeyframeSettings.fit_drop)."""
        if now is None:
            return False
        kept = self._best.get(track_id)
        if kept is None or kept.keyframe != now.keyframe or now.fit > kept.fit:
            self._best[track_id] = kept = now
        # below a best of 0 or less the patch never lay on the covering: no drop to measure
        return kept.fit > 0 and now.fit < (1.0 - self.settings.fit_drop) * kept.fit

    def painted(self, track: FaceTrack, frame_index: int, image: np.ndarray | None = None) -> None:
        lm = track.landmarks
        look = lower_face_look(image, lm) if image is not None else None
        self._painted[track.track_id] = _Painted(
            frame_index, yaw_proxy(lm), pitch_proxy(lm), roll_angle(lm), track.size, look
        )

    def forget(self, track_id: int) -> None:
        self._painted.pop(track_id, None)
        self._best.pop(track_id, None)

    def reset(self) -> None:
        self._painted.clear()
        self._best.clear()
