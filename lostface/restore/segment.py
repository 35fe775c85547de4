"""Embedded segmenter: where a face covering sits on an aligned face, and whether there is one.

Geometry gives the prior (a mask sits on the lower face, regions.lower_face_mask); the
face's own visible skin gives the colour model (two samples: forehead plus nose bridge,
regions.upper_skin_mask, and the nose bridge alone, regions.mid_skin_mask, for faces whose
forehead hides under hair or a brim), so "covered" means "unlike this face's skin" and
works for every skin tone and lighting. The score also asks whether red lips show.
Everything is a few vectorised numpy/cv2 passes over one 256x256 crop (about 3 ms).
"""

from __future__ import annotations

import cv2
import numpy as np

from lostface.config import MaskSettings
from lostface.errors import InputError
from lostface.frame import CoverMask
from lostface.restore import regions
from lostface.restore.align import CANON_LANDMARKS, CANON_SIZE

# Lightness is compared as a ratio (log L), so shading scales it the same on every skin
# tone; chroma (Lab a, b) in 8-bit units. The robust spread of the skin model is clamped:
# floors so a very even forehead does not make every small change look foreign, ceilings
# so hair or glasses in the skin sample do not make a mask look like skin.
_LOG_L_SPREAD = (0.2, 0.3)
_AB_SPREAD = (4.0, 6.0)
_LOG_L_OFFSET = 12.0
# Skin distance (robust z units) above which a pixel is taken as covering material.
_NONSKIN_Z = 3.0
# Presence evidence: the median skin distance over the score zones, less a discount when
# the mouth is redder than the cheeks (lips show, so no covering). Evidence equal to
# _EVIDENCE_HALF maps to score 0.5.
_EVIDENCE_HALF = 2.3
_LIP_WEIGHT = 0.1
_LIP_MARGIN = 2.0  # Lab a* units of lip redness that any uniform material may show
_LIP_CAP = 15.0

# Zones that any face covering hides and no unmasked face shows as non-skin: the cheeks
# beside the nose and the chin, leaving out the lips and nostrils, which are not skin.
_SCORE_ZONES = (
    np.array([[72, 140], [108, 138], [106, 168], [76, 172]], np.int32),
    np.array([[148, 138], [184, 140], [180, 172], [150, 168]], np.int32),
    np.array([[104, 202], [152, 202], [148, 228], [108, 228]], np.int32),
)


