"""Video I/O on real files made with PyAV: frame count, timestamps, audio, atomic output."""

from __future__ import annotations

from fractions import Fraction

import av
import cv2
import numpy as np
import pytest

from lostface.config import VideoSettings
from lostface.errors import InputError, OutputError
from lostface.frame import Frame
from lostface.stream.video import (
    OUTPUT_CONTAINERS,
    ThreadedReader,
    ThreadedWriter,
    VideoInfo,
    VideoReader,
    VideoWriter,
    check_output,
    check_video_output,
)
from tests.media import (
    audio_span,
    audio_tracks,
    probe,
    subtitle_lines,
    with_subtitles,
    write_clip,
)


def _frames(astronaut, n=12, size=(320, 240)):
    base = np.ascontiguousarray(astronaut[:, :, :])
    out = []
    for i in range(n):
        m = np.float32([[1, 0, 3 * i], [0, 1, 2 * i]])
        out.append(
            np.ascontiguousarray(
                __import__("cv2").resize(
                    __import__("cv2").warpAffine(base, m, base.shape[1::-1]), size
                )
            )
        )
    return out


def _decode_all(path):
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


def _copy(src, dst, settings=None):
    reader = VideoReader(src)
    writer = VideoWriter(
        dst, reader.info, settings or VideoSettings(), reader.audios, subtitles=reader.subtitles
    )
    tw = ThreadedWriter(writer)
    tr = ThreadedReader(reader)
    n = 0
    for item in tr:
        tw.put(item)
        n += isinstance(item, Frame)
    tw.commit()
    tr.close()
    reader.close()
    return n


@pytest.mark.parametrize(
    "ext, codec", [(".mp4", "libx264"), (".mkv", "libx264"), (".webm", "libvpx")]
)
def test_round_trip_keeps_count_timestamps_rate_audio(tmp_path, astronaut_bgr, ext, codec):
    if codec == "libvpx":
        try:
            av.codec.Codec("libvpx", "w")
        except Exception:
            pytest.skip("libvpx encoder absent from this FFmpeg build")
    src = write_clip(
        tmp_path / f"in{ext}", _frames(astronaut_bgr), rate=25, audio=ext != ".webm", codec=codec
    )
    dst = tmp_path / f"out{ext}"
    n = _copy(src, dst)
    a, b = probe(src), probe(dst)
    assert n == a["frames"] == b["frames"] == 12
    assert (b["width"], b["height"]) == (a["width"], a["height"])
    assert b["rate"] == a["rate"]
    assert [p * b["time_base"] for p in b["pts"]] == [p * a["time_base"] for p in a["pts"]]
    assert b["audio"] == a["audio"]


def test_stage_clip_round_trip(tmp_path):
    from tests.conftest import shared_path

    src = shared_path("video", "stage_clip.mp4")
    dst = tmp_path / "out.mp4"
    _copy(src, dst)
    a, b = probe(src), probe(dst)
    assert b["frames"] == a["frames"] == 275 and b["pts"] == a["pts"] and b["audio"] == ["aac"]


def test_odd_size_is_padded_to_even_4_2_0_and_kept_exactly_on_request(tmp_path, astronaut_bgr):
    frames = _frames(astronaut_bgr, 4, (641, 361))
    src = write_clip(tmp_path / "odd.mkv", frames, audio=False, codec="ffv1", pix_fmt="bgr0")
    dst = tmp_path / "odd_out.mp4"
    _copy(src, dst)
    p = probe(dst)
    # even, 4:2:0 (H.264 High, which browsers and phones play), the picture where it was
    assert (p["width"], p["height"], p["pix_fmt"], p["frames"]) == (642, 362, "yuv420p", 4)
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.profile == "High"
    got = [f.image for f in VideoReader(dst).items() if isinstance(f, Frame)]
    for a, b in zip(frames, got, strict=True):
        err = np.abs(a.astype(float) - b[:361, :641]).mean()
        assert err < 5.0
        assert np.abs(b[361].astype(float) - b[360]).mean() < 3.0  # the padded row repeats
    exact = tmp_path / "odd_exact.mp4"
    _copy(src, exact, VideoSettings(exact_size=True))
    p = probe(exact)
    assert (p["width"], p["height"], p["pix_fmt"]) == (641, 361, "yuv444p")


