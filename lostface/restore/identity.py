"""Which reference person a masked face is, from the part of the face a covering leaves.

A masked face compared with an unmasked photo does not tell people apart (the covering
dominates dlib's embedding). Painting the same neutral covering on both first does
(bench/identity_gate.py): then only the visible upper face differs. Every comparison here is
made between canonical crops (restore.align) with the same flat covering over the lower face.

Per track, the distances to each person are averaged over the track's keyframes, and the
decision has hysteresis: a person is taken when the mean distance falls below `match` and is
kept until it rises above `keep`, so one odd keyframe (a turn, a blur) does not switch it. A
track that matches nobody gets no person: the restorer paints the neutral fill, never
someone else's mouth.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from lostface.errors import ModelError
from lostface.restore.regions import lower_face_mask

log = logging.getLogger(__name__)

# dlib's face box on the canonical crop (eyes at y 100, mouth at y 181): its HOG detector's box
# runs from the brows to the chin, about 2.2 eye distances wide.
_BOX = (50, 62, 206, 226)
_COVER_BGR = (128, 128, 128)
_HISTORY = 8  # keyframes averaged per track


def _covered(face: np.ndarray) -> np.ndarray:
    """The canonical crop with the same flat covering every comparison uses."""
    out = face.copy()
    out[lower_face_mask() > 0] = _COVER_BGR
    return out


@dataclass
class _Track:
    distances: dict[str, list[float]] = field(default_factory=dict)
    person: str | None = None


class IdentityGate:
    """Per-track identity among named reference people (dlib's face-recognition ResNet)."""

    def __init__(
        self, people: dict[str, list[np.ndarray]], match: float = 0.58, keep: float = 0.63
    ) -> None:
        """people: person name -> canonical crops of their reference photos."""
        import dlib

        from lostface.models import dlib_model_paths

        shape_path, rec_path = dlib_model_paths()
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(shape_path))
        self._rec = dlib.face_recognition_model_v1(str(rec_path))
        self.match = float(match)
        self.keep = float(keep)
        self._people = {
            name: [self.embed(c) for c in crops] for name, crops in people.items() if crops
        }
        self._tracks: dict[int, _Track] = {}

    def embed(self, face: np.ndarray) -> np.ndarray:
        """128-d embedding of a canonical crop wearing the neutral covering."""
        rgb = np.ascontiguousarray(_covered(face)[:, :, ::-1])
        shape = self._shape(rgb, self._dlib.rectangle(*_BOX))
        return np.asarray(self._rec.compute_face_descriptor(rgb, shape), np.float64)

    def distances(self, face: np.ndarray) -> dict[str, float]:
        """Distance from this face to each person (their closest reference photo)."""
        d = self.embed(face)
        return {
            name: float(min(np.linalg.norm(d - e) for e in embs))
            for name, embs in self._people.items()
        }

    def observe(self, track_id: int | None, face: np.ndarray) -> str | None:
        """The person this track is, after one more keyframe (None: nobody)."""
        dist = self.distances(face)
        if not dist:
            return None
        if track_id is None:  # a photo: one look, no history
            name, closest = min(dist.items(), key=lambda kv: kv[1])
            return name if closest < self.match else None
        st = self._tracks.setdefault(track_id, _Track())
        for name, d in dist.items():
            hist = st.distances.setdefault(name, [])
            hist.append(d)
            del hist[:-_HISTORY]
        means = {name: float(np.mean(h)) for name, h in st.distances.items()}
        best = min(means, key=lambda n: means[n])
        if st.person is not None and means[st.person] < self.keep:
            if best == st.person or means[best] >= self.match:
                return st.person
        st.person = best if means[best] < self.match else None
        return st.person

    def person(self, track_id: int) -> str | None:
        """The track's current decision (None: nobody, or not seen yet)."""
        st = self._tracks.get(track_id)
        return None if st is None else st.person

    def forget(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)

    def reset(self) -> None:
        self._tracks.clear()


def build_gate(
    people: dict[str, list[np.ndarray]], match: float, keep: float
) -> IdentityGate | None:
    """The gate, or None (with one log line) when dlib is not installed."""
    try:
        return IdentityGate(people, match, keep)
    except (ImportError, ModelError):
        log.warning(
            "The identity gate needs dlib (pip install 'lostface[quality]'); without it every "
            "masked face is painted from the references."
        )
        return None
