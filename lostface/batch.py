"""`lostface batch`: many files, and long files in segments, restored on a Dask cluster.

    report = run_batch(inputs, out_dir, settings, scheduler=None)   # a LocalCluster by default

Plan: every input is cut at video keyframes near every `batch.segment_seconds` into segments.
A segment task (on any worker) seeks to `batch.overlap_seconds` before its start, runs the whole
pipeline from there (so tracks, keyframes and patches are where a single run would have them
when the segment starts), reads a little past its end (the delay line's look-ahead), and
encodes only its own frames, with their original timestamps, to a video-only part. The parts
of a file are then joined by copying their packets (no second encode) with the input's audio
into the output, written atomically. A file short enough for one segment is one task. With
self-reference (restore.self_reference), one task per file first learns the people it shows
unmasked (the first pass of `lostface run`), and every segment of the file starts from them.

Workers keep what is costly to build between tasks (the detector, the reference photos aligned,
the heavy models through their loaders' caches); each task gets a fresh tracker, keyframe
policy, painter state and compositor. Tasks ask for a "GPU" resource when the settings use CUDA
and the cluster's workers advertise one.

OUT_DIR/.lostface-batch.sqlite records every finished output with its input's fingerprint, the
settings' hash and the output's sha256: a rerun skips those (and redoes them when the input or
the settings changed). A lock file keeps a second batch out of a folder in use. The batch ends
with a summary and OUT_DIR/lostface-batch.json.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av

from lostface import __version__
from lostface.config import Settings, dump_toml, settings_from_toml
from lostface.errors import InputError, LostfaceError, OutputError
from lostface.frame import Frame
from lostface.models import file_sha256
from lostface.provenance import OutputProvenance
from lostface.registry import self_reference_on
from lostface.stream.video import OUTPUT_CONTAINERS, VIDEO_SUFFIXES, VideoReader, VideoWriter

if TYPE_CHECKING:
    from lostface.restore.selfref import Learned

log = logging.getLogger(__name__)

MANIFEST = ".lostface-batch.sqlite"
LOCK = ".lostface-batch.lock"
REPORT = "lostface-batch.json"
WORK = ".lostface-batch"
SCHEMA = 1


# -- planning -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Segment:
    """Frames of one input with pts in [start, end) (None: from the first / to the last),
    decoded from `warm` (None: the first frame) so the pipeline warms up before `start`."""

    src: str
    index: int
    start: int | None
    end: int | None
    warm: int | None


@dataclass(frozen=True)
class SegmentTask:
    segment: Segment
    settings: str  # the resolved settings as TOML
    out: str  # the part's video file


@dataclass
class SegmentDone:
    out: str
    frames: int
    seconds: float
    worker: str
    painted: int = 0  # faces composited with a painted patch (the warm-up frames included)


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Files, folders (their video files and animated GIFs) and .txt lists of paths, in
    order, each once."""
    from lostface.stream.image import animated_gif

    out: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            out += sorted(
                p for p in path.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES or animated_gif(p)
            )
        elif path.suffix.lower() == ".txt" and path.is_file():
            lines = [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines()]
            out += [Path(ln).expanduser() for ln in lines if ln and not ln.startswith("#")]
        else:
            out.append(path)
    seen: set[Path] = set()
    unique = []
    for p in out:
        key = p.absolute()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def keyframes(src: Path) -> tuple[list[int], Fraction, float]:
    """The video keyframes' pts (sorted), the stream's time base, and its duration in seconds,
    from the packets alone (nothing decoded)."""
    with av.open(str(src)) as c:
        stream = c.streams.video[0]
        tb = Fraction(stream.time_base or Fraction(1, 30))
        keys, last = [], None
        for p in c.demux(stream):
            if p.pts is None:
                continue
            if p.is_keyframe:
                keys.append(int(p.pts))
            last = p.pts if last is None else max(last, p.pts)
    keys.sort()
    first = keys[0] if keys else 0
    return keys, tb, float(((last or 0) - first) * tb)


