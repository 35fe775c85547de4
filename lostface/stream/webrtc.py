"""`lostface serve`: an aiortc server and its web page. The browser sends its camera, gets
the restored video back, and steers the session over a data channel.

    server = LiveServer(settings, reference_images=[("me", bgr)])
    await server.start()            # http://127.0.0.1:8080/ ; POST /offer {"sdp", "type"}
    ...
    await server.close()

Per session: the remote track is pumped on the event loop into a one-frame slot (newest
wins); a session thread converts, runs the zero-delay pipeline (keyframes on the pipeline's
own worker thread) and hands the result back with `call_soon_threadsafe`; the outgoing
track's `recv()` only awaits that hand-over. Nothing blocking runs on the event loop.
"Capture my face now" ({"capture": NAME} on the data channel): the session thread copies every
few frames for CAPTURE_SECONDS to a capture thread (lostface.stream.capture), which judges them
and saves the references (LiveServer capture_dir); the pipeline then adopts them.
ICE uses no STUN/TURN server unless live.ice_servers names some.

Every request is checked before anything is built (lostface/stream/guard.py): the Host
header against DNS rebinding, the Origin and content type of POST /offer against other web
pages, the token, then the offer's JSON and SDP in full. A session slot is taken before the
first await and given back on every path out, so at most live.max_sessions pipelines exist
however many offers arrive at once. A watchdog lets go of a peer that never connects
(live.connect_timeout), sends no first frame (live.first_frame_timeout) or stops sending
(live.idle_timeout).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import fractions
import gc
import hmac
import ipaddress
import json
import logging
import ssl
import threading
import time
import uuid
from collections.abc import Collection
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import av
import numpy as np
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from lostface.config import LiveSettings, Settings
from lostface.errors import ConfigError, InputError
from lostface.pipeline import Pipeline
from lostface.stages import Detector, Restorer
from lostface.stream.capture import LiveCapture, builder_for, how_to_use
from lostface.stream.guard import (
    NOT_SDP,
    Refused,
    ServerLog,
    check_host,
    check_offer,
    check_origin,
    clip,
    parse_offer_json,
)
from lostface.stream.live import LatencyMeter, close_pipeline, live_pipeline, process_frame
from lostface.stream.sources import SourceEnded, TrackSource

if TYPE_CHECKING:
    from lostface.restore.identity import IdentityGate
    from lostface.restore.reference import Reference

log = logging.getLogger(__name__)

STATS_PERIOD_S = 1.0
WATCH_PERIOD_S = 0.2  # how often the watchdog looks at a session
SHUTDOWN_TIMEOUT_S = 10.0  # server.close(): how long requests in flight may still run
RELEASE_DELAY_S = 0.5  # after a session closes, when its memory is given back (release_memory)
CAPTURE_SECONDS = 2.0  # "capture my face now": how long the camera is looked at


def _glibc() -> Any:
    """The C library when it is glibc (malloc_trim, mallopt); None elsewhere."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # noqa: B018 - glibc has both
    except (OSError, AttributeError):  # macOS, Windows, musl: the defaults stay
        return None
    return libc


_LIBC = _glibc()
M_ARENA_MAX = -8  # glibc mallopt parameter
SERVER_ARENAS = 2


def tune_malloc() -> None:
    """For a long-running server (`lostface serve` calls it before any session): two malloc
    arenas instead of glibc's eight per core. Every session's threads (decoder, encoder,
    pipeline) free frame-sized blocks; spread over many arenas they fragment them, and
    resident memory grew about 25 MB per 100 sessions even with malloc_trim after each; with
    two it grew 4 MB over 120 (bench/live_soak.py), at the same CPU time per session.
    (Mapping every block of 128 KiB or more instead kept it flat but cost 10% more CPU.)"""
    if _LIBC is not None:
        _LIBC.mallopt(M_ARENA_MAX, SERVER_ARENAS)


