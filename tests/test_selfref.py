"""Self-reference: people learned from the open faces of the footage itself paint their own
masked faces, never someone else's, and given photos take precedence.

Real photos of two people (../shared/data/identity) and dlib's face-recognition network (the
quality extra); the file test runs `lostface run` on a clip made of those photos.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from lostface.cli import main
from lostface.config import load_settings
from lostface.errors import ConfigError
from lostface.frame import CoverMask
from lostface.restore import align
from lostface.restore.identity import embed
from lostface.restore.painter import Painter, PaintJob
from lostface.restore.reference import ReferenceBank
from lostface.synthetic import draw_mask
from lostface.tracking.detectors import CenterFaceDetector
from tests.conftest import shared_path
from tests.media import write_clip

pytest.importorskip("dlib")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("face-recognition-models is not installed (quality extra)", allow_module_level=True)


@pytest.fixture(scope="module")
def detector() -> CenterFaceDetector:
    from lostface.config import DetectSettings

    return CenterFaceDetector(DetectSettings())


def _photo(person: str, k: int, side: int = 640) -> np.ndarray:
    img = cv2.imread(str(shared_path("identity", person, f"{person}{k}.jpg")))
    s = side / max(img.shape[:2])
    return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)


def _job(detector, track_id: int, image: np.ndarray, masked: bool, frame: int = 0) -> PaintJob:
    """A keyframe job of the image's best face; masked: under a synthetic covering. frame:
    the frame it is on (a masked face painted from someone seen open earlier comes later)."""
    det = detector.detect(image)
    i = int(np.argmax(det.scores))
    if masked:
        image = draw_mask(image, det.landmarks[i][:5], "surgical", rng=0).image
    job = PaintJob.from_frame(track_id, frame, image, det.landmarks[i])
    assert job is not None
    return job


def _painter(*overrides: str, bank: ReferenceBank | None = None) -> Painter:
    from lostface.registry import build_painter

    return build_painter(load_settings(overrides=list(overrides)), bank, footage=True)


def test_people_are_learned_from_open_faces_and_paint_only_their_own_masked_faces(
    detector, astronaut_bgr
) -> None:
    painter = _painter()
    assert painter.selfref is not None and painter.gate is not None and painter.gate.people == []
    # before anyone is learned, a masked face gets the neutral fill
    early = painter.paint(_job(detector, 1, _photo("obama", 2), masked=True))
    assert early.covered and early.patch is not None and early.source is None
    painter.forget(1)
    # open faces of two people: each becomes a learned person
    for tid, (person, k) in enumerate((("obama", 1), ("obama", 2), ("biden", 1)), start=10):
        out = painter.paint(_job(detector, tid, _photo(person, k), masked=False))
        assert not out.covered and out.patch is None
    learned = painter.selfref.people
    assert len(learned) == 2, learned
    obama = painter.selfref.person_of(10)
    assert painter.selfref.person_of(11) == obama and painter.selfref.person_of(12) != obama
    assert len(painter.selfref.references(obama)) >= 1
    # their masked faces (other photos, new tracks) are painted from their own open faces
    for tid, (person, k) in enumerate((("obama", 3), ("biden", 2)), start=20):
        job = _job(detector, tid, _photo(person, k), masked=True, frame=30)
        for _ in range(2):
            out = painter.paint(job)
        who = obama if person == "obama" else painter.selfref.person_of(12)
        assert out.patch is not None and out.identity == who, (person, out.identity)
        assert (out.source, out.patch.reference) == ("self", who)
    # a person never seen open gets the fill, never a learned person's mouth
    stranger = painter.paint(_job(detector, 30, astronaut_bgr, masked=True, frame=30))
    assert stranger.covered and stranger.identity is None and stranger.source is None


def test_given_people_take_precedence_and_are_not_learned(detector) -> None:
    refs = [f"obama={shared_path('identity', 'obama', 'obama1.jpg')}"]
    painter = _painter(bank=ReferenceBank.from_paths(refs, detector))
    assert painter.selfref is not None and painter.gate.people == ["obama"]
    painter.paint(_job(detector, 1, _photo("obama", 2), masked=False))
    painter.paint(_job(detector, 2, _photo("biden", 1), masked=False))
    assert painter.selfref.person_of(1) == "obama"  # his photos paint him: nothing learned
    assert painter.selfref.people == [painter.selfref.person_of(2)] == ["self-1"]
    job = _job(detector, 3, _photo("obama", 3), masked=True, frame=30)
    out = [painter.paint(job) for _ in range(2)][-1]
    assert (out.identity, out.source) == ("obama", "given")


def test_a_masked_face_beside_someone_s_open_face_is_not_painted_as_them(detector) -> None:
    """One person is not in two places. A real crowd photo: the woman in the middle wears a
    covering, the women beside her do not, and under the same neutral covering her upper face
    lies within the gate's threshold of theirs (dlib 0.47). Learned from their open faces on
    the same frame, they must not paint her: she gets the neutral fill. The same learned
    person, seen open only before her track began, may (the main test above)."""
    image = cv2.imread(str(shared_path("groups", "group2.jpg")))
    det = detector.detect(image)
    painter = _painter()
    jobs = [PaintJob.from_frame(t, 0, image, det.landmarks[t]) for t in range(len(det))]
    for _ in range(2):
        out = painter.paint_many([j for j in jobs if j is not None])
    learned = set(painter.selfref.people)
    masked = [o for o in out if o.covered]
    assert learned and len(masked) == 1, (learned, [o.covered for o in out])
    job = next(j for j in jobs if j is not None and j.track_id == masked[0].track_id)
    face = align.warp_to_canonical(job.pixels, job.local_to_canonical)
    closest = min(painter.gate.distances_of(embed(face)).values())
    assert closest < painter.gate.match  # the gate alone would paint her as one of them
    assert masked[0].identity is None and masked[0].source is None


def test_a_track_that_shows_someone_else_teaches_nobody(detector) -> None:
    """An id switch: the track learned as one person now shows another; that face joins
    neither person's bank (nor starts one) on that keyframe."""
    painter = _painter()
    painter.paint(_job(detector, 1, _photo("obama", 1), masked=False))
    first = painter.selfref.person_of(1)
    before = len(painter.selfref.references(first))
    # a sharper, better face would otherwise replace the bank's: make the switch count
    switched = _job(detector, 1, _photo("biden", 1, side=900), masked=False)
    painter.paint(switched)
    assert len(painter.selfref.references(first)) == before
    assert painter.selfref.people == [first]
    assert painter.selfref.person_of(1) is None  # asked afresh on the track's next face


