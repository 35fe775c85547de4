"""Synthetic face masks drawn on real unmasked faces: ground truth for segmentation and
restoration tests (the original pixels under the mask are known).

The mask is designed once in canonical face space (restore.align) and carried onto the
photo by a full affine fit of the canonical landmarks to the face's 5 landmarks, so it
follows the face's scale, roll, eye-mouth proportion and part of its yaw. It is then lit
by the face's own blurred luminance so it reads as cloth on that face, not a flat sticker.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lostface.errors import InputError
from lostface.restore.align import CANON_LANDMARKS

KINDS: tuple[str, ...] = ("surgical", "cloth", "n95")
VARIANTS: tuple[str, ...] = ("light_blue", "white", "black", "pattern", "weave")

# Variants drawn at random for each kind when none is asked for.
_KIND_VARIANTS: dict[str, tuple[str, ...]] = {
    "surgical": ("light_blue", "light_blue", "white", "black"),
    "cloth": ("black", "pattern", "weave", "light_blue"),
    "n95": ("white", "white", "light_blue", "black"),
}

# Outlines in canonical space (256 px; eyes near y=100, nose tip y=140, mouth y=181).
# Each covers from the nose bridge down past the chin, cheek to cheek.
# fmt: off
_OUTLINES: dict[str, np.ndarray] = {
    "surgical": np.array(
        [[50, 132], [90, 124], [128, 116], [166, 124], [206, 132], [210, 172], [200, 212],
         [170, 240], [128, 256], [86, 240], [56, 212], [46, 172]],
        dtype=np.float64,
    ),
    "cloth": np.array(
        [[56, 136], [82, 126], [110, 117], [128, 111], [146, 117], [174, 126], [200, 136],
         [206, 170], [196, 208], [174, 238], [142, 255], [114, 255], [82, 238], [60, 208],
         [50, 170]],
        dtype=np.float64,
    ),
    "n95": np.array(
        [[60, 140], [78, 128], [104, 119], [128, 113], [152, 119], [178, 128], [196, 140],
         [204, 172], [196, 206], [178, 234], [152, 251], [128, 255], [104, 251], [78, 234],
         [60, 206], [52, 172]],
        dtype=np.float64,
    ),
}
# fmt: on

_COLOURS_BGR: dict[str, tuple[float, float, float]] = {
    "light_blue": (228.0, 204.0, 150.0),
    "white": (236.0, 236.0, 234.0),
    "black": (38.0, 36.0, 36.0),
}
# Cloth colours far from any skin tone (blues, greys, greens), BGR.
_CLOTH_PALETTE = np.array(
    [
        [110, 50, 30],
        [70, 70, 70],
        [150, 150, 150],
        [60, 110, 60],
        [120, 110, 40],
        [140, 90, 50],
        [40, 40, 110],
        [200, 190, 180],
        [90, 40, 80],
        [30, 120, 160],
    ],
    dtype=np.float64,
)


@dataclass(slots=True)
class SyntheticMask:
    """A photo with a drawn mask. image: new BGR uint8 array; covered: (H,W) bool truth."""

    image: np.ndarray
    covered: np.ndarray
    kind: str = "surgical"
    variant: str = "light_blue"


def _affine_canon_to_image(landmarks: np.ndarray) -> np.ndarray:
    """Least-squares full affine canonical -> image from the 5 landmarks."""
    src = np.hstack([CANON_LANDMARKS.astype(np.float64), np.ones((5, 1))])
    sol, *_ = np.linalg.lstsq(src, landmarks.astype(np.float64), rcond=None)
    return sol.T  # 2x3


def _canvas_texture(kind: str, variant: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """Mask material (colour, pattern, pleats, seams) in canonical space, float32 BGR."""
    r = size / 256.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / r  # canonical coordinates
    if variant in _COLOURS_BGR:
        base = np.array(_COLOURS_BGR[variant]) * rng.uniform(0.93, 1.05)
        tex = np.broadcast_to(base.astype(np.float32), (size, size, 3)).copy()
    elif variant == "pattern":
        c1, c2 = _CLOTH_PALETTE[rng.choice(len(_CLOTH_PALETTE), 2, replace=False)]
        style = int(rng.integers(3))
        period = float(rng.uniform(9, 18))
        if style == 0:  # diagonal stripes
            sel = np.sin((xx + yy) * (2 * np.pi / period)) > 0.2
        elif style == 1:  # checks
            sel = (np.floor(xx / period) + np.floor(yy / period)) % 2 == 0
        else:  # dots
            sel = (np.hypot((xx % period) - period / 2, (yy % period) - period / 2)) < period * 0.28
        tex = np.where(sel[..., None], c1, c2).astype(np.float32)
    elif variant == "weave":
        base = _CLOTH_PALETTE[rng.integers(len(_CLOTH_PALETTE))]
        period = float(rng.uniform(2.5, 4.0))
        weave = np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period)
        tex = (base[None, None, :] * (1 + 0.08 * weave[..., None])).astype(np.float32)
    else:
        raise InputError(f"unknown mask variant {variant!r}: use one of {', '.join(VARIANTS)}")

    # Fabric grain: fine noise, scaled down for dark colours so black stays black.
    grain: np.ndarray = rng.normal(0.0, 1.0, (size, size)).astype(np.float32)
    grain = cv2.GaussianBlur(grain, (0, 0), 0.6 * r)
    tex *= (1.0 + 0.04 * grain)[..., None]

    shade = np.ones((size, size), np.float32)
    if kind == "surgical":
        # Three horizontal pleats: a dark crease line under a slightly brighter fold.
        for y0 in (158.0, 182.0, 206.0):
            y0 += float(rng.uniform(-3, 3))
            d = yy - (y0 + 0.0006 * (xx - 128) ** 2)
            shade -= 0.22 * np.exp(-((d / 1.6) ** 2))
            shade += 0.07 * np.exp(-(((d + 5.0) / 4.0) ** 2))
    elif kind == "cloth":
        d = np.abs(xx - 128.0)  # centre seam
        shade -= 0.18 * np.exp(-((d / 1.3) ** 2))
    elif kind == "n95":
        # Moulded cup: a vertical ridge (lit on one side) and a nose clip strip on top.
        d = xx - 128.0
        shade += 0.10 * np.exp(-(((d + 3) / 4.0) ** 2)) - 0.12 * np.exp(-(((d - 3) / 4.0) ** 2))
        cup = np.clip(1 - ((xx - 128) / 80) ** 2 - ((yy - 182) / 72) ** 2, 0, 1)
        shade *= 0.82 + 0.25 * np.sqrt(cup)
        clip = (np.abs(xx - 128) < 22) & (np.abs(yy - (122 + 0.004 * (xx - 128) ** 2)) < 3)
        shade[clip] *= 0.8
    # Dome of the face under the mask: the sides turn away from the light.
    shade *= 1.0 - 0.22 * np.clip(np.abs(xx - 128.0) / 80.0, 0, 1) ** 2
    return tex * shade[..., None]


def draw_mask(
    image_bgr: np.ndarray,
    landmarks: np.ndarray,
    kind: str = "surgical",
    rng: np.random.Generator | int | None = None,
    variant: str | None = None,
    ear_loops: bool = False,
) -> SyntheticMask:
    """Draw a realistic face mask of `kind` on the face given by its 5 landmarks.

    rng: a Generator, an int seed, or None (seed 0): the same seed draws the same mask.
    variant: colour/texture (see VARIANTS), or None to draw one that suits the kind.
    ear_loops: also draw the elastic loops (in the material's colour, part of `covered`);
    off by default, since no restorer repaints them outside the mask.
    The input image is never modified. `covered` holds every pixel the material touches
    (anti-aliased rim included); only a faint contact shadow falls outside it.
    """
    if kind not in KINDS:
        raise InputError(f"unknown mask kind {kind!r}: use one of {', '.join(KINDS)}")
    if variant is not None and variant not in VARIANTS:
        raise InputError(f"unknown mask variant {variant!r}: use one of {', '.join(VARIANTS)}")
    img = np.asarray(image_bgr)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError("draw_mask needs a BGR uint8 image of shape (H, W, 3)")
    lm = np.asarray(landmarks, np.float64).reshape(-1, 2)
    if len(lm) < 5 or not np.isfinite(lm[:5]).all():
        raise InputError("draw_mask needs the face's 5 landmarks (eyes, nose tip, mouth corners)")
    lm = lm[:5]
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng or 0)
    if variant is None:
        options = _KIND_VARIANTS[kind]
        variant = options[int(gen.integers(len(options)))]

    h, w = img.shape[:2]
    a = _affine_canon_to_image(lm)
    scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    eye_dist = float(np.hypot(*(lm[1] - lm[0])))

    # Outline, slightly jittered so masks of one kind are not all identical.
    outline = _OUTLINES[kind].copy()
    outline[:, 1] += gen.uniform(-3, 3)
    outline[:, 0] = 128 + (outline[:, 0] - 128) * gen.uniform(0.97, 1.03)
    poly = outline @ a[:, :2].T + a[:, 2]
    x0, y0 = np.floor(poly.min(0)).astype(int) - 4
    x1, y1 = np.ceil(poly.max(0)).astype(int) + 4
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    covered = np.zeros((h, w), bool)
    if x1 <= x0 or y1 <= y0:
        return SyntheticMask(img.copy(), covered, kind, variant)
    rw, rh = x1 - x0, y1 - y0
    roi_poly = poly - [x0, y0]
    sub = 4  # sub-pixel precision for an anti-aliased edge
    hard = np.zeros((rh, rw), np.uint8)
    cv2.fillPoly(hard, [np.round(roi_poly * sub).astype(np.int32)], 255, cv2.LINE_AA, shift=2)
    covered[y0:y1, x0:x1] = hard > 0
    alpha = hard.astype(np.float32) / 255.0

    # Material rendered in canonical space at about the face's own resolution, then warped.
    res = int(np.clip(np.ceil(scale), 1, 4))
    tex = _canvas_texture(kind, variant, 256 * res, gen)
    a_roi = a.copy()
    a_roi[:, 2] -= [x0, y0]
    a_roi[:, :2] /= res
    material: np.ndarray = cv2.warpAffine(
        tex, a_roi, (rw, rh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )

    # Light it with the face's own lighting: blurred luminance under the mask.
    roi = img[y0:y1, x0:x1].astype(np.float32)
    lum = cv2.cvtColor(img[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY).astype(np.float32)
    sigma = max(0.12 * eye_dist, 1.0)
    lum_b = cv2.GaussianBlur(lum, (0, 0), sigma)
    inside = covered[y0:y1, x0:x1]
    ref = float(np.median(lum_b[inside])) if inside.any() else float(lum_b.mean())
    ratio = np.clip(lum_b / max(ref, 1.0), 0.45, 1.6) ** 0.7
    exposure = float(np.clip(ref / 140.0, 0.3, 1.35)) ** 0.8
    material *= (ratio * exposure)[..., None]

    # Soft shadow under the top edge, where the mask lifts off the nose and cheeks.
    top = np.zeros((rh, rw), np.uint8)
    n_top = {"surgical": 5, "cloth": 7, "n95": 7}[kind]
    cv2.polylines(
        top, [np.round(roi_poly[:n_top]).astype(np.int32)], False, 255, max(1, round(scale))
    )
    dist = cv2.distanceTransform(255 - top, cv2.DIST_L2, 3)
    material *= (1.0 - 0.25 * np.exp(-dist / max(0.06 * eye_dist, 1.0)))[..., None]
    # Edge hem: the rim of the mask is a little darker.
    rim = cv2.distanceTransform(hard, cv2.DIST_L2, 3)
    material *= (1.0 - 0.12 * np.exp(-rim / max(0.03 * eye_dist, 0.7)))[..., None]
    # The photo's own grain (sensor noise, JPEG) measured under the mask, so the material
    # is as noisy as the skin around it.
    grain = lum - cv2.GaussianBlur(lum, (0, 0), 1.0)
    noise = 1.4826 * float(np.median(np.abs(grain[inside]))) if inside.any() else 1.0
    noise = float(np.clip(noise, 0.8, 12.0))
    luma_noise = gen.normal(0.0, noise, (rh, rw, 1)).astype(np.float32)
    material += luma_noise + np.asarray(gen.normal(0.0, 0.4 * noise, material.shape), np.float32)

    out = img.copy()
    blended = roi * (1 - alpha[..., None]) + material * alpha[..., None]
    # Soft contact shadow on the skin just outside the lower edge.
    outside = cv2.GaussianBlur(alpha, (0, 0), max(0.05 * eye_dist, 1.0))
    blended *= (1.0 - 0.2 * np.clip(outside - alpha, 0, 1))[..., None]
    if ear_loops and kind == "surgical":
        colour = (
            tuple(float(c) for c in np.median(material[inside], axis=0))
            if inside.any()
            else (
                128.0,
                128.0,
                128.0,
            )
        )
        loops = np.zeros((rh, rw), np.uint8)
        _ear_loops(loops, roi_poly, scale)
        lw = (loops.astype(np.float32) / 255.0)[..., None]
        blended = blended * (1 - lw) + np.asarray(colour, np.float32) * lw
        covered[y0:y1, x0:x1] |= loops > 0
    out[y0:y1, x0:x1] = np.clip(blended, 0, 255).astype(np.uint8)
    return SyntheticMask(out, covered, kind, variant)


def _ear_loops(canvas: np.ndarray, poly: np.ndarray, scale: float) -> None:
    """Thin elastic loops from the mask's side corners back to the ears (coverage, in place).

    The ears sit about 30 canonical pixels beyond the mask's sides, level with the nose."""
    thick = max(1, round(0.8 * scale))
    for top_i, bot_i, side in ((0, 10, -1.0), (4, 6, 1.0)):
        p_top, p_bot = poly[top_i], poly[bot_i]
        ear = (p_top + p_bot) / 2 + np.array([side * 30.0 * scale, -14.0 * scale])
        for p in (p_top, p_bot):
            pts = np.array([p, (p + ear) / 2 + [0, -2 * scale], ear])
            cv2.polylines(canvas, [np.round(pts).astype(np.int32)], False, 255, thick, cv2.LINE_AA)