def plan(src: Path, segment_seconds: float, overlap_seconds: float) -> list[Segment]:
    """Segments cut at the keyframes nearest every segment_seconds; one for a short file."""
    keys, tb, duration = keyframes(src)
    if not keys or segment_seconds <= 0 or duration < 1.5 * segment_seconds:
        return [Segment(str(src), 0, None, None, None)]
    first = keys[0]
    step = int(segment_seconds / tb)
    cuts: list[int] = []
    for k in range(1, int(duration / segment_seconds) + 1):
        target = first + k * step
        best = min(keys, key=lambda p: abs(p - target))  # noqa: B023 (used at once)
        if best > (cuts[-1] if cuts else first) and (best - first) * tb < duration - 1.0:
            cuts.append(best)
    overlap = int(overlap_seconds / tb)
    starts: list[int | None] = [None, *cuts]
    ends: list[int | None] = [*cuts, None]
    warms: list[int | None] = [None, *(c - overlap for c in cuts)]
    return [
        Segment(str(src), i, start, end, warm)
        for i, (start, end, warm) in enumerate(zip(starts, ends, warms, strict=True))
    ]


# -- on a worker ----------------------------------------------------------------------------
_CACHE: dict[str, Any] = {}


def _settings_and_engines(text: str, cores: int = 0) -> tuple[Settings, Any, Any]:
    """Settings, detector and aligned references, built once per worker and settings. cores:
    the worker's threads (0: not a worker); the detector's enlarged look keeps to them."""
    key = hashlib.sha256(text.encode()).hexdigest()
    if key not in _CACHE:
        from lostface.factory import build_detector, load_references

        settings = settings_from_toml(text)
        if cores:
            looks = min(settings.detect.look_threads, cores)
            settings = replace(settings, detect=replace(settings.detect, look_threads=looks))
        detector = build_detector(settings)
        _CACHE[key] = (settings, detector, load_references(settings, detector))
    return _CACHE[key]  # type: ignore[no-any-return]


def learn_file(src: str, settings_text: str) -> Learned | None:
    """The people a file shows unmasked (self-reference's first pass, as `lostface run` makes
    it; runs on a Dask worker before the file's segments): handed to every segment, so each
    paints them from the start, whichever part of the file showed them. None when
    self-reference is off or cannot tell people apart (no dlib)."""
    from lostface.factory import build_stages
    from lostface.runner import learn_people

    cores = _worker_threads()
    settings, detector, bank = _settings_and_engines(settings_text, cores)
    stages = build_stages(settings, detector=detector, bank=bank)
    selfref = stages.painter.selfref
    if selfref is None:
        return None
    learn_people(
        Path(src), replace(settings, output=replace(settings.output, progress=False)), stages
    )
    return selfref.export()


