"""The frame watermark: a 32-bit spread-spectrum mark in the brightness of every frame where
lostface painted a face, read back from the whole frame.

The mark is a fixed pattern of cells, ROWS rows high and as many columns as the frame's
aspect asks (about 11 pixels at 640x360), each cell a little brighter or darker: the sum of
32 pseudo-random +-1 patterns, one per payload bit, each signed by its bit. It is added to
the three colour channels alike (so only brightness moves), smoothed across cells, `amplitude`
levels strong where the picture is lit and fainter where it is dark (FrameMarker), and never
more than LIMIT levels: no pixel moves by more than 2 levels (bench/paint_region.py counts a
pixel as changed from 3); PSNR about 50 dB at 640x360. Frames under 192 rows high (cells of
under 6 pixels) get it stronger, still within 2 levels (SMALL): about 43 dB at 176x144. The
cells are fractions of the frame, not pixels, so the mark scales with the picture; cells of
1/32 of the height survive H.264 at CRF 28 and a half-size scaling (bench/provenance.py).
Marking a frame costs two saturating additions (the mark is made again only when the frame's
size or brightness changes).

Reading: each frame's brightness is averaged per cell and each cell's mean minus the median of
its four neighbours' kept (what the picture puts in a cell is mostly shared with its
neighbours; the pattern is not), summed over frames, and each cell weighted by the inverse of
its local magnitude (a textured part of the picture speaks louder than the mark, a flat one
does not). The header's 20 known bits make one pattern H; against a pattern that is
independent of the picture, the correlation sum_c w_c * H_c is a sum of independent +-1
terms, so Hoeffding's bound exp(-z**2 / 2) caps how often unmarked footage reads as well as z
(z: the correlation over its standard deviation). A file is judged from all its frames and
from windows of them (a clip painted only in part), each test with its share of the
false-alarm level. A single photo is one frame: its own picture is all the mark is read
against, so a busy photo may hide it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from lostface.provenance.watermark import HEADER, HEADER_BITS, PAYLOAD_BITS, payload_bits

ROWS = 32  # cells from the top of the frame to the bottom
LIMIT = 2.0  # levels: no pixel moves by more
DEFAULT_AMPLITUDE = 2.0  # levels: the mark's standard deviation before LIMIT clips it (lit parts)
_KEY = 0x10F7FACE  # seeds the 32 bit patterns
_SUB = 4  # pixels per cell side when a frame is read
_EPS = 0.05  # levels**2: floor of a cell's local magnitude (a flat, noiseless picture)
_LOCAL = 0.7  # cells: the scale over which a cell's local magnitude is measured
DARK = (16.0, 80.0)  # brightness (levels) from which the mark grows, and at which it is whole
DARK_GAIN = 0.35  # the mark's share where the picture is darkest
# frames under SMALL rows high have cells of under 6 pixels, which a codec's 4x4 and 8x8 blocks
# smooth away: there the mark is SMALL_BOOST times as strong (up to LIMIT all the same, so most
# of its pixels sit at +-2) and keeps SMALL_DARK_GAIN of it in the dark
SMALL = 192
SMALL_BOOST = 3.0
SMALL_DARK_GAIN = 0.6
GAIN_STEP = 8.0  # levels of a cell's brightness between the gains it can take
REGAIN = 15  # frames between looks at the brightness (half a second at 30 frames/s)
WINDOW = 48  # frames per window a file is also judged on (a clip painted only in part)


def grid(height: int, width: int) -> tuple[int, int]:
    """(rows, columns) of the mark's cells on a frame of this size."""
    return ROWS, max(1, int(round(ROWS * width / max(1, height))))


@lru_cache(maxsize=8)
def patterns(rows: int, cols: int) -> np.ndarray:
    """The 32 bit patterns (float32 +-1, shape (32, rows, cols)) of a grid."""
    rng = np.random.default_rng([_KEY, rows, cols])
    signs = np.array([-1.0, 1.0], np.float32)
    return rng.choice(signs, size=(PAYLOAD_BITS, rows, cols))


@lru_cache(maxsize=8)
def _header_pattern(rows: int, cols: int) -> np.ndarray:
    sign = np.where(HEADER > 0, 1.0, -1.0).astype(np.float32)
    return np.tensordot(sign, patterns(rows, cols)[:HEADER_BITS], 1)


