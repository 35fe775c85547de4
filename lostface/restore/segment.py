"""Embedded segmenter: where a face covering sits on an aligned face, and whether there is one.

Geometry gives the prior (a mask sits on the lower face, regions.lower_face_mask); the
face's own visible skin gives the colour model (two samples: forehead plus nose bridge,
regions.upper_skin_mask, and the nose bridge alone, regions.mid_skin_mask, for faces whose
forehead hides under hair or a brim; a light grey sample beside a coloured one, a white
cap or hood, is left out), so "covered" means "unlike this face's skin" and
works for every skin tone and lighting. The score also asks whether the covering's rim
steps across the cheeks, whether lips or nostrils show, and whether a difference is only
shading (chromaticity), and judges dark or defocused faces by colour alone. Everything is a
few vectorised numpy/cv2 passes over one canonical crop (about 3 ms on a quiet machine; the
rim, chromaticity and nostril checks add about half as much again), on keyframes only.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from lostface.config import MaskSettings
from lostface.errors import InputError
from lostface.frame import CoverMask
from lostface.restore import regions
from lostface.restore.align import CANON_HEIGHT, CANON_LANDMARKS, CANON_SHAPE, CANON_SIZE, yaw_proxy
from lostface.restore.identity import FACE_BOX
from lostface.restore.mesh import FACE_OVAL, MESH_POINTS, NOSE_TIP
from lostface.stages import Segmenter

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
# the lips are redder than the skin around them (lips show, so no covering; a red covering is
# as red around the mouth as on it) and one when dark nostrils show under the nose tip (a
# covering hides them). Evidence equal to _EVIDENCE_HALF maps to score 0.5.
_EVIDENCE_HALF = 2.2
_LIP_WEIGHT = 0.1
_LIP_MARGIN = 2.0  # Lab a* units of lip redness that any uniform material may show
_LIP_CAP = 15.0
_NOSTRIL_MARGIN = 20.0  # Lab L units (0..255) the nostrils may be darker than the nose tip
_NOSTRIL_WEIGHT = 0.05  # evidence per L unit beyond the margin
_NOSTRIL_CAP = 40.0
# Shading (a hat's brim, sunglasses, light from below) changes lightness, not chromaticity (r
# and g over r+g+b): a lower face brighter than the visible skin by more than _SHADE_LOG_L
# (log L) whose chromaticity stays within _SHADE_CHROMA (robust z) of the skin's is taken
# as lit skin, and its evidence is no more than its chromaticity's.
_SHADE_LOG_L = 0.4
_SHADE_CHROMA = 1.0
_CHROMA_SPREAD = 0.01  # floor of the skin's chromaticity spread
# A covering's edge: a step in lightness across the cheeks between the eyes and the mouth
# (_EDGE_ROWS), measured per column of both cheeks (_EDGE_COLS) as the largest difference
# between the _EDGE_SPAN rows below and above a row, over the forehead's lightness. An open
# cheek shades smoothly (median over real photos 0.21); a covering's rim steps (0.46). Steps
# beyond _EDGE_FROM add _EDGE_WEIGHT evidence per unit, at most _EDGE_CAP units; a thin line
# (a glasses rim, a crease) steps up and down again and adds little.
_EDGE_ROWS = (114, 162)
_EDGE_COLS = (*range(66, 108, 2), *range(150, 192, 2))
# a turned face's near side alone (index: 0 when the nose points to the image's left)
_EDGE_COLS_NEAR = (tuple(range(150, 192, 2)), tuple(range(66, 108, 2)))
_EDGE_SPAN = 8
_FOREHEAD = np.s_[52:80, 100:156]  # rows, columns of the crop
_EDGE_FROM = 0.3
_EDGE_WEIGHT = 4.0
_EDGE_CAP = 0.5
# ... unless the lower face is of the skin's own colour, both in Lab and in chromaticity
# (evidence under _SKIN_COLOURED each), under a nose whose nostrils show (darker than its tip
# by more than _NOSTRILS_SHOW, Lab L units 0..255): then what steps across the cheeks is the
# edge of a hand held over the mouth, or a shadow's, not a covering's rim (a covering hides
# the nostrils). On the open photos of ../shared/data it leaves a hand over the mouth open; on
# the public dataset's other photos (bench/harm.py --folders) 3 more open faces of 72 judged
# covered, and none of 1,451 masked faces judged covered changes.
_SKIN_COLOURED = 1.5
_NOSTRILS_SHOW = 15.0

# Mask material model: sampled where every face covering sits (between the nose tip and
# the mouth), with the same robust spreads as the skin model but wider ceilings for prints.
_MAT_LOG_L_SPREAD = (0.12, 0.6)
_MAT_AB_SPREAD = (3.0, 16.0)
_MAT_Z = 3.5
# A covering is lit unevenly: its side turned from the light, or the part under the chin, can
# be half as light as the part over the nose and mouth where its material is sampled, which
# the model above then leaves out (on turned faces in the stage clip a strip of the covering
# stayed between the region and the ear). The shape then also takes the non-skin pixels within
# _MAT_Z of that material measured as shading changes it: by lightness (log L) with a spread
# of at least _SHADED_LOG_L, and by chromaticity (r and g over r+g+b, which shading keeps)
# with a spread clamped to _SHADED_CHROMA; joined to the shape without a step: lightness
# changing by less than _SHADED_STEP (log L per canonical px) from pixel to pixel, as shading
# does across a covering, while a covering's own edge against hair, a collar or a shadow steps
# more. The edge cut (mask.refine) then trims what the growth took past the covering's edge;
# without the cut the shape is not grown (it took the skin under the eyes on 1 % more faces of
# bench/paint_region.py's photos).
_SHADED_LOG_L = 0.3
_SHADED_CHROMA = (0.01, 0.04)
_SHADED_STEP = 0.04
# The lightness step is measured after a Gaussian blur of this sigma (canonical px): a fabric's
# weave, dots or a respirator's mesh (1-3 px) step as much as the covering's edge does pixel to
# pixel, so on such a covering the growth stopped where the print began (real photos: a red
# dotted cloth covering outlined over a third, a herringbone one over half); the edge against
# skin, hair or a collar is broader and still stops it (bench/README.md, "A covering's weave").
_SHADED_WEAVE = 2.0
# A covering close to the skin's colour (see GeometrySegmenter._shape): taken from the material
# over the nose tip and mouth when the colour shape holds less than _PALE_CORE of that zone,
# the zone's median lies at least _PALE_Z robust units from the skin (white or grey coverings
# on real photos: 1.5-2.7; a dim face in the stage clip whose zone showed skin: 0.7) and the
# face is turned less than _PALE_TURN (align.yaw_proxy, about 47 degrees; beyond it the zone
# lies across the near cheek and the covering's edge).
_PALE_CORE = 0.5
_PALE_Z = 1.2
_PALE_TURN = 0.6
# A valve or a print over the mouth is no sample of the covering: the material zone then holds
# the valve's colour, and the shape found is the valve alone, an island in a covering of
# another colour. A shape under _ENCLOSED_SMALL of the search bound whose _ENCLOSED_ROWS rows
# just above it are mostly (_ENCLOSED_ABOVE) not skin is grown over the material sampled
# there too. Over the real photos of ../shared/data it changes two faces (a black covering
# with a white valve; a green covering half hidden behind a head), both now outlined whole;
# over bench/paint_region.py's synthetic coverings, none (a hand probe).
_ENCLOSED_SMALL = 0.35
_ENCLOSED_ROWS = 8
_ENCLOSED_ABOVE = 0.6
# A covering of several colours (a print, side panels, a bandana's broad bands, a rim of another
# colour) is found by the material sampled over the nose tip and mouth: one colour, and the
# others stay beside the painted region. The shape is grown over the pixels inside the search
# bound that touch it and are no skin in colour either (their chromaticity over _PRINT_CHROMA
# robust units from the visible skin's: blind to shading, so the shaded neck, jaw and cheek are
# not taken), from the shape's top edge (never above it: the eyes and lids lie there) to
# _PRINT_BELOW px under its lower edge (in each column; beside the shape, its nearest column's:
# under the covering lie the neck and the collar). Where that adds over _PRINT_SHARE of the
# shape, the edge cut runs on the grown shape too, and the region is what either cut finds:
# fed the other colours, the cut alone once dropped a printed covering's dark rim, and at
# _PRINT_CHROMA 3 the grown part of a white respirator took in the dark background beside a
# pale face, and the cut then reached over her eyes (bench/paint_region.py). On two-colour
# synthetic coverings (`python bench/segmentation.py`, variant panels) the mean IoU rises from
# 0.73-0.77 to 0.83-0.87; single-colour ones as before (0.94, 0.95, 0.90).
_PRINT_CHROMA = 4.0
_PRINT_BELOW = 4
_PRINT_SHARE = 0.02
# Every face covering hides the zone over the nose tip and mouth (the material zone above). A
# region that holds less than _CORE_HELD of it is not the covering but something beside it
# (a cheek, hair or the background beside a face whose 5 points landed wrong, as they do on a
# face in profile): the face is left as it is. On the photos of ../shared/data judged covered
# the regions hold 0.19 of the zone or more (a hand probe over bench/harm.py's photos; its
# figures are unchanged by the rule); on the stage clip with synthetic
# coverings (bench/paint_region.py --video) a profile face's cheek was taken for an N95, held
# none of it, and was painted for 12 frames. Not on a dim face (see _judgeable), whose
# outline reads too little to tell: a dark covering darkened five times is outlined short.
_CORE_HELD = 0.1
# Head turn from the landmarks (align.yaw_proxy) ~ _YAW_GAIN * tan(turn angle) (taken on the
# weak side: a mask stands off the far cheek), for a head
# of radius _HEAD_R canonical pixels with the eyes _EYE_ANGLE and the mask's side edges
# _SIDE_ANGLE radians from the nose: the far cheek narrows, the near one widens a little.
_YAW_GAIN = 0.55
_HEAD_R = 85.0
_EYE_ANGLE = float(np.arcsin(35.25 / 85.0))
_SIDE_ANGLE = float(np.arcsin(78.0 / 85.0))
_NEAR_MAX = 1.6
_PAST_NOSE = 16.0  # canonical px a covering reaches beyond the nose tip on a turned face
# How far below the prior's chin (canonical px) a covering may reach: masks hang under the
# chin, and the landmarks a detector finds on a masked face often sit a little high.
_BELOW_CHIN = 16.0
# With the face mesh (landmarks beyond the first 5): the search also stays inside the mesh's
# face outline, grown about the nose tip by _MESH_GROW and, below the nose, lowered by
# _MESH_BELOW canonical px. Under a covering the mesh predicts the jaw and chin 0.13 and 0.2 eye
# distances (9 and 14 px) from where they are, 0.27 and 0.36 on one face in ten
# (bench/segmentation.py), so the margins are wide: the outline trims what lies beside a
# turned face (background, hair, a collar), not the covering.
_MESH_GROW = 1.15
_MESH_BELOW = 28.0
# Edge refinement (mask.refine): GrabCut at half resolution, 2 iterations, seeded by the colour
# shape. It may move the outline _CUT_REACH canonical px past the search bound (_CUT_BELOW more
# under the jaw line), and takes the shape's interior _CUT_SURE px in from its edge as certain.
_CUT_SCALE = 2
_CUT_ITERATIONS = 2
_CUT_REACH = 9
_CUT_BELOW = 8
_CUT_SURE = 12

# On a turned face (head turn beyond _TURNED) the covering stands off the face in front of the
# nose, mouth and chin, past where the 5 points put the face: the region then also takes what
# lies beside it, within _EXTEND_REACH canonical px and from _EXTEND_BELOW_NOSE px under the
# nose tip down (above lie the eyes), that is unlike the skin and within _EXTEND_Z (robust z)
# of the material found over the nose tip and mouth, in pieces that end inside that reach
# (the covering's own edge shows). A piece that runs on to the reach's end or the crop's is
# something else of the covering's colour (hair, a collar, a dark background) and is left.
_EXTEND_REACH = 40
_EXTEND_RIM = 3
_EXTEND_Z = 2.0
_EXTEND_BELOW_NOSE = 10

# A frontal face's evidence is at most this times its less covered-looking cheek's.
_CHEEK_AGREEMENT = 1.25
# A face whose visible upper face (brows, eyes, nose bridge: these rows and columns of the
# crop) shows little to judge by, by median lightness (Lab L, 0..255) or fine detail (mean
# absolute difference from a 1 px blur, L units, on the crop shrunk _DETAIL_SCALE times, about
# the size of the smallest face judged; real photos measure 3.8 or more, 1st percentile; a
# face defocused or lost in the dark of a stage crowd 0.2-1.0), is judged by colour alone (its
# lower face's distance from the skin in Lab or in chromaticity, no rim) and covered only on
# evidence of _DIM_EVIDENCE or more: a covering of another colour than the skin.
_UPPER_ROWS = (60, 124)
_UPPER_COLS = (64, 192)
_DETAIL_SCALE = 4
_MIN_SKIN_L = 20.0
_MIN_DETAIL = 1.5
_DIM_EVIDENCE = 3.0
_MIN_COVER_L = 12.0  # Lab L (0..255) a dim face's lower face needs for its colour to count
# ... or this much, where the covering's rim steps across the cheeks (_edge_step) by at least
# _DIM_RIM: a dark covering's colour read in the dark. On the real photos darkened 5 and 8
# times (bench/harm.py --dim 5, --dim 8) it finds 205 and 168 of 299 masked faces against 199
# and 146 without it, and still no open one of 300; without the rim, the faint faces of a
# stage crowd (the unmasked stage clip) measure like coverings at that lightness (20 of 275
# frames judged covered).
_MIN_RIMMED_COVER_L = 6.0
_DIM_RIM = 0.3
# A dim face whose lower face is at most this share of its visible skin's lightness (Lab L,
# linear) wears a dark covering, where that skin is light enough to read (_MIN_DARK_SKIN_L):
# a black covering in the dark has no colour to tell it by, only its darkness. Shadow and
# beards leave more light: with the real photos darkened five times (bench/harm.py --dim 5)
# no open face is judged covered at 0.25, and one at 0.3 (a dark moustache on dark skin);
# faces darker than _MIN_DARK_SKIN_L are not judged this way (the faint open faces of a stage
# crowd can measure like coverings).
_DARK_COVER = 0.25
_MIN_DARK_SKIN_L = 20.0
# Skin samples far darker than a lower face of skin's own colour are no skin: a hair fringe
# over the forehead and sunglasses over the nose bridge. The lower face is then the only skin
# in sight, and nothing says it is covered: it is left as it is. "Far darker": the lower
# face at least _SAMPLES_DARKER times as light (Lab L) as the lighter trusted sample; "skin's
# colour": Lab a and b (8-bit, 0 = neutral) within _SKIN_A and _SKIN_B. Lighting rarely
# makes a lower face twice as light as the forehead and nose bridge above it, and a covering
# of skin's colour that light, under a dark fringe and sunglasses, is rare. On the photos of
# ../shared/data the rule changes one decision (bench/harm.py), a smiling face in sunglasses
# under a fringe; the masked photos nearest to it (a warm-lit mask, a pink respirator) stay
# covered (tests/test_segment.py).
_SAMPLES_DARKER = 2.0
_SKIN_A = (6.0, 30.0)
_SKIN_B = (6.0, 35.0)
# The region found is skin: none of the samples has colour (regions.coloured; hair, a fringe,
# glasses' bridge or a shadow, not skin) and the region found, warm (Lab a and b both over
# _REGION_WARM_AB) but no more colourful than skin (_SKIN_A, _SKIN_B: a yellow or orange
# cloth is) and more than _REGION_LIGHTER Lab L units lighter than the lighter sample, is the
# face's own skin, taken for a covering against samples that are not skin: the face is
# left as it is. (The neutral fill's colour makes the same call: fill._warm_instead.) On the
# masked photos of ../shared/data it leaves two of 389 covered faces alone (a hand probe over
# restore's calls): a grey respirator beside a turned face under a fringe, whose region was
# the cheek and nose above it, and a stranger's forehead read as a face in a crowd; the open
# photos' calls are not changed (bench/README.md, "A region that is the face's skin").
_REGION_WARM_AB = 4.0
_REGION_LIGHTER = 20.0

# Head turn (align.yaw_proxy, eye distances) beyond which the far cheek's score zone is left
# out (it shows what lies beside the face), and beyond which a face is not judged at all
# (about 75 degrees: the eyes nearly coincide and the 5-point alignment says nothing).
_TURNED = 0.25
_MAX_TURN = 2.0

# The second look (mask.second_look), at a face that scores within _SECOND_LOOK_BAND of the
# threshold in effect: how far the neutral covering moves it in dlib's embedding
# (identity.cover_shift). A covering already hides what the neutral one would, so a face that
# moves less than _SECOND_LOOK_COVERED is judged covered, and one that moves more than
# _SECOND_LOOK_OPEN (further than the median open face) is judged open, unless it was painted
# on its last keyframe. A face the picture's edge cuts is judged covered this way only with
# _SECOND_LOOK_IN_SIGHT of the face that dlib reads (identity.FACE_BOX) inside the picture
# (the crop repeats the edge's pixels beyond it, which move no embedding as a face would).
# On the real photos of ../shared/data open faces move 0.40 or more in 95 of 100 (median
# 0.49), covered ones a median 0.37 (0.44 at the 75th percentile): bench/harm.py --shifts.
_SECOND_LOOK_BAND = 0.08
_SECOND_LOOK_COVERED = 0.38
_SECOND_LOOK_OPEN = 0.52
_SECOND_LOOK_IN_SIGHT = 0.95

# Zones that any face covering hides and no unmasked face shows as non-skin: the cheeks
# beside the nose and the chin, leaving out the lips and nostrils, which are not skin.
_SCORE_ZONES = (
    np.array([[72, 140], [108, 138], [106, 168], [76, 172]], np.int32),
    np.array([[148, 138], [184, 140], [180, 172], [150, 168]], np.int32),
    np.array([[104, 202], [152, 202], [148, 228], [108, 228]], np.int32),
)


def _nearest(
    values: np.ndarray,
    models: list[tuple[np.ndarray, np.ndarray]],
    where: np.ndarray | None = None,
) -> np.ndarray:
    """Per pixel of values (H, W, C), the distance to the nearest of the skin's colour models
    ((median, spread) pairs) in robust z units; with where (H, W), computed only there and
    NaN elsewhere."""
    px = values if where is None else values[where]
    nearest = None
    for med, spread in models:
        d = regions.squared_z(px, med, spread)
        nearest = d if nearest is None else np.minimum(nearest, d, out=nearest)
    assert nearest is not None
    nearest = np.sqrt(nearest, out=nearest)
    if where is None:
        return nearest
    out = np.full(values.shape[:2], np.nan, np.float32)
    out[where] = nearest
    return out


def _plain_lab(v: np.ndarray) -> tuple[float, float, float]:
    """A colour in the segmenter's Lab (log L, 8-bit a and b; see _skin_lab) as 8-bit Lab
    lightness from black and a, b from neutral."""
    return float(np.exp(v[0])) - _LOG_L_OFFSET, float(v[1]) - 128.0, float(v[2]) - 128.0


def _chromaticity(bgr: np.ndarray) -> np.ndarray:
    """(r, g) over r + g + b of (N, 3) BGR pixels, each channel raised by 8 (dark pixels'
    chromaticity is noise)."""
    f = bgr.astype(np.float32) + 8.0
    total = f[:, 0] + f[:, 1] + f[:, 2]
    return np.stack([f[:, 2] / total, f[:, 1] / total], axis=-1)


def _in_sight(inside: np.ndarray | None) -> float:
    """Share of the face that dlib's embedding reads (identity.FACE_BOX) inside the picture."""
    if inside is None:
        return 1.0
    x0, y0, x1, y1 = FACE_BOX
    return float(np.asarray(inside, bool)[y0:y1, x0:x1].mean())


