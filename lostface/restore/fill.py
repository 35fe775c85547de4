"""Neutral fill: a plausible skin-toned lower face when no reference photo of the person exists.

Classical and cheap: inpaint the covered region from its border for its shading, keep that
shading to broad strokes (inpainting each pixel from its nearest border draws streaks and
creases, such as an X where a hand or a collar lies below the covering, which look worse than
a soft face), and take its colour (Lab a, b, and the lightness it is pulled toward) from the
face's own visible skin alone: the cheeks just above the covering, where they look like the
forehead's or the nose bridge's skin (skin_colour): the border also holds the covering's
rim, and a green or blue covering must not leave a green or blue face.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from lostface.frame import CoverMask
from lostface.restore.align import CANON_LANDMARKS, yaw_proxy
from lostface.restore.mesh import fits as mesh_fits
from lostface.restore.mesh import outline_mask
from lostface.restore.regions import (
    coloured,
    face_oval_mask,
    mid_skin_mask,
    trusted_skin,
    upper_skin_mask,
)
from lostface.stages import Restorer

_WORK = 128  # inpainting resolution: the fill is smooth anyway, and 4x cheaper than 256
# the fill's shading smoothed this much more (pixels at _WORK wide; about 10 in all with the
# inpainting's own blur): smaller left the stage clip's X of creases visible (6), the smooth
# fills from the whole border tried instead lost the shade beside turned faces (bench/README)
_SHADING_SIGMA = 9.5
# The skin above a covered region (skin_colour): a band from _RING_IN to _RING_OUT canonical
# pixels above the region's edge; its pixels within _RING_L (Lab L) and _RING_AB (Lab a, b)
# of a visible skin sample count, when there are _RING_MIN of them.
_RING_OUT = 15
_RING_IN = 3
_RING_L = 25.0
_RING_AB = 10.0
_RING_MIN = 64
# ... and at least _RING_CHROMA of that sample's chroma (Lab a, b from neutral): a white or
# grey covering beside pale skin lies near it in Lab, but has next to no colour
_RING_CHROMA = 0.6
# ... on a face turned less than _RING_TURN (align.yaw_proxy, eye distances; about 25
# degrees): on a turned face the band crosses the near cheek's shading and the far side's
# edge, and the stage clip's turned faces were filled 0.5-1.3 dB further from what the
# covering hid (bench/README "The neutral fill's colour")
_RING_TURN = 0.25
# Samples without colour are both kept (a photo in black and white, regions.trusted_skin), but
# where the face's oval shows warm pixels (Lab a and b both over _WARM_AB) that are more than
# _DARKER (Lab L) lighter than the colour they give, they are no skin either: a black cap,
# a fringe or sunglasses over both. The colour is then the warm pixels' of the band above the
# covering, or of the whole oval where fewer than _RING_MIN show there. On the real photos of
# ../shared/data it changes four faces, filled black, dark grey or navy before (a hand probe;
# bench/README.md, "Samples that are no skin").
_WARM_AB = 4.0
_DARKER = 20.0
_WARM_MIN = 200
# A fill colour darker than _NO_SKIN_L (Lab L) and than _NO_SKIN_SHARE of the face's lit skin
# is no skin's: the band above the covering and both samples were hair, a cap's shadow
# or the eyes (_checked). It changes 8 of the 342 faces restore paints on the masked photos of
# ../shared/data (filled near black or maroon before) and, of bench/paint_region.py's synthetic
# coverings, whose samples are skin, three, each nearer (bench/README.md, "A fill near black").
_NO_SKIN_L = 30.0
_NO_SKIN_SHARE = 0.5

# The face's outline under its covering: the oval of the face's own mesh, whose points below
# the nose tip the model puts too near it there (the covering hides the jaw and chin), so they
# are moved COVERED_CHIN times as far below it. Against the oval the mesh finds on the same
# face uncovered (`python bench/segmentation.py`, the face outline under the covering; means
# over 300 synthetic coverings), 1.15 leaves out 5 % of the face within the covering and its
# feather band and takes in 8 % of the rest there; the oval as found 11 % and 3 %. On the
# photo pairs of bench/quality.py (a hand probe, within the painted region) the reference's
# oval bent onto the face, the outline before, left out 10 % and took in 16 %; this one 10 %
# and 3 %.
COVERED_CHIN = 1.15
# Below the face's outline the neck: this share of the face's
# width, under the chin; the outline's and the neck's soft edges (Gaussian sigma, canonical
# px); the margin around the outline that is no source of what lies beside the face
_NECK = 0.6
OUTLINE_EDGE = 2.0
_NECK_EDGE = 8.0
AROUND_OUTLINE = np.ones((5, 5), np.uint8)


class NeutralFill(Restorer):
    """Restorer (see lostface.stages) that paints a smooth skin-toned fill; reference None."""

    def __init__(
        self, chroma_pull: float = 1.0, blur_sigma: float = 3.0, light_pull: float = 0.5
    ) -> None:
        self.chroma_pull = chroma_pull
        self.blur_sigma = blur_sigma
        self.light_pull = light_pull

    def restore(
        self,
        face: np.ndarray,
        cover: CoverMask,
        landmarks: np.ndarray,
        track_id: int | None = None,
        person: str | None = None,
    ) -> tuple[np.ndarray, str | None]:
        alpha = np.clip(cover.alpha.astype(np.float32), 0.0, 1.0)
        if not cover.covered or float(alpha.max()) <= 0.0:
            return face.copy(), None
        support = (alpha > 0.01).astype(np.uint8)
        fill = self.fill(face, support, turn=yaw_proxy(landmarks[:5]))
        outline = face_outline(cover, landmarks)
        if outline is not None:
            # skin within the face's outline only: beyond it (a covering that stands off the
            # jaw, or before a turned face's mouth and chin) what surrounds the covering there
            on_face = on_face_or_neck(outline)[..., None]
            beside = beside_fill(face, support, outline, self.blur_sigma)
            fill = fill * on_face + beside * (1.0 - on_face)
        a = alpha[..., None]
        out = face.astype(np.float32) * (1.0 - a) + fill * a
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), None

    def fill(
        self,
        face: np.ndarray,
        support: np.ndarray,
        lightness: float | None = None,
        inpainted: np.ndarray | None = None,
        turn: float = 0.0,
    ) -> np.ndarray:
        """The smooth fill of the support region (float32 BGR, shaped like face); lightness
        (Lab L, 0..100) is the skin brightness to pull toward, skin_colour's when None;
        inpainted: smooth_inpaint(face, support, self.blur_sigma) when the caller has it;
        turn: the face's head turn (align.yaw_proxy of its canonical landmarks)."""
        return neutral_fill(
            face,
            support,
            self.chroma_pull,
            self.blur_sigma,
            self.light_pull,
            lightness,
            inpainted,
            turn,
        )


