"""Still images: read any OpenCV-readable photo as BGR (grayscale and alpha handled), write
results back in the input's own mode, atomically."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from lostface.errors import InputError, OutputError

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


@dataclass
class Image:
    """A decoded photo: BGR pixels for the pipeline plus what is needed to write it back."""

    bgr: np.ndarray
    gray: bool = False
    alpha: np.ndarray | None = None


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
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if img is None or img.size == 0:
        raise InputError(
            f"{p} is not a readable image (corrupt, truncated or not a photo); "
            "give a JPEG, PNG, WebP or BMP file."
        )
    if img.dtype != np.uint8:  # 16-bit PNG/TIFF
        img = (
            img / (65535.0 if img.dtype == np.uint16 else max(float(img.max()), 1.0)) * 255
        ).astype(np.uint8)
    if img.ndim == 2:
        return Image(np.ascontiguousarray(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)), gray=True)
    if img.shape[2] == 4:
        return Image(np.ascontiguousarray(img[:, :, :3]), alpha=img[:, :, 3].copy())
    if img.shape[2] == 1:
        return Image(
            np.ascontiguousarray(cv2.cvtColor(img[:, :, 0], cv2.COLOR_GRAY2BGR)), gray=True
        )
    return Image(np.ascontiguousarray(img[:, :, :3]))


def write_image(path: str | Path, image: Image) -> Path:
    """Write in the input's mode (gray stays gray, alpha is kept where the format holds it)."""
    p = Path(path)
    ext = p.suffix.lower()
    if ext not in IMAGE_EXTENSIONS:
        raise OutputError(
            f"Output {p} needs an image extension ({', '.join(sorted(IMAGE_EXTENSIONS))})."
        )
    out = image.bgr
    if image.gray:
        out = cv2.cvtColor(out, cv2.COLOR_BGR2GRAY)
    elif image.alpha is not None and ext in {".png", ".webp", ".tif", ".tiff"}:
        out = np.dstack([out, image.alpha])
    ok, buf = cv2.imencode(ext, out)
    if not ok:
        raise OutputError(f"Could not encode {p} as {ext}.")
    tmp = p.with_name(f".{p.stem}.lostface-{os.getpid()}.partial{p.suffix}")
    try:
        buf.tofile(str(tmp))
        os.replace(tmp, p)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return p