def _uncovered(score: float) -> CoverMask:
    """No covering: empty masks, so nothing downstream can touch this face."""
    empty = np.zeros(CANON_SHAPE, bool)
    return CoverMask(False, empty.astype(np.float32), empty, score)


class GeometrySegmenter(Segmenter):
    """Segmenter from face geometry plus the colour of the face's own visible skin."""

    def __init__(
        self, settings: MaskSettings, second_look: Callable[[np.ndarray], float] | None = None
    ) -> None:
        """second_look: how far the neutral covering moves a crop in a face embedding
        (identity.cover_shift), asked of the faces that score near the threshold."""
        self.settings = settings
        self.second_look = second_look
        s = CANON_SIZE
        self._prior = regions.lower_face_mask() > 0
        grow = max(3, s // 32)
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * grow + 1, 2 * grow + 1))
        # The covering may reach past the prior at the top and sides (masks differ in size),
        # but below the mouth the jaw line bounds it: under it lie the neck and clothes.
        self._search = cv2.dilate(regions.lower_face_mask(), kernel) > 0
        self._jaw_y = int(round(CANON_LANDMARKS[3:5, 1].mean())) + s // 16
        self._search[self._jaw_y :] = self._prior[self._jaw_y :]
        rows = np.nonzero(self._search.any(axis=1))[0]
        self._y0 = int(rows.min())  # the search works on rows y0..S only
        # Two samples of visible skin; the lower face counts as skin where it matches either,
        # so hair over the forehead or a high mask edge under the eyes cannot fool both.
        self._skin_samples = tuple(
            np.nonzero(m.reshape(-1) > 0)[0]
            for m in (regions.upper_skin_mask(), regions.mid_skin_mask())
        )
        zones = np.zeros(CANON_SHAPE, np.uint8)
        cv2.fillPoly(zones, list(_SCORE_ZONES), 255)
        self._zones = zones[self._y0 :] > 0
        # the same zones without the left or the right cheek (a turned face's far cheek)
        # and the near cheek alone (index: 0 when the nose points to the image's left)
        self._zones_turned: list[np.ndarray] = []
        self._near_cheek: list[np.ndarray] = []
        for far in (0, 1):
            z = np.zeros(CANON_SHAPE, np.uint8)
            cv2.fillPoly(z, [p for k, p in enumerate(_SCORE_ZONES) if k != far], 255)
            self._zones_turned.append(z[self._y0 :] > 0)
            z[:] = 0
            cv2.fillPoly(z, [_SCORE_ZONES[1 - far]], 255)
            self._near_cheek.append(z[self._y0 :] > 0)
        self._cheeks = []
        for poly in _SCORE_ZONES[:2]:
            z = np.zeros(CANON_SHAPE, np.uint8)
            cv2.fillPoly(z, [poly], 255)
            self._cheeks.append(z[self._y0 :] > 0)
        lips = np.zeros(CANON_SHAPE, np.uint8)
        mouth = CANON_LANDMARKS[3:5].mean(axis=0)
        half = float(CANON_LANDMARKS[4, 0] - CANON_LANDMARKS[3, 0]) / 2
        centre = (int(round(mouth[0])), int(round(mouth[1] + 0.05 * half)))
        cv2.ellipse(lips, centre, (int(0.7 * half), int(0.28 * half)), 0, 0, 360, 255, -1)
        self._lips = lips[self._y0 :] > 0
        # the skin around the lips (upper lip, mouth corners, top of the chin)
        ring = np.zeros(CANON_SHAPE, np.uint8)
        cv2.ellipse(ring, centre, (int(1.25 * half), int(0.8 * half)), 0, 0, 360, 255, -1)
        grown = cv2.dilate(lips, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
        self._lip_ring = (ring > 0)[self._y0 :] & ~(grown > 0)[self._y0 :]
        # the nostrils beside and under the nose tip, and the tip itself
        nx, ny = (int(round(v)) for v in CANON_LANDMARKS[2])
        nostrils = np.zeros(CANON_SHAPE, bool)
        nostrils[ny + 6 : ny + 14, nx - 16 : nx - 6] = True
        nostrils[ny + 6 : ny + 14, nx + 6 : nx + 16] = True
        tip = np.zeros(CANON_SHAPE, bool)
        tip[ny - 8 : ny + 2, nx - 8 : nx + 8] = True
        self._nostrils, self._tip = nostrils[self._y0 :], tip[self._y0 :]
        # every pixel the decision reads (the distances are computed there only)
        self._judged = np.logical_or.reduce(
            [self._zones, self._lips, self._lip_ring, self._nostrils, self._tip]
            + self._zones_turned
            + self._near_cheek
            + self._cheeks
        )
        self._judged_at = np.nonzero(self._judged.reshape(-1))[0] + self._y0 * CANON_SIZE
        # The search bound (all rows): the prior grown, reaching below the chin where masks do.
        self._bound_poly = regions.LOWER_FACE_POLYGON.astype(np.float64)
        self._bound_poly[:, 0] = 128.0 + (self._bound_poly[:, 0] - 128.0) * 1.12
        self._bound_poly[:, 1] += np.where(self._bound_poly[:, 1] > 200, _BELOW_CHIN, -2.0)
        self._half_width = float(np.abs(self._bound_poly[:, 0] - 128.0).max())
        full = np.zeros(CANON_SHAPE, np.uint8)
        cv2.fillPoly(full, [np.round(self._bound_poly).astype(np.int32)], 255)
        self._search_full = full[self._y0 :] > 0
        core = np.zeros(CANON_SHAPE, np.uint8)
        nose, mouth_c = CANON_LANDMARKS[2], CANON_LANDMARKS[3:5].mean(axis=0)
        mid = (nose + mouth_c) / 2
        cv2.ellipse(core, (int(mid[0]), int(mid[1]) + 4), (26, 18), 0, 0, 360, 255, -1)
        self._core = core[self._y0 :] > 0
        self._core_area = int(self._core.sum())
        self._mat_lo = np.array(
            [_MAT_LOG_L_SPREAD[0], _MAT_AB_SPREAD[0], _MAT_AB_SPREAD[0]], np.float32
        )
        self._mat_hi = np.array(
            [_MAT_LOG_L_SPREAD[1], _MAT_AB_SPREAD[1], _MAT_AB_SPREAD[1]], np.float32
        )
        r = _EXTEND_REACH
        self._extend_reach = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        r -= _EXTEND_RIM
        self._extend_inner = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        self._extend_y0 = int(round(CANON_LANDMARKS[2, 1])) + _EXTEND_BELOW_NOSE - self._y0
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._reach = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * _CUT_REACH + 1, 2 * _CUT_REACH + 1)
        )
        self._sure = cv2.getStructuringElement(
            cv2.MORPH_ELLIPSE, (2 * _CUT_SURE + 1, 2 * _CUT_SURE + 1)
        )
        # the cut works on rows from just above the search (the nose bridge's skin included)
        self._cut_y0 = max(self._y0 - 24, 0)
        self._cut_skin = (
            np.maximum(regions.upper_skin_mask(), regions.mid_skin_mask())[self._cut_y0 :] > 0
        )
        d = max(0, int(settings.dilate))
        self._dilate = (
            cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * d + 1, 2 * d + 1)) if d else None
        )

    def _bound(self, landmarks: np.ndarray | None) -> np.ndarray:
        """Where the covering may lie, rows y0..S: the grown lower-face prior, its far side
        narrowed by the head turn (a dark background beside a turned face is no mask)."""
        if landmarks is None:
            return self._search_full
        yaw = yaw_proxy(np.asarray(landmarks, np.float64)[:5])
        th = float(np.arctan(np.clip(yaw / _YAW_GAIN, -3.0, 3.0)))
        a = abs(th)
        r_c = _HEAD_R / np.cos(a)
        ce = np.cos(_EYE_ANGLE) * np.sin(a)
        w0 = _HEAD_R * np.sin(_SIDE_ANGLE)
        far = r_c * (min(np.sin(_SIDE_ANGLE + a), 1.0) - ce) / w0
        # a covering is draped over the nose: on the far side it reaches past the nose tip
        nose = abs(float(landmarks[2][0]) - 128.0) + _PAST_NOSE
        far = max(far, nose / self._half_width)
        near = min(r_c * (np.sin(_SIDE_ANGLE - a) + ce) / w0, _NEAR_MAX)
        if abs(far - 1.0) < 0.03 and abs(near - 1.0) < 0.03:
            return self._search_full
        poly = self._bound_poly.copy()
        dx = poly[:, 0] - 128.0
        toward = np.sign(dx) == np.sign(th)  # the side the nose points to is the far side
        poly[:, 0] = 128.0 + dx * np.where(toward, far, near)
        m = np.zeros(CANON_SHAPE, np.uint8)
        cv2.fillPoly(m, [np.round(poly).astype(np.int32)], 255)
        return m[self._y0 :] > 0

    def _mesh_bound(self, mesh: np.ndarray) -> np.ndarray:
        """Rows y0..S inside the face mesh's outline, grown (see _MESH_GROW, _MESH_BELOW)."""
        tip = mesh[NOSE_TIP, :2]
        oval = tip + (mesh[list(FACE_OVAL), :2] - tip) * _MESH_GROW
        oval[:, 1] += np.where(oval[:, 1] > tip[1], _MESH_BELOW, 0.0)
        m = np.zeros(CANON_SHAPE, np.uint8)
        cv2.fillPoly(m, [np.round(oval).astype(np.int32)], 255)
        return m[self._y0 :] > 0

    def skin_distance(self, face: np.ndarray) -> np.ndarray:
        """Robust colour distance to the face's visible skin, rows y0..S of the crop (float32)."""
        lab, models, _ = self._skin_lab(cv2.blur(face, (3, 3)))
        return _nearest(lab, models)

    def _skin_lab(
        self, blurred: np.ndarray
    ) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray]], list[int]]:
        """Rows y0..S of the crop (blurred 3x3) in Lab with log L, the visible skin's colour
        models (per skin sample trusted: its median and robust spread) and which samples those
        are."""
        lab = cv2.cvtColor(blurred, cv2.COLOR_BGR2LAB).astype(np.float32)
        lab[..., 0] = np.log(lab[..., 0] + _LOG_L_OFFSET)
        lo = np.array([_LOG_L_SPREAD[0], _AB_SPREAD[0], _AB_SPREAD[0]], np.float32)
        hi = np.array([_LOG_L_SPREAD[1], _AB_SPREAD[1], _AB_SPREAD[1]], np.float32)
        models = []
        for idx in self._skin_samples:
            skin = lab.reshape(-1, 3)[idx]
            med = np.median(skin, axis=0)
            spread = 1.4826 * np.median(np.abs(skin - med), axis=0)
            models.append((med, np.clip(spread, lo, hi)))
        kept = regions.trusted_skin([_plain_lab(m) for m, _ in models], bridge=1)
        return lab[self._y0 :], [models[k] for k in kept], kept

    @staticmethod
    def _samples_not_skin(
        lab: np.ndarray, models: list[tuple[np.ndarray, np.ndarray]], zones: np.ndarray
    ) -> bool:
        """Whether the skin samples are far darker than a lower face of skin's own colour
        (see _SAMPLES_DARKER): hair and sunglasses, not skin."""
        lit = max(_plain_lab(m)[0] for m, _ in models)
        lower_l, a, b = _plain_lab(np.median(lab[zones], axis=0))
        return (
            lower_l >= _SAMPLES_DARKER * max(lit, 1.0)
            and _SKIN_A[0] <= a <= _SKIN_A[1]
            and _SKIN_B[0] <= b <= _SKIN_B[1]
        )

    @staticmethod
    def _region_is_skin(
        lab: np.ndarray, models: list[tuple[np.ndarray, np.ndarray]], region: np.ndarray
    ) -> bool:
        """Whether the region found (bool, rows y0..S) is warm skin far lighter than skin
        samples without colour (see _REGION_LIGHTER): the face's skin, not a covering."""
        if not region.any():
            return False
        samples = [_plain_lab(m) for m, _ in models]
        if any(regions.coloured(a, b) for _, a, b in samples):
            return False
        light, a, b = _plain_lab(np.median(lab[region], axis=0))
        lit = max(s[0] for s in samples)
        return (
            _REGION_WARM_AB < a <= _SKIN_A[1]
            and _REGION_WARM_AB < b <= _SKIN_B[1]
            and (light - lit) * 100.0 / 255.0 > _REGION_LIGHTER
        )

    def _chroma_distance(
        self, blurred: np.ndarray, models: list[tuple[np.ndarray, np.ndarray]]
    ) -> np.ndarray:
        """Robust distance of each pixel's chromaticity (r, g over r+g+b) to the visible
        skin's (`models`, _chroma), rows y0..S: blind to shading, which scales all three
        channels alike. Only the pixels the decision reads are computed (NaN elsewhere)."""
        f = blurred.reshape(-1, 3)
        out = np.full(self._judged.shape, np.nan, np.float32)
        out[self._judged] = _nearest(_chromaticity(f[self._judged_at]), models)
        return out

    def _chroma(
        self, blurred: np.ndarray, samples: list[int]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """The skin samples' chromaticity models (median, robust spread) from the face
        blurred 3x3 (its pixels as (N, 3))."""
        models = []
        for k in samples:
            skin = _chromaticity(blurred[self._skin_samples[k]])
            med = np.median(skin, axis=0)
            spread = np.maximum(1.4826 * np.median(np.abs(skin - med), axis=0), _CHROMA_SPREAD)
            models.append((med, spread))
        return models

    def _lower_chroma(self, blurred: np.ndarray) -> np.ndarray:
        """Rows y0..S of the crop (blurred 3x3): each pixel's chromaticity, (H, W, 2)."""
        rows = blurred[self._y0 :]
        return _chromaticity(rows.reshape(-1, 3)).reshape(*rows.shape[:2], 2)

    def segment(
        self,
        face: np.ndarray,
        landmarks: np.ndarray | None = None,
        was_covered: bool | None = None,
        outline: bool = True,
        mesh: Callable[[], np.ndarray | None] | None = None,
        inside: np.ndarray | None = None,
    ) -> CoverMask:
        """Covered region of an aligned face; empty masks when it wears no covering (and
        with outline=False: the decision and its score only).

        landmarks: the face's 5 points in canonical space, when known: the head turn they
        show narrows the search on the far side, leaves the far cheek out of the presence
        evidence, and keeps a face seen nearly in profile from being judged at all. The face
        mesh's 468 points may follow them, or come from `mesh` (the painter's way: asked
        only once the face is judged covered, as the decision does not read them): the
        search then also stays inside the mesh's face outline.

        inside: where the crop shows the picture (bool, the crop's shape; None: everywhere),
        for a face the picture's edge cuts (see _SECOND_LOOK_IN_SIGHT).

        score in [0, 1): 0.5 is where the lower face starts to look clearly unlike the
        face's own skin; covered = score > settings.presence_threshold. was_covered, the same
        face's decision on its previous keyframe, moves that threshold by
        settings.presence_hysteresis toward keeping it: one borderline keyframe (a hand
        passing, a turn) does not switch a face between painted and untouched.
        """
        if face.shape != (*CANON_SHAPE, 3) or face.dtype != np.uint8:
            raise InputError(
                f"segment needs an aligned {CANON_SIZE}x{CANON_HEIGHT} BGR uint8 face crop "
                "(see lostface.restore.align.warp_to_canonical)"
            )
        zones, near, edge_cols, yaw = self._zones, None, _EDGE_COLS, 0.0
        if landmarks is not None:
            yaw = yaw_proxy(np.asarray(landmarks, np.float64)[:5])
            if abs(yaw) > _MAX_TURN:
                # near profile: the eyes almost coincide, so the crop shows no lower face to judge
                return _uncovered(0.0)
            if abs(yaw) > _TURNED:
                # the far cheek's zone shows the background or hair beside a turned face
                zones = self._zones_turned[0 if yaw < 0 else 1]
                near = self._near_cheek[0 if yaw < 0 else 1]
                # and the far side's columns cross the face's outline against what lies
                # beside it: only the near cheek's rim counts
                edge_cols = _EDGE_COLS_NEAR[0 if yaw < 0 else 1]
        # the decision reads few pixels (the zones, lips, nostrils): distances there only
        blurred = cv2.blur(face, (3, 3))
        lab, models, samples = self._skin_lab(blurred)
        if not was_covered and self._samples_not_skin(lab, models, zones):
            return _uncovered(0.0)
        dist = _nearest(lab, models, self._judged)
        chroma_a, skin_l = lab[..., 1], float(models[0][0][0])
        skin_chroma = self._chroma(blurred.reshape(-1, 3), samples)
        chroma = self._evidence(self._chroma_distance(blurred, skin_chroma), zones, near)
        light = lab[..., 0]
        nostrils = float(
            np.exp(np.median(light[self._tip])) - np.exp(np.median(light[self._nostrils]))
        )
        dim = not self._judgeable(face)
        if dim:
            # in the dark or a blur, edges tell shadow from covering no better than chance:
            # only a lower face far from the skin's colour counts (_DIM_EVIDENCE, below), and
            # only where there is light enough for colour (near black, chromaticity is noise;
            # darker still, where a covering's rim shows: _MIN_RIMMED_COVER_L)
            lower_l = float(np.exp(np.median(lab[..., 0][zones]))) - _LOG_L_OFFSET
            far = max(chroma, self._evidence(dist, zones, near))
            lit_enough = lower_l >= _MIN_COVER_L or (
                lower_l >= _MIN_RIMMED_COVER_L and self._edge_step(face, edge_cols) >= _DIM_RIM
            )
            evidence = far if lit_enough else 0.0
            lit = float(np.exp(skin_l)) - _LOG_L_OFFSET
            if lit >= _MIN_DARK_SKIN_L and lower_l <= _DARK_COVER * lit:
                evidence = max(evidence, _DIM_EVIDENCE)  # a dark covering
        else:
            evidence = self._evidence(dist, zones, near)
            if not (
                evidence < _SKIN_COLOURED and chroma < _SKIN_COLOURED and nostrils > _NOSTRILS_SHOW
            ):
                edge = self._edge_step(face, edge_cols)
                evidence += _EDGE_WEIGHT * float(np.clip(edge - _EDGE_FROM, 0.0, _EDGE_CAP))
            brighter = float(np.median(lab[..., 0][zones])) - skin_l
            if chroma < _SHADE_CHROMA and brighter > _SHADE_LOG_L:
                evidence = min(evidence, chroma)
        lip_red = float(np.median(chroma_a[self._lips]) - np.median(chroma_a[self._lip_ring]))
        evidence -= _LIP_WEIGHT * float(np.clip(lip_red - _LIP_MARGIN, 0.0, _LIP_CAP))
        evidence -= _NOSTRIL_WEIGHT * float(np.clip(nostrils - _NOSTRIL_MARGIN, 0.0, _NOSTRIL_CAP))
        evidence = max(evidence, 0.0)
        score = evidence / (evidence + _EVIDENCE_HALF)
        threshold = self.settings.presence_threshold
        if was_covered is not None:
            h = self.settings.presence_hysteresis
            threshold += -h if was_covered else h
        if dim and evidence < _DIM_EVIDENCE and not was_covered:
            # too little to judge by: left as it is (a face already judged covered keeps
            # the usual threshold, with its hysteresis, as its light or focus drops)
            return _uncovered(0.0)
        covered = score > threshold
        if (
            self.second_look is not None
            and abs(score - threshold) <= _SECOND_LOOK_BAND
            and not (covered and was_covered)  # a face painted already stays painted
            and (covered or _in_sight(inside) >= _SECOND_LOOK_IN_SIGHT)
        ):
            shift = self.second_look(face)
            covered = shift < _SECOND_LOOK_COVERED if not covered else shift <= _SECOND_LOOK_OPEN
        if not covered:
            return _uncovered(score)
        if not outline:
            empty = _uncovered(score)
            return CoverMask(True, empty.alpha, empty.hard, score)
        if mesh is not None and landmarks is not None and len(landmarks) < 5 + MESH_POINTS:
            dense = mesh()
            if dense is not None:
                landmarks = np.vstack([np.asarray(landmarks)[:5], np.asarray(dense)[:, :2]])
        bound = self._bound(landmarks)
        if landmarks is not None and len(landmarks) >= 5 + MESH_POINTS:
            bound = bound & self._mesh_bound(np.asarray(landmarks, np.float64)[5:])
        skin_z = _nearest(lab, models)
        nonskin = skin_z > _NONSKIN_Z
        hard = self._shape(nonskin, lab, bound, skin_z if abs(yaw) < _PALE_TURN else None)
        hard = self._enclosed(hard, nonskin, lab, bound)
        lower = self._lower_chroma(blurred)
        unlike = _nearest(lower, skin_chroma) > _PRINT_CHROMA
        grown = self._printed(hard, nonskin & unlike, bound)
        # a covering of two colours: the growth added more than _PRINT_SHARE of the shape (else
        # the covering is what its material gave)
        two_colours = int((grown & ~hard).sum()) > _PRINT_SHARE * int(hard.sum())
        if self.settings.refine:
            cut = self._cut(face, self._shaded(lower, hard, nonskin, lab, bound), bound)
            if two_colours:
                cut |= self._cut(face, self._shaded(lower, grown, nonskin, lab, bound), bound)
            hard = cut
        elif two_colours:
            hard = grown
        if abs(yaw) > _TURNED:
            hard = self._extend(hard, nonskin, lab)
        if not dim and int((hard[self._y0 :] & self._core).sum()) < _CORE_HELD * self._core_area:
            # what was found lies beside where every covering lies: it is something else
            return _uncovered(score)
        if self._region_is_skin(lab, models, hard[self._y0 :]):
            return _uncovered(score)
        return CoverMask(covered=True, alpha=self._feather(hard), hard=hard, score=score)

    def _edge_step(self, face: np.ndarray, columns: tuple[int, ...] = _EDGE_COLS) -> float:
        """How sharply lightness steps across the cheeks (median over columns of each
        column's largest step), over the forehead's lightness: a covering's rim."""
        lab_l = cv2.cvtColor(face, cv2.COLOR_BGR2LAB)[..., 0].astype(np.float32)
        light = np.asarray(cv2.GaussianBlur(lab_l, (0, 0), 1.5), np.float32)
        forehead = float(np.median(light[_FOREHEAD])) + _LOG_L_OFFSET
        cols = light[:, np.asarray(columns)]
        c = np.vstack([np.zeros((1, cols.shape[1]), np.float32), np.cumsum(cols, axis=0)])
        y = np.arange(*_EDGE_ROWS)
        k = _EDGE_SPAN
        steps = (c[y + k + 1] - c[y + 1]) - (c[y - 1] - c[y - k - 1])
        return float(np.median(np.abs(steps).max(axis=0))) / k / forehead

    def _evidence(self, dist: np.ndarray, zones: np.ndarray, near: np.ndarray | None) -> float:
        """How unlike the visible skin the score zones look (median distance)."""
        evidence = float(np.median(dist[zones]))
        if near is not None:
            # The 5 points a detector finds on a turned, masked face are rough, and the chin
            # zone can land beside the chin; the near cheek alone is evidence enough there.
            # It must also agree: a covering hides the near cheek, while the chin zone of an
            # open face in profile shows the beard, the neck's shadow or the background.
            cheek = float(np.median(dist[near]))
            return min(max(evidence, cheek), _CHEEK_AGREEMENT * cheek)
        # A covering hides both cheeks beside the nose; a microphone, a hand, a cup or a
        # moustache in front of the mouth leaves at least one of them showing skin.
        cheeks = min(float(np.median(dist[z])) for z in self._cheeks)
        return min(evidence, _CHEEK_AGREEMENT * cheeks)

    def _judgeable(self, face: np.ndarray) -> bool:
        """Whether the visible upper face shows enough to judge a covering by: some light,
        and the fine structure of brows and eyes, measured at the resolution of a small
        face (a dark or defocused face, or a detection that is no face, shows neither, and
        what its lower face wears is anyone's guess)."""
        q = _DETAIL_SCALE
        small = cv2.resize(face, (CANON_SIZE // q, CANON_HEIGHT // q), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2LAB)[..., 0].astype(np.float32)
        rows = slice(_UPPER_ROWS[0] // q, _UPPER_ROWS[1] // q)
        cols = slice(_UPPER_COLS[0] // q, _UPPER_COLS[1] // q)
        band = grey[rows, cols]
        fine = np.abs(band - cv2.GaussianBlur(grey, (0, 0), 1.0)[rows, cols])
        return bool(np.median(band) >= _MIN_SKIN_L and fine.mean() >= _MIN_DETAIL)

    def _shape(
        self,
        nonskin: np.ndarray,
        lab: np.ndarray,
        bound: np.ndarray,
        skin_z: np.ndarray | None = None,
    ) -> np.ndarray:
        """One solid covering: non-skin pixels that look like the material found over the
        nose tip and mouth, connected to it, inside the geometric bound.

        A covering close to the skin's own colour (white or grey on pale skin, a washed-out
        or black-and-white photo) reads as skin, and its shape then misses the zone over the
        nose tip and mouth. Given the skin distances (skin_z; None: not this way), where the
        shape holds less than _PALE_CORE of that zone and the zone is no skin (_PALE_Z), the
        pixels nearer the material sampled over the whole zone than the skin (each in its
        own robust units) join the non-skin ones."""
        cand = nonskin & bound
        z = self._material(lab, cand)
        if z is not None:
            cand &= z < _MAT_Z
        hard = self._solid(cand, bound)
        core = self._core & bound
        if skin_z is None or int((hard[self._y0 :] & core).sum()) >= _PALE_CORE * max(
            int(core.sum()), 1
        ):
            return hard
        if not core.any() or float(np.median(skin_z[core])) < _PALE_Z:
            return hard
        pale = self._material(lab, core)
        if pale is None:
            return hard
        return self._solid(cand | (bound & (pale < _MAT_Z) & (pale < skin_z)), bound)

    def _shaded(
        self,
        chroma: np.ndarray,
        hard: np.ndarray,
        nonskin: np.ndarray,
        lab: np.ndarray,
        bound: np.ndarray,
    ) -> np.ndarray:
        """The shape grown over the parts of the covering that its light leaves darker or
        lighter than the material sampled over the nose and mouth (see _SHADED_LOG_L); chroma:
        the chromaticity of rows y0..S (_lower_chroma)."""
        h = hard[self._y0 :]
        core = h & self._core
        if int(core.sum()) < 40:
            return hard
        light = np.ascontiguousarray(lab[..., 0])
        zz = []
        for values, lo, hi in (
            (light[..., None], _SHADED_LOG_L, _MAT_LOG_L_SPREAD[1]),
            (chroma, *_SHADED_CHROMA),
        ):
            med = np.median(values[core], axis=0)
            spread = np.clip(1.4826 * np.median(np.abs(values[core] - med), axis=0), lo, hi)
            zz.append(regions.squared_z(values, med, spread))
        z = np.sqrt(zz[0] + zz[1])
        # the step is read on lightness smoothed over the weave (_SHADED_WEAVE): a woven,
        # dotted or meshed covering steps from pixel to pixel as much as its edge does
        broad = cv2.GaussianBlur(light, (0, 0), _SHADED_WEAVE)
        gx = cv2.Sobel(broad, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(broad, cv2.CV_32F, 0, 1, ksize=3)
        smooth = np.hypot(gx, gy) < 8.0 * _SHADED_STEP  # the 3x3 Sobel weighs a slope 8 times
        cand = (nonskin & bound & (z < _MAT_Z) & smooth) | h
        n, labels = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
        joined = np.bincount(labels[h], minlength=n) > 0
        joined[0] = False
        grown = joined[labels]
        if not (grown & ~h).any():
            return hard
        grown = cv2.morphologyEx(grown.astype(np.uint8), cv2.MORPH_CLOSE, self._close) > 0
        out = hard.copy()
        out[self._y0 :] = grown & bound
        return out

    def _solid(self, cand: np.ndarray, bound: np.ndarray) -> np.ndarray:
        """The convex hull of the candidates (rows y0..S) that reach the material zone, after
        closing and opening, inside the bound; all rows of the crop."""
        m: np.ndarray = cand.astype(np.uint8) * 255
        m = cv2.morphologyEx(m, cv2.MORPH_CLOSE, self._close)
        m = cv2.morphologyEx(m, cv2.MORPH_OPEN, self._open)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=8)
        hard = np.zeros(CANON_SHAPE, bool)
        if n <= 1:
            return hard
        # Keep the components that reach the material zone (the covering), drop stray bits.
        hit = np.bincount(labels[self._core | self._zones], minlength=n)
        keep = np.nonzero(hit[1:] > 0)[0] + 1
        if len(keep) == 0:
            keep = np.array([1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))])
        pts = cv2.findNonZero(np.isin(labels, keep).astype(np.uint8))
        hull = cv2.convexHull(pts)
        filled = np.zeros((CANON_HEIGHT - self._y0, CANON_SIZE), np.uint8)
        cv2.fillConvexPoly(filled, hull, 255)
        hard[self._y0 :] = (filled > 0) & bound
        return hard

    def _material(self, lab: np.ndarray, where: np.ndarray) -> np.ndarray | None:
        """Robust z distance (rows y0..S) to the colour of the covering at `where` (the
        material zone over the nose tip and mouth), or None when too little of it shows."""
        return self._material_of(lab, where & self._core)

    def _material_of(self, lab: np.ndarray, sample: np.ndarray) -> np.ndarray | None:
        """Robust z distance (rows y0..S) to the colour of the `sample` pixels, or None when
        fewer than 40."""
        if int(sample.sum()) < 40:
            return None
        mat = lab[sample]
        med = np.median(mat, axis=0)
        spread = 1.4826 * np.median(np.abs(mat - med), axis=0)
        return np.sqrt(regions.squared_z(lab, med, np.clip(spread, self._mat_lo, self._mat_hi)))

    def _enclosed(
        self, hard: np.ndarray, nonskin: np.ndarray, lab: np.ndarray, bound: np.ndarray
    ) -> np.ndarray:
        """The shape grown over the covering around it, where it is a valve or a print inside
        one (see _ENCLOSED_SMALL)."""
        h = hard[self._y0 :]
        area = int(h.sum())
        if area < 40 or area > _ENCLOSED_SMALL * int(bound.sum()):
            return hard
        rows = np.arange(h.shape[0])[:, None]
        top = np.argmax(h, axis=0)[None, :]  # each column's first row of the shape
        above = (rows < top) & (rows >= top - _ENCLOSED_ROWS) & np.any(h, axis=0)[None, :] & bound
        if int(above.sum()) < 40 or float(nonskin[above].mean()) < _ENCLOSED_ABOVE:
            return hard
        z = self._material_of(lab, above & nonskin)
        if z is None:
            return hard
        return self._solid((nonskin & bound & (z < _MAT_Z)) | h, bound)

    def _printed(self, hard: np.ndarray, other: np.ndarray, bound: np.ndarray) -> np.ndarray:
        """The shape grown over the covering's other colours: the `other` pixels (rows y0..S,
        no skin in colour) that touch it (see _PRINT_CHROMA)."""
        h = hard[self._y0 :]
        cols = np.nonzero(h.any(axis=0))[0]
        if not len(cols):
            return hard
        top = np.argmax(h[:, cols], axis=0)  # per column of the shape
        lowest = h.shape[0] - 1 - np.argmax(h[::-1, cols], axis=0)
        beside = np.abs(np.arange(h.shape[1])[:, None] - cols[None, :]).argmin(axis=1)
        rows = np.arange(h.shape[0])[:, None]
        within = (rows >= top[beside][None, :]) & (rows <= lowest[beside][None, :] + _PRINT_BELOW)
        cand = (other & bound & within) | h
        n, labels = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
        joined = np.bincount(labels[h], minlength=n) > 0
        joined[0] = False
        grown = cv2.morphologyEx(joined[labels].astype(np.uint8), cv2.MORPH_CLOSE, self._close)
        out = hard.copy()
        out[self._y0 :] = ((grown > 0) & bound) | h
        return out

    def _extend(self, hard: np.ndarray, nonskin: np.ndarray, lab: np.ndarray) -> np.ndarray:
        """The covering of a turned face grown to its own edge where that edge lies beyond
        the region (see _EXTEND_REACH)."""
        h = hard[self._y0 :]
        z = self._material(lab, h)
        if z is None:
            return hard
        h8 = h.astype(np.uint8)
        reach = cv2.dilate(h8, self._extend_reach) > 0
        rim = reach & ~(cv2.dilate(h8, self._extend_inner) > 0)
        rim[:, :2] = rim[:, -2:] = rim[-2:] = True  # the crop's edge: what lies past it is unknown
        cand = reach & ~h & nonskin & (z < _EXTEND_Z)
        cand[: max(self._extend_y0, 0)] = False
        n, labels = cv2.connectedComponents(cand.astype(np.uint8), connectivity=8)
        if n <= 1:
            return hard
        touching = cv2.dilate(h8, np.ones((3, 3), np.uint8)) > 0
        beside = np.bincount(labels[touching & cand], minlength=n) > 0
        running = np.bincount(labels[rim & cand], minlength=n) > 0
        keep = np.nonzero(beside & ~running)[0]
        keep = keep[keep > 0]
        if not len(keep):
            return hard
        grown = (np.isin(labels, keep) | h).astype(np.uint8)
        out = hard.copy()
        out[self._y0 :] = cv2.morphologyEx(grown, cv2.MORPH_CLOSE, self._close) > 0
        return out

    def _cut(self, face: np.ndarray, hard: np.ndarray, bound: np.ndarray) -> np.ndarray:
        """Move the covering's outline onto its real edge with GrabCut (cv2.grabCut).

        The colour shape is a convex hull clipped to a geometric bound, so it overshoots
        where material-coloured background or clothing touches the covering and stops short
        where the covering hangs past the bound. Colour models of covering and surroundings
        are learnt from this very face: the shape's interior is certain covering, the visible
        skin and everything beyond the bound (grown by a few pixels) certain not. The result
        is one solid piece (a covering has no holes, and a print or a fold's shadow does not
        bite into it); a cut that loses half of the shape is distrusted and the shape kept."""
        area = int(hard.sum())
        if area < 200:
            return hard
        y0, q = self._cut_y0, _CUT_SCALE
        zone = np.zeros(CANON_SHAPE, np.uint8)
        zone[self._y0 :] = bound
        zone = np.asarray(cv2.dilate(zone, self._reach), np.uint8)
        below = self._jaw_y  # under the jaw line the zone also reaches _CUT_BELOW px lower
        zone[below + _CUT_BELOW :] |= zone[below : CANON_HEIGHT - _CUT_BELOW]
        zone = zone[y0:]
        shape = hard[y0:].astype(np.uint8)
        sure = cv2.erode(shape, self._sure)
        seeds = np.full(shape.shape, cv2.GC_BGD, np.uint8)
        seeds[zone > 0] = cv2.GC_PR_BGD
        seeds[shape > 0] = cv2.GC_PR_FGD
        seeds[sure > 0] = cv2.GC_FGD
        seeds[self._cut_skin] = cv2.GC_BGD
        h, w = shape.shape
        small = (w // q, h // q)
        img = cv2.resize(face[y0:], small, interpolation=cv2.INTER_AREA)
        marks = cv2.resize(seeds, small, interpolation=cv2.INTER_NEAREST)
        if not (marks == cv2.GC_FGD).any() or not (marks == cv2.GC_BGD).any():
            return hard
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        cv2.setRNGSeed(0)  # its colour models start from k-means: same face, same cut
        try:
            cv2.grabCut(img, marks, (0, 0, 0, 0), bgd, fgd, _CUT_ITERATIONS, cv2.GC_INIT_WITH_MASK)
        except cv2.error:
            return hard
        fg = ((marks == cv2.GC_FGD) | (marks == cv2.GC_PR_FGD)).astype(np.uint8) * 255
        fg = cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR) > 127
        n, labels = cv2.connectedComponents(fg.astype(np.uint8), connectivity=8)
        if n <= 1:
            return hard
        # the pieces that hold the certain covering (drops background that merely looks alike)
        hit = np.bincount(labels[(sure if sure.any() else shape) > 0], minlength=n)
        keep = np.nonzero(hit[1:] > 0)[0] + 1
        piece = np.isin(labels, keep).astype(np.uint8)
        pts = cv2.findNonZero(piece)
        if pts is None:
            return hard
        # holes closed; bites taken out of the colour shape (a print, a fold's shadow) filled
        # back by the piece's convex hull, which adds nothing beyond the colour shape itself:
        # a leak into hair or clothes of the covering's colour is not blown up to a hull
        filled = np.zeros((h, w), np.uint8)
        contours, _ = cv2.findContours(piece, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(filled, contours, -1, 1, -1)
        hull = np.zeros((h, w), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(pts), 1)
        filled |= hull & shape
        out = np.zeros(CANON_SHAPE, bool)
        out[y0:] = (filled > 0) & (zone > 0)
        if int(out.sum()) < area // 2:
            return hard
        return out

    def _feather(self, hard: np.ndarray) -> np.ndarray:
        return regions.feather(hard, self.settings.dilate, self.settings.feather_radius)
