"""Video files through PyAV: decode any container/codec FFmpeg reads, encode H.264 by default,
keep resolution, frame rate, frame count, timestamps and the audio stream.

Decoding and encoding each run in their own thread (FFmpeg releases the GIL), so the frame
loop only ever waits on bounded queues. Output is written to a hidden temporary file beside
the target and renamed into place only when everything succeeded, so a failure or Ctrl-C
never leaves a half-written file behind.
"""

from __future__ import annotations

import logging
import os
import queue
import threading
from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import cast

import av
import numpy as np

from lostface.config import VideoSettings
from lostface.errors import InputError, OutputError
from lostface.frame import Frame

log = logging.getLogger(__name__)

_END = object()


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    frames: int  # 0 when the container does not say
    has_audio: bool


def check_input(path: str | Path) -> Path:
    """The input exists, is a non-empty regular file: or one sentence saying what to do."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"Input {p} does not exist; check the path.")
    if p.is_dir():
        raise InputError(f"Input {p} is a folder; give a video file.")
    if p.stat().st_size == 0:
        raise InputError(f"Input {p} is empty (0 bytes); give a complete video file.")
    if not os.access(p, os.R_OK):
        raise InputError(f"Input {p} cannot be read (permission denied); check its permissions.")
    return p


def check_output(out: str | Path, inputs: list[str | Path]) -> Path:
    """The output's folder exists and the output is not one of the inputs."""
    o = Path(out)
    if o.is_dir():
        raise OutputError(f"Output {o} is a folder; give a file name such as {o / 'out.mp4'}.")
    if not o.parent.exists():
        raise OutputError(f"Output folder {o.parent} does not exist; create it first.")
    for i in inputs:
        ip = Path(i)
        if ip.exists() and o.exists() and os.path.samefile(ip, o) or o.resolve() == ip.resolve():
            raise OutputError(f"Output {o} is the input itself; choose another output path.")
    if not o.suffix:
        raise OutputError(
            f"Output {o} has no extension; name it e.g. {o}.mp4 so the container is known."
        )
    return o


class VideoReader:
    """Opens a video file and yields Frames (BGR) and, interleaved in file order, audio packets."""

    def __init__(self, path: str | Path):
        self.path = check_input(path)
        try:
            self.container = av.open(str(self.path), mode="r")
        except av.error.InvalidDataError:
            raise InputError(
                f"Input {self.path} is not a video FFmpeg can read "
                "(corrupt or another kind of file)."
            ) from None
        except (av.error.FFmpegError, OSError) as exc:
            raise InputError(
                f"Input {self.path} could not be opened ({exc}); check the file."
            ) from None
        if not self.container.streams.video:
            self.container.close()
            raise InputError(
                f"Input {self.path} has no video stream; `lostface run` takes videos "
                "(use `lostface restore` for a photo)."
            )
        self.video: av.video.stream.VideoStream = self.container.streams.video[0]
        self.video.thread_type = "AUTO"
        self.audio = self.container.streams.audio[0] if self.container.streams.audio else None
        cc = self.video.codec_context
        if not cc.width or not cc.height:
            self.container.close()
            raise InputError(
                f"Input {self.path} has a video stream with no picture size; it looks corrupt."
            )
        rate = self.video.average_rate or self.video.guessed_rate or Fraction(30, 1)
        if (
            self.video.format is not None
            and self.video.format.name == "png"
            and self.video.frames <= 1
        ):
            self.container.close()
            raise InputError(
                f"Input {self.path} is a still image; use `lostface restore` for photos."
            )
        self.info = VideoInfo(
            width=cc.width,
            height=cc.height,
            rate=Fraction(rate),
            time_base=Fraction(self.video.time_base or Fraction(1, int(round(float(rate))) or 30)),
            frames=int(self.video.frames or 0),
            has_audio=self.audio is not None,
        )

    def items(self) -> Iterator[Frame | av.Packet]:
        """Frames and audio packets in decode order. Raises InputError on undecodable data."""
        streams = [self.video] + ([self.audio] if self.audio is not None else [])
        index = 0
        last_pts: int | None = None
        try:
            for packet in self.container.demux(streams):
                if packet.stream is self.audio:
                    if packet.dts is not None:
                        yield packet
                    continue
                for vf in packet.decode():
                    assert isinstance(vf, av.VideoFrame)
                    pts = vf.pts
                    if pts is None or (last_pts is not None and pts <= last_pts):
                        pts = (last_pts + 1) if last_pts is not None else 0
                    last_pts = pts
                    img = vf.to_ndarray(format="bgr24")
                    yield Frame(img, index, pts, self.info.time_base)
                    index += 1
            for vf in self.video.decode(None):  # drain (rarely needed: demux flushes)
                img = vf.to_ndarray(format="bgr24")
                pts = (last_pts + 1) if last_pts is not None else 0
                last_pts = pts
                yield Frame(img, index, pts, self.info.time_base)
                index += 1
        except av.error.EOFError:
            pass
        except av.error.FFmpegError as exc:
            if index == 0:
                raise InputError(
                    f"Input {self.path} could not be decoded ({exc}); the file looks corrupt."
                ) from None
            log.warning(
                "Stopped decoding %s after %d frames: %s (the file looks truncated).",
                self.path,
                index,
                exc,
            )

    def close(self) -> None:
        with suppress(Exception):
            self.container.close()

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ThreadedReader:
    """Decodes on a background thread into a bounded queue (the frame loop never decodes)."""

    def __init__(self, reader: VideoReader, maxsize: int = 16):
        self.reader = reader
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lostface-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self.reader.items():
                while not self._stop.is_set():
                    try:
                        self.q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            self._put_final(_END)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            self._put_final(exc)

    def _put_final(self, item: object) -> None:
        while not self._stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self) -> Iterator[Frame | av.Packet]:
        while True:
            item = self.q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def pick_codec(codec: str, path: Path) -> str:
    """'auto' means H.264, except in containers that cannot hold it (WebM: VP9, else VP8)."""
    if codec != "auto":
        return codec
    if path.suffix.lower() == ".webm":
        for name in ("libvpx-vp9", "libvpx"):
            try:
                av.codec.Codec(name, "w")
                return name
            except Exception:
                continue
    return "libx264"