def neutral_fill(
    face: np.ndarray,
    support: np.ndarray,
    chroma_pull: float = 1.0,
    blur_sigma: float = 3.0,
    light_pull: float = 0.0,
    lightness: float | None = None,
    inpainted: np.ndarray | None = None,
    turn: float = 0.0,
) -> np.ndarray:
    """A smooth skin-toned fill of the support region: float32 BGR in 0..255, shaped like face.

    light_pull moves brightness toward the visible skin's (the border also holds the mask's
    rim and shadow, hair, collar and background); 0 keeps the border's shading. The skin's
    brightness is the forehead's, or `lightness` (Lab L, 0..100) where the caller knows the
    skin right around the covering, which is often darker than the forehead."""
    h, w = face.shape[:2]
    fill = smooth_inpaint(face, support, blur_sigma) if inpainted is None else inpainted
    # the shading in broad strokes only (_SHADING_SIGMA)
    fill = cv2.GaussianBlur(fill, (0, 0), _SHADING_SIGMA)
    lab = cv2.cvtColor(fill.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    face_lab = cv2.cvtColor(face.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    mu = skin_colour(face_lab, support, turn)
    if mu is not None:
        if lightness is not None:
            mu[0] = lightness
        lab[..., 1:] = (1 - chroma_pull) * lab[..., 1:] + chroma_pull * mu[1:]
        # keep some inpainted shading, but the border also holds hair, collar and background:
        # brightness stays near the visible skin's
        if light_pull > 0:
            lab[..., 0] = (1 - light_pull) * lab[..., 0] + light_pull * mu[0]
            lab[..., 0] = np.clip(lab[..., 0], mu[0] - 12.0, mu[0] + 8.0)
        else:
            lab[..., 0] = np.clip(lab[..., 0], mu[0] - 25.0, mu[0] + 15.0)
    fill = cv2.cvtColor(lab, cv2.COLOR_Lab2BGR) * 255.0
    return cv2.resize(fill, (w, h), interpolation=cv2.INTER_LINEAR)


def skin_colour(face_lab: np.ndarray, support: np.ndarray, turn: float = 0.0) -> np.ndarray | None:
    """The colour (Lab, float: L 0..100) to fill a covered face with: that of the skin just
    above the covered region (support: uint8, the crop's shape), below the eyes; None when no
    skin sample shows.

    The lower face is most often darker than the forehead (light from above) and a forehead's
    highlight is paler: the cheeks just above the covering match what it hides best (on
    synthetic coverings over the open photos, bench/README "The neutral fill's colour").
    Its pixels count where they look like one of the visible skin's samples (the forehead and
    the nose bridge, less a white cap, regions.trusted_skin) and are as colourful, so the
    covering's rim (also where the region fell short of a pale covering), hair, the eyes and
    the background do not. On a face turned more than _RING_TURN (`turn`: align.yaw_proxy),
    and where too few pixels qualify (a covering up to the eyes), the lighter sample itself: a
    hair fringe or a hat's shadow over one sample is darker than the skin the other shows.
    Where neither sample has colour and warm skin elsewhere in the face is far lighter than
    the colour they give, that skin's (_warm_instead: a black cap and sunglasses)."""
    medians, bridge = [], None
    for k, sample in enumerate((upper_skin_mask(), mid_skin_mask())):
        sel = (sample > 0) & (support == 0)
        if int(sel.sum()) >= 32:
            # hair, glasses or a fringe in the sample do not drag the median
            medians.append(np.median(face_lab[sel], axis=0))
            bridge = len(medians) - 1 if k == 1 else bridge
    if not medians:
        return None
    kept = trusted_skin([(float(m[0]), float(m[1]), float(m[2])) for m in medians], bridge)
    px = face_lab[_ring(support)] if abs(turn) < _RING_TURN else np.empty((0, 3), np.float32)
    chroma = np.hypot(px[:, 1], px[:, 2])
    like = np.zeros(len(px), bool)
    for k in kept:
        m = medians[k]
        like |= (
            (np.abs(px[:, 0] - m[0]) < _RING_L)
            & (np.hypot(px[:, 1] - m[1], px[:, 2] - m[2]) < _RING_AB)
            & (chroma >= _RING_CHROMA * float(np.hypot(m[1], m[2])))
        )
    if int(like.sum()) >= _RING_MIN:
        colour = np.median(px[like], axis=0)
    else:
        # of the samples, the lighter: a hair fringe or a hat's shadow over one sample is
        # darker than the skin the other shows
        colour = medians[max(kept, key=lambda k: float(medians[k][0]))].copy()
    if any(coloured(float(m[1]), float(m[2])) for m in medians):
        return _checked(face_lab, support, colour)
    return _checked(face_lab, support, _warm_instead(face_lab, support, colour))


def _checked(face_lab: np.ndarray, support: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """`colour`, unless it is no skin's beside the face's own lit skin (see _NO_SKIN_L): near
    black where the face shows far lighter skin (its samples and the band above the covering
    were hair, a cap's shadow, the eyes). The lit skin: the lighter half of the warm pixels
    (Lab a and b over _WARM_AB) outside the covering in the middle of the face's oval (hair,
    brows and shadows are the darker half)."""
    warm = _warm(face_lab, (support == 0) & _middle_of_the_face())
    if len(warm) < 2 * _WARM_MIN:
        return colour
    skin = np.median(warm[warm[:, 0] >= np.median(warm[:, 0])], axis=0)
    if float(colour[0]) < min(_NO_SKIN_L, _NO_SKIN_SHARE * float(skin[0])):
        return skin
    return colour


def _warm(face_lab: np.ndarray, where: np.ndarray) -> np.ndarray:
    """The warm pixels (Lab a and b both over _WARM_AB) of face_lab at `where`, (N, 3)."""
    px = face_lab[where]
    return px[(px[:, 1] > _WARM_AB) & (px[:, 2] > _WARM_AB)]


@cache
def _middle_of_the_face() -> np.ndarray:
    """The face oval's middle half of columns (bool, the crop's shape, read-only): beside a
    turned face the oval's sides hold the wall or the curtain behind it."""
    oval = face_oval_mask() > 0
    w = oval.shape[1]
    oval[:, : w // 4] = False
    oval[:, w - w // 4 :] = False
    oval.flags.writeable = False
    return oval


def _warm_instead(face_lab: np.ndarray, support: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """The warm pixels' colour instead of `colour`, given by samples without colour, where
    they show it is no skin's (see _WARM_AB)."""
    oval = _warm(face_lab, (support == 0) & (face_oval_mask() > 0))
    if len(oval) < _WARM_MIN or float(colour[0]) > float(np.median(oval[:, 0])) - _DARKER:
        return colour
    band = _warm(face_lab, _ring(support))
    return np.median(band if len(band) >= _RING_MIN else oval, axis=0)


def _ring(support: np.ndarray) -> np.ndarray:
    """The band above the covered region (bool, the crop's shape): _RING_IN to _RING_OUT
    pixels above its edge (past the covering's rim and the feather), below the eyes' line,
    inside the face's oval. Beside a covering lie the face's shaded sides, hair or the
    background; above it, the cheeks under the eyes, lit as the ones it hides."""
    sup = (support > 0).astype(np.uint8)
    # a vertical kernel anchored at its top row: each pixel of the region reaches up
    reach = cv2.dilate(sup, np.ones((_RING_OUT + 1, 1), np.uint8), anchor=(0, 0)) > 0
    inner = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * _RING_IN + 1, 2 * _RING_IN + 1))
    ring = reach & ~(cv2.dilate(sup, inner) > 0) & (face_oval_mask() > 0)
    ring[: int(round(float(CANON_LANDMARKS[:2, 1].mean())))] = False
    return ring


def _at_work(face: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The face at _WORK pixels wide, and its support region there (uint8 0/1, grown by a
    pixel so that no rim of it is taken as known)."""
    h, w = face.shape[:2]
    work = (_WORK, max(1, round(_WORK * h / w)))
    small = cv2.resize(face, work, interpolation=cv2.INTER_AREA)
    msk = cv2.resize(support.astype(np.uint8), work, interpolation=cv2.INTER_NEAREST)
    return small, cv2.dilate(msk, np.ones((3, 3), np.uint8))


def smooth_inpaint(face: np.ndarray, support: np.ndarray, blur_sigma: float) -> np.ndarray:
    """The face at _WORK pixels wide, its support region inpainted from its border and the
    whole smoothed (uint8 BGR)."""
    small, msk = _at_work(face, support)
    fill = cv2.inpaint(small, msk * 255, 3, cv2.INPAINT_TELEA)
    return cv2.GaussianBlur(fill, (0, 0), blur_sigma)


def smooth_blend(face: np.ndarray, support: np.ndarray, blur_sigma: float) -> np.ndarray:
    """The face at _WORK pixels wide, its support region filled by push_pull from what
    surrounds it and the whole smoothed (float32 BGR)."""
    small, msk = _at_work(face, support)
    fill = push_pull(small.astype(np.float32), msk == 0)
    return np.asarray(cv2.GaussianBlur(fill, (0, 0), blur_sigma), np.float32)


def push_pull(image: np.ndarray, known: np.ndarray) -> np.ndarray:
    """image (float32, H x W x C) filled where `known` (bool, H x W) is False from what is
    known around it, smoothly and without direction: each unknown pixel takes the mean of the
    known pixels of the coarsest pyramid level that holds some near it, blended level by
    level (a pull-push fill). Telea's inpainting draws each pixel from its nearest border
    and streaks radially (a fan) across a wide region; this fills it like a soft blur."""
    w = known.astype(np.float32)
    levels: list[tuple[np.ndarray, np.ndarray]] = [(image * w[..., None], w)]
    while min(levels[-1][1].shape) > 2 and float(levels[-1][1].min()) <= 0.0:
        img, wt = levels[-1]
        levels.append((cv2.pyrDown(img), cv2.pyrDown(wt)))
    img, wt = levels[-1]
    est = img / np.maximum(wt, 1e-6)[..., None]
    for img, wt in reversed(levels[:-1]):
        up = cv2.pyrUp(est, dstsize=(wt.shape[1], wt.shape[0]))
        a = np.clip(wt, 0.0, 1.0)[..., None]
        est = img / np.maximum(wt, 1e-6)[..., None] * a + up * (1.0 - a)
    out = np.where(known[..., None], image, est)
    return np.asarray(out, np.float32)


def face_outline(cover: CoverMask, landmarks: np.ndarray) -> np.ndarray | None:
    """The face's outline under its covering (uint8 0/1 over the canonical crop): the oval
    of the mesh found on it (CoverMask.mesh), lengthened below the nose tip (COVERED_CHIN);
    None without a mesh, or with one posed unlike the face's 5 points (on a face turned far
    aside it can sit frontal on the covering)."""
    if cover.mesh is None or not mesh_fits(cover.mesh, landmarks):
        return None
    return outline_mask(cover.mesh, COVERED_CHIN)


def on_face_or_neck(outline: np.ndarray) -> np.ndarray:
    """(H, W) float32 in 0..1: the face within its outline (uint8 0/1), softened at the edge,
    and below the chin the neck (_NECK of the face's widest span), whose sides fade over
    _NECK_EDGE: a covering that reaches down hides the neck far more often than anything
    else, but no straight edge of skin may stand out where a hand or a collar is."""
    inside = outline.astype(np.float32)
    rows, cols = np.nonzero(outline)
    if len(rows) == 0:
        return np.ones(outline.shape, np.float32)
    chin = int(rows.max())
    jaw = chin - (chin - int(rows.min())) // 8  # the outline's lowest eighth: the chin's
    lowest = cols[rows >= jaw]
    centre, half = float(lowest.mean()), _NECK * float(cols.max() - cols.min()) / 2
    neck = np.zeros_like(inside)  # from within the chin, so its blurred top merges into it
    neck[jaw:, max(0, int(centre - half)) : int(centre + half) + 1] = 1.0
    face = cv2.GaussianBlur(inside, (0, 0), OUTLINE_EDGE)
    return np.asarray(np.maximum(face, cv2.GaussianBlur(neck, (0, 0), _NECK_EDGE)), np.float32)


def beside_fill(
    face: np.ndarray, support: np.ndarray, outline: np.ndarray, blur_sigma: float
) -> np.ndarray:
    """What a covering hides beyond the face's outline, carried in from what surrounds it
    there and is not face (background, collar, a hand, the neck below it): the face itself is
    no source, so its skin does not spread into the background beside a turned jaw as a pale
    haze (float32 BGR in 0..255)."""
    unknown = np.maximum(support, cv2.dilate(outline, AROUND_OUTLINE))
    h, w = face.shape[:2]
    filled = smooth_blend(face, unknown, blur_sigma)
    return cv2.resize(filled, (w, h), interpolation=cv2.INTER_LINEAR)
