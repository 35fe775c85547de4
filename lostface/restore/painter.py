"""The keyframe work, in one place: a face's pixels in, a patch out.

    job = PaintJob.from_frame(track_id, frame_index, frame.image, track.landmarks)
    painted = painter.paint(job)          # align -> upscale -> segment -> restore -> Patch
    painter.forget(track_id)              # the track ended

Every caller that paints (the pipeline's keyframe worker, still photos, the live server, the
benchmarks) goes through a Painter, so what a keyframe does is written once. A job carries the
face's own pixels at the frame's resolution, not an aligned crop, so an upscaler sees real
pixels; the painter aligns them to the canonical crop (restore.align) where segmenters and
restorers work, and where the patch lives until the compositor carries it onto later frames.

The painter keeps two decisions per face: whether it is covered, which the segmenter starts
from (a borderline face does not flip between painted and untouched), and which a face judged
open turns, short of clear evidence, only when two keyframes in a row find it covered (a
microphone, a hand or a cup passing an open face's mouth on one keyframe is not painted:
`Painted.recheck` asks for the second look at once), and, with named
references, which person it is (lostface.restore.identity: the gate looks at a covered face's
visible upper face). A face that matches nobody is painted without anyone's photo. When a
face's person changes, the engines forget that face (a diffusion restorer's latents hold the
old person's mouth). Engines keep their own per-face state, dropped by `forget(track_id)`, by
`reset()`, and on a scene cut.

On footage (videos, live sources) the painter also learns people from their open faces
(`learn_from_footage`, lostface.restore.selfref): each open keyframe face is offered to the
self-reference banks, and a person learned there joins the identity gate and the restorer as
a reference photo would (`Restorer.learn`); `adopt` does the same for a face captured live.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from lostface.frame import CoverMask, Detections, Patch
from lostface.restore import align
from lostface.restore.compositor import skin_mean
from lostface.restore.mesh import fits as mesh_fits
from lostface.stages import NOBODY, RestoreItem, Restorer, Segmenter, Upscaler
from lostface.tracking.detectors import CLOSER_MIN, closer_region

if TYPE_CHECKING:
    from lostface.config import Settings
    from lostface.restore.identity import IdentityGate
    from lostface.restore.mesh import FaceMesh
    from lostface.restore.reference import Reference
    from lostface.restore.selfref import SelfReferences

_MARGIN = 2  # frame pixels kept around the canonical crop's footprint (bilinear sampling)
_MAX_UPSCALE = 4
_FACE_SHARE = 0.65  # a face box's width over its canonical crop's span (median on real photos)
# A face keeps its covering from keyframe to keyframe: its region's colour against the face's
# visible skin (the ratio of their BGR, per channel, each from _MATERIAL_FLOOR up) stays within
# a factor of _SAME_MATERIAL of what its last painted keyframe found (1.25 or less between the
# keyframes of the stage clip's synthetic coverings: a hand probe over the runs of
# `bench/paint_region.py --video`). A region
# unlike it, found short of clear evidence (mask.confirm_below), is something else: on a small
# dim face in the stage clip's crowd whose landmarks had slipped by more than the eye distance
# onto the forehead, a region of the skin's own colour over the eyes (a factor of 5.6 from the
# blue covering before), judged covered by the decision's hysteresis and its second look. The
# face is left as it is on that keyframe, still judged covered, and its next keyframe is asked
# for at once (Painted.recheck); a face judged open, or a new shot, starts afresh.
_SAME_MATERIAL = math.log(2.0)
_MATERIAL_FLOOR = 16.0


@dataclass(slots=True)
class PaintJob:
    """One face on one keyframe.

    pixels: the frame's region under the face's canonical crop (BGR uint8, frame resolution,
    a copy: the frame goes on to be composited); origin: (x, y) of pixels[0, 0] in the frame;
    to_canonical: 2x3 frame -> canonical transform (restore.align); landmarks: the face's
    landmarks in frame pixels; scene_cut: the face's first keyframe after a cut.
    """

    track_id: int
    frame_index: int
    pixels: np.ndarray
    origin: tuple[int, int]
    to_canonical: np.ndarray
    landmarks: np.ndarray
    scene_cut: bool = False
    # a face found weakly: the frame around it and its box there, for the painter's closer
    # look (lostface.tracking.detectors.closer_region; None: found surely enough)
    around: np.ndarray | None = None
    around_box: np.ndarray | None = None

    @classmethod
    def from_frame(
        cls,
        track_id: int,
        frame_index: int,
        image: np.ndarray,
        landmarks: np.ndarray,
        scene_cut: bool = False,
        *,
        box: np.ndarray | None = None,
        score: float = 1.0,
        look_below: float = 0.0,
    ) -> PaintJob | None:
        """The job for a face of `image`; None when its landmarks give no alignment. A face
        whose detection `score` is under `look_below` (mask.closer_look_below) carries the
        frame around its `box` for a closer look."""
        try:
            m = align.to_canonical(landmarks)
        except ValueError:
            return None
        x0, y0, x1, y1 = footprint(m, image.shape[1], image.shape[0])
        if x1 <= x0 or y1 <= y0:
            return None
        pixels = image[y0:y1, x0:x1].copy()
        job = cls(track_id, frame_index, pixels, (x0, y0), m, np.array(landmarks), scene_cut)
        if box is not None and score < look_below:
            job.around, job.around_box = closer_region(image, box)
        return job

    @classmethod
    def of_detection(
        cls, image: np.ndarray, dets: Detections, i: int, look_below: float, track_id: int = -1
    ) -> PaintJob | None:
        """The job for detection `i` of a photo (track_id: i when -1), with what a closer look
        at it needs when it scored under `look_below` (mask.closer_look_below)."""
        return cls.from_frame(
            i if track_id < 0 else track_id,
            0,
            image,
            dets.landmarks[i],
            box=dets.boxes[i],
            score=float(dets.scores[i]),
            look_below=look_below,
        )

    @property
    def local_to_canonical(self) -> np.ndarray:
        """2x3 transform from `pixels` coordinates to canonical space."""
        m = np.array(self.to_canonical, np.float64)
        m[:, 2] += m[:, :2] @ np.asarray(self.origin, np.float64)
        return m


def footprint(m: np.ndarray, width: int, height: int) -> tuple[int, int, int, int]:
    """x0, y0, x1, y1 of the frame region that the canonical crop of transform `m` samples,
    with a small margin, clipped to the frame."""
    w, h = align.CANON_DSIZE
    corners = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float64)
    pts = align.apply(align.invert(m), corners)
    x0 = max(0, int(math.floor(pts[:, 0].min())) - _MARGIN)
    y0 = max(0, int(math.floor(pts[:, 1].min())) - _MARGIN)
    x1 = min(width, int(math.ceil(pts[:, 0].max())) + _MARGIN + 1)
    y1 = min(height, int(math.ceil(pts[:, 1].max())) + _MARGIN + 1)
    return x0, y0, x1, y1


def _through_upscale(m: np.ndarray, k: float) -> np.ndarray:
    """The transform `m` (pixels -> canonical) for the pixels enlarged k times. Pixel centres
    sit at whole coordinates, so enlarged pixel u samples the original at (u + 0.5) / k - 0.5."""
    out = np.array(m, np.float64)
    out[:, :2] = m[:, :2] / k
    out[:, 2] = m[:, 2] + m[:, :2] @ np.full(2, 0.5 / k - 0.5)
    return out


def _empty_masks() -> tuple[np.ndarray, np.ndarray]:
    """An alpha and a hard region that paint nothing (canonical)."""
    empty = np.zeros(align.CANON_SHAPE, np.float32)
    return empty, empty > 0


def _too_small() -> CoverMask:
    """The decision for a face too small to judge: not covered, nothing to paint."""
    return CoverMask(False, *_empty_masks(), 0.0)


@dataclass(slots=True)
class Painted:
    """What a keyframe found: whether the face is covered, the evidence, and the patch
    (None for an open face); cover: the segmenter's result in canonical space (its hard
    region, for overlays and benchmarks). seconds: time spent per step, for the run's
    timings."""

    track_id: int
    covered: bool
    score: float
    patch: Patch | None
    cover: CoverMask | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    identity: str | None = None  # the reference person the face was found to be
    # what painted it: "given" (a reference photo), "self" (the person's own unmasked frames,
    # lostface.restore.selfref), None (no one's face: the neutral fill, or not painted)
    source: str | None = None
    # judged open for now, though found covered: the face was open on its last keyframe, and
    # turns covered only when its next keyframe agrees, which it should ask for at once
    recheck: bool = False
    # the closer look at a face found weakly (lostface.tracking.detectors.CloserLook): its best
    # candidate's score, where one was taken; at or under CLOSER_MIN the face was left as it is
    closer: float | None = None


def _no_face(closer: float | None) -> bool:
    """Whether a closer look was taken (Painted.closer) and showed no face."""
    return closer is not None and closer <= CLOSER_MIN


@dataclass(slots=True)
class _Aligned:
    job: PaintJob
    face: np.ndarray
    landmarks: np.ndarray
    cover: CoverMask
    seconds: dict[str, float]
    dense: np.ndarray | None = None  # the face mesh's points (canonical), when found
    recheck: bool = False  # see Painted.recheck
    closer: float | None = None  # see Painted.closer

    @property
    def no_face(self) -> bool:
        """Found weakly and no face there looked at closer: nobody's open face to learn."""
        return _no_face(self.closer)

    def judged(self) -> Painted:
        """The decision alone, nothing painted."""
        j = self.job
        c = self.cover
        return Painted(
            j.track_id,
            c.covered,
            c.score,
            None,
            c,
            self.seconds,
            recheck=self.recheck,
            closer=self.closer,
        )