def _temp_path(final: Path) -> Path:
    return final.with_name(f".{final.stem}.lostface-{os.getpid()}.partial{final.suffix}")


class VideoWriter:
    """Encodes Frames (H.264 by default) and copies audio packets, into a temporary file that
    `commit()` renames onto the target; `abort()` (or an exception in `with`) deletes it."""

    def __init__(
        self,
        path: str | Path,
        info: VideoInfo,
        settings: VideoSettings,
        audio_template: av.audio.stream.AudioStream | None = None,
    ):
        self.final = Path(path)
        self.tmp = _temp_path(self.final)
        self.settings = settings
        try:
            self.container = av.open(str(self.tmp), mode="w")
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"Cannot write {self.final} ({exc}); "
                "use a known video extension such as .mp4 or .mkv."
            ) from None
        codec = pick_codec(settings.codec, self.final)
        try:
            self.stream = cast(
                "av.video.stream.VideoStream", self.container.add_stream(codec, rate=info.rate)
            )
        except (av.error.FFmpegError, ValueError) as exc:
            self.abort()
            raise OutputError(
                f"Video codec {settings.codec!r} is not available ({exc}); set video.codec."
            ) from None
        self.stream.width = info.width
        self.stream.height = info.height
        pix_fmt = settings.pix_fmt
        if pix_fmt == "yuv420p" and (info.width % 2 or info.height % 2):
            pix_fmt = "yuv444p"  # 4:2:0 needs even sizes; keep the odd size exactly instead
            log.info("Odd picture size %dx%d: encoding 4:4:4 to keep it.", info.width, info.height)
        self.stream.pix_fmt = pix_fmt
        self.stream.time_base = info.time_base
        self.stream.codec_context.time_base = info.time_base
        if codec in ("libx264", "libx265"):
            self.stream.codec_context.options = {
                "preset": settings.preset,
                "crf": str(settings.crf),
            }
        if settings.threads:
            self.stream.codec_context.thread_count = settings.threads
        self.stream.thread_type = "AUTO"
        self.audio_in = audio_template
        self.audio_out = None
        if audio_template is not None:
            try:
                self.audio_out = self.container.add_stream_from_template(audio_template)
            except (av.error.FFmpegError, ValueError) as exc:
                log.warning(
                    "Audio stream dropped: the %s container cannot hold it (%s).",
                    self.final.suffix,
                    exc,
                )
                self.audio_out = None
        self._last_pts: int | None = None
        self.frames_written = 0

    def write(self, frame: Frame) -> None:
        img = frame.image
        if img.flags.c_contiguous:
            # wraps the array instead of copying it: encoding converts it to pix_fmt at once,
            # and no stage writes to a frame's image after handing it to the writer
            vf = av.VideoFrame.from_numpy_buffer(img, format="bgr24")
        else:
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
        pts = frame.pts if frame.pts is not None else self.frames_written
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        vf.pts = pts
        vf.time_base = self.stream.codec_context.time_base
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.frames_written += 1

    def write_audio(self, packet: av.Packet) -> None:
        if self.audio_out is None:
            return
        packet.stream = self.audio_out
        try:
            self.container.mux(packet)
        except av.error.FFmpegError as exc:
            log.warning("Audio packet skipped (%s).", exc)

    def commit(self) -> Path:
        """Flush the encoder, close the file and move it onto the target path."""
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            self.container.close()
        except BaseException:
            self.abort()
            raise
        os.replace(self.tmp, self.final)
        return self.final

    def abort(self) -> None:
        with suppress(Exception):
            self.container.close()
        with suppress(FileNotFoundError):
            self.tmp.unlink()


class ThreadedWriter:
    """Encodes on a background thread from a bounded queue; errors surface on put/commit."""

    def __init__(self, writer: VideoWriter, maxsize: int = 16):
        self.writer = writer
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="lostface-encode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            item = self.q.get()
            if item is _END:
                return
            if self.error is not None:
                continue
            try:
                if isinstance(item, Frame):
                    self.writer.write(item)
                else:
                    self.writer.write_audio(item)
            except BaseException as exc:
                self.error = exc

    def put(self, item: Frame | av.Packet) -> None:
        if self.error is not None:
            raise OutputError(f"Encoding failed: {self.error}") from self.error
        self.q.put(item)

    def commit(self) -> Path:
        self.q.put(_END)
        self._thread.join()
        if self.error is not None:
            self.writer.abort()
            raise OutputError(f"Encoding failed: {self.error}") from self.error
        return self.writer.commit()

    def abort(self) -> None:
        self.error = self.error or RuntimeError("aborted")
        with suppress(queue.Full):
            self.q.put_nowait(_END)
        self._thread.join(timeout=10)
        self.writer.abort()


def read_frames(path: str | Path, limit: int | None = None) -> list[np.ndarray]:
    """All (or the first `limit`) frames of a video as BGR arrays (tests, demo, benchmarks)."""
    out = []
    with VideoReader(path) as r:
        for item in r.items():
            if isinstance(item, Frame):
                out.append(item.image)
                if limit is not None and len(out) >= limit:
                    break
    return out