def process_segment(task: SegmentTask, learned: Learned | None = None) -> SegmentDone:
    """Restore one segment into a video-only part (runs on a Dask worker); `learned`: the
    people the whole file shows unmasked (learn_file)."""
    import socket

    from lostface.factory import build_stages
    from lostface.pipeline import Pipeline

    seg = task.segment
    cores = _worker_threads()
    settings, detector, bank = _settings_and_engines(task.settings, cores)
    # the references are aligned once per worker; each segment gets its own engines and gate
    stages = build_stages(settings, detector=detector, bank=bank)
    if learned and stages.painter.selfref is not None:
        stages.painter.selfref.load(learned)
    settings = replace(settings, video=replace(settings.video, threads=cores))
    reader = VideoReader(seg.src, threads=cores)
    if seg.warm is not None:
        reader.seek(max(0, seg.warm))
    # frames read past the end: the delay line's look-ahead, as a single run has it
    tb = reader.info.time_base
    ahead = int(round(settings.keyframe.delay_frames * 2 / reader.info.rate / tb)) + 1
    first_pts = reader.video.start_time or 0
    # a worker of one thread detects and paints each keyframe in its frame loop: a detector or
    # keyframe thread beside it would take a share of a core the worker was not given
    one = cores == 1
    pipe = Pipeline(settings, stages, synchronous=one, detect_ahead=0 if one else None)
    writer = VideoWriter(task.out, reader.info, settings.video, None)
    t0 = time.perf_counter()
    written = 0

    def keep(outs: list) -> None:
        nonlocal written
        for o in outs:
            pts = o.frame.pts
            if (seg.start is None or pts >= seg.start) and (seg.end is None or pts < seg.end):
                writer.write(o.frame)
                written += 1

    try:
        for item in reader.items():
            if not isinstance(item, Frame):
                continue
            if seg.end is not None and item.pts is not None and item.pts >= seg.end + ahead:
                break
            if seg.warm is not None and item.pts is not None:
                # a frame keeps its place in the whole file, not its count from the seek: the
                # watermark's turns follow the output's frame count (Compositor.begin_frame)
                item.index = int(round(float((item.pts - first_pts) * tb * reader.info.rate)))
            keep(pipe.push(item))
        keep(pipe.flush())
        writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        pipe.close()
        reader.close()
    return SegmentDone(
        task.out, written, time.perf_counter() - t0, socket.gethostname(), pipe.painted_faces
    )


def _worker_threads() -> int:
    """The threads the Dask worker running this task has (0 outside a worker): decoder,
    encoder and OpenCV keep to them, so workers side by side do not fight over the cores. A
    worker of one thread also keeps to one core: process_segment detects and paints
    keyframes in its frame loop."""
    try:
        from distributed import get_worker

        n = int(get_worker().state.nthreads)
    except (ImportError, ValueError, AttributeError):
        return 0
    import cv2

    cv2.setNumThreads(n)
    return n


# -- joining ------------------------------------------------------------------------------
def join(
    src: Path,
    parts: list[Path],
    out: Path,
    settings: Settings,
    segments: list[Segment],
    metadata: dict[str, str] | None = None,
    finalize: Callable[[Path], None] | None = None,
) -> None:
    """The parts' video packets, in order, the input's audio tracks (copied where the
    container holds them, else re-encoded) and its subtitles (copied where it holds them) into
    `out`, written whole or not at all. Each part's timestamps are put back on the input's
    own: an MP4 part may start a fraction of a millisecond off (its edit list counts in the
    movie's coarser clock). The input's recording date and title are kept
    (stream.video.KEPT_METADATA); metadata: entries written too (the lostface tag of a
    painted output); finalize: called with the closed temporary file before it is renamed
    (C2PA signing)."""
    from lostface.stream.audio import AudioTrack, copy_subtitles
    from lostface.stream.video import KEPT_METADATA

    with av.open(str(src)) as probe:
        alone = len(parts) == 1 and not (
            (settings.video.audio and probe.streams.audio)
            or probe.streams.subtitles
            or any(probe.metadata.get(k) for k in KEPT_METADATA)
            or metadata
            or finalize is not None
        )
    if alone:  # the one part is the whole output
        shutil.copyfile(parts[0], _tmp(out))
        os.replace(_tmp(out), out)
        return
    opened = [av.open(str(p)) for p in parts]
    inp = av.open(str(src))
    tmp = _tmp(out)
    try:
        extradata = {bytes(c.streams.video[0].codec_context.extradata or b"") for c in opened}
        if len(extradata) > 1:
            raise OutputError(
                f"The parts of {src.name} were encoded with different headers; rerun with "
                "batch.segment_seconds=0 (one part per file)."
            )
        container = av.open(str(tmp), "w")
        try:
            for key in KEPT_METADATA:
                if inp.metadata.get(key):
                    container.metadata[key] = str(inp.metadata[key])
            for key, value in (metadata or {}).items():
                container.metadata[key] = value
            video = container.add_stream_from_template(opened[0].streams.video[0])
            audio_in = list(inp.streams.audio) if settings.video.audio else []
            tracks = {a.index: AudioTrack(container, a) for a in audio_in}
            subtitles = copy_subtitles(container, list(inp.streams.subtitles))
            container.start_encoding()
            firsts = _first_pts(inp, segments)
            streams: list[Iterator[av.Packet]] = [_video_packets(opened, video, firsts)]
            if tracks or subtitles:
                streams.append(_other_packets(inp, tracks, subtitles))
            for packet in _by_time(streams):
                container.mux(packet)
        finally:
            container.close()
        if finalize is not None:
            finalize(tmp)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        for c in [*opened, inp]:
            c.close()


