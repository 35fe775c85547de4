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

dlib computes each embedding in a process of its own (lostface.restore.dlib_worker), started
when a gate is built: its binding holds the GIL for the whole embedding, which in this process
would stop the frame loop and every other thread meanwhile. Without that process (it cannot
start, or dies) the embedding is made here, with the same numbers.

An embedding costs tens of milliseconds on a CPU, so a track is looked at on each of its
first `settle` keyframes, on every keyframe while its decision is a close call, and then only
on every `every`-th: a decided face keeps its person between looks. Only a track's first look
holds its keyframe (the face is painted from the person it finds); each later one is sent to
dlib's process and folded in at the track's next keyframe, so the keyframes of a turning head
are not held by it (bench/identity.py: covered keyframes' wait for their patch, median 0.29-0.32
s when every look held its keyframe, 0.26-0.29 s since). The painter owns the gate
(lostface.restore.painter) and runs it on the keyframe worker, never in the frame loop.
"""

from __future__ import annotations

import atexit
import copy
import hashlib
import logging
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Collection, Sequence
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from lostface.errors import ModelError
from lostface.restore import dlib_worker  # its protocol (it imports numpy and dlib only when run)
from lostface.restore.regions import lower_face_mask

log = logging.getLogger(__name__)

# dlib's face box on the canonical crop (eyes at y 100, mouth at y 181): its HOG detector's box
# runs from the brows to the chin, about 2.2 eye distances wide.
_BOX = (50, 62, 206, 226)
_COVER_BGR = (128, 128, 128)
_HISTORY = 8  # looks averaged per track
_SETTLE = 3  # a track's first looks, one per keyframe, before its person counts as decided
_EVERY = 6  # once decided, one look every this many keyframes
# a decision counts as made only with the mean distance this far on its side of the threshold
# (below match for a person, at or above it for nobody): a close call is looked at again on
# every keyframe
_SURE = 0.04
# dlib's network keeps buffers between calls: one computation at a time (live sessions each
# have a keyframe thread, and they share the loaded models)
_LOCK = threading.Lock()
# requests sent to dlib's process whose answers (1 KB each) may wait unread in its output pipe
# (64 KB on Linux)
_UNREAD_MAX = 16


@lru_cache(maxsize=1)
def _dlib_models() -> tuple[Any, Any, Any]:
    """dlib, its 5-point shape predictor and its face-recognition ResNet, loaded once.

    Five points (eye corners and the nose's base) align dlib's chip as well as 68 do on a face
    wearing the neutral covering, whose mouth and jaw points would fall on grey anyway: on the
    stage clip the gate paints the same frames from the singer (90.7%) and from others (1.5%)
    with either, and the 5-point file reads in 0.04 s instead of 0.4 s."""
    import dlib

    from lostface.models import dlib_model_paths

    shape_path, rec_path = dlib_model_paths(points=5)
    return (
        dlib,
        dlib.shape_predictor(str(shape_path)),
        dlib.face_recognition_model_v1(str(rec_path)),
    )


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


class _EmbedProcess:
    """dlib's embedding in a child process (lostface.restore.dlib_worker): in this process its
    binding would hold the GIL for each 75 ms embedding and stop the frame loop meanwhile.
    Started once per process and shared; send() and receive() answer None once the child
    cannot run (no dlib there, killed), and the caller embeds here instead."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None
        self._ready = False
        self._failed: str | None = None
        self._here = False  # embed_here(): this process's only thread does all the work
        # requests sent and not yet answered, oldest first (the child answers in order); the
        # answers read while waiting for a later one; requests nobody will ask for again
        self._sent: deque[int] = deque()
        self._answers: dict[int, np.ndarray] = {}
        self._dropped: set[int] = set()
        self._tickets = 0

    def stay_here(self) -> None:
        self._here = True
        self.close()

    def start(self) -> None:
        """Start the child if it is not running (it loads while the caller goes on)."""
        if self._proc is not None or self._failed is not None or self._here:
            return
        from lostface.models import dlib_model_paths

        try:
            shape_path, rec_path = dlib_model_paths(points=5)
            cmd = [sys.executable, dlib_worker.__file__]
            cmd += [str(shape_path), str(rec_path), *(str(v) for v in _BOX)]
            self._proc = subprocess.Popen(
                cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
            )
        except (OSError, ModelError) as exc:
            self._fail(f"it could not start ({exc})")
            return
        atexit.register(self.close)

    def send(self, rgb: np.ndarray) -> int | None:
        """Ask for an RGB canonical crop's descriptor without waiting for it: a ticket for
        receive(), or None (the child cannot run: embed here instead)."""
        self.start()
        proc = self._proc
        if proc is None or self._failed is not None:
            return None
        assert proc.stdin is not None and proc.stdout is not None
        # answers left unread fill the child's output pipe, and a child blocked writing one
        # reads no more requests: read the oldest before there are too many
        while len(self._sent) >= _UNREAD_MAX:
            if not self._take_oldest():
                return None
        try:
            if not self._ready:
                if proc.stdout.read(1) != b"\0":
                    raise EOFError("it ended while loading dlib's models")
                self._ready = True
            h, w = rgb.shape[:2]
            proc.stdin.write(dlib_worker.HEADER.pack(h, w))
            proc.stdin.write(np.ascontiguousarray(rgb).tobytes())
            proc.stdin.flush()
        except (OSError, EOFError, ValueError) as exc:
            self._fail(str(exc))
            return None
        self._tickets += 1
        self._sent.append(self._tickets)
        return self._tickets

    def receive(self, ticket: int) -> np.ndarray | None:
        """The descriptor asked for by send() (waits for it), or None when the child stopped
        before answering (embed here instead)."""
        while ticket not in self._answers and ticket in self._sent:
            if not self._take_oldest():
                return None
        return self._answers.pop(ticket, None)

    def _take_oldest(self) -> bool:
        """Read the oldest request's answer (kept for its receive(), or thrown away when
        dropped); False when the child stopped."""
        oldest = self._sent.popleft()
        answer = self._read()
        if answer is None:
            return False
        if oldest in self._dropped:
            self._dropped.discard(oldest)
        else:
            self._answers[oldest] = answer
        return True

    def drop(self, ticket: int) -> None:
        """Nobody will receive() this ticket: its answer is read and thrown away."""
        if self._answers.pop(ticket, None) is None and ticket in self._sent:
            self._dropped.add(ticket)

    def _read(self) -> np.ndarray | None:
        """The child's next answer (None, and the child stopped, when it cannot be read)."""
        proc = self._proc
        if proc is None or self._failed is not None:
            return None
        assert proc.stdout is not None
        try:
            status = proc.stdout.read(1)
            if status == b"\0":
                data = proc.stdout.read(dlib_worker.DIMS * 8)
                if len(data) == dlib_worker.DIMS * 8:
                    return np.frombuffer(data, np.float64).copy()
            elif status == b"\1":
                (n,) = dlib_worker.ERROR.unpack(proc.stdout.read(dlib_worker.ERROR.size))
                raise RuntimeError(proc.stdout.read(n).decode(errors="replace"))
            raise EOFError("it ended")
        except (OSError, EOFError, RuntimeError, ValueError, struct.error) as exc:
            self._fail(str(exc))
            return None

    def _fail(self, why: str) -> None:
        if self._failed is None:
            log.info("dlib's embedding process stopped (%s); embedding in this process.", why)
        self._failed = why
        self.close()

    def close(self) -> None:
        self._sent.clear()  # no answer will come: their askers embed here
        self._answers.clear()
        self._dropped.clear()
        proc, self._proc = self._proc, None
        if proc is None:
            return
        with suppress(OSError):
            assert proc.stdin is not None
            proc.stdin.close()  # the child ends at the end of its input
        try:
            proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


_WORKER = _EmbedProcess()


def start_embedding() -> None:
    """Start dlib's embedding process now, so its models are loaded by the first embed()."""
    with _LOCK:
        _WORKER.start()


def embed_here() -> None:
    """Make this process's embeddings in this process, not in dlib's own: for a process that
    is given one core and does all its work on one thread (a batch worker of one thread), where
    holding the GIL stops nothing and a second process would take a core nobody gave it."""
    with _LOCK:
        _WORKER.stay_here()


def embed(face: np.ndarray) -> np.ndarray:
    """128-d embedding of a canonical crop wearing the neutral covering (dlib's, computed in
    its own process; here when that cannot run, or after embed_here)."""
    return Later(face).result()


def _embed_here(rgb: np.ndarray) -> np.ndarray:
    """dlib's descriptor computed in this process (call with _LOCK held: one at a time, and
    the models are loaded once when two threads need them first)."""
    dlib, shape_model, rec = _dlib_models()
    shape = shape_model(rgb, dlib.rectangle(*_BOX))
    return np.asarray(rec.compute_face_descriptor(rgb, shape), np.float64)


class Later:
    """embed() without waiting: the face goes to dlib's process now and result() takes its
    embedding (computed here at once when that process cannot run)."""

    def __init__(self, face: np.ndarray) -> None:
        self._rgb: np.ndarray | None = np.ascontiguousarray(_covered(face)[:, :, ::-1])
        self._value: np.ndarray | None = None
        with _LOCK:
            self._ticket = _WORKER.send(self._rgb)
            if self._ticket is None:  # no child process: made here, now
                self._value, self._rgb = _embed_here(self._rgb), None

    def result(self) -> np.ndarray:
        """The embedding (waits for dlib's process when it has not answered yet)."""
        if self._value is None:
            with _LOCK:
                if self._ticket is not None:
                    self._value = _WORKER.receive(self._ticket)
                    self._ticket = None
                if self._value is None:  # the child stopped before answering
                    assert self._rgb is not None
                    self._value = _embed_here(self._rgb)
            self._rgb = None
        return self._value

    def cancel(self) -> None:
        """Not wanted any more: dlib's answer is thrown away when it comes."""
        with _LOCK:
            if self._ticket is not None:
                _WORKER.drop(self._ticket)
                self._ticket = None
        self._rgb = None


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
    pending: Later | None = None  # a look sent to dlib, folded in on the next keyframe


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
        at only while the track is new, and then on every `every`-th keyframe. The track's
        first look decides this keyframe; a later one decides from the track's next keyframe
        on (asynchronous: the face goes to dlib's process, and this keyframe keeps the person
        decided so far)."""
        st = self._tracks.setdefault(track_id, _Track())
        if not self._people:
            return None  # nobody to tell apart yet (people learned later look at it then)
        if st.pending is not None:
            later, st.pending = st.pending, None
            self._fold(st, later.result())  # sent a keyframe ago: answered by now, as a rule
        st.since += 1
        if st.looks >= self.settle and st.since < self.every and self._sure(st):
            return st.person
        st.since = 0
        st.looks += 1
        self.looks += 1
        if st.looks > 1:
            st.pending = Later(face)
            return st.person
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
        st = self._tracks.pop(track_id, None)
        if st is not None and st.pending is not None:
            st.pending.cancel()

    def reset(self) -> None:
        for track_id in list(self._tracks):
            self.forget(track_id)


def build_gate(
    people: dict[str, list[np.ndarray]], match: float, keep: float, learns: bool = False
) -> IdentityGate | None:
    """The gate for these people, or None (with one log line) when dlib is not installed.
    learns: built without people too, for the people learned from the footage."""
    if not people and not learns:
        return None
    try:
        _dlib_installed()  # nothing loaded yet (a clip may have no face to learn from)
        start_embedding()  # dlib's process loads while the rest is built
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
