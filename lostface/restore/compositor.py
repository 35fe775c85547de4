"""Per-frame compositor: carry each track's newest patch onto the face's current geometry.

Runs on every frame for every masked face, so it touches only the face's region: the
canonical patch is warped straight into the bounding box of its alpha support in the
frame (never the whole frame), relit by the change of the visible skin's brightness since
the keyframe, and alpha-blended in place. A new patch fades in over the previous one
during keyframe.crossfade_frames frames, so repainting does not pop. A patch that carries the
invisible watermark (Patch.mark, lostface.provenance) has its residual added over the face's
whole crop region, on the same frames: the payload's for 8 frames, then its complement's.
With the face mesh (restore.follow), on the frames where the detector measured the face the
patch is bent onto the face's current mesh, so the painted mouth and chin do not slide against
a turning head. Where a turned face's covering reaches past the side of the crop, the piece of
it beyond the patch is filled from its surroundings (_past_edge).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lostface.config import Settings
from lostface.frame import FaceTrack, Patch
from lostface.restore import align
from lostface.restore.fill import push_pull
from lostface.restore.follow import MeshFollow
from lostface.restore.regions import upper_skin_mask
from lostface.stages import Compositor

_SAMPLE = 64  # canonical width at which the current skin brightness is sampled
_SAMPLE_DSIZE = (_SAMPLE, round(_SAMPLE * align.CANON_HEIGHT / align.CANON_SIZE))
_GAIN_RANGE = (0.67, 1.5)
_GAIN_SMOOTHING = 0.25  # share of the newest frame's relight gain (exponential average)
_MARK_SEGMENT = 8  # = lostface.provenance.watermark.SEGMENT (not imported: no cycle)
# Between keyframes (not on the keyframe's own frame) the covering moves against the face's
# landmarks (a turning head), and a sliver of it can show through the carried patch's
# half-opaque feather band or at its edge. Pixels the patch reaches (its feather band: the
# keyframe's margin, mask.dilate + mask.feather_radius, beyond the region it found) and one
# pixel (_RIM) beyond, not yet opaque, below the eyes' line (plus an eighth of their distance:
# _BAND), that look like the keyframe's covering (nearer its colour than _LIKE times their
# distance to the skin's, and within _NEAR of it), and the covering's rim one pixel beyond such
# pixels, take the patch's pixels there, where those look like skin (the keyframe's own face
# where it painted nothing): a dark eye, nostril or background is never pasted over the
# frame's. Not farther: beside a black covering the lower lids, lashes, hair and a dark stage
# look like it too (`python bench/paint_region.py --video`, the frames between keyframes:
# reaching 12 canonical px beyond the patch's solid part, the eyes and brows changed on 6.9 %
# of them and 0.88 % of the covered area beyond the feather band (median), recall 0.990; only
# where the patch reaches, 4.6 %, 0.39 %, recall 0.989).
_LIKE = 0.5
_NEAR = 60.0
_RIM = np.ones((3, 3), np.uint8)  # the covering's rim: its edge pixels, like neither colour
# Between keyframes a patch is painted only where the covering still is: when fewer than
# _HIDE_SHARE of the frame's pixels under the patch's solid part look like the keyframe's
# covering (relit as the skin is), something passes in front of it (a hand, a nearer head),
# the covering came off, or the track slid onto another face, and the frame is left as it is
# until _SHOW_SHARE of them do again. On the masked stage clip the share under a covering in
# place measures 0.5-0.96; under a hand, a passing head or a face whose covering is gone,
# 0.0-0.3.
_HIDE_SHARE = 0.25
_SHOW_SHARE = 0.35
# Between keyframes the patch follows the track's landmarks, which move against the face by a
# few pixels between detections (a tenth of the eye distance, a quarter on a fast turn), so
# the carried patch slid onto the eyes on one side and off the covering's edge on the other.
# The covering itself is in view: on each frame the patch is moved (a translation of up to
# _SLIDE eye distances) to where the covered region its keyframe found (Patch.covered) best
# overlaps the pixels that look like that keyframe's covering (_looks_like), sampled
# _SLIDE_SAMPLE px wide across the canonical crop, within a ring around the region as wide
# as the search; it stays where the landmarks put it unless that gains _SLIDE_MIN_GAIN of the
# sample's pixels. About 0.15 ms a face (`python bench/paint_region.py --video`: the eyes and
# brows unchanged on 91 % of the frames between keyframes, against 73 % without it).
_SLIDE = 0.2
_SLIDE_SAMPLE = 64
_SLIDE_DSIZE = (_SLIDE_SAMPLE, round(_SLIDE_SAMPLE * align.CANON_HEIGHT / align.CANON_SIZE))
_SLIDE_PAD = max(1, round(_SLIDE * align.CANON_EYE_DISTANCE * _SLIDE_SAMPLE / align.CANON_SIZE))
_SLIDE_MIN_GAIN = 0.002
_SLIDE_RING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * _SLIDE_PAD + 5, 2 * _SLIDE_PAD + 5))
# The patch keeps its keyframe's shape. When the head pitches or turns, the covering's outline
# changes under it: its top edge comes down the nose, and the carried patch's top edge lies
# over the lower lids. On each frame between keyframes the patch is trimmed to the covering in
# view: beyond the keyframe's own margin (mask.dilate + mask.feather_radius) around the pixels
# of _slide's sample that look like the covering within _RECEDE_NEAR of its region (moved as
# found, holes filled), the patch's alpha falls over the feather band as at its keyframe, on
# the pixels nearer the skin's colour than the covering's (a lighter fold of the covering, or
# its edge mixed with a dark eye, is not, and stays painted). Only above _RECEDE_BELOW (the
# nose tip): below it the covering meets the jaw, the neck and the background, and its shaded
# side reads as neither colour (trimmed there too, in a first version, the blue covering's
# recall fell from 0.99 to 0.93). Not when fewer than _RECEDE_SEEN of the region's pixels
# look like the covering (it is not read well). About 0.1 ms a face.
_RECEDE_NEAR = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))  # 2 sample px
_RECEDE_BELOW = float(align.CANON_LANDMARKS[2, 1])
_RECEDE_SEEN = 0.5
_BAND_TOP = int(align.CANON_LANDMARKS[:2, 1].max() + align.CANON_EYE_DISTANCE / 8)
_BAND = np.zeros(align.CANON_SHAPE, np.uint8)
_BAND[_BAND_TOP:] = 255
# On a turned face (align.yaw_proxy beyond _SURROUND_TURN eye distances, as the segmenter's
# _TURNED) a patch is painted only where its covering stands out from what surrounds it. The
# ring around its covered region (the slide's, where the landmarks put it) crosses the face's
# outline on the far side, and the 5 points of a face seen nearly in profile are rough: when
# _SURROUND or more of the ring looks like the covering too, nothing tells the covering from
# the background (a black covering against a dark stage), and neither the slide nor the test
# for the covering under the patch can place it; the frame is left as it is, on the keyframe
# too. On the stage clip with synthetic coverings (`python bench/paint_region.py --video`'s
# runs, read by a hand probe) the ring reads 0.1-0.7 as the covering around every face but the
# singer in profile (turned 1.2 to 1.5 eye distances), 0.78-0.98 around him, where a patch of
# skin lay over the dark stage in front of his face on 18 frames. Around a face seen from the
# front the ring lies on the face, the hair and the neck, and a dark covering between long
# dark hair and a dark scarf reads 0.79 there (../shared/data/masked/0132.jpg), placed well by
# its landmarks.
_SURROUND = 0.75
_SURROUND_TURN = 0.25
# The crop spans 3.6 eye distances; on a turned face the covering's near side can reach past
# its side edge, where no patch is painted, and a strip of the covering stays beside the cheek.
# Where the patch is solid on _PAST_MIN_ROWS rows or more of a side edge of the crop, the
# pixels past that edge (up to _PAST_REACH canonical px, below the eyes' band) that look like
# the keyframe's covering (_looks_like), in pieces that start at the edge beside the patch's
# solid rows and end within the reach and within 8 px of those rows (a piece that runs on is
# hair, a hood, a neck gaiter, a collar or a background of the covering's colour), grown by
# their rim, are filled from what surrounds them: the patch's edge and the frame beyond.
_PAST_MIN_ROWS = 8
_PAST_REACH = 64
_PAST_INSIDE = 3  # columns inside the crop the zone also reads (the patch's edge)
_PAST_CLOSE = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
_PAST_RING = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (7, 7))  # frame px it is filled from


def skin_mean(face_canonical: np.ndarray) -> np.ndarray:
    """Mean BGR (float32, shape (3,)) of the upper-face skin a mask leaves visible."""
    sel = upper_skin_mask() > 0
    return face_canonical[sel].astype(np.float32).mean(0)


def _sample_mask() -> np.ndarray:
    small = cv2.resize(upper_skin_mask(), _SAMPLE_DSIZE, interpolation=cv2.INTER_AREA)
    return small > 200


_SKIN_SAMPLE = _sample_mask()  # the visible skin's pixels of the relight sample
_TO_SAMPLE = np.diag([_SAMPLE / align.CANON_SIZE] * 2)  # canonical -> relight sample


def _gain(image: np.ndarray, m: np.ndarray, skin: np.ndarray) -> np.ndarray | None:
    """Per-channel ratio of the current visible skin to the keyframe's (~300 samples)."""
    if not np.all(skin > 1.0):
        return None
    small = cv2.warpAffine(
        image,
        _TO_SAMPLE @ m,
        _SAMPLE_DSIZE,
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    cur = small[_SKIN_SAMPLE].mean(0)
    return np.clip(cur / skin, *_GAIN_RANGE).astype(np.float32)


@dataclass(slots=True)
class _Prepared:
    """A patch ready to warp: BGRA uint8 (alpha in the 4th channel) and its support box."""

    patch: Patch
    bgra: np.ndarray
    corners: np.ndarray  # (4,2) canonical corners of the alpha support's bounding box
    skin: np.ndarray  # (3,) float32 skin mean at its keyframe
    mesh: np.ndarray | None = None  # the face mesh of the painted patch (MeshFollow)
    # per side of the crop (left, right): the rows where the patch is solid at that edge, or
    # None where it is on fewer than _PAST_MIN_ROWS (see _past_edge)
    edges: tuple[np.ndarray | None, np.ndarray | None] = (None, None)
    bent: np.ndarray | None = None  # bgra bent onto the face's latest measured mesh
    bent_corners: np.ndarray | None = None
    solid: np.ndarray | None = None  # its covered region at _SLIDE_SAMPLE, +1/-1/0 (_slide)
    inside: np.ndarray | None = None  # its covered region at _SLIDE_SAMPLE, uint8 0/1

    def pixels(self) -> tuple[np.ndarray, np.ndarray]:
        """The BGRA to warp and its support's corners (bent when it was)."""
        if self.bent is not None and self.bent_corners is not None:
            return self.bent, self.bent_corners
        return self.bgra, self.corners


@dataclass(slots=True)
class _Seen:
    """What _slide read of the frame: which sample pixels look like the covering."""

    looks: np.ndarray  # bool, the padded sample
    skin: np.ndarray  # bool, the padded sample: nearer the skin's colour than the covering's
    ms: np.ndarray  # frame -> padded sample
    at: tuple[int, int]  # (x, y) of the covered region's best place on it


@dataclass(frozen=True, slots=True)
class _Margin:
    """How far a patch's alpha reaches beyond its covered region (canonical px): opaque up
    to edge - ramp, falling to 0 at edge (mask.dilate, mask.feather_radius; _recede)."""

    edge: float
    ramp: float


@dataclass(slots=True)
class _TrackState:
    current: _Prepared
    previous: _Prepared | None
    frames: int  # frames composited since `current` arrived
    gain: np.ndarray | None = None  # relight gain, smoothed over frames
    hidden: bool = False  # the covering is not under the patch (see _HIDE_SHARE)


def _prepare(patch: Patch, follow: MeshFollow | None = None) -> _Prepared:
    alpha = np.clip(patch.alpha, 0.0, 1.0)
    a8 = (alpha * 255.0 + 0.5).astype(np.uint8)
    bgra = np.dstack([patch.image, a8])
    mesh = follow.mesh_of(patch.image) if follow is not None else None
    edges = (_solid_rows(a8[:, :2]), _solid_rows(a8[:, -2:]))
    return _Prepared(
        patch, np.ascontiguousarray(bgra), _support_corners(a8), _skin(patch), mesh, edges
    )


def _solid_rows(columns: np.ndarray) -> np.ndarray | None:
    """Rows (bool) where these edge columns of a patch's alpha are solid; None when few."""
    rows = columns.max(axis=1) >= 128
    rows[:_BAND_TOP] = False
    return rows if int(rows.sum()) >= _PAST_MIN_ROWS else None


def _support_corners(a8: np.ndarray) -> np.ndarray:
    x, y, w, h = cv2.boundingRect(a8)
    if w == 0 or h == 0:
        return np.zeros((0, 2))
    # pixel edges, one pixel wider for bilinear sampling
    x0, y0, x1, y1 = x - 1.0, y - 1.0, x + w + 0.0, y + h + 0.0
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _skin(patch: Patch) -> np.ndarray:
    s = np.asarray(patch.skin_mean, np.float32).reshape(-1)[:3]
    return s if s.size == 3 else np.zeros(3, np.float32)


class PatchCompositor(Compositor):
    """Compositor (see lostface.stages), with a per-track crossfade between patches."""

    def __init__(self, settings: Settings, follow: MeshFollow | None = None) -> None:
        self.follow = follow  # bends patches onto the face's mesh (None: similarity only)
        self.crossfade_frames = max(0, int(settings.keyframe.crossfade_frames))
        self.relight = bool(settings.restore.relight)
        self.slide = bool(settings.keyframe.slide)
        ramp = max(1.0, float(settings.mask.feather_radius))
        # half a _slide sample pixel more: the covering's edge lies within it of its pixels
        half = 0.5 * align.CANON_SIZE / _SLIDE_SAMPLE
        self._margin = _Margin(float(settings.mask.dilate) + ramp + half, ramp)
        self._tracks: dict[int, _TrackState] = {}
        self._frame = 0  # index of the frame being composited (begin_frame)

    def begin_frame(self, index: int) -> None:
        self._frame = int(index)

    def forget(self, track_id: int) -> None:
        self._tracks.pop(track_id, None)

    def reset(self) -> None:
        self._tracks.clear()
        self._frame = 0

    def fade_weight(self, track_id: int) -> float:
        """Weight of the newest patch of a track on the last composited frame (1 = settled)."""
        st = self._tracks.get(track_id)
        if st is None:
            return 0.0
        return self._weight(st.frames - 1) if st.previous is not None else 1.0

    def _weight(self, frames: int) -> float:
        n = self.crossfade_frames
        return 1.0 if frames >= n else (frames + 1) / (n + 1)

    def _state(self, track_id: int, patch: Patch) -> _TrackState:
        st = self._tracks.get(track_id)
        if st is None:
            st = _TrackState(_prepare(patch, self.follow), None, 0)
            st.frames = self.crossfade_frames  # a first patch has nothing to fade from
            self._tracks[track_id] = st
        elif st.current.patch is not patch:
            st = _TrackState(_prepare(patch, self.follow), st.current, 0, st.gain)
            self._tracks[track_id] = st
        return st

    def fit(self, image: np.ndarray, track: FaceTrack, patch: Patch) -> float | None:
        """How well a patch fits the face's covering on this frame (covering_fit)."""
        return covering_fit(image, track.landmarks, patch)

    def composite(self, image: np.ndarray, track: FaceTrack, patch: Patch) -> bool:
        """Blend the track's patch into `image` in place, within the face's ROI only;
        whether it was painted (not where its covering is no longer seen)."""
        st = self._state(track.track_id, patch)
        w = self._weight(st.frames) if st.previous is not None else 1.0
        st.frames += 1
        old = st.previous if w < 1.0 else None
        try:
            m = align.to_canonical(track.landmarks)
        except ValueError:
            return False
        if self.follow is not None and track.detected:
            self._bend(image, m, [p for p in (st.current, old) if p is not None])
        cur_bgra, corners = st.current.pixels()
        if old is None:
            st.previous = None
            skin = st.current.skin
        else:
            old_bgra, _ = old.pixels()  # it shows only where the new patch reaches (_mix)
            skin = ((1.0 - w) * old.skin + w * st.current.skin).astype(np.float32)
        if len(corners) == 0:
            return False
        gain = _gain(image, m, skin) if self.relight else None
        if gain is not None:
            # The skin sample is small and the tracked geometry jitters: a smoothed gain
            # follows real lighting changes without making the patch shimmer.
            if st.gain is not None:
                gain = st.gain + _GAIN_SMOOTHING * (gain - st.gain)
            st.gain = gain
        cover = st.current.patch.cover_colour
        lit = skin if gain is None else skin * gain
        relit = None if cover is None else cover if gain is None else cover * gain
        between = st.current.patch.frame_index != self._frame
        read = None  # what _slide read of the frame
        # between keyframes only: on its own frame the patch is where the covering was found
        slide = relit is not None and between and self.slide
        turned = abs(align.yaw_proxy(track.landmarks[:5])) > _SURROUND_TURN
        if relit is not None and (slide or turned):
            seen = _read(image, m, st.current, relit, lit)
            if turned and not _stands_out(seen, st.current):
                return False
            if slide:
                m = m.copy()
                shift, read = _slide(seen, st.current)
                m[:, 2] -= shift
        inv = align.invert(m)
        roi = _roi(image.shape, inv, corners)
        if roi is None:
            return False
        x0, y0, x1, y1, mt = roi
        rw, rh = x1 - x0, y1 - y0
        warped = _warp(cur_bgra, mt, (rw, rh))
        if old is not None:
            # crossfade in the frame's ROI (smaller than the canonical crop for most faces)
            warped = _mix(_warp(old_bgra, mt, (rw, rh)), warped, w)
        if read is not None and st.current.inside is not None:
            _recede(warped, x0, y0, read, st.current.inside, self._margin)
        a8 = warped[:, :, 3]
        if not a8.any():
            return False
        if cover is not None and relit is not None and between:
            # between keyframes only: on its own frame (a photo) the patch is where the
            # covering was found, and a generative engine's pixels beyond it are not the face's
            solid = a8 >= 128
            share = _covering_share(image[y0:y1, x0:x1][solid], relit, lit)
            st.hidden = share < (_SHOW_SHARE if st.hidden else _HIDE_SHARE)
            if st.hidden:
                return False
            _reach_covering(image[y0:y1, x0:x1], warped, mt, cover, lit, solid)
        self._blend(image[y0:y1, x0:x1], warped, gain)
        for side, rows in enumerate(st.current.edges):
            if rows is not None and relit is not None:
                _past_edge(image, m, side, rows, relit, lit)
        mark = st.current.patch.mark
        if mark is not None:
            # the payload and its complement in turns of SEGMENT frames of the file (the
            # provenance watermark): frames 0-7 the payload, 8-15 its complement, ...
            _add_mark(image, inv, mark[(self._frame // _MARK_SEGMENT) % len(mark)])
        return True

    def _bend(self, image: np.ndarray, m: np.ndarray, prepared: list[_Prepared]) -> None:
        """Bend the patches onto the face's mesh measured on this frame (MeshFollow)."""
        assert self.follow is not None
        if all(p.mesh is None for p in prepared):
            return
        now = self.follow.current(image, m)
        if now is None:
            return
        for p in prepared:
            if p.mesh is None:
                continue
            p.bent = self.follow.bend(p.bgra, p.mesh, now)
            p.bent_corners = None if p.bent is None else _support_corners(p.bent[:, :, 3])

    def _blend(self, roi: np.ndarray, warped: np.ndarray, gain: np.ndarray | None) -> None:
        """roi <- warped's colour (times gain) over roi, by warped's alpha, in place; pixels
        the patch does not reach stay exactly as they were. One pass of OpenCV's linear
        blend (a third of the time of the same arithmetic in numpy steps)."""
        a = warped[:, :, 3].astype(np.float32)  # the blend weighs a against 255 - a
        b = np.float32(255.0) - a
        colour = cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR)
        if gain is None:
            mixed = cv2.blendLinear(colour, roi, a, b)
        else:
            lit = colour.astype(np.float32)
            lit *= gain  # unclipped until the mix
            mixed = cv2.convertScaleAbs(cv2.blendLinear(lit, roi.astype(np.float32), a, b))
        np.copyto(roi, mixed, where=warped[:, :, 3:4] > 0)


_CROP_CORNERS = np.array(
    [
        [-1.0, -1.0],
        [align.CANON_SIZE, -1.0],
        [align.CANON_SIZE, align.CANON_HEIGHT],
        [-1.0, align.CANON_HEIGHT],
    ]
)


def _add_mark(image: np.ndarray, inv: np.ndarray, mark: np.ndarray) -> None:
    """Add a patch's watermark residual (canonical, float32) over the face's whole crop, in
    place: one warp of the face's region, as for the patch itself."""
    region = _roi(image.shape, inv, _CROP_CORNERS)
    if region is None:
        return
    x0, y0, x1, y1, mt = region
    warped: np.ndarray = cv2.warpAffine(
        mark, mt, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT
    ).astype(np.float32, copy=False)
    roi = image[y0:y1, x0:x1]
    warped += roi
    warped += np.float32(0.5)
    np.clip(warped, 0, 255, out=warped)
    np.copyto(roi, warped, casting="unsafe")


def _roi(
    shape: tuple[int, ...], inv: np.ndarray, corners: np.ndarray
) -> tuple[int, int, int, int, np.ndarray] | None:
    """(x0, y0, x1, y1, canonical-to-ROI transform) of the frame region that canonical
    `corners` cover under `inv`, clipped to the frame; None when it lies outside."""
    pts = align.apply(inv, corners)
    x0 = max(int(np.floor(pts[:, 0].min())), 0)
    y0 = max(int(np.floor(pts[:, 1].min())), 0)
    x1 = min(int(np.ceil(pts[:, 0].max())) + 1, shape[1])
    y1 = min(int(np.ceil(pts[:, 1].max())) + 1, shape[0])
    if x1 <= x0 or y1 <= y0:
        return None
    mt = inv.copy()
    mt[:, 2] -= (x0, y0)
    return x0, y0, x1, y1, mt


def _reach_covering(
    roi: np.ndarray,
    warped: np.ndarray,
    mt: np.ndarray,
    cover: np.ndarray,
    skin: np.ndarray,
    solid: np.ndarray,
) -> None:
    """Make the warped patch (BGRA, in place) opaque on the pixels of `roi` it reaches (and
    one beyond) that look like the keyframe's covering (see _LIKE), and on the covering's rim.
    Only for a patch with a solid part (`solid`: alpha >= 128, bool)."""
    a8 = warped[:, :, 3]
    if not solid.any():
        return
    size = (roi.shape[1], roi.shape[0])
    near = cv2.dilate((a8 > 0).view(np.uint8), _RIM)
    band = cv2.warpAffine(_BAND, mt, size, flags=cv2.INTER_NEAREST, borderValue=0)
    # not yet opaque (the feather's band too: a half-opaque patch over the covering lets it
    # show through), and the opaque part's outermost pixels, where the covering's edge can lie
    see_through = (a8 < 255).astype(np.uint8)
    looked = (near > 0) & (band > 0) & (cv2.dilate(see_through, _RIM) > 0)
    if not looked.any():
        return
    ys, xs = np.nonzero(looked)
    cover = np.asarray(cover, np.float32)
    skin = np.asarray(skin, np.float32)
    open_ = see_through[ys, xs] > 0
    covering = _looks_like(roi[ys, xs], cover, skin)
    # where the patch shows skin (a dark eye, nostril or background is not pasted)
    takes = open_ & ~_looks_like(warped[ys, xs, :3], cover, skin)
    # the covering's rim, one pixel beyond it: its edge pixels (half covering, half skin) or
    # a lighter rim of the material are like neither, but show as a line along the edge
    seen = np.zeros(a8.shape, np.uint8)
    seen[ys[covering], xs[covering]] = 1
    take = takes & (cv2.dilate(seen, _RIM)[ys, xs] > 0)
    a8[ys[take], xs[take]] = 255


def _past_edge(
    image: np.ndarray,
    m: np.ndarray,
    side: int,
    rows: np.ndarray,
    cover: np.ndarray,
    skin: np.ndarray,
) -> None:
    """Fill, in place, the covering that reaches past one side edge of the face's crop
    (side 0: left, 1: right) beside the patch's solid rows (see _PAST_REACH)."""
    ys = np.nonzero(rows)[0]
    top, bottom = max(int(ys[0]) - 8, _BAND_TOP), min(int(ys[-1]) + 9, align.CANON_HEIGHT)
    width = _PAST_REACH + _PAST_INSIDE
    # canonical -> zone: the zone's column 0 is the crop's edge column _PAST_INSIDE inside it,
    # counting outwards (mirrored on the left side)
    if side:
        to_zone = np.array([[1.0, 0.0, _PAST_INSIDE - align.CANON_SIZE], [0.0, 1.0, -top]])
    else:
        to_zone = np.array([[-1.0, 0.0, _PAST_INSIDE - 1.0], [0.0, 1.0, -top]])
    t = align.compose(to_zone, m)
    size = (width, bottom - top)
    fill = tuple(float(v) for v in skin)  # beyond the frame: nothing of the covering
    zone = cv2.warpAffine(image, t, size, flags=cv2.INTER_LINEAR, borderValue=fill)
    looks = _looks_like(zone.reshape(-1, 3), cover, skin).reshape(zone.shape[:2])
    looks[:, :_PAST_INSIDE] = False
    n, labels = cv2.connectedComponents(looks.view(np.uint8), connectivity=8)
    if n <= 1:
        return
    seeds = labels[ys - top, _PAST_INSIDE]
    starts = np.bincount(seeds, minlength=n) > 0
    ends = np.concatenate([labels[:, -1], labels[0], labels[-1]])
    runs_on = np.bincount(ends, minlength=n) > 0
    keep = np.nonzero(starts & ~runs_on)[0]
    keep = keep[keep > 0]
    if not len(keep):
        return
    found = np.isin(labels, keep).view(np.uint8)
    piece = np.asarray(cv2.dilate(cv2.morphologyEx(found, cv2.MORPH_CLOSE, _PAST_CLOSE), _RIM))
    # and the patch's own last columns beside it, where its edge mixed with the covering
    piece[:, : _PAST_INSIDE - 2] = 0
    piece[:, _PAST_INSIDE - 2 : _PAST_INSIDE] = piece[:, _PAST_INSIDE : _PAST_INSIDE + 1]
    piece *= np.uint8(255)
    corners = np.array([[-1.0, -1.0], [width, -1.0], [width, size[1]], [-1.0, size[1]]])
    roi = _roi(image.shape, align.invert(t), corners)
    if roi is None:
        return
    x0, y0, x1, y1, mt = roi
    mask = cv2.warpAffine(piece, mt, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderValue=0)
    mask = (mask > 64).view(np.uint8)
    if not mask.any():
        return
    region = image[y0:y1, x0:x1]
    # filled smoothly from a ring of pixels around it (Telea's fill streaks across a strip)
    ring = (cv2.dilate(mask, _PAST_RING) > 0) & (mask == 0)
    painted = push_pull(region.astype(np.float32), ring)
    np.copyto(region, painted + 0.5, where=mask[:, :, None] > 0, casting="unsafe")


def _read(
    image: np.ndarray, m: np.ndarray, prepared: _Prepared, cover: np.ndarray, skin: np.ndarray
) -> _Seen:
    """Which pixels of the frame around the face look like the patch's covering (_look), its
    covered region sampled once per patch (_region)."""
    if prepared.solid is None:
        prepared.solid, prepared.inside = _region(prepared.patch)
    return _look(image, m, cover, skin)


def _region(patch: Patch) -> tuple[np.ndarray, np.ndarray]:
    """A patch's covered region on the slide's sample (uint8 0/1: `inside`) and the template
    the slide matches (+1 on it, -1 on a ring around it as wide as the search, 0 beyond: what
    lies farther away, hair or a background of the covering's colour, weighs nothing)."""
    covered = patch.covered
    if covered is None:  # a patch that does not say: where it is opaque
        covered = patch.alpha >= 0.999
    full = covered.astype(np.uint8) * np.uint8(255)
    small = cv2.resize(full, _SLIDE_DSIZE, interpolation=cv2.INTER_AREA)
    inside = (small >= 128).view(np.uint8)
    ring = cv2.dilate(inside, _SLIDE_RING) - inside
    return inside.astype(np.float32) - ring.astype(np.float32), inside


def _look(image: np.ndarray, m: np.ndarray, cover: np.ndarray, skin: np.ndarray) -> _Seen:
    """Which pixels of the frame around the face look like a covering of colour `cover`, on
    a sample _SLIDE_SAMPLE px wide across the canonical crop padded by the slide's reach, with
    the covered region where the landmarks put it."""
    k = _SLIDE_SAMPLE / align.CANON_SIZE
    p = _SLIDE_PAD
    ms = align.compose(np.array([[k, 0.0, p], [0.0, k, p]]), m)
    size = (_SLIDE_DSIZE[0] + 2 * p, _SLIDE_DSIZE[1] + 2 * p)
    sample = cv2.warpAffine(
        image, ms, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    looks, nearer_skin = _reads(sample.reshape(-1, 3), cover, skin)
    return _Seen(looks.reshape(size[1], size[0]), nearer_skin.reshape(size[1], size[0]), ms, (p, p))


def _agreement(seen: _Seen, solid: np.ndarray) -> np.ndarray:
    """The slide's template (_region) matched against what was seen, at every place within
    its reach: the sum over the template of +1 where a pixel looks like the covering, -1 not."""
    signed = np.where(seen.looks, np.float32(1.0), np.float32(-1.0))
    return np.asarray(cv2.matchTemplate(signed, solid, cv2.TM_CCORR))


def covering_fit(image: np.ndarray, landmarks: np.ndarray, patch: Patch) -> float | None:
    """How well a patch's covered region (Patch.covered) agrees with the pixels of the frame
    that look like its covering (_looks_like, its colours relit as the skin's brightness
    changed since its keyframe), at its best place within the slide's reach of where the
    face's landmarks put it: the mean over the region (+1 where they look like it, -1 where
    not) and the ring around it (the other way round), in -1..1. None where the patch does
    not say what its covering looks like."""
    if patch.cover_colour is None:
        return None
    try:
        m = align.to_canonical(landmarks)
    except ValueError:
        return None
    skin, cover = _skin(patch), np.asarray(patch.cover_colour, np.float32)
    gain = _gain(image, m, skin)
    if gain is not None:
        skin, cover = skin * gain, cover * gain
    solid, _ = _region(patch)
    score = _agreement(_look(image, m, cover, skin), solid)
    return float(score.max()) / max(float(np.abs(solid).sum()), 1.0)


def _stands_out(seen: _Seen, prepared: _Prepared) -> bool:
    """Whether fewer than _SURROUND of the pixels around the patch's covered region (the
    slide's ring, where the landmarks put it) look like its covering (see _SURROUND)."""
    assert prepared.solid is not None
    h, w = prepared.solid.shape
    x, y = seen.at
    around = seen.looks[y : y + h, x : x + w][prepared.solid < 0]
    return not len(around) or float(around.mean()) < _SURROUND


def _slide(seen: _Seen, prepared: _Prepared) -> tuple[np.ndarray, _Seen]:
    """How far (canonical px, x and y) the patch's covered region lies from where the frame's
    pixels look most like its covering (see _SLIDE), and the read with the region there."""
    solid = prepared.solid
    assert solid is not None
    k = _SLIDE_SAMPLE / align.CANON_SIZE
    p = _SLIDE_PAD
    score = _agreement(seen, solid)
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    if score[iy, ix] - score[p, p] < _SLIDE_MIN_GAIN * solid.size:
        return np.zeros(2), seen
    moved = _Seen(seen.looks, seen.skin, seen.ms, (int(ix), int(iy)))
    dx = ix - p + _vertex(score[iy, ix - 1 : ix + 2] if 0 < ix < 2 * p else None)
    dy = iy - p + _vertex(score[iy - 1 : iy + 2, ix] if 0 < iy < 2 * p else None)
    # the covering lies at the patch's canonical position plus (dx, dy) / k
    return np.array([dx / k, dy / k]), moved


def _recede(
    warped: np.ndarray, x0: int, y0: int, seen: _Seen, inside: np.ndarray, margin: _Margin
) -> None:
    """Trim the warped patch's alpha (BGRA at frame offset x0, y0; in place) to the covering
    in view above the nose tip (see _RECEDE_NEAR)."""
    ix, iy = seen.at
    h, w = inside.shape
    placed = np.zeros(seen.looks.shape, np.uint8)
    placed[iy : iy + h, ix : ix + w] = inside
    under = seen.looks[placed > 0]
    if not len(under) or under.mean() < _RECEDE_SEEN:  # no region, or its covering not read
        return
    covering = (seen.looks & (cv2.dilate(placed, _RECEDE_NEAR) > 0)).view(np.uint8)
    # holes in it (a highlight, a print, a fold) are the covering's too
    n, parts = cv2.connectedComponents(1 - covering, connectivity=4)
    outer = np.zeros(n, bool)
    outer[parts[0]] = outer[parts[-1]] = outer[parts[:, 0]] = outer[parts[:, -1]] = True
    covering[~outer[parts]] = 1
    k = _SLIDE_SAMPLE / align.CANON_SIZE
    far = cv2.distanceTransform(1 - covering, cv2.DIST_L2, 3) * (1.0 / k)  # canonical px
    keep = np.clip((margin.edge - far) * (255.0 / margin.ramp), 0.0, 255.0).astype(np.uint8)
    keep[int(np.ceil(k * _RECEDE_BELOW)) + _SLIDE_PAD :] = 255
    keep[~seen.skin] = 255
    t = align.invert(seen.ms)
    t[:, 2] -= (x0, y0)
    size = (warped.shape[1], warped.shape[0])
    kept = cv2.warpAffine(keep, t, size, flags=cv2.INTER_LINEAR, borderValue=255)
    np.minimum(warped[:, :, 3], kept, out=warped[:, :, 3])


def _vertex(three: np.ndarray | None) -> float:
    """Offset (-0.5..0.5) of the peak of a parabola through three scores around a maximum."""
    if three is None:
        return 0.0
    a, b, c = (float(v) for v in three)
    d = a - 2.0 * b + c
    return 0.0 if d >= 0.0 else float(np.clip(0.5 * (a - c) / d, -0.5, 0.5))


def _covering_share(under: np.ndarray, cover: np.ndarray, skin: np.ndarray) -> float:
    """The share of the frame's pixels under a patch's solid part (N,3 BGR) that look like
    the covering (_looks_like); 1 where the patch has no solid part."""
    if not len(under):
        return 1.0
    cover = np.asarray(cover, np.float32)
    return float(_looks_like(under, cover, np.asarray(skin, np.float32)).mean())


def _reads(
    colour: np.ndarray, cover: np.ndarray, skin: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Which BGR pixels (N,3) look like the covering rather than the skin (_LIKE, _NEAR),
    and which lie nearer the skin's colour than the covering's."""
    c = colour.astype(np.float32)
    d = c - cover
    to_cover = np.einsum("ij,ij->i", d, d)  # squared distances: no square roots
    d = c - skin
    to_skin = np.einsum("ij,ij->i", d, d)
    return (to_cover < _LIKE * _LIKE * to_skin) & (to_cover < _NEAR * _NEAR), to_skin < to_cover


def _looks_like(colour: np.ndarray, cover: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Which BGR pixels (N,3) look like the covering rather than the skin (_reads)."""
    return _reads(colour, cover, skin)[0]


def _warp(bgra: np.ndarray, mt: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    return cv2.warpAffine(
        bgra, mt, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )


def _mix(old: np.ndarray, new: np.ndarray, w: float) -> np.ndarray:
    """Two BGRA patches (same pixels) blended, premultiplied by their alphas, weight w on new.

    The colours fade from old to new where both reach; the coverage is the new patch's alpha:
    where only the new patch reaches (the covering moved or grew since the old keyframe),
    the covering is there now, and a half-faded patch would let it show through; where only
    the old one reached, the covering is not (the new keyframe found it elsewhere), and a
    fading patch there lay over the eyes, the cheeks or the background beside the covering
    (`python bench/paint_region.py --video`: the eyes and brows changed on 14 % of the
    keyframes' own frames, 2 % with this)."""
    new_a = new[:, :, 3:4].astype(np.float32) * (1.0 / 255.0)
    # the old patch's colour only where it is nearly solid (its alpha from 0.8 up, fully from
    # 1): its feather band holds its keyframe's covering blended in (the restorer's blend),
    # which drew a dark line across the new patch where the old one's edge lay (the stage
    # clip's black covering, frames 141-146: a head pitching between keyframes 132 and 148)
    solid = old[:, :, 3:4].astype(np.float32) * (5.0 / 255.0) - 4.0
    a_o = np.clip(solid, 0.0, 1.0) * (1.0 - w)
    a_n = new_a * w
    img = old[:, :, :3] * a_o + new[:, :, :3] * a_n
    img /= np.maximum(a_o + a_n, 1e-6)
    return np.dstack([img + 0.5, new_a * 255.0 + 0.5]).clip(0, 255).astype(np.uint8)