def _tmp(out: Path) -> Path:
    return out.with_name(f".{out.stem}.lostface-batch-{os.getpid()}.partial{out.suffix}")


def _first_pts(inp: Any, segments: list[Segment]) -> list[int]:
    """The input's first frame pts in each segment (its video stream's time base)."""
    pts = sorted(int(p.pts) for p in inp.demux(inp.streams.video[0]) if p.pts is not None)
    inp.seek(0)
    return [next(t for t in pts if s.start is None or t >= s.start) for s in segments]


def _video_packets(parts: list[Any], stream: Any, firsts: list[int]) -> Iterator[av.Packet]:
    for c, first in zip(parts, firsts, strict=True):
        v = c.streams.video[0]
        # the part's first frame is the segment's first frame: shift its clock onto the input's
        start = min(int(p.pts) for p in c.demux(v) if p.pts is not None)
        c.seek(0)
        shift = int(round((first * stream.time_base - start * v.time_base) / v.time_base))
        for p in c.demux(v):
            if p.dts is None and p.pts is None:
                continue  # the demuxer's end-of-stream marker
            if p.pts is not None:
                p.pts += shift
            if p.dts is not None:
                p.dts += shift
            p.stream = stream
            yield p


def _other_packets(
    inp: Any, tracks: dict[int, Any], subtitles: dict[int, Any]
) -> Iterator[av.Packet]:
    """Every audio and subtitle track's packets, in the input's order (one pass over them)."""
    wanted = [s for s in inp.streams if s.index in tracks or s.index in subtitles]
    for p in inp.demux(wanted):
        if p.stream.index in subtitles:
            if p.size and p.pts is not None:
                p.stream = subtitles[p.stream.index]
                yield p
        elif p.dts is not None:
            yield from tracks[p.stream.index].put(p)
    for track in tracks.values():
        yield from track.flush()


def _by_time(streams: list[Iterator[av.Packet]]) -> Iterator[av.Packet]:
    """Packets of several streams merged by decode time, so the muxer interleaves without
    buffering a whole stream."""
    heads: list[av.Packet | None] = [next(s, None) for s in streams]

    def when(p: av.Packet) -> float:
        t = p.dts if p.dts is not None else p.pts
        return float((t or 0) * p.time_base)

    while any(h is not None for h in heads):
        i = min((k for k, h in enumerate(heads) if h is not None), key=lambda k: when(heads[k]))  # type: ignore[arg-type]
        yield heads[i]  # type: ignore[misc]
        heads[i] = next(streams[i], None)


