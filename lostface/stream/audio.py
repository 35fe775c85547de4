"""The input's audio in an output container: its packets copied where the container holds the
codec, else decoded and re-encoded (Opus for WebM, AAC elsewhere), timestamps kept; each
track keeps its language and title. Subtitle tracks are copied where the container holds their
format (`copy_subtitles`).

Used by the file writer (lostface.stream.video) and the MPEG-TS stream (lostface.stream.mpegts);
the caller muxes what `put` and `flush` return, under whatever lock guards its container.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import cast

import av

from lostface.errors import OutputError

log = logging.getLogger(__name__)

# Muxers that do not answer FFmpeg's codec query (avformat_query_codec) say here what they hold.
_KNOWN = {"mpegts": {"aac", "mp3", "mp2", "ac3", "eac3", "opus"}}
# What a track is called by (a film's languages, a recording's microphone and desktop sound).
_LABELS = ("language", "title")
# Sample rates libopus encodes; others are resampled to 48 kHz.
_OPUS_RATES = (48000, 24000, 16000, 12000, 8000)


def copy_labels(source: av.stream.Stream, stream: av.stream.Stream) -> None:
    """A track's language and title, which players list the tracks by, onto its copy."""
    for key in _LABELS:
        value = source.metadata.get(key)
        if value:
            stream.metadata[key] = value


def holds(container: av.container.OutputContainer, codec: str) -> bool:
    """Whether `container`'s muxer can store audio of `codec` as it is."""
    known = _KNOWN.get(container.format.name)
    if known is not None:
        return codec in known
    return codec in container.supported_codecs


def encoder_for(container: av.container.OutputContainer) -> str:
    """The audio encoder used when the input's codec cannot be copied into `container`."""
    return "libopus" if container.format.name == "webm" else "aac"


class AudioTrack:
    """One audio stream of an output container, fed with the input's packets.

    template: the input's audio stream (its container stays open while packets arrive: a
    re-encoded track decodes with the template's own decoder); copy: False re-encodes even
    where the container claims to hold the codec (its header then refused it).
    """

    def __init__(
        self,
        container: av.container.OutputContainer,
        template: av.audio.stream.AudioStream,
        copy: bool = True,
    ) -> None:
        self.template = template
        # the codec's own name (mp3), not its decoder's (mp3float)
        name = template.codec_context.codec.canonical_name
        self.copied = copy and holds(container, name)
        self.resampler: av.AudioResampler | None = None
        self.stream: av.audio.stream.AudioStream
        if self.copied:
            try:
                self.stream = container.add_stream_from_template(template)
                copy_labels(template, self.stream)
                return
            except (av.error.FFmpegError, ValueError):
                self.copied = False
        encoder = encoder_for(container)
        tcc = template.codec_context
        rate = int(tcc.sample_rate or 48000)
        if encoder == "libopus" and rate not in _OPUS_RATES:
            rate = 48000
        layout = tcc.layout.name if tcc.layout is not None else "stereo"
        if encoder == "libopus" and len(tcc.layout.channels) > 2:
            layout = "stereo"  # Opus in WebM: more channels need a mapping FFmpeg does not set
        try:
            self.stream = cast(
                "av.audio.stream.AudioStream",
                container.add_stream(encoder, rate=rate, layout=layout),
            )
        except (av.error.FFmpegError, ValueError) as exc:
            raise OutputError(
                f"The input's {name} audio cannot go into a {container.format.name} file and "
                f"the {encoder} encoder is missing ({exc}); write .mkv, or pass --no-audio."
            ) from None
        copy_labels(template, self.stream)
        log.info(
            "Audio: %s cannot go into a %s file as it is; re-encoded as %s.",
            name,
            container.format.name,
            self.stream.codec_context.name,
        )

    @property
    def codec(self) -> str:
        return str(self.stream.codec_context.name)

    def put(self, packet: av.Packet) -> list[av.Packet]:
        """The packets to mux for one input packet (none while an encoder fills a frame)."""
        if self.copied:
            packet.stream = self.stream
            return [packet]
        out: list[av.Packet] = []
        for frame in self.template.codec_context.decode(packet):
            out.extend(self._encode(frame))
        return out

    def _encode(self, frame: av.AudioFrame | None) -> list[av.Packet]:
        cc = self.stream.codec_context
        frames: list[av.AudioFrame | None]
        if frame is None:
            frames = [None]
        else:
            if self.resampler is None:
                self.resampler = av.AudioResampler(
                    format=cc.format, layout=cc.layout, rate=cc.sample_rate
                )
            frames = list(self.resampler.resample(frame))
        out: list[av.Packet] = []
        for f in frames:
            if f is not None and f.pts is not None:
                f.time_base = f.time_base or Fraction(1, cc.sample_rate)
            out.extend(self.stream.encode(f))
        return out

    def flush(self) -> list[av.Packet]:
        """What the decoder and encoder still hold at the end."""
        if self.copied:
            return []
        out: list[av.Packet] = []
        try:
            for frame in self.template.codec_context.decode(None):
                out.extend(self._encode(frame))
        except av.error.FFmpegError:
            pass  # a decoder that held nothing back
        if self.resampler is not None:
            for f in self.resampler.resample(None):
                out.extend(self.stream.encode(f))
        out.extend(self._encode(None))
        return out


def copy_subtitles(
    container: av.container.OutputContainer, templates: list
) -> dict[int, av.subtitles.stream.SubtitleStream]:
    """Output streams for the input's subtitle streams whose format `container` holds (by
    the input stream's index), with their language and title; the others are left out with a
    log line (subtitles are copied, never converted)."""
    out = {}
    for template in templates:
        name = template.codec_context.codec.canonical_name
        if not holds(container, name):
            log.info(
                "Subtitles (%s) left out: %s files cannot hold them as they are (.mkv can).",
                name,
                container.format.name,
            )
            continue
        try:
            stream = container.add_stream_from_template(template)
        except (av.error.FFmpegError, ValueError) as exc:
            log.info("Subtitles: %s left out (%s).", name, exc)
            continue
        copy_labels(template, stream)
        out[template.index] = stream
    return out
