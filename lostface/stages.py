"""The Protocols between pipeline stages: each stage is a small class with one verb.

Engines are built by name from the configuration (see lostface.registry); every Protocol
has an embedded implementation that runs offline on a CPU. Lifecycle hooks are part of the
Protocols, with do-nothing defaults that an implementation inherits by subclassing its
Protocol: callers never probe for them.

Keyframe engines (segmenters, upscalers, restorers) may keep state per face: `forget(track_id)`
drops one face's (its track ended, or a scene cut starts it afresh), `reset()` drops all of it
(a new source), and `close()` releases what the engine holds (threads, GPU memory). Heavy
models are passed in (lostface.registry builds them once), so closing an engine never unloads
a model that another pipeline shares.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

from lostface.frame import CoverMask, Detections, FaceTrack, Patch

if TYPE_CHECKING:
    from lostface.restore.reference import Reference


class Detector(Protocol):
    def detect(self, image: np.ndarray) -> Detections:
        """Faces in a BGR uint8 image, boxes and landmarks in that image's pixels.

        (The live loop's background detector also returns None when it has no fresh result
        for a frame; the pipeline then predicts, as between detection rounds.)
        """
        ...

    def close(self) -> None:
        """Release the detector's threads; a detector shared by several pipelines ignores it."""
        return None

    def large_faces(self) -> Detector:
        """The detector for photos and passes that only use faces large enough to paint
        from (reference photos, self-reference's first pass): one that also searches for
        small faces hands back its plain pass."""
        return self

    def new_shot(self) -> None:
        """The next image starts a new shot (a scene cut): a detector that remembers where
        faces were forgets it."""
        return None

    def reset(self) -> None:
        """The next image owes nothing to the ones before (a photo, not a frame): a detector
        that remembers where faces were, or paces a search by its calls, starts afresh."""
        return None

    def complete(self, image: np.ndarray, found: Detections) -> Detections:
        """What `detect(image)` gives, from what `large_faces().detect(image)` gave (a pass
        that reuses an earlier one's detections adds only the small-face search)."""
        return found


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

    @property
    def tracks(self) -> list[FaceTrack]:
        """The live tracks as of the last update."""
        ...

    @property
    def ready(self) -> bool:
        """False while the tracker is still being built (the loop then keeps detecting ahead)."""
        return True

    @property
    def needs_detection(self) -> bool:
        """True while a tentative track waits for a confirming detection on the next frame."""
        return False


class CarriedFit(NamedTuple):
    """How well a face's newest patch lies on the covering in view on one frame."""

    keyframe: int  # the frame the patch was painted on
    fit: float  # Compositor.fit, -1..1


class KeyframePolicy(Protocol):
    def due(
        self,
        track: FaceTrack,
        frame_index: int,
        scene_cut: bool,
        image: np.ndarray | None = None,
        fit: Callable[[], CarriedFit | None] | None = None,
    ) -> str | None:
        """Why this track needs a fresh patch now, or None.

        Reasons: "new", "cut", "pose", "roll", "scale", "look" (the lower face looks unlike
        its last keyframe's: a covering put on or taken off; needs image, the frame as it
        came in), "fit" (the newest patch lies on the covering in view worse than it did:
        needs fit, asked only when no other reason applies; None where the face has no
        covered patch to ask about), "age".
        """
        ...

    def painted(self, track: FaceTrack, frame_index: int, image: np.ndarray | None = None) -> None:
        """Record that a keyframe job was taken for this track at its current geometry (and,
        with image, its look)."""
        ...

    def forget(self, track_id: int) -> None: ...

    def reset(self) -> None: ...


class KeyframeEngine(Protocol):
    """Lifecycle shared by the engines that run on keyframes (see the module docstring)."""

    def forget(self, track_id: int) -> None:
        """Drop what is kept for one face."""
        return None

    def reset(self) -> None:
        """Drop what is kept for every face."""
        return None

    def close(self) -> None:
        """Release threads and memory held by this engine (not shared models)."""
        return None


