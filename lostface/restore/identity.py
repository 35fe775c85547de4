"""Which reference person a masked face is, from the part of the face a covering leaves.

A masked face compared with an unmasked photo does not tell people apart (the covering
dominates dlib's embedding). Painting the same neutral covering on both first does
(bench/identity_gate.py): then only the visible upper face differs. Every comparison here is
made between canonical crops (restore.align) with the same flat covering over the lower face.

Per track, the distances to each person are averaged over the track's looks, and the
decision has hysteresis: a person is taken when the mean distance falls below `match` and is
kept until it rises above `keep`, so one odd keyframe (a turn, a blur) does not switch it. A
track that matches nobody gets no person: the painter then asks for the neutral fill, never
someone else's mouth.

Each embedding is dlib's: its 5-point shape predictor and face chip, and its face-recognition
ResNet run by onnxruntime from dlib's own model file (lostface.restore.dlib_net; the same
numbers as dlib's binding to float rounding, about 4 ms instead of 75 ms on a CPU core, and
the GIL is released while it runs). Where that graph cannot be built, dlib's binding runs
the network itself, with one log line.

A track is looked at on each of its first `settle` keyframes, on every keyframe while its
decision is a close call, and then only on every `every`-th: a decided face keeps its person
between looks. The painter owns the gate (lostface.restore.painter) and runs it on the keyframe
worker, never in the frame loop.
"""

from __future__ import annotations

import copy
import hashlib
import logging
import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from lostface.errors import ModelError
from lostface.restore.regions import lower_face_mask

log = logging.getLogger(__name__)

# dlib's face box on the canonical crop (eyes at y 100, mouth at y 181): its HOG detector's box
# runs from the brows to the chin, about 2.2 eye distances wide.
FACE_BOX = (50, 62, 206, 226)
_COVER_BGR = (128, 128, 128)
_HISTORY = 8  # looks averaged per track
_SETTLE = 3  # a track's first looks, one per keyframe, before its person counts as decided
_EVERY = 6  # once decided, one look every this many keyframes
# a decision counts as made only with the mean distance this far on its side of the threshold
# (below match for a person, at or above it for nobody): a close call is looked at again on
# every keyframe
_SURE = 0.04
# the models load once, on the first thread that needs them (the gate's loader, as a rule)
_LOCK = threading.Lock()


@lru_cache(maxsize=1)
def _dlib_models() -> tuple[Any, Any, Any]:
    """dlib, its 5-point shape predictor and the face-recognition ResNet (a dlib_net.FaceNet,
    or dlib's own binding where that graph cannot be built), loaded once; call with _LOCK held.

    Five points (eye corners and the nose's base) align dlib's chip as well as 68 do on a face
    wearing the neutral covering, whose mouth and jaw points would fall on grey anyway: on the
    stage clip the gate paints the same frames from the singer (90.7%) and from others (1.5%)
    with either, and the 5-point file reads in 0.04 s instead of 0.4 s."""
    import dlib

    from lostface.models import dlib_model_paths
    from lostface.restore.dlib_net import FaceNet, NetworkFileError

    shape_path, rec_path = dlib_model_paths(points=5)
    net: Any
    try:
        net = FaceNet(rec_path)
    except (ImportError, OSError, RuntimeError, NetworkFileError) as exc:
        log.info("dlib's network runs in dlib itself (%s): each identity look is slower.", exc)
        net = dlib.face_recognition_model_v1(str(rec_path))
    return dlib, dlib.shape_predictor(str(shape_path)), net


def _dlib_installed() -> None:
    """ImportError or ModelError unless dlib and its model files are there (nothing loaded:
    dlib's models take a moment to read)."""
    import importlib.util

    from lostface.models import dlib_model_paths

    if importlib.util.find_spec("dlib") is None:
        raise ImportError("dlib")
    dlib_model_paths(points=5)


def _covered(face: np.ndarray) -> np.ndarray:
    """The canonical crop with the same flat covering every comparison uses."""
    out = face.copy()
    out[lower_face_mask() > 0] = _COVER_BGR
    return out


