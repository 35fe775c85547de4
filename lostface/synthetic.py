"""Synthetic face masks drawn on real unmasked faces: ground truth for segmentation and
restoration tests (the original pixels under the mask are known).

The mask is designed once in canonical face space (restore.align) for a frontal face. A
turned face wears it draped over a simple head (a vertical cylinder, the nose standing out in
front of it): the head turn read from the landmarks turns that surface, so the mask reaches
around the near cheek and ends at the face's silhouette on the far side, over the nose, as a
real mask does (a flat outline would become a sliver floating in front of a profile). The
turned outline is carried onto the photo by a full affine fit of the turned canonical landmarks
to the face's 5 landmarks, so it follows the face's scale, roll and eye-mouth proportion. It is
then lit by the face's own blurred luminance so it reads as cloth on that face, not a flat sticker.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from lostface.errors import InputError
from lostface.restore.align import CANON_LANDMARKS, yaw_proxy

KINDS: tuple[str, ...] = ("surgical", "cloth", "n95")
VARIANTS: tuple[str, ...] = ("light_blue", "white", "black", "pattern", "weave", "panels")

# Variants drawn at random for each kind when none is asked for ("panels", a covering of two
# colours in parts wider than the zone over the nose tip and mouth, only when asked for).
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


# The head a mask is draped over, in canonical pixels (the segmenter's model,
# restore.segment): a vertical cylinder of radius _HEAD_R through the face; the nose tip
# stands _NOSE_DEPTH in front of it, and a mask spans from there to the cheeks like a tent
# (its front stands out over the nose's width, _NOSE_HALF). align.yaw_proxy is about
# _YAW_GAIN * tan(turn angle) for such a head; turns are taken up to _MAX_TURN radians.
_HEAD_R = 85.0
_NOSE_DEPTH = 31.0
_NOSE_HALF = 24.0
_YAW_GAIN = 0.55
_MAX_TURN = 1.3
_ROW_STEP = 0.5  # canonical px between the rows the turned outline is traced on


def _depth(d: np.ndarray) -> np.ndarray:
    """Depth toward the camera of the draped mask (or face) at lateral offset d from the nose."""
    d = np.asarray(d, np.float64)
    cyl = np.sqrt(np.maximum(_HEAD_R**2 - d**2, 0.0))
    return cyl + _NOSE_DEPTH * np.exp(-0.5 * (d / _NOSE_HALF) ** 2)


def _turned_x(x: np.ndarray, turn: float) -> np.ndarray:
    """Canonical x of a frontal face -> its x on the face turned by `turn` radians."""
    d = np.asarray(x, np.float64) - 128.0
    return 128.0 + d * np.cos(turn) + _depth(d) * np.sin(turn)


def _turned_outline(
    outline: np.ndarray, turn: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The mask drawn as `outline` on a frontal face, seen on the face turned by `turn`.

    Returns the turned outline polygon (canonical px) and, per traced row (its y), the
    lookup from turned x back to frontal x for the material: (poly, rows, xs_turned,
    xs_front), NaN where hidden. On each row the visible part of the surface is where the
    turned x keeps growing from the near side (what lies behind the silhouette, or behind
    the nose, is hidden)."""
    top, bottom = float(outline[:, 1].min()), float(outline[:, 1].max())
    rows = np.arange(np.ceil(top), bottom + 1e-6, _ROW_STEP)
    # the frontal outline's span on every row (it is convex enough for one span a row)
    lo = np.full(len(rows), np.inf)
    hi = np.full(len(rows), -np.inf)
    closed = np.vstack([outline, outline[:1]])
    for (xa, ya), (xb, yb) in zip(closed[:-1], closed[1:], strict=True):
        if ya == yb:
            continue
        sel = (rows >= min(ya, yb)) & (rows <= max(ya, yb))
        xs = xa + (rows[sel] - ya) * (xb - xa) / (yb - ya)
        lo[sel] = np.minimum(lo[sel], xs)
        hi[sel] = np.maximum(hi[sel], xs)
    keep = np.isfinite(lo) & (hi > lo)
    rows, lo, hi = rows[keep], lo[keep], hi[keep]
    n = 96
    t = np.linspace(0.0, 1.0, n)
    front = lo[:, None] + (hi - lo)[:, None] * t  # (rows, n), near side first when turn > 0
    if turn < 0:
        front = front[:, ::-1]
    turned = _turned_x(front, turn)
    sign = 1.0 if turn >= 0 else -1.0
    envelope = sign * np.maximum.accumulate(sign * turned, axis=1)
    visible = turned == envelope  # not behind anything nearer the silhouette
    left = np.where(turn >= 0, turned[:, 0], envelope[:, -1])
    right = np.where(turn >= 0, envelope[:, -1], turned[:, 0])
    poly = np.vstack([np.stack([right, rows], axis=1), np.stack([left, rows], axis=1)[::-1]])
    return poly, rows, np.where(visible, turned, np.nan), np.where(visible, front, np.nan)