def release_memory() -> None:
    """After sessions close: collect their peer connections (aiortc's objects form cycles,
    which hold codec threads and buffers until a collection) and give free heap pages back
    to the system (glibc malloc_trim)."""
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def ice_configuration(live: LiveSettings) -> RTCConfiguration:
    """No STUN/TURN server unless configured: nothing leaves the machine by default."""
    servers = [
        RTCIceServer(
            urls=url,
            username=live.ice_username or None,
            credential=live.ice_credential or None,
        )
        for url in live.ice_servers
    ]
    return RTCConfiguration(iceServers=servers)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_exposure(live: LiveSettings) -> None:
    """Binding beyond loopback needs a token (anyone on the network could use the server)."""
    if not is_loopback(live.host) and not live.token:
        raise ConfigError(
            f"Serving on {live.host} (not loopback) needs a token: set live.token "
            "(e.g. --token SECRET), and open the page as /?token=SECRET."
        )
    for key in ("tls_cert", "tls_key"):
        path = getattr(live, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"live.{key} {path} does not exist; give a PEM file.")


class _LockedDetector(Detector):
    """One detector shared by the sessions: its buffers are reused, so calls take turns.
    The server owns it: a session's pipeline closing does not close it."""

    def __init__(self, inner: Detector) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def detect(self, image: np.ndarray):
        with self._lock:
            return self.inner.detect(image)


class ProcessedTrack(MediaStreamTrack):
    """The outgoing track: recv() awaits the newest processed frame (no work in here)."""

    kind = "video"

    def __init__(self, meter: LatencyMeter) -> None:
        super().__init__()
        self.meter = meter
        self._frame: av.VideoFrame | None = None
        self._t_capture = 0.0
        self._ready = asyncio.Event()
        self.delivered = 0
        self.replaced = 0

    def deliver(self, frame: av.VideoFrame, t_capture: float) -> None:
        """Called on the loop (via call_soon_threadsafe): newest frame wins."""
        if self._frame is not None:
            self.replaced += 1
        self._frame, self._t_capture = frame, t_capture
        self._ready.set()

    def end(self) -> None:
        self.stop()
        self._ready.set()

    async def recv(self) -> av.VideoFrame:
        while self._frame is None:
            if self.readyState != "live":
                raise MediaStreamError
            await self._ready.wait()
            self._ready.clear()
        if self.readyState != "live":
            raise MediaStreamError
        frame, self._frame = self._frame, None
        self.meter.add(time.monotonic() - self._t_capture)
        self.delivered += 1
        return frame


