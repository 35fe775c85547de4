"""Builds the pipeline's stages from the configuration: backends are picked by name here,
models are loaded once here, and nothing inside a stage builds another stage."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from lostface.config import Settings
from lostface.errors import ConfigError
from lostface.pipeline import Pipeline, Stages
from lostface.stages import Detector, Tracker

log = logging.getLogger(__name__)


def build_detector(settings: Settings) -> Detector:
    from lostface.tracking.detectors import make_detector

    return make_detector(settings.detect)


def build_stages(
    settings: Settings,
    references: list[str | Path] | None = None,
    reference_images: list[tuple[str, np.ndarray]] | None = None,
    detector: Detector | None = None,
    *,
    background_tracker: bool = False,
) -> Stages:
    """All stages for one pipeline. References come from paths (files or folders) and/or
    already decoded images (name, BGR array).

    background_tracker: build the Kalman tracker on a thread (lostface.tracking.deferred), so
    a video run decodes and detects its first frames while scipy and filterpy load."""
    from lostface.restore.compositor import PatchCompositor, skin_mean
    from lostface.restore.fill import NeutralFill
    from lostface.restore.reference import ReferenceBank, ReferenceRestorer
    from lostface.restore.segment import GeometrySegmenter
    from lostface.tracking.keyframe import ThresholdKeyframePolicy
    from lostface.tracking.scenecut import HistogramSceneCut

    if settings.mask.backend != "geometry":
        raise ConfigError(
            f"mask.backend {settings.mask.backend!r} is not available in this version; "
            "use geometry."
        )
    if settings.restore.backend != "reference":
        raise ConfigError(
            f"restore.backend {settings.restore.backend!r} is not available in this version; "
            "use reference."
        )
    tracker: Tracker
    if background_tracker:
        from lostface.tracking.deferred import DeferredTracker

        tracker = DeferredTracker(settings.tracking)  # loads while the rest is built
    else:
        from lostface.tracking.tracker import KalmanTracker

        tracker = KalmanTracker(settings.tracking)
    detector = detector or build_detector(settings)
    paths = [*settings.restore.references, *(references or [])]
    restorer: object
    bank = None
    if paths or reference_images:
        bank = ReferenceBank.from_paths(paths, detector) if paths else None
        if reference_images:
            extra = ReferenceBank.from_images(reference_images, detector)
            bank = extra if bank is None else bank.merged(extra)
        assert bank is not None
        restorer = ReferenceRestorer(bank, settings.restore)
    else:
        log.warning(
            "No reference photo given: masked faces get a neutral fill. For the person's own "
            "face, add --reference PHOTO (or a folder of photos) of them without a mask."
        )
        restorer = NeutralFill()
    return Stages(
        detector=detector,
        tracker=tracker,
        scene_cut=HistogramSceneCut(settings.tracking.scene_cut_threshold),
        policy=ThresholdKeyframePolicy(settings.keyframe),
        segmenter=GeometrySegmenter(settings.mask),
        restorer=restorer,  # type: ignore[arg-type]
        compositor=PatchCompositor(settings),
        skin_mean=skin_mean,
    )


def build_pipeline(
    settings: Settings, references: list[str | Path] | None = None, **kwargs
) -> Pipeline:
    stages = build_stages(settings, references, kwargs.pop("reference_images", None))
    return Pipeline(settings, stages, **kwargs)