class Marker(Protocol):
    """The invisible watermark of a painted canonical crop (lostface.provenance.watermark)."""

    def residual(self, image: np.ndarray, span: float) -> np.ndarray:
        """float32 residuals (canonical) that mark `image`; span: frame pixels its crop spans."""
        ...


class Painter:
    """Paints keyframes: align -> upscale (small faces) -> segment -> restore -> Patch.

    upscale_below: faces whose canonical crop spans fewer frame pixels than this (its width)
    are handed to the upscaler first. min_face: faces narrower than this (frame pixels, from
    the alignment's scale) are too small to judge: they are left as they are, never segmented.
    confirm_below: a face judged open on its last keyframe and found covered with a lower
    score is judged open once more, with Painted.recheck set, and covered only when its next
    keyframe agrees (mask.confirm_below; 0: covered at once).
    gate: tells the reference people apart (None: no references, or no identity sought).
    marker: when given, every painted patch carries its invisible watermark (computed here, on
    the keyframe worker's thread; the compositor only adds it), over the whole face crop.
    mesh: the face mesh (lostface.restore.mesh); its points follow the 5 landmarks handed to
    the segmenter, which keeps the covered region inside the mesh's face outline.
    closer_look: how surely a face found weakly is found again looked at closer
    (lostface.tracking.detectors.CloserLook): a job that carries the frame around its face
    (PaintJob.around) is judged open when it is not.
    """

    def __init__(
        self,
        segmenter: Segmenter,
        upscaler: Upscaler,
        restorer: Restorer,
        *,
        upscale_below: float = 0.0,
        min_face: float = 0.0,
        confirm_below: float = 0.0,
        gate: IdentityGate | None = None,
        marker: Marker | None = None,
        mesh: FaceMesh | None = None,
        closer_look: Callable[[np.ndarray, np.ndarray], float] | None = None,
    ) -> None:
        self.mesh = mesh
        self.closer_look = closer_look
        self.segmenter = segmenter
        self.marker = marker
        self.upscaler = upscaler
        self.restorer = restorer
        self.gate = gate
        self.upscale_below = float(upscale_below)
        self.min_face = float(min_face)
        self.confirm_below = float(confirm_below)
        self._covered: dict[int, bool] = {}
        self._leaning: set[int] = set()  # open faces found covered once (Painted.recheck)
        self._found: set[int] = set()  # faces found weakly that a closer look found (closer_look)
        self._material: dict[int, np.ndarray] = {}  # the covering's look (_SAME_MATERIAL)
        self._person: dict[int, str | None] = {}
        # people a track cannot be: their open face showed on another track during its life
        self._elsewhere: dict[int, set[str]] = {}
        self._born: dict[int, int] = {}  # tracks -> the first frame painted or judged
        # people learned from the footage's own unmasked faces (learn_from_footage)
        self.selfref: SelfReferences | None = None

    def paint(self, job: PaintJob) -> Painted:
        return self.paint_many([job])[0]

    def learn_from_footage(self, settings: Settings) -> bool:
        """Learn each person's face from the footage's open faces (lostface.restore.selfref);
        False when there is no identity gate to tell people apart."""
        if self.gate is None:
            return False
        from lostface.restore.selfref import SelfReferences

        self.selfref = SelfReferences(
            self.gate, settings, lambda person, refs: self.restorer.learn(person, refs)
        )
        return True

    def use(self, restorer: Restorer, gate: IdentityGate | None) -> None:
        """Paint with these engines from now on (a live session choosing another reference);
        people learned from the footage carry over to them."""
        self.restorer, self.gate = restorer, gate
        self._person.clear()
        if self.selfref is not None:
            if gate is None:
                self.selfref = None
            else:
                self.selfref.teach(gate)

    def adopt(self, person: str, references: Sequence[Reference]) -> None:
        """Paint `person` from these references from now on, as if given as photos (a face
        captured live): the restorer paints from them and the gate tells them apart; a person
        learned from the footage who is them is dropped (given faces take precedence)."""
        self.restorer.learn(person, references)
        if self.gate is not None:
            from lostface.restore.identity import embed

            embeddings = [embed(r.image) for r in references]
            self.gate.learn(person, embeddings)
            if self.selfref is not None:
                # the same person learned from the footage before: the given faces take over
                for name in self.selfref.give_way(person, embeddings):
                    self.gate.learn(name, [])
                    self.restorer.learn(name, [])

    def study(self, job: PaintJob) -> Painted | None:
        """Judge a face and, when it is open, offer it to the self-reference banks, without
        painting it (the first pass over a file). None when it could not improve them."""
        if self.selfref is not None:
            face = align.warp_to_canonical(job.pixels, job.local_to_canonical)
            landmarks = align.apply(job.to_canonical, job.landmarks[:5])
            span = align.CANON_SIZE / align.scale_of(job.to_canonical)
            if not self.selfref.worth_judging(job.track_id, face, landmarks, span):
                return None
        a = self._segment(job, outline=False)  # a covered face teaches nothing: no outline
        if not a.cover.covered:
            self._offer(a)
        return a.judged()

    def judge(self, job: PaintJob) -> Painted:
        """Whether the face wears a covering, and the evidence, without painting it
        (`lostface detect --json`, benchmarks of the decision)."""
        a = self._segment(job)
        return a.judged()

    def paint_many(self, jobs: Sequence[PaintJob]) -> list[Painted]:
        """Paint several faces; the restorer gets the covered ones in one call (a GPU
        engine batches them)."""
        aligned = [self._segment(job) for job in jobs]
        for a in aligned:
            self._born.setdefault(a.job.track_id, a.job.frame_index)
            if not a.cover.covered and not a.no_face:
                self._offer(a)
        todo = [a for a in aligned if a.cover.covered]
        people = [self._identify(a) for a in todo]
        t0 = time.perf_counter()
        painted = self.restorer.restore_many(
            [
                RestoreItem(a.face, a.cover, a.landmarks, a.job.track_id, person)
                for a, person in zip(todo, people, strict=True)
            ]
        )
        share = (time.perf_counter() - t0) / max(1, len(todo))
        patches = {}
        for a, (image, reference) in zip(todo, painted, strict=True):
            a.seconds["restore"] = share
            mark = None
            if self.marker is not None:
                t1 = time.perf_counter()
                span = align.CANON_SIZE / align.scale_of(a.job.to_canonical)
                mark = self.marker.residual(image, span)
                a.seconds["watermark"] = time.perf_counter() - t1
            patches[id(a)] = Patch(
                track_id=a.job.track_id,
                frame_index=a.job.frame_index,
                image=image,
                alpha=a.cover.alpha,
                to_canonical=a.job.to_canonical,
                skin_mean=np.asarray(skin_mean(a.face), np.float32),
                reference=reference,
                mark=mark,
                cover_colour=_cover_colour(a.face, a.cover.hard),
                covered=a.cover.hard,
            )
        return [
            Painted(
                a.job.track_id,
                a.cover.covered,
                a.cover.score,
                patches.get(id(a)),
                a.cover,
                a.seconds,
                self._person.get(a.job.track_id) if a.cover.covered else None,
                self._source(patches.get(id(a))),
                a.recheck,
                a.closer,
            )
            for a in aligned
        ]

    def _source(self, patch: Patch | None) -> str | None:
        if patch is None or patch.reference is None:
            return None
        learned = self.selfref is not None and self.selfref.owns(patch.reference)
        return "self" if learned else "given"

    def _offer(self, a: _Aligned) -> None:
        """An open face to the self-reference banks (they keep the good ones)."""
        if self.selfref is None:
            return
        t0 = time.perf_counter()
        span = align.CANON_SIZE / align.scale_of(a.job.to_canonical)
        mesh = self.mesh
        dense: np.ndarray | Callable[[], np.ndarray | None] | None = a.dense
        if dense is None and mesh is not None:
            # found only for a face the banks could take (most open faces are not)
            face = a.face
            dense = lambda: mesh.points(face, min_score=0.0)  # noqa: E731
        self.selfref.offer(
            a.job.track_id, a.face, a.landmarks, a.cover, span, dense, a.job.frame_index
        )
        a.seconds["self_reference"] = time.perf_counter() - t0

    def _identify(self, a: _Aligned) -> str | None:
        """The reference person of a covered face (NOBODY: none matches; None: no gate); a
        face whose person changed is forgotten by the engines first."""
        if self.gate is None:
            return None
        t0 = time.perf_counter()
        tid = a.job.track_id
        person = self.gate.observe(tid, a.face)
        if person is not None and self.selfref is not None:
            # one person is not in two places: whoever's open face another track showed while
            # this one was in view is not this face, however close their upper faces (two
            # people under the same covering can lie within the gate's threshold)
            if self.selfref.open_elsewhere(person, tid, self._born.get(tid, a.job.frame_index)):
                self._elsewhere.setdefault(tid, set()).add(person)
            if person in self._elsewhere.get(tid, ()):
                person = None
        if tid in self._person and self._person[tid] != person:
            self._forget_engines(tid)
        self._person[tid] = person
        a.seconds["identity"] = time.perf_counter() - t0
        return NOBODY if person is None else person

    def _segment(self, job: PaintJob, outline: bool = True) -> _Aligned:
        t0 = time.perf_counter()
        if job.scene_cut:
            # a new shot: nothing carries over but the id (whose face it is, is asked afresh)
            self._forget_engines(job.track_id)
            self._forget_person(job.track_id)
            self._material.pop(job.track_id, None)
            self._found.discard(job.track_id)
        m = job.local_to_canonical
        pixels = job.pixels
        factor = self._upscale_factor(m)
        if factor > 1:
            up = self.upscaler.upscale(pixels, factor)
            m = _through_upscale(m, up.shape[1] / pixels.shape[1])
            pixels = up
        t1 = time.perf_counter()
        face = align.warp_to_canonical(pixels, m)
        landmarks = align.apply(job.to_canonical, job.landmarks[:5]).astype(np.float32)
        meshed: list[np.ndarray | None] = []
        if _FACE_SHARE * align.CANON_SIZE / align.scale_of(job.to_canonical) < self.min_face:
            cover = _too_small()
        else:
            mesh = self.mesh

            def outline_mesh() -> np.ndarray | None:
                """The mesh that bounds a covered face's region (covered faces score low:
                any score), None where it is posed unlike the face's 5 points."""
                assert mesh is not None
                dense = mesh.points(face, min_score=0.0)
                meshed.append(dense)
                return dense[:, :2] if dense is not None and mesh_fits(dense, landmarks) else None

            cover = self.segmenter.segment(
                face,
                landmarks,
                self._covered.get(job.track_id),
                outline=outline,
                mesh=outline_mesh if mesh is not None and outline else None,
                inside=align.in_picture(pixels.shape, m),
            )
        closer = self._closer(job) if cover.covered else None
        if _no_face(closer):
            # no face there, looked at closer: a hand holding something out, a ceiling's
            # fittings or an ear, found weakly as a face, is left as it is
            cover = CoverMask(False, *_empty_masks(), cover.score)
        tid, recheck = job.track_id, False
        if (
            cover.covered
            and cover.score < self.confirm_below
            and self._covered.get(tid) is False
            and tid not in self._leaning
        ):
            # open on its last keyframe: covered only when the next keyframe agrees
            self._leaning.add(tid)
            cover, recheck = CoverMask(False, *_empty_masks(), cover.score), True
        else:
            self._leaning.discard(tid)
        self._covered[tid] = cover.covered
        if cover.covered and outline:
            if not self._same_covering(tid, face, cover):
                cover, recheck = CoverMask(False, *_empty_masks(), cover.score), True
        elif not recheck:
            self._material.pop(tid, None)  # open: whatever it wears next is new
        seconds = {"segment": time.perf_counter() - t1}
        if factor > 1:
            seconds["upscale"] = t1 - t0
        dense = meshed[0] if meshed else None
        if cover.covered and dense is not None:
            # the restorer bounds the face by it (and need not mesh it again)
            cover = replace(cover, mesh=dense)
        return _Aligned(job, face, landmarks, cover, seconds, dense, recheck, closer)

    def _closer(self, job: PaintJob) -> float | None:
        """The closer look at a face found weakly (PaintJob.around): its best candidate's
        score (see lostface.tracking.detectors.CLOSER_MIN); None where none is taken: a face
        found surely, no closer look to take, or a track an earlier closer look found (a face
        is not switched off by its later keyframes)."""
        tid = job.track_id
        if job.around is None or job.around_box is None or self.closer_look is None:
            return None
        if tid in self._found:
            return None
        score = self.closer_look(job.around, job.around_box)
        if score > CLOSER_MIN:
            self._found.add(tid)
        return score

    def _same_covering(self, track_id: int, face: np.ndarray, cover: CoverMask) -> bool:
        """Whether a covered face's region looks like the covering painted on its last
        keyframe, or the evidence is clear (see _SAME_MATERIAL); it is the face's covering
        from now on then."""
        colour = _cover_colour(face, cover.hard)
        if colour is None:
            return True
        floor = np.float32(_MATERIAL_FLOOR)
        material = np.log(np.maximum(colour, floor) / np.maximum(skin_mean(face), floor))
        known = self._material.get(track_id)
        if (
            known is None
            or cover.score >= self.confirm_below
            or float(np.abs(material - known).max()) < _SAME_MATERIAL
        ):
            self._material[track_id] = material
            return True
        return False

    def _upscale_factor(self, m: np.ndarray) -> int:
        """How many times a face's pixels should grow: 1 when its crop is wide enough."""
        scale = align.scale_of(m)  # canonical pixels per frame pixel
        if scale <= 1.0 or align.CANON_SIZE / scale >= self.upscale_below:
            return 1
        return min(_MAX_UPSCALE, max(2, math.ceil(scale)))

    def _forget_engines(self, track_id: int) -> None:
        for engine in (self.segmenter, self.upscaler, self.restorer):
            engine.forget(track_id)

    def _forget_person(self, track_id: int) -> None:
        self._person.pop(track_id, None)
        self._elsewhere.pop(track_id, None)
        self._born.pop(track_id, None)
        if self.gate is not None:
            self.gate.forget(track_id)
        if self.selfref is not None:
            self.selfref.forget(track_id)

    def forget(self, track_id: int) -> None:
        """The face's track ended: drop its decisions and the engines' state for it."""
        self._covered.pop(track_id, None)
        self._leaning.discard(track_id)
        self._found.discard(track_id)
        self._material.pop(track_id, None)
        self._forget_person(track_id)
        self._forget_engines(track_id)

    def reset(self) -> None:
        self._covered.clear()
        self._leaning.clear()
        self._found.clear()
        self._material.clear()
        self._person.clear()
        self._elsewhere.clear()
        self._born.clear()
        if self.gate is not None:
            self.gate.reset()
        if self.selfref is not None:
            self.selfref.reset()
        for engine in (self.segmenter, self.upscaler, self.restorer):
            engine.reset()

    def close(self) -> None:
        for engine in (self.segmenter, self.upscaler, self.restorer):
            engine.close()


def _cover_colour(face: np.ndarray, hard: np.ndarray) -> np.ndarray | None:
    """Median BGR of a keyframe's covered pixels (Patch.cover_colour); None without any."""
    if not hard.any():
        return None
    return np.median(face[hard], axis=0).astype(np.float32)