class Session:
    """One browser (or client) connection: its peer, its pipeline, its thread."""

    def __init__(self, server: LiveServer, pc: RTCPeerConnection, pipe: Pipeline | None) -> None:
        self.id = uuid.uuid4().hex[:8]
        self.server = server
        self.pc = pc
        self.pipe = pipe
        self.loop = asyncio.get_running_loop()
        self.meter = LatencyMeter()
        self.out = ProcessedTrack(self.meter)
        self.source: TrackSource | None = None
        self.channel = None
        self.closed = False
        self._closing: asyncio.Future | None = None
        self.error: str = ""
        self._tasks: list[asyncio.Task] = []
        self._thread: threading.Thread | None = None
        self._controls: dict = {}
        self._controls_lock = threading.Lock()
        self._capture: LiveCapture | None = None
        self.last_capture: LiveCapture | None = None  # the last one finished (its timings)
        self.captured: dict[str, list[Reference]] = {}  # people captured in this session
        self.state = {
            "restore": True,
            "overlay": bool(pipe.debug_overlay) if pipe is not None else False,
            "reference": "",
            # the last capture: state (capturing, building, learned, failed), text for the
            # page, and where its photos were saved (saved, use: the --reference to give)
            "capture": {"state": "", "text": "", "name": "", "saved": "", "use": ""},
            "captured": [],  # names captured in this session (the page adds them to its list)
        }

    # -- set-up -------------------------------------------------------------------------
    def attach(self, track: MediaStreamTrack) -> None:
        self.source = TrackSource(track)
        self._tasks.append(asyncio.ensure_future(self.source.pump()))
        if self.pipe is not None:
            self._thread = threading.Thread(
                target=self._work, name=f"lostface-session-{self.id}", daemon=True
            )
            self._thread.start()

    def start_timers(self) -> None:
        self._tasks.append(asyncio.ensure_future(self._watch()))
        self._tasks.append(asyncio.ensure_future(self._stats_loop()))

    async def _watch(self) -> None:
        """Let the peer go when it never connects, connects but sends no first frame (it
        would hold a slot forever), or its video ends (BYE, track ended) or stops arriving
        (closed tab, crashed browser, lost network)."""
        live = self.server.live
        started = time.monotonic()
        connected_at: float | None = None
        seen, last = 0, started
        while not self.closed:
            await asyncio.sleep(WATCH_PERIOD_S)
            now, source = time.monotonic(), self.source
            if source is not None and source.slot._closed is not None:
                log.info("Session %s: the peer's video ended; closing.", self.id)
                break
            if connected_at is None:
                if self.pc.connectionState == "connected":
                    connected_at = last = now
                elif now - started > live.connect_timeout:
                    log.warning(
                        "Session %s: the peer did not connect within %.0f s "
                        "(live.connect_timeout); closing.",
                        self.id,
                        live.connect_timeout,
                    )
                    break
                continue
            if source is None:  # relay: no frames counted here
                continue
            if source.received != seen:
                seen, last = source.received, now
            elif seen == 0 and now - connected_at > live.first_frame_timeout:
                log.warning(
                    "Session %s: the peer connected but sent no video within %.0f s "
                    "(live.first_frame_timeout); closing.",
                    self.id,
                    live.first_frame_timeout,
                )
                break
            elif seen > 0 and now - last > live.idle_timeout:
                log.info(
                    "Session %s: no video from the peer for %.0f s; closing.", self.id, now - last
                )
                break
        await self.close()

    # -- the session thread -------------------------------------------------------------
    def _work(self) -> None:
        assert self.source is not None and self.pipe is not None
        badge = self.server.settings.live.badge
        while not self.closed:
            try:
                got = self.source.get(0.25)
            except SourceEnded:
                return
            if got is None:
                continue
            cap, vf = got
            try:
                self._apply_controls()
                self._tend_capture(cap.frame.image)
                out = process_frame(self.pipe, cap.frame, badge)
                new = av.VideoFrame.from_ndarray(out.image, format="bgr24")
            except Exception as exc:
                log.exception("Session %s: the pipeline failed; closing the session.", self.id)
                self.error = f"processing failed: {exc}"
                self._call(self._close_soon)
                return
            new.pts, new.time_base = vf.pts, vf.time_base
            self._call(self.out.deliver, new, cap.t_capture)

    def _call(self, fn, *args) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is gone (shutdown)
            self.closed = True

    def _close_soon(self) -> None:
        asyncio.ensure_future(self.close())

    def control(self, message: dict) -> None:
        """From the data channel (loop thread): {"restore": bool}, {"overlay": bool},
        {"reference": NAME or ""}, {"capture": NAME}; applied by the session thread between
        frames."""
        with self._controls_lock:
            for key in ("restore", "overlay"):
                if isinstance(message.get(key), bool):
                    self._controls[key] = message[key]
                    self.state[key] = message[key]
            ref = message.get("reference")
            if isinstance(ref, str) and (
                ref == "" or ref in self.server.reference_names or ref in self.captured
            ):
                self._controls["reference"] = ref
                self.state["reference"] = ref
            name = message.get("capture")
            if isinstance(name, str):
                self._controls["capture"] = name

    def _apply_controls(self) -> None:
        with self._controls_lock:
            pending, self._controls = self._controls, {}
        if not pending or self.pipe is None:
            return
        if "restore" in pending:
            self.pipe.restore_enabled = pending["restore"]
        if "overlay" in pending:
            self.pipe.debug_overlay = pending["overlay"]
        if "reference" in pending:
            name = pending["reference"]
            engines = self.server.engines_for(name, self.captured)
            if engines is not None:
                self.pipe.stages.painter.use(*engines)  # people learned so far carry over
                for person, refs in self.captured.items():
                    if name in ("", person):  # captured people come along as given ones do
                        self.pipe.adopt(person, refs)
                self.pipe.stages.policy.reset()  # repaint every face with the new reference
        if "capture" in pending:
            self._start_capture(pending["capture"])

    # -- "capture my face now" ------------------------------------------------------------
    def _start_capture(self, name: str) -> None:
        """Look at the camera for CAPTURE_SECONDS: the frames' open faces become `name`'s
        references (lostface.stream.capture; judged on the capture's own thread)."""
        if self._capture is not None:
            return  # one at a time; the state says which is under way
        try:
            builder = builder_for(name, self.server.settings, self.server.detector)
        except InputError as exc:
            self._capture_state("failed", str(exc), str(name)[:40])
            return
        self._capture = LiveCapture(builder, CAPTURE_SECONDS, save_dir=self.server.capture_dir)
        self._capture_state(
            "capturing",
            f"capturing {builder.name}: look at the camera without the mask",
            builder.name,
        )
        log.info("Session %s: capturing %s.", self.id, builder.name)

    def _tend_capture(self, image: np.ndarray) -> None:
        """On every frame of the session thread: hand the capture its frame (a copy of every
        few), and once its references are built, paint its person from them."""
        capture = self._capture
        if capture is None or self.pipe is None:
            return
        if capture.collecting:
            capture.offer(image)
            if not capture.collecting:
                self._capture_state("building", f"learning {capture.name}", capture.name)
            return
        if not capture.done.is_set():
            return
        self._capture = None
        self.last_capture = capture
        result = capture.result
        if result is None:
            log.info("Session %s: capture of %s: %s", self.id, capture.name, capture.error)
            self._capture_state("failed", capture.error, capture.name)
            return
        self.pipe.adopt(result.name, result.references)  # on the painter's thread
        self.captured[result.name] = result.references
        text = result.summary()
        saved = use = ""
        if result.saved is not None:
            saved, use = str(result.saved), how_to_use(result)
        elif capture.save_error:
            text += f"; not saved: {capture.save_error}"
        with self._controls_lock:
            self.state["captured"] = list(self.captured)
        self._capture_state("learned", text, result.name, saved, use)
        log.info(
            "Session %s: %s in %.2f s (frames: %s)%s.",
            self.id,
            text,
            result.seconds,
            ", ".join(f"{k} {v}" for k, v in result.seen.items() if v),
            f"; saved in {saved}: give {use} to a later run" if saved else "",
        )

    def _capture_state(
        self, state: str, text: str, name: str, saved: str = "", use: str = ""
    ) -> None:
        with self._controls_lock:
            self.state["capture"] = {
                "state": state,
                "text": text,
                "name": name,
                "saved": saved,
                "use": use,
            }

    # -- readout ------------------------------------------------------------------------
    def stats(self) -> dict:
        s = self.meter.summary()
        received = self.source.received if self.source else 0
        return {
            "type": "stats",
            "fps": s["fps"],
            "latency_p50_ms": s["p50_ms"],
            "latency_p95_ms": s["p95_ms"],
            "frames_in": received,
            "frames_out": self.out.delivered,
            **self.state,
        }

    async def _stats_loop(self) -> None:
        while not self.closed:
            await asyncio.sleep(STATS_PERIOD_S)
            ch = self.channel
            if ch is not None and ch.readyState == "open":
                ch.send(json.dumps(self.stats()))

    def hello(self) -> str:
        return json.dumps(
            {
                "type": "hello",
                "references": self.server.reference_names,
                "capture_seconds": CAPTURE_SECONDS,
                **self.state,
            }
        )

    # -- tear-down ----------------------------------------------------------------------
    async def close(self) -> None:
        """Stop everything the session owns; its slot is given back only when all of it is
        gone (so the limit bounds threads and pipelines, not just entries). A second caller
        waits for the first one's close."""
        if self._closing is not None:
            await asyncio.shield(self._closing)
            return
        self._closing = self.loop.create_future()
        self.closed = True
        current = asyncio.current_task()
        try:
            for t in self._tasks:
                if t is not current:
                    t.cancel()
            if self.source is not None:
                self.source.close()
            if self._capture is not None:
                self._capture.cancel()
            self.out.end()
            loop = asyncio.get_running_loop()
            if self._thread is not None:
                await loop.run_in_executor(None, self._thread.join, 10)
            if self.pipe is not None:
                await loop.run_in_executor(None, close_pipeline, self.pipe)
            await self.pc.close()
            for t in self._tasks:
                if t is not current and not t.done():
                    try:
                        await t
                    except (asyncio.CancelledError, Exception):
                        pass
        finally:
            self._tasks.clear()
            self.channel = None
            self.source = None
            self.pipe = None
            self.server.sessions.pop(self.id, None)
            self.server.release_soon()
            self._closing.set_result(None)
            log.info("Session %s closed (%d left).", self.id, len(self.server.sessions))