# -- the manifest -------------------------------------------------------------------------
class Manifest:
    """OUT_DIR's record of finished outputs (SQLite: safe against a crash mid-write)."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / MANIFEST
        self.db = sqlite3.connect(str(self.path), timeout=30)
        self.db.execute("PRAGMA journal_mode=WAL")
        with self.db:
            self.db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT)")
            self.db.execute(
                "CREATE TABLE IF NOT EXISTS outputs (input TEXT PRIMARY KEY, output TEXT, "
                "fingerprint TEXT, settings TEXT, sha256 TEXT, frames INTEGER, seconds REAL, "
                "status TEXT, error TEXT, finished TEXT)"
            )
        row = self.db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        if row is None:
            with self.db:
                self.db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA),))
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('version', ?)", (__version__,))
        elif row[0] != str(SCHEMA):
            version = self.db.execute("SELECT value FROM meta WHERE key='version'").fetchone()
            self.db.close()
            raise InputError(
                f"{self.path} was written by lostface {version[0] if version else '?'} (manifest "
                f"schema {row[0]}, this one reads {SCHEMA}); remove it or use another folder."
            )

    def finished(self, src: Path, fingerprint: str, settings_hash: str, out: Path) -> bool:
        row = self.db.execute(
            "SELECT fingerprint, settings, sha256, status FROM outputs WHERE input=?", (str(src),)
        ).fetchone()
        if row is None or row[3] != "done" or not out.is_file():
            return False
        return row[0] == fingerprint and row[1] == settings_hash and row[2] == file_sha256(out)

    def record(self, src: Path, out: Path, fingerprint: str, settings_hash: str, **kw: Any) -> None:
        with self.db:
            self.db.execute(
                "INSERT OR REPLACE INTO outputs VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    str(src),
                    str(out),
                    fingerprint,
                    settings_hash,
                    kw.get("sha256"),
                    kw.get("frames", 0),
                    kw.get("seconds", 0.0),
                    kw["status"],
                    kw.get("error"),
                    datetime.now(UTC).isoformat(timespec="seconds"),
                ),
            )

    def close(self) -> None:
        self.db.close()


def fingerprint(path: Path) -> str:
    """Size, modification time and the first and last MiB's hash: a changed input is redone
    without reading hours of footage."""
    st = path.stat()
    digest = hashlib.sha256(f"{st.st_size}:{int(st.st_mtime)}".encode())
    with open(path, "rb") as f:
        digest.update(f.read(1 << 20))
        if st.st_size > 2 << 20:
            f.seek(-(1 << 20), os.SEEK_END)
            digest.update(f.read(1 << 20))
    return digest.hexdigest()


class FolderLock:
    """One batch per output folder at a time."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / LOCK
        self.file = open(self.path, "a+")  # noqa: SIM115
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.file.seek(0)
            pid = self.file.read().strip() or "?"
            self.file.close()
            raise OutputError(
                f"Another lostface batch (pid {pid}) is writing to {folder}; wait for it to "
                "finish or use another output folder."
            ) from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(str(os.getpid()))
        self.file.flush()

    def release(self) -> None:
        fcntl.flock(self.file, fcntl.LOCK_UN)
        self.file.close()


# -- the batch ----------------------------------------------------------------------------
@dataclass
class FileResult:
    input: str
    output: str
    status: str  # done | skipped | failed
    frames: int = 0
    seconds: float = 0.0
    segments: int = 0
    error: str = ""


@dataclass
class BatchReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0

    def count(self, status: str) -> int:
        return sum(f.status == status for f in self.files)

    @property
    def frames(self) -> int:
        return sum(f.frames for f in self.files if f.status == "done")

    def summary(self) -> str:
        fps = self.frames / self.seconds if self.seconds else 0.0
        return (
            f"{self.count('done')} done, {self.count('skipped')} skipped, "
            f"{self.count('failed')} failed; {self.frames} frames in {self.seconds:.1f} s "
            f"({fps:.1f} frames/s) on {self.workers} workers"
        )


def output_for(src: Path, out_dir: Path, taken: set[Path]) -> Path:
    """OUT_DIR/<input's name> (a container lostface writes: .mkv for others), made unique."""
    suffix = src.suffix.lower() if src.suffix.lower() in OUTPUT_CONTAINERS else ".mkv"
    out = out_dir / (src.stem + suffix)
    n = 2
    while out in taken:
        out = out_dir / f"{src.stem}-{n}{suffix}"
        n += 1
    taken.add(out)
    return out