def start_embedding() -> None:
    """Load dlib's models on a thread of their own, so the first embed() finds them loaded
    (about 0.2 s, while the caller builds the rest). Not a daemon: a short job (a photo about
    100 px wide, its face painted in a moment) can end while the thread is inside
    onnxruntime's session set-up, and an interpreter torn down under it aborts the process
    (exit 134 after the output was written); the interpreter waits for the load instead."""

    def load() -> None:
        try:
            with _LOCK:
                _dlib_models()
        except (ImportError, ModelError, RuntimeError):
            pass  # the first embed() raises it again, where it can be handled

    threading.Thread(target=load, name="lostface-dlib-load", daemon=False).start()


def embed(face: np.ndarray) -> np.ndarray:
    """128-d embedding of a canonical crop wearing the neutral covering."""
    return _descriptor(_covered(face))


def _descriptor(face: np.ndarray) -> np.ndarray:
    """128-d embedding of a canonical crop as it is."""
    rgb = np.ascontiguousarray(face[:, :, ::-1])
    with _LOCK:
        dlib, shape_model, net = _dlib_models()
        chip = dlib.get_face_chip(rgb, shape_model(rgb, dlib.rectangle(*FACE_BOX)), 150, 0.25)
    if hasattr(net, "descriptor"):  # onnxruntime: thread-safe, and the GIL is released
        return net.descriptor(chip)
    with _LOCK:  # dlib's binding keeps buffers between calls: one at a time
        return np.asarray(net.compute_face_descriptor(chip), np.float64)


def cover_shift(face: np.ndarray) -> float:
    """How far the neutral covering moves a canonical crop in dlib's embedding (distance
    between the crop as it is and wearing the covering). Hiding an open face's nose, mouth
    and chin moves it far; a face already covered, less: on the real photos of
    ../shared/data a median 0.49 open against 0.37 covered (the segmenter's second look,
    lostface.restore.segment)."""
    return float(np.linalg.norm(_descriptor(face) - embed(face)))


def second_look() -> Callable[[np.ndarray], float] | None:
    """cover_shift, or None (with one log line) when dlib is not installed."""
    try:
        _dlib_installed()
    except (ImportError, ModelError):
        log.info(
            "The covering's second look needs dlib (pip install 'lostface[quality]'); faces "
            "just under mask.presence_threshold are left as they are."
        )
        return None
    start_embedding()
    return cover_shift


_REFERENCES: dict[bytes, np.ndarray] = {}  # digest of a reference crop -> its embedding
_REFERENCES_KEPT = 64


def _reference_embedding(face: np.ndarray) -> np.ndarray:
    """embed() of a reference photo's crop, made once per process: every gate built for the
    same references (each batch segment, each live session) reads them again."""
    key = hashlib.sha256(np.ascontiguousarray(face).tobytes()).digest() + bytes(
        str(face.shape), "ascii"
    )
    with _LOCK:
        known = _REFERENCES.get(key)
    if known is None:
        known = embed(face)
        with _LOCK:
            if len(_REFERENCES) >= _REFERENCES_KEPT:
                _REFERENCES.pop(next(iter(_REFERENCES)))
            _REFERENCES[key] = known
    return known.copy()


@dataclass
class _Track:
    distances: dict[str, list[float]] = field(default_factory=dict)
    person: str | None = None
    looks: int = 0
    since: int = 0  # keyframes since the last look