def test_faces_not_fit_to_learn_from_are_refused(detector) -> None:
    painter = _painter()
    selfref = painter.selfref
    job = _job(detector, 1, _photo("obama", 1), masked=False)
    face = align.warp_to_canonical(job.pixels, job.local_to_canonical)
    lm = align.apply(job.to_canonical, job.landmarks[:5]).astype(np.float32)
    span = align.CANON_SIZE / align.scale_of(job.to_canonical)
    open_ = CoverMask(False, np.zeros(align.CANON_SHAPE, np.float32), None, 0.0)
    assert selfref.quality(face, lm, open_, span) is not None
    covered = CoverMask(True, np.ones(align.CANON_SHAPE, np.float32), None, 0.9)
    borderline = CoverMask(False, np.zeros(align.CANON_SHAPE, np.float32), None, 0.45)
    assert selfref.quality(face, lm, covered, span) is None  # a covering
    assert selfref.quality(face, lm, borderline, span) is None  # not clearly open
    assert selfref.quality(face, lm, open_, 40.0) is None  # too small
    assert selfref.quality((face * 0.15).astype(np.uint8), lm, open_, span) is None  # dark
    blurred = cv2.GaussianBlur(face, (0, 0), 3.0)
    assert selfref.quality(blurred, lm, open_, span) < selfref.quality(face, lm, open_, span)
    turned = lm.copy()
    turned[2, 0] += 0.5 * float(lm[1, 0] - lm[0, 0])  # the nose half an eye distance over
    assert selfref.quality(face, turned, open_, span) is None
    assert selfref.offer(1, face, lm, covered, span) is None and selfref.people == []


def test_self_reference_setting_is_checked() -> None:
    with pytest.raises(ConfigError, match="self_reference"):
        load_settings(overrides=['restore.self_reference="sometimes"'])
    off = _painter('restore.self_reference="off"')
    assert off.selfref is None and off.gate is None


