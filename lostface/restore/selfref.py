"""Self-reference: each person's own face, learned from the moments the footage shows it.

Most first runs have no reference photo, yet footage often shows the same person unmasked for
a while: a speaker lowers the mask to talk, a guest arrives unmasked, a call starts before the
mask goes on. The painter hands every keyframe face it judges open to `offer`; a good one
(clearly open, large enough, near-frontal, sharp, well lit, mouth closed) joins the bank of
the person whose visible upper face it matches, or starts a new person ("self-1", ...).

Whose face it is, is asked as the identity gate asks it (lostface.restore.identity): dlib's
embedding with the same neutral covering painted over the lower face, so a masked face of the
person matches their open one. A face matching a person the user gave photos of is never
learned (their photos take precedence); a face matching no one starts a new person; one that
stops matching the person its track was learned as (an id switch) is not learned at all. No
face is ever painted from another person's frames: the gate decides whose bank paints a
masked face, with the same thresholds and hysteresis as for given photos.

Each person keeps at most `per_person` references, one per head-turn band (yaw), the best of
each by sharpness, size, how closed the mouth is and how much of the lower face shows skin
(a microphone or a cup before the mouth would be painted on). Everything runs on the keyframe
worker's thread (the painter's), never in the frame loop. Files gather the banks in a first pass
(`scan`: detection and the covered decision on every few frames), so the masked frames
before the unmasked moment benefit too.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from lostface.config import Settings
from lostface.frame import CoverMask
from lostface.restore import align
from lostface.restore.identity import IdentityGate, embed
from lostface.restore.reference import Reference, lab_stats, skin_weight
from lostface.restore.regions import lower_face_mask, upper_skin_mask
from lostface.tracking.detectors import box_iou_matrix

log = logging.getLogger(__name__)

PREFIX = "self-"  # learned people are named self-1, self-2, ...
_MAX_YAW = 0.3  # head turn (align.yaw_proxy, eye distances) beyond which a face is not learned
_OPEN_MARGIN = 0.6  # learned only with a covering score under this share of the threshold
_LIGHT = (25.0, 90.0)  # Lab lightness of the upper-face skin a learned face must show
_CLIPPED = 0.05  # largest share of blown-out pixels (255) on the face
_BETTER = 1.1  # a face replaces its band's reference only when this much better
# MediaPipe face-mesh points of the inner lips (upper, lower): the mouth's opening
_LIPS = (13, 14)
_MOUTH, _MOUTH_AXES = (128, 181), (40, 18)  # the lips on the canonical crop


# what a painter learned, as export() hands it over: person -> (band, reference, embedding,
# quality) of each face kept
Learned = dict[str, list[tuple[int, Reference, np.ndarray, float]]]


@dataclass(slots=True)
class _Entry:
    reference: Reference
    embedding: np.ndarray
    quality: float


@dataclass
class _Person:
    bands: dict[int, _Entry] = field(default_factory=dict)

    def references(self) -> list[Reference]:
        return [e.reference for _, e in sorted(self.bands.items())]

    def embeddings(self) -> list[np.ndarray]:
        return [e.embedding for _, e in sorted(self.bands.items())]


def sharpness(face: np.ndarray) -> float:
    """Fine detail over coarser detail on the lower face: falls as a face is blurred (motion,
    focus, compression) and does not depend on its contrast."""
    grey = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.float32)
    sel = lower_face_mask() > 0
    b1 = cv2.GaussianBlur(grey, (0, 0), 1.0)
    b3 = cv2.GaussianBlur(grey, (0, 0), 3.0)
    fine = float(np.abs(grey - b1)[sel].mean())
    coarse = float(np.abs(b1 - b3)[sel].mean())
    return fine / max(coarse, 1e-3)


def lower_skin(face: np.ndarray) -> float:
    """Share of the lower face around the mouth (cheeks, chin) whose colour is the face's own
    skin, as its upper face shows it: a microphone, a cup or a scarf before the mouth lowers it
    (a hand does not; a beard does, mildly)."""
    lab = cv2.cvtColor(face.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    weight = skin_weight(lab, lab[upper_skin_mask() > 0])
    return float((weight[_cheeks_and_chin()] > 0.25).mean())


@lru_cache(maxsize=1)
def _cheeks_and_chin() -> np.ndarray:
    """The lower face without the lips (which are not skin-coloured), as a boolean mask."""
    zone = lower_face_mask().copy()
    cv2.ellipse(zone, _MOUTH, _MOUTH_AXES, 0, 0, 360, 0, -1)
    return zone > 0


def mouth_opening(points: np.ndarray | None) -> float:
    """Gap between the inner lips in eye distances (0 when no face mesh was found)."""
    if points is None or len(points) <= max(_LIPS):
        return 0.0
    a, b = (np.asarray(points[i][:2], np.float64) for i in _LIPS)
    return float(np.linalg.norm(a - b)) / align.CANON_EYE_DISTANCE


class SelfReferences:
    """Per-person banks of unmasked keyframe faces (see the module docstring).

    gate: the identity gate whose embeddings tell people apart; people it knows at the start
    are the given references (they take precedence). learned: called with (person, its
    references) every time a person's bank changes, for the restorer (Restorer.learn)."""

    def __init__(
        self,
        gate: IdentityGate,
        settings: Settings,
        learned: Callable[[str, list[Reference]], None],
    ) -> None:
        rs = settings.restore
        self.gate = gate
        self.per_person = max(1, int(rs.self_per_person))
        self.min_face = float(rs.self_min_face)
        self.open_below = _OPEN_MARGIN * float(settings.mask.presence_threshold)
        self.join = min(float(rs.self_join), float(rs.identity_match))
        self._learned = learned
        self._people: dict[str, _Person] = {}
        self._track_person: dict[int, str] = {}  # tracks seen open -> the person they are
        self._seen_open: dict[int, int] = {}  # tracks -> the last frame their open face showed
        self._count = 0
        self.looks = 0  # embeddings computed (benchmarks report the cost)

    # -- what the painter asks --------------------------------------------------------------
    @property
    def people(self) -> list[str]:
        return list(self._people)

    def owns(self, person: str | None) -> bool:
        """Whether `person` was learned here (not given by the user)."""
        return person is not None and person in self._people

    def references(self, person: str) -> list[Reference]:
        p = self._people.get(person)
        return p.references() if p else []

    def person_of(self, track_id: int) -> str | None:
        """The person an open track was found to be (a learned or a given one), if any."""
        return self._track_person.get(track_id)

    def offer(
        self,
        track_id: int,
        face: np.ndarray,
        landmarks: np.ndarray,
        cover: CoverMask,
        span: float,
        mesh: np.ndarray | Callable[[], np.ndarray | None] | None = None,
        frame_index: int = 0,
    ) -> str | None:
        """Consider one open keyframe face (canonical crop, its 5 canonical landmarks, the
        covered decision, the frame pixels its crop spans, its face-mesh points, or what
        finds them when asked; the frame it is on); returns the learned person whose bank it
        joined, or None."""
        self._seen_open[track_id] = frame_index
        quality = self.quality(face, landmarks, cover, span, mesh)
        if quality is None:
            return None
        band = self._band(landmarks)
        known = self._track_person.get(track_id)
        if known is not None:
            if known not in self._people:
                return None  # a given person's face: their photos paint it
            old = self._people[known].bands.get(band)
            if old is not None and quality <= _BETTER * old.quality:
                return None  # no better than what the bank has: not even embedded
        emb = embed(face)
        self.looks += 1
        person = self._whose(track_id, emb, known)
        if person is None or person not in self._people:
            return None
        bank = self._people[person]
        old = bank.bands.get(band)
        if old is not None and quality <= _BETTER * old.quality:
            return None
        if old is None and len(bank.bands) >= self.per_person:
            worst = min(bank.bands, key=lambda b: bank.bands[b].quality)
            if bank.bands[worst].quality >= quality:
                return None
            del bank.bands[worst]
        bank.bands[band] = _Entry(self._reference(face, landmarks, person), emb, quality)
        self.gate.learn(person, bank.embeddings())
        self._learned(person, bank.references())
        log.debug("self-reference: %s now has %d face(s)", person, len(bank.bands))
        return person

    def worth_judging(
        self, track_id: int, face: np.ndarray, landmarks: np.ndarray, span: float
    ) -> bool:
        """Whether an open face of this track could still improve its person's bank, judged
        before its covering is (the costly part): False when the track's person already has
        a reference in this face's head-turn band that even a perfectly open, closed-mouth
        face this sharp would not beat."""
        known = self._track_person.get(track_id)
        if known is None:
            return True
        if known not in self._people:
            return False  # a given person's face
        old = self._people[known].bands.get(self._band(landmarks))
        if old is None:
            return True
        size = min(1.0, 0.65 * span / 160.0)
        best = sharpness(face) * (0.5 + 0.5 * size) * 1.2
        return best > _BETTER * old.quality

    def could_learn(self, to_canonical: np.ndarray, landmarks: np.ndarray) -> bool:
        """Whether a face of this size and head turn could be learned from, judged from its
        alignment and landmarks alone (before anything costly is done with it)."""
        width = 0.65 * align.CANON_SIZE / align.scale_of(to_canonical)
        return width >= self.min_face and abs(align.yaw_proxy(landmarks)) <= _MAX_YAW

    def open_elsewhere(self, person: str, track_id: int, since: int) -> bool:
        """Whether a track other than this one, found to be `person` by its open face (a
        learned or a given person), showed that face on frame `since` or later."""
        return any(
            p == person and t != track_id and self._seen_open.get(t, -1) >= since
            for t, p in self._track_person.items()
        )

    def forget(self, track_id: int) -> None:
        self._track_person.pop(track_id, None)
        self._seen_open.pop(track_id, None)

    def reset(self) -> None:
        """The tracks all ended (what was learned of the people stays)."""
        self._track_person.clear()
        self._seen_open.clear()

    def give_way(self, person: str, embeddings: Sequence[np.ndarray]) -> list[str]:
        """A person given now (a face captured live): drop the learned people who are them
        (within `join` of their faces), so the given photos paint them (precedence), and
        let their tracks be that person. Returns the learned people dropped (the painter
        makes the gate and the restorer forget them)."""
        dropped = []
        for name, p in list(self._people.items()):
            own = p.embeddings()
            if (
                own
                and min(float(np.linalg.norm(a - b)) for a in own for b in embeddings) < self.join
            ):
                del self._people[name]
                dropped.append(name)
        for track_id, name in list(self._track_person.items()):
            if name in dropped:
                self._track_person[track_id] = person
        return dropped

    def export(self) -> Learned:
        """What was learned, to hand to another painter (a batch segment on another worker):
        person -> their (head-turn band, reference, embedding, quality)."""
        return {
            name: [(b, e.reference, e.embedding, e.quality) for b, e in sorted(p.bands.items())]
            for name, p in self._people.items()
        }

    def load(self, learned: Learned) -> None:
        """Start from what another painter learned (see export)."""
        for name, entries in learned.items():
            person = self._people.setdefault(name, _Person())
            for band, reference, embedding, quality in entries:
                person.bands[band] = _Entry(reference, embedding, quality)
            self.gate.learn(name, person.embeddings())
            self._learned(name, person.references())
        numbers = [int(n[len(PREFIX) :]) for n in self._people if n[len(PREFIX) :].isdigit()]
        self._count = max([self._count, *numbers])

    def teach(self, gate: IdentityGate) -> None:
        """Hand every learned person to another gate (and use it from now on): a live session
        that swaps its engines keeps what it learned."""
        self.gate = gate
        for name, p in self._people.items():
            gate.learn(name, p.embeddings())
            self._learned(name, p.references())

    # -- internals ----------------------------------------------------------------------------
    def quality(
        self,
        face: np.ndarray,
        landmarks: np.ndarray,
        cover: CoverMask,
        span: float,
        mesh: np.ndarray | Callable[[], np.ndarray | None] | None = None,
    ) -> float | None:
        """How good a reference this open face makes (higher is better), or None when it
        should not be learned from at all. mesh: the face-mesh points, or what finds them
        (asked only for a face that passes the cheaper checks)."""
        if cover.covered or cover.score >= self.open_below:
            return None  # not clearly open: a covering missed would be painted back on
        width = span * 0.65  # a face box's share of its canonical crop (painter._FACE_SHARE)
        if width < self.min_face:
            return None
        if abs(align.yaw_proxy(landmarks)) > _MAX_YAW:
            return None
        mean, _ = lab_stats(face, upper_skin_mask())
        if not _LIGHT[0] <= float(mean[0]) <= _LIGHT[1]:
            return None
        if float((face.max(axis=2) >= 250).mean()) > _CLIPPED:
            return None
        opening = mouth_opening(mesh() if callable(mesh) else mesh)
        size = min(1.0, width / 160.0)
        skin = lower_skin(face)  # ranks only: the lower-face zone also holds jaw and neck
        return sharpness(face) * (0.5 + 0.5 * size) * (0.2 + skin) / (1.0 + 4.0 * opening)

    def _band(self, landmarks: np.ndarray) -> int:
        """Which head-turn band a face falls in (per_person bands across +-_MAX_YAW)."""
        yaw = float(np.clip(align.yaw_proxy(landmarks), -_MAX_YAW, _MAX_YAW))
        return min(self.per_person - 1, int((yaw + _MAX_YAW) / (2 * _MAX_YAW) * self.per_person))

    def _whose(self, track_id: int, emb: np.ndarray, known: str | None) -> str | None:
        """The person this face is: a given one (never learned), a learned one, or a new one;
        None when it no longer matches the person its track was learned as.

        A face is a given person, or joins a learned one, only within `join` of their faces
        (people's distances overlap between join and identity_match: two people merged would
        paint one with the other's mouth); a face further off starts a new person, which at
        worst splits one person in two banks, both theirs, and the gate paints each masked
        face from the closest."""
        distances = self.gate.distances_of(emb)
        given = {n: d for n, d in distances.items() if n not in self._people}
        if given and min(given.values()) < self.join:
            self._track_person[track_id] = min(given, key=lambda n: given[n])
            return None
        own = {n: d for n, d in distances.items() if n in self._people}
        closest = min(own, key=lambda n: own[n]) if own else None
        if known is not None:
            if closest == known and own[known] < self.join:
                return known
            self._track_person.pop(track_id, None)  # the track shows someone else now
            return None
        if closest is not None and own[closest] < self.join:
            person = closest
        else:
            self._count += 1
            person = f"{PREFIX}{self._count}"
            self._people[person] = _Person()
        self._track_person[track_id] = person
        return person

    @staticmethod
    def _reference(face: np.ndarray, landmarks: np.ndarray, person: str) -> Reference:
        lm = np.asarray(landmarks, np.float32)[:5]
        mean, std = lab_stats(face, upper_skin_mask())
        return Reference(
            person,
            face.copy(),
            lm,
            align.yaw_proxy(lm),
            align.pitch_proxy(lm),
            mean,
            std,
            person=person,
        )


