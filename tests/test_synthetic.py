"""Synthetic face masks drawn on real unmasked faces (astronaut, ../shared/data/unmasked)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lostface.errors import InputError
from lostface.synthetic import KINDS, VARIANTS, draw_mask
from tests.conftest import shared_path


@pytest.fixture(scope="module")
def detector():  # the project detector, imported where it is used
    detectors = pytest.importorskip("lostface.tracking.detectors")
    from lostface.config import DetectSettings

    return detectors.CenterFaceDetector(DetectSettings())


def largest_face(detector, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    det = detector.detect(image)
    assert len(det) > 0, "no face found"
    area = (det.boxes[:, 2] - det.boxes[:, 0]) * (det.boxes[:, 3] - det.boxes[:, 1])
    i = int(np.argmax(area))
    return det.boxes[i], det.landmarks[i]


@pytest.fixture(scope="module")
def astronaut_face(detector, astronaut_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return largest_face(detector, astronaut_bgr)


def unmasked_sample(n: int) -> list[np.ndarray]:
    files = sorted(shared_path("unmasked").glob("*.jpg"))
    step = max(1, len(files) // n)
    return [cv2.imread(str(f)) for f in files[::step][:n]]


def at(mask: np.ndarray, point: np.ndarray) -> bool:
    x, y = np.round(point).astype(int)
    return bool(mask[y, x])


def check_plausible(covered: np.ndarray, box: np.ndarray, lm: np.ndarray) -> None:
    """Covers the lower face: mouth corners and lower nose in, eyes out, inside the face box."""
    assert covered.any()
    eye_dist = float(np.hypot(*(lm[1] - lm[0])))
    mouth = (lm[3] + lm[4]) / 2
    assert at(covered, lm[3]) and at(covered, lm[4])
    assert at(covered, mouth)
    assert at(covered, lm[2] + 0.5 * (mouth - lm[2]))  # between nose tip and mouth
    assert at(covered, lm[2] + 0.1 * (mouth - lm[2]))  # the lower part of the nose
    ys, xs = np.nonzero(covered)
    eye_vec = (lm[1] - lm[0]) / eye_dist
    down = np.array([-eye_vec[1], eye_vec[0]])  # across the eye line, towards the mouth
    for eye in lm[:2]:
        rel = np.stack([xs, ys], axis=1) - eye
        along, across = rel @ eye_vec / eye_dist, rel @ down / eye_dist
        inside_eye = (along / 0.22) ** 2 + (across / 0.12) ** 2 < 1
        assert not inside_eye.any(), "the mask reaches an eye"
    depth = (np.stack([xs, ys], axis=1) - lm[:2].mean(axis=0)) @ down
    assert depth.min() > 0.05 * eye_dist  # wholly below the eye line, whatever the roll
    w, h = box[2] - box[0], box[3] - box[1]
    assert np.median(ys) > (box[1] + box[3]) / 2  # mostly in the lower half of the face box
    assert xs.min() >= box[0] - 0.2 * w and xs.max() <= box[2] + 0.2 * w
    assert ys.max() <= box[3] + 0.35 * h


@pytest.mark.parametrize("kind", KINDS)
def test_mask_on_astronaut_is_plausible_and_leaves_input_alone(
    kind: str, astronaut_bgr: np.ndarray, astronaut_face: tuple[np.ndarray, np.ndarray]
) -> None:
    box, lm = astronaut_face
    before = astronaut_bgr.copy()
    syn = draw_mask(astronaut_bgr, lm, kind, rng=3)
    np.testing.assert_array_equal(astronaut_bgr, before)
    assert syn.image.shape == before.shape and syn.image.dtype == np.uint8
    assert syn.covered.shape == before.shape[:2] and syn.covered.dtype == bool
    assert syn.kind == kind and syn.variant in VARIANTS
    check_plausible(syn.covered, box, lm)
    # Pixels change under the mask and in a thin band around it (shadow, ear loops), nowhere else.
    eye_dist = float(np.hypot(*(lm[1] - lm[0])))
    r = int(0.5 * eye_dist)
    near = cv2.dilate(syn.covered.astype(np.uint8), np.ones((2 * r + 1, 2 * r + 1), np.uint8)) > 0
    changed = (syn.image != before).any(axis=2)
    assert not changed[~near].any()
    assert changed[syn.covered].mean() > 0.95


@pytest.mark.parametrize("kind", KINDS)
def test_same_seed_same_mask_other_seed_other_mask(
    kind: str, astronaut_bgr: np.ndarray, astronaut_face: tuple[np.ndarray, np.ndarray]
) -> None:
    _, lm = astronaut_face
    a = draw_mask(astronaut_bgr, lm, kind, rng=np.random.default_rng(11))
    b = draw_mask(astronaut_bgr, lm, kind, rng=np.random.default_rng(11))
    c = draw_mask(astronaut_bgr, lm, kind, rng=12, variant=a.variant)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.covered, b.covered)
    assert not np.array_equal(a.image, c.image)


def test_variants_have_their_colour(
    astronaut_bgr: np.ndarray, astronaut_face: tuple[np.ndarray, np.ndarray]
) -> None:
    _, lm = astronaut_face
    stats = {}
    for variant in VARIANTS:
        syn = draw_mask(astronaut_bgr, lm, "cloth", rng=5, variant=variant)
        px = syn.image[syn.covered]
        chroma = cv2.cvtColor(px[None], cv2.COLOR_BGR2LAB)[0, :, 1:].astype(np.float64)
        stats[variant] = (np.median(px.astype(np.float64), axis=0), chroma.std(axis=0).sum())
    b, g, r = stats["light_blue"][0]
    assert b > r + 40 and g > r
    assert stats["black"][0].mean() < 60
    assert stats["white"][0].mean() > 150 and np.ptp(stats["white"][0]) < 25
    assert stats["pattern"][1] > 3 * stats["white"][1]  # a two-colour print, not plain fabric


def test_mask_takes_the_face_lighting(
    astronaut_bgr: np.ndarray, astronaut_face: tuple[np.ndarray, np.ndarray]
) -> None:
    """Light falling off across the face darkens that side of the mask too: not a sticker."""
    _, lm = astronaut_face
    h, w = astronaut_bgr.shape[:2]
    falloff = np.linspace(1.0, 0.45, w, dtype=np.float32)[None, :, None]
    dim = np.clip(astronaut_bgr.astype(np.float32) * falloff, 0, 255).astype(np.uint8)
    cx = int(round(float(lm[2, 0])))

    def side_ratio(image: np.ndarray) -> float:
        syn = draw_mask(image, lm, "surgical", rng=2, variant="white")
        lum = cv2.cvtColor(syn.image, cv2.COLOR_BGR2GRAY).astype(np.float64)
        left, right = syn.covered.copy(), syn.covered.copy()
        left[:, cx:] = False
        right[:, :cx] = False
        return float(np.median(lum[right]) / np.median(lum[left]))

    assert side_ratio(dim) < side_ratio(astronaut_bgr) - 0.1


def test_mask_has_a_soft_shadow_under_its_top_edge(
    astronaut_bgr: np.ndarray, astronaut_face: tuple[np.ndarray, np.ndarray]
) -> None:
    _, lm = astronaut_face
    syn = draw_mask(astronaut_bgr, lm, "cloth", rng=4, variant="white")
    lum = cv2.cvtColor(syn.image, cv2.COLOR_BGR2GRAY).astype(np.float64)
    col = int(round(float(lm[2, 0]))) + 3  # beside the centre seam
    rows = np.nonzero(syn.covered[:, col])[0]
    top = lum[rows[1:4], col].mean()
    below = lum[rows[12:18], col].mean()
    assert top < below - 8


def test_rotated_face_mask_follows_the_roll(astronaut_bgr: np.ndarray, detector) -> None:
    h, w = astronaut_bgr.shape[:2]
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 25, 1.0)
    turned = cv2.warpAffine(astronaut_bgr, rot, (w, h), borderMode=cv2.BORDER_REFLECT)
    box, lm = largest_face(detector, turned)
    syn = draw_mask(turned, lm, "n95", rng=1)
    for p in (lm[3], lm[4], lm[2] + 0.5 * ((lm[3] + lm[4]) / 2 - lm[2])):
        assert at(syn.covered, p)
    assert not at(syn.covered, lm[0]) and not at(syn.covered, lm[1])


def test_masks_on_real_unmasked_photos_are_plausible(detector) -> None:
    for i, image in enumerate(unmasked_sample(8)):
        box, lm = largest_face(detector, image)
        for j, kind in enumerate(KINDS):
            syn = draw_mask(image, lm, kind, rng=100 * i + j)
            check_plausible(syn.covered, box, lm)


def test_bad_arguments_raise_input_errors(
    astronaut_bgr: np.ndarray, astronaut_face: tuple[np.ndarray, np.ndarray]
) -> None:
    _, lm = astronaut_face
    with pytest.raises(InputError, match="kind"):
        draw_mask(astronaut_bgr, lm, "scarf")
    with pytest.raises(InputError, match="variant"):
        draw_mask(astronaut_bgr, lm, "cloth", variant="plaid")
    with pytest.raises(InputError, match="landmarks"):
        draw_mask(astronaut_bgr, lm[:3], "cloth")
    with pytest.raises(InputError, match="uint8"):
        draw_mask(astronaut_bgr.astype(np.float32), lm, "cloth")


@pytest.mark.parametrize("variant", ["black", "white", "light_blue"])
def test_nothing_outside_the_truth_but_a_faint_shadow(
    variant: str, astronaut_bgr: np.ndarray, astronaut_face: tuple[np.ndarray, np.ndarray]
) -> None:
    """`covered` holds every pixel the material touches: outside it pixels only darken a
    little (contact shadow), never lighten (no bright outline a real mask lacks)."""
    _, lm = astronaut_face
    syn = draw_mask(astronaut_bgr, lm, "surgical", rng=2, variant=variant)
    before = astronaut_bgr.astype(np.int32)[~syn.covered]
    after = syn.image.astype(np.int32)[~syn.covered]
    assert (after <= before + 1).all()
    assert (after >= 0.75 * before - 2).all()


def test_ear_loops_are_part_of_the_truth(
    astronaut_bgr: np.ndarray, astronaut_face: tuple[np.ndarray, np.ndarray]
) -> None:
    _, lm = astronaut_face
    plain = draw_mask(astronaut_bgr, lm, "surgical", rng=2, variant="black")
    loops = draw_mask(astronaut_bgr, lm, "surgical", rng=2, variant="black", ear_loops=True)
    extra = loops.covered & ~plain.covered
    assert extra.sum() > 20  # loops reach out toward the ears
    # in the black material's colour: darker than what they cross (bar dark hair)
    now = loops.image[extra].mean(axis=1)
    was = plain.image[extra].astype(np.float64).mean(axis=1)
    assert (now <= was + 2).mean() > 0.8 and now.mean() < was.mean() - 15


def test_mask_on_a_turned_face_wraps_around_the_near_cheek(detector) -> None:
    """Three-quarter faces in real footage (the stage clip's last shot, the nose pointing
    left): a worn mask reaches back across the near cheek toward the ear and ends at the
    face's front silhouette, instead of a flat outline centred on the landmarks."""
    from lostface.restore.align import yaw_proxy
    from lostface.stream.video import read_frames

    frames = read_frames(shared_path("video", "stage_clip.mp4"))
    for i in (215, 240, 270):
        box, lm = largest_face(detector, frames[i])
        assert yaw_proxy(lm) < -0.4  # turned: the nose points to the image's left
        syn = draw_mask(frames[i], lm, "surgical", rng=i)
        y = int(round(float(lm[3, 1] + lm[4, 1]) / 2))  # the mouth's row
        xs = np.nonzero(syn.covered[y])[0]
        width = float(box[2] - box[0])
        near = (xs.max() - lm[2, 0]) / width  # from the nose tip back toward the ear
        far = (lm[2, 0] - xs.min()) / width  # from the nose tip forward, into the air
        assert near > 0.5, (i, near)  # a flat outline reached 0.3-0.45 here
        assert far < 0.15, (i, far)
        mouth = (lm[3] + lm[4]) / 2
        for p in (lm[3], lm[4], mouth, lm[2] + 0.5 * (mouth - lm[2])):
            assert at(syn.covered, p)
        assert not at(syn.covered, lm[0]) and not at(syn.covered, lm[1])


