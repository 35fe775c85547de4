"""The `lostface` command end to end, on real photos and clips made from them."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lostface.cli import main
from tests.conftest import shared_path
from tests.media import audio_tracks, probe, write_clip, write_gif

ENV = dict(
    os.environ, HF_HUB_OFFLINE="1", YOLO_OFFLINE="1", PYTHONPATH=str(Path(__file__).parents[1])
)


@pytest.fixture(scope="module")
def detector():
    from lostface.config import load_settings
    from lostface.factory import build_detector

    return build_detector(load_settings())


@pytest.fixture(scope="module")
def masked_clip(tmp_path_factory, astronaut_bgr, detector):
    """A moving, synthetic-masked astronaut clip with audio, its unmasked frames and masks."""
    from lostface.synthetic import draw_mask

    d = tmp_path_factory.mktemp("clip")
    frames, originals, covered = [], [], []
    for i in range(24):
        m = np.float32([[1, 0, 2.0 * i - 20], [0, 1, 1.0 * i - 10]])
        img = cv2.warpAffine(astronaut_bgr, m, (512, 512), borderMode=cv2.BORDER_REFLECT)
        img = np.ascontiguousarray(cv2.resize(img, (384, 384)))
        dets = detector.detect(img)
        assert len(dets) >= 1
        k = int(np.argmax(dets.scores))
        sm = draw_mask(img, dets.landmarks[k], kind="surgical", rng=np.random.default_rng(0))
        frames.append(sm.image)
        originals.append(img)
        covered.append(sm.covered)
    path = write_clip(d / "masked.mp4", frames, rate=25, audio=True)
    return path, originals, covered


@pytest.fixture(scope="module")
def reference(tmp_path_factory, astronaut_bgr):
    p = tmp_path_factory.mktemp("ref") / "ref.png"
    cv2.imwrite(str(p), astronaut_bgr)
    return p


def _decode(path):
    from lostface.stream.video import read_frames

    return read_frames(path)


def test_help_everywhere(capsys):
    for argv in (
        ["--help"],
        ["run", "--help"],
        ["restore", "--help"],
        ["detect", "--help"],
        ["demo", "--help"],
    ):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert "usage" in capsys.readouterr().out


def test_run_restores_and_keeps_stream_properties(tmp_path, masked_clip, reference):
    src, originals, covered = masked_clip
    out = tmp_path / "out.mp4"
    tracks = tmp_path / "tracks.jsonl"
    code = main(
        ["run", str(src), "-o", str(out), "-r", str(reference), "--tracks", str(tracks), "-q"]
    )
    assert code == 0
    a, b = probe(src), probe(out)
    assert b["frames"] == a["frames"] == 24
    assert b["pts"] == a["pts"] and b["rate"] == a["rate"] and b["audio"] == ["aac"]
    assert (out.parent / "out.mp4.lostface.toml").is_file()
    lines = [json.loads(x) for x in tracks.read_text().splitlines()]
    assert [r["frame"] for r in lines] == list(range(24))
    assert all(set(r) == {"frame", "pts", "faces"} for r in lines)
    faces = [f for r in lines for f in r["faces"]]
    keys = {"track_id", "box", "masked", "keyframe", "identity", "reference"}
    assert faces and all(set(f) == keys for f in faces)
    assert any(f["keyframe"] for f in faces) and sum(f["masked"] for f in faces) >= 20
    # the one reference (a bare PATH: the person is known by that path) matches her face, and
    # her photo painted it
    assert {f["identity"] for f in faces if f["masked"]} == {str(reference)}
    assert {f["reference"] for f in faces if f["masked"]} == {"given"}
    # the covered region moved towards the hidden face
    masked_frames, restored = _decode(src), _decode(out)
    err_masked = err_restored = 0.0
    for m, r, o, c in zip(masked_frames, restored, originals, covered, strict=True):
        err_masked += np.abs(m[c].astype(float) - o[c]).mean()
        err_restored += np.abs(r[c].astype(float) - o[c]).mean()
    assert err_restored < 0.7 * err_masked


def test_an_animated_gif_is_a_video(tmp_path, masked_clip, reference):
    """`lostface run` takes an animated GIF (a short clip, not a photo) and restores every
    frame; `lostface restore`, which paints one photo, says to run it instead; a GIF of one
    picture stays a photo."""
    from lostface.stream.image import gif_frames

    src, originals, covered = masked_clip
    masked = _decode(src)[:12]
    gif = write_gif(tmp_path / "masked.gif", masked)
    assert gif_frames(gif.read_bytes(), limit=100) == 12
    assert gif_frames(gif.read_bytes()[:200]) <= 1 and gif_frames(b"GIF89a") == 0  # cut short
    out = tmp_path / "out.mp4"
    assert main(["run", str(gif), "-o", str(out), "-r", str(reference), "-q"]) == 0
    assert probe(out)["frames"] == 12
    shown, restored = _decode(gif), _decode(out)
    err_masked = err_restored = 0.0
    for m, r, o, c in zip(shown, restored, originals, covered, strict=False):
        err_masked += np.abs(m[c].astype(float) - o[c]).mean()
        err_restored += np.abs(r[c].astype(float) - o[c]).mean()
    assert err_restored < 0.7 * err_masked  # painted, frame by frame
    before = {p.name for p in tmp_path.iterdir()}
    line = _one_sentence(_run(["restore", str(gif), "-o", str(tmp_path / "o.png")]))
    assert "animated GIF" in line and "lostface run" in line
    still = write_gif(tmp_path / "still.gif", masked[:1])
    line = _one_sentence(_run(["run", str(still), "-o", str(tmp_path / "o.mp4")]))
    assert "is a photo" in line
    assert {p.name for p in tmp_path.iterdir()} == before | {"still.gif"}


def test_unmasked_video_comes_out_as_it_went_in(tmp_path, astronaut_bgr):
    frames = [
        np.ascontiguousarray(cv2.resize(np.roll(astronaut_bgr, 3 * i, axis=1), (320, 320)))
        for i in range(10)
    ]
    # lossless RGB video in and out, so any changed pixel is the pipeline's doing
    src = write_clip(tmp_path / "plain.mkv", frames, audio=False, codec="ffv1", pix_fmt="bgr0")
    out = tmp_path / "out.mkv"
    args = ["--set", "video.codec=ffv1", "--set", "video.pix_fmt=bgr0"]
    assert main(["run", str(src), "-o", str(out), "-q", *args]) == 0
    for a, b in zip(_decode(src), _decode(out), strict=True):
        assert np.array_equal(a, b)
    # start-up paused and froze the garbage collector; an in-process caller gets it back
    assert gc.isenabled() and gc.get_freeze_count() == 0


def test_restore_and_detect_on_a_photo(tmp_path, masked_clip, reference, capsys):
    src, originals, covered = masked_clip
    img = tmp_path / "masked.png"
    cv2.imwrite(str(img), _decode(src)[5])
    out = tmp_path / "restored.png"
    assert main(["restore", str(img), "-o", str(out), "-r", str(reference), "-q"]) == 0
    restored = cv2.imread(str(out))
    c = covered[5]
    assert (
        np.abs(restored[c].astype(float) - originals[5][c]).mean()
        < 0.7 * np.abs(cv2.imread(str(img))[c].astype(float) - originals[5][c]).mean()
    )
    capsys.readouterr()
    assert main(["detect", str(img), str(reference), "--json", "-q"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in rows] == [str(img), str(reference)]
    for r in rows:
        assert len(r["faces"]) == 1
        f = r["faces"][0]
        assert len(f["box"]) == 4 and len(f["landmarks"]) >= 5 and 0 < f["score"] <= 1
    # the masked photo is judged covered and the unmasked reference open, with the evidence
    assert [r["faces"][0]["covered"] for r in rows] == [True, False]
    scores = [r["faces"][0]["covered_score"] for r in rows]
    assert scores[0] > 0.5 > scores[1] >= 0.0
    # a video where photos are read: one sentence that points at `lostface run`, nothing written
    for args in (["restore", str(src), "-o", str(tmp_path / "v.png")], ["detect", str(src)]):
        line = _one_sentence(_run(args))
        assert "is a video" in line and "lostface run" in line
    assert not (tmp_path / "v.png").exists()


@pytest.mark.parametrize("mode", ["gray", "alpha", "odd"])
def test_restore_keeps_photo_mode(tmp_path, masked_clip, reference, mode):
    src, _, _ = masked_clip
    img = _decode(src)[3]
    if mode == "gray":
        data = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
    elif mode == "alpha":
        data = np.dstack([img, np.full(img.shape[:2], 200, np.uint8)])
    else:
        data = cv2.resize(img, (641, 361))
    p = tmp_path / f"in_{mode}.png"
    cv2.imwrite(str(p), data)
    out = tmp_path / f"out_{mode}.png"
    assert main(["restore", str(p), "-o", str(out), "-r", str(reference), "-q"]) == 0
    got = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert got.shape == data.shape
    if mode == "alpha":
        assert np.array_equal(got[:, :, 3], data[:, :, 3])


def test_restore_keeps_a_16_bit_photo_at_16_bits(tmp_path, masked_clip, reference):
    """A 16-bit PNG comes back 16-bit: what lostface left alone keeps all its bits, and read at
    8 bits it is the picture an 8-bit copy of the photo restores to."""
    from lostface.stream.image import eight_bits

    src, _, _ = masked_clip
    img = _decode(src)[3]
    fine = np.random.default_rng(0).integers(-120, 121, img.shape)  # below one 8-bit level
    deep = np.clip(img.astype(np.int32) * 257 + fine, 0, 65535).astype(np.uint16)
    p16, p8 = tmp_path / "deep.png", tmp_path / "flat.png"
    cv2.imwrite(str(p16), deep)
    cv2.imwrite(str(p8), eight_bits(deep))
    fixed = ["-r", str(reference), "--set", "provenance.run_id=5a3", "-q"]
    for src_, out in ((p16, tmp_path / "out16.png"), (p8, tmp_path / "out8.png")):
        assert main(["restore", str(src_), "-o", str(out), *fixed]) == 0
    got = cv2.imread(str(tmp_path / "out16.png"), cv2.IMREAD_UNCHANGED)
    flat = cv2.imread(str(tmp_path / "out8.png"), cv2.IMREAD_UNCHANGED)
    assert got.dtype == np.uint16 and got.shape == deep.shape
    assert np.array_equal(eight_bits(got), flat)
    kept = (flat == eight_bits(deep)).all(-1)
    assert np.array_equal(got[kept], deep[kept])
    painted = np.abs(flat.astype(int) - eight_bits(deep)).max(-1) > 20
    assert painted.sum() > 500  # the face was painted


def _run(args, **kw):
    return subprocess.run(
        [sys.executable, "-m", "lostface.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        **kw,
    )


def _one_sentence(proc):
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("lostface: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def test_bad_inputs_get_one_sentence(tmp_path, masked_clip, reference, astronaut_bgr):
    src, _, _ = masked_clip
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    corrupt = tmp_path / "corrupt.mp4"
    # fixed noise: some random bytes probe as a container with only an audio or data stream
    corrupt.write_bytes(np.random.default_rng(5).bytes(5000))
    photo = tmp_path / "photo.jpg"
    cv2.imwrite(str(photo), astronaut_bgr)
    noface = tmp_path / "noface.png"
    cv2.imwrite(str(noface), np.full((200, 300, 3), 120, np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(np.random.default_rng(5).bytes(5000))
    before = {p.name for p in tmp_path.iterdir()}
    cases = [
        (["run", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "o.mp4")], "does not exist"),
        (["run", str(empty), "-o", str(tmp_path / "o.mp4")], "empty"),
        (
            ["run", str(corrupt), "-o", str(tmp_path / "o.mp4")],
            "not a video|could not|no video stream",
        ),
        (["run", str(photo), "-o", str(tmp_path / "o.mp4")], "photo"),
        (["run", str(src), "-o", str(src)], "input itself"),
        (["run", str(src), "-o", str(tmp_path / "nope" / "o.mp4")], "does not exist"),
        (["run", str(src), "-o", str(tmp_path / "o.mp4"), "-r", str(noface)], "no face"),
        (
            ["run", str(src), "-o", str(tmp_path / "o.mp4"), "--set", "tracking.detect_every=0"],
            "detect_every",
        ),
        (["restore", str(corrupt), "-o", str(tmp_path / "o.png")], "is a video"),
        (["restore", str(broken), "-o", str(tmp_path / "o.png")], "not a readable image"),
    ]
    for args, words in cases:
        line = _one_sentence(_run(args))
        assert any(w in line for w in words.split("|")), line
    # an output no image format has is refused before any work (no notes of models or references)
    proc = _run(["restore", str(photo), "-o", str(tmp_path / "o.txt")])
    line = _one_sentence(proc)
    assert "image extension" in line and proc.stderr.strip().splitlines() == [line]
    assert {p.name for p in tmp_path.iterdir()} == before  # nothing written, inputs intact


def test_ctrl_c_leaves_no_partial_output(tmp_path, astronaut_bgr):
    frames = [
        np.ascontiguousarray(cv2.resize(np.roll(astronaut_bgr, i, axis=0), (480, 480)))
        for i in range(400)
    ]
    src = write_clip(tmp_path / "long.mp4", frames, audio=False)
    size = src.stat().st_size
    out = tmp_path / "out.mp4"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lostface.cli",
            "run",
            str(src),
            "-o",
            str(out),
            "-q",
            "--set",
            "tracking.detect_every=1",
        ],
        env=ENV,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while time.time() < deadline and not any(p.name.startswith(".out") for p in tmp_path.iterdir()):
        time.sleep(0.05)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the interrupt arrived")
    assert proc.returncode == 130 and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["long.mp4"]
    assert src.stat().st_size == size


def test_video_without_faces_passes_through(tmp_path):
    skimage_data = pytest.importorskip("skimage.data")
    coffee = np.ascontiguousarray(skimage_data.coffee()[:, :, ::-1])
    frames = [np.ascontiguousarray(np.roll(coffee, 4 * i, axis=1)[:320, :400]) for i in range(8)]
    src = write_clip(tmp_path / "coffee.mkv", frames, audio=False, codec="ffv1", pix_fmt="bgr0")
    out = tmp_path / "out.mkv"
    tracks = tmp_path / "t.jsonl"
    args = ["--set", "video.codec=ffv1", "--set", "video.pix_fmt=bgr0", "--tracks", str(tracks)]
    assert main(["run", str(src), "-o", str(out), "-q", *args]) == 0
    assert all(np.array_equal(a, b) for a, b in zip(_decode(src), _decode(out), strict=True))
    assert all(json.loads(x)["faces"] == [] for x in tracks.read_text().splitlines())


def test_an_unpainted_matroska_output_keeps_every_frame(tmp_path):
    """Nothing painted, so the output is remuxed without the lostface tag. Matroska stores no
    decode time for an H.264 stream's first packets (B-frames reorder them): the remux kept
    only packets with one and dropped the first keyframe, and no frame of the file decoded."""
    skimage_data = pytest.importorskip("skimage.data")
    coffee = np.ascontiguousarray(skimage_data.coffee()[:320, :400, ::-1])
    frames = [np.ascontiguousarray(np.roll(coffee, 6 * i, axis=1)) for i in range(12)]
    src = write_clip(tmp_path / "coffee.mkv", frames, audio=False)
    for ext in (".mkv", ".webm", ".mp4"):
        out = tmp_path / f"out{ext}"
        assert main(["run", str(src), "-o", str(out), "-q"]) == 0
        got = _decode(out)
        assert len(got) == 12, ext
        assert np.abs(got[-1].astype(int) - frames[-1]).mean() < 6, ext


def test_run_keeps_every_audio_track_and_the_recording_date(tmp_path, masked_clip):
    """Two sound tracks, English and French, through `lostface run`: a clip whose face is
    painted (its output carries the lostface tag) and one with no face (the tag is taken out
    again by a remux) both keep the two tracks, their languages and their sounds, and the
    recording's date and title (photo libraries sort by the date)."""
    skimage_data = pytest.importorskip("skimage.data")
    coffee = np.ascontiguousarray(skimage_data.coffee()[:320, :400, ::-1])
    langs = [("aac", "eng", "Main"), ("libopus", "fra", "Commentary")]
    meta = {"creation_time": "2025-06-01T10:20:30.000000Z", "title": "Birthday"}
    clips = {
        "painted": write_clip(
            tmp_path / "masked.mkv", _decode(masked_clip[0])[:10], tracks=langs, metadata=meta
        ),
        "untouched": write_clip(
            tmp_path / "coffee.mkv", [coffee] * 10, tracks=langs, metadata=meta
        ),
    }
    for name, src in clips.items():
        out = tmp_path / f"{name}.mp4"
        assert main(["run", str(src), "-o", str(out), "-q"]) == 0
        got = audio_tracks(out)
        assert [t["language"] for t in got] == ["eng", "fra"], name
        assert [round(t["peak_hz"] / 440) for t in got] == [1, 2], name
        import av

        with av.open(str(out)) as c:
            assert c.metadata.get("title") == "Birthday", name
            assert c.metadata.get("creation_time", "").startswith("2025-06-01T10:20:30"), name
            assert ("comment" in c.metadata) == (name == "painted")  # the lostface tag