class FrameMarker:
    """Adds one run's mark to frames (in place).

    The mark is fainter where the picture is dark (DARK): the eye sees a level or two on a
    black curtain that it does not see on a face or a lit wall. Its gain is set per cell from
    the frame's brightness, in steps of GAIN_STEP, looked at every REGAIN frames; the mark is
    made again (a few milliseconds) only when a cell's gain changed."""

    def __init__(self, run_id: int, amplitude: float = DEFAULT_AMPLITUDE) -> None:
        self.run_id = int(run_id)
        self.bits = payload_bits(self.run_id)
        self.amplitude = float(amplitude)
        self._cells: np.ndarray | None = None  # the pattern's cell values (rows, cols)
        self._size: tuple[int, int] | None = None
        self._gain: np.ndarray | None = None
        self._up = np.zeros((0, 0, 3), np.uint8)  # (H, W, 3): levels added
        self._down = np.zeros((0, 0, 3), np.uint8)  # levels taken away
        self.marked = 0  # frames marked
        self.remade = 0  # frames whose mark was made anew (a new size or brightness)
        self._since = 0  # frames since the gain was looked at

    def delta(self, height: int, width: int, gain: np.ndarray | None = None) -> np.ndarray:
        """The mark of a frame of this size: float32 (H, W) levels added to each channel;
        gain: (rows, cols) factors per cell (1: the full amplitude)."""
        rows, cols = grid(height, width)
        sign = 2.0 * self.bits.astype(np.float32) - 1.0
        cells = np.tensordot(sign, patterns(rows, cols), 1) / math.sqrt(PAYLOAD_BITS)
        if gain is not None:
            cells = cells * gain
        smooth = cv2.resize(cells, (width, height), interpolation=cv2.INTER_CUBIC)
        boost = SMALL_BOOST if height < SMALL else 1.0
        return np.clip(smooth * self.amplitude * boost, -LIMIT, LIMIT)

    def reset(self) -> None:
        """The next image is no frame of the same video (a photo): its brightness is looked
        at afresh, not taken from an earlier image of its size."""
        self._size, self._gain, self._since = None, None, 0

    def apply(self, image: np.ndarray) -> None:
        """Mark a BGR uint8 frame in place (saturating at black and white)."""
        h, w = image.shape[:2]
        self._since += 1
        if self._size != (h, w) or self._since >= REGAIN:
            self._since = 0
            gain = self._gain_of(image)
            if self._size != (h, w) or self._gain is None or not np.array_equal(gain, self._gain):
                d = np.rint(self.delta(h, w, gain))
                self._up = cv2.merge([np.clip(d, 0, None).astype(np.uint8)] * 3)
                self._down = cv2.merge([np.clip(-d, 0, None).astype(np.uint8)] * 3)
                self._size, self._gain = (h, w), gain
                self.remade += 1
        cv2.add(image, self._up, dst=image)
        cv2.subtract(image, self._down, dst=image)
        self.marked += 1

    @staticmethod
    def _gain_of(image: np.ndarray) -> np.ndarray:
        """(rows, cols) gains of the mark's cells from the frame's brightness (DARK)."""
        h, w = image.shape[:2]
        rows, cols = grid(h, w)
        step = max(1, min(h // (4 * rows), w // (4 * cols)))
        small = cv2.resize(image[::step, ::step], (cols, rows), interpolation=cv2.INTER_AREA)
        grey = cv2.cvtColor(small, cv2.COLOR_BGR2GRAY).astype(np.float32)
        steps = np.clip(np.round((grey - DARK[0]) / GAIN_STEP), 0, None)
        floor = SMALL_DARK_GAIN if h < SMALL else DARK_GAIN
        return np.clip(steps * GAIN_STEP / (DARK[1] - DARK[0]), floor, 1.0)


def frame_cells(image: np.ndarray, grid_size: tuple[int, int] | None = None) -> np.ndarray:
    """What one BGR (or grey) frame says of the mark: float32 (rows, cols), each cell's mean
    brightness minus its four neighbours' mean."""
    rows, cols = grid_size or grid(*image.shape[:2])
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    small = cv2.resize(
        grey.astype(np.float32), (cols * _SUB, rows * _SUB), interpolation=cv2.INTER_AREA
    )
    m = small.reshape(rows, _SUB, cols, _SUB).mean((1, 3))
    p = np.pad(m, 1, mode="reflect")
    # the median of the four neighbours: an edge through the cell is predicted from the two
    # neighbours it runs through, not averaged with the two across it
    return m - np.median(np.stack([p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, :-2], p[1:-1, 2:]]), 0)


@dataclass
class MarkTest:
    """The mark as read from some frames: z (the header's correlation in standard deviations),
    its chance bound, and the 32 bits read."""

    z: float
    chance: float
    bits: np.ndarray
    frames: int
    start: int = 0  # the first of the frames (in the order given to judge_frames)

    @property
    def header_errors(self) -> int:
        return int((self.bits[:HEADER_BITS] != HEADER).sum())


def mark_test(cells: np.ndarray, frames: int = 1, start: int = 0) -> MarkTest:
    """The header test on the cells of one or more frames (summed)."""
    c = np.asarray(cells, np.float32)
    local = cv2.GaussianBlur(c * c, (0, 0), _LOCAL) + _EPS
    w = c / np.sqrt(local)
    corr = np.tensordot(patterns(*c.shape), w, 2)
    h = _header_pattern(*c.shape)
    sd = math.sqrt(HEADER_BITS * float((w * w).sum()))
    z = float((h * w).sum()) / sd if sd > 0 else 0.0
    chance = math.exp(-z * z / 2) if z > 0 else 1.0
    return MarkTest(z, chance, (corr > 0).astype(np.uint8), frames, start)


def judge_frames(cells: Iterable[np.ndarray]) -> tuple[MarkTest | None, int]:
    """(the best test, how many were made) over the cells of a file's frames, in order: all
    frames together and every WINDOW frames (half overlapping). The tests share the false-alarm
    level (a weighted Bonferroni bound, fixed before any is read): half of it for all frames
    together, half for the windows between them; the best test's chance is divided by its
    share."""
    seq = [c for c in cells]
    if not seq:
        return None, 0
    shapes = {c.shape for c in seq}
    if len(shapes) > 1:  # a stream that changes size: the largest part is judged
        shape = max(shapes, key=lambda s: sum(c.shape == s for c in seq))
        seq = [c for c in seq if c.shape == shape]
    stack = np.stack(seq)
    spans = [(0, len(seq))]
    if len(seq) > WINDOW:
        step = WINDOW // 2
        spans += [(s, s + WINDOW) for s in range(0, len(seq) - WINDOW + 1, step)]
    share = [1.0] if len(spans) == 1 else [0.5] + [0.5 / (len(spans) - 1)] * (len(spans) - 1)
    tests = [mark_test(stack[a:b].sum(0), b - a, a) for a, b in spans]
    for t, w in zip(tests, share, strict=True):
        t.chance = min(1.0, t.chance / w)
    return min(tests, key=lambda t: t.chance), len(tests)
