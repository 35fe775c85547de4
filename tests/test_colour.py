"""Colour through the video files: written back with the matrix and range the source was read
with, and tagged with them, so every player shows the output's colours as the input's."""

from __future__ import annotations

import av
import cv2
import numpy as np
import pytest

from lostface.config import VideoSettings
from lostface.frame import Frame
from lostface.stream.colour import Colour, from_bgr, to_bgr
from lostface.stream.video import VideoReader, VideoWriter
from tests.media import write_clip

# (FFmpeg's colorspace, color_range): untagged; BT.709 limited (phones and HD cameras);
# BT.601 full range (webcams' MJPEG, some screen recorders); BT.709 full range
COLOURS = [None, (1, 1), (6, 2), (1, 2)]


# the patches' insides (their edges mix two colours in one chroma sample)
INSIDE = (slice(12, 36), np.r_[12:44, 60:92, 108:140, 156:188])


def _picture(astronaut: np.ndarray, shift: int = 0) -> np.ndarray:
    """A real photo with saturated patches (where the matrices differ most)."""
    img = cv2.resize(np.roll(astronaut, shift, axis=1), (320, 240))
    for i, colour in enumerate([(0, 0, 255), (0, 255, 0), (255, 0, 0), (40, 200, 230)]):
        img[8:40, 8 + 48 * i : 48 + 48 * i] = colour
    return np.ascontiguousarray(img)


@pytest.mark.parametrize("colour", COLOURS, ids=["untagged", "bt709", "bt601-full", "bt709-full"])
def test_a_copied_video_keeps_its_colours_and_its_colour_tags(tmp_path, astronaut_bgr, colour):
    """Read and written back losslessly by lostface, a clip comes out tagged as the input was,
    with the colours a player that reads the tags shows within 3 levels of the input's, and its
    YUV values within a level. Before, BT.709 pictures were written back as untagged BT.601
    (which a player that takes untagged HD as BT.709 shows up to 41 levels off) and full-range
    ones as limited."""
    frames = [_picture(astronaut_bgr, 7 * i) for i in range(4)]
    src = write_clip(tmp_path / "in.mp4", frames, audio=False, colour=colour, options={"qp": "0"})
    dst = tmp_path / "out.mp4"
    with VideoReader(src) as reader:
        writer = VideoWriter(dst, reader.info, VideoSettings(crf=0))
        for item in reader.items():
            assert isinstance(item, Frame)
            writer.write(item)
        writer.commit()
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        ins, outs = list(a.decode(video=0)), list(b.decode(video=0))
    assert len(outs) == len(ins) == 4
    for vin, vout in zip(ins, outs, strict=True):
        assert Colour.of(vout) == Colour.of(vin)
        # swscale's reading is about a level dark (lostface.stream.colour), and no more;
        # untagged video is written by swscale's defaults as before, which round a little more
        plain = Colour.of(vin).plain
        yin, yout = vin.to_ndarray().astype(int), vout.to_ndarray().astype(int)
        assert np.abs(yout - yin).mean() < 1.2
        assert abs((yout - yin).mean()) < 1.0 + 0.2 * plain
        # what a player that reads the tags shows (swscale honours them when decoding)
        shown_in = vin.to_ndarray(format="bgr24").astype(int)
        shown_out = vout.to_ndarray(format="bgr24").astype(int)
        assert np.abs(shown_out - shown_in)[INSIDE].max() <= 3 + 2 * plain
        assert np.abs(shown_out - shown_in).mean() < 1.5 + 0.5 * plain


@pytest.mark.parametrize("colour", [Colour(), Colour(1, 1, 1, 1), Colour(6, 2, 6, 6), Colour(9, 1)])
def test_written_frames_read_back_as_the_picture_they_were_made_from(astronaut_bgr, colour):
    """from_bgr (a matrix of our own; swscale's defaults for untagged BT.601) against an
    independent reading of its frames: swscale's, told the frame's matrix and range by its
    tags."""
    img = _picture(astronaut_bgr)
    vf = from_bgr(img, "yuv420p", colour)
    assert vf.format.name == "yuv420p" and Colour.of(vf) == colour
    back = to_bgr(vf).astype(int)
    # swscale's reading is about a level dark, its writing about one more
    assert abs((back - img).mean()) < (2.2 if colour.plain else 1.2)
    assert np.abs(back - img)[INSIDE].max() <= 6  # the saturated colours come back


def test_other_pixel_formats_and_odd_sizes_go_through_swscale_with_the_tags(astronaut_bgr):
    img = _picture(astronaut_bgr)
    vf = from_bgr(img, "yuv444p", Colour(1, 1, 1, 1))
    assert vf.format.name == "yuv444p" and vf.colorspace == 1
    assert np.abs(to_bgr(vf).astype(int) - img)[INSIDE].max() <= 4
    odd = np.ascontiguousarray(img[:239, :319])
    vf = from_bgr(odd, "yuv444p", Colour())
    assert np.abs(to_bgr(vf).astype(int) - odd).mean() < 2.0


def test_a_matrix_that_is_not_written_here_is_not_claimed(astronaut_bgr):
    """A source tagged with a matrix the writer does not use (RGB, YCgCo) is written with
    BT.601 and tagged unspecified, never with the source's claim."""
    img = _picture(astronaut_bgr)
    src = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
    for space in (0, 8):
        src.colorspace = space
        colour = Colour.of(src)
        assert colour.space == 2
        vf = from_bgr(img, "yuv420p", colour)
        assert vf.colorspace == 2
        assert np.abs(to_bgr(vf).astype(int) - img)[INSIDE].max() <= 6
