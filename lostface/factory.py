"""Assembles a pipeline's stages from the configuration: engines come from lostface.registry,
reference photos are read and aligned once here, and nothing inside a stage builds another."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lostface.config import Settings
from lostface.pipeline import Pipeline, Stages
from lostface.provenance import build_frame_marker
from lostface.registry import (
    build_detector,
    build_painter,
    build_segmenter,
    self_reference_on,
)
from lostface.restore.follow import MeshFollow
from lostface.stages import Detector, Restorer, Tracker

if TYPE_CHECKING:
    from lostface.restore.reference import ReferenceBank

__all__ = ["build_detector", "build_pipeline", "build_stages", "load_references"]

log = logging.getLogger(__name__)


def load_references(
    settings: Settings,
    detector: Detector,
    references: list[str | Path] | None = None,
    reference_images: list[tuple[str, np.ndarray]] | None = None,
):
    """The reference photos of restore.references, `references` (files or folders) and
    `reference_images` (name, BGR array), found and aligned by `detector`; None when none.
    With restore.check_references, the mask.engine segmenter judges each one: a covered face
    is refused (skipped with a warning when it comes from a folder)."""
    from lostface.restore.reference import ReferenceBank

    detector = detector.large_faces()  # a reference's face is large: no small-face search
    paths: list[str | Path] = []
    seen: set[Path] = set()
    for p in [*settings.restore.references, *(references or [])]:
        key = Path(p).expanduser().absolute()
        if key not in seen:  # a path given twice (a saved config and the flag) counts once
            seen.add(key)
            paths.append(p)
    if settings.restore.identity:
        from lostface.identities import get_identity

        # a trained identity's faces are photos of the person: references too (the diffusion
        # engine starts a face's first keyframe from the reference restorer's painting)
        paths.append(get_identity(settings, settings.restore.identity).folder / "faces")
    segmenter = build_segmenter(settings) if settings.restore.check_references else None
    bank = ReferenceBank.from_paths(paths, detector, segmenter) if paths else None
    if reference_images:
        extra = ReferenceBank.from_images(reference_images, detector, segmenter)
        bank = extra if bank is None else bank.merged(extra)
    return bank


def warn_without_references(settings: Settings, references, footage: bool = False) -> None:
    """Say how to get the person's own face when the reference engine has no photo."""
    if settings.restore.engine != "reference" or references:
        return
    if footage and self_reference_on(settings):
        log.info(
            "No reference photo given: each person's face is learned from the moments the "
            "footage shows it unmasked (--self-reference); others get a neutral fill. For a "
            "face never shown, add --reference PHOTO of the person without a mask."
        )
        return
    log.warning(
        "No reference photo given: masked faces get a neutral fill. For the person's own "
        "face, add --reference PHOTO (or a folder of photos) of them without a mask."
    )


def build_stages(
    settings: Settings,
    references: list[str | Path] | None = None,
    reference_images: list[tuple[str, np.ndarray]] | None = None,
    detector: Detector | None = None,
    *,
    restorer: Restorer | None = None,
    background_tracker: bool = False,
    bank: ReferenceBank | None = None,
    footage: bool = True,
    captures: bool = False,
) -> Stages:
    """All stages for one pipeline. References come from paths (files or folders) and/or
    already decoded images (name, BGR array), or already aligned (`bank`); `restorer`
    replaces the configured one.

    background_tracker: build the Kalman tracker on a thread (lostface.tracking.deferred), so
    a video run decodes and detects its first frames while scipy and filterpy load.
    footage: the pipeline runs on a video or a live source (False: one photo), where the
    painter learns people from their open faces (restore.self_reference). captures: a face
    captured live will be adopted (registry.build_painter)."""
    from lostface.restore.compositor import PatchCompositor
    from lostface.tracking.keyframe import ThresholdKeyframePolicy
    from lostface.tracking.scenecut import HistogramSceneCut

    tracker: Tracker
    if background_tracker:
        from lostface.tracking.deferred import DeferredTracker

        tracker = DeferredTracker(settings.tracking)  # loads while the rest is built
    else:
        from lostface.tracking.tracker import KalmanTracker

        tracker = KalmanTracker(settings.tracking)
    detector = detector or build_detector(settings)
    if restorer is None and bank is None:
        bank = load_references(settings, detector, references, reference_images)
        warn_without_references(settings, bank, footage)
    return Stages(
        detector=detector,
        tracker=tracker,
        scene_cut=HistogramSceneCut(settings.tracking.scene_cut_threshold),
        policy=ThresholdKeyframePolicy(settings.keyframe),
        painter=build_painter(settings, bank, restorer, footage=footage, captures=captures),
        compositor=PatchCompositor(settings, build_follow(settings)),
        marker=build_frame_marker(settings),
    )


def build_follow(settings: Settings) -> MeshFollow | None:
    """What bends patches onto the face's mesh between keyframes (keyframe.follow_mesh), or
    None: off, or no face mesh model (load_face_mesh logs that once)."""
    if not settings.keyframe.follow_mesh:
        return None
    from lostface.restore.mesh import load_face_mesh

    mesh = load_face_mesh(settings.models.face_mesh)
    return MeshFollow(mesh) if mesh is not None else None


def build_pipeline(
    settings: Settings, references: list[str | Path] | None = None, **kwargs
) -> Pipeline:
    stages = build_stages(settings, references, kwargs.pop("reference_images", None))
    return Pipeline(settings, stages, **kwargs)
