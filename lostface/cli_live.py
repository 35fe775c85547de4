"""Live commands of `lostface`: serve (WebRTC + web page), vcam (virtual camera) and stream
(MPEG-TS for OBS). Registered by lostface.cli through add_live_commands(subparsers)."""

from __future__ import annotations

import argparse
import logging
import signal
import time

from lostface.cli_common import (
    add_audio_arg,
    add_config_args,
    add_reference_arg,
    settings_from_args,
)
from lostface.config import Settings
from lostface.errors import InputError, OutputError

DEFAULT_NAME = "me"  # as lostface.stream.capture.DEFAULT_NAME (not imported: it loads numpy)
CAPTURE_SECONDS = 3.0  # vcam/stream --capture-reference without SECONDS

log = logging.getLogger("lostface")

READOUT_PERIOD_S = 5.0
# their INFO lines (every ICE check, every request) drown lostface's own; shown with -v
CHATTY_LOGGERS = ("aioice", "aiortc", "aiohttp.access", "aiohttp.server")


def quiet_third_party(verbose: bool) -> None:
    level = logging.DEBUG if verbose else max(logging.getLogger().level, logging.WARNING)
    for name in CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(level)


def _common(p: argparse.ArgumentParser) -> None:
    add_reference_arg(p)
    p.add_argument(
        "--debug-overlay",
        action="store_true",
        help="draw boxes, track ids, covered regions and keyframe marks",
    )
    add_config_args(p)


def _source_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("source")
    g.add_argument(
        "--camera",
        metavar="DEV",
        help="webcam index or device path, e.g. 0 or /dev/video2 (default: live.camera)",
    )
    g.add_argument(
        "--file",
        metavar="VIDEO",
        help="play a video file at its own rate, from its first frame, instead of a camera "
        "(its audio goes into --stream / stream's MPEG-TS)",
    )
    g.add_argument("--loop", action="store_true", help="with --file: start again at the end")
    add_audio_arg(g, "with --file: stream the pictures only")
    g.add_argument("--width", type=int, help="camera width (default: live.camera_width)")
    g.add_argument("--height", type=int, help="camera height (default: live.camera_height)")
    g.add_argument("--fps", type=float, help="camera frame rate (default: live.camera_fps)")


def _capture_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("capture my face now")
    g.add_argument(
        "--capture-reference",
        nargs="?",
        type=float,
        const=CAPTURE_SECONDS,
        metavar="SECONDS",
        help="before restoring starts, look at the camera for SECONDS (default "
        f"{CAPTURE_SECONDS:g}) with the mask off: the open faces seen become the references "
        "of --capture-name (masked faces that match are painted from them)",
    )
    g.add_argument(
        "--capture-name",
        metavar="NAME",
        help=f"the captured person's name (default {DEFAULT_NAME})",
    )
    g.add_argument(
        "--save-reference",
        metavar="DIR",
        help="also save the captured photos as DIR/NAME/*.png (replacing an earlier capture "
        "of NAME there); a later run takes them with --reference NAME=DIR/NAME",
    )


def add_live_commands(sub: argparse._SubParsersAction) -> None:
    """Add serve, vcam and stream to the `lostface` parser's subcommands."""
    p = sub.add_parser(
        "serve",
        help="serve a web page that restores the browser's camera live (WebRTC)",
        description="Serve a web page at / : the browser sends its camera over WebRTC and "
        "gets the restored video back, with controls (among them 'Capture my face now', which "
        "learns the face the camera shows without a mask as a named reference) and a frames/s "
        "and latency readout. "
        "Binds 127.0.0.1 unless told otherwise; another address needs --token.",
    )
    p.add_argument("--host", help="address to bind (default: live.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: live.port, 8080)")
    p.add_argument("--token", help="shared secret; open the page as /?token=SECRET")
    p.add_argument("--tls-cert", metavar="PEM", help="certificate for HTTPS")
    p.add_argument("--tls-key", metavar="PEM", help="private key for HTTPS")
    p.add_argument(
        "--max-sessions", type=int, help="concurrent sessions (default: live.max_sessions)"
    )
    p.add_argument(
        "--save-captures",
        metavar="DIR",
        help="save each 'Capture my face now' of the page as DIR/NAME/*.png (replacing an "
        "earlier capture of NAME there); a later run takes them with --reference NAME=DIR/NAME "
        "(without it a capture is used in its session only)",
    )
    _common(p)

    p = sub.add_parser(
        "vcam",
        help="webcam (or file) -> restored -> virtual camera for call apps",
        description="Restore a webcam (or a video file) live and send it to a virtual camera "
        "(v4l2loopback on Linux, OBS's virtual camera on Windows and macOS); optionally also "
        "as an MPEG-TS stream.",
    )
    _source_args(p)
    p.add_argument("--device", help="virtual camera device (default: live.vcam_device, or any)")
    p.add_argument("--stream", metavar="URL", help="also stream MPEG-TS to udp://HOST:PORT")
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    _capture_args(p)
    _common(p)

    p = sub.add_parser(
        "stream",
        help="webcam (or file) -> restored -> MPEG-TS stream for OBS",
        description="Restore a webcam (or a video file, with its audio) live and stream it as "
        "MPEG-TS over udp:// with low-latency x264; in OBS add a Media Source with the same URL "
        "(udp://@HOST:PORT).",
    )
    p.add_argument("url", metavar="URL", help="udp://HOST:PORT")
    _source_args(p)
    p.add_argument("--seconds", type=float, help="stop after this many seconds")
    _capture_args(p)
    _common(p)


