"""Kalman tracker: stable face ids through missed and skipped detections.

Per frame the pipeline calls `update(detections | None, scene_cut)`. Every track is
predicted one frame ahead; when the detector ran, predictions are matched to detections
(Hungarian on IoU, centre-distance fallback) and corrected. Tracks are born tentative
and confirmed after `birth_hits` matches (a single false detection never gets an id the
rest of the pipeline acts on); they end after `max_misses` detection rounds unmatched.

Landmarks are kept relative to the box (normalised by its size) and smoothed there, then
mapped onto the filtered box on every frame: predicted frames get landmarks that move
with the box, and detector jitter is damped twice (box filter and landmark EMA). A
correction at a detection round is shown partly at once and partly over the next frames
(CORRECTION_DECAY), so detecting every Nth frame does not make the box jump every N frames.

FaceTrack.misses counts detection rounds (not frames) without a match, the unit that
`max_misses` is given in; frames where the detector did not run count no miss.

A face the strong detections missed may be moved to a weak one (Detections.weak) where it is
predicted; that round is still a miss. Tracks whose boxes overlap (one face passing in front
of another) are predicted from their own motion rather than followed by flow, keep their speed
while missed, and one lost while the other was found is marked `hidden`.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass

import numpy as np

from lostface.config import TrackingSettings
from lostface.frame import N_LANDMARKS, Detections, FaceTrack
from lostface.stages import Tracker
from lostface.tracking.association import associate, iou_matrix
from lostface.tracking.flow import FaceFlow, apply_similarity, move_box
from lostface.tracking.kalman import BoxKalman

log = logging.getLogger(__name__)

# Where the five landmarks sit in a face box (fractions of its width and height), used
# only when a detector gives none.
_DEFAULT_REL = np.array(
    [[0.33, 0.40], [0.67, 0.40], [0.50, 0.58], [0.37, 0.76], [0.63, 0.76]], np.float32
)
_DUPLICATE_IOU = 0.5  # an unmatched detection overlapping a matched track this much is a duplicate
_COAST_DAMPING = 0.5  # velocity kept after each detection round a track missed
CORRECTION_DECAY = 0.4  # share of a correction still to be shown one frame later
_CROSSING_IOU = 0.05  # boxes of two tracks overlapping this much are not followed by flow
_WEAK_DOUBT = 3.0  # a weak detection's position counts as this many times less precise
_WEAK_IOU = 0.3  # least IoU of a weak detection (under detect.threshold) with a track it continues


@dataclass(slots=True)
class _Track:
    face: FaceTrack
    kf: BoxKalman
    rel: np.ndarray  # (K,2) smoothed landmarks in box-normalised coordinates
    offset: np.ndarray  # (4,) shown box minus filtered box: corrections fade in, not jump
    moved: np.ndarray | None = None  # landmarks carried by optical flow onto this frame


class KalmanTracker(Tracker):
    """Tracker protocol implementation: one filterpy Kalman filter per face."""

    def __init__(self, settings: TrackingSettings) -> None:
        self.settings = settings
        self._tracks: list[_Track] = []
        self._next_id = 1
        self._flow = FaceFlow() if settings.flow else None

    def reset(self) -> None:
        """Forget every track; ids keep increasing (they are never reused)."""
        self._tracks.clear()
        if self._flow is not None:
            self._flow.reset()

    @property
    def needs_detection(self) -> bool:
        """True while a tentative track waits for its confirming detection."""
        return any(not t.face.confirmed for t in self._tracks)

    @property
    def tracks(self) -> list[FaceTrack]:
        return [t.face for t in self._tracks]

    def update(
        self,
        detections: Detections | None,
        scene_cut: bool = False,
        image: np.ndarray | None = None,
        still: Collection[int] = (),
    ) -> list[FaceTrack]:
        """Advance one frame and return the live tracks (confirmed and tentative).

        With the frame's `image` (and tracking.flow on), each confirmed face is also
        followed by optical flow from the previous frame: between detections its box and
        landmarks move as its pixels did, and at a detection the landmark smoothing starts
        from where the face has moved to (no lag behind a moving head). Faces whose ids are
        in `still` (nothing is painted on them) skip the flow and are predicted."""
        if scene_cut:
            if self._tracks:
                log.debug("scene cut: ending %d tracks", len(self._tracks))
            self._tracks.clear()
            if self._flow is not None:
                self._flow.reset()
            if detections is not None:
                for j in range(len(detections)):
                    self._birth(detections, j)
            self._remember(image, still)
            return self.tracks

        flow = self._flow if image is not None else None
        crossing = self._crossing()
        crossing_ids = {self._tracks[i].face.track_id for i in crossing}
        for i, t in enumerate(self._tracks):
            t.moved = None
            if flow is not None and i not in crossing:
                m = flow.motion(image, t.face.track_id, t.face.box)  # type: ignore[arg-type]
                if m is not None:
                    t.moved = apply_similarity(m, t.face.landmarks).astype(np.float32)
                    moved_box = move_box(m, t.face.box)
            t.kf.predict()
            t.face.age += 1
            t.face.detected = False
            if t.moved is not None and detections is None:
                t.kf.update(moved_box - t.offset)

        if detections is not None:
            self._correct(detections, crossing)

        for t in self._tracks:
            self._place(t)
        self._mark_hidden(crossing_ids)
        self._remember(image, still)
        return self.tracks

    def _mark_hidden(self, crossing_ids: set[int]) -> None:
        """A face crossing another that the detector lost while it found the other is behind
        that one (FaceTrack.hidden: its patch is not drawn over the face in front)."""
        for t in self._tracks:
            t.face.hidden = False
        missed = [t for t in self._tracks if t.face.track_id in crossing_ids and t.face.misses]
        seen = [t for t in self._tracks if t.face.confirmed and not t.face.misses]
        if not missed or not seen:
            return
        overlap = iou_matrix(
            np.stack([t.face.box for t in missed]), np.stack([t.face.box for t in seen])
        )
        for t, row in zip(missed, overlap, strict=True):
            t.face.hidden = bool(row.max() > _CROSSING_IOU)

    def _crossing(self) -> set[int]:
        """Tracks whose box overlaps another's: one face passes in front of the other, and
        the pixels in both boxes move as the front face does, so flow would carry the face
        behind along with it. These are predicted from their own motion until a detection."""
        if len(self._tracks) < 2:
            return set()
        boxes = np.stack([t.face.box for t in self._tracks])
        overlap = iou_matrix(boxes, boxes)
        np.fill_diagonal(overlap, 0.0)
        return set(np.nonzero(overlap.max(axis=1) > _CROSSING_IOU)[0].tolist())

    def _remember(self, image: np.ndarray | None, still: Collection[int]) -> None:
        if self._flow is not None and image is not None:
            followed = {
                t.face.track_id: t.face.box
                for t in self._tracks
                if t.face.confirmed and t.face.track_id not in still
            }
            self._flow.remember(image, followed)

    def _correct(self, dets: Detections, crossing: Collection[int] = ()) -> None:
        s = self.settings
        boxes = np.empty((len(self._tracks), 4), np.float64)
        for i, t in enumerate(self._tracks):
            t.kf.box(boxes[i])
        matches, lost, new, iou = associate(boxes, dets.boxes, s.match_iou, s.match_distance)
        for i, j in matches:
            self._measured(self._tracks[i], boxes[i], dets, j, strong=True)
            f = self._tracks[i].face
            f.hits += 1
            if f.hits >= s.birth_hits:
                f.confirmed = True
        weak = dets.weak
        held: set[int] = set()  # lost tracks a weak detection holds where they are seen
        if weak is not None and len(weak) and lost:
            # second look (as ByteTrack does): a face the strong detections missed is moved
            # to a weak one that overlaps where it is predicted. The round still counts as a
            # miss (a face seen only weakly ends after max_misses), and weak ones start and
            # confirm nothing, so a weak false detection never becomes a face
            again, _, _, _ = associate(boxes[lost], weak.boxes, _WEAK_IOU, 0.0)
            for a, j in again:
                self._measured(self._tracks[lost[a]], boxes[lost[a]], weak, j, strong=False)
                held.add(lost[a])
        dead: set[int] = set()
        for i in lost:
            t = self._tracks[i]
            t.face.misses += 1
            if i not in crossing:  # a face behind another keeps going as it went
                t.kf.damp(_COAST_DAMPING)
            if not (t.face.confirmed or i in held) or t.face.misses > s.max_misses:
                # a tentative face dies at its first round unseen
                dead.add(i)
        matched_rows = [i for i, _ in matches]
        for j in new:
            if matched_rows and float(iou[matched_rows, j].max()) > _DUPLICATE_IOU:
                continue
            self._birth(dets, j)
        if dead:
            log.debug("ending tracks %s", [self._tracks[i].face.track_id for i in sorted(dead)])
            self._tracks = [t for i, t in enumerate(self._tracks) if i not in dead]

    def _measured(
        self, t: _Track, predicted: np.ndarray, dets: Detections, j: int, strong: bool
    ) -> None:
        """Correct a track with detection j (its box was `predicted`). Only a strong detection
        marks the face `detected`: a keyframe is painted, and a patch bent, only on landmarks
        the detector is sure of; a weak one keeps the face followed until then."""
        s = self.settings
        box = np.asarray(dets.boxes[j], np.float64)
        if not strong:
            # a weak detection's box and points are loose (a part of the face, a
            # covering's outline): it says where the face is, the track keeps its size
            half = (predicted[2:] - predicted[:2]) / 2
            mid = (box[:2] + box[2:]) / 2
            box = np.concatenate([mid - half, mid + half])
        t.offset += predicted
        t.kf.update(box, 1.0 if strong else _WEAK_DOUBT)
        t.offset -= t.kf.box(predicted)
        f = t.face
        f.detected = strong
        f.score = float(dets.scores[j])
        if not strong:
            return  # the landmarks move with the box
        f.misses = 0
        if t.moved is not None and len(t.moved) == len(dets.landmarks[j]):
            # smoothing from where the face moved to, in image coordinates
            a = float(np.clip(s.landmark_smoothing, 0.0, 1.0))
            t.moved *= 1.0 - a
            t.moved += a * np.asarray(dets.landmarks[j], np.float32)
        else:
            t.moved = None
            self._smooth_landmarks(t, dets.boxes[j], dets.landmarks[j])

    def _birth(self, dets: Detections, j: int) -> None:
        s = self.settings
        box = np.asarray(dets.boxes[j], np.float32)
        rel = self._relative(box, dets.landmarks[j])
        face = FaceTrack(
            track_id=self._next_id,
            box=box.copy(),
            landmarks=np.zeros_like(rel),
            score=float(dets.scores[j]),
            hits=1,
            confirmed=s.birth_hits <= 1,
            detected=True,
        )
        self._next_id += 1
        kf = BoxKalman(box, s.process_noise, s.measurement_noise)
        t = _Track(face, kf, rel, np.zeros(4, np.float64))
        self._tracks.append(t)
        self._place(t)

    def _relative(self, box: np.ndarray, lm: np.ndarray) -> np.ndarray:
        """Landmarks in box-normalised coordinates (a fresh array)."""
        lm = np.asarray(lm, np.float32).reshape(-1, 2)
        if len(lm) < N_LANDMARKS or not np.all(np.isfinite(lm)) or not np.any(lm):
            return _DEFAULT_REL.copy()
        w = max(float(box[2] - box[0]), 1.0)
        h = max(float(box[3] - box[1]), 1.0)
        rel = lm - np.asarray(box[:2], np.float32)
        rel /= np.array([w, h], np.float32)
        return rel

    def _smooth_landmarks(self, t: _Track, box: np.ndarray, lm: np.ndarray) -> None:
        new = self._relative(box, lm)
        if new.shape != t.rel.shape:
            t.rel = new
            t.face.landmarks = np.zeros_like(new)
            return
        a = float(np.clip(self.settings.landmark_smoothing, 0.0, 1.0))
        t.rel *= 1.0 - a
        t.rel += a * new

    def _place(self, t: _Track) -> None:
        """Write the filtered box and the landmarks mapped onto it into the FaceTrack."""
        f = t.face
        t.kf.box(f.box)
        t.offset *= CORRECTION_DECAY
        f.box += t.offset
        w = float(f.box[2] - f.box[0])
        h = float(f.box[3] - f.box[1])
        if t.moved is not None and t.moved.shape == f.landmarks.shape:
            f.landmarks[...] = t.moved
            t.rel = self._relative(f.box, t.moved)
            return
        np.multiply(t.rel, (w, h), out=f.landmarks)
        f.landmarks += f.box[:2]