def test_steady_landmarks_average_one_face_within_a_shot() -> None:
    from lostface.synthetic import steady_landmarks

    rng = np.random.default_rng(0)
    base = np.array([[40, 50], [80, 50], [60, 70], [45, 90], [75, 90]], np.float64)
    lms = [base + rng.normal(0, 2.0, base.shape) for _ in range(9)]
    boxes = [np.array([20, 20, 100, 120], np.float64) for _ in range(9)]
    lms[8] = base + 300.0  # another face, far away (no box overlap)
    boxes[8] = boxes[0] + 300.0
    shots = [0, 0, 0, 0, 0, 1, 1, 1, 1]
    out = steady_landmarks([*lms[:4], None, *lms[5:]], [*boxes[:4], None, *boxes[5:]], shots, k=2)
    assert out[4] is None
    raw = np.mean([np.abs(lm - base).mean() for lm in lms[:8]])
    steady = np.mean([np.abs(o - base).mean() for o in out[:4] + out[5:8]])
    assert steady < 0.75 * raw  # the jitter is averaged away
    np.testing.assert_allclose(out[3], np.mean([lms[1], lms[2], lms[3]], axis=0))  # shot 0 only
    np.testing.assert_allclose(out[5], np.mean([lms[5], lms[6], lms[7]], axis=0))  # not face 8
    np.testing.assert_allclose(out[8], lms[8])  # alone in its group
