"""Piecewise warping of one face onto another by their face meshes (a thin-plate spline).

One similarity transform from 5 landmarks places a face's lower half well only while the
landmarks are right and the head keeps its shape in the crop; under a covering the detector
guesses the mouth corners, and as a head turns or tilts its mouth and chin move against the
eyes. Here one mesh is posed like the other by the points a covering leaves visible (brows,
eyes, nose bridge: a similarity fitted in 3-D, or in the image plane), those points are pinned
to the other mesh's own, and a thin-plate spline through all the correspondences (jaw line,
mouth, nose, eyes, brows, cheeks) bends the image: smooth between and beyond them (affine far
away), so nothing tears at the hull's edge.

The target's lower mesh points are not used: under a covering the model predicts a closed,
neutral mouth and a jaw to match (bench/segmentation.py measures how far they sit from the
unmasked face's), and bending a reference onto them would close an open mouth or flatten a
smile. Its own lower face, posed like the target's head, is the better guess.

A spline cannot turn a face far: posed in 3-D for a head turned aside, the far cheek's
points slide under the nose and the spline folds there (a rippled, doubled edge). The
reference restorer draws the reference's mesh triangle by triangle, far to near, instead
(rendered_maps): its photo, taken facing the camera, turns with the head it is painted on,
the nose hiding part of the far cheek, the far side narrowing; beyond the mesh the spline
posed in the image plane places what surrounds the face. Between keyframes (restore.follow)
the same face is carried from frame to frame, through small turns, by the spline in 3-D,
which follows them best (bench/follow.py).
"""

from __future__ import annotations

import cv2
import numpy as np

from lostface.restore import align
from lostface.restore.mesh import BROWS, FACE_OVAL, LEFT_EYE, LIPS, NOSE, RIGHT_EYE, UPPER

# cheeks, chin and the skin between mouth and nose: spread over the lower face so the spline
# follows its surface, not just its outline and features
_CHEEKS = (
    50, 280, 205, 425, 187, 411, 123, 352, 118, 347, 101, 330, 36, 266, 216, 436, 212, 432,
    202, 422, 57, 287, 43, 273, 204, 424, 32, 262, 83, 313, 18, 200, 199, 175,
)  # fmt: skip
# Fewer than 100 points: the spline's dense solve stays small (numpy hands larger ones to a
# threaded BLAS, which waits on its threads while the frame loop keeps the cores busy).
CONTROL = np.array(
    sorted(
        set(
            FACE_OVAL
            + LIPS[::4]
            + NOSE[::2]
            + LEFT_EYE[::4]
            + RIGHT_EYE[::4]
            + BROWS
            + _CHEEKS[::2]
        )
    ),
    np.int64,
)
_UPPER = np.array(sorted(set(UPPER)), np.int64)
_PINNED = np.isin(CONTROL, _UPPER)  # control points placed at the target's own
_STEP = 8  # the spline is evaluated on a grid this many canonical pixels apart, then resized
_SMOOTHING = 2.0  # the spline's smoothing (canonical px^2): the mesh's own jitter is not kept
# the spline is refused when the meshes disagree with the similarity this much (median point
# distance, in eye distances): one of the meshes is wrong
MAX_DISAGREEMENT = 0.35


def _grid() -> np.ndarray:
    ys = np.arange(0, align.CANON_HEIGHT + _STEP, _STEP, dtype=np.float64)
    xs = np.arange(0, align.CANON_SIZE + _STEP, _STEP, dtype=np.float64)
    gx, gy = np.meshgrid(xs, ys)
    return np.stack([gx.ravel(), gy.ravel()], 1)


_GRID = _grid()
_GRID_SHAPE = (
    len(np.arange(0, align.CANON_HEIGHT + _STEP, _STEP)),
    len(np.arange(0, align.CANON_SIZE + _STEP, _STEP)),
)


def pose_fit(src: np.ndarray, dst: np.ndarray, depth: bool = True, nod: bool = True) -> np.ndarray:
    """src's (N,3) mesh moved by the similarity (rotation, scale, shift) that best maps its
    visible upper-face points onto dst's: in 3-D (the head turns), or with depth=False in the
    image plane only. nod=False leaves out the 3-D rotation's part about the image's
    horizontal axis (without_nod)."""
    a = np.asarray(src, np.float64)[_UPPER]
    b = np.asarray(dst, np.float64)[_UPPER]
    if not depth:
        out = np.asarray(src, np.float64).copy()
        out[:, :2] = align.apply(align.similarity(a[:, :2], b[:, :2]), out[:, :2])
        return out
    mu_a, mu_b = a.mean(0), b.mean(0)
    a0, b0 = a - mu_a, b - mu_b
    u, sig, vt = np.linalg.svd(b0.T @ a0)
    sign = np.eye(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2, 2] = -1
    rot = u @ sign @ vt
    scale = float((sig * np.diag(sign)).sum() / max((a0**2).sum(), 1e-9))
    if not nod:
        rot = without_nod(rot)
    return (np.asarray(src, np.float64) - mu_a) @ (scale * rot).T + mu_b


