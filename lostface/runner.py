"""Video file in, restored video file out: the threads, queues and atomic output of `run`."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from lostface.config import Settings
from lostface.errors import InputError
from lostface.frame import Detections, Frame
from lostface.pipeline import Output, Pipeline, Stages
from lostface.stages import Detector
from lostface.stream.video import ThreadedReader, ThreadedWriter, VideoReader, VideoWriter

if TYPE_CHECKING:
    from lostface.provenance import OutputProvenance
    from lostface.restore.selfref import ScanStats

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass
class RunStats:
    frames: int = 0
    seconds: float = 0.0
    track_ids: set[int] = field(default_factory=set)
    keyframes: int = 0
    painted_faces: int = 0  # faces composited with a painted patch, over all frames
    dropped_jobs: int = 0
    timings: dict = field(default_factory=dict)
    scan_seconds: float = 0.0  # the self-reference first pass (not in `seconds`)
    learned: dict[str, int] = field(default_factory=dict)  # learned person -> faces kept

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _NoBar:
    """The progress bar when none is shown (not a terminal, or -q): tqdm is not even imported."""

    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int | None, settings: Settings, desc: str, unit: str = "frame"):
    """A tqdm bar on stderr labelled with what is being done, when stderr is a terminal and
    output.progress is on (-q turns it off); else a bar that shows nothing."""
    if not (settings.output.progress and sys.stderr.isatty()):
        return _NoBar()
    from tqdm import tqdm

    return tqdm(
        total=total or None,
        unit=unit,
        desc=desc,
        dynamic_ncols=True,
        smoothing=0.1,
        file=sys.stderr,
    )


def progress(
    items: Iterable[T], settings: Settings, desc: str, total: int | None = None, unit: str = "item"
) -> Iterator[T]:
    """`items`, with a progress bar (see progress_bar) while they are consumed."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    bar = progress_bar(total, settings, desc, unit)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()


class _Remembered:
    """A detector that hands back the first pass's detections for the frames it detected
    (the decoder gives the same pixels twice), and detects the others: each frame is
    detected once over both passes. Frames are known by a fingerprint of their pixels."""

    LIMIT = 50_000  # frames remembered at most (a long file's later frames are detected again)

    def __init__(self, inner: Detector, full: Detector | None = None) -> None:
        self.inner = inner
        self.full = full if full is not None else inner  # what the second pass detects with
        self.found: dict[bytes, Detections] = {}

    @staticmethod
    def key(image: np.ndarray) -> bytes:
        return hashlib.blake2b(image[::4, ::4].tobytes(), digest_size=16).digest()

    def detect(self, image: np.ndarray) -> Detections:
        """Detect, and remember the result for the second pass."""
        dets = self.inner.detect(image)
        if len(self.found) < self.LIMIT:
            self.found[self.key(image)] = dets
        return dets

    def second_pass(self) -> Detector:
        """The detector for the second pass: remembered frames first."""
        found, full = self.found, self.full

        class _Reuse(Detector):
            def detect(self, image: np.ndarray) -> Detections:
                dets = found.pop(_Remembered.key(image), None) if found else None
                return full.complete(image, dets) if dets is not None else full.detect(image)

            def new_shot(self) -> None:
                full.new_shot()

            def close(self) -> None:
                found.clear()  # the detector itself belongs to the stages

        return _Reuse()