def _settings(args: argparse.Namespace) -> Settings:
    extra = []
    for key in ("host", "port", "token", "tls_cert", "tls_key", "max_sessions"):
        value = getattr(args, key, None)
        if value is not None:
            extra.append(f"live.{key}={_toml(value)}")
    args.overrides = [*args.overrides, *extra]
    return settings_from_args(args)


def _toml(value: object) -> str:
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return str(value)


# -- serve --------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio  # here, not at the top: `lostface run` never needs the event loop

    from lostface.stream.webrtc import LiveServer, tune_malloc

    settings = _settings(args)
    quiet_third_party(args.verbose)
    tune_malloc()
    if args.save_captures:
        from lostface.stream.capture import check_save_dir

        check_save_dir(args.save_captures)
    # the --reference photos are in restore.references
    server = LiveServer(settings, capture_dir=args.save_captures)
    closed = [0]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(sig, stop.set)
            except (NotImplementedError, RuntimeError):  # Windows: Ctrl-C is KeyboardInterrupt
                pass
        loop.set_exception_handler(_log_loop_error)
        try:
            url = await server.start()
            if stop.is_set():
                return
            token = f"?token={settings.live.token}" if settings.live.token else ""
            print(f"lostface: serving {url}{token} (Ctrl-C stops)", flush=True)
            if server.capture_dir is not None:
                log.info("The page's captures are saved in %s/NAME.", server.capture_dir)
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), READOUT_PERIOD_S)
                except TimeoutError:
                    pass
                for s in list(server.sessions.values()):
                    st = s.stats()
                    log.info(
                        "session %s: %.1f fps, latency p50 %.0f ms, p95 %.0f ms",
                        s.id,
                        st["fps"],
                        st["latency_p50_ms"],
                        st["latency_p95_ms"],
                    )
        finally:
            closed[0] = len(server.sessions)
            await server.close()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:  # where signal handlers cannot be installed
        pass
    n = closed[0]
    print(f"lostface: stopped ({n} session{'' if n == 1 else 's'} closed).", flush=True)
    return 0


def _log_loop_error(loop, context: dict) -> None:
    """An exception nobody awaited (inside aiortc or aioice, say): one line, not a traceback
    (that comes with -v)."""
    exc = context.get("exception")
    what = f"{type(exc).__name__}: {exc}" if exc is not None else ""
    log.warning("%s %s", context.get("message", "Error in the event loop"), what)
    if exc is not None:
        log.debug("Traceback of the error above", exc_info=exc)


# -- vcam / stream ------------------------------------------------------------------------
def _open_source(args: argparse.Namespace, settings: Settings):
    from lostface.stream.sources import CameraSource, FileSource

    live = settings.live
    if args.file:
        if args.camera:
            raise InputError("Give either --camera or --file, not both.")
        return FileSource(args.file, loop=args.loop)
    return CameraSource(
        args.camera if args.camera is not None else live.camera,
        args.width or live.camera_width,
        args.height or live.camera_height,
        args.fps or live.camera_fps,
    )


def _run_live(args: argparse.Namespace, settings: Settings, make_sinks) -> int:
    """The live loop from a camera or file to the sinks `make_sinks(source)` gives, as
    (name, sink) pairs; a sink with send_audio gets a file's audio packets."""
    from lostface.factory import build_stages
    from lostface.stream.live import LiveLoop, ThreadedSink, close_pipeline, live_pipeline
    from lostface.stream.sources import FileSource

    capture = _check_capture_args(args)
    source = _open_source(args, settings)  # a bad file fails here, before models load
    from_file = isinstance(source, FileSource)
    if not from_file:
        source.start()  # a missing or busy camera fails here, before models load
    sinks: list[ThreadedSink] = []
    pipe = None
    loop = None
    try:
        w, h = source.size
        made = make_sinks(source)
        sinks = [ThreadedSink(s, name) for name, s in made]
        if from_file and settings.video.audio:
            hears = [s for _, s in made if getattr(s, "audio", None) is not None]

            def hand_audio(packet) -> None:  # noqa: ANN001
                for s in hears:
                    s.send_audio(packet)

            if hears:
                source.on_audio = hand_audio
        stages = build_stages(settings, captures=capture)
        detector = stages.detector  # before live_pipeline moves it onto its own thread
        pipe = live_pipeline(settings, stages, settings.live.background_detection)
        if from_file:
            source.start()  # a file plays from its first frame once the models are ready
        if capture:
            result = _capture(args, settings, source, detector, sinks)
            pipe.adopt(result.name, result.references)
        loop = LiveLoop(source, pipe, sinks, badge=settings.live.badge, max_seconds=args.seconds)
        last = [time.monotonic()]

        def readout(_frame, _lat) -> None:
            now = time.monotonic()
            if now - last[0] >= READOUT_PERIOD_S:
                last[0] = now
                s = loop.meter.summary()  # type: ignore[union-attr]
                log.info(
                    "%.1f fps, latency p50 %.0f ms, p95 %.0f ms", s["fps"], s["p50_ms"], s["p95_ms"]
                )

        loop.on_frame = readout
        print(f"lostface: live from {source.name} at {w}x{h} (Ctrl-C stops)", flush=True)
        try:
            stats = loop.run()
        except KeyboardInterrupt:
            loop.stop()
            stats = loop.stats
        log.info(
            "%d frames in %.1f s (%.1f fps), %d dropped; latency p50 %.0f ms, p95 %.0f ms",
            stats.frames,
            stats.seconds,
            stats.fps,
            stats.dropped,
            stats.latency.get("p50_ms", 0.0),
            stats.latency.get("p95_ms", 0.0),
        )
    finally:
        source.close()
        for s in sinks:
            s.close()
        if pipe is not None:
            close_pipeline(pipe)
    return 0


