"""Still images: read any OpenCV-readable photo as BGR (grayscale and alpha handled), as it is
shown (the EXIF orientation of phone photos applied), and write results back in the input's
own mode, upright and without an orientation tag, atomically."""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lostface.errors import InputError, OutputError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def gif_frames(data: bytes, limit: int = 2) -> int:
    """How many pictures a GIF holds (counted up to `limit`), from its blocks: an image
    descriptor each, extensions and colour tables skipped; 0 for bytes that are no GIF."""
    if data[:6] not in (b"GIF87a", b"GIF89a") or len(data) < 13:
        return 0
    pos = 13
    if data[10] & 0x80:  # global colour table
        pos += 3 << ((data[10] & 7) + 1)
    count = 0
    while pos < len(data) and count < limit:
        block = data[pos]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: its label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image descriptor, its local colour table, LZW code size
            if pos + 10 > len(data):
                break
            packed = data[pos + 9]
            pos += 10 + ((3 << ((packed & 7) + 1)) if packed & 0x80 else 0) + 1
            count += 1
        else:
            break
        while pos < len(data) and data[pos]:  # sub-blocks up to the empty one
            pos += data[pos] + 1
        pos += 1
    return count


def animated_gif(path: str | Path) -> bool:
    """Whether `path` is a GIF of more than one picture (a short video, not a photo)."""
    p = Path(path)
    if p.suffix.lower() != ".gif":
        return False
    try:
        return gif_frames(p.read_bytes()) > 1
    except OSError:
        return False


@dataclass
class Image:
    """A decoded photo: BGR pixels for the pipeline plus what is needed to write it back."""

    bgr: np.ndarray
    gray: bool = False
    alpha: np.ndarray | None = None
    orientation: int = 1  # the EXIF orientation the file was stored with (already applied)
    # a 16-bit photo's own pixels (as shown, in the file's channels): a PNG or TIFF output is
    # written at 16 bits from them, so what was not painted keeps every bit it had
    deep: np.ndarray | None = None


