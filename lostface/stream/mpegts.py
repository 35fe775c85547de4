"""MPEG-TS over udp://: a stream OBS's Media Source plays. x264 with low-latency settings: no
B-frames, zerolatency tuning, a keyframe every second so a player that joins late starts
within a second. A file source's audio goes along (copied when MPEG-TS holds its codec, else
AAC), on the same clock as the pictures.

SRT is not offered: the FFmpeg inside PyAV's wheels is built without libsrt ("Protocol not
found"), and no SRT-capable build of it is on PyPI."""

from __future__ import annotations

import logging
import threading
from fractions import Fraction
from typing import Any
from urllib.parse import urlsplit

import av

from lostface.errors import OutputError
from lostface.frame import Frame
from lostface.stream.audio import AudioTrack

log = logging.getLogger(__name__)

SCHEMES = ("udp",)
_CLOCK = 90000  # MPEG-TS timestamps: 90 kHz


def check_url(url: str) -> str:
    """udp://HOST:PORT, with a packet size suited to MPEG-TS over UDP."""
    parts = urlsplit(url)
    if parts.scheme == "srt":
        raise OutputError(
            f"Stream address {url!r}: srt:// is not supported (the FFmpeg inside PyAV has no "
            "SRT); use udp://HOST:PORT, e.g. --stream udp://127.0.0.1:5000 and "
            "udp://@127.0.0.1:5000 in OBS's Media Source."
        )
    if parts.scheme not in SCHEMES or not parts.hostname or not parts.port:
        raise OutputError(
            f"Stream address {url!r} is not udp://HOST:PORT; "
            "e.g. --stream udp://127.0.0.1:5000 and udp://@127.0.0.1:5000 in OBS's Media Source."
        )
    if "pkt_size" not in parts.query:
        url += ("&" if parts.query else "?") + "pkt_size=1316"  # 7 TS packets per datagram
    return url


class MpegTsSink:
    """Encodes BGR frames with libx264 (ultrafast, zerolatency) into MPEG-TS at `url`.

    audio: an input audio stream (a FileSource's `audio`) whose packets arrive through
    send_audio, from any thread; pictures and sound share one clock, which starts at the
    first of either to arrive."""

    def __init__(
        self,
        url: str,
        width: int,
        height: int,
        fps: float,
        bitrate: int = 2_000_000,
        audio: av.audio.stream.AudioStream | None = None,
    ) -> None:
        self.url = check_url(url)
        self.size = (int(width) // 2 * 2, int(height) // 2 * 2)
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self.container = av.open(self.url, mode="w", format="mpegts")
        except (av.error.FFmpegError, OSError) as exc:
            raise OutputError(
                f"Cannot open the stream {url} ({exc}); check the address and port."
            ) from None
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = self.size
        self.stream.pix_fmt = "yuv420p"
        self.stream.bit_rate = int(bitrate)
        gop = max(1, int(round(fps)))
        self.stream.codec_context.options = {
            "preset": "ultrafast",
            "tune": "zerolatency",
            "bf": "0",
            "g": str(gop),
            "keyint_min": str(gop),
            "sc_threshold": "0",
            "repeat-headers": "1",
        }
        self.stream.codec_context.time_base = Fraction(1, _CLOCK)
        self.audio = AudioTrack(self.container, audio) if audio is not None else None
        self._lock = threading.Lock()  # pictures and sound are muxed from different threads
        self._t0: int | None = None  # the shared clock's origin, 90 kHz ticks
        self._last = -1
        self.frames = 0
        self.audio_packets = 0

    def _origin(self, ticks: int) -> int:
        if self._t0 is None:
            self._t0 = ticks
        return self._t0

    def send(self, frame: Frame) -> None:
        img = frame.image
        if (img.shape[1], img.shape[0]) != self.size:
            img = img[: self.size[1], : self.size[0]]
        vf = av.VideoFrame.from_ndarray(img, format="bgr24")
        if frame.pts is not None and frame.time_base is not None:
            ticks = int(round(frame.pts * frame.time_base * _CLOCK))
        else:
            ticks = self.frames * 3000
        with self._lock:
            pts = max(ticks - self._origin(ticks), self._last + 1)
            self._last = pts
            vf.pts, vf.time_base = pts, Fraction(1, _CLOCK)
            try:
                for packet in self.stream.encode(vf):
                    self.container.mux(packet)
            except av.error.FFmpegError as exc:
                raise OutputError(f"Streaming to {self.url} failed ({exc}).") from None
            self.frames += 1

    def send_audio(self, packet: Any) -> None:
        """One packet of the `audio` stream given at construction (packets before the
        clock's origin are dropped)."""
        if self.audio is None or packet.pts is None or not packet.time_base:
            return
        tb = packet.time_base
        with self._lock:
            origin = self._origin(int(round(packet.pts * tb * _CLOCK)))
            shift = int(round(Fraction(origin, _CLOCK) / tb))
            if min(packet.pts, packet.pts if packet.dts is None else packet.dts) < shift:
                return
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            try:
                for out in self.audio.put(packet):
                    self.container.mux(out)
                    self.audio_packets += 1
            except av.error.FFmpegError as exc:
                raise OutputError(f"Streaming audio to {self.url} failed ({exc}).") from None

    def close(self) -> None:
        with self._lock:
            try:
                for packet in self.stream.encode(None):
                    self.container.mux(packet)
                if self.audio is not None:
                    for packet in self.audio.flush():
                        self.container.mux(packet)
            except av.error.FFmpegError:
                pass
            self.container.close()