class GeometrySegmenter:
    """Segmenter from face geometry plus the colour of the face's own visible skin."""

    def __init__(self, settings: MaskSettings) -> None:
        self.settings = settings
        s = CANON_SIZE
        self._prior = regions.lower_face_mask() > 0
        grow = max(3, s // 32)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        # The covering may reach past the prior at the top and sides (masks differ in size),
        # but below the mouth the jaw line bounds it: under it lie the neck and clothes.
        self._search = cv2.dilate(regions.lower_face_mask(), kernel) > 0
        jaw_y = int(round(CANON_LANDMARKS[3:5, 1].mean())) + s // 16
        self._search[jaw_y:] = self._prior[jaw_y:]
        rows = np.nonzero(self._search.any(axis=1))[0]
        self._y0 = int(rows.min())  # the search works on rows y0..S only
        # Two samples of visible skin; the lower face counts as skin where it matches either,
        # so hair over the forehead or a high mask edge under the eyes cannot fool both.
        self._skin_samples = tuple(
            np.nonzero(m.reshape(-1) > 0)[0]
            for m in (regions.upper_skin_mask(), regions.mid_skin_mask())
        )
        zones = np.zeros((s, s), np.uint8)
        cv2.fillPoly(zones, list(_SCORE_ZONES), 255)
        self._zones = zones[self._y0 :] > 0
        lips = np.zeros((s, s), np.uint8)
        mouth = CANON_LANDMARKS[3:5].mean(axis=0)
        half = float(CANON_LANDMARKS[4, 0] - CANON_LANDMARKS[3, 0]) / 2
        centre = (int(round(mouth[0])), int(round(mouth[1] + 0.05 * half)))
        cv2.ellipse(lips, centre, (int(0.7 * half), int(0.28 * half)), 0, 0, 360, 255, -1)
        self._lips = lips[self._y0 :] > 0
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        d = max(0, int(settings.dilate))
        self._dilate = (
            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1)) if d else None
        )

    def skin_distance(self, face: np.ndarray) -> np.ndarray:
        """Robust colour distance to the face's visible skin, rows y0..S of the crop (float32)."""
        return self._distance(face)[0]

    def _distance(self, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Skin distance and Lab a* (redness), both for rows y0..S of the crop."""
        lab = cv2.cvtColor(cv2.blur(face, (3, 3)), cv2.COLOR_BGR2LAB).astype(np.float32)
        lab[..., 0] = np.log(lab[..., 0] + _LOG_L_OFFSET)
        lo = np.array([_LOG_L_SPREAD[0], _AB_SPREAD[0], _AB_SPREAD[0]], np.float32)
        hi = np.array([_LOG_L_SPREAD[1], _AB_SPREAD[1], _AB_SPREAD[1]], np.float32)
        lower = lab[self._y0 :]
        dists = []
        for idx in self._skin_samples:
            skin = lab.reshape(-1, 3)[idx]
            med = np.median(skin, axis=0)
            spread = 1.4826 * np.median(np.abs(skin - med), axis=0)
            z = (lower - med) / np.clip(spread, lo, hi)
            dists.append(np.sqrt((z * z).sum(axis=2)))
        return np.minimum.reduce(dists), lower[..., 1]

    def segment(self, face: np.ndarray) -> CoverMask:
        """Covered region of an aligned face; empty masks when it wears no covering.

        score in [0, 1): 0.5 is where the lower face starts to look clearly unlike the
        face's own skin; covered = score > settings.presence_threshold.
        """
        if face.shape != (CANON_SIZE, CANON_SIZE, 3) or face.dtype != np.uint8:
            raise InputError(
                f"segment needs an aligned {CANON_SIZE}x{CANON_SIZE} BGR uint8 face crop "
                "(see lostface.restore.align.warp_to_canonical)"
            )
        dist, chroma_a = self._distance(face)
        nonskin = dist > _NONSKIN_Z
        lip_red = float(np.median(chroma_a[self._lips]) - np.median(chroma_a[self._zones]))
        evidence = float(np.median(dist[self._zones]))
        evidence -= _LIP_WEIGHT * float(np.clip(lip_red - _LIP_MARGIN, 0.0, _LIP_CAP))
        evidence = max(evidence, 0.0)
        score = evidence / (evidence + _EVIDENCE_HALF)
        if score <= self.settings.presence_threshold:
            # No covering: empty masks, so nothing downstream can touch this face.
            empty = np.zeros((CANON_SIZE, CANON_SIZE), bool)
            return CoverMask(False, empty.astype(np.float32), empty, score)
        hard = self._shape(nonskin)
        return CoverMask(covered=True, alpha=self._feather(hard), hard=hard, score=score)

    def _shape(self, nonskin: np.ndarray) -> np.ndarray:
        """Clean the non-skin pixels into one solid covering inside the lower-face prior."""
        s = CANON_SIZE
        m: np.ndarray = (nonskin & self._search[self._y0 :]).astype(np.uint8) * 255
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, self._close)
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, self._open)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        hard = np.zeros((s, s), bool)
        if n <= 1:
            return hard
        # Keep the components that reach the score zones (the covering), drop stray bits.
        hit = np.bincount(labels[self._zones], minlength=n)
        keep = np.nonzero(hit[1:] > 0)[0] + 1
        if len(keep) == 0:
            keep = np.array([1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))])
        pts = cv2.findNonZero(np.isin(labels, keep).astype(np.uint8))
        hull = cv2.convexHull(pts)
        filled = np.zeros((s - self._y0, s), np.uint8)
        cv2.fillConvexPoly(filled, hull, 255)
        hard[self._y0 :] = (filled > 0) & self._search[self._y0 :]
        return hard

    def _feather(self, hard: np.ndarray) -> np.ndarray:
        """Soft alpha: the hard mask grown by settings.dilate, edge blurred by feather_radius."""
        m: np.ndarray = hard.astype(np.uint8) * 255
        if self._dilate is not None:
            m = cv2.dilate(m, self._dilate)
        alpha: np.ndarray = m.astype(np.float32) / 255.0
        r = int(self.settings.feather_radius)
        if r > 0:
            alpha = cv2.GaussianBlur(alpha, (0, 0), r / 2.0)
        return alpha
