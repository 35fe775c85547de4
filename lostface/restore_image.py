"""One photo, restored synchronously: detect, paint every face (lostface.restore.painter),
composite."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lostface.config import Settings
from lostface.frame import FaceTrack, Frame, Patch
from lostface.pipeline import FaceView, Output, Stages, draw_overlay
from lostface.restore.painter import PaintJob


@dataclass
class ImageResult:
    image: np.ndarray
    faces: int
    masked: int
    patches: list[Patch]


def restore_image(
    image: np.ndarray, stages: Stages, settings: Settings, afresh: bool = True
) -> ImageResult:
    """Restore every masked face of one BGR image; unmasked faces stay pixel for pixel (a
    photo where a face was painted carries the watermark, stages.marker: no pixel moved by
    more than 2 levels).

    Faces are numbered by their detection order; nothing is carried over from an earlier call
    (the detector's, the painter's and the compositor's state is reset first: photos restored
    one after another come out as each would alone). afresh False: frames of one video, each
    restored as a photo (`lostface bench`'s naive pipeline): the small-face search keeps its
    pace over them and the frame mark its strength, as in `lostface run`."""
    out = image.copy()
    stages.compositor.reset()  # a photo has no previous frame: nothing to crossfade from
    stages.painter.reset()
    if afresh:
        stages.detector.reset()  # the small-face search paces itself by its calls
    dets = stages.detector.detect(image)
    jobs = [
        job
        for i in range(len(dets))
        if (job := PaintJob.of_detection(image, dets, i, settings.mask.closer_look_below))
        is not None
    ]
    patches: list[Patch] = []
    views: list[FaceView] = []
    for painted in stages.painter.paint_many(jobs):
        i = painted.track_id
        views.append(FaceView(i, dets.boxes[i], dets.landmarks[i], True, painted.covered))
        if painted.patch is not None:
            patches.append(painted.patch)
            stages.compositor.composite(
                out, FaceTrack(i, dets.boxes[i], dets.landmarks[i]), painted.patch
            )
    if patches and stages.marker is not None:
        if afresh:
            stages.marker.reset()  # its strength from this photo's brightness
        stages.marker.apply(out)
    if settings.output.debug_overlay:
        by_id = {p.track_id: p for p in patches}
        draw_overlay(out, Output(Frame(out), views), by_id.get)
    return ImageResult(out, len(dets), sum(v.masked is True for v in views), patches)