def without_nod(rot: np.ndarray) -> np.ndarray:
    """A 3-D rotation, written as a nod (about the image's horizontal axis) after a turn
    about the vertical axis after a tilt in the image plane, without its nod.

    Brows, eyes and the nose bridge face the camera nearly in one plane: a head turned aside
    moves the bridge across the eyes, but a nod moves it along them as a longer or shorter
    nose, or brows raised, would. Measured from one person's photo on another's face (or
    another moment's) the nod is mostly such differences, and it swings the chin: the stage
    clip's singer, drawn from his reference with it, was further from himself (dlib distance
    0.484 against 0.441, bench/README.md "A reference turned with the head")."""
    turn = float(np.arcsin(np.clip(rot[0, 2], -1.0, 1.0)))
    tilt = float(np.arctan2(-rot[0, 1], rot[0, 0]))
    ct, st, cg, sg = np.cos(turn), np.sin(turn), np.cos(tilt), np.sin(tilt)
    return np.array([[ct * cg, -ct * sg, st], [sg, cg, 0.0], [-st * cg, st * sg, ct]])


def _tps_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """r^2 log r between every point of a (M,2) and b (N,2) (0 at r = 0)."""
    dx = a[:, 0:1] - b[None, :, 0]
    dy = a[:, 1:2] - b[None, :, 1]
    d2 = dx * dx + dy * dy
    np.maximum(d2, 1e-12, out=d2)
    return 0.5 * d2 * np.log(d2)


def thin_plate(src: np.ndarray, dst: np.ndarray, at: np.ndarray) -> np.ndarray:
    """The smoothed thin-plate spline through src -> dst (N,2 points), evaluated at `at`.

    A dense solve of N+3 equations and one (M,N) kernel product: a few milliseconds for
    the ~130 control points and the coarse grid used here."""
    n = len(src)
    a = np.zeros((n + 3, n + 3))
    a[:n, :n] = _tps_kernel(src, src) + _SMOOTHING * np.eye(n)
    p = np.hstack([np.ones((n, 1)), src])
    a[:n, n:] = p
    a[n:, :n] = p.T
    rhs = np.zeros((n + 3, 2))
    rhs[:n] = dst
    coef = np.linalg.solve(a, rhs)
    return _tps_kernel(at, src) @ coef[:n] + at @ coef[n + 1 :] + coef[n]


def disagreement(src_mesh: np.ndarray, dst_mesh: np.ndarray, m: np.ndarray) -> float:
    """Median distance (eye distances) between dst's mesh and src's mapped by similarity m."""
    d = align.apply(m, src_mesh[CONTROL, :2]) - dst_mesh[CONTROL, :2]
    return float(np.median(np.hypot(d[:, 0], d[:, 1]))) / align.CANON_EYE_DISTANCE


def posed_disagreement(
    src_mesh: np.ndarray, dst_mesh: np.ndarray, depth: bool = True
) -> tuple[float, float]:
    """(how far src's control points move to their targets on dst, median canonical px; how
    far src posed like dst's head misses dst's visible points, median eye distances)."""
    posed = pose_fit(src_mesh, dst_mesh, depth)
    miss = np.hypot(*(posed[_UPPER, :2] - np.asarray(dst_mesh)[_UPPER, :2]).T)
    move = np.hypot(*(targets(src_mesh, dst_mesh, depth) - np.asarray(src_mesh)[CONTROL, :2]).T)
    return float(np.median(move)), float(np.median(miss)) / align.CANON_EYE_DISTANCE


def targets(src_mesh: np.ndarray, dst_mesh: np.ndarray, depth: bool = True) -> np.ndarray:
    """Where src's control points go on dst's face: src posed like dst's head (pose_fit),
    the visible ones pinned to dst's own points."""
    if src_mesh.shape[1] < 3 or dst_mesh.shape[1] < 3:
        depth = False  # 2-D meshes: posed in the image plane
    to = pose_fit(src_mesh, dst_mesh, depth)[CONTROL, :2]
    to[_PINNED] = np.asarray(dst_mesh, np.float64)[CONTROL[_PINNED], :2]
    return to


