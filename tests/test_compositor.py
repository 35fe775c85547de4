"""PatchCompositor on a real face: the patch follows a known shift/scale/rotation of the
image, pixels outside its alpha support stay bit-identical, relighting follows the
frame's brightness, and a new patch fades in monotonically."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lostface.config import DetectSettings, Settings
from lostface.frame import FaceTrack, Patch
from lostface.restore import align, regions
from lostface.restore.compositor import PatchCompositor, covering_fit, skin_mean
from lostface.restore.regions import lower_face_mask
from lostface.tracking.detectors import CenterFaceDetector

MASK_BGR = (200, 170, 120)


def _alpha() -> np.ndarray:
    hard = lower_face_mask().astype(np.float32) / 255.0
    return cv2.GaussianBlur(cv2.dilate(hard, np.ones((9, 9))), (13, 13), 3.0)


@pytest.fixture(scope="module")
def scene(astronaut_bgr: np.ndarray) -> dict:
    """The astronaut photo, its landmarks, and a patch holding her true (unmasked) face."""
    det = CenterFaceDetector(DetectSettings()).detect(astronaut_bgr)
    lm5 = det.landmarks[int(np.argmax(det.scores))][:5].astype(np.float32)
    m = align.to_canonical(lm5)
    crop = align.warp_to_canonical(astronaut_bgr, m)
    patch = Patch(0, 0, crop, _alpha(), m, skin_mean(crop))
    return {"image": astronaut_bgr, "lm": lm5, "patch": patch, "box": det.boxes[0]}


def _masked(image: np.ndarray, lm5: np.ndarray) -> np.ndarray:
    inv = align.invert(align.to_canonical(lm5))
    size = (image.shape[1], image.shape[0])
    hard = cv2.warpAffine(lower_face_mask(), inv, size, flags=cv2.INTER_NEAREST)
    out = image.copy()
    out[hard > 0] = MASK_BGR
    return out


def _support(lm5: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Frame pixels the patch may touch: its alpha support mapped to the frame, grown 2 px."""
    inv = align.invert(align.to_canonical(lm5))
    sup = (_alpha() > 0).astype(np.uint8)
    warped = cv2.warpAffine(sup, inv, (shape[1], shape[0]), flags=cv2.INTER_NEAREST)
    return cv2.dilate(warped, np.ones((5, 5), np.uint8)) > 0