# output container -> input audio codec -> the codec the output carries (copied where the
# container holds it, else Opus in WebM and AAC elsewhere)
_AUDIO_OUT = {
    ".mp4": {"aac": "aac", "opus": "opus", "pcm_s16le": "pcm_s16le"},
    ".m4v": {"aac": "aac", "opus": "aac", "pcm_s16le": "aac"},
    ".mov": {"aac": "aac", "opus": "aac", "pcm_s16le": "pcm_s16le"},
    ".mkv": {"aac": "aac", "opus": "opus", "pcm_s16le": "pcm_s16le"},
    ".webm": {"aac": "opus", "opus": "opus", "pcm_s16le": "opus"},
    ".ts": {"aac": "aac", "opus": "opus", "pcm_s16le": "aac"},
}
_AUDIO_IN = {
    "aac": (".mp4", "libx264"),
    "opus": (".webm", "libvpx-vp9"),
    "pcm_s16le": (".mov", "libx264"),
}


@pytest.fixture(scope="module")
def audio_inputs(tmp_path_factory, astronaut_bgr):
    """One clip per input audio codec, starting at 0.517 s on a 90 kHz clock (as cameras and
    phones write them: neither at 0 nor on the frame grid)."""
    d = tmp_path_factory.mktemp("audio_in")
    frames = _frames(astronaut_bgr, 10, (160, 120))
    out = {}
    for name, (ext, vcodec) in _AUDIO_IN.items():
        encoder = {"opus": "libopus"}.get(name, name)
        out[name] = write_clip(
            d / f"in_{name}{ext}",
            frames,
            rate=25,
            codec=vcodec,
            audio_codec=encoder,
            start=Fraction(517, 1000),
            time_base=Fraction(1, 90000),
        )
    return out


@pytest.mark.parametrize("audio_in", list(_AUDIO_IN))
@pytest.mark.parametrize("ext", list(OUTPUT_CONTAINERS))
def test_every_output_container_keeps_timestamps_and_audio(tmp_path, audio_inputs, ext, audio_in):
    src = audio_inputs[audio_in]
    dst = tmp_path / f"out{ext}"
    _copy(src, dst)
    a, b = probe(src), probe(dst)
    assert b["frames"] == a["frames"] == 10
    assert a["audio"][0].startswith(audio_in[:3])
    assert b["audio"] == [_AUDIO_OUT[ext][audio_in]]
    # every picture at its own time, to the container's clock (1 ms in Matroska and WebM)
    tick = b["time_base"]
    for pa, pb in zip(a["pts"], b["pts"], strict=True):
        assert abs(pb * tick - pa * a["time_base"]) <= tick / 2
    assert b["pts"][0] * tick >= Fraction(516, 1000)
    # the sound starts and ends where it did, to an encoder frame (AAC: 1024 samples)
    (s0, s1), (d0, d1) = audio_span(src), audio_span(dst)
    assert abs(d0 - s0) < 0.025 and abs(d1 - s1) < 0.025


@pytest.mark.parametrize("ext", list(OUTPUT_CONTAINERS))
def test_every_audio_track_is_kept_with_its_language(tmp_path, astronaut_bgr, ext):
    """A recording with two sound tracks (a film's languages; a screen recording's microphone
    and desktop sound): both are written, in order, each with its own sound, its span and its
    language (and its title where the container keeps one: Matroska and WebM)."""
    src = write_clip(
        tmp_path / "two.mkv",
        _frames(astronaut_bgr, 10, (160, 120)),
        rate=25,
        start=Fraction(517, 1000),
        time_base=Fraction(1, 90000),
        tracks=[("aac", "eng", "Main"), ("libopus", "fra", "Commentary")],
    )
    dst = tmp_path / f"out{ext}"
    assert _copy(src, dst) == 10
    before, after = audio_tracks(src), audio_tracks(dst)
    assert len(after) == 2
    for a, b in zip(before, after, strict=True):
        assert b["language"] == a["language"]
        assert abs(b["peak_hz"] - a["peak_hz"]) < 5  # each track keeps its own sound
        assert abs(b["span"][0] - a["span"][0]) < 0.025 and abs(b["span"][1] - a["span"][1]) < 0.03
        if ext in (".mkv", ".webm"):
            assert b["title"] == a["title"]