def eight_bits(deep: np.ndarray) -> np.ndarray:
    """16-bit pixels rounded to the nearest 8-bit level (257 * v comes back as v)."""
    return ((deep.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)


def deepen(out: np.ndarray, deep: np.ndarray) -> np.ndarray:
    """The 8-bit output's changes laid on the 16-bit photo it came from: a pixel left as it
    was keeps its 16 bits, a changed one moves by 257 times its change in 8-bit levels (so it
    reads back as `out` at 8 bits, a painted face and a watermark alike)."""
    moved = out.astype(np.int32) - eight_bits(deep)
    return np.clip(deep.astype(np.int32) + moved * 257, 0, 65535).astype(np.uint16)


_EXIF_ORIENTATION = 0x0112


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_exif(data: bytes) -> bytes | None:
    """The eXIf chunk of a PNG (TIFF-format EXIF), found by walking the chunk headers; None
    when it has none. Pillow decodes the whole picture to look for it, since the chunk may come
    after the image data: for a reference photo that was a second decode (about 0.1 s)."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        if kind == b"eXIf":
            return data[pos + 8 : pos + 8 + length]
        if kind == b"IEND":
            break
        pos += 12 + length
    return None


def exif_orientation(data: bytes | np.ndarray) -> int:
    """The EXIF orientation tag (1-8) of an encoded photo; 1 when it has none.

    Phones store the sensor's pixels as they were read out and a tag that says how to turn
    them for display; OpenCV ignores the tag when it keeps alpha and depth, so it is read here
    (Pillow parses EXIF in JPEG, PNG, WebP and TIFF; a PNG's chunk is found here first)."""
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    raw = bytes(data)
    try:
        if raw.startswith(_PNG_SIGNATURE):
            chunk = _png_exif(raw)
            if chunk is None:
                return 1
            exif = PILImage.Exif()
            exif.load(chunk if chunk.startswith(b"Exif") else b"Exif\x00\x00" + chunk)
            value = exif.get(_EXIF_ORIENTATION, 1)
        else:
            with PILImage.open(io.BytesIO(raw)) as im:
                value = im.getexif().get(_EXIF_ORIENTATION, 1)
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        PILImage.DecompressionBombError,
    ):
        return 1
    return int(value) if isinstance(value, int) and 1 <= value <= 8 else 1


def orient(image: np.ndarray, orientation: int) -> np.ndarray:
    """The pixels as shown for an EXIF orientation (2-8 mirror and/or turn; 1 leaves them)."""
    if orientation == 2:
        out = image[:, ::-1]
    elif orientation == 3:
        out = image[::-1, ::-1]
    elif orientation == 4:
        out = image[::-1]
    elif orientation == 5:
        out = image.swapaxes(0, 1)
    elif orientation == 6:
        out = np.rot90(image, -1)  # stored turned left: turn right to show
    elif orientation == 7:
        out = image[::-1, ::-1].swapaxes(0, 1)
    elif orientation == 8:
        out = np.rot90(image, 1)
    else:
        return image
    return np.ascontiguousarray(out)


def read_image(path: str | Path) -> Image:
    p = Path(path)
    if not p.exists():
        raise InputError(f"Image {p} does not exist; check the path.")
    if p.is_dir():
        raise InputError(f"{p} is a folder; give an image file.")
    if p.stat().st_size == 0:
        raise InputError(f"Image {p} is empty (0 bytes); give a complete image file.")
    try:
        data = np.fromfile(str(p), dtype=np.uint8)
    except OSError as exc:
        raise InputError(
            f"Image {p} cannot be read ({exc.strerror}); check its permissions."
        ) from None
    if gif_frames(data.tobytes()) > 1:
        raise InputError(
            f"{p} is an animated GIF, not a photo; give a still picture, or run "
            f"`lostface run {p} -o OUT.mp4` to restore its frames."
        )
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(
            f"{p} is not a readable image (corrupt, truncated or not a photo); "
            "give a JPEG, PNG, WebP or BMP file."
        )
    orientation = exif_orientation(data) if img.ndim >= 2 else 1
    if orientation != 1:
        log.info("%s is stored turned (EXIF orientation %d): read as it is shown.", p, orientation)
        img = orient(img, orientation)
    deep = None
    if img.dtype == np.uint16:  # 16-bit PNG/TIFF
        deep = np.ascontiguousarray(img)
        img = eight_bits(img)
    elif img.dtype != np.uint8:  # float or 32-bit TIFF: its own range, written back at 8 bits
        img = (img / max(float(img.max()), 1.0) * 255).astype(np.uint8)
    if img.ndim == 2:
        gray = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
        return Image(np.ascontiguousarray(gray), gray=True, orientation=orientation, deep=deep)
    if img.shape[2] == 4:
        return Image(
            np.ascontiguousarray(img[:, :, :3]),
            alpha=img[:, :, 3].copy(),
            orientation=orientation,
            deep=deep,
        )
    if img.shape[2] == 1:
        gray = cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)
        if deep is not None:
            deep = deep[:, :, 0].copy()
        return Image(np.ascontiguousarray(gray), gray=True, orientation=orientation, deep=deep)
    return Image(np.ascontiguousarray(img[:, :, :3]), orientation=orientation, deep=deep)


_DEEP_FORMATS = {".png", ".tif", ".tiff"}  # the formats OpenCV writes at 16 bits


def check_image_output(path: str | Path) -> Path:
    """The output's extension is an image format lostface writes, else one sentence that lists
    them (before any model is loaded)."""
    p = Path(path)
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        raise OutputError(
            f"Output {p} needs an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    return p


def write_image(
    path: str | Path,
    image: Image,
    tag: Callable[[bytes, str], bytes] | None = None,
    finalize: Callable[[Path], None] | None = None,
) -> Path:
    """Write in the input's mode (gray stays gray, alpha is kept where the format holds it, a
    16-bit photo stays 16-bit in a PNG or TIFF).

    The pixels are written as they are shown and no EXIF travels with them, so no viewer turns
    them a second time. tag: turns the encoded bytes (and the extension) into the bytes written
    (lostface.provenance adds its metadata tag); finalize: called with the written temporary
    file before it is renamed (C2PA signing)."""
    p = check_image_output(path)
    ext = p.suffix.lower()
    out = image.bgr
    if image.gray:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    elif image.alpha is not None and ext in {".png", ".webp", ".tif", ".tiff"}:
        out = np.dstack([out, image.alpha])
    if image.deep is not None and image.deep.shape == out.shape and ext in _DEEP_FORMATS:
        out = deepen(out, image.deep)
    ok, buf = cv2.imencode(ext, out)
    if not ok:
        raise OutputError(f"Could not encode {p} as {ext}.")
    data = buf.tobytes()
    if tag is not None:
        data = tag(data, ext)
    tmp = p.with_name(f".{p.stem}.lostface-{os.getpid()}.partial{p.suffix}")
    try:
        tmp.write_bytes(data)
        if finalize is not None:
            finalize(tmp)
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