class LiveServer:
    """The aiohttp app (GET /, POST /offer) and the sessions it runs."""

    def __init__(
        self,
        settings: Settings,
        references: list[str | Path] | None = None,
        reference_images: list[tuple[str, np.ndarray]] | None = None,
        relay: bool = False,
        capture_dir: str | Path | None = None,
    ) -> None:
        check_exposure(settings.live)
        self.settings = settings
        self.live = settings.live
        self.relay = relay  # benchmark baseline: send the received track straight back
        self.sessions: dict[str, Session] = {}
        self.refused = 0  # offers answered 503 because every slot was taken
        self.peak = 0  # most slots ever in use at once (sessions + offers being set up)
        self.pipelines_built = 0
        self._pending = 0  # slots held by offers whose session is being set up
        self._closing = False
        self._release: asyncio.TimerHandle | None = None
        self._runner: web.AppRunner | None = None
        self._bound_host = self.live.host
        self._scheme = "http"
        self.url = ""
        # where the page's captures are saved (DIR/NAME/*.png, for --reference NAME=DIR/NAME);
        # None: captures are only used in their session
        self.capture_dir = Path(capture_dir).expanduser().absolute() if capture_dir else None
        self._references = list(references or [])
        self._reference_images = list(reference_images or [])
        self._detector: Any = None
        self._bank: Any = None
        self._gate: IdentityGate | None = None  # built in prepare(); sessions take fresh() copies
        self.reference_names: list[str] = []
        self.app = web.Application(
            client_max_size=self.live.max_offer_bytes, middlewares=[self._guard]
        )
        self.app.router.add_get("/", self._index)
        self.app.router.add_get("/app.js", self._script)
        self.app.router.add_post("/offer", self._offer)

    # -- models, built once -----------------------------------------------------------------
    def prepare(self) -> None:
        """Load the detector and align the reference photos once (blocking; before start)."""
        if self.relay or self._detector is not None:
            return
        from lostface.factory import build_detector, load_references, warn_without_references

        self._detector = _LockedDetector(build_detector(self.settings))
        bank = load_references(
            self.settings, self._detector, self._references, self._reference_images
        )
        warn_without_references(self.settings, bank)
        self._bank = bank
        from lostface.registry import build_gate

        # dlib's models load and the references are embedded here, once: sessions copy it.
        # Built without references too: a session learns people from the footage
        # (self-reference) or from a capture, and tells them from everyone else
        self._gate = build_gate(self.settings, bank, learns=True)
        # the page offers each person (NAME of NAME=PATH; a bare PATH's file name)
        self.reference_names = (
            list(dict.fromkeys(_person(r) for r in bank.references)) if bank else []
        )

    @property
    def detector(self) -> Detector:
        """The detector the sessions share (its calls take turns); built in prepare()."""
        return self._detector

    def engines_for(
        self, name: str, captured: Collection[str] = ()
    ) -> tuple[Restorer, IdentityGate | None] | None:
        """A new restorer and identity gate for one session, using one person's references
        by name or everyone's for '' (None for a name that is neither a reference nor one of
        `captured`, the people the session captured, which the session adopts afterwards).
        Both keep state per face, so sessions never share them; the reference photos are
        aligned once, in prepare()."""
        from lostface.registry import build_restorer
        from lostface.restore.reference import ReferenceBank

        bank = self._bank
        if name:
            refs = [r for r in (bank.references if bank else []) if _person(r) == name]
            if not refs and name not in captured:
                return None
            bank = ReferenceBank(refs)
        gate = None
        if self._gate is not None:
            gate = self._gate.fresh(set(bank.people()) if bank is not None else set())
        # a session can capture a face at any time: its restorer must be able to learn it
        return build_restorer(self.settings, bank, learns=True), gate

    def _new_pipeline(self) -> Pipeline:
        """Per session: fresh tracker, policy, painter and compositor state; the detector and
        the aligned references are shared."""
        from lostface.factory import build_stages

        engines = self.engines_for("")
        assert engines is not None  # '' names everyone
        restorer, gate = engines
        stages = build_stages(self.settings, detector=self._detector, restorer=restorer)
        stages.painter.use(restorer, gate)
        return live_pipeline(self.settings, stages, self.live.background_detection)

    def _build_pipeline(self) -> asyncio.Future:
        """_new_pipeline on a worker thread. A request given up while it builds (server
        shutdown) closes the pipeline when it is done, instead of leaking its threads."""
        loop = asyncio.get_running_loop()
        self.pipelines_built += 1
        fut = loop.run_in_executor(None, self._new_pipeline)

        def _orphaned(f: asyncio.Future) -> None:
            if not f.cancelled() and f.exception() is None:
                loop.run_in_executor(None, close_pipeline, f.result())

        async def _wait() -> Pipeline:
            try:
                return await asyncio.shield(fut)
            except asyncio.CancelledError:
                fut.add_done_callback(_orphaned)
                raise

        return asyncio.ensure_future(_wait())

    def release_soon(self) -> None:
        """release_memory once the closed session's last references are gone (the tasks that
        closed it have finished); one call for sessions that close together."""
        if self._release is not None:
            return
        loop = asyncio.get_running_loop()

        def _run() -> None:
            self._release = None
            loop.run_in_executor(None, release_memory)

        self._release = loop.call_later(RELEASE_DELAY_S, _run)

    def in_use(self) -> int:
        """Session slots taken: live sessions and offers being set up."""
        return len(self.sessions) + self._pending

    # -- HTTP ---------------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """Every request: the Host check first; client errors become one JSON sentence and
        one WARNING line; an error of this server one ERROR line (traceback at DEBUG)."""
        try:
            check_host(
                request.headers.get("Host"), self._bound_host, self.live.allowed_hosts, self.url
            )
            return await handler(request)
        except Refused as exc:
            self._log_refusal(request, exc.status, exc.message)
            return self._error(exc.status, exc.message)
        except web.HTTPException as exc:
            if 400 <= exc.status < 500:
                self._log_refusal(request, exc.status, exc.reason)
            raise
        except Exception as exc:
            log.error(
                "Error answering %s %s: %s: %s",
                request.method,
                clip(request.path),
                type(exc).__name__,
                clip(exc, 160),
            )
            log.debug("Traceback of the error above", exc_info=exc)
            return self._error(500, "The server failed on this request; its log says why.")

    @staticmethod
    def _log_refusal(request: web.Request, status: int, message: str) -> None:
        log.warning(
            "Refused %s %s from %s: %d %s",
            request.method,
            clip(request.path),
            request.remote,
            status,
            message,
        )

    async def _index(self, request: web.Request) -> web.StreamResponse:
        page = resources.files("lostface.stream").joinpath("page", "index.html").read_text()
        return web.Response(text=page, content_type="text/html")

    async def _script(self, request: web.Request) -> web.StreamResponse:
        script = resources.files("lostface.stream").joinpath("page", "app.js").read_text()
        ice = [{"urls": u} for u in self.live.ice_servers]
        script = script.replace("/*ICE_SERVERS*/[]", json.dumps(ice))
        return web.Response(text=script, content_type="application/javascript")

    def _authorised(self, request: web.Request) -> bool:
        if not self.live.token:
            return True
        given = request.query.get("token", "")
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:]
        return hmac.compare_digest(given.encode(), self.live.token.encode())

    @staticmethod
    def _error(status: int, message: str) -> web.Response:
        return web.json_response({"error": message}, status=status)

    async def _offer(self, request: web.Request) -> web.StreamResponse:
        """POST /offer: everything is checked before a slot is taken, the slot is taken
        before the first await after the checks, and nothing is built before both."""
        page_origin = f"{self._scheme}://{request.headers.get('Host', '')}"
        check_origin(request.headers.get("Origin"), page_origin, self.live.allowed_origins)
        if request.content_type != "application/json":
            raise Refused(
                415,
                f"The offer was sent as {clip(request.content_type)}; send it as "
                "Content-Type: application/json.",
            )
        if not self._authorised(request):
            raise Refused(401, "Missing or wrong token; open the page as /?token=SECRET.")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise Refused(
                413, "The offer is too large; send a WebRTC offer of a few KiB."
            ) from None
        sdp = parse_offer_json(body)
        check_offer(sdp)
        if self._closing:
            raise Refused(503, "The server is shutting down; try again when it is back.")
        if self.in_use() >= self.live.max_sessions:
            self.refused += 1
            raise Refused(
                503,
                f"The server is full ({self.live.max_sessions} sessions); try again later "
                "or raise live.max_sessions.",
            )
        self._pending += 1  # the slot is ours from here; no await came in between
        self.peak = max(self.peak, self.in_use())
        held = [True]

        def hand_over() -> None:  # the session now holds the slot (or nobody does)
            if held[0]:
                held[0] = False
                self._pending -= 1

        try:
            return await self._open_session(sdp, hand_over)
        finally:
            hand_over()

    async def _open_session(self, sdp: str, hand_over: Any) -> web.StreamResponse:
        pipe = None
        if not self.relay:
            pipe = await self._build_pipeline()
        pc = RTCPeerConnection(configuration=ice_configuration(self.live))
        session = Session(self, pc, pipe)
        self.sessions[session.id] = session
        hand_over()
        video: list[MediaStreamTrack] = []

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            if track.kind == "video" and not video:
                video.append(track)

        @pc.on("datachannel")
        def _on_channel(channel) -> None:
            session.channel = channel
            channel.send(session.hello())

            @channel.on("message")
            def _on_message(message) -> None:
                if isinstance(message, str) and len(message) < 4096:
                    try:
                        msg = json.loads(message)
                    except (ValueError, RecursionError):
                        return
                    if isinstance(msg, dict):
                        session.control(msg)

        @pc.on("connectionstatechange")
        async def _on_state() -> None:
            log.debug("Session %s: %s", session.id, pc.connectionState)
            if pc.connectionState in ("failed", "closed"):
                await session.close()

        try:
            await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            if not video:
                raise Refused(400, "The offer has no video track; send the camera's video.")
            if self.relay:
                pc.addTrack(video[0])
            else:
                session.attach(video[0])
                pc.addTrack(session.out)
            await pc.setLocalDescription(await pc.createAnswer())
            if self._closing:
                raise Refused(503, "The server is shutting down; try again when it is back.")
        except BaseException as exc:
            await asyncio.shield(session.close())
            if isinstance(exc, Exception) and not isinstance(exc, Refused):
                log.debug("aiortc refused an offer the checks passed", exc_info=exc)
                raise Refused(400, NOT_SDP) from None
            raise
        session.start_timers()
        log.info(
            "Session %s started (%d of %d).", session.id, len(self.sessions), self.live.max_sessions
        )
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    # -- life cycle ---------------------------------------------------------------------
    async def start(self, host: str | None = None, port: int | None = None) -> str:
        """Bind and serve; returns the page's URL. port 0 picks a free port."""
        host = self.live.host if host is None else host
        port = self.live.port if port is None else port
        await asyncio.get_running_loop().run_in_executor(None, self.prepare)
        ctx = None
        if self.live.tls_cert:
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(self.live.tls_cert, self.live.tls_key)
        elif not is_loopback(host):
            log.warning(
                "Serving plain HTTP on %s: browsers on other machines share a camera only over "
                "HTTPS; set live.tls_cert and live.tls_key.",
                host,
            )
        self._runner = web.AppRunner(
            self.app,
            access_log=logging.getLogger("aiohttp.access"),  # INFO lines: shown with -v
            logger=ServerLog(log),
            shutdown_timeout=SHUTDOWN_TIMEOUT_S,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, ssl_context=ctx)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise ConfigError(
                f"Cannot listen on {host}:{port} ({exc.strerror}); choose another --port."
            ) from None
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._bound_host = host
        self._scheme = "https" if ctx else "http"
        shown = f"[{host}]" if ":" in host else host
        self.url = f"{self._scheme}://{shown}:{bound}/"
        return self.url

    async def close(self) -> None:
        """Stop listening, let offers in flight finish (they are answered 503), then close
        every session. Safe to call twice."""
        self._closing = True
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()
        while self.sessions:
            await asyncio.gather(*(s.close() for s in list(self.sessions.values())))
        if self._release is not None:
            self._release.cancel()
            self._release = None