@pytest.mark.parametrize("ext", [".mkv", ".mp4"])
def test_subtitles_are_copied_where_the_container_holds_them(tmp_path, astronaut_bgr, ext):
    """A film's subtitle track (SubRip, Spanish) goes into a Matroska output as it was, each
    line at its time; an MP4 holds no SubRip, so it is left out there (with a log line) and
    the rest is written as ever."""
    plain = write_clip(tmp_path / "plain.mkv", _frames(astronaut_bgr, 10, (160, 120)), rate=25)
    src = with_subtitles(plain, tmp_path / "film.mkv")
    dst = tmp_path / f"out{ext}"
    assert _copy(src, dst) == 10
    got = subtitle_lines(dst)
    if ext == ".mp4":
        assert got == [] and probe(dst)["audio"] == ["aac"]
    else:
        assert got == [("spa", 0.1, b"Hello there"), ("spa", 0.24, b"Second line")]


@pytest.mark.parametrize("first", ["tff", "bff"])
@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".ts"])
def test_interlaced_video_is_written_interlaced(tmp_path, astronaut_bgr, first, ext):
    """TV and camcorder footage: each frame two fields woven together. Written progressive,
    players would show its combing instead of deinterlacing it; it is written interlaced, with
    the input's field order (FFmpeg's AV_FIELD_TT 2, AV_FIELD_BB 3)."""
    frames = _frames(astronaut_bgr, 10, (320, 240))
    for img in frames:  # the second field a moment later: moved against the first
        img[1::2] = np.roll(img[1::2], 4, axis=1)
    src = write_clip(
        tmp_path / f"in{ext}",
        frames,
        audio=False,
        options={"x264-params": f"interlaced=1:{first}=1"},
    )
    dst = tmp_path / f"out{ext}"
    with VideoReader(src) as reader:
        assert reader.info.interlaced and reader.info.top_field_first == (first == "tff")
    assert _copy(src, dst) == 10
    with av.open(str(dst)) as c:
        assert c.streams.video[0].codec_context.field_order == (2 if first == "tff" else 3)
        decoded = list(c.decode(video=0))
        assert all(f.interlaced_frame for f in decoded)
    # the pixels as well kept as by a progressive re-encode (the woven fields' fine rows cost
    # both a few levels)
    from dataclasses import replace

    flat = tmp_path / f"flat{ext}"
    with VideoReader(src) as reader:
        writer = VideoWriter(flat, replace(reader.info, field_order=1), VideoSettings())
        for item in reader.items():
            if isinstance(item, Frame):
                writer.write(item)
        writer.commit()
    ins, outs = _decode_all(src), [f.to_ndarray(format="bgr24") for f in decoded]
    kept = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(ins, outs, strict=True)])
    flats = _decode_all(flat)
    plain = np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(ins, flats, strict=True)])
    assert kept < 1.1 * plain + 0.2, (kept, plain)
    progressive = write_clip(tmp_path / f"p{ext}", frames[:3], audio=False)
    with VideoReader(progressive) as reader:
        assert not reader.info.interlaced


def test_no_audio_setting_writes_video_only(tmp_path, audio_inputs):
    dst = tmp_path / "silent.mp4"
    _copy(audio_inputs["aac"], dst, VideoSettings(audio=False))
    assert probe(dst)["audio"] == [] and audio_span(dst) is None


@pytest.mark.parametrize("ext", [".gif", ".avi", ".flv", ".ogv"])
def test_unsupported_output_containers_are_refused_up_front(tmp_path, ext):
    with pytest.raises(OutputError) as err:
        check_video_output(tmp_path / f"out{ext}")
    text = str(err.value)
    assert all(e in text for e in OUTPUT_CONTAINERS) and text.endswith(".")
    info = VideoInfo(64, 64, Fraction(25), Fraction(1, 25), 0, False)
    with pytest.raises(OutputError):
        VideoWriter(tmp_path / f"out{ext}", info, VideoSettings())
    assert list(tmp_path.iterdir()) == []


