"""Media made for tests with PyAV: short real-content clips with and without audio, with a
start offset or a display rotation as phones and cameras write them."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import VideoReformatter

# audio encoder -> sample rate it is written at
_AUDIO_RATES = {"aac": 44100, "libopus": 48000, "pcm_s16le": 44100, "libmp3lame": 44100}


def write_clip(
    path: Path,
    frames: list[np.ndarray],
    rate: int = 25,
    audio: bool = True,
    codec: str = "libx264",
    pix_fmt: str | None = None,
    audio_codec: str = "aac",
    start: Fraction = Fraction(0),
    time_base: Fraction | None = None,
    rotation: int = 0,
    gop: int = 0,
    colour: tuple[int, int] | None = None,
    options: dict[str, str] | None = None,
    tracks: list[tuple[str, str, str]] | None = None,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Encode BGR frames (and a 440 Hz tone, when audio) into `path`.

    start: seconds before the first frame and the first sound (both streams start there);
    time_base: the video's (default 1/rate); rotation: a display matrix turning the stored
    pictures that many degrees counter-clockwise (store them turned the other way); gop: a
    keyframe every that many frames (0: the encoder's default); colour: (FFmpeg's colorspace,
    color_range) the pixels are converted with by swscale and tagged with, as cameras and phones
    tag theirs (BT.709 = 1, full range = 2); options: the encoder's (e.g. {"qp": "0"},
    lossless); tracks: several audio tracks instead, (codec, language, title) each, the k-th
    a tone of 440 * (k + 1) Hz; metadata: the container's entries (creation_time, title)."""
    h, w = frames[0].shape[:2]
    tb = time_base or Fraction(1, rate)
    with av.open(str(path), "w") as out:
        for key, value in (metadata or {}).items():
            out.metadata[key] = value
        vs = out.add_stream(codec, rate=rate)
        vs.width, vs.height = w, h
        vs.pix_fmt = pix_fmt or ("yuv420p" if w % 2 == 0 and h % 2 == 0 else "yuv444p")
        vs.codec_context.time_base = tb
        if rotation:
            vs.set_display_rotation(rotation)
        if gop:
            vs.codec_context.gop_size = gop
        if options:
            vs.codec_context.options = dict(options)
        if colour is not None:
            vs.codec_context.colorspace, vs.codec_context.color_range = colour
            vs.codec_context.color_primaries = vs.codec_context.color_trc = colour[0]
        labels = tracks if tracks is not None else ([(audio_codec, "", "")] if audio else [])
        sounds = []
        for codec_name, language, title in labels:
            sr = _AUDIO_RATES.get(codec_name, 44100)
            stream = out.add_stream(codec_name, rate=sr, layout="mono")
            if language:
                stream.metadata["language"] = language
            if title:
                stream.metadata["title"] = title
            sounds.append((stream, sr))
        first = int(round(start / tb))
        step = Fraction(1, rate) / tb
        for i, img in enumerate(frames):
            vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="bgr24")
            if colour is not None:
                vf = VideoReformatter().reformat(
                    vf,
                    format=vs.pix_fmt,
                    dst_colorspace=colour[0],
                    src_color_range="JPEG",
                    dst_color_range=colour[1],
                )
                vf.colorspace, vf.color_range = colour
                vf.color_primaries = vf.color_trc = colour[0]
            vf.pts = first + int(round(i * step))
            vf.time_base = tb
            for p in vs.encode(vf):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
        for k, (as_, sr) in enumerate(sounds):
            n = int(sr * len(frames) / rate)
            t = np.arange(n) / sr
            tone = (0.2 * np.sin(2 * np.pi * 440 * (k + 1) * t)).astype(np.float32)[None, :]
            fmt = as_.codec_context.format.name
            a0 = int(round(start * sr))
            for s0 in range(0, n, 1024):
                chunk = tone[:, s0 : s0 + 1024]
                if fmt.startswith("s16"):
                    chunk = (chunk * 32767).astype(np.int16)
                elif fmt.startswith("s32"):
                    chunk = (chunk * 2147483647).astype(np.int32)
                af = av.AudioFrame.from_ndarray(chunk, format=fmt, layout="mono")
                af.sample_rate = sr
                af.pts = a0 + s0
                af.time_base = Fraction(1, sr)
                for p in as_.encode(af):
                    out.mux(p)
            for p in as_.encode(None):
                out.mux(p)
    return path