class IdentityGate:
    """Per-track identity among named reference people (dlib's face-recognition ResNet).

    people: person name -> canonical crops of their reference photos. match, keep: mean
    distances below which a person is taken, and kept. settle, every: looks per keyframe while
    a track is new, then one look every `every` keyframes."""

    def __init__(
        self,
        people: dict[str, list[np.ndarray]],
        match: float = 0.58,
        keep: float = 0.63,
        *,
        settle: int = _SETTLE,
        every: int = _EVERY,
    ) -> None:
        self.match = float(match)
        self.keep = float(keep)
        self.settle = max(1, int(settle))
        self.every = max(1, int(every))
        self._people = {
            name: [_reference_embedding(c) for c in crops]
            for name, crops in people.items()
            if crops
        }
        self._tracks: dict[int, _Track] = {}
        self.looks = 0  # embeddings computed for faces (benchmarks report the cost)

    @property
    def people(self) -> list[str]:
        return list(self._people)

    def distances_of(self, embedding: np.ndarray) -> dict[str, float]:
        """Distance from an embedding (see embed) to each person's closest one."""
        return {
            name: float(min(np.linalg.norm(embedding - e) for e in embs))
            for name, embs in self._people.items()
        }

    def learn(self, person: str, embeddings: Sequence[np.ndarray]) -> None:
        """Tell `person` apart by these embeddings (see embed) from now on, replacing what was
        known of them (none: forget them). Every track is looked at again on its next
        keyframe: a face that matched nobody may be this person."""
        if len(embeddings):
            self._people[person] = [np.asarray(e, np.float64) for e in embeddings]
        else:
            self._people.pop(person, None)
        for st in self._tracks.values():
            st.since = self.every
            if person not in self._people:
                st.distances.pop(person, None)
                if st.person == person:
                    st.person = None

    def observe(self, track_id: int, face: np.ndarray) -> str | None:
        """The person this track is, as of this keyframe (None: nobody). The face is looked
        at while the track is new, on every keyframe while its decision is a close call, and
        then on every `every`-th keyframe; between looks the track keeps its person."""
        st = self._tracks.setdefault(track_id, _Track())
        if not self._people:
            return None  # nobody to tell apart yet (people learned later look at it then)
        st.since += 1
        if st.looks >= self.settle and st.since < self.every and self._sure(st):
            return st.person
        st.since = 0
        st.looks += 1
        self.looks += 1
        self._fold(st, embed(face))
        return st.person

    def _fold(self, st: _Track, embedding: np.ndarray) -> None:
        """One look's distances into the track's history, and its decision (hysteresis)."""
        for name, d in self.distances_of(embedding).items():
            hist = st.distances.setdefault(name, [])
            hist.append(d)
            del hist[:-_HISTORY]
        if not st.distances:
            st.person = None
            return
        means = {name: float(np.mean(h)) for name, h in st.distances.items()}
        best = min(means, key=lambda n: means[n])
        if st.person is not None and means[st.person] < self.keep:
            if best == st.person or means[best] >= self.match:
                return
        st.person = best if means[best] < self.match else None

    def _sure(self, st: _Track) -> bool:
        """Whether the track's decision is clear of the threshold (see _SURE)."""
        if not st.distances:
            return True
        closest = min(float(np.mean(h)) for h in st.distances.values())
        if st.person is None:
            return closest >= self.match + _SURE
        return float(np.mean(st.distances[st.person])) < self.match - _SURE

    def fresh(self, people: Collection[str] | None = None) -> IdentityGate:
        """A gate with no track state over the same people (or those of them named), sharing
        their embeddings: live sessions start without loading or embedding anything."""
        out = copy.copy(self)
        out._people = {n: e for n, e in self._people.items() if people is None or n in people}
        out._tracks = {}
        out.looks = 0
        return out

    def forget(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)

    def reset(self) -> None:
        self._tracks.clear()


def build_gate(
    people: dict[str, list[np.ndarray]], match: float, keep: float, learns: bool = False
) -> IdentityGate | None:
    """The gate for these people, or None (with one log line) when dlib is not installed.
    learns: built without people too, for the people learned from the footage."""
    if not people and not learns:
        return None
    try:
        _dlib_installed()  # nothing loaded yet (a clip may have no face to learn from)
        start_embedding()  # dlib's models load while the rest is built
        return IdentityGate(people, match, keep)
    except (ImportError, ModelError):
        if people:
            log.warning(
                "The identity gate needs dlib (pip install 'lostface[quality]'); without it "
                "every masked face is painted from the references."
            )
        else:
            log.info(
                "Self-reference (learning each person's face from the footage) needs dlib "
                "(pip install 'lostface[quality]'); masked faces get the neutral fill."
            )
        return None
