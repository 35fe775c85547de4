"""Capture my face now: real photos and frames become a person's references (and a masked
face gives one clear sentence); saved captures read back through --reference NAME=DIR/NAME;
a live pipeline paints the captured person's masked face from them and nobody else's; the
vcam and stream commands capture before they restore."""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from lostface.config import load_settings
from lostface.errors import InputError, OutputError
from lostface.factory import build_detector, build_stages, load_references
from lostface.frame import Frame
from lostface.stream.capture import (
    NO_OPEN_FACE,
    STOPPED,
    LiveCapture,
    NoOpenFace,
    build_references,
    builder_for,
    check_name,
    save_references,
)
from lostface.stream.live import close_pipeline, live_pipeline
from tests.conftest import shared_path
from tests.live_helpers import singer_frames


@pytest.fixture(scope="module")
def settings():
    return load_settings()


@pytest.fixture(scope="module")
def detector(settings):
    return build_detector(settings)


def _photos(*names: str) -> list[np.ndarray]:
    return [cv2.imread(str(shared_path(*n.split("/")))) for n in names]


def _capture(name, frames, settings, detector):
    builder = builder_for(name, settings, detector)
    for image in frames:
        builder.look(image)
    return builder.finish()


# -- (a) the capture module on real photos ---------------------------------------------------
def test_open_photos_become_references_that_read_back_from_the_saved_folder(
    tmp_path, settings, detector
):
    photos = _photos(*(f"identity/obama/obama{i}.jpg" for i in range(1, 5)))
    result = _capture("obama", photos, settings, detector)
    assert 1 <= len(result.shots) <= 4 and result.seen["open"] >= len(result.shots)
    assert result.summary() == f"learned obama from {len(result.shots)} face" + (
        "s" if len(result.shots) > 1 else ""
    )
    for shot in result.shots:
        assert shot.reference.person == "obama" and shot.reference.image.shape == (288, 256, 3)
        # the frame around the face, not the canonical crop: the face with room around it
        h, w = shot.region.shape[:2]
        assert (h, w) != (288, 256) and min(h, w) > 300

    folder = save_references(result, tmp_path / "captures")
    assert folder == (tmp_path / "captures" / "obama").absolute() == result.saved
    saved = sorted(folder.glob("*.png"))
    assert len(saved) == len(result.shots)
    assert not [p for p in folder.iterdir() if p.suffix != ".png"]  # no temporary file left
    for path, shot in zip(saved, result.shots, strict=True):
        assert np.array_equal(cv2.imread(str(path)), shot.region)  # lossless

    # a later run: --reference obama=DIR/obama reads the same faces, aligned the same way
    bank = load_references(settings, detector, [f"obama={folder}"])
    assert bank is not None and len(bank) == len(result.shots)
    assert {r.person for r in bank.references} == {"obama"}
    for loaded, shot in zip(bank.references, result.shots, strict=True):
        diff = np.abs(loaded.image.astype(np.int16) - shot.reference.image).mean()
        assert diff < 1.0, diff

    # capturing obama again replaces the earlier capture's photos, and nothing else
    (folder / "mine.jpg").write_bytes(cv2.imencode(".jpg", photos[0])[1].tobytes())
    again = _capture("obama", photos[:1], settings, detector)
    save_references(again, tmp_path / "captures")
    names = sorted(p.name for p in folder.iterdir())
    assert "mine.jpg" in names and len(names) == 1 + len(again.shots)
    assert not set(names) & {p.name for p in saved}


def test_a_masked_face_gives_one_clear_sentence(settings, detector):
    # masked/0000 and 0007 pass the reference photos' own check once cut from the frame (a
    # white mask on a turned face, a cap): the capture must still not learn them
    photos = _photos(*(f"masked/{i:04d}.jpg" for i in range(8)))
    with pytest.raises(NoOpenFace) as err:
        _capture("me", photos, settings, detector)
    assert str(err.value) == NO_OPEN_FACE
    assert isinstance(err.value, InputError)  # the command line's exit code 2


def test_masked_frames_of_a_person_are_not_learned(settings, detector):
    open_, masked, _ = singer_frames(str(shared_path("video", "stage_clip.mp4")), False)
    with pytest.raises(NoOpenFace, match="without the mask"):
        _capture("me", masked[::3], settings, detector)
    result = _capture("me", open_[::3], settings, detector)
    assert len(result.shots) == 4
    orders = [s.order for s in result.shots]
    assert orders == sorted(orders) and orders[-1] - orders[0] >= len(open_[::3]) // 2