# -- a Python peer (tests, benchmarks, smoke checks) ---------------------------------------
class FrameTrack(VideoStreamTrack):
    """Sends BGR frames from a list at `rate` frames/s (loops over them)."""

    kind = "video"

    def __init__(self, images: list[np.ndarray], rate: float = 30.0, stamp=None) -> None:
        super().__init__()
        self.images = images
        self.rate = rate
        self.stamp = stamp  # optional callable(image, index) marking each frame
        self.sent = 0
        self.sent_at: dict[int, float] = {}
        self._t0: float | None = None

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._t0 is None:
            self._t0 = time.monotonic()
        due = self._t0 + self.sent / self.rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        i = self.sent
        img = self.images[i % len(self.images)]
        if self.stamp is not None:
            img = img.copy()
            self.stamp(img, i)
        frame = av.VideoFrame.from_ndarray(img, format="bgr24")
        frame.pts = int(i * 90000 / self.rate)
        frame.time_base = fractions.Fraction(1, 90000)
        self.sent_at[i] = time.monotonic()
        self.sent += 1
        return frame


async def connect(
    url: str,
    track: MediaStreamTrack,
    token: str = "",
    on_frame=None,
    channel_messages: list | None = None,
    headers: dict[str, str] | None = None,
):
    """A client peer: offer `track` to `url` (POST /offer), call on_frame(av.VideoFrame, t) for
    every frame that comes back. Returns (pc, receive task, data channel). A refused offer
    raises ConnectionRefusedError("STATUS: sentence")."""
    import aiohttp

    pc = RTCPeerConnection(configuration=RTCConfiguration(iceServers=[]))
    pc.addTrack(track)
    channel = pc.createDataChannel("control")
    if channel_messages is not None:

        @channel.on("message")
        def _msg(m) -> None:
            channel_messages.append(json.loads(m))

    received: asyncio.Future = asyncio.get_running_loop().create_future()

    @pc.on("track")
    def _on_track(remote: MediaStreamTrack) -> None:
        if not received.done():
            received.set_result(remote)

    await pc.setLocalDescription(await pc.createOffer())
    headers = dict(headers or {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as http:
        async with http.post(
            url.rstrip("/") + "/offer",
            json={"sdp": pc.localDescription.sdp, "type": pc.localDescription.type},
            headers=headers,
        ) as resp:
            answer = await resp.json()
            if resp.status != 200:
                await pc.close()
                raise ConnectionRefusedError(f"{resp.status}: {answer.get('error')}")
    await pc.setRemoteDescription(RTCSessionDescription(**answer))

    async def _receive() -> int:
        remote = await received
        n = 0
        try:
            while True:
                f = await remote.recv()
                n += 1
                if on_frame is not None:
                    on_frame(f, time.monotonic())
        except MediaStreamError:
            return n

    return pc, asyncio.ensure_future(_receive()), channel


# -- frame index barcode (end-to-end latency without clocks in the stream) ----------------
BARCODE_BITS = 16
BARCODE_CELL = 16


def stamp_index(image: np.ndarray, index: int, y: int = 0) -> None:
    """Write index (12 bits) + a 4-bit check as black/white cells in the top-left corner."""
    value = (index & 0xFFF) | ((index & 0xFFF) % 13) << 12
    c = BARCODE_CELL
    for b in range(BARCODE_BITS):
        image[y : y + c, b * c : (b + 1) * c] = 255 if (value >> b) & 1 else 0


def read_index(image: np.ndarray, y: int = 0) -> int | None:
    """The index stamped by stamp_index, or None when the cells do not check out."""
    c = BARCODE_CELL
    q = c // 4
    value = 0
    for b in range(BARCODE_BITS):
        cell = image[y + q : y + c - q, b * c + q : (b + 1) * c - q]
        if cell.mean() > 127:
            value |= 1 << b
    index = value & 0xFFF
    return index if (value >> 12) == index % 13 else None


def _person(reference) -> str:
    """How the page names a reference's person: its NAME, or a bare path's file name."""
    if reference.person and reference.person != reference.name:
        return str(reference.person)
    return Path(reference.name).name
