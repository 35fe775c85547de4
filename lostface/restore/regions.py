"""Face regions in canonical space (see restore.align): where a mask sits, where skin shows.

All masks are CANON_SHAPE uint8 {0,255}, built once and cached.
"""

from __future__ import annotations

from functools import cache

import cv2
import numpy as np

from lostface.restore.align import CANON_SHAPE

# Lower face from the nose bridge to below the chin, cheek to cheek: where a face mask sits.
# fmt: off
LOWER_FACE_POLYGON = np.array(
    [[56, 128], [92, 119], [128, 115], [164, 119], [200, 128], [206, 170], [194, 212],
     [166, 238], [128, 249], [90, 238], [62, 212], [50, 170]],
    dtype=np.int32,
)
# fmt: on

# Skin that a face mask leaves visible: the forehead band above the eyebrows and the
# bridge between the eyes.
UPPER_SKIN_POLYGON = np.array(
    [[100, 52], [156, 52], [162, 78], [140, 84], [136, 104], [120, 104], [116, 84], [94, 78]],
    dtype=np.int32,
)

# Skin of the nose bridge between the eyes: above any face mask and below any fringe of
# hair or cap brim, so it stays visible when the forehead does not.
MID_SKIN_POLYGONS = (np.array([[118, 86], [138, 86], [138, 108], [118, 108]], dtype=np.int32),)


def _poly_mask(*polys: np.ndarray) -> np.ndarray:
    m = np.zeros(CANON_SHAPE, np.uint8)
    cv2.fillPoly(m, list(polys), 255)
    return m


@cache
def lower_face_mask() -> np.ndarray:
    return _poly_mask(LOWER_FACE_POLYGON)


@cache
def upper_skin_mask() -> np.ndarray:
    return _poly_mask(UPPER_SKIN_POLYGON)


@cache
def mid_skin_mask() -> np.ndarray:
    return _poly_mask(*MID_SKIN_POLYGONS)


@cache
def face_oval_mask() -> np.ndarray:
    """Where face skin can lie around a mask: inside the face's oval, not the hair, the
    background beside the cheeks or the collar."""
    s = CANON_SHAPE[1]
    m = np.zeros(CANON_SHAPE, np.uint8)
    cv2.ellipse(m, (s // 2, int(0.56 * s)), (int(0.37 * s), int(0.42 * s)), 0, 0, 360, 255, -1)
    return m


# A skin sample whose Lab a and b lie within _GREY of neutral (8-bit units), lighter than
# another sample whose a or b reach _COLOURED, is no skin: a white cap or hood, grey hair, a
# white visor, a grey covering drawn up over the nose bridge. Such materials are rarely quite
# neutral (a bluish surgical cap measures a = b = -6, a grey respirator b = 5). Widening this
# from 4 to 7 changed no open photo's score in bench/harm.py and won three masked photos
# (bench/README.md, Do no harm).
_GREY = 7.0
_COLOURED = 8.0
# A grey nose bridge's sample under this share of a coloured sample's lightness (Lab L) is
# a dark covering drawn up over it, or sunglasses' bridge (trusted_skin). Skin in a shadow
# that leaves it 0.7 as light keeps about 0.4 of its luminance and most of its colour; a black
# covering over dark skin measures 0.6-0.65. No open photo's score in bench/harm.py moved
# with it (from 0.5 to 0.85); one masked photo more was judged covered and two were outlined
# and filled anew (bench/README.md, "A dark covering drawn up over the nose bridge").
_BRIDGE_DARK = 0.7


def coloured(a: float, b: float) -> bool:
    """Whether a skin sample's Lab a and b (offsets from neutral) show colour (_COLOURED)."""
    return max(abs(a), abs(b)) >= _COLOURED


def trusted_skin(samples: list[tuple[float, float, float]], bridge: int | None = None) -> list[int]:
    """Which visible-skin samples (upper_skin_mask, mid_skin_mask) to trust, from each one's
    median (Lab lightness on a linear scale from black, Lab a and b as offsets from neutral):
    all, unless one is grey and lighter than another that has colour, a white cap, hood or
    grey hair over the forehead rather than skin. (A photo in black and white keeps both; so
    does a face whose forehead's grey sample is darker, hair or a dark cap: taken for skin it
    keeps beards and shadows from looking like a covering.)

    bridge: which of the samples lies on the nose bridge (mid_skin_mask), if any. That one is
    no skin either where it is grey and darker than _BRIDGE_DARK of a sample with colour: a
    dark covering drawn up over the nose bridge (or sunglasses' bridge). Taken for skin, the
    covering's own colour counts as the face's."""
    colour = [max(abs(a), abs(b)) for _, a, b in samples]
    lights = [light for light, a, b in samples if coloured(a, b)]
    if not lights:
        return list(range(len(samples)))
    kept = [
        k
        for k, (light, _, _) in enumerate(samples)
        if not (colour[k] < _GREY and light > max(lights))
        and not (k == bridge and colour[k] < _GREY and light < _BRIDGE_DARK * max(lights))
    ]
    return kept or list(range(len(samples)))


def feather(hard: np.ndarray, dilate: int, radius: int) -> np.ndarray:
    """Soft alpha of a covered region: 1 on `hard` and `dilate` pixels beyond it, then a smooth
    ramp to 0 over `radius` pixels, all outside the covering, so no rim of the material stays
    half visible (mask.dilate, mask.feather_radius)."""
    d = max(0, int(dilate))
    r = max(0, int(radius))
    if r == 0 and d == 0:
        return hard.astype(np.float32)
    outside = (~hard).astype(np.uint8)
    dist = cv2.distanceTransform(outside, cv2.DIST_L2, 3)
    if r == 0:
        return (dist <= d).astype(np.float32)
    x = np.clip(1.0 - (dist - d) / r, 0.0, 1.0)
    return (x * x * (3.0 - 2.0 * x)).astype(np.float32)


def squared_z(values: np.ndarray, centre: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """Per pixel of values (..., C), the squared distance to `centre` in `spread` units,
    summed over the C channels one plane at a time: the same sum as
    `(((values - centre) / spread) ** 2).sum(-1)`, many times faster for a few channels
    (numpy reduces a short last axis slowly)."""
    total = None
    for k in range(values.shape[-1]):
        z = (values[..., k] - centre[k]) / spread[k]
        z *= z
        total = z if total is None else np.add(total, z, out=total)
    assert total is not None
    return total
