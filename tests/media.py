"""Media made for tests with PyAV: short real-content clips with and without audio."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    rate: int = 25,
    audio: bool = True,
    codec: str = "libx264",
    pix_fmt: str | None = None,
) -> Path:
    """Encode BGR frames (and a 440 Hz tone as AAC, when audio) into `path`."""
    h, w = frames[0].shape[:2]
    with av.open(str(path), "w") as out:
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height = w, h
        vs.pix_fmt = pix_fmt or ("yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p")
        as_ = out.add_stream("aac", rate=44100) if audio else None
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            vf.pts = i
            vf.time_base = Fraction(1, rate)
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        if as_ is not None:
            n = int(44100 * len(frames) / rate)
            t = np.arange(n) / 44100
            tone = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
            for start in range(0, n, 1024):
                af = av.AudioFrame.from_ndarray(
                    tone[:, start : start + 1024], format="fltp", layout="mono"
                )
                af.sample_rate = 44100
                af.pts = start
                for p in as_.encode(af):
                    out.mux(p)
            for p in as_.encode(None):
                out.mux(p)
    return path


def probe(path: Path) -> dict:
    """Frame count, size, rate, video pts and audio presence of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        pts = [f.pts for f in c.decode(video=0)]
        return {
            "frames": len(pts),
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "rate": v.average_rate,
            "time_base": v.time_base,
            "pts": pts,
            "audio": [s.codec_context.name for s in c.streams.audio],
        }