@pytest.mark.parametrize(
    ("angle", "scale", "shift"),
    [
        (0.0, 1.0, (17.0, -9.0)),
        (12.0, 0.8, (-20.0, 14.0)),
        (-20.0, 1.3, (5.0, 30.0)),
        (0.0, 0.5, (0, 0)),
    ],
)
def test_patch_lands_on_transformed_face(scene: dict, angle: float, scale: float, shift) -> None:
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    t = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    t[:, 2] += shift
    truth = cv2.warpAffine(image, t, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lm_t = align.apply(t, lm5).astype(np.float32)
    frame = _masked(truth, lm_t)
    before = frame.copy()
    settings = Settings()
    settings.restore.relight = False
    comp = PatchCompositor(settings)
    comp.composite(frame, FaceTrack(1, scene["box"], lm_t), scene["patch"])

    region = cv2.warpAffine(lower_face_mask(), align.invert(align.to_canonical(lm_t)), (w, h)) > 128
    err_after = np.abs(frame[region].astype(np.float32) - truth[region]).mean()
    err_before = np.abs(before[region].astype(np.float32) - truth[region]).mean()
    # measured: 2-9 grey levels after (interpolation twice; more at scale 0.5), 60+ before
    assert err_after < 12.0
    assert err_after < 0.2 * err_before
    outside = ~_support(lm_t, frame.shape)
    assert np.array_equal(frame[outside], before[outside])
    assert (frame != before).any(axis=-1)[region].mean() > 0.9


def test_face_partly_outside_frame(scene: dict) -> None:
    image, lm5 = scene["image"], scene["lm"]
    frame = np.ascontiguousarray(_masked(image, lm5)[:, 230:])  # cuts through the face
    lm = lm5 - np.float32([230, 0])
    before = frame.copy()
    PatchCompositor(Settings()).composite(frame, FaceTrack(1, scene["box"], lm), scene["patch"])
    outside = ~_support(lm, frame.shape)
    assert np.array_equal(frame[outside], before[outside])
    assert (frame != before).any()


def test_relight_follows_brightness(scene: dict) -> None:
    image, lm5 = scene["image"], scene["lm"]
    region = (
        cv2.warpAffine(
            lower_face_mask(),
            align.invert(align.to_canonical(lm5)),
            (image.shape[1], image.shape[0]),
        )
        > 128
    )
    means = []
    for k in (1.0, 0.7):
        frame = _masked(np.clip(image.astype(np.float32) * k, 0, 255).astype(np.uint8), lm5)
        PatchCompositor(Settings()).composite(
            frame, FaceTrack(1, scene["box"], lm5), scene["patch"]
        )
        means.append(frame[region].astype(np.float32).mean())
    assert means[1] / means[0] == pytest.approx(0.7, abs=0.05)


def _fading(scene: dict, frames: int) -> tuple[Settings, PatchCompositor, FaceTrack, np.ndarray]:
    """Settings with a crossfade of `frames` and no relighting, a compositor, the scene's
    track and its masked frame: what the crossfade tests start from."""
    settings = Settings()
    settings.keyframe.crossfade_frames = frames
    settings.restore.relight = False
    track = FaceTrack(1, scene["box"], scene["lm"])
    return settings, PatchCompositor(settings), track, _masked(scene["image"], scene["lm"])


def test_crossfade_is_monotone(scene: dict) -> None:
    image, lm5 = scene["image"], scene["lm"]
    old = scene["patch"]
    dark = (old.image.astype(np.float32) * 0.5).astype(np.uint8)
    new = Patch(0, 10, dark, old.alpha, old.to_canonical, old.skin_mean)
    settings, comp, track, base = _fading(scene, 4)
    region = (
        cv2.warpAffine(
            lower_face_mask(),
            align.invert(align.to_canonical(lm5)),
            (image.shape[1], image.shape[0]),
        )
        > 128
    )

    def shown(patch: Patch) -> float:
        frame = base.copy()
        comp.composite(frame, track, patch)
        return float(frame[region].astype(np.float32).mean())

    first = shown(old)
    assert comp.fade_weight(1) == 1.0  # the first patch of a track appears at once
    seq = [shown(new) for _ in range(7)]
    weights = [comp.fade_weight(1)]
    assert all(a > b for a, b in zip([first, *seq[:3]], seq[:4], strict=True))  # strictly darker
    assert seq[4] == seq[5] == seq[6]  # settled after crossfade_frames frames
    ref = PatchCompositor(settings)
    frame = base.copy()
    ref.composite(frame, track, new)
    assert seq[-1] == pytest.approx(float(frame[region].astype(np.float32).mean()), abs=0.01)
    assert weights == [1.0]
    comp.forget(1)
    assert shown(old) == pytest.approx(first, abs=0.01)  # forgotten: no fade from the dark patch


def test_crossfade_never_uncovers_what_the_new_patch_covers(scene: dict) -> None:
    """The covering moved between keyframes: the new patch reaches where the old one did not.
    There the new patch shows at full strength from its first frame (no half-faded patch
    through which the mask shows), while its colours still fade in where both overlap."""
    image, lm5 = scene["image"], scene["lm"]
    old_p = scene["patch"]
    h = old_p.alpha.shape[0]
    top, bottom = old_p.alpha.copy(), old_p.alpha.copy()
    top[h // 2 + 40 :] = 0.0  # the old patch stops short of the chin
    old = Patch(0, 0, old_p.image, top, old_p.to_canonical, old_p.skin_mean)
    dark = (old_p.image.astype(np.float32) * 0.5).astype(np.uint8)
    new = Patch(0, 10, dark, bottom, old_p.to_canonical, old_p.skin_mean)
    settings, comp, track, base = _fading(scene, 8)
    inv = align.invert(align.to_canonical(lm5))
    size = (image.shape[1], image.shape[0])
    only_new = cv2.warpAffine(((bottom > 0.99) & (top < 0.01)).astype(np.uint8), inv, size) > 0
    only_new = cv2.erode(only_new.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    both = cv2.warpAffine(((bottom > 0.99) & (top > 0.99)).astype(np.uint8), inv, size) > 0
    both = cv2.erode(both.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert only_new.sum() > 200 and both.sum() > 200
    first = base.copy()
    comp.composite(first, track, old)
    frame = base.copy()
    comp.composite(frame, track, new)  # first frame of the crossfade
    assert comp.fade_weight(1) < 0.5
    settled = base.copy()
    PatchCompositor(settings).composite(settled, track, new)
    # where only the new patch reaches: the new patch itself, not the mask through it
    diff = np.abs(frame[only_new].astype(np.int16) - settled[only_new])
    assert float(diff.mean()) < 1.0
    # where both reach: still mostly the old patch's colours (a fade, not a jump)
    assert float(frame[both].mean()) > float(settled[both].mean()) + 10.0


def test_crossfade_leaves_where_only_the_old_patch_reached(scene: dict) -> None:
    """A new keyframe found the covering lower than the old one (the old patch, painted at
    another pose, lies over the nose and the eyes' lower lids when carried onto this frame):
    from the new patch's first frame, what only the old patch covered shows the frame as it
    is, not an old patch fading out over the face."""
    image, lm5 = scene["image"], scene["lm"]
    old_p = scene["patch"]
    raised = np.zeros_like(old_p.alpha)
    raised[:-30] = old_p.alpha[30:]  # 30 canonical px higher
    dark = (old_p.image.astype(np.float32) * 0.5).astype(np.uint8)
    old = Patch(0, 0, dark, raised, old_p.to_canonical, old_p.skin_mean)
    new = Patch(0, 10, old_p.image, old_p.alpha, old_p.to_canonical, old_p.skin_mean)
    settings, comp, track, base = _fading(scene, 8)
    inv = align.invert(align.to_canonical(lm5))
    size = (image.shape[1], image.shape[0])
    only_old = (raised > 0.99) & (old_p.alpha < 0.01)
    only_old = cv2.warpAffine(only_old.astype(np.uint8), inv, size, flags=cv2.INTER_NEAREST) > 0
    only_old = cv2.erode(only_old.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    assert only_old.sum() > 200
    comp.composite(base.copy(), track, old)
    frame = base.copy()
    comp.composite(frame, track, new)  # first frame of the crossfade
    assert comp.fade_weight(1) < 0.5
    assert np.array_equal(frame[only_old], base[only_old])
    # where the new patch reaches, it shows, its colours fading in from the old one's
    region = cv2.warpAffine(lower_face_mask(), inv, size) > 128
    assert (frame != base).any(axis=-1)[region].mean() > 0.9


def test_the_old_patch_s_feather_band_draws_no_line_across_the_new_one(scene: dict) -> None:
    """A patch's image holds its keyframe's covering blended into its feather band (the
    restorer's blend). When a new patch fades in over one painted with the covering lower
    (a head pitching between the two keyframes), the old patch's feather band lies inside the
    new patch's solid part; its colour is taken only where it is (nearly) solid, so no dark
    line of the covering runs across the new patch during the fade."""
    image, lm5 = scene["image"], scene["lm"]
    face = scene["patch"]
    key = lower_face_mask() > 0
    lower = np.zeros_like(key)
    lower[30:] = key[:-30]  # the old keyframe's covering, 30 canonical px lower
    a_old = regions.feather(lower, 6, 6)
    dark = np.float32(MASK_BGR) * 0.25  # a dark covering, blended into the feather band
    blended = face.image * a_old[..., None] + dark * (1.0 - a_old[..., None])
    old = Patch(0, 0, blended.astype(np.uint8), a_old, face.to_canonical, face.skin_mean)
    new = Patch(0, 10, face.image, regions.feather(key, 6, 6), face.to_canonical, face.skin_mean)
    settings, comp, track, base = _fading(scene, 8)
    inv = align.invert(align.to_canonical(lm5))
    size = (image.shape[1], image.shape[0])
    edge = (a_old > 0.1) & (a_old < 0.9) & (new.alpha > 0.999) & key
    edge = cv2.warpAffine(edge.astype(np.uint8), inv, size, flags=cv2.INTER_NEAREST) > 0
    assert edge.sum() > 100
    comp.composite(base.copy(), track, old)
    frame = base.copy()
    comp.composite(frame, track, new)  # the first frame of the crossfade
    assert comp.fade_weight(1) < 0.5
    settled = base.copy()
    PatchCompositor(settings).composite(settled, track, new)
    darker = settled[edge].astype(np.float32).mean() - frame[edge].astype(np.float32).mean()
    assert darker < 3.0, darker


def _covering_moved_up(scene: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The keyframe's covered region (canonical), the covering now (frame pixels: its top
    edge 6 canonical px higher, as on a turning head) and the canonical-to-frame transform."""
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    inv = align.invert(align.to_canonical(lm5))
    key = lower_face_mask() > 0
    now = key.copy()
    now[:-6] |= key[6:]
    covering = cv2.warpAffine(now.astype(np.uint8), inv, (w, h), flags=cv2.INTER_NEAREST) > 0
    return key, covering, inv


def _between_keyframes_patch(
    scene: dict, alpha: np.ndarray, cover: np.ndarray | None
) -> tuple[Patch, PatchCompositor]:
    """The scene's true face as a keyframe's patch with this alpha and covering colour, and a
    compositor that does not relight."""
    patch = Patch(
        0,
        0,
        scene["patch"].image,
        alpha,
        scene["patch"].to_canonical,
        scene["patch"].skin_mean,
        cover_colour=cover,
    )
    settings = Settings()
    settings.restore.relight = False
    return patch, PatchCompositor(settings)


@pytest.mark.parametrize("knows_the_covering", [True, False])
def test_a_sliver_of_the_covering_beside_the_patch_is_painted(
    scene: dict, knows_the_covering: bool
) -> None:
    """Between keyframes the covering can move against the face's landmarks (a turning
    head): here it reaches 6 canonical px higher than on the keyframe, beyond the patch's
    solid part. Those pixels look like the keyframe's covering and the patch has skin there,
    so they take the patch's pixels; nothing outside the patch's support that is not the
    covering changes. On the keyframe's own frame (a photo) nothing beyond the patch's
    support changes; a patch that does not know its covering's colour leaves the sliver."""
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    key, covering, inv = _covering_moved_up(scene)
    frame = image.copy()
    frame[covering] = MASK_BGR
    before = frame.copy()
    alpha = regions.feather(key, 0, 2)
    colour = np.float32(MASK_BGR) if knows_the_covering else None
    patch, comp = _between_keyframes_patch(scene, alpha, colour)
    track = FaceTrack(1, scene["box"], lm5)
    own = frame.copy()  # the keyframe's own frame (a photo): nothing beyond the patch moves
    comp.begin_frame(0)
    comp.composite(own, track, patch)
    comp.begin_frame(5)  # a frame between keyframes
    comp.composite(frame, track, patch)

    support = cv2.warpAffine((alpha > 0).astype(np.uint8), inv, (w, h)) > 0
    support = cv2.dilate(support.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    sliver = covering & ~support  # the covering where the patch's alpha does not reach
    assert sliver.sum() > 100
    assert np.array_equal(own[~support], before[~support])
    left = (frame[sliver] == MASK_BGR).all(axis=1).mean()
    if knows_the_covering:
        assert left < 0.05
        # the patch's pixels there: the face as the keyframe saw it
        truth = image[sliver].astype(np.float32)
        assert np.abs(frame[sliver].astype(np.float32) - truth).mean() < 12.0
        # elsewhere outside the support a pixel changes only to the keyframe's own (a
        # covering-like colour of the suit below the chin, where the patch holds the same)
        changed = (frame != before).any(axis=-1) & ~support & ~covering
        assert np.abs(frame[changed].astype(np.float32) - image[changed]).max(initial=0) < 40
    else:
        assert left == 1.0


def test_between_keyframes_no_line_of_the_covering_stays_along_its_edge(scene: dict) -> None:
    """The covering moved up between keyframes, far enough that its top edge lies under the
    patch's feather band (half opaque), and its edge is drawn as a real one is: a rim of
    pixels half covering, half skin. Neither may show through: no line of dark pixels along
    the edge (before, the feather let the covering show at half strength there, and the rim,
    like neither the covering nor the skin, stayed as it was)."""
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    key, covering, inv = _covering_moved_up(scene)
    ring = cv2.dilate(covering.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    rim = ring & ~covering
    frame = image.copy()
    frame[covering] = MASK_BGR
    frame[rim] = (image[rim] // 2 + np.array(MASK_BGR) // 2).astype(np.uint8)
    # the keyframe's region grown and feathered outward as the segmenter's is
    alpha = regions.feather(key, 2, 6)
    patch, comp = _between_keyframes_patch(scene, alpha, np.float32(MASK_BGR))
    comp.begin_frame(5)  # a frame between keyframes
    comp.composite(frame, track=FaceTrack(1, scene["box"], lm5), patch=patch)

    # the edge: the covering's and its rim's pixels the keyframe's solid part did not hold,
    # below the eyes' line (plus an eighth of their distance: the eyes are never painted)
    solid = cv2.warpAffine((alpha >= 0.999).astype(np.uint8), inv, (w, h)) > 0
    below = np.zeros(align.CANON_SHAPE, np.uint8)
    below[int(align.CANON_LANDMARKS[:2, 1].max() + align.CANON_EYE_DISTANCE / 8) + 1 :] = 1
    below = cv2.warpAffine(below, inv, (w, h), flags=cv2.INTER_NEAREST) > 0
    edge = ring & ~solid & below
    assert edge.sum() > 150
    off = np.abs(frame[edge].astype(np.float32) - image[edge]).max(axis=1)
    assert np.mean(off > 40) < 0.01, np.mean(off > 40)  # before: 0.18


def test_between_keyframes_a_patch_is_painted_only_where_its_covering_is(scene: dict) -> None:
    """Between keyframes a patch is painted where its covering still is. A frame where the
    covering came off (the open face), or where a hand passes in front of it, is left
    exactly as it came, and painting takes up again once the covering shows; a keyframe's
    own frame is painted as its segmenter found it."""
    image, lm5 = scene["image"], scene["lm"]
    covered = _masked(image, lm5)
    region = (covered != image).any(axis=-1)
    hand = covered.copy()
    rng = np.random.default_rng(0)
    skin = np.float32(scene["patch"].skin_mean)
    hand[region] = np.clip(skin + rng.normal(0, 6, (int(region.sum()), 3)), 0, 255)
    patch, comp = _between_keyframes_patch(scene, _alpha(), np.float32(MASK_BGR))
    track = FaceTrack(1, scene["box"], lm5)
    expected = {"covered": True, "open": False, "hand": False, "covered again": True}
    for k, (name, frame) in enumerate(
        zip(expected, (covered, image, hand, covered), strict=True), start=1
    ):
        out = frame.copy()
        comp.begin_frame(k)
        painted = comp.composite(out, track, patch)
        assert painted is expected[name], name
        assert np.array_equal(out, frame) is not painted, name
        if painted:
            assert (out[region] == MASK_BGR).all(axis=1).mean() < 0.01, name
    own = image.copy()  # the keyframe's own frame: painted without looking
    comp.begin_frame(0)
    assert comp.composite(own, track, patch) and not np.array_equal(own, image)


def _keyframe_patch(scene: dict, key: np.ndarray) -> Patch:
    """The scene's true face as the patch of a keyframe (frame 0) that found the covered
    region `key` (canonical) in the covering's colour; its alpha is the segmenter's
    (mask.dilate, mask.feather_radius)."""
    return Patch(
        0,
        0,
        scene["patch"].image,
        regions.feather(key, 6, 6),
        scene["patch"].to_canonical,
        scene["patch"].skin_mean,
        cover_colour=np.float32(MASK_BGR),
        covered=key,
    )


def _carried(
    scene: dict, key: np.ndarray, frame: np.ndarray, lm5: np.ndarray, slide: bool = True
) -> np.ndarray:
    """`frame` with the scene's true face composited on it as a patch carried between
    keyframes (frame 5 of a keyframe at 0, _keyframe_patch), the track's landmarks `lm5`; no
    relighting, with or without the slide (keyframe.slide)."""
    patch = _keyframe_patch(scene, key)
    settings = Settings()
    settings.restore.relight = False
    settings.keyframe.slide = slide
    comp = PatchCompositor(settings)
    out = frame.copy()
    comp.begin_frame(5)
    assert comp.composite(out, FaceTrack(1, scene["box"], lm5), patch)
    return out


def _eyes_changed(scene: dict, out: np.ndarray, frame: np.ndarray, covering: np.ndarray) -> float:
    """The share of the band of the brows and eyes (bench/paint_region.py's), beyond the
    covering grown by the feather band, that changed from `frame` to `out`."""
    lm5 = scene["lm"]
    h, w = frame.shape[:2]
    band = np.zeros(align.CANON_SHAPE, np.uint8)
    band[62:120, 46:210] = 1
    inv = align.invert(align.to_canonical(lm5))
    band = cv2.warpAffine(band, inv, (w, h), flags=cv2.INTER_NEAREST) > 0
    r = int(np.ceil(12 / align.scale_of(align.to_canonical(lm5))))
    grown = cv2.dilate(covering.view(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
    changed = (out != frame).any(axis=-1)
    return float(changed[band & ~grown].mean())


def _drifted(scene: dict, slide: bool, background: bool = False) -> dict:
    """A frame between keyframes whose covering lies where the keyframe found it, while the
    track's landmarks have drifted up and to the side by a seventh of the eye distance (as
    tracked landmarks do between detections); the patch composited on it, with or without
    the slide (keyframe.slide). `background`: a wall of the covering's colour beside the
    face, farther than the slide looks."""
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    inv = align.invert(align.to_canonical(lm5))
    key = lower_face_mask() > 0
    covering = cv2.warpAffine(key.view(np.uint8), inv, (w, h), flags=cv2.INTER_NEAREST) > 0
    frame = image.copy()
    frame[covering] = MASK_BGR
    if background:
        left = int(np.nonzero(covering.any(axis=0))[0][0])
        gap = int(30 / align.scale_of(align.to_canonical(lm5)))  # canonical px -> frame px
        frame[:, : left - gap] = MASK_BGR
    eyes = float(np.hypot(*(lm5[1] - lm5[0])))
    drift = np.float32([0.1, -0.1]) * eyes
    out = _carried(scene, key, frame, lm5 + drift, slide)
    return {
        "eyes_changed": _eyes_changed(scene, out, frame, covering),
        "covering_left": float((out[covering] == MASK_BGR).all(axis=1).mean()),
        "out": out,
    }


@pytest.mark.parametrize("frame_index", [0, 5])
def test_a_covering_that_does_not_stand_out_beside_a_turned_face_is_left(
    scene: dict, frame_index: int
) -> None:
    """On a turned face, a covering of the same colour as all that surrounds it (a black
    covering on a face in profile against a dark stage) cannot be placed: the patch is not
    painted on the keyframe (frame 0) or between keyframes (frame 5), and the frame stays as
    it came. With the covering's colour on one side of it only (a dark background beside the
    face), it is painted; on a face seen from the front (long dark hair and a dark scarf
    around a dark covering), the landmarks place it and it is painted too."""
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    turned = lm5.copy()
    turned[2] += (turned[0] - turned[1]) * 0.4  # the nose 0.4 eye distances to the side
    assert align.yaw_proxy(turned) < -0.3
    key = lower_face_mask() > 0
    around = cv2.dilate(key.view(np.uint8), np.ones((61, 61), np.uint8))
    left = around.copy()
    left[:, 128:] = key[:, 128:]  # the covering's colour beside the face's left side only
    patch = _keyframe_patch(scene, key)
    for dark, lm, painted in ((around, turned, False), (left, turned, True), (around, lm5, True)):
        m = align.to_canonical(lm)
        where = cv2.warpAffine(dark, align.invert(m), (w, h), flags=cv2.INTER_NEAREST) > 0
        frame = image.copy()
        frame[where] = MASK_BGR
        out = frame.copy()
        comp = PatchCompositor(Settings())
        comp.begin_frame(frame_index)
        assert comp.composite(out, FaceTrack(1, scene["box"], lm), patch) is painted
        assert np.array_equal(out, frame) is not painted


@pytest.mark.parametrize("slide", [True, False])
def test_between_keyframes_the_patch_slides_onto_its_covering(scene: dict, slide: bool) -> None:
    """Tracked landmarks drift against the face between detections, and the carried patch
    with them: onto the eyes on one side, off the covering's edge on the other. The covering
    itself is in view, and the patch slides to it: the eyes and brows stay as they were and
    nothing of the covering shows. Without the slide the patch lies over the eyes (the
    covering's pixels beside it are still painted, by _reach_covering)."""
    got = _drifted(scene, slide)
    assert got["covering_left"] < 0.01
    if slide:
        assert got["eyes_changed"] < 0.01
    else:
        assert got["eyes_changed"] > 0.05


def test_the_slide_is_not_drawn_to_a_background_of_the_covering_s_colour(scene: dict) -> None:
    """A wall of the covering's colour beside the face, beyond how far the patch may slide,
    does not pull it: the patch lands where it does on a plain background."""
    plain = _drifted(scene, True)
    wall = _drifted(scene, True, background=True)
    assert wall["eyes_changed"] < 0.01 and wall["covering_left"] < 0.01
    face = (plain["out"] != scene["image"]).any(axis=-1)
    assert np.array_equal(plain["out"][face], wall["out"][face])


def _pitched(scene: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The head pitched since the keyframe: the keyframe's covered region (canonical), the
    covering now (canonical: its top edge a third of the eye distance lower, and in frame
    pixels) and the frame with the covering drawn."""
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    inv = align.invert(align.to_canonical(lm5))
    key = lower_face_mask() > 0
    now = key.copy()
    top = int(np.nonzero(key.any(axis=1))[0][0])
    now[: top + 24] = False  # canonical px
    covering = cv2.warpAffine(now.view(np.uint8), inv, (w, h), flags=cv2.INTER_NEAREST) > 0
    frame = image.copy()
    frame[covering] = MASK_BGR
    return key, now, covering, frame


@pytest.mark.parametrize("slide", [True, False])
def test_between_keyframes_the_patch_recedes_with_its_covering_s_top_edge(
    scene: dict, slide: bool
) -> None:
    """The head pitched since the keyframe: the covering's top edge came down the nose by a
    third of the eye distance, and the patch, which keeps its keyframe's shape, would lie over
    the lower lids and the eyes. Between keyframes it is trimmed to the covering in view: the
    eyes and brows stay as they were, and the covering is still painted all over. Without the
    slide (keyframe.slide, which also reads the covering for this) the patch covers the eyes'
    band's lower part."""
    lm5 = scene["lm"]
    key, _, covering, frame = _pitched(scene)
    out = _carried(scene, key, frame, lm5, slide)
    eyes_changed = _eyes_changed(scene, out, frame, covering)
    assert (out[covering] == MASK_BGR).all(axis=1).mean() < 0.01
    if slide:
        assert eyes_changed < 0.01
    else:
        assert eyes_changed > 0.05


def test_the_patch_whose_region_is_the_covering_in_view_fits_better(scene: dict) -> None:
    """Of two keyframes' patches, the one whose covered region is the covering now in view
    fits the face better (covering_fit: the pipeline takes it between the two keyframes):
    the head pitched since the earlier keyframe, whose region still reaches a third of the
    eye distance higher, over the lower lids; also with the track's landmarks drifted by a
    tenth of the eye distance (the fit looks within the slide's reach). A patch that does not
    say what its covering looks like has no fit."""
    lm5 = scene["lm"]
    key, now, _, frame = _pitched(scene)
    pitched, level = _keyframe_patch(scene, key), _keyframe_patch(scene, now)
    eyes = float(np.hypot(*(lm5[1] - lm5[0])))
    for lm in (lm5, lm5 + np.float32([0.1, -0.1]) * eyes):
        fits = [covering_fit(frame, lm, p) for p in (level, pitched)]
        assert fits[0] is not None and fits[1] is not None
        assert fits[0] > 0.9 and fits[0] - fits[1] > 0.1, fits
    assert covering_fit(frame, lm5, scene["patch"]) is None  # no cover_colour


def test_between_keyframes_nothing_beyond_the_patch_s_reach_is_taken_for_its_covering(
    scene: dict,
) -> None:
    """Beside a covering, dark hair, a dark stage or a lower lid can look like it. Between
    keyframes the patch takes the pixels that look like its covering only where it reaches
    (its feather band, and one pixel beyond): a band of the covering's colour beside the
    covering, 17 canonical px from its side (beyond the patch's 12 px margin), stays as it
    was; the covering itself is painted all over."""
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    inv = align.invert(align.to_canonical(lm5))
    key = lower_face_mask() > 0
    rows = np.nonzero(key.any(axis=1))[0]
    left = int(np.nonzero(key[rows[len(rows) // 2]])[0][0])  # the covering's side, mid-height
    beside = np.zeros_like(key)
    y0, y1 = rows[len(rows) // 2] - 20, rows[len(rows) // 2] + 20
    beside[y0:y1, left - 21 : left - 17] = True
    beside &= ~cv2.dilate(key.view(np.uint8), np.ones((33, 33), np.uint8)).astype(bool)
    covering = cv2.warpAffine(key.view(np.uint8), inv, (w, h), flags=cv2.INTER_NEAREST) > 0
    band = cv2.warpAffine(beside.view(np.uint8), inv, (w, h), flags=cv2.INTER_NEAREST) > 0
    assert band.sum() > 20
    frame = image.copy()
    frame[covering | band] = MASK_BGR
    out = _carried(scene, key, frame, lm5)
    assert (out[covering] == MASK_BGR).all(axis=1).mean() < 0.01
    assert np.array_equal(out[band], frame[band])


def _past_the_crop(scene: dict, reach: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A covering on a turned face whose near side reaches past the crop's right edge: the
    keyframe's region (canonical, solid up to that edge), the covering in the frame (its wing
    `reach` canonical px past the edge) and the wing alone (frame pixels)."""
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    m = align.to_canonical(lm5)
    inv = align.invert(m)
    key = lower_face_mask() > 0
    key[150:226, 128:] = True  # the near side, on to the crop's edge
    size = align.CANON_SIZE
    wide = np.zeros((align.CANON_HEIGHT, size + 128), np.uint8)
    wide[:, :size] = key
    wide[158:218, size : size + reach] = 1  # past the edge
    wing = np.zeros_like(wide)
    wing[158:218, size : size + reach] = 1
    # the wide canvas is canonical space with more columns on the right: the same transform
    covering = cv2.warpAffine(wide, inv, (w, h), flags=cv2.INTER_NEAREST) > 0
    beyond = cv2.warpAffine(wing, inv, (w, h), flags=cv2.INTER_NEAREST) > 0
    crop = cv2.warpAffine(np.ones(align.CANON_SHAPE, np.uint8), inv, (w, h)) > 0
    return key, covering, beyond & ~crop


@pytest.mark.parametrize("reach", [30, 100])
def test_the_covering_past_the_crop_s_side_is_painted_where_it_ends(
    scene: dict, reach: int
) -> None:
    """On a turned face the covering's near side can reach past the side edge of the face's
    crop, where no patch is painted. A wing of it that ends within reach of the edge (30
    canonical px) is painted over from what surrounds it, on the keyframe's own frame and
    between keyframes; nothing else outside the patch changes. One that runs on (100 px: hair,
    a hood, a collar of the covering's colour) is left as it is."""
    image, lm5 = scene["image"], scene["lm"]
    h, w = image.shape[:2]
    key, covering, wing = _past_the_crop(scene, reach)
    assert wing.sum() > 300
    alpha = regions.feather(key, 0, 2)
    patch, comp = _between_keyframes_patch(scene, alpha, np.float32(MASK_BGR))
    track = FaceTrack(1, scene["box"], lm5)
    inv = align.invert(align.to_canonical(lm5))
    support = cv2.warpAffine((alpha > 0).astype(np.uint8), inv, (w, h)) > 0
    support = cv2.dilate(support.view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    near_wing = cv2.dilate(wing.view(np.uint8), np.ones((13, 13), np.uint8)) > 0  # its rim
    for index in (0, 5):  # the keyframe's own frame (a photo), then one between keyframes
        frame = image.copy()
        frame[covering] = MASK_BGR
        before = frame.copy()
        comp.begin_frame(index)
        comp.composite(frame, track, patch)
        left = (np.abs(frame[wing].astype(np.int16) - MASK_BGR).max(axis=1) < 30).mean()
        if reach <= 64:
            assert left < 0.05, (index, left)  # before: 1.0
            changed = (frame != before).any(axis=-1)
            assert not (changed & ~support & ~near_wing).any(), index
        else:  # but for the patch's own edge, half a pixel past the crop
            assert left > 0.97, (index, left)