def probe(path: Path) -> dict:
    """Frame count, size, rate, video pts, audio presence and the display rotation of a file."""
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        frames = list(c.decode(video=0))
        pts = [f.pts for f in frames]
        return {
            "frames": len(pts),
            "width": v.codec_context.width,
            "height": v.codec_context.height,
            "rate": v.average_rate,
            "time_base": v.time_base,
            "pts": pts,
            "audio": [s.codec_context.name for s in c.streams.audio],
            "rotation": frames[0].rotation if frames else 0,
            "pix_fmt": v.codec_context.pix_fmt,
        }


def audio_span(path: Path) -> tuple[float, float] | None:
    """(first, end) time in seconds of the decoded audio, or None without audio."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return None
        first: float | None = None
        end = 0.0
        for f in c.decode(audio=0):
            t = float(f.pts * f.time_base) if f.pts is not None else end
            first = t if first is None else first
            end = t + f.samples / f.sample_rate
        return (first or 0.0, end)


def audio_tracks(path: Path) -> list[dict]:
    """Per audio track, in order: its codec, language, title, (first, end) in seconds and the
    frequency (Hz) its sound is loudest at."""
    out = []
    with av.open(str(path)) as c:
        for s in c.streams.audio:
            out.append(
                {
                    "codec": s.codec_context.name,
                    "language": s.metadata.get("language"),
                    "title": s.metadata.get("title"),
                }
            )
    for k, info in enumerate(out):
        with av.open(str(path)) as c:
            chunks, first, end, rate = [], None, 0.0, 1
            for f in c.decode(c.streams.audio[k]):
                t = float(f.pts * f.time_base) if f.pts is not None else end
                first = t if first is None else first
                end = t + f.samples / f.sample_rate
                rate = f.sample_rate
                chunks.append(f.to_ndarray().reshape(len(f.layout.channels), -1)[0])
        sound = np.concatenate(chunks).astype(np.float64)
        spectrum = np.abs(np.fft.rfft(sound * np.hanning(len(sound))))
        info["span"] = (first or 0.0, end)
        info["peak_hz"] = float(np.argmax(spectrum) * rate / len(sound))
    return out


SRT = """1
00:00:00,100 --> 00:00:00,200
Hello there

2
00:00:00,240 --> 00:00:00,360
Second line
"""


def with_subtitles(src: Path, dst: Path, language: str = "spa", srt: str = SRT) -> Path:
    """`src`'s streams and a SubRip subtitle track (in `language`) into the Matroska `dst`."""
    text = dst.with_suffix(".srt")
    text.write_text(srt, encoding="utf-8")
    with av.open(str(src)) as v, av.open(str(text)) as t, av.open(str(dst), "w") as out:
        for key in ("creation_time", "title"):
            if v.metadata.get(key):
                out.metadata[key] = v.metadata[key]
        pairs = {id(s): out.add_stream_from_template(s) for s in [*v.streams, t.streams[0]]}
        for s in v.streams:
            for key in ("language", "title"):
                if s.metadata.get(key):
                    pairs[id(s)].metadata[key] = s.metadata[key]
        pairs[id(t.streams[0])].metadata["language"] = language
        for c in (v, t):
            for packet in c.demux():
                if packet.size:
                    packet.stream = pairs[id(packet.stream)]
                    out.mux(packet)
    return dst


def subtitle_lines(path: Path) -> list[tuple[str | None, float, bytes]]:
    """(language, time in seconds, text) of every subtitle packet of a file."""
    out = []
    with av.open(str(path)) as c:
        for s in c.streams.subtitles:
            for p in c.demux(s):
                if p.size:
                    out.append((s.metadata.get("language"), float(p.pts * p.time_base), bytes(p)))
            c.seek(0)
    return out


def write_gif(path: Path, frames: list[np.ndarray], rate: int = 10) -> Path:
    """BGR frames as a GIF (256 colours), one picture per frame: an animated GIF, or a still
    one with a single frame."""
    with av.open(str(path), "w") as out:
        vs = out.add_stream("gif", rate=rate)
        vs.height, vs.width = frames[0].shape[:2]
        vs.pix_fmt = "rgb8"
        for img in frames:
            for p in vs.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(p)
        for p in vs.encode(None):
            out.mux(p)
    return path
