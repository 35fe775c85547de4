"""Video files through PyAV: decode any container/codec FFmpeg reads, encode H.264 by default,
keep resolution, frame rate, frame count, timestamps, every audio track and the subtitles.

A video with a display rotation (phones store portrait video as landscape pixels and a
display matrix) is decoded upright, so detectors and painters see upright faces, and written
upright with no rotation left in the output: it plays as the input did, in every player.
Odd picture sizes are padded by one pixel to even sizes (4:2:0 plays everywhere) unless
video.exact_size asks for them exactly. Frames are written with the colour matrix and range
they were read with, and the output is tagged with them (lostface.stream.colour).

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
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Protocol, cast

import av
import cv2
import numpy as np

from lostface.config import VideoSettings
from lostface.errors import InputError, OutputError
from lostface.frame import Frame
from lostface.stream.audio import AudioTrack, copy_subtitles
from lostface.stream.colour import Colour, from_bgr, to_bgr

log = logging.getLogger(__name__)

_END = object()

# Output containers lostface writes (extension -> what it is), each tested with audio and
# timestamps; anything else is refused before any work starts.
OUTPUT_CONTAINERS = {
    ".mp4": "MP4",
    ".m4v": "MP4 (Apple)",
    ".mov": "QuickTime",
    ".mkv": "Matroska",
    ".webm": "WebM",
    ".ts": "MPEG-TS",
}
# Input videos by their file's suffix: a folder's videos (`batch`), and a video named where
# photos are read (`restore`, `detect`) is pointed at `lostface run`.
VIDEO_SUFFIXES = {".mp4", ".m4v", ".mov", ".mkv", ".webm", ".ts", ".avi", ".mpg", ".mpeg", ".flv"}
# Refused with a reason: what the container cannot keep.
_REFUSED = {
    ".gif": "GIF holds no audio and 256 colours: write .mp4 and convert it if you need a GIF",
    ".avi": "AVI keeps no timestamps, only a frame count, so frames would move: write .mkv or .mp4",
}
# The input's container entries its output keeps: when it was recorded (photo libraries sort
# by it) and its title. Not its place (a phone's GPS position), nor its encoder's name.
KEPT_METADATA = ("creation_time", "title")
# AVFieldOrder: TT, BB, TB, BT (which field is coded and which shown first); 1 is progressive
_INTERLACED = (2, 3, 4, 5)
# cv2.rotate code for each number of quarter turns counter-clockwise
_TURNS = {1: cv2.ROTATE_90_COUNTERCLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_CLOCKWISE}


@dataclass(frozen=True)
class VideoInfo:
    """width, height: the picture as shown (after the display rotation, if any)."""

    width: int
    height: int
    rate: Fraction
    time_base: Fraction
    frames: int  # 0 when the container does not say
    has_audio: bool
    rotation: int = 0  # degrees counter-clockwise the input's display matrix turns it (0-270)
    colour: Colour = Colour()  # the input's colour matrix and range, written back on the output
    # the input's field order (FFmpeg's AVFieldOrder; 2-5: interlaced, each frame two fields
    # woven together, as TV and camcorders record), written back so players deinterlace it
    field_order: int = 0

    @property
    def interlaced(self) -> bool:
        return self.field_order in _INTERLACED

    @property
    def top_field_first(self) -> bool:
        return self.field_order in (2, 5)  # AV_FIELD_TT, AV_FIELD_BT: the top field shown first


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


def check_output(out: str | Path, inputs: list[str | Path], example: str = ".mp4") -> Path:
    """The output's folder exists and the output is not one of the inputs; `example`: the
    extension the sentences suggest (a photo's own, for a photo)."""
    o = Path(out)
    if o.is_dir():
        raise OutputError(
            f"Output {o} is a folder; give a file name such as {o / ('out' + example)}."
        )
    if not o.parent.exists():
        raise OutputError(f"Output folder {o.parent} does not exist; create it first.")
    for i in inputs:
        ip = Path(i)
        if ip.exists() and o.exists() and os.path.samefile(ip, o) or o.resolve() == ip.resolve():
            raise OutputError(f"Output {o} is the input itself; choose another output path.")
    if not o.suffix:
        raise OutputError(
            f"Output {o} has no extension; name it e.g. {o}{example} so the format is known."
        )
    return o


def check_video_output(out: str | Path) -> Path:
    """The output's extension is a container lostface writes, else one sentence that lists
    them (before any model is loaded or frame decoded)."""
    o = Path(out)
    ext = o.suffix.lower()
    if ext not in OUTPUT_CONTAINERS:
        known = ", ".join(OUTPUT_CONTAINERS)
        hint = f" ({_REFUSED[ext]})" if ext in _REFUSED else ""
        raise OutputError(f"Output {o}: lostface writes {known} videos, not {ext or 'that'}{hint}.")
    return o


def _first_frame(path: str | Path) -> tuple[int, Colour]:
    """What the first decoded frame says: the degrees counter-clockwise (0, 90, 180 or 270)
    that the video's display matrix turns its pictures (FFmpeg puts the matrix on every
    frame), and the colour description (decoders fill it from the bitstream, which the
    container may not repeat)."""
    try:
        with av.open(str(path), mode="r") as c:
            for vf in c.decode(video=0):
                degrees = float(vf.rotation or 0)
                turns = int(round(degrees / 90.0)) % 4
                if abs(degrees - round(degrees / 90.0) * 90.0) > 1.0:
                    log.warning(
                        "%s asks to be shown turned by %.0f degrees; turned by %d instead "
                        "(quarter turns only).",
                        path,
                        degrees,
                        turns * 90,
                    )
                return turns * 90, Colour.of(vf)
    except (av.error.FFmpegError, OSError):
        pass
    return 0, Colour()


class VideoReader:
    """Opens a video file and yields Frames (BGR) and, interleaved in file order, audio packets."""

    def __init__(self, path: str | Path, threads: int = 0):
        """threads: the decoder's threads (0: as many as FFmpeg picks for this machine)."""
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
        if threads:
            self.video.codec_context.thread_count = threads
        # every audio track (a film's languages, a recording's microphone and desktop sound);
        # `audio` is the first, which live outputs carry
        self.audios = list(self.container.streams.audio)
        self.audio = self.audios[0] if self.audios else None
        self.subtitles = list(self.container.streams.subtitles)
        meta = self.container.metadata
        self.metadata = {k: str(meta[k]) for k in KEPT_METADATA if meta.get(k)}
        cc = self.video.codec_context
        if not cc.width or not cc.height:
            self.container.close()
            raise InputError(
                f"Input {self.path} has a video stream with no picture size; it looks corrupt."
            )
        rate = self.video.average_rate or self.video.guessed_rate or Fraction(30, 1)
        self.rotation, colour = _first_frame(self.path)
        self._turn = _TURNS.get(self.rotation // 90)
        width, height = (cc.width, cc.height) if self.rotation % 180 == 0 else (cc.height, cc.width)
        if self.rotation:
            log.info(
                "%s is shown turned by %d degrees (display matrix): processed and written upright.",
                self.path,
                self.rotation,
            )
        if (
            self.video.format is not None
            and self.video.format.name == "png"
            and self.video.frames <= 1
        ):
            self.container.close()
            raise InputError(
                f"Input {self.path} is a still image; use `lostface restore` for photos."
            )
        field_order = int(cc.field_order or 0)
        if field_order in _INTERLACED and self.rotation % 180:
            field_order = 1  # fields turned on their side are no fields: written progressive
        self.info = VideoInfo(
            width=width,
            height=height,
            rate=Fraction(rate),
            time_base=Fraction(self.video.time_base or Fraction(1, int(round(float(rate))) or 30)),
            frames=int(self.video.frames or 0),
            has_audio=self.audio is not None,
            rotation=self.rotation,
            colour=colour,
            field_order=field_order,
        )
        if self.info.interlaced:
            log.info(
                "%s is interlaced (%s field first): written interlaced as it came.",
                self.path,
                "top" if self.info.top_field_first else "bottom",
            )

    def seek(self, pts: int) -> None:
        """Start decoding at the keyframe at or before `pts` (the video stream's time base):
        items() then yields frames from there (indices count from 0 again)."""
        self.container.seek(int(pts), stream=self.video, backward=True, any_frame=False)

    def _image(self, vf: av.VideoFrame) -> np.ndarray:
        """The frame's pixels as BGR, upright (the display rotation applied)."""
        img = to_bgr(vf)
        return img if self._turn is None else cv2.rotate(img, self._turn)

    def sample(self, every: int) -> Iterator[tuple[int, np.ndarray]]:
        """(index, BGR image) of every `every`-th video frame, indices as items() counts
        them: a quick look over a file (the frames between are decoded, never converted).
        Stops quietly at undecodable data (the full pass says what is wrong)."""
        index = 0
        try:
            for packet in self.container.demux(self.video):
                for vf in packet.decode():
                    if index % every == 0:
                        yield index, self._image(vf)
                    index += 1
        except av.error.FFmpegError:
            return

    def items(self) -> Iterator[Frame | av.Packet]:
        """Frames and audio packets in decode order. Raises InputError on undecodable data."""
        streams = [self.video, *self.audios, *self.subtitles]
        index = 0
        last_pts: int | None = None
        try:
            for packet in self.container.demux(streams):
                if packet.stream is not self.video:
                    if packet.stream.type == "subtitle":
                        if packet.size and packet.pts is not None:
                            yield packet
                    elif packet.dts is not None:
                        yield packet
                    continue
                for vf in packet.decode():
                    assert isinstance(vf, av.VideoFrame)
                    pts = vf.pts
                    if pts is None or (last_pts is not None and pts <= last_pts):
                        pts = (last_pts + 1) if last_pts is not None else 0
                    last_pts = pts
                    yield Frame(self._image(vf), index, pts, self.info.time_base)
                    index += 1
            for vf in self.video.decode(None):  # drain (rarely needed: demux flushes)
                pts = (last_pts + 1) if last_pts is not None else 0
                last_pts = pts
                yield Frame(self._image(vf), index, pts, self.info.time_base)
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
    """Decodes on a background thread into a bounded queue (the frame loop never decodes).
    items: what to decode (default reader.items(); e.g. lambda: reader.sample(12))."""

    def __init__(
        self, reader: VideoReader, maxsize: int = 16, items: Callable[[], Iterable] | None = None
    ):
        self.reader = reader
        self._items = items or reader.items
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lostface-decode", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for item in self._items():
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

    def __iter__(self) -> Iterator[Any]:
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


class _CopyRefused(Exception):
    """The container refused the input's audio as it is, once its header was written."""


class VideoWriter:
    """Encodes Frames (H.264 by default) and the input's audio tracks (each copied, or
    re-encoded where the container cannot hold it), into a temporary file that `commit()`
    renames onto the target; `abort()` (or an exception in `with`) deletes it.

    metadata: container entries written into the header (lostface.provenance's tag);
    finalize: called with the closed temporary file before it is renamed (provenance: drop the
    tag, sign C2PA credentials), so the target never exists half-finished."""

    def __init__(
        self,
        path: str | Path,
        info: VideoInfo,
        settings: VideoSettings,
        audio_template: av.audio.stream.AudioStream
        | Sequence[av.audio.stream.AudioStream]
        | None = None,
        metadata: dict[str, str] | None = None,
        subtitles: Sequence[av.subtitles.stream.SubtitleStream] = (),
    ):
        """audio_template: the input's audio stream, or its streams (VideoReader.audios), whose
        packets write_audio then takes; subtitles: the input's subtitle streams
        (VideoReader.subtitles), copied where the container holds their format."""
        self.final = check_video_output(path)
        self.metadata = dict(metadata or {})
        self.finalize: Callable[[Path], None] | None = None
        self.tmp = _temp_path(self.final)
        self.settings = settings
        self.info = info
        self.codec = pick_codec(settings.codec, self.final)
        width, height = info.width, info.height
        self.pix_fmt = settings.pix_fmt
        self._pad = (0, 0)
        if self.pix_fmt == "yuv420p" and (width % 2 or height % 2):
            if settings.exact_size:
                self.pix_fmt = "yuv444p"  # 4:2:0 needs even sizes: keep the odd size exactly
                log.warning(
                    "Odd picture size %dx%d kept exactly (video.exact_size): encoded 4:4:4, "
                    "which browsers, phones and QuickTime do not play.",
                    width,
                    height,
                )
            else:
                self._pad = (width % 2, height % 2)
                log.info(
                    "Odd picture size %dx%d: padded to %dx%d so that every player plays it "
                    "(--set video.exact_size=true keeps it exactly).",
                    width,
                    height,
                    width + self._pad[0],
                    height + self._pad[1],
                )
        self.time_base = info.time_base
        if audio_template is None or not settings.audio:
            templates: list[av.audio.stream.AudioStream] = []
        elif isinstance(audio_template, av.audio.stream.AudioStream):
            templates = [audio_template]
        else:
            templates = list(audio_template)
        self.tracks: dict[int, AudioTrack] = {}  # the input stream's index -> its track
        self._subtitle_templates = list(subtitles)
        self.subtitles: dict[int, av.subtitles.stream.SubtitleStream] = {}
        try:
            self._open(templates, copy_audio=True)
        except _CopyRefused:
            # FFmpeg's codec query said yes, the muxer's header said no (Opus in .mov)
            self._open(templates, copy_audio=False)
        self._last_pts: int | None = None
        self.frames_written = 0
        self.audio_skipped = 0

    def _open(self, audio_templates: list[av.audio.stream.AudioStream], copy_audio: bool) -> None:
        """Open the temporary file with its streams and write the header, so that a stream
        the container refuses fails here, before any frame is encoded."""
        try:
            self.container = av.open(str(self.tmp), mode="w")
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"Cannot write {self.final} ({exc}); "
                "use a known video extension such as .mp4 or .mkv."
            ) from None
        try:
            self.stream = cast(
                "av.video.stream.VideoStream",
                self.container.add_stream(self.codec, rate=self.info.rate),
            )
        except (av.error.FFmpegError, ValueError) as exc:
            self.abort()
            raise OutputError(
                f"Video codec {self.settings.codec!r} is not available ({exc}); set video.codec."
            ) from None
        self.stream.width = self.info.width + self._pad[0]
        self.stream.height = self.info.height + self._pad[1]
        self.stream.pix_fmt = self.pix_fmt
        self.stream.time_base = self.time_base
        self.stream.codec_context.time_base = self.time_base
        if self.codec in ("libx264", "libx265"):
            self.stream.codec_context.options = {
                "preset": self.settings.preset,
                "crf": str(self.settings.crf),
            }
        if self.info.interlaced:
            # the fields are coded as fields, and the container says which is shown first
            self.stream.codec_context.field_order = self.info.field_order
            if self.codec == "libx264":
                first = "tff" if self.info.top_field_first else "bff"
                self.stream.codec_context.options = {
                    **self.stream.codec_context.options,
                    "x264-params": f"interlaced=1:{first}=1",
                }
        if self.info.colour.tagged and not self.pix_fmt.startswith(("rgb", "bgr", "gbr")):
            self.info.colour.tag(self.stream.codec_context)  # what players read the pixels with
        if self.settings.threads:
            self.stream.codec_context.thread_count = self.settings.threads
        self.stream.thread_type = "AUTO"
        for key, value in self.metadata.items():
            self.container.metadata[key] = value
        self.tracks = {}
        try:
            for template in audio_templates:
                self.tracks[template.index] = AudioTrack(self.container, template, copy=copy_audio)
            self.subtitles = copy_subtitles(self.container, self._subtitle_templates)
            self.container.start_encoding()
        except (av.error.FFmpegError, ValueError) as exc:
            self.abort()
            if any(t.copied for t in self.tracks.values()):
                raise _CopyRefused() from None
            raise OutputError(f"Cannot write {self.final} ({exc}).") from None
        except BaseException:
            self.abort()
            raise

    @property
    def audio(self) -> AudioTrack | None:
        """The first audio track (None without audio)."""
        return next(iter(self.tracks.values()), None)

    @property
    def audio_out(self) -> av.audio.stream.AudioStream | None:
        return self.audio.stream if self.audio is not None else None

    def _pts(self, frame: Frame) -> int:
        """The frame's timestamp in the output's time base, strictly increasing."""
        if frame.pts is None:
            pts = self.frames_written if self._last_pts is None else self._last_pts + 1
        else:
            t = frame.pts * (frame.time_base or self.time_base) / self.time_base
            pts = int(t) if t.denominator == 1 else int(round(t))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1
        self._last_pts = pts
        return pts

    def write(self, frame: Frame) -> None:
        img = frame.image
        if self._pad != (0, 0):
            img = cv2.copyMakeBorder(img, 0, self._pad[1], 0, self._pad[0], cv2.BORDER_REPLICATE)
        vf = from_bgr(img, self.pix_fmt, self.info.colour)
        vf.pts = self._pts(frame)
        vf.time_base = self.time_base
        for packet in self.stream.encode(vf):
            self.container.mux(packet)
        self.frames_written += 1

    def write_audio(self, packet: av.Packet) -> None:
        """One input audio (or subtitle) packet; a damaged audio packet (undecodable, out of
        order) is skipped with a warning, as a player would, and the rest of the sound kept."""
        subtitle = self.subtitles.get(packet.stream.index)
        if subtitle is not None:
            packet.stream = subtitle
            self.container.mux(packet)
            return
        track = self.tracks.get(packet.stream.index)
        if track is None:
            return
        try:
            for out in track.put(packet):
                self.container.mux(out)
        except av.error.FFmpegError as exc:
            self.audio_skipped += 1
            if self.audio_skipped == 1:
                log.warning("Audio packet skipped (%s); later ones are counted.", exc)

    def commit(self) -> Path:
        """Flush the encoders, close the file and move it onto the target path."""
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
            for track in self.tracks.values():
                for packet in track.flush():
                    self.container.mux(packet)
            self.container.close()
            if self.audio_skipped > 1:
                log.warning("%d damaged audio packets were skipped.", self.audio_skipped)
            if self.finalize is not None:
                self.finalize(self.tmp)
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


class Finishing(Protocol):
    """A frame with work left before it is written (lostface.pipeline.Output)."""

    def finish(self) -> Frame: ...


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
                elif isinstance(item, av.Packet):
                    self.writer.write_audio(item)
                else:  # a frame still to be composited (lostface.pipeline.Output)
                    self.writer.write(item.finish())
            except BaseException as exc:
                self.error = exc

    def put(self, item: Frame | av.Packet | Finishing) -> None:
        """A frame, an audio packet, or an object whose finish() returns the frame to write
        (run on this thread, in order: the pipeline's compositing, Pipeline(composite_later))."""
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
