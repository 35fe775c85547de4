"""One photo, restored synchronously: detect, align, segment, restore, composite."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lostface.config import Settings
from lostface.frame import FaceTrack, Frame, Patch
from lostface.pipeline import FaceView, Output, Stages, draw_overlay
from lostface.restore import align


@dataclass
class ImageResult:
    image: np.ndarray
    faces: int
    masked: int
    patches: list[Patch]


def restore_image(image: np.ndarray, stages: Stages, settings: Settings) -> ImageResult:
    """Restore every masked face of one BGR image; unmasked faces stay pixel for pixel."""
    out = image.copy()
    reset = getattr(stages.compositor, "reset", None)
    if reset is not None:
        reset()  # a photo has no previous frame: nothing to crossfade from
    dets = stages.detector.detect(image)
    patches: list[Patch] = []
    views: list[FaceView] = []
    masked = 0
    for i in range(len(dets)):
        lm = dets.landmarks[i]
        try:
            m = align.to_canonical(lm)
        except ValueError:
            continue
        crop = align.warp_to_canonical(image, m)
        lm_canon = align.apply(m, lm[:5]).astype(np.float32)
        cover = stages.segmenter.segment(crop, lm_canon)
        views.append(FaceView(i, dets.boxes[i], lm, keyframe=True, masked=cover.covered))
        if not cover.covered:
            continue
        masked += 1
        painted, ref = stages.restorer.restore(
            crop, cover, align.apply(m, lm[:5]).astype(np.float32)
        )
        patch = Patch(
            i, 0, painted, cover.alpha, m, np.asarray(stages.skin_mean(crop), np.float32), ref
        )
        patches.append(patch)
        stages.compositor.composite(out, FaceTrack(i, dets.boxes[i], lm), patch)
    if settings.output.debug_overlay:
        by_id = {p.track_id: p for p in patches}
        draw_overlay(out, Output(Frame(out), views), by_id.get)
    return ImageResult(out, len(dets), masked, patches)