class Segmenter(KeyframeEngine, Protocol):
    def segment(
        self,
        face: np.ndarray,
        landmarks: np.ndarray | None = None,
        was_covered: bool | None = None,
        outline: bool = True,
        mesh: Callable[[], np.ndarray | None] | None = None,
        inside: np.ndarray | None = None,
    ) -> CoverMask:
        """Covered region of one aligned face (canonical crop, see restore.align); landmarks:
        its 5 points in canonical space (the head turn narrows the far side); was_covered:
        the same face's previous decision, if any (a decision is kept unless clearly wrong).
        outline=False: the decision and its score only, with empty masks (a covered face
        that is judged, not painted: self-reference's first pass). mesh: gives the face
        mesh's canonical points (N,2), or None; asked only when a covered region is
        outlined, so an open face is never meshed. inside: where the crop shows the picture
        (bool, the crop's shape; None: everywhere), for a face the picture's edge cuts: the
        crop repeats the edge's pixels beyond it, which show no face (restore.align.in_picture)."""
        ...


class Upscaler(KeyframeEngine, Protocol):
    def upscale(self, image: np.ndarray, factor: int) -> np.ndarray:
        """A small face's pixels (BGR uint8, native resolution) enlarged up to `factor` times
        before the canonical warp. The painter reads the factor applied from the returned
        shape, so an engine may return the image as it is (the warp then resamples it)."""
        ...


# RestoreItem.person of a face that matches none of the reference people: paint it without
# anyone's photo (the neutral fill), never with someone else's mouth
NOBODY = ""


class RestoreItem(NamedTuple):
    """One face to paint: canonical crop, its covered region and canonical landmarks, the
    track it belongs to (engines keep per-face state by it; None: keep nothing), and the
    reference person it was found to be (the painter's identity gate; NOBODY when it matches
    none of them; None when no identity was sought: any reference photo may paint it)."""

    face: np.ndarray
    cover: CoverMask
    landmarks: np.ndarray
    track_id: int | None = None
    person: str | None = None


class Restorer(KeyframeEngine, Protocol):
    def restore(
        self,
        face: np.ndarray,
        cover: CoverMask,
        landmarks: np.ndarray,
        track_id: int | None = None,
        person: str | None = None,
    ) -> tuple[np.ndarray, str | None]:
        """Paint the covered region of an aligned face.

        face: (H,W,3) uint8 canonical crop (align.CANON_SHAPE); landmarks: its 5 canonical points;
        track_id: the face's track, for engines that keep state per face (None: keep nothing);
        person: as in RestoreItem. Returns the painted crop (same shape) and the person whose
        reference was used (None for a fill that used no reference photo).
        """
        ...

    def restore_many(self, items: Sequence[RestoreItem]) -> list[tuple[np.ndarray, str | None]]:
        """Several faces at once (engines that batch on a GPU override this)."""
        return [self.restore(*item) for item in items]

    def learn(self, person: str, references: Sequence[Reference]) -> None:
        """Paint `person` from these references from now on, replacing what was learned of
        them before (people found unmasked in the footage itself, lostface.restore.selfref,
        or captured live). Engines that paint from no photo ignore it."""
        return None


class Compositor(Protocol):
    def composite(self, image: np.ndarray, track: FaceTrack, patch: Patch) -> bool:
        """Carry the patch onto the face's current geometry in `image` (in place); whether
        anything was painted."""
        ...

    def fit(self, image: np.ndarray, track: FaceTrack, patch: Patch) -> float | None:
        """How well a patch would fit the face on this frame (higher: better), to choose
        between two keyframes' patches; None: no opinion (the nearer keyframe in time)."""
        return None

    def begin_frame(self, index: int) -> None:
        """The index of the frame the next composites go into (the watermark's turns follow
        the frame count of the file, which a reader sees too)."""
        return None

    def forget(self, track_id: int) -> None:
        """Drop a face's state (its crossfade) once its track has ended."""
        return None

    def reset(self) -> None:
        """Drop every face's state (a still photo has no previous frame to fade from)."""
        return None