def test_photo_with_twelve_masked_faces(tmp_path, detector, capsys):
    """A crowd: twelve masked faces in one frame are all found and restored."""
    from lostface.synthetic import draw_mask

    folder = shared_path("unmasked")
    tiles, covered = [], []
    for p in sorted(folder.glob("*.jpg"))[:40]:
        img = cv2.resize(cv2.imread(str(p)), (160, 160))
        d = detector.detect(img)
        if len(d) != 1:
            continue
        sm = draw_mask(img, d.landmarks[0], kind="n95", rng=len(tiles))
        tiles.append(sm.image)
        covered.append(sm.covered)
        if len(tiles) == 12:
            break
    assert len(tiles) == 12
    mosaic = np.vstack([np.hstack(tiles[r * 4 : (r + 1) * 4]) for r in range(3)])
    truth = np.vstack([np.hstack(covered[r * 4 : (r + 1) * 4]) for r in range(3)])
    src = tmp_path / "crowd.png"
    cv2.imwrite(str(src), mosaic)
    out = tmp_path / "crowd_out.png"
    assert main(["restore", str(src), "-o", str(out), "-q"]) == 0
    got = cv2.imread(str(out))
    changed = np.any(got != mosaic, axis=2)
    per_tile = [
        changed[r * 160 : (r + 1) * 160, c * 160 : (c + 1) * 160][
            truth[r * 160 : (r + 1) * 160, c * 160 : (c + 1) * 160]
        ].mean()
        for r in range(3)
        for c in range(4)
    ]
    assert sum(v > 0.5 for v in per_tile) >= 10
    capsys.readouterr()
    assert main(["detect", str(src), "--json", "-q"]) == 0
    assert len(json.loads(capsys.readouterr().out)["faces"]) >= 10