def learn_people(
    src: Path, settings: Settings, stages: Stages, label: str | None = None
) -> ScanStats | None:
    """The first pass of a file with self-reference (lostface.restore.selfref): look at every
    restore.self_scan_every-th frame (by default one in three of the frames the second pass
    detects, whose detections it then reuses: stages.detector is swapped for one that
    remembers them), judge each face that could teach its person (large enough,
    near-frontal) and let the painter keep the good open ones, so that masked frames anywhere
    in the file are painted from the person's own face. label: what the progress bar calls
    the file. None when the painter learns nothing from footage."""
    painter = stages.painter
    selfref = painter.selfref
    if selfref is None:
        return None
    from lostface.restore.painter import PaintJob
    from lostface.restore.selfref import ScanStats, scan

    every = settings.restore.self_scan_every or 3 * settings.tracking.detect_every
    # faces too small to learn from are not looked for here; the second pass adds the
    # small-face search to what this one found (Detector.complete)
    large = stages.detector.large_faces()
    reuse = every % settings.tracking.detect_every == 0
    detector = _Remembered(large, stages.detector) if reuse else large
    t0 = time.perf_counter()
    stats = ScanStats()

    def study(track_id: int, index: int, image, landmarks) -> None:  # noqa: ANN001
        job = PaintJob.from_frame(track_id, index, image, landmarks)
        if job is not None and selfref.could_learn(job.to_canonical, job.landmarks):
            painter.study(job)  # judged only when it could improve its person's bank

    with VideoReader(src) as reader:
        total = -(-reader.info.frames // every) if reader.info.frames else None
        # decoded on a thread (FFmpeg releases the GIL) while this one judges the faces
        decoded = ThreadedReader(reader, 4, lambda: reader.sample(every))
        try:
            frames = progress(
                decoded, settings, f"{label or src.name}: learning faces", total, "frame"
            )
            stats.frames, stats.faces, ids = scan(frames, detector, study, stages.scene_cut, every)
        finally:
            decoded.close()
    if isinstance(detector, _Remembered):
        stages.detector = detector.second_pass()
    for track_id in ids:
        painter.forget(track_id)
    stats.seconds = time.perf_counter() - t0
    stats.people = {p: len(selfref.references(p)) for p in selfref.people}
    if stats.people:
        log.info(
            "Self-reference: %d person(s) learned from open faces (%s), %d frames looked at "
            "in %.1f s.",
            len(stats.people),
            ", ".join(f"{p}: {n} face(s)" for p, n in stats.people.items()),
            stats.frames,
            stats.seconds,
        )
    else:
        log.info(
            "Self-reference: no open face good enough to learn from in %d frames looked at.",
            stats.frames,
        )
    return stats


def process_video(
    src: Path,
    out: Path,
    settings: Settings,
    stages: Stages,
    tracks_path: Path | None = None,
    synchronous: bool = False,
    label: str | None = None,
    provenance: OutputProvenance | None = None,
) -> RunStats:
    """Decode `src`, run the pipeline, encode `out` (audio kept); nothing partial is left
    behind on failure or Ctrl-C. synchronous runs each keyframe's work in the frame loop
    (slower; results no longer depend on timing, for benchmarks comparing two settings).
    label: what the progress bar says is being done (default: the input's name).
    provenance: the tag written into the container and the C2PA credentials signed before
    the output is renamed into place (lostface.provenance); none when not given.
    With self-reference (restore.self_reference), a first pass learns people first."""
    detector = stages.detector
    try:
        scanned = learn_people(src, settings, stages, label)
        return _process(
            src, out, settings, stages, tracks_path, synchronous, label, provenance, scanned
        )
    finally:
        if stages.detector is not detector:
            stages.detector.close()  # the second pass's detector: drops what it remembered
            stages.detector = detector


def _process(
    src: Path,
    out: Path,
    settings: Settings,
    stages: Stages,
    tracks_path: Path | None,
    synchronous: bool,
    label: str | None,
    provenance: OutputProvenance | None,
    scanned: ScanStats | None,
) -> RunStats:
    reader = VideoReader(src)
    # the encoder's thread composites each frame before encoding it: the frame loop's thread
    # only detects, tracks and decides
    pipe = Pipeline(settings, stages, synchronous=synchronous, composite_later=True)
    try:
        tags = provenance.video_tags() if provenance is not None else None
        metadata = {**reader.metadata, **(tags or {})}  # the recording's date and title kept
        writer = VideoWriter(
            out, reader.info, settings.video, reader.audios, metadata, subtitles=reader.subtitles
        )
        if provenance is not None:
            writer.finalize = lambda tmp: provenance.finish_video(
                tmp, pipe.painted_faces > 0, out.name
            )
    except BaseException:
        reader.close()
        pipe.close()
        raise
    twriter = ThreadedWriter(writer, settings.video.queue_size)
    treader = ThreadedReader(reader, settings.video.queue_size)
    tracks_tmp = tracks_path.with_name(f".{tracks_path.name}.partial") if tracks_path else None
    tracks_file = open(tracks_tmp, "w", encoding="utf-8") if tracks_tmp else None  # noqa: SIM115
    stats = RunStats()
    bar = progress_bar(reader.info.frames, settings, label or src.name)
    ok = False
    t0 = time.perf_counter()

    def emit(outs: list[Output]) -> None:
        for o in outs:
            twriter.put(o)
            if tracks_file is not None:
                tracks_file.write(json.dumps(o.record()) + "\n")
            stats.frames += 1
            stats.track_ids.update(f.track_id for f in o.faces)
        if outs:
            bar.update(len(outs))

    try:
        for item in treader:
            if isinstance(item, Frame):
                emit(pipe.push(item))
            else:
                twriter.put(item)
        emit(pipe.flush())
        if stats.frames == 0:
            raise InputError(f"Input {src} has no decodable video frames; the file looks corrupt.")
        twriter.commit()
        if tracks_file is not None:
            tracks_file.close()
            os.replace(tracks_tmp, tracks_path)  # type: ignore[arg-type]
        ok = True
    finally:
        bar.close()
        treader.close()
        if not ok:
            twriter.abort()  # first: its thread composites with the pipeline's compositor
        pipe.close()
        reader.close()
        if not ok:
            if tracks_file is not None:
                tracks_file.close()
                Path(tracks_tmp).unlink(missing_ok=True)  # type: ignore[arg-type]
    stats.seconds = time.perf_counter() - t0
    stats.keyframes = pipe.keyframes
    stats.painted_faces = pipe.painted_faces
    stats.dropped_jobs = pipe.worker.dropped
    stats.timings = pipe.timings.summary()
    if scanned is not None:
        stats.scan_seconds = scanned.seconds
        stats.learned = scanned.people
    return stats