def _turn_of(landmarks: np.ndarray) -> float:
    """Head turn (radians, + when the nose points to the image's right) from 5 landmarks."""
    yaw = yaw_proxy(landmarks)
    return float(np.clip(np.arctan(yaw / _YAW_GAIN), -_MAX_TURN, _MAX_TURN))


def _turned_landmarks(turn: float) -> np.ndarray:
    """The canonical landmarks as they sit on the face turned by `turn` (eyes on the
    cylinder, nose tip and mouth in front of it)."""
    lm = CANON_LANDMARKS.astype(np.float64).copy()
    d = lm[:, 0] - 128.0
    depth = _depth(d)
    depth[:2] = np.sqrt(np.maximum(_HEAD_R**2 - d[:2] ** 2, 0.0))  # eyes sit on the cylinder
    lm[:, 0] = 128.0 + d * np.cos(turn) + depth * np.sin(turn)
    return lm


def _turn_texture(
    tex: np.ndarray, res: int, rows: np.ndarray, xs_turned: np.ndarray, xs_front: np.ndarray
) -> np.ndarray:
    """The frontal material canvas (canonical px * res) resampled onto the turned face."""
    size = tex.shape[0]
    grid = (np.arange(size, dtype=np.float64) + 0.5) / res - 0.5  # canonical x of columns
    table = np.repeat(grid[None], len(rows), axis=0)
    for i in range(len(rows)):
        ok = np.isfinite(xs_turned[i])
        if int(ok.sum()) < 2:
            continue
        xt, xf = xs_turned[i][ok], xs_front[i][ok]
        order = np.argsort(xt)
        table[i] = np.interp(grid, xt[order], xf[order])
    ys = (np.arange(size, dtype=np.float64) + 0.5) / res - 0.5
    idx = np.clip(np.round((ys - rows[0]) / _ROW_STEP).astype(int), 0, len(rows) - 1)
    map_x = ((table[idx] + 0.5) * res - 0.5).astype(np.float32)
    map_y = np.repeat(np.arange(size, dtype=np.float32)[:, None], size, axis=1)
    return cv2.remap(tex, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _onto_span(points: np.ndarray, poly: np.ndarray, turn: float) -> np.ndarray:
    """Frontal canonical points turned, and kept inside the turned outline's row span
    (a point hidden behind the silhouette lands on it)."""
    out = points.astype(np.float64).copy()
    out[:, 0] = _turned_x(points[:, 0], turn)
    n = len(poly) // 2
    right, left = poly[:n], poly[n:][::-1]  # both top to bottom
    lo = np.interp(out[:, 1], left[:, 1], left[:, 0])
    hi = np.interp(out[:, 1], right[:, 1], right[:, 0])
    out[:, 0] = np.clip(out[:, 0], lo, hi)
    return out


@dataclass(slots=True)
class SyntheticMask:
    """A photo with a drawn mask. image: new BGR uint8 array; covered: (H,W) bool truth."""

    image: np.ndarray
    covered: np.ndarray
    kind: str = "surgical"
    variant: str = "light_blue"


def _affine_canon_to_image(landmarks: np.ndarray, canon: np.ndarray | None = None) -> np.ndarray:
    """Least-squares full affine canonical -> image from the 5 landmarks."""
    src_pts = CANON_LANDMARKS if canon is None else canon
    src = np.hstack([src_pts.astype(np.float64), np.ones((5, 1))])
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
    elif variant == "panels":
        # a bandana's broad bands, or a centre panel between side panels of another colour
        c1, c2 = _CLOTH_PALETTE[rng.choice(len(_CLOTH_PALETTE), 2, replace=False)]
        if rng.integers(2) == 0:
            sel = np.abs(xx - 128.0) < float(rng.uniform(28, 44))
        else:
            width = float(rng.uniform(20, 30))
            sel = np.floor((yy - float(rng.uniform(0, width))) / width) % 2 == 0
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
    eye_dist = float(np.hypot(*(lm[1] - lm[0])))

    # Outline, slightly jittered so masks of one kind are not all identical.
    outline = _OUTLINES[kind].copy()
    outline[:, 1] += gen.uniform(-3, 3)
    outline[:, 0] = 128 + (outline[:, 0] - 128) * gen.uniform(0.97, 1.03)
    turn = _turn_of(lm)
    turned: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
    if abs(turn) > 1e-3:
        turned = _turned_outline(outline, turn)
        a = _affine_canon_to_image(lm, _turned_landmarks(turn))
        canon_poly, edge = turned[0], _onto_span(outline, turned[0], turn)
    else:
        a = _affine_canon_to_image(lm)
        canon_poly, edge = outline, outline
    scale = float(np.sqrt(abs(np.linalg.det(a[:, :2]))))
    poly = canon_poly @ a[:, :2].T + a[:, 2]
    edge_img = edge @ a[:, :2].T + a[:, 2]  # the template's vertices (top edge, ear loops)
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
    if turned is not None:
        tex = _turn_texture(tex, res, *turned[1:])
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
        top,
        [np.round(edge_img[:n_top] - [x0, y0]).astype(np.int32)],
        False,
        255,
        max(1, round(scale)),
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
        _ear_loops(loops, edge_img - [x0, y0], scale)
        lw = (loops.astype(np.float32) / 255.0)[..., None]
        blended = blended * (1 - lw) + np.asarray(colour, np.float32) * lw
        covered[y0:y1, x0:x1] |= loops > 0
    out[y0:y1, x0:x1] = np.clip(blended, 0, 255).astype(np.uint8)
    return SyntheticMask(out, covered, kind, variant)


def steady_landmarks(
    landmarks: list[np.ndarray | None],
    boxes: list[np.ndarray | None],
    shots: list[int],
    k: int = 2,
) -> list[np.ndarray | None]:
    """Centred moving average of one face's landmarks over +-k frames of the same shot.

    A worn mask moves rigidly with the face; one drawn on every frame's raw detector points
    jitters on its own, which a restorer following the face cannot (and should not) copy.
    landmarks/boxes: per frame, the face's points and box (None: no face); shots: a shot
    number per frame (frames of different shots are never averaged); frames whose boxes
    overlap less than IoU 0.3 count as another face."""
    out: list[np.ndarray | None] = []
    for i, lm in enumerate(landmarks):
        if lm is None:
            out.append(None)
            continue
        group = []
        for j in range(max(i - k, 0), min(i + k + 1, len(landmarks))):
            other = landmarks[j]
            if other is None or shots[j] != shots[i] or _box_iou(boxes[i], boxes[j]) < 0.3:
                continue
            group.append(np.asarray(other, np.float64)[:5])
        out.append(np.mean(group, axis=0))
    return out


def _box_iou(a: np.ndarray | None, b: np.ndarray | None) -> float:
    if a is None or b is None:
        return 0.0
    from lostface.tracking.detectors import box_iou_matrix

    pair = np.asarray([a[:4]], np.float64), np.asarray([b[:4]], np.float64)
    return float(box_iou_matrix(*pair)[0, 0])


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
