"""Marking what is painted: an invisible watermark in every frame a face was painted on, a
metadata tag and optional C2PA content credentials on output files, and `lostface verify` to
read them back.

    frame_marker = build_frame_marker(settings)   # marks every frame a face was painted on
    marker = build_marker(settings)            # provenance.engine="faces": each painted patch
    prov = OutputProvenance.from_settings(settings, run_id)   # before any work: certs checked
    writer_metadata = prov.video_tags()        # written into the container's header
    prov.finish_video(tmp_path, painted, title)   # untag (nothing painted) and/or sign

Settings: `provenance.*` (lostface.config.ProvenanceSettings).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lostface.config import Settings
from lostface.errors import ModelError

log = logging.getLogger(__name__)

_WARNED: set[str] = set()


def _say_once(text: str, level: int = logging.WARNING) -> None:
    """Log a line once per process (a batch of outputs says it once)."""
    if text not in _WARNED:
        _WARNED.add(text)
        log.log(level, text)


def settle_run_id(settings: Settings) -> int:
    """The run's id; a run without provenance.run_id gets a random one, written back into the
    settings so that the configuration saved beside the output reproduces the run exactly."""
    from lostface.provenance.watermark import new_run_id

    if not settings.provenance.run_id:
        settings.provenance.run_id = f"{new_run_id():03x}"
    return int(settings.provenance.run_id, 16)


def build_frame_marker(settings: Settings):
    """The frame marker (lostface.provenance.framemark.FrameMarker) of provenance.watermark
    with the "frame" engine, or None."""
    if not settings.provenance.watermark or settings.provenance.engine != "frame":
        return None
    from lostface.provenance.framemark import FrameMarker

    return FrameMarker(settle_run_id(settings), settings.provenance.amplitude)


def build_marker(settings: Settings):
    """The patch marker of provenance.watermark with the "faces" engine (a PatchMarker), or
    None when it is off, another engine, or its weights are not installed (one warning that
    says how to add them)."""
    if not settings.provenance.watermark or settings.provenance.engine != "faces":
        return None
    from lostface.provenance.watermark import PatchMarker

    try:
        model = shared_rivagan()
    except ModelError as exc:
        _say_once(f"No invisible watermark in painted faces: {exc}")
        return None
    return PatchMarker(model, settle_run_id(settings), strength=settings.provenance.strength)


_RIVAGAN = None


def shared_rivagan():
    """RivaGAN's sessions, loaded once per process (a few MB; every painter shares them)."""
    global _RIVAGAN
    if _RIVAGAN is None:
        from lostface.provenance.watermark import RivaGan

        _RIVAGAN = RivaGan(threads=1)
    return _RIVAGAN


@dataclass
class OutputProvenance:
    """What a run writes into its output files: the metadata tag and the C2PA manifest.

    Built before any work, so a bad certificate or an output format C2PA cannot sign is one
    sentence before anything is decoded."""

    settings: Settings
    identity: object | None = None  # credentials.SigningIdentity when provenance.c2pa

    @classmethod
    def from_settings(cls, settings: Settings, output: Path | None = None) -> OutputProvenance:
        from lostface.provenance import credentials

        p = settings.provenance
        identity = None
        if p.c2pa:
            if output is not None:
                credentials.check_format(output)
            identity = credentials.load_identity(p.cert, p.key)
            credentials.probe(identity)
        else:
            _say_once(credentials.HOW_TO_SIGN, logging.INFO)
        return cls(settings, identity)

    @property
    def run_id(self) -> int | None:
        rid = self.settings.provenance.run_id
        return int(rid, 16) if rid and self.settings.provenance.watermark else None

    def tag(self) -> str:
        from lostface.provenance.metadata import tag_text

        return tag_text(self.run_id)

    def video_tags(self) -> dict[str, str]:
        """Container metadata entries for a video output (empty when provenance.metadata is
        off)."""
        from lostface.provenance.metadata import TAG_KEYS

        if not self.settings.provenance.metadata:
            return {}
        return {k: self.tag() for k in TAG_KEYS}

    def finish_video(self, tmp: Path, painted: bool, title: str) -> None:
        """The written temporary video, before it is renamed onto its target: without the tag
        when nothing was painted, signed when provenance.c2pa."""
        from lostface.provenance import credentials, metadata

        if not painted and self.video_tags():
            plain = tmp.with_name(tmp.name + ".untagged" + tmp.suffix)
            try:
                metadata.remux_without_tag(tmp, plain)
                os.replace(plain, tmp)
            finally:
                plain.unlink(missing_ok=True)
        if self.identity is not None and painted:
            credentials.sign_in_place(tmp, self.identity, title, self.run_id)  # type: ignore[arg-type]

    def signer(self, out: Path) -> Callable[[Path], None]:
        """finish_video for a painted output named `out`, as a writer's finalize."""
        return lambda tmp: self.finish_video(tmp, True, out.name)

    def image_bytes(self, data: bytes, ext: str, painted: bool) -> bytes:
        """An encoded photo with the tag (when painted and provenance.metadata)."""
        from lostface.provenance.metadata import tag_image_bytes

        if not painted or not self.settings.provenance.metadata:
            return data
        tagged = tag_image_bytes(data, ext, self.tag())
        if tagged is None:
            _say_once(
                f"{ext} photos carry no lostface tag (PNG and JPEG do); the watermark and C2PA "
                "credentials still mark them."
            )
            return data
        return tagged

    def finish_image(self, tmp: Path, painted: bool, title: str) -> None:
        """Sign a written temporary photo when provenance.c2pa (and a face was painted)."""
        from lostface.provenance import credentials

        if self.identity is not None and painted:
            credentials.sign_in_place(tmp, self.identity, title, self.run_id)  # type: ignore[arg-type]