def test_a_frame_without_a_face_or_a_tiny_face_says_so(settings, detector):
    blank = np.full((360, 640, 3), 90, np.uint8)
    with pytest.raises(NoOpenFace, match="look at the camera"):
        build_references("me", [blank, blank], detector, None)
    (photo,) = _photos("identity/obama/obama1.jpg")
    tiny = cv2.resize(photo, None, fx=0.1, fy=0.1, interpolation=cv2.INTER_AREA)
    with pytest.raises(NoOpenFace, match="come closer"):
        build_references("me", [tiny], detector, None, min_face=60)


@pytest.mark.parametrize(
    "name", ["", " ", "../x", "a/b", "a=b", ".hidden", "-x", "self-1", "x" * 41]
)
def test_names_that_cannot_name_a_folder_are_refused(name):
    with pytest.raises(InputError, match="Capture name"):
        check_name(name)


@pytest.mark.parametrize("name", ["me", "Alice", "bob_2", "zoë", "j.doe"])
def test_plain_names_are_kept(name):
    assert check_name(f" {name} ") == name


def test_saving_where_a_file_is_leaves_nothing(tmp_path, settings, detector):
    (photo,) = _photos("identity/obama/obama1.jpg")
    result = _capture("obama", [photo], settings, detector)
    (tmp_path / "obama").write_text("a file, not a folder")
    with pytest.raises(OutputError, match="Could not save"):
        save_references(result, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["obama"]
    assert (tmp_path / "obama").read_text() == "a file, not a folder"


# -- (b) a live pipeline paints the captured person -------------------------------------------
def _run_live(pipe, frames, repeat: int = 2, capture: LiveCapture | None = None) -> list:
    """Frames through the live pipeline at about 30 frames/s (the session thread's order:
    the capture is offered each frame before the pipeline draws on it); the faces seen."""
    import time

    faces = []
    for i in range(repeat * len(frames)):
        t0 = time.perf_counter()
        image = frames[i % len(frames)].copy()
        if capture is not None:
            capture.offer(image)
        for out in pipe.push(Frame(image, i)):
            faces.extend(out.faces)
        time.sleep(max(0.0, 1 / 30 - (time.perf_counter() - t0)))
    return faces


@pytest.mark.parametrize("self_reference", ["auto", "off"])
def test_a_capture_paints_that_persons_masked_face_and_nobody_elses(
    settings, detector, self_reference
):
    """Also with self-reference off and no photo given, where nothing else would teach the
    painter anybody (as `vcam`/`stream --capture-reference` build it: captures=True)."""
    open_, masked, _ = singer_frames(str(shared_path("video", "stage_clip.mp4")), False)
    # the singer without the mask, as the live loop hands frames to a capture (a copy of
    # every third, judged on the capture's thread; the clock runs at 30 frames/s)
    tick = iter(np.arange(0.0, 100.0, 1 / 30))
    capture = LiveCapture(builder_for("singer", settings, detector), 1.19, clock=lambda: next(tick))
    for image in open_:
        frame = image.copy()
        capture.offer(frame)
        frame[:] = 0  # the loop draws on its frame afterwards: the capture kept a copy
    assert not capture.collecting and capture.done.wait(30), capture.state
    assert capture.result is not None, capture.error
    assert capture.result.frames == 12  # 1.2 s at 30 frames/s, one frame in three
    assert capture.result.name == "singer" and 2 <= len(capture.result.shots) <= 4
    # and someone else, captured from photos
    other = _capture("obama", _photos("identity/obama/obama1.jpg"), settings, detector)

    painting = load_settings(overrides=[f"restore.self_reference={self_reference}"])
    stages = build_stages(painting, detector=detector, captures=True)
    pipe = live_pipeline(painting, stages, False)
    try:
        pipe.adopt("singer", capture.result.references)
        pipe.adopt("obama", other.references)
        faces = _run_live(pipe, masked)
    finally:
        close_pipeline(pipe)
    looks = Counter((f.identity, f.reference) for f in faces if f.masked)
    assert looks[("singer", "given")] >= len(masked) // 2, looks  # painted from the capture
    assert set(looks) <= {("singer", "given"), (None, None)}, looks  # never from obama's


def test_a_stopped_capture_learns_and_saves_nothing(tmp_path, settings, detector):
    open_, _, _ = singer_frames(str(shared_path("video", "stage_clip.mp4")), False)
    capture = LiveCapture(builder_for("me", settings, detector), 10.0, save_dir=tmp_path)
    for image in open_[:12]:
        capture.offer(image)
    capture.cancel()  # the session closes, or Ctrl-C, before the capture ends
    assert capture.done.wait(30)
    assert capture.result is None and capture.error == STOPPED
    assert not list(tmp_path.iterdir())


# -- (d) vcam / stream: --capture-reference before restoring ----------------------------------


def _clip(path: Path, frames: list) -> Path:
    from tests.media import write_clip

    return write_clip(path, frames, rate=30, audio=False)


class _MemoryCamera:
    """An in-memory pyvirtualcam backend (as in tests/test_live_loop.py)."""

    frames: list[np.ndarray] = []

    def __init__(self, *, width, height, fps, fourcc, device, **kw) -> None:
        self.shape = (height, width, 3)
        self.fourcc = fourcc
        _MemoryCamera.frames = []

    def send(self, frame: np.ndarray) -> None:
        _MemoryCamera.frames.append(frame.reshape(self.shape).copy())

    def close(self) -> None:
        pass

    def device(self) -> str:
        return "memory0"

    def native_fourcc(self):
        return self.fourcc


def test_vcam_capture_reference_learns_saves_and_restores(main, tmp_path, caplog, monkeypatch):
    from pyvirtualcam import camera

    caplog.set_level(logging.INFO, logger="lostface")
    monkeypatch.setitem(camera.BACKENDS, "lostface-memory", _MemoryCamera)
    open_, masked, _ = singer_frames(str(shared_path("video", "stage_clip.mp4")), False)
    clip = _clip(tmp_path / "call.mp4", open_ + masked + masked)
    argv = ["vcam", "--file", str(clip), "--capture-reference", "1", "--capture-name", "singer"]
    argv += ["--save-reference", str(tmp_path / "refs"), "--seconds", "3"]
    assert main(argv) == 0
    err = caplog.text
    assert "look at the camera without the mask" in err and "learned singer from" in err
    saved = sorted((tmp_path / "refs" / "singer").glob("*.png"))
    assert saved and f"--reference singer={tmp_path / 'refs' / 'singer'}" in err
    assert len(_MemoryCamera.frames) >= 30  # the call saw the camera during the capture too
    bank = load_references(
        load_settings(), build_detector(load_settings()), [f"singer={tmp_path / 'refs' / 'singer'}"]
    )
    assert bank is not None and len(bank) == len(saved)


@pytest.mark.parametrize("command", ["vcam", "stream"])
def test_capture_reference_without_an_open_face_is_one_sentence(
    main, tmp_path, capsys, monkeypatch, command
):
    from pyvirtualcam import camera

    monkeypatch.setitem(camera.BACKENDS, "lostface-memory", _MemoryCamera)
    _, masked, _ = singer_frames(str(shared_path("video", "stage_clip.mp4")), False)
    clip = _clip(tmp_path / "masked.mp4", masked)
    head = ["stream", "udp://127.0.0.1:9"] if command == "stream" else ["vcam"]
    argv = [*head, "--file", str(clip), "--capture-reference", "1"]
    argv += ["--save-reference", str(tmp_path / "refs")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert [x for x in err.splitlines() if "error" in x] == [f"lostface: error: {NO_OPEN_FACE}"]
    assert "Traceback" not in err
    assert not (tmp_path / "refs").exists()  # nothing saved


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--capture-name", "me"], ["go with --capture-reference"]),
        (["--capture-reference", "1", "--capture-name", "a/b"], ["Capture name 'a/b'"]),
        (["--capture-reference", "0"], ["0.5 to 60 seconds"]),
    ],
)
def test_bad_capture_flags_are_one_sentence(main, capsys, tmp_path, extra, words):
    clip = shared_path("video", "stage_clip.mp4")
    assert main(["stream", "udp://127.0.0.1:9", "--file", str(clip), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lostface: error: ")
    for w in words:
        assert w in err[0]