def _asymmetric(astronaut_bgr, size=(160, 96)):
    img = cv2.resize(astronaut_bgr, size)
    img[:12, :40] = (0, 0, 255)  # a red block in the top-left corner shows the way up
    return np.ascontiguousarray(img)


@pytest.mark.parametrize("degrees", [90, 270, 180])
def test_display_rotation_is_read_upright_and_written_upright(tmp_path, astronaut_bgr, degrees):
    upright = [
        np.ascontiguousarray(np.roll(_asymmetric(astronaut_bgr), i, axis=1)) for i in range(6)
    ]
    # a phone stores the picture turned the other way and a display matrix that turns it back
    stored = [np.ascontiguousarray(np.rot90(f, -degrees // 90)) for f in upright]
    src = write_clip(tmp_path / "phone.mp4", stored, rotation=degrees)
    assert probe(src)["rotation"] in (degrees, degrees - 360)
    with VideoReader(src) as r:
        assert r.info.rotation == degrees
        assert (r.info.width, r.info.height) == (160, 96)
        got = [f.image for f in r.items() if isinstance(f, Frame)]
    for a, b in zip(upright, got, strict=True):
        assert b.shape == a.shape and np.abs(a.astype(float) - b).mean() < 10.0
    dst = tmp_path / "out.mp4"
    _copy(src, dst)
    p = probe(dst)
    assert (p["width"], p["height"], p["rotation"]) == (160, 96, 0)  # upright, no matrix left
    assert p["audio"] == ["aac"] and p["pts"] == probe(src)["pts"]
    out = [f.image for f in VideoReader(dst).items() if isinstance(f, Frame)]
    assert out[0][:12, :40, 2].mean() > 180 and out[0][-12:, -40:, 2].mean() < 180


def test_decoded_pixels_are_close_to_source(tmp_path, astronaut_bgr):
    frames = _frames(astronaut_bgr, 3)
    src = write_clip(tmp_path / "in.mp4", frames, audio=False)
    got = [f.image for f in VideoReader(src).items() if isinstance(f, Frame)]
    mse = np.mean((got[0].astype(float) - frames[0].astype(float)) ** 2)
    assert 10 * np.log10(255**2 / mse) > 30  # a swapped channel order would give < 20 dB


@pytest.mark.parametrize(
    "content, words",
    [(b"", "empty"), (b"this is not a video at all" * 100, "not a video|could not")],
)
def test_bad_inputs(tmp_path, content, words):
    p = tmp_path / "bad.mp4"
    p.write_bytes(content)
    with pytest.raises(InputError, match=words):
        VideoReader(p)


def test_missing_and_folder_inputs(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        VideoReader(tmp_path / "nope.mp4")
    with pytest.raises(InputError, match="folder"):
        VideoReader(tmp_path)


def test_truncated_file_decodes_what_it_can(tmp_path, astronaut_bgr):
    src = write_clip(tmp_path / "full.mkv", _frames(astronaut_bgr, 12), audio=False)
    data = src.read_bytes()
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(data[: len(data) * 2 // 3])
    n = sum(isinstance(i, Frame) for i in VideoReader(cut).items())
    assert 0 < n < 12


def test_output_checks(tmp_path):
    src = tmp_path / "a.mp4"
    src.write_bytes(b"x")
    with pytest.raises(OutputError, match="input itself"):
        check_output(src, [src])
    with pytest.raises(OutputError, match="does not exist"):
        check_output(tmp_path / "missing" / "o.mp4", [src])
    with pytest.raises(OutputError, match="extension"):
        check_output(tmp_path / "noext", [src])


def test_abort_leaves_nothing(tmp_path, astronaut_bgr):
    src = write_clip(tmp_path / "in.mp4", _frames(astronaut_bgr, 6), audio=False)
    reader = VideoReader(src)
    dst = tmp_path / "out.mp4"
    writer = VideoWriter(dst, reader.info, VideoSettings(), None)
    for item in reader.items():
        writer.write(item)
        break
    writer.abort()
    reader.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