def test_named_reference_errors_write_nothing(tmp_path, masked_clip, reference, capsys):
    """NAME=PATH references: an empty name, a name given twice, a missing photo and a photo
    with no face are each one sentence and a non-zero exit, and nothing is written."""
    src, _, _ = masked_clip
    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 127, np.uint8))
    cases = [
        ([f"={reference}"], "empty name"),
        ([f"me={reference}", f"me={blank}"], "given twice"),
        ([f"me={tmp_path / 'absent.jpg'}"], "does not exist"),
        ([f"me={blank}"], "no face"),
    ]
    for refs, words in cases:
        out = tmp_path / "out.mp4"
        args = ["run", str(src), "-o", str(out), "-q"]
        for r in refs:
            args += ["--reference", r]
        capsys.readouterr()
        assert main(args) == 2, refs
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and words in err[0] and "Traceback" not in err[0], err
        assert sorted(p.name for p in tmp_path.iterdir()) == ["blank.png"], refs


def test_named_references_keep_their_name_when_made_absolute(tmp_path, monkeypatch):
    """The saved configuration holds absolute reference paths; NAME=PATH keeps its NAME (a
    name made into a path would name the person after the working folder)."""
    from lostface.cli_common import reference_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "a=b.jpg").write_bytes(b"")  # a file whose name holds '=' is a path
    got = reference_paths(["singer=pic.jpg", "pic.jpg", "=pic.jpg", "a=b.jpg", "singer=pic.jpg"])
    pic = str(tmp_path / "pic.jpg")
    assert got == [f"singer={pic}", pic, f"={pic}", str(tmp_path / "a=b.jpg")]