def _canvas(image: np.ndarray, size: tuple[int, int] = (640, 480)) -> np.ndarray:
    """The photo centred on a grey canvas of one size (a clip's frames share a size)."""
    w, h = size
    s = min(w / image.shape[1], h / image.shape[0])
    small = cv2.resize(image, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    out = np.full((h, w, 3), 96, np.uint8)
    y, x = (h - small.shape[0]) // 2, (w - small.shape[1]) // 2
    out[y : y + small.shape[0], x : x + small.shape[1]] = small
    return out


def test_a_file_paints_masked_frames_before_the_open_moment_from_it(
    detector, tmp_path: Path
) -> None:
    """Two passes: the person is masked first and shows the face only later; the first pass
    learns it, so the masked frames before are painted from it (`--tracks` says "self")."""
    masked = _canvas(_photo("obama", 2))
    det = detector.detect(masked)
    i = int(np.argmax(det.scores))
    masked = draw_mask(masked, det.landmarks[i][:5], "surgical", rng=0).image
    frames = [masked] * 16 + [_canvas(_photo("obama", 1))] * 16
    clip = write_clip(tmp_path / "in.mp4", frames, audio=False)
    records = {}
    for mode in ("auto", "off"):
        out, tracks = tmp_path / f"{mode}.mp4", tmp_path / f"{mode}.jsonl"
        argv = ["run", str(clip), "-o", str(out), "--tracks", str(tracks), "-q"]
        assert main([*argv, "--self-reference", mode]) == 0
        records[mode] = [json.loads(line) for line in tracks.read_text().splitlines()]
    first = [r["faces"] for r in records["auto"][:16]]
    assert all(len(f) == 1 and f[0]["masked"] for f in first)
    assert all(f[0]["reference"] == "self" and f[0]["identity"] for f in first), first
    assert all(not f["faces"] or f["faces"][0]["reference"] is None for f in records["off"])
    assert all(r["faces"][0]["masked"] is False for r in records["auto"][16:])


def test_live_the_bank_grows_as_the_call_goes_on(detector) -> None:
    """A live pipeline (no delay line, no first pass): the person shows the face, then puts a
    mask on (a new shot: a new track); from the masked track's next keyframes on it is painted
    from the face seen earlier in the call."""
    from lostface.factory import build_stages
    from lostface.frame import Frame
    from lostface.stream.live import close_pipeline, live_pipeline

    settings = load_settings(overrides=["keyframe.max_age=6"])
    stages = build_stages(settings, detector=detector)
    pipe = live_pipeline(settings, stages, background_detection=False)
    open_face = _canvas(_photo("obama", 1))
    masked = _canvas(_photo("obama", 3))
    det = detector.detect(masked)
    masked = draw_mask(masked, det.landmarks[int(np.argmax(det.scores))][:5], "surgical", rng=0)
    sources = []
    try:
        for i in range(60):
            image = (open_face if i < 20 else masked.image).copy()
            for out in pipe.push(Frame(image, i, i, None)):
                sources += [(out.frame.index, f.reference) for f in out.faces]
            pipe.worker.wait_idle()  # the keyframe lands before the next frame (no timing)
    finally:
        close_pipeline(pipe)
    assert stages.painter.selfref is not None and stages.painter.selfref.people == ["self-1"]
    late = [ref for i, ref in sources if i >= 45]
    assert late and all(ref == "self" for ref in late), sources[-20:]


def test_a_face_captured_later_takes_over_from_the_person_learned(detector) -> None:
    """Given faces take precedence: a person captured live (Painter.adopt) who was learned
    from the footage before replaces the learned person, whose masked track is then painted
    from the captured faces; someone else learned stays."""
    painter = _painter()
    painter.paint(_job(detector, 1, _photo("obama", 1), masked=False))
    painter.paint(_job(detector, 2, _photo("biden", 1), masked=False))
    masked = _job(detector, 3, _photo("obama", 3), masked=True, frame=30)
    before = [painter.paint(masked) for _ in range(2)][-1]
    obama, biden = painter.selfref.person_of(1), painter.selfref.person_of(2)
    assert (before.identity, before.source) == (obama, "self")
    captured = ReferenceBank.from_image("me", _photo("obama", 2), detector)
    painter.adopt("me", [captured])
    assert painter.selfref.people == [biden] and sorted(painter.gate.people) == sorted(
        ["me", biden]
    )
    after = [painter.paint(masked) for _ in range(2)][-1]
    assert (after.identity, after.source, after.patch.reference) == ("me", "given", "me")
