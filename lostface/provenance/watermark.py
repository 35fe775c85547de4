"""The invisible watermark: RivaGAN's 32-bit mark, embedded in what lostface paints and read
back from faces.

RivaGAN (a learned video watermark that survives compression) costs about 1.5 s per 640x360
frame on a small CPU, so lostface never marks whole frames in the frame loop. It marks the
painted patch instead, once per keyframe on the keyframe worker's thread: the patch lives in
the canonical face crop (restore.align) and the compositor carries it, mark included, onto
every frame until the next keyframe. The mark is embedded at a reduced scale of that crop
(`MarkGeometry`): the face is smaller in the frame than in the canonical crop, and a coarser
pattern survives that shrinking, H.264 and a later half-size scaling; the scale follows the
face's size in the frame (geometry_for), so a large face does not wear coarse colour
blotches. Reading aligns each face found in a frame to the same crop and runs the decoder on
it; a file is judged from many faces (lostface.provenance.verify).

Payload (32 bits): a fixed 16-bit lostface mark, a 4-bit version, a 12-bit run id.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from lostface.restore import align

log = logging.getLogger(__name__)

PAYLOAD_BITS = 32
MARK = 0xB4D2  # 16 bits, half of them ones: no flat or periodic pattern a picture could mimic
MARK_BITS = 16
VERSION = 1
VERSION_BITS = 4
RUN_ID_BITS = 12
HEADER_BITS = MARK_BITS + VERSION_BITS  # what a reader checks: mark and version


def new_run_id() -> int:
    """A random 12-bit id for one run (printed as 3 hex digits), to tell runs apart."""
    return secrets.randbits(RUN_ID_BITS)


def payload_bits(run_id: int, version: int = VERSION) -> np.ndarray:
    """The 32 payload bits, most significant first: mark, version, run id."""
    if not 0 <= run_id < 1 << RUN_ID_BITS:
        raise ValueError(f"run id {run_id} does not fit in {RUN_ID_BITS} bits")
    word = (MARK << (VERSION_BITS + RUN_ID_BITS)) | (version << RUN_ID_BITS) | run_id
    return np.array([(word >> (PAYLOAD_BITS - 1 - i)) & 1 for i in range(PAYLOAD_BITS)], np.uint8)


def split_payload(bits: np.ndarray) -> tuple[int, int, int]:
    """(mark, version, run id) of 32 bits."""
    word = 0
    for b in np.asarray(bits).astype(np.uint8)[:PAYLOAD_BITS]:
        word = (word << 1) | int(b)
    return (
        word >> (VERSION_BITS + RUN_ID_BITS),
        (word >> RUN_ID_BITS) & ((1 << VERSION_BITS) - 1),
        word & ((1 << RUN_ID_BITS) - 1),
    )


HEADER = payload_bits(0)[:HEADER_BITS]


@dataclass(frozen=True)
class MarkGeometry:
    """Where in the canonical face crop the mark lives, and at which scale.

    width: the canonical crop (CANON_SIZE wide) is resized to this width before RivaGAN runs
    (the mark's pattern grows by CANON_SIZE / width); top: the first canonical row of the
    region (0: the whole crop; the lower face, where patches are painted, starts near 150).
    """

    width: int = 64
    top: int = 0

    @property
    def region_shape(self) -> tuple[int, int]:
        """(height, width) of the region in canonical pixels."""
        return align.CANON_HEIGHT - self.top, align.CANON_SIZE

    @property
    def small_size(self) -> tuple[int, int]:
        """cv2 (width, height) the region is resized to for RivaGAN (multiples of 4)."""
        h, w = self.region_shape
        sw = max(16, self.width // 4 * 4)
        sh = max(16, int(round(h * sw / w / 4)) * 4)
        return sw, sh


MIN_WIDTH, MAX_WIDTH = 64, 256  # RivaGAN input widths used: finer for small faces, no coarser
PATTERN_PIXELS = 2.0  # frame pixels one pixel of RivaGAN's pattern covers where it is marked


def geometry_for(span: float) -> MarkGeometry:
    """The mark's geometry for a face whose canonical crop spans `span` frame pixels: its
    pattern about PATTERN_PIXELS frame pixels coarse (finer on faces whose crop spans less than
    2 * MIN_WIDTH pixels). Coarser, it shows as colour blotches on a large face; finer, H.264
    and scaling wipe it out."""
    width = int(round(span / PATTERN_PIXELS / 4)) * 4
    return MarkGeometry(int(np.clip(width, MIN_WIDTH, MAX_WIDTH)))


def _to_input(images: Sequence[np.ndarray]) -> np.ndarray:
    """BGR uint8 images (same size) -> RivaGAN's input [N, 3, 1, H, W] in [-1, 1]."""
    x = np.stack(images).astype(np.float32) * (1.0 / 127.5) - 1.0
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2)[:, :, None])


