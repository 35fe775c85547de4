"""The machine-readable tag that says a file's faces were painted by lostface.

Videos carry it as the container's `comment` and `description` entries (MP4, MOV, M4V,
Matroska, WebM; MPEG-TS has no such entry), photos as a PNG `tEXt` chunk or a JPEG comment
segment. The tag is one sentence that names lostface and its version, so that a person reading
a file's metadata understands it, and a program finds it with `parse_tag`.
"""

from __future__ import annotations

import logging
import re
import struct
import zlib
from pathlib import Path

import av

from lostface import __version__
from lostface.stream.audio import copy_labels

log = logging.getLogger(__name__)

TAG_KEYS = ("comment", "description")  # container metadata entries the tag is written to
PNG_KEYWORD = "Comment"
_TAG_RE = re.compile(r"painted by lostface (\d+(?:\.\d+)*(?:[-+.\w]*\w)?)")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def tag_text(run_id: int | None = None) -> str:
    """The tag: what was done, by which version, and the watermark's run id when marked."""
    text = (
        f"AI-restored: faces hidden under face masks were painted by lostface {__version__} "
        "(trained-algorithmic media composited into the recording)"
    )
    if run_id is not None:
        text += f"; invisible watermark run id {run_id:03x}"
    return text + "."


def parse_tag(text: str) -> str | None:
    """The lostface version a tag names, or None when `text` is no lostface tag."""
    m = _TAG_RE.search(text or "")
    return m.group(1) if m else None


# --- videos -----------------------------------------------------------------------------------


def video_tags(path: Path) -> dict[str, str]:
    """The container's metadata entries (keys lower-cased); empty when it has none."""
    try:
        with av.open(str(path)) as c:
            return {str(k).lower(): str(v) for k, v in c.metadata.items()}
    except (av.error.FFmpegError, OSError, UnicodeDecodeError):
        return {}


def remux_without_tag(src: Path, dst: Path) -> None:
    """Copy every stream of `src` into `dst` (no re-encoding) without the lostface tag: an
    output where nothing was painted must not say that something was."""
    with av.open(str(src)) as i, av.open(str(dst), "w") as o:
        for k, v in i.metadata.items():
            if str(k).lower() not in TAG_KEYS and str(k).lower() != "encoder":
                o.metadata[k] = v
        pairs = {}
        for s in i.streams:
            if s.type in ("video", "audio", "subtitle"):
                pairs[s.index] = o.add_stream_from_template(s)
                copy_labels(s, pairs[s.index])
        for packet in i.demux(*[i.streams[n] for n in pairs]):
            if packet.size == 0:
                continue  # the demuxer's end-of-stream marker (Matroska leaves a B-frame
                # stream's first packets without a decode time: they are kept)
            packet.stream = pairs[packet.stream.index]
            o.mux(packet)


# --- photos -----------------------------------------------------------------------------------


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_text(keyword: str, text: str) -> bytes:
    """An iTXt chunk (UTF-8, uncompressed)."""
    return _png_chunk(b"iTXt", keyword.encode("latin-1") + b"\0\0\0\0\0" + text.encode("utf-8"))


def tag_png(data: bytes, text: str) -> bytes:
    """The PNG `data` with an iTXt `Comment` chunk after its header."""
    if not data.startswith(_PNG_SIGNATURE):
        raise ValueError("not a PNG")
    end = 8 + 8 + struct.unpack(">I", data[8:12])[0] + 4  # signature, IHDR (len, type, data, crc)
    return data[:end] + _png_text(PNG_KEYWORD, text) + data[end:]


def tag_jpeg(data: bytes, text: str) -> bytes:
    """The JPEG `data` with a comment (COM) segment after its start marker (and APP0)."""
    if not data.startswith(b"\xff\xd8"):
        raise ValueError("not a JPEG")
    payload = text.encode("utf-8")[:65000]
    seg = b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload
    pos = 2
    if data[2:4] == b"\xff\xe0":  # keep JFIF's APP0 first, as readers expect
        pos = 4 + struct.unpack(">H", data[4:6])[0]
    return data[:pos] + seg + data[pos:]


def tag_image_bytes(data: bytes, ext: str, text: str) -> bytes | None:
    """Encoded photo bytes with the tag, or None when the format has no place lostface writes
    it to (BMP, TIFF, WebP)."""
    ext = ext.lower()
    if ext == ".png":
        return tag_png(data, text)
    if ext in (".jpg", ".jpeg"):
        return tag_jpeg(data, text)
    return None


def png_texts(data: bytes) -> list[str]:
    """The text of every tEXt, iTXt and zTXt chunk of a PNG."""
    out: list[str] = []
    pos = 8
    while pos + 8 <= len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + n]
        pos += 12 + n
        try:
            if kind == b"tEXt":
                out.append(body.split(b"\0", 1)[1].decode("latin-1"))
            elif kind == b"zTXt":
                out.append(zlib.decompress(body.split(b"\0", 1)[1][1:]).decode("latin-1"))
            elif kind == b"iTXt":
                _key, rest = body.split(b"\0", 1)
                flag, _method = rest[0], rest[1]
                _lang, rest = rest[2:].split(b"\0", 1)
                _tkey, text = rest.split(b"\0", 1)
                out.append((zlib.decompress(text) if flag else text).decode("utf-8", "replace"))
        except (IndexError, ValueError, zlib.error):
            continue
        if kind == b"IEND":
            break
    return out


def jpeg_comments(data: bytes) -> list[str]:
    """The text of every COM segment of a JPEG (up to the start of the scan)."""
    out = []
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        if marker == 0xDA:  # start of scan: no more metadata segments
            break
        (n,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker == 0xFE:
            out.append(data[pos + 4 : pos + 2 + n].decode("utf-8", "replace"))
        pos += 2 + n
    return out


def image_texts(data: bytes) -> list[str]:
    """Text metadata of a PNG or JPEG (other formats: none)."""
    if data.startswith(_PNG_SIGNATURE):
        return png_texts(data)
    if data.startswith(b"\xff\xd8"):
        return jpeg_comments(data)
    return []