def test_a_quick_restore_exits_cleanly(tmp_path):
    """A small photo is done before dlib's models (loaded beside the rest) are: the process
    ended inside onnxruntime's session set-up and aborted (exit 134, "terminate called without
    an active exception") after writing its output. A real masked photo shrunk to 96 px."""
    image = cv2.imread(str(shared_path("masked") / "0010.jpg"))
    k = 96 / max(image.shape[:2])
    src = tmp_path / "small.png"
    cv2.imwrite(str(src), cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA))
    for _ in range(4):  # it aborted on about half of the runs
        proc = _run(["restore", str(src), "-o", str(tmp_path / "out.png"), "-q"])
        assert proc.returncode == 0, proc.stderr
        assert "terminate" not in proc.stderr
        assert (tmp_path / "out.png").is_file()


def test_photos_restored_one_after_another_come_out_as_each_alone():
    """restore_image with the same stages: a photo restored again, or after another of its
    size, is restored as in a fresh process (the small-face search paces itself by its calls
    and the frame mark takes its strength from an earlier image of the size: both reset)."""
    from lostface.config import load_settings
    from lostface.factory import build_stages
    from lostface.restore_image import restore_image
    from lostface.stream.image import read_image

    settings = load_settings(overrides=["provenance.run_id=5a3"])
    stages = build_stages(settings, footage=False)
    # a group photo whose small faces the enlarged look finds
    group = read_image(shared_path("masked", "0002.jpg")).bgr
    first = restore_image(group, stages, settings)
    again = restore_image(group, stages, settings)
    assert first.faces == again.faces and first.masked == again.masked >= 1
    assert np.array_equal(first.image, again.image)
    # frames of one video restored as photos (`lostface bench`'s naive pipeline) keep the
    # search's pace, as `lostface run` does: no enlarged look on the next call
    paced = restore_image(group, stages, settings, afresh=False)
    assert paced.faces != again.faces or not np.array_equal(paced.image, again.image)


