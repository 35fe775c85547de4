"""Neutral fill: a plausible skin-toned lower face when no reference photo of the person exists.

Classical and cheap: inpaint the covered region from its border for its shading, keep that
shading to broad strokes (inpainting each pixel from its nearest border draws streaks and
creases, such as an X where a hand or a collar lies below the covering, which look worse than
a soft face), and take its colour (Lab a, b) from the
face's own visible skin alone (the lighter of the forehead and the nose bridge, leaving out a
white cap over the forehead): the border also holds the covering's rim, and a green or blue
covering must not leave a green or blue face.
"""

from __future__ import annotations

import cv2
import numpy as np

from lostface.frame import CoverMask
from lostface.restore.regions import mid_skin_mask, trusted_skin, upper_skin_mask
from lostface.stages import Restorer

_WORK = 128  # inpainting resolution: the fill is smooth anyway, and 4x cheaper than 256
# the fill's shading smoothed this much more (pixels at _WORK wide; about 10 in all with the
# inpainting's own blur): smaller left the stage clip's X of creases visible (6), the smooth
# fills from the whole border tried instead lost the shade beside turned faces (bench/README)
_SHADING_SIGMA = 9.5


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
        fill = self.fill(face, (alpha > 0.01).astype(np.uint8))
        a = alpha[..., None]
        out = face.astype(np.float32) * (1.0 - a) + fill * a
        return np.clip(out + 0.5, 0, 255).astype(np.uint8), None

    def fill(
        self,
        face: np.ndarray,
        support: np.ndarray,
        lightness: float | None = None,
        inpainted: np.ndarray | None = None,
    ) -> np.ndarray:
        """The smooth fill of the support region (float32 BGR, shaped like face); lightness
        (Lab L, 0..100) is the skin brightness to pull toward, the forehead's when None;
        inpainted: smooth_inpaint(face, support, self.blur_sigma) when the caller has it."""
        return neutral_fill(
            face, support, self.chroma_pull, self.blur_sigma, self.light_pull, lightness, inpainted
        )


def neutral_fill(
    face: np.ndarray,
    support: np.ndarray,
    chroma_pull: float = 1.0,
    blur_sigma: float = 3.0,
    light_pull: float = 0.0,
    lightness: float | None = None,
    inpainted: np.ndarray | None = None,
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
    medians = []
    for sample in (upper_skin_mask(), mid_skin_mask()):
        sel = (sample > 0) & (support == 0)
        if int(sel.sum()) >= 32:
            # hair, glasses or a fringe in the sample do not drag the median
            medians.append(np.median(face_lab[sel], axis=0))
    if medians:
        # the forehead with the nose bridge, unless it is a white cap (regions.trusted_skin)
        kept = trusted_skin([(float(m[0]), float(m[1]), float(m[2])) for m in medians])
        # of those, the lighter: a hair fringe or a hat's shadow over one sample is darker
        # than the skin the other shows
        mu = medians[max(kept, key=lambda k: float(medians[k][0]))]
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


def border_fill(face: np.ndarray, inpainted: np.ndarray) -> np.ndarray:
    """What surrounds a region, carried smoothly into it (float32 BGR in 0..255, shaped like
    face), from smooth_inpaint's result: for the part of a covering that hides no face, such as
    the background beside a jaw the covering stands off."""
    h, w = face.shape[:2]
    return cv2.resize(inpainted.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)


def smooth_inpaint(face: np.ndarray, support: np.ndarray, blur_sigma: float) -> np.ndarray:
    """The face at _WORK pixels wide, its support region inpainted from its border and the
    whole smoothed (uint8 BGR)."""
    h, w = face.shape[:2]
    work = (_WORK, max(1, round(_WORK * h / w)))
    small = cv2.resize(face, work, interpolation=cv2.INTER_AREA)
    msk = cv2.resize(support.astype(np.uint8), work, interpolation=cv2.INTER_NEAREST)
    msk = cv2.dilate(msk, np.ones((3, 3), np.uint8))
    fill = cv2.inpaint(small, msk * 255, 3, cv2.INPAINT_TELEA)
    return cv2.GaussianBlur(fill, (0, 0), blur_sigma)
