"""MPEG-TS over udp:// (and srt:// where PyAV's FFmpeg has libsrt): a stream OBS's Media
Source plays. x264 with low-latency settings: no B-frames, zerolatency tuning, a keyframe
every second so a player that joins late starts within a second."""

from __future__ import annotations

import logging
from fractions import Fraction
from urllib.parse import urlsplit

import av

from lostface.errors import OutputError
from lostface.frame import Frame

log = logging.getLogger(__name__)

SCHEMES = ("udp", "srt")


def check_url(url: str) -> str:
    """udp://HOST:PORT or srt://HOST:PORT, with a packet size suited to MPEG-TS over UDP."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.hostname or not parts.port:
        raise OutputError(
            f"Stream address {url!r} is not udp://HOST:PORT or srt://HOST:PORT; "
            "e.g. --stream udp://127.0.0.1:5000 and udp://@127.0.0.1:5000 in OBS's Media Source."
        )
    if parts.scheme == "udp" and "pkt_size" not in parts.query:
        url += ("&" if parts.query else "?") + "pkt_size=1316"  # 7 TS packets per datagram
    return url


class MpegTsSink:
    """Encodes BGR frames with libx264 (ultrafast, zerolatency) into MPEG-TS at `url`."""

    def __init__(
        self, url: str, width: int, height: int, fps: float, bitrate: int = 2_000_000
    ) -> None:
        self.url = check_url(url)
        self.size = (int(width) // 2 * 2, int(height) // 2 * 2)
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self.container = av.open(self.url, mode="w", format="mpegts")
        except (av.error.FFmpegError, OSError) as exc:
            hint = (
                "this FFmpeg build has no SRT support; use udp:// instead"
                if url.startswith("srt:")
                else "check the address and port"
            )
            raise OutputError(f"Cannot open the stream {url} ({exc}); {hint}.") from None
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
        self.stream.codec_context.time_base = Fraction(1, 90000)
        self._t0: int | None = None
        self._last = -1
        self.frames = 0

    def send(self, frame: Frame) -> None:
        img = frame.image
        if (img.shape[1], img.shape[0]) != self.size:
            img = img[: self.size[1], : self.size[0]]
        vf = av.VideoFrame.from_ndarray(img, format="bgr24")
        t = frame.time
        pts = int(round(t * 90000)) if t is not None else self.frames * 3000
        if self._t0 is None:
            self._t0 = pts
        pts = max(pts - self._t0, self._last + 1)
        self._last = pts
        vf.pts, vf.time_base = pts, Fraction(1, 90000)
        try:
            for packet in self.stream.encode(vf):
                self.container.mux(packet)
        except av.error.FFmpegError as exc:
            raise OutputError(f"Streaming to {self.url} failed ({exc}).") from None
        self.frames += 1

    def close(self) -> None:
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        except av.error.FFmpegError:
            pass
        self.container.close()