# -- the first pass over a file ------------------------------------------------------------
_IOU = 0.3  # a sampled face continues the previous sample's face it overlaps this much


class ScanTracks:
    """Ids for faces on frames sampled every few frames: a face continues the previous
    sample's face it overlaps most (IoU), else gets a new id; a scene cut starts afresh.
    Ids are negative, so they never meet the pipeline's own track ids."""

    def __init__(self) -> None:
        self._boxes: list[tuple[int, np.ndarray]] = []
        self._next = -1

    def assign(self, boxes: np.ndarray, cut: bool = False) -> list[int]:
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        prev = [] if cut else self._boxes
        iou = (
            box_iou_matrix(boxes, np.array([b for _, b in prev]))
            if prev and len(boxes)
            else np.zeros((len(boxes), 0))
        )
        ids: list[int] = []
        taken: set[int] = set()
        for row in iou:
            best, best_iou = None, _IOU
            for (tid, _), v in zip(prev, row, strict=True):
                if tid not in taken and v >= best_iou:
                    best, best_iou = tid, float(v)
            if best is None:
                best = self._next
                self._next -= 1
            taken.add(best)
            ids.append(best)
        self._boxes = list(zip(ids, boxes, strict=True))
        return ids


@dataclass
class ScanStats:
    frames: int = 0  # frames looked at
    faces: int = 0
    seconds: float = 0.0
    people: dict[str, int] = field(default_factory=dict)  # learned person -> faces kept