def _check_capture_args(args: argparse.Namespace) -> bool:
    """Whether a capture comes first; its flags are checked before anything is opened."""
    if args.capture_reference is None:
        if args.capture_name is not None or args.save_reference is not None:
            raise InputError(
                "--capture-name and --save-reference go with --capture-reference [SECONDS]."
            )
        return False
    from lostface.stream.capture import check_name, check_save_dir

    if not 0.5 <= args.capture_reference <= 60:
        raise InputError(
            f"--capture-reference {args.capture_reference:g} is out of range; give 0.5 to 60 "
            "seconds."
        )
    args.capture_name = check_name(args.capture_name or DEFAULT_NAME)
    if args.save_reference:
        check_save_dir(args.save_reference)
    return True


def _capture(args: argparse.Namespace, settings: Settings, source, detector, sinks):  # noqa: ANN001
    """--capture-reference: the source's next SECONDS, judged as they come (the capture's
    own thread), sent on to the sinks as they are (nothing is painted yet); the references of
    --capture-name, saved with --save-reference. NoOpenFace when no open face was seen."""
    import math

    from lostface.stream.capture import EVERY, MAX_FRAMES, LiveCapture, builder_for, how_to_use
    from lostface.stream.sources import SourceEnded

    seconds = float(args.capture_reference)
    every = max(EVERY, math.ceil(seconds * source.rate / MAX_FRAMES))
    builder = builder_for(args.capture_name, settings, detector)
    capture = LiveCapture(builder, seconds, every=every, save_dir=args.save_reference)
    log.info("Capturing %s for %g s: look at the camera without the mask.", builder.name, seconds)
    try:
        while capture.collecting:
            try:
                got = source.get(0.25)
            except SourceEnded as end:
                if end.error is not None:
                    raise end.error from None
                break  # a file shorter than the capture: what was seen counts
            if got is None:
                continue
            capture.offer(got.frame.image)
            for sink in sinks:
                sink.send(got.frame)
        capture.end()
        capture.done.wait()
    except BaseException:
        capture.cancel()  # Ctrl-C or a failed source: nothing is learned or saved
        raise
    if capture.result is None:
        raise InputError(capture.error)
    if capture.save_error:
        raise OutputError(capture.save_error)
    result = capture.result
    log.info("Capture: %s (built in %.1f s).", result.summary(), result.seconds)
    if result.saved is not None:
        log.info("Saved in %s; a later run takes them with %s.", result.saved, how_to_use(result))
    return result


def _stream_sink(url: str, source, settings: Settings):  # noqa: ANN001
    """MPEG-TS at `url` for `source`'s pictures, with a file's audio unless video.audio is off."""
    from lostface.stream.mpegts import MpegTsSink

    audio = getattr(source, "audio", None) if settings.video.audio else None
    (w, h), fps = source.size, source.rate
    return MpegTsSink(url, w, h, fps, settings.live.stream_bitrate, audio=audio)


def cmd_vcam(args: argparse.Namespace) -> int:
    from lostface.stream.mpegts import check_url
    from lostface.stream.vcam import VirtualCameraSink

    settings = _settings(args)
    if args.stream:
        check_url(args.stream)

    def sinks(source) -> list:  # noqa: ANN001
        (w, h), fps = source.size, source.rate
        out: list[tuple[str, object]] = [
            ("vcam", VirtualCameraSink(w, h, fps, args.device or settings.live.vcam_device))
        ]
        if args.stream:
            out.append(("stream", _stream_sink(args.stream, source, settings)))
        return out

    return _run_live(args, settings, sinks)


def cmd_stream(args: argparse.Namespace) -> int:
    from lostface.stream.mpegts import check_url

    settings = _settings(args)
    check_url(args.url)

    def sinks(source) -> list:  # noqa: ANN001
        return [("stream", _stream_sink(args.url, source, settings))]

    return _run_live(args, settings, sinks)


LIVE_COMMANDS = {"serve": cmd_serve, "vcam": cmd_vcam, "stream": cmd_stream}
