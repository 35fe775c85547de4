"""Between a video's YUV pixels and the BGR arrays the pipeline works on: frames are written
back with the matrix and range they were read with, and the output is tagged with them.

A video says how its YUV values map to colours: the matrix (BT.601 for standard definition and
most untagged files, BT.709 for HD from phones and cameras) and the range (limited, 16-235, or
full). FFmpeg's swscale reads each frame with its own pair, but wrote the BGR arrays back with
BT.601 in the limited range unless told otherwise, and the output carried no tag: a BT.709
phone video's colours turned wherever untagged HD is read as BT.709, as browsers do (saturated
colours by up to 41 levels on a 1280x720 test picture), and a full-range webcam recording was
squeezed into the limited range.

Reading stays swscale's (`to_bgr`: what every stage and benchmark was measured on; its fast
path reads about a level darker than the exact conversion). Writing (`from_bgr`): untagged and
BT.601 limited-range video as before, by swscale's defaults (writing it with OpenCV's exact
converter instead moved bench/small_faces.py's clip enough to drop its recall from 0.979 to
0.829: bench/README.md "Colour matrix and range"); 8-bit 4:2:0 video with another matrix or
the full range by a 3x4 matrix (cv2.transform), chroma averaged over each 2x2 block; other
pixel formats by swscale, told the matrix and range.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import av
import cv2
import numpy as np
import numpy.typing as npt
from av.video.reformatter import VideoReformatter

# FFmpeg's codes (AVColorSpace, AVColorRange, AVColorPrimaries, AVColorTransferCharacteristic)
UNSPECIFIED = 2
_FULL_RANGE = 2  # AVCOL_RANGE_JPEG; 0 (unspecified) and 1 (MPEG) are read as limited
# AVColorSpace -> (Kr, Kb): BT.709, FCC, BT.601 (BT470BG, SMPTE170M, and untagged, which FFmpeg
# reads as BT.601), SMPTE 240M, BT.2020 (non-constant luminance; constant read alike)
_LUMA = {
    1: (0.2126, 0.0722),
    4: (0.30, 0.11),
    5: (0.299, 0.114),
    6: (0.299, 0.114),
    UNSPECIFIED: (0.299, 0.114),
    7: (0.212, 0.087),
    9: (0.2627, 0.0593),
    10: (0.2627, 0.0593),
}
# AVColorSpace -> swscale's matrix (the rest: BT.601, its default)
_SWS_SPACES = {1: 1, 4: 4, 7: 7, 9: 9, 10: 9}

_reformatter = VideoReformatter()


@dataclass(frozen=True)
class Colour:
    """How a video's YUV values map to colours (FFmpeg's codes; 2 = unspecified)."""

    space: int = UNSPECIFIED
    range: int = 0
    primaries: int = UNSPECIFIED
    trc: int = UNSPECIFIED

    @classmethod
    def of(cls, source: av.VideoFrame) -> Colour:
        """The colour description a decoded frame carries. A matrix other than the YUV ones
        written here (RGB, YCgCo, ICtCp) counts as unspecified: the output is YUV written with
        BT.601 and must not claim another matrix."""
        space = int(source.colorspace or UNSPECIFIED)
        colour_range = int(source.color_range or 0)
        return cls(
            space=space if space in _LUMA else UNSPECIFIED,
            range=colour_range if colour_range in (0, 1, _FULL_RANGE) else 0,
            primaries=int(source.color_primaries or UNSPECIFIED),
            trc=int(source.color_trc or UNSPECIFIED),
        )

    @property
    def full(self) -> bool:
        return self.range == _FULL_RANGE

    @property
    def plain(self) -> bool:
        """BT.601 (or untagged) in the limited range: swscale's defaults."""
        return self.space in (UNSPECIFIED, 5, 6) and not self.full

    @property
    def tagged(self) -> bool:
        return self != Colour()

    def tag(self, target: av.VideoFrame | av.video.codeccontext.VideoCodecContext) -> None:
        """Write this description onto an output frame or encoder (what players read)."""
        target.colorspace = self.space
        target.color_range = self.range
        target.color_primaries = self.primaries
        target.color_trc = self.trc


@lru_cache(maxsize=16)
def _to_yuv(space: int, full: bool) -> np.ndarray:
    """3x4 matrix for cv2.transform: 8-bit BGR -> 8-bit YUV with this matrix and range."""
    kr, kb = _LUMA[space]
    luma = np.array([kb, 1.0 - kr - kb, kr])  # weights of B, G, R
    cb = (np.array([1.0, 0.0, 0.0]) - luma) / (2.0 * (1.0 - kb))
    cr = (np.array([0.0, 0.0, 1.0]) - luma) / (2.0 * (1.0 - kr))
    y_scale, c_scale, y_offset = (255.0, 255.0, 0.0) if full else (219.0, 224.0, 16.0)
    a = np.stack([luma * y_scale, cb * c_scale, cr * c_scale]) / 255.0
    return np.hstack([a, np.array([[y_offset], [128.0], [128.0]])]).astype(np.float32)


def to_bgr(vf: av.VideoFrame) -> np.ndarray:
    """A decoded frame as a BGR uint8 array, read with the frame's own matrix and range
    (swscale; from_bgr writes it back with the same pair)."""
    return vf.to_ndarray(format="bgr24")


def _i420(image: np.ndarray, colour: Colour) -> npt.NDArray[np.uint8]:
    """A BGR picture of even size as planar 4:2:0 YUV ((h * 3 / 2) x w, uint8) with the
    colour's matrix and range: chroma averaged over each 2x2 block. Each plane is written
    straight into the one output array."""
    h, w = image.shape[:2]
    yuv = cv2.transform(image, _to_yuv(colour.space, colour.full))
    out = np.empty((h * 3 // 2, w), np.uint8)
    cv2.extractChannel(yuv, 0, dst=out[:h])
    flat, q = out.reshape(-1), (h // 2) * (w // 2)
    for k, start in ((1, h * w), (2, h * w + q)):
        plane = flat[start : start + q].reshape(h // 2, w // 2)
        cv2.resize(cv2.extractChannel(yuv, k), (w // 2, h // 2), plane, 0, 0, cv2.INTER_AREA)
    return out


def from_bgr(image: np.ndarray, pix_fmt: str, colour: Colour) -> av.VideoFrame:
    """A BGR uint8 array as a frame in `pix_fmt`, written with `colour`'s matrix and range
    (the inverse of to_bgr) and tagged with it."""
    h, w = image.shape[:2]
    if not colour.plain and pix_fmt == "yuv420p" and w % 2 == 0 and h % 2 == 0:
        return _tagged(av.VideoFrame.from_ndarray(_i420(image, colour), "yuv420p"), colour)
    if image.flags.c_contiguous:
        # wraps the array instead of copying it: the reformat makes the new frame, and no stage
        # writes to a frame's image after handing it to the writer
        src = av.VideoFrame.from_numpy_buffer(image, format="bgr24")
    else:
        src = av.VideoFrame.from_ndarray(image, format="bgr24")
    if colour.plain:  # swscale's defaults, as every benchmark clip was written
        return _tagged(_reformatter.reformat(src, format=pix_fmt), colour)
    vf = _reformatter.reformat(
        src,
        format=pix_fmt,
        dst_colorspace=_SWS_SPACES.get(colour.space, 5),
        src_color_range="JPEG",
        dst_color_range="JPEG" if colour.full else "MPEG",
    )
    return _tagged(vf, colour)


def _tagged(vf: av.VideoFrame, colour: Colour) -> av.VideoFrame:
    if colour.tagged:
        colour.tag(vf)
    return vf