def test_restore_several_photos_into_a_folder(tmp_path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("0002.jpg", "0010.jpg"):
        (photos / name).write_bytes(shared_path("masked", name).read_bytes())
    grey = photos / "grey.png"
    cv2.imwrite(str(grey), cv2.cvtColor(cv2.imread(str(photos / "0010.jpg")), cv2.COLOR_BGR2GRAY))
    (photos / "notes.txt").write_text("not a photo")  # a folder's other files are left out
    fixed = ["--set", "provenance.run_id=5a3", "-q"]
    out = tmp_path / "restored"
    assert main(["restore", str(photos), "-o", str(out), *fixed]) == 0
    written = capsys.readouterr().out.split()
    names = ["0002.jpg", "0010.jpg", "grey.png"]
    assert written == [str(out / n) for n in names]
    for name in names:
        single = tmp_path / f"single_{name}"
        assert main(["restore", str(photos / name), "-o", str(single), *fixed]) == 0
        batch = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        alone = cv2.imread(str(single), cv2.IMREAD_UNCHANGED)
        assert batch.shape == alone.shape and np.array_equal(batch, alone), name
        if name.endswith(".jpg"):  # painted (its grey copy is judged by less than colour)
            assert not np.array_equal(batch, cv2.imread(str(photos / name)))
    assert cv2.imread(str(out / "grey.png"), cv2.IMREAD_UNCHANGED).ndim == 2  # grey stays grey
    # bad input: one sentence each, nothing written
    a_file = tmp_path / "single_0002.jpg"
    line = _one_sentence(_run(["restore", str(photos), "-o", str(a_file)]))
    assert "-o names the folder" in line
    line = _one_sentence(_run(["restore", str(photos), str(photos / "0002.jpg"), "-o", "x"]))
    assert "given twice" in line
    line = _one_sentence(_run(["restore", str(photos), "-o", str(photos)]))
    assert "holds the input" in line
    # one photo into an existing folder: written there under its own name, as the batch's
    into = tmp_path / "into"
    into.mkdir()
    capsys.readouterr()
    assert main(["restore", str(photos / "0010.jpg"), "-o", str(into), *fixed]) == 0
    assert capsys.readouterr().out.split() == [str(into / "0010.jpg")]
    assert np.array_equal(
        cv2.imread(str(into / "0010.jpg"), cv2.IMREAD_UNCHANGED),
        cv2.imread(str(out / "0010.jpg"), cv2.IMREAD_UNCHANGED),
    )
    # an output without an extension: the sentence suggests the photo's own, not a video's
    line = _one_sentence(_run(["restore", str(photos / "grey.png"), "-o", str(tmp_path / "bare")]))
    assert "has no extension" in line and "bare.png" in line and ".mp4" not in line
    assert not (tmp_path / "bare").exists()
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((photos / "0010.jpg").read_bytes()[:2000])
    fresh = tmp_path / "never"
    line = _one_sentence(_run(["restore", str(photos), str(broken), "-o", str(fresh)]))
    assert "broken.jpg" in line and not fresh.exists()
    assert sorted(p.name for p in photos.iterdir()) == [
        "0002.jpg",
        "0010.jpg",
        "grey.png",
        "notes.txt",
    ]


def test_detect_reads_a_folder_and_searches_each_photo_afresh(tmp_path, capsys):
    """The same group photo under two names in a folder: both found alike, and as alone (the
    small-face search paces itself by its calls; each photo starts it afresh)."""
    photos = tmp_path / "photos"
    photos.mkdir()
    data = shared_path("masked", "0002.jpg").read_bytes()
    for name in ("a.jpg", "b.jpg"):
        (photos / name).write_bytes(data)
    assert main(["detect", str(photos), "--json", "-q"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [Path(x["path"]).name for x in lines] == ["a.jpg", "b.jpg"]
    assert main(["detect", str(photos / "b.jpg"), "--json", "-q"]) == 0
    alone = json.loads(capsys.readouterr().out)
    assert len(lines[0]["faces"]) >= 3
    assert lines[0]["faces"] == lines[1]["faces"] == alone["faces"]
    # photos named between options and after them, as users type them
    assert main(["detect", str(photos / "a.jpg"), "--json", "-q", str(photos / "b.jpg")]) == 0
    mixed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [Path(x["path"]).name for x in mixed] == ["a.jpg", "b.jpg"]
    assert mixed[0]["faces"] == mixed[1]["faces"] == alone["faces"]


def test_a_commands_photos_and_options_come_in_any_order():
    from lostface.cli import build_parser

    args = build_parser().parse_args(
        ["restore", "a.jpg", "-r", "me.jpg", "b.jpg", "-o", "out", "c.jpg", "--set", "x=1"]
    )
    assert [str(p) for p in args.inputs] == ["a.jpg", "b.jpg", "c.jpg"]
    assert str(args.output) == "out"
    args = build_parser().parse_args(["models", "merge", "base", "-o", "m", "ft", "--weights", "1"])
    assert args.models_command == "merge" and args.inputs == ["base", "ft"]
