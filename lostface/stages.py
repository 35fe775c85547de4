"""The Protocols between pipeline stages: each stage is a small class with one verb.

Backends are picked by name from the configuration (see lostface.factory); every
Protocol has an embedded implementation that runs offline on a CPU.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

import numpy as np

from lostface.frame import CoverMask, Detections, FaceTrack, Patch


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> Detections:
        """Faces in a BGR uint8 image, boxes and landmarks in that image's pixels.

        (The live loop's background detector also returns None when it has no fresh result
        for a frame; the pipeline then predicts, as between detection rounds.)
        """
        ...


class SceneCutDetector(Protocol):
    def is_cut(self, image: np.ndarray) -> bool:
        """True when this frame starts a new shot (compared with the previous call)."""
        ...

    def reset(self) -> None: ...


class Tracker(Protocol):
    def update(
        self,
        detections: Detections | None,
        scene_cut: bool = False,
        image: np.ndarray | None = None,
        still: Collection[int] = (),
    ) -> list[FaceTrack]:
        """Advance one frame. detections=None on frames where the detector did not run
        (tracks are predicted). `image` is the frame itself, for trackers that follow the
        faces' pixels between detections; `still` names faces that need no such care
        (nothing is painted on them). Returns the live tracks (confirmed and tentative)."""
        ...

    def reset(self) -> None: ...


class KeyframePolicy(Protocol):
    def due(self, track: FaceTrack, frame_index: int, scene_cut: bool) -> str | None:
        """Why this track needs a fresh patch now, or None.

        Reasons: "new", "cut", "pose", "roll", "scale", "age".
        """
        ...

    def painted(self, track: FaceTrack, frame_index: int) -> None:
        """Record that a keyframe job was taken for this track at its current geometry."""
        ...

    def forget(self, track_id: int) -> None: ...

    def reset(self) -> None: ...


class Segmenter(Protocol):
    def segment(
        self,
        face: np.ndarray,
        landmarks: np.ndarray | None = None,
        was_covered: bool | None = None,
    ) -> CoverMask:
        """Covered region of one aligned face (canonical crop, see restore.align); landmarks:
        its 5 points in canonical space (the head turn narrows the far side); was_covered:
        the same face's previous decision, if any (a decision is kept unless clearly wrong)."""
        ...


class Restorer(Protocol):
    def restore(
        self, face: np.ndarray, cover: CoverMask, landmarks: np.ndarray
    ) -> tuple[np.ndarray, str | None]:
        """Paint the covered region of an aligned face.

        face: (H,W,3) uint8 canonical crop (align.CANON_SHAPE); landmarks: its 5 canonical points.
        Returns the painted crop (same shape) and the name of the reference used
        (None for a classical fill).
        """
        ...


class Compositor(Protocol):
    def composite(self, image: np.ndarray, track: FaceTrack, patch: Patch) -> None:
        """Carry the patch onto the face's current geometry in `image` (in place)."""
        ...