def mesh_maps(
    src_mesh: np.ndarray, dst_mesh: np.ndarray, depth: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (float32, canonical shape) that pull src pixels onto dst's geometry:
    map(p) is where the point of dst at p sits in src."""
    coarse = thin_plate(
        targets(src_mesh, dst_mesh, depth), np.asarray(src_mesh, np.float64)[CONTROL, :2], _GRID
    )
    coarse = coarse.astype(np.float32).reshape(*_GRID_SHAPE, 2)
    # canonical pixel p reads grid node p / STEP (nodes sit at whole multiples of STEP)
    up = np.array([[1.0 / _STEP, 0.0, 0.0], [0.0, 1.0 / _STEP, 0.0]])
    fine = cv2.warpAffine(
        coarse,
        up,
        align.CANON_DSIZE,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return np.ascontiguousarray(fine[..., 0]), np.ascontiguousarray(fine[..., 1])


def warp_by_mesh(
    image: np.ndarray, src_mesh: np.ndarray, dst_mesh: np.ndarray, depth: bool = True
) -> np.ndarray:
    """`image` (a canonical crop whose face has src_mesh) bent onto dst_mesh's face."""
    mx, my = mesh_maps(src_mesh, dst_mesh, depth)
    return cv2.remap(image, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def triangles(points: np.ndarray) -> np.ndarray:
    """(T,3) point indices of the Delaunay triangles of a mesh's points in the image plane."""
    pts = np.ascontiguousarray(np.asarray(points)[:, :2], np.float32)
    lo = np.floor(pts.min(0)) - 1.0
    hi = np.ceil(pts.max(0)) + 2.0
    sub = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1])))
    sub.insert([(float(x), float(y)) for x, y in pts])
    corners = np.asarray(sub.getTriangleList(), np.float32).reshape(-1, 2)
    # corners are the inserted points to the bit (or Subdiv2D's outer vertices): look them up
    keys = _bit_keys(pts)
    order = np.argsort(keys, kind="stable")
    wanted = _bit_keys(corners)
    at = np.clip(np.searchsorted(keys[order], wanted), 0, len(keys) - 1)
    hit = (keys[order][at] == wanted).reshape(-1, 3).all(1)
    return np.asarray(order[at].reshape(-1, 3)[hit], np.int64)


def _bit_keys(points: np.ndarray) -> np.ndarray:
    bits = np.ascontiguousarray(points, np.float32).view(np.uint32).astype(np.int64)
    return np.asarray((bits[:, 0] << 32) | bits[:, 1], np.int64)


# the drawn mesh's rim (a square of this many canonical px) and its soft edge (Gaussian sigma)
# across which the spline's maps take over beyond it
_RIM = np.ones((5, 5), np.uint8)
_RIM_EDGE = 2.0


def rendered_maps(
    src_mesh: np.ndarray, dst_mesh: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """cv2.remap maps (as mesh_maps) that draw src's face turned like dst's head, and where
    it is drawn (float32 0/1, canonical shape).

    src's mesh is posed like dst's head in 3-D (pose_fit; turned and tilted, not nodded:
    without_nod), its visible points pinned to dst's own, and drawn triangle by triangle (its
    Delaunay triangles in the image plane), far to near: each pixel reads src where the
    nearest triangle over it does; triangles that turn away from the camera are not drawn.
    Beyond the drawn mesh the maps are the spline's posed in the image plane (mesh_maps): what
    surrounds src's face (its hair, neck, collar, background) placed as before, blended in
    across the mesh's rim (_RIM, _RIM_EDGE), where a photo's face meets what lies beyond it."""
    src = np.asarray(src_mesh, np.float64)
    dst = np.asarray(dst_mesh, np.float64)
    if src.shape[1] < 3 or dst.shape[1] < 3:  # 2-D meshes: posed in the image plane, no depth
        posed = np.hstack([pose_fit(src, dst, False)[:, :2], np.zeros((len(src), 1))])
    else:
        posed = pose_fit(src, dst, True, nod=False)
    posed[_UPPER, :2] = dst[_UPPER, :2]
    tris = triangles(src)
    s, d = src[tris, :2], posed[tris, :2]
    area_s = _signed_area(s)
    area_d = _signed_area(d)
    drawn = (np.sign(area_s) == np.sign(area_d)) & (np.abs(area_d) > 0.25)
    tris, s, d = tris[drawn], s[drawn], d[drawn]
    far_first = np.argsort(-posed[tris, 2].mean(1), kind="stable")
    which = np.full(align.CANON_SHAPE, -1, np.int32)
    corners = np.round(d * 16.0).astype(np.int32)
    for i in far_first:
        cv2.fillConvexPoly(which, corners[i], int(i), cv2.LINE_8, 4)
    # each triangle's affine map from dst's pixels to src's: [x, y, 1] @ a
    a = np.linalg.solve(np.concatenate([d, np.ones((len(d), 3, 1))], 2), s)
    seen = which >= 0
    ys, xs = np.nonzero(seen)
    t = which[ys, xs]
    maps = np.zeros((*align.CANON_SHAPE, 2), np.float32)
    maps[ys, xs] = xs[:, None] * a[t, 0] + ys[:, None] * a[t, 1] + a[t, 2]
    drawn_px = seen.astype(np.float32)
    k = cv2.GaussianBlur(cv2.erode(drawn_px, _RIM), (0, 0), _RIM_EDGE)[..., None]
    spline = np.stack(mesh_maps(src, dst, depth=False), -1)
    maps = maps * k + spline * (1.0 - k)
    return np.ascontiguousarray(maps[..., 0]), np.ascontiguousarray(maps[..., 1]), drawn_px


def _signed_area(tri: np.ndarray) -> np.ndarray:
    """Twice the signed area of each (T,3,2) triangle."""
    u = tri[:, 1] - tri[:, 0]
    v = tri[:, 2] - tri[:, 0]
    return np.asarray(u[:, 0] * v[:, 1] - u[:, 1] * v[:, 0], np.float64)
