"""Video I/O on real files made with PyAV: frame count, timestamps, audio, atomic output."""

from __future__ import annotations

import av
import numpy as np
import pytest

from lostface.config import VideoSettings
from lostface.errors import InputError, OutputError
from lostface.frame import Frame
from lostface.stream.video import (
    ThreadedReader,
    ThreadedWriter,
    VideoReader,
    VideoWriter,
    check_output,
)
from tests.media import probe, write_clip


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


def _copy(src, dst, settings=None):
    reader = VideoReader(src)
    writer = VideoWriter(dst, reader.info, settings or VideoSettings(), reader.audio)
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


def test_odd_size_kept(tmp_path, astronaut_bgr):
    src = write_clip(tmp_path / "odd.mkv", _frames(astronaut_bgr, 4, (641, 361)), audio=False)
    dst = tmp_path / "odd_out.mp4"
    _copy(src, dst)
    p = probe(dst)
    assert (p["width"], p["height"]) == (641, 361) and p["frames"] == 4


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
