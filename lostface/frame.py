"""Shared vocabulary of the pipeline: Frame, Detections, FaceTrack, CoverMask, Patch.

Library objects (av frames, ultralytics results, onnx outputs) are converted to these
types at the edge; stages only ever exchange these.

Landmark convention (image coordinates, pixels, float32), the first five points of every
landmark array: 0 eye on the image's left, 1 eye on the image's right, 2 nose tip,
3 mouth corner on the image's left, 4 mouth corner on the image's right. Backends that
give more points append them after these five.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

N_LANDMARKS = 5


@dataclass(slots=True)
class Frame:
    """One decoded video frame or still image: BGR uint8, HxWx3, C-contiguous."""

    image: np.ndarray
    index: int = 0
    pts: int | None = None
    time_base: Fraction | None = None

    @property
    def time(self) -> float | None:
        if self.pts is None or self.time_base is None:
            return None
        return float(self.pts * self.time_base)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.image.shape[1]), int(self.image.shape[0])


@dataclass(slots=True)
class Detections:
    """Faces found in one image. boxes (N,4) x1,y1,x2,y2; scores (N,); landmarks (N,K,2).

    `weak`, when a detector gives it, holds the candidates that scored under its threshold
    but above `detect.track_threshold`: too weak to start a track, strong enough to continue
    one the tracker already follows (a face that a covering, a turn or its small size makes
    hard to see). Everything that is not the tracker reads the faces above threshold only."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray
    weak: Detections | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        n = len(self.boxes)
        lm = np.asarray(self.landmarks, dtype=np.float32)
        self.landmarks = (
            lm.reshape(n, -1, 2) if lm.size else np.zeros((n, N_LANDMARKS, 2), np.float32)
        )
        if len(self.scores) != n:
            raise ValueError("Detections: boxes and scores differ in length")

    @classmethod
    def empty(cls, n_landmarks: int = N_LANDMARKS) -> Detections:
        return cls(
            np.zeros((0, 4), np.float32),
            np.zeros((0,), np.float32),
            np.zeros((0, n_landmarks, 2), np.float32),
        )

    def __len__(self) -> int:
        return len(self.boxes)

    def subset(self, index: np.ndarray | list[int]) -> Detections:
        idx = np.asarray(index, dtype=np.int64)
        return Detections(self.boxes[idx], self.scores[idx], self.landmarks[idx])

    def to_json(self) -> list[dict]:
        """Plain JSON-serialisable faces: box, score, landmarks (rounded to 0.1 px)."""
        out = []
        for b, s, lm in zip(self.boxes, self.scores, self.landmarks, strict=True):
            out.append(
                {
                    "box": [round(float(v), 1) for v in b],
                    "score": round(float(s), 4),
                    "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in lm],
                }
            )
        return out


@dataclass(slots=True)
class FaceTrack:
    """A face followed over frames. box and landmarks are the tracker's smoothed estimate
    for the current frame (measured, or predicted between detections)."""

    track_id: int
    box: np.ndarray
    landmarks: np.ndarray
    score: float = 0.0
    age: int = 0  # frames since birth
    hits: int = 0  # matched detections so far
    misses: int = (
        0  # consecutive detection rounds without a match (frames without detection count none)
    )
    confirmed: bool = False
    detected: bool = False  # matched a detection on the current frame
    hidden: bool = False  # overlaps another face and was not found on its last detection round
    masked: bool | None = None  # None until the first keyframe decided it

    @property
    def size(self) -> float:
        """Face scale in pixels: sqrt(box area)."""
        w = float(self.box[2] - self.box[0])
        h = float(self.box[3] - self.box[1])
        return max(w, 1.0) ** 0.5 * max(h, 1.0) ** 0.5


@dataclass(slots=True)
class CoverMask:
    """What a segmenter found on one aligned face (canonical space, see restore.align).

    covered: whether the lower face wears a covering at all.
    alpha: (H,W) (align.CANON_SHAPE) float32 in [0,1], soft covered region with a feathered edge.
    hard: (H,W) (align.CANON_SHAPE) bool, the covered region before feathering.
    score: the evidence for `covered` (higher = more clearly covered).
    mesh: the face mesh found on the crop under its covering ((468,3) float32, canonical), where
    the painter looked for it (a covered face's region is bounded by it); None elsewhere.
    """

    covered: bool
    alpha: np.ndarray
    hard: np.ndarray
    score: float = 0.0
    mesh: np.ndarray | None = None


@dataclass(slots=True)
class Patch:
    """A restored face in canonical space, ready to be carried onto later frames.

    image: (H,W,3) uint8 BGR (align.CANON_SHAPE), the whole aligned face, hidden part painted.
    alpha: (H,W) (align.CANON_SHAPE) float32 in [0,1], where the patch replaces the frame.
    to_canonical: 2x3 affine, image -> canonical, of the keyframe it was painted on.
    skin_mean: mean BGR of the visible upper-face skin at the keyframe (for relighting).
    """

    track_id: int
    frame_index: int
    image: np.ndarray
    alpha: np.ndarray
    to_canonical: np.ndarray
    skin_mean: np.ndarray = field(default_factory=lambda: np.zeros(3, np.float32))
    reference: str | None = None  # which reference photo painted it (None: classical fill)
    # median BGR of the covering at the keyframe: between keyframes the compositor paints the
    # pixels of that colour just outside the patch (the covering moved against the face)
    cover_colour: np.ndarray | None = None
    # (H,W) bool (align.CANON_SHAPE): the covered region found at the keyframe, the shape the
    # compositor looks for between keyframes (it slides the patch onto the covering in view)
    covered: np.ndarray | None = None
    # the invisible watermark (lostface.provenance): float32 residuals (2,H,W,3) in canonical
    # space, the payload's and its complement's, that the compositor adds in turns over the
    # whole face crop; None when unmarked
    mark: np.ndarray | None = None