class RivaGan:
    """RivaGAN's encoder and decoder (onnxruntime sessions from lostface.models), applied to
    canonical face crops. Sessions are shared: one lock serialises runs of each."""

    def __init__(self, threads: int = 1) -> None:
        from lostface.models import load_rivagan

        self.encoder, self.decoder = load_rivagan(threads)
        self._lock = threading.Lock()

    def residual(self, small: np.ndarray, bits: np.ndarray) -> np.ndarray:
        """The mark RivaGAN adds to one small BGR image, in pixel units (float32 HxWx3)."""
        x = _to_input([small])
        data = np.asarray(bits, np.float32).reshape(1, PAYLOAD_BITS)
        with self._lock:
            (y,) = self.encoder.run(None, {"frame": x, "data": data})
        out = np.clip(y, -1.0, 1.0) - x
        return (out[0, :, 0].transpose(1, 2, 0) * 127.5).astype(np.float32)

    def read(self, smalls: Sequence[np.ndarray]) -> np.ndarray:
        """Soft bits (N, 32) in about [0, 1] of small BGR images of one size."""
        if not smalls:
            return np.zeros((0, PAYLOAD_BITS), np.float32)
        with self._lock:
            (y,) = self.decoder.run(None, {"frame": _to_input(smalls)})
        return np.asarray(y, np.float32).reshape(len(smalls), PAYLOAD_BITS)


DEFAULT_STRENGTH = 2.0  # RivaGAN's residual doubled (bench/provenance.py: robustness and PSNR)
# frames a face shows the payload before it shows its complement, and back: a reader subtracts
# the two, which cancels what the face's own picture makes the decoder read (the same in both)
SEGMENT = 8
_EDGE = 12  # canonical pixels over which the mark fades out at the crop's border


def _window() -> np.ndarray:
    """(H, W, 1) weight: 1 inside the canonical crop, fading to 0 at its border (no seam)."""
    w = np.zeros(align.CANON_SHAPE, np.float32)
    w[_EDGE:-_EDGE, _EDGE:-_EDGE] = 1.0
    return cv2.GaussianBlur(w, (0, 0), _EDGE / 2)[:, :, None]


class PatchMarker:
    """Computes the mark of painted patches (canonical crops) with one run's payload.

    The residual covers the whole face crop, not only the painted region: the compositor adds
    it over the face on every frame the patch is carried to, so the mark has the whole face to
    live in (a mark confined to the painted mouth and chin is half as readable after H.264).
    There are two: the payload's and its complement's, shown in turns of SEGMENT frames.
    strength scales RivaGAN's residual (1: as trained).
    """

    def __init__(
        self,
        model: RivaGan,
        run_id: int | None = None,
        geometry: MarkGeometry | None = None,
        strength: float = DEFAULT_STRENGTH,
    ) -> None:
        self.model = model
        self.run_id = new_run_id() if run_id is None else run_id
        self.bits = payload_bits(self.run_id)
        self.geometry = geometry
        self.strength = float(strength)
        self.marked = 0  # patches marked so far
        self.seconds: list[float] = []  # time each mark took (benchmarks)
        self._window = _window()

    def residual(self, image: np.ndarray, span: float = align.CANON_SIZE / 2) -> np.ndarray:
        """What marks the canonical crop `image` (BGR uint8, CANON_SHAPE): float32 (2, H, W, 3),
        the payload's residual and its complement's, added by the compositor in turns
        (lostface.restore.compositor). span: frame pixels the face's crop spans (the mark's
        scale follows it, geometry_for); a fixed `geometry` given to the marker overrides it."""
        t0 = time.perf_counter()
        g = self.geometry or geometry_for(span)
        small = cv2.resize(image[g.top :], g.small_size, interpolation=cv2.INTER_AREA)
        out = np.zeros((2, *image.shape), np.float32)
        for k, bits in enumerate((self.bits, 1 - self.bits)):
            res = self.model.residual(small, bits)
            out[k, g.top :] = cv2.resize(
                res, (image.shape[1], image.shape[0] - g.top), interpolation=cv2.INTER_LINEAR
            )
        out *= self._window * self.strength
        self.marked += 1
        self.seconds.append(time.perf_counter() - t0)
        return out

    def mark(self, image: np.ndarray, span: float, phase: int = 0) -> np.ndarray:
        """`image` with its mark (phase 0: the payload, 1: its complement) added, as the
        compositor adds it to patches."""
        res = self.residual(image, span)[phase]
        return np.clip(image.astype(np.float32) + res + 0.5, 0, 255).astype(np.uint8)


def crop_for_reading(
    image: np.ndarray, landmarks: np.ndarray, geometry: MarkGeometry
) -> np.ndarray | None:
    """A face of a frame aligned to the mark's region at the decoder's scale (as `mark` saw
    it), or None when its landmarks give no alignment."""
    try:
        m = align.to_canonical(landmarks)
    except ValueError:
        return None
    region = align.warp_to_canonical(image, m)[geometry.top :]
    return cv2.resize(region, geometry.small_size, interpolation=cv2.INTER_AREA)