def connect(scheduler: str | None, workers: int, dashboard: bool) -> tuple[Any, Any]:
    """A Dask client: to `scheduler`, or to a LocalCluster of `workers` one-thread processes."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError(
            "lostface batch needs Dask; run `pip install 'lostface[batch]'`."
        ) from None
    if not log.isEnabledFor(logging.DEBUG):  # Dask's notes on its own start and stop
        for name in ("distributed", "distributed.scheduler", "distributed.nanny"):
            logging.getLogger(name).setLevel(logging.ERROR)
    if scheduler:
        try:
            return Client(scheduler, timeout="10s"), None
        except (OSError, TimeoutError) as exc:
            raise InputError(
                f"Cannot reach the Dask scheduler at {scheduler} ({type(exc).__name__}); check "
                "the address, or leave --scheduler out to start a cluster on this machine."
            ) from None
    cluster = LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":8787" if dashboard else None,
    )
    return Client(cluster), cluster


def settings_hash(settings: Settings) -> str:
    digest = hashlib.sha256(dump_toml(settings).encode())
    for ref in settings.restore.references:
        p = Path(ref)
        for f in sorted(p.iterdir()) if p.is_dir() else [p]:
            if f.is_file():
                digest.update(fingerprint(f).encode())
    return digest.hexdigest()


def run_batch(
    inputs: list[str],
    out_dir: Path,
    settings: Settings,
    scheduler: str | None = None,
    workers: int | None = None,
    dashboard: bool = False,
) -> BatchReport:
    """Restore every input into out_dir (see the module docstring)."""
    from lostface.runner import progress_bar

    files = expand_inputs(inputs)
    if not files:
        raise InputError("No input video was given (files, folders of videos or a .txt list).")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".lostface-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise OutputError(
            f"Cannot write to {out_dir} ({exc.strerror}); choose another folder."
        ) from None
    lock = FolderLock(out_dir)
    manifest = Manifest(out_dir)
    work = out_dir / WORK
    report = BatchReport()
    t0 = time.perf_counter()
    client = cluster = None
    try:
        shash = settings_hash(settings)  # before a random run id is drawn: reruns resume
        if settings.provenance.watermark:
            from lostface.provenance import settle_run_id

            settle_run_id(settings)  # one id for every segment of every file of the batch
        text = dump_toml(settings)
        taken: set[Path] = set()
        todo: list[tuple[Path, Path, str, list[Segment]]] = []
        for src in files:
            out = output_for(src, out_dir, taken)
            try:
                if not src.is_file():
                    raise InputError(f"{src} does not exist.")
                fp = fingerprint(src)
                if manifest.finished(src, fp, shash, out):
                    report.files.append(FileResult(str(src), str(out), "skipped"))
                    continue
                segs = plan(src, settings.batch.segment_seconds, settings.batch.overlap_seconds)
                if settings.provenance.c2pa:
                    from lostface.provenance import credentials

                    credentials.check_format(out)  # before any work, as `run` checks it
            except (LostfaceError, av.error.FFmpegError, OSError, IndexError) as exc:
                report.files.append(FileResult(str(src), str(out), "failed", error=_why(exc)))
                continue
            todo.append((src, out, fp, segs))
        if todo:
            client, cluster = connect(scheduler, workers or os.cpu_count() or 1, dashboard)
            report.workers = len(client.scheduler_info().get("workers", {}))
            report.files += _run(client, todo, text, shash, work, settings, manifest, progress_bar)
    finally:
        report.seconds = time.perf_counter() - t0
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
        shutil.rmtree(work, ignore_errors=True)
        manifest.close()
        (out_dir / REPORT).write_text(
            json.dumps(
                {
                    "version": __version__,
                    "summary": report.summary(),
                    "seconds": report.seconds,
                    "workers": report.workers,
                    "files": [asdict(f) for f in report.files],
                },
                indent=1,
            )
        )
        lock.release()
    return report


def _why(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, LostfaceError) else f"{type(exc).__name__}: {exc}"


def _resources(client: Any, settings: Settings) -> dict[str, float] | None:
    wants_gpu = settings.models.device.startswith("cuda") or settings.detect.device.startswith(
        "cuda"
    )
    workers = client.scheduler_info().get("workers", {}).values()
    has_gpu = any(w.get("resources", {}).get("GPU") for w in workers)
    return {"GPU": 1} if wants_gpu and has_gpu else None


def _run(
    client: Any,
    todo: list[tuple[Path, Path, str, list[Segment]]],
    text: str,
    shash: str,
    work: Path,
    settings: Settings,
    manifest: Manifest,
    progress_bar: Any,
) -> list[FileResult]:
    from distributed import as_completed

    resources = _resources(client, settings)
    futures: dict[Any, tuple[int, int]] = {}
    parts: list[list[Path]] = []
    learns = self_reference_on(settings)
    for i, (src, _, _, segs) in enumerate(todo):
        folder = work / f"{i:05d}"
        folder.mkdir(parents=True, exist_ok=True)
        parts.append([folder / f"part-{s.index:04d}.mp4" for s in segs])
        # self-reference: one task learns the file's people first; its segments wait for it
        learned = (
            client.submit(
                learn_file,
                str(src),
                text,
                resources=resources,
                pure=False,
                key=f"lostface-{i:05d}-learn-{os.getpid()}",
            )
            if learns
            else None
        )
        for s, part in zip(segs, parts[-1], strict=True):
            f = client.submit(
                process_segment,
                SegmentTask(s, text, str(part)),
                learned,
                resources=resources,
                pure=False,
                key=f"lostface-{i:05d}-{s.index:04d}-{os.getpid()}",
            )
            futures[f] = (i, s.index)
    frames_total = sum(_frame_count(src) for src, *_ in todo)
    bar = progress_bar(frames_total or None, settings, f"batch of {len(todo)} files")
    done: dict[int, dict[int, SegmentDone]] = {i: {} for i in range(len(todo))}
    errors: dict[int, str] = {}
    for future in as_completed(list(futures)):
        i, k = futures[future]
        try:
            result = future.result()
        except Exception as exc:  # noqa: BLE001  (a task's error is the file's, not the batch's)
            errors.setdefault(i, _why(exc))
            continue
        done[i][k] = result
        bar.update(result.frames)
    bar.close()
    results = []
    for i, (src, out, fp, segs) in enumerate(todo):
        if i in errors:
            manifest.record(src, out, fp, shash, status="failed", error=errors[i])
            results.append(FileResult(str(src), str(out), "failed", error=errors[i]))
            log.warning("%s failed: %s", src, errors[i])
            continue
        # the lostface tag (and C2PA credentials, when asked for) on a file with a painted face
        painted = any(d.painted for d in done[i].values())
        try:
            if painted:
                marks = OutputProvenance.from_settings(settings, out)
                join(src, parts[i], out, settings, segs, marks.video_tags(), marks.signer(out))
            else:
                join(src, parts[i], out, settings, segs)
        except (LostfaceError, av.error.FFmpegError, OSError) as exc:
            manifest.record(src, out, fp, shash, status="failed", error=_why(exc))
            results.append(FileResult(str(src), str(out), "failed", error=_why(exc)))
            continue
        frames = sum(d.frames for d in done[i].values())
        seconds = sum(d.seconds for d in done[i].values())
        manifest.record(
            src,
            out,
            fp,
            shash,
            status="done",
            sha256=file_sha256(out),
            frames=frames,
            seconds=seconds,
        )
        results.append(FileResult(str(src), str(out), "done", frames, seconds, len(segs)))
    return results


def _frame_count(src: Path) -> int:
    with av.open(str(src)) as c:
        return int(c.streams.video[0].frames or 0)