def scan(
    frames: Iterable[tuple[int, np.ndarray]],
    detector,  # noqa: ANN001 - lostface.stages.Detector
    study: Callable[[int, int, np.ndarray, np.ndarray], None],
    scene_cut,  # noqa: ANN001 - lostface.stages.SceneCutDetector
    gap: int = 12,
) -> tuple[int, int, list[int]]:
    """The first pass: detect the faces of each (index, BGR image) and hand each face to
    `study(track_id, frame_index, image, landmarks)`, one face at most every `gap` frames
    (a face changes little in a fraction of a second). The next frame is detected on a
    thread while this one's faces are studied. Returns (frames, faces, track ids)."""
    from concurrent.futures import ThreadPoolExecutor

    tracks = ScanTracks()
    last: dict[int, int] = {}
    n_frames = n_faces = 0

    def take(index: int, image: np.ndarray, dets) -> None:  # noqa: ANN001
        nonlocal n_frames, n_faces
        cut = scene_cut.is_cut(image) if n_frames else False
        n_frames += 1
        if dets is None or not len(dets):
            tracks.assign(np.zeros((0, 4)), cut)
            return
        ids = tracks.assign(dets.boxes[:, :4], cut)
        n_faces += len(ids)
        for tid, lm in zip(ids, dets.landmarks, strict=True):
            if index - last.get(tid, -gap) >= gap:
                last[tid] = index
                study(tid, index, image, lm)

    with ThreadPoolExecutor(1, thread_name_prefix="lostface-scan") as pool:
        pending = None
        for index, image in frames:
            ahead = (index, image, pool.submit(detector.detect, image))
            if pending is not None:
                take(pending[0], pending[1], pending[2].result())
            pending = ahead
        if pending is not None:
            take(pending[0], pending[1], pending[2].result())
    scene_cut.reset()
    return n_frames, n_faces, sorted(last)
