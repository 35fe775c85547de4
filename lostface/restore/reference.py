"""Reference restoration: paint a masked lower face from the person's own unmasked photo.

The reference photos are aligned to canonical space once, before the frame loop. On a
keyframe the restorer picks the reference whose head pose is closest to the target's,
aligns it by the landmarks a face mask leaves visible (eyes, nose), re-places it by matching
its brows and eyes to the face's own (the landmarks a detector finds on a masked face sit off,
mostly too high), moves its colour and lighting onto the target's visible skin, and blends it
in through the cover alpha.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from lostface.config import RestoreSettings
from lostface.errors import InputError
from lostface.frame import CoverMask
from lostface.restore.align import (
    CANON_DSIZE,
    CANON_HEIGHT,
    CANON_SHAPE,
    CANON_SIZE,
    VISIBLE_WEIGHTS,
    apply,
    compose,
    pitch_proxy,
    scale_of,
    similarity,
    to_canonical,
    yaw_proxy,
)
from lostface.restore.fill import (
    AROUND_OUTLINE,
    COVERED_CHIN,
    OUTLINE_EDGE,
    NeutralFill,
    beside_fill,
    on_face_or_neck,
    push_pull,
    smooth_inpaint,
)
from lostface.restore.mesh import FaceMesh, outline_mask
from lostface.restore.regions import face_oval_mask, mid_skin_mask, squared_z, upper_skin_mask
from lostface.restore.warp import MAX_DISAGREEMENT, disagreement, rendered_maps
from lostface.stages import Detector, Restorer, Segmenter
from lostface.stream.image import read_image as load_image

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# A mirrored reference covers the opposite head turn, but faces are not perfectly
# symmetric: it is chosen only when clearly closer in pose (squared eye distances).
MIRROR_PENALTY = 0.004
# Lab statistics of a skin region: mean and standard deviation per channel.
_SKIN_STD_MIN = 2.0
# Eye fit (restore.refine): the band of the canonical crop that holds brows and eyes (rows
# y0..y1, columns x0..x1), the largest shift searched (x, y canonical px) and the scales tried
# about the band's centre. The best placement must correlate at least _FIT_MIN_NCC, beat the
# landmarks' own placement clearly, by _FIT_GAIN (where they already sit near the eyes, a
# slightly better correlation elsewhere is more often a brow raised than a better fit), and
# lie inside the searched range (a best match on its edge means the eyes were not found).
_FIT_BAND = (62, 120, 46, 210)
_FIT_SHIFT = (24, 32)
_FIT_SCALES = (0.95, 1.0, 1.05)
_FIT_MIN_NCC = 0.4
_FIT_GAIN = 0.15
# Something held in front of a reference's lower face (a microphone, a phone, a cup) is no
# part of the face: pixels that hold less than _HELD_GREY of the forehead's chroma and are
# darker than _HELD_DARK of its lightness, with the grey pixels joined to them up to
# _HELD_LIGHT of it (a grille's highlights), grown by _HELD_RIM (its rim). It is held from
# below: it reaches down past _HELD_BELOW of the mouth corners' distance below their line and
# no higher than _HELD_ABOVE of it above (a beard or a moustache reaches up beside the mouth).
# The mouth (an ellipse about its corners, of these half-axes as shares of their distance) is
# never one, as an open mouth is dark too
_HELD_DARK = 0.6
_HELD_LIGHT = 0.9
_HELD_GREY = 0.45
_HELD_ABOVE = 0.1
_HELD_BELOW = 1.0
_MOUTH_AXES = (0.75, 0.45)
_HELD_SOME = 0.05  # held_in_front's softened value that marks a pixel as held
_HELD_RIM = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))


@dataclass(slots=True)
class Reference:
    """One reference face in canonical space.

    image: (S,S,3) uint8 BGR canonical crop; landmarks: its 5 points in canonical space;
    yaw/pitch: pose proxies (see align.yaw_proxy); skin_mean/skin_std: Lab statistics of
    its upper-face skin, used to move its colours onto a target.
    """

    name: str
    image: np.ndarray
    landmarks: np.ndarray
    yaw: float
    pitch: float
    skin_mean: np.ndarray
    skin_std: np.ndarray
    mirrored: bool = False
    person: str = ""  # whose photo: the NAME of --reference NAME=PATH, else the PATH given

    def mirror(self) -> Reference:
        """The horizontally flipped reference (covers the opposite head turn)."""
        s = self.image.shape[1]
        lm = self.landmarks.copy()
        lm[:, 0] = (s - 1) - lm[:, 0]
        lm = lm[[1, 0, 2, 4, 3]]
        return Reference(
            name=self.name,
            image=np.ascontiguousarray(self.image[:, ::-1]),
            landmarks=lm,
            yaw=yaw_proxy(lm),
            pitch=pitch_proxy(lm),
            skin_mean=self.skin_mean.copy(),
            skin_std=self.skin_std.copy(),
            mirrored=True,
            person=self.person,
        )


def lab_stats(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std (Lab, float32 scaled as by cv2 for float input) over mask > 0."""
    lab = cv2.cvtColor(image.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    sel = lab[mask > 0]
    if len(sel) < 16:
        sel = lab.reshape(-1, 3)
    return sel.mean(0).astype(np.float32), np.maximum(sel.std(0), _SKIN_STD_MIN).astype(np.float32)


def read_image(path: Path) -> np.ndarray:
    """A reference photo as BGR uint8 (lostface.stream.image decodes it), any transparency
    composited over mid-grey so the detector sees a plain background."""
    img = load_image(path)
    if img.alpha is None:
        return img.bgr
    a = img.alpha[:, :, None].astype(np.float32) / 255.0
    return (img.bgr.astype(np.float32) * a + 128.0 * (1.0 - a) + 0.5).astype(np.uint8)


def align_face(image: np.ndarray, landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Canonical crop and canonical landmarks of a face, anti-aliased for large faces."""
    m = to_canonical(landmarks)
    s = scale_of(m)
    if s < 0.6:
        # warpAffine samples without low-pass: shrink first so the warp scales by ~0.75.
        f = s / 0.75
        small = cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        ms = m.copy()
        ms[:, :2] = m[:, :2] / f
        ms[:, 2] = m[:, 2] + m[:, :2] @ np.full(2, 0.5 / f - 0.5)
        crop = cv2.warpAffine(
            small,
            ms,
            CANON_DSIZE,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    else:
        crop = cv2.warpAffine(
            image,
            m,
            CANON_DSIZE,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )
    return crop, apply(m, np.asarray(landmarks)[:5]).astype(np.float32)


class ReferenceBank:
    """The person's unmasked photos, aligned to canonical space once before the frame loop
    (empty for a restorer that starts with none and learns people from the footage itself,
    lostface.restore.selfref)."""

    def __init__(self, references: list[Reference]) -> None:
        self.references = list(references)
        self.mirrored = [r.mirror() for r in self.references]

    def candidates(self, mirror: bool = True) -> list[Reference]:
        return self.references + self.mirrored if mirror else self.references

    def __len__(self) -> int:
        return len(self.references)

    @staticmethod
    def expand(paths: list[str | Path]) -> list[tuple[Path, bool]]:
        """(photo, whether it came from a folder) for every file and folder given."""
        files: list[tuple[Path, bool]] = []
        for p in paths:
            path = Path(p).expanduser()
            if path.is_dir():
                found = sorted(f for f in path.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
                if not found:
                    raise InputError(
                        f"Reference folder {path} holds no image (jpg, png, webp, bmp); "
                        "put unmasked photos of the person in it."
                    )
                files.extend((f, True) for f in found)
            elif path.is_file():
                files.append((path, False))
            else:
                raise InputError(f"Reference photo {path} does not exist; check the path.")
        return files

    @classmethod
    def from_image(
        cls,
        name: str,
        image: np.ndarray,
        detector: Detector,
        segmenter: Segmenter | None = None,
    ) -> Reference:
        """Align the largest face of one BGR photo; InputError when it has none, or when
        `segmenter` judges its lower face covered (a covering would be painted back on)."""
        dets = detector.detect(image)
        if len(dets) == 0:
            raise InputError(
                f"Reference photo {name} shows no face the detector can find; "
                "use a sharp, frontal, unmasked photo of the person."
            )
        b = dets.boxes
        i = int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))
        if len(dets) > 1:
            x0, y0, x1, y1 = (int(round(float(v))) for v in b[i])
            log.warning(
                "Reference photo %s shows %d faces; the largest one is used (box %d,%d-%d,%d, "
                "%dx%d px): crop the photo to the person if that is someone else.",
                name,
                len(dets),
                x0,
                y0,
                x1,
                y1,
                x1 - x0,
                y1 - y0,
            )
        crop, lm = align_face(image, dets.landmarks[i][:5])
        if segmenter is not None:
            # a reference is presumed open: judged as a face last seen uncovered, so it needs
            # clear evidence (the segmenter's hysteresis) to count as covered
            cover = segmenter.segment(crop, lm, False)
            if cover.covered:
                raise CoveredReference(
                    f"Reference photo {name} shows a face whose lower half looks covered "
                    f"(covering score {cover.score:.2f}); give a photo of the person without a "
                    "mask (if it shows none, --set restore.check_references=false accepts it).",
                    cover.score,
                )
        mean, std = lab_stats(crop, upper_skin_mask())
        return Reference(name, crop, lm, yaw_proxy(lm), pitch_proxy(lm), mean, std)

    @classmethod
    def from_images(
        cls,
        images: list[tuple[str, np.ndarray]],
        detector: Detector,
        segmenter: Segmenter | None = None,
    ) -> ReferenceBank:
        """Already decoded photos as (name, BGR uint8 image) pairs."""
        if not images:
            raise InputError("No reference photo was given; pass at least one unmasked photo.")
        refs = []
        for name, img in images:
            ref = cls.from_image(name, img, detector, segmenter)
            ref.person = name
            refs.append(ref)
        return cls(refs)

    def merged(self, other: ReferenceBank) -> ReferenceBank:
        return ReferenceBank(self.references + other.references)

    @classmethod
    def from_paths(
        cls,
        paths: list[str | Path],
        detector: Detector,
        segmenter: Segmenter | None = None,
    ) -> ReferenceBank:
        """Files or folders of photos, each PATH or NAME=PATH (parse_references); the largest
        face of each photo becomes a reference of that person.

        segmenter: judges each face; a covered one is refused when named on its own, and
        skipped with a warning when it comes from a folder (the folder's others are used)."""
        if not paths:
            raise InputError("No reference photo was given; pass at least one unmasked photo.")
        refs: list[Reference] = []
        skipped: list[str] = []
        for person, path in parse_references(paths):
            for f, in_folder in cls.expand([path]):
                try:
                    ref = cls.from_image(str(f), read_image(f), detector, segmenter)
                except CoveredReference as exc:
                    if not in_folder:
                        raise
                    log.warning(
                        "Reference photo %s skipped: its lower face looks covered (covering "
                        "score %.2f); the folder's other photos are used.",
                        f,
                        exc.score,
                    )
                    skipped.append(str(f))
                    continue
                ref.person = person
                refs.append(ref)
        if not refs:
            raise InputError(
                f"Every reference photo looks covered ({', '.join(skipped)}); give photos of "
                "the person without a mask."
            )
        log.info("reference bank: %d photo(s)", len(refs))
        return cls(refs)

    def people(self) -> dict[str, list[np.ndarray]]:
        """Person -> canonical crops of their photos."""
        out: dict[str, list[np.ndarray]] = {}
        for r in self.references:
            out.setdefault(r.person or r.name, []).append(r.image)
        return out


def parse_references(items: list[str | Path]) -> list[tuple[str, Path]]:
    """(person, path) for each reference argument: PATH (a file or folder: one person, known
    by the path as given) or NAME=PATH. An empty or repeated name is refused."""
    out: list[tuple[str, Path]] = []
    names: set[str] = set()
    for item in items:
        text = str(item)
        if isinstance(item, Path) or "=" not in text or Path(text).expanduser().exists():
            out.append((text, Path(text)))
            continue
        name, path = (part.strip() for part in text.split("=", 1))
        if not name:
            raise InputError(
                f"Reference {text!r} has an empty name; write NAME=PATH, "
                "e.g. --reference alice=alice.jpg."
            )
        if not path:
            raise InputError(f"Reference {text!r} names no photo; write NAME=PATH.")
        if name in names:
            raise InputError(
                f"Reference name {name!r} is given twice; give each person one name "
                "(put several photos of one person in a folder: NAME=FOLDER)."
            )
        names.add(name)
        out.append((name, Path(path)))
    return out


class CoveredReference(InputError):
    """A reference photo whose face the segmenter judges covered (score: its evidence)."""

    def __init__(self, message: str, score: float) -> None:
        super().__init__(message)
        self.score = score


def _chroma_weight(lab: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Skin likeness in [0,1] of every pixel from its a/b distance to the skin sample."""
    mu = skin[:, 1:].mean(0)
    sd = np.maximum(skin[:, 1:].std(0) * 2.5, 5.0)
    return np.exp(-0.5 * squared_z(lab[..., 1:], mu, sd))


def skin_weight(lab: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """Skin likeness in [0,1] of every pixel against a skin sample (Lab, cv2 float scale).

    Lightness is compared as a ratio (shading scales it) with a generous spread, since the
    lower face is often lit differently from the forehead; chroma by robust z-scores."""
    med = np.median(skin, axis=0)
    mad = 1.4826 * np.median(np.abs(skin - med), axis=0)
    sd_ab = np.clip(mad[1:] * 2.5, 5.0, 12.0)
    d = squared_z(lab[..., 1:], med[1:], sd_ab)
    log_l = np.log((lab[..., 0] + 8.0) / (med[0] + 8.0))
    d = d + (log_l / 0.3) ** 2
    return np.exp(-0.5 * d)


_SHARP_SIGMAS = (0.0, 0.7, 1.0, 1.4, 2.0, 2.8, 4.0, 5.6)


def _detail_ratio(grey: np.ndarray, sel: np.ndarray) -> float:
    """Fine detail over coarser detail on the selected pixels: falls as an image is blurred,
    and does not depend on its contrast or brightness."""
    b1 = cv2.GaussianBlur(grey, (0, 0), 1.0)
    b3 = cv2.GaussianBlur(grey, (0, 0), 3.0)
    fine = float(np.abs(grey - b1)[sel].mean())
    coarse = float(np.abs(b1 - b3)[sel].mean())
    return fine / max(coarse, 1e-3)


def match_sharpness(face: np.ndarray, warped: np.ndarray, visible: np.ndarray) -> np.ndarray:
    """Blur the aligned reference to the target's sharpness, judged on the upper face both show.

    A reference photo is usually sharper than a small, defocused or compressed face in a
    video; pasted as is, its crisp mouth stands out of a soft face. The blur is the smallest
    of a few Gaussian widths whose detail ratio is no higher than the target's."""
    sel = visible > 0
    if int(sel.sum()) < 400:
        return warped
    t = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY).astype(np.float32)
    w = cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY).astype(np.float32)
    target = _detail_ratio(t, sel)
    for sigma in _SHARP_SIGMAS:
        grey = w if sigma == 0 else cv2.GaussianBlur(w, (0, 0), sigma)
        if _detail_ratio(grey, sel) <= target:
            break
    if sigma == 0:
        return warped
    return cv2.GaussianBlur(warped, (0, 0), sigma)


def contrast_ratio(face: np.ndarray, warped: np.ndarray, visible: np.ndarray) -> float:
    """How much contrast the target's visible upper face shows next to the aligned
    reference's (mean deviation from an 8 px blur), at most 1."""
    sel = visible > 0
    if int(sel.sum()) < 400:
        return 1.0
    amp = []
    for img in (face, warped):
        g = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
        amp.append(float(np.abs(g - cv2.GaussianBlur(g, (0, 0), 8.0))[sel].mean()))
    return float(np.clip(amp[0] / max(amp[1], 1e-3), 0.0, 1.0))


def fit_eyes(face: np.ndarray, warped: np.ndarray) -> np.ndarray | None:
    """Where the aligned reference's brows and eyes best match the face's own: a 2x3 map in
    canonical pixels (a shift and a scale about the band's centre) to apply after the
    landmark alignment, or None when no placement matches clearly better than the landmarks'.

    A detector's landmarks on a masked face are guesses for the hidden half, and they drag the
    visible half along: with a synthetic mask drawn on 100 photos the embedded detector's eyes
    sit 0.05-0.07 eye distances higher than on the same photos unmasked (median; one face in
    ten beyond 0.12, bench/segmentation.py), more on small faces. Brows and eyes are what the
    face still shows, so the reference is placed by them (normalised cross-correlation, which
    ignores brightness and contrast, over shifts and three scales)."""
    y0, y1, x0, x1 = _FIT_BAND
    rx, ry = _FIT_SHIFT
    t = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    w = cv2.cvtColor(warped, cv2.COLOR_BGR2GRAY)
    sy0 = max(y0 - ry, 0)
    search = t[sy0 : y1 + ry, max(x0 - rx, 0) : x1 + rx]
    oy, ox = y0 - sy0, x0 - max(x0 - rx, 0)  # where the unmoved band sits in the search
    centre = ((x0 + x1) / 2.0, (y0 + y1) / 2.0)
    best: tuple[float, int, int, float] | None = None
    base = -1.0
    for scale in _FIT_SCALES:
        a = cv2.getRotationMatrix2D(centre, 0.0, scale)
        a[:, 2] -= (x0, y0)  # render just the band
        band = cv2.warpAffine(w, a, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR)
        if float(band.std()) < 2.0:
            return None  # a flat reference band: nothing to match
        ncc = cv2.matchTemplate(search, band, cv2.TM_CCOEFF_NORMED)
        if scale == 1.0:
            base = float(ncc[oy, ox])
        inner = ncc[1:-1, 1:-1]
        if inner.size == 0:
            return None
        _, peak, _, (px, py) = cv2.minMaxLoc(inner)
        if best is None or peak > best[0]:
            best = (float(peak), px + 1 - ox, py + 1 - oy, scale)
    if best is None:
        return None
    peak, dx, dy, scale = best
    if peak < _FIT_MIN_NCC or peak < base + _FIT_GAIN:
        return None
    a = cv2.getRotationMatrix2D(centre, 0.0, scale)
    a[:, 2] += (dx, dy)
    return a


class ReferenceRestorer(Restorer):
    """Restorer (see lostface.stages) that paints the covered region from a ReferenceBank.

    mesh: the face mesh (lostface.restore.mesh); with it the reference is bent onto the face
    by both faces' meshes (restore.warp: posed by the visible points, which are pinned to the
    face's own), without it placed by the 5 landmarks' similarity and the eye fit."""

    def __init__(
        self, bank: ReferenceBank, settings: RestoreSettings, mesh: FaceMesh | None = None
    ) -> None:
        self.bank = bank
        self.settings = settings
        self.mesh = mesh if settings.mesh else None
        # each reference's (and mirror's) mesh, found once before the frame loop
        self._meshes: dict[int, np.ndarray | None] = {}
        if self.mesh is not None:
            for r in bank.candidates(True):
                self._meshes[id(r)] = self.mesh.points(r.image)
        s = CANON_SIZE
        yy, xx = np.mgrid[0:CANON_HEIGHT, 0:s]
        # The part of the upper face that carries alignment detail: brows, eyes, nose.
        self._upper_band = (
            (yy > 0.18 * s) & (yy < 0.55 * s) & (xx > 0.16 * s) & (xx < 0.84 * s)
        ).astype(np.uint8)
        self._face_zone = (face_oval_mask() > 0).astype(np.uint8)
        self._skin_zone = np.maximum(upper_skin_mask(), mid_skin_mask())
        self._ring_kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (25, 25))
        # mouth and chin: always painted from the reference (lips and teeth are not skin-coloured)
        core = np.zeros(CANON_SHAPE, np.float32)
        cv2.ellipse(
            core, (s // 2, int(0.72 * s)), (int(0.18 * s), int(0.2 * s)), 0, 0, 360, 1.0, -1
        )
        self._core = core
        self._fill = NeutralFill()
        self._people = {r.person or r.name for r in bank.references}
        # people learned while running (the footage's own unmasked faces, a live capture):
        # person -> their references and mirrors, replaced as a whole by learn()
        self._learned: dict[str, list[Reference]] = {}
        # per face: the colour move from a reference photo's skin to the face's around the
        # covering (Lab shift and contrast gain) of its keyframes, averaged
        # (restore.colour_memory), and the photo it was measured from
        self._moves: dict[int, tuple[str, np.ndarray, np.ndarray]] = {}

    def learn(self, person: str, references: Sequence[Reference]) -> None:
        """Paint `person` from these references from now on (replacing what was learned of
        them before; an empty list forgets them). The bank's own photos are kept as given."""
        old = self._learned.pop(person, [])
        meshes = {id(r): self._meshes.pop(id(r), None) for r in old}
        # a bank that grew keeps its faces: their mirrors and meshes are reused, not redone
        half = len(old) // 2  # old: the references, then their mirrors
        kept = {id(r.image): (r, m) for r, m in zip(old[:half], old[half:], strict=True)}
        refs = [replace(r, person=person) for r in references]
        if not refs:
            self._people = {r.person or r.name for r in self.bank.references} | set(self._learned)
            return
        pairs = []
        for r in refs:
            before = kept.get(id(r.image))
            if before is not None and before[0].image is r.image:
                pairs.append((r, before[1], meshes[id(before[0])], meshes[id(before[1])]))
            else:
                pairs.append((r, r.mirror(), None, None))
        refs = [r for r, *_ in pairs] + [m for _, m, *_ in pairs]
        if self.mesh is not None:
            for r, m, r_mesh, m_mesh in pairs:
                fresh = r_mesh is None and m_mesh is None
                self._meshes[id(r)] = self.mesh.points(r.image) if fresh else r_mesh
                self._meshes[id(m)] = self.mesh.points(m.image) if fresh else m_mesh
        self._learned[person] = refs
        self._people.add(person)

    def _candidates(self) -> list[Reference]:
        mirror = self.settings.mirror
        learned = [r for refs in self._learned.values() for r in refs if mirror or not r.mirrored]
        return self.bank.candidates(mirror) + learned

    def choose(self, landmarks: np.ndarray) -> Reference:
        """The reference (or mirrored reference) whose head pose is closest to the target's."""
        ref = self._choose(landmarks)[0]
        if ref is None:
            raise ValueError("no reference to choose from")
        return ref

    def _choose(
        self, landmarks: np.ndarray, person: str | None = None
    ) -> tuple[Reference | None, float]:
        """The closest reference (of `person`, when given) and its pose gap (eye distances,
        mirror penalty left out); None when there is none."""
        yaw, pitch = yaw_proxy(landmarks), pitch_proxy(landmarks)

        def gap(r: Reference) -> float:
            return (r.yaw - yaw) ** 2 + (r.pitch - pitch) ** 2

        candidates = self._candidates()
        if person is not None:
            candidates = [r for r in candidates if (r.person or r.name) == person]
        if not candidates:
            return None, float("inf")
        best = min(
            candidates,
            key=lambda r: gap(r) + (MIRROR_PENALTY if r.mirrored else 0.0),
        )
        return best, float(np.sqrt(gap(best)))

    def restore(
        self,
        face: np.ndarray,
        cover: CoverMask,
        landmarks: np.ndarray,
        track_id: int | None = None,
        person: str | None = None,
    ) -> tuple[np.ndarray, str | None]:
        """Paint the covered region of a canonical face crop from the best reference (of
        `person`, when given; see stages.RestoreItem)."""
        alpha = np.clip(cover.alpha.astype(np.float32), 0.0, 1.0)
        if not cover.covered or float(alpha.max()) <= 0.0:
            return face.copy(), None
        if person is not None and person not in self._people:
            # nobody among these references: someone else's mouth is the worst outcome
            return self._fill.restore(face, cover, landmarks)
        lm = np.asarray(landmarks, np.float64)[:5]
        ref, pose_gap = self._choose(lm, person)
        if ref is None or pose_gap > self.settings.max_pose_gap:
            # No reference shows the face from this side: its lower face warped this far
            # would put a mouth where none is seen; a smooth fill looks far less wrong.
            return self._fill.restore(face, cover, landmarks)
        # Reference canonical -> target canonical, by the points a mask leaves visible.
        m = similarity(ref.landmarks, lm, VISIBLE_WEIGHTS)
        dst = self._face_mesh(ref, face, cover)
        bend = self._bend(ref, dst, m)
        warped = (
            cv2.remap(ref.image, *bend, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            if bend is not None
            else cv2.warpAffine(
                ref.image, m, CANON_DSIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
            )
        )
        support = (alpha > 0.01).astype(np.uint8)
        grown = cv2.dilate(support, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9)))
        visible = self._upper_band & (1 - grown)
        if self.settings.refine and bend is None:
            fit = fit_eyes(face, warped)
            if fit is not None:
                m = compose(fit, m)
                warped = cv2.warpAffine(
                    ref.image,
                    m,
                    CANON_DSIZE,
                    flags=cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE,
                )
        if self.settings.match_detail:
            warped = match_sharpness(face, warped, visible)
        matched, ref_skin, skin_l = self._match_colour(
            face, warped, support, grown, track_id, ref.name
        )
        # Where the aligned reference shows no skin, a smooth fill looks far less wrong: within
        # the face's outline (a shadow, a beard) skin-toned from the target's own skin; beyond
        # it (the reference's background past the jaw, its collar) what surrounds the
        # covering carried inward, so a covering that stands off the jaw is not painted as a
        # skin-coloured bulge over the background. The mouth and chin are the reference's
        # (the core), but not what it holds to them (a microphone would be doubled): there
        # its own skin around the object is carried in.
        held = self._placed(held_in_front(ref), bend, m)
        if float(held.max()) > _HELD_SOME:
            matched = _carried_over(matched, held)
        keep = cv2.GaussianBlur(np.maximum(ref_skin, self._core), (0, 0), 4.0)[..., None]
        inpainted = smooth_inpaint(face, support, self._fill.blur_sigma)
        fill = self._fill.fill(face, support, skin_l, inpainted, yaw_proxy(lm))
        outline = self._outline(ref, dst if bend is not None else None, m)
        if outline is not None:
            on_face = on_face_or_neck(outline)[..., None]
            fill = fill * on_face + beside_fill(face, support, outline, self._fill.blur_sigma) * (
                1.0 - on_face
            )
        src = matched.astype(np.float32) * keep + fill * (1.0 - keep)
        if self.settings.match_detail:
            # a dim or hazy face shows little contrast above its mask: the reference's
            # lips and shadows at full contrast would stand out, so it fades toward the fill
            k = contrast_ratio(face, warped, visible)
            if k < 1.0:
                src = fill + k * (src - fill)
        src = np.clip(src + 0.5, 0, 255).astype(np.uint8)
        return self._blend(face, src, alpha, support), ref.person or ref.name

    def _face_mesh(self, ref: Reference, face: np.ndarray, cover: CoverMask) -> np.ndarray | None:
        """The face's mesh, found under its covering (judged by its disagreement with the
        reference's, in _bend), when the reference has a mesh to bend by: the painter's
        (CoverMask.mesh), else found here."""
        if self.mesh is None or self._meshes.get(id(ref)) is None:
            return None
        if cover.mesh is not None:
            return cover.mesh
        return self.mesh.points(face, min_score=0.0)

    def _bend(
        self, ref: Reference, dst: np.ndarray | None, m: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """cv2.remap maps that draw the reference's face turned like the face's head, by both
        meshes (restore.warp.rendered_maps; dst: the face's mesh, found under its covering);
        None: no mesh, or the meshes disagree with the landmarks' placement so much that one
        of them is wrong."""
        src = self._meshes.get(id(ref))
        if src is None or dst is None or disagreement(src, dst, m) > MAX_DISAGREEMENT:
            return None
        mx, my, _ = rendered_maps(src, dst)
        return mx, my

    def _outline(self, ref: Reference, dst: np.ndarray | None, m: np.ndarray) -> np.ndarray | None:
        """The face's outline (uint8 0/1): its own mesh's oval, lengthened under the covering
        (COVERED_CHIN), given a mesh the reference's agrees with (dst); else the reference's
        oval placed by m; None without the reference's mesh."""
        if dst is not None:
            return outline_mask(dst, COVERED_CHIN)
        points = self._meshes.get(id(ref))
        if points is None:
            return None
        return self._placed(outline_mask(points), None, m)

    @staticmethod
    def _placed(
        image: np.ndarray, bend: tuple[np.ndarray, np.ndarray] | None, m: np.ndarray
    ) -> np.ndarray:
        """A map over the reference's canonical crop, placed on the face as its pixels are."""
        flag = cv2.INTER_NEAREST if image.dtype == np.uint8 else cv2.INTER_LINEAR
        if bend is not None:
            return cv2.remap(image, *bend, flag)
        return cv2.warpAffine(image, m, CANON_DSIZE, flags=flag)

    def _match_colour(
        self,
        face: np.ndarray,
        src: np.ndarray,
        support: np.ndarray,
        grown: np.ndarray,
        track_id: int | None = None,
        photo: str = "",
    ) -> tuple[np.ndarray, np.ndarray, float]:
        """Move the reference's colour onto the target, in Lab; also return the reference's
        skin likeness per pixel and the lightness (Lab L) of the target's skin around the mask.

        Lighting differs between forehead and lower face from photo to photo, so the
        statistics come from the skin just around the covered region (under the eyes, the
        nose bridge, the cheeks' edges), in the same canonical pixels of both faces: first a
        global shift (and a mildly limited contrast gain), then a smooth offset field fitted
        on that band for local lighting, so the border matches without a seam. The global
        move is averaged with the face's earlier keyframes' (track_id) from the same photo
        (photo: the reference's name; _steady_move); the field still meets this frame's
        border.
        """
        f_lab = cv2.cvtColor(face.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
        r_lab = cv2.cvtColor(src.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
        visible = 1 - grown
        forehead = (self._skin_zone > 0) & (visible > 0)
        if int(forehead.sum()) < 64:
            forehead = visible > 0
        band = cv2.dilate(grown, self._ring_kernel) & visible & self._face_zone
        # Skin likeness by lightness and chroma against each face's own visible skin (forehead,
        # nose bridge): mask remnants, hair, collar and background around the mask are dropped.
        w_t = band * skin_weight(f_lab, f_lab[forehead])
        ref_skin = _chroma_weight(r_lab, r_lab[forehead])
        # a dark background or hair can share skin's hue; shading under the chin is far
        # milder than that, so lightness is judged loosely (as a ratio, wide spread)
        l_ref = float(np.median(r_lab[forehead][:, 0]))
        log_l = np.log((r_lab[..., 0] + 8.0) / (l_ref + 8.0))
        ref_skin = (ref_skin * np.exp(-0.5 * (np.minimum(log_l, 0.0) / 0.5) ** 2)).astype(
            np.float32
        )
        w_r = band * skin_weight(r_lab, r_lab[forehead])
        w = (w_t * w_r).astype(np.float32)
        if float(w.sum()) < 50.0:  # no skin seen around the mask: fall back to the forehead
            w = forehead.astype(np.float32)
        # Robust statistics (medians and MADs of the clearly skin-like pixels), so a
        # microphone, a beard or the rim of a mask inside the band cannot drag the colour.
        sel = w > 0.25 * float(w.max())
        t_px, r_px = f_lab[sel], r_lab[sel]
        mu_t = np.median(t_px, axis=0)
        mu_r = np.median(r_px, axis=0)
        sd_t = 1.4826 * np.median(np.abs(t_px - mu_t), axis=0)
        sd_r = 1.4826 * np.median(np.abs(r_px - mu_r), axis=0)
        gain = np.clip(np.maximum(sd_t, _SKIN_STD_MIN) / np.maximum(sd_r, _SKIN_STD_MIN), 0.8, 1.25)
        shift, gain = self._steady_move(track_id, photo, mu_t - mu_r, gain)
        mu_t = mu_r + shift
        r_lab = (r_lab - mu_r) * gain.astype(np.float32) + mu_t

        diff = f_lab - r_lab
        q = 4  # fit the smooth field at quarter resolution: cheap, and smooth anyway
        small = (CANON_SIZE // q, CANON_HEIGHT // q)
        ws_ = cv2.resize(w, small, interpolation=cv2.INTER_AREA)
        ds = cv2.resize(diff * w[..., None], small, interpolation=cv2.INTER_AREA)
        sig = 20.0 / q
        ws_b = cv2.GaussianBlur(ws_, (0, 0), sig)
        ds_b = cv2.GaussianBlur(ds, (0, 0), sig)
        prior = 0.05  # pulls the field to zero where no skin was seen nearby
        field = ds_b / (ws_b[..., None] + prior)
        field[..., 0] = np.clip(field[..., 0], -20.0, 20.0)
        field[..., 1:] = np.clip(field[..., 1:], -8.0, 8.0)
        field = cv2.resize(field, CANON_DSIZE, interpolation=cv2.INTER_LINEAR)
        r_lab = r_lab + field
        r_lab[..., 0] = np.clip(r_lab[..., 0], 0.0, 100.0)
        out = cv2.cvtColor(r_lab, cv2.COLOR_Lab2BGR)
        return np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8), ref_skin, float(mu_t[0])

    def _steady_move(
        self, track_id: int | None, photo: str, shift: np.ndarray, gain: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """This keyframe's colour move (Lab shift and gain from the reference's skin around
        the covering to the face's) averaged with the face's earlier keyframes' moves from the
        same photo (their share restore.colour_memory): the two bands' medians move with a
        hand near the face, motion blur, a band that reaches into shade and the reference
        bent to another pose, the light on the face far less. Another photo (or none kept)
        starts afresh; its mirror counts as the same photo."""
        k = self.settings.colour_memory
        if track_id is None or k <= 0.0:
            return shift, gain
        kept = self._moves.get(track_id)
        if kept is not None and kept[0] == photo:
            shift = k * kept[1] + (1.0 - k) * shift
            gain = k * kept[2] + (1.0 - k) * gain
        self._moves[track_id] = (photo, shift, gain)
        return shift, gain

    def forget(self, track_id: int) -> None:
        self._moves.pop(track_id, None)

    def reset(self) -> None:
        self._moves.clear()

    def _blend(
        self, face: np.ndarray, src: np.ndarray, alpha: np.ndarray, support: np.ndarray
    ) -> np.ndarray:
        if self.settings.blend == "poisson":
            src = _keep_mean(poisson_clone(src, face, support), src, support)
        a = alpha[..., None]
        out = face.astype(np.float32) * (1.0 - a) + src.astype(np.float32) * a
        return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def held_in_front(ref: Reference) -> np.ndarray:
    """(H, W) float32 in 0..1 over the reference's canonical crop: what is held in front of
    its lower face (a microphone, a phone), dark and nearly grey against the forehead's
    skin, outside the mouth; softened at its edge. The reference's mouth and chin are painted
    even where they look unlike skin (lips, teeth, stubble), but not such an object."""
    lab = cv2.cvtColor(ref.image.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
    skin = lab[upper_skin_mask() > 0]
    light = float(np.median(skin[:, 0]))
    chroma = float(np.median(np.hypot(skin[:, 1], skin[:, 2])))
    grey = np.hypot(lab[..., 1], lab[..., 2]) < _HELD_GREY * chroma
    seed = grey & (lab[..., 0] < _HELD_DARK * light)
    joined = (grey & (lab[..., 0] < _HELD_LIGHT * light)).astype(np.uint8)
    left, right = np.asarray(ref.landmarks[3], np.float64), np.asarray(ref.landmarks[4])
    span = float(np.linalg.norm(right - left))
    line = float(left[1] + right[1]) / 2
    _, labels, stats, _ = cv2.connectedComponentsWithStats(joined, connectivity=8)
    top = stats[:, cv2.CC_STAT_TOP]
    bottom = top + stats[:, cv2.CC_STAT_HEIGHT]
    held_ids = [
        i
        for i in np.unique(labels[seed & (joined > 0)])
        if top[i] > line - _HELD_ABOVE * span and bottom[i] > line + _HELD_BELOW * span
    ]
    found = np.isin(labels, held_ids)
    mouth = np.zeros(CANON_SHAPE, np.uint8)
    centre = tuple(int(round(v)) for v in (left + right) / 2)
    axes = (int(round(_MOUTH_AXES[0] * span)), int(round(_MOUTH_AXES[1] * span)))
    angle = float(np.degrees(np.arctan2(*(right - left)[::-1])))
    cv2.ellipse(mouth, centre, axes, angle, 0, 360, 1, -1)
    apart = (found & (mouth == 0)).astype(np.uint8)
    held = cv2.dilate(cv2.morphologyEx(apart, cv2.MORPH_OPEN, AROUND_OUTLINE), _HELD_RIM)
    return np.asarray(cv2.GaussianBlur(held.astype(np.float32), (0, 0), OUTLINE_EDGE), np.float32)


def _carried_over(image: np.ndarray, held: np.ndarray) -> np.ndarray:
    """image (uint8 BGR) with what `held` marks (float 0..1) filled by push_pull from the
    pixels around it, blended in by `held`."""
    filled = push_pull(image.astype(np.float32), held <= _HELD_SOME)
    h = held[..., None]
    out = image.astype(np.float32) * (1.0 - h) + filled * h
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _keep_mean(cloned: np.ndarray, src: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Poisson cloning keeps the source's gradients but lets the border's colour drift across
    the whole region (a cast); move the clone's mean colour back to the source's, fully in the
    region's core and fading to nothing at its border, which stays seamless."""
    sel = support > 0
    if int(sel.sum()) < 16:
        return cloned
    shift = src[sel].astype(np.float32).mean(0) - cloned[sel].astype(np.float32).mean(0)
    depth = cv2.distanceTransform(sel.astype(np.uint8), cv2.DIST_L2, 3)
    w = np.clip(depth / max(float(depth.max()) * 0.5, 1.0), 0.0, 1.0)[..., None]
    out = cloned.astype(np.float32) + w * shift
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def poisson_clone(src: np.ndarray, dst: np.ndarray, support: np.ndarray) -> np.ndarray:
    """cv2.seamlessClone of src into dst over support, placed at the same pixels."""
    mask = (support > 0).astype(np.uint8) * 255
    mask[:2, :] = 0
    mask[-2:, :] = 0
    mask[:, :2] = 0
    mask[:, -2:] = 0
    x, y, w, h = cv2.boundingRect(mask)
    if w < 3 or h < 3:
        return dst.copy()
    center = (x + w // 2, y + h // 2)
    try:
        return cv2.seamlessClone(src, dst, mask, center, cv2.NORMAL_CLONE)
    except cv2.error:
        log.warning("poisson blend failed; falling back to alpha blending")
        return src
