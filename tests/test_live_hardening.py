"""`lostface serve` probed as an attacker on loopback would, with real aiortc peers and real
HTTP requests (bounded loops): the session limit holds for concurrent offers, silent peers and
peers that never connect are let go and their slot is used again, every malformed request is
answered 4xx with one sentence and one WARNING line (never a traceback), and SIGTERM or SIGINT
closes every session and exits 0."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import aiohttp
import cv2
import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamTrack

from lostface.config import load_settings
from lostface.stream.guard import host_allowed, normalise_origin
from lostface.stream.webrtc import FrameTrack, LiveServer, connect
from tests.live_helpers import ServerThread

LIGHT = ["detect.input_size=128"]  # the pipeline runs for real, on a small detector input


@pytest.fixture(scope="module")
def frame(astronaut_bgr) -> np.ndarray:
    return cv2.resize(astronaut_bgr, (320, 240))


class SilentTrack(MediaStreamTrack):
    """A camera that never delivers a frame: the peer connects, then sends nothing."""

    kind = "video"

    async def recv(self):
        await asyncio.Event().wait()


async def _until(pred, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(step)
    return True


def _session_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("lostface-session")]


# -- the session limit ------------------------------------------------------------------------
def test_concurrent_offers_never_exceed_the_limit(frame):
    """Eight offers at once against max_sessions=2: two sessions, six 503s with one sentence;
    the slots come back when the sessions end."""
    settings = load_settings(overrides=[*LIGHT, "live.max_sessions=2"])

    async def main():
        server = LiveServer(settings)
        url = await server.start(port=0)
        most = [0]
        watching = True

        async def watch() -> None:
            while watching:
                most[0] = max(most[0], len(server.sessions), server.in_use())
                await asyncio.sleep(0.005)

        watcher = asyncio.ensure_future(watch())
        got = [asyncio.Event() for _ in range(8)]
        results = await asyncio.gather(
            *(
                connect(url, FrameTrack([frame], 30.0), on_frame=lambda f, t, e=e: e.set())
                for e in got
            ),
            return_exceptions=True,
        )
        accepted = [r for r in results if isinstance(r, tuple)]
        refused = [str(r) for r in results if isinstance(r, ConnectionRefusedError)]
        others = [r for r in results if not isinstance(r, (tuple, ConnectionRefusedError))]
        served = len(server.sessions)
        flowing = [
            await _until(e.is_set, 30)
            for e, r in zip(got, results, strict=True)
            if isinstance(r, tuple)
        ]
        for pc, task, _ in accepted:
            await pc.close()
            task.cancel()
        freed = await _until(lambda: server.in_use() == 0, 15)
        # the slots are usable again
        got = asyncio.Event()
        pc, task, _ = await connect(url, FrameTrack([frame], 30.0), on_frame=lambda f, t: got.set())
        await asyncio.wait_for(got.wait(), 30)
        await pc.close()
        task.cancel()
        watching = False
        await watcher
        peak = server.peak
        await server.close()
        return accepted, refused, others, served, freed, most[0], peak, flowing

    accepted, refused, others, served, freed, most, peak, flowing = asyncio.run(main())
    assert not others, others
    assert len(accepted) == 2 and served == 2 and flowing == [True, True]
    assert len(refused) == 6
    for r in refused:
        assert r.startswith("503: The server is full (2 sessions)"), r
    assert most <= 2 and peak == 2
    assert freed


def test_closing_the_server_with_offers_in_flight_leaves_nothing(frame):
    """Offers still being set up when the server closes are answered (or cut off) and their
    slots, peers and pipelines are gone afterwards."""
    settings = load_settings(overrides=[*LIGHT, "live.max_sessions=3"])

    async def main():
        server = LiveServer(settings)
        url = await server.start(port=0)
        offers = [asyncio.ensure_future(connect(url, FrameTrack([frame], 30.0))) for _ in range(3)]
        await _until(lambda: server.in_use() > 0, 10, step=0.001)
        in_flight = server.in_use()
        await server.close()
        results = await asyncio.gather(*offers, return_exceptions=True)
        for r in results:
            if isinstance(r, tuple):
                await r[0].close()
                r[1].cancel()
        return in_flight, results, len(server.sessions), server.in_use()

    in_flight, results, sessions, in_use = asyncio.run(main())
    assert in_flight > 0
    assert sessions == 0 and in_use == 0
    for r in results:  # answered (then closed), refused while shutting down, or cut off
        if isinstance(r, ConnectionRefusedError):
            assert str(r).startswith("503: The server is shutting down"), r
        else:
            assert isinstance(r, (tuple, aiohttp.ClientError)), r
    deadline = time.monotonic() + 10
    while _session_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _session_threads() == []


# -- peers that hold a slot without using it --------------------------------------------------
def test_a_silent_peer_is_let_go_and_its_slot_used_again(frame, caplog):
    """A peer connects and never sends a frame: freed once live.first_frame_timeout passes
    (not before), then a real client gets the only slot."""
    settings = load_settings(
        overrides=[*LIGHT, "live.max_sessions=1", "live.first_frame_timeout=2.0"]
    )

    async def main():
        server = LiveServer(settings)
        url = await server.start(port=0)
        pc, task, _ = await connect(url, SilentTrack())
        connected = await _until(lambda: pc.connectionState == "connected", 15)
        t_connected = time.monotonic()
        held_at_1s = None
        await asyncio.sleep(1.0)
        held_at_1s = len(server.sessions)
        freed = await _until(lambda: server.in_use() == 0, 15)
        freed_after = time.monotonic() - t_connected
        closed_seen = await _until(lambda: pc.connectionState in ("closed", "failed"), 15)
        await pc.close()
        task.cancel()
        got = asyncio.Event()
        pc2, task2, _ = await connect(
            url, FrameTrack([frame], 30.0), on_frame=lambda f, t: got.set()
        )
        await asyncio.wait_for(got.wait(), 30)
        await pc2.close()
        task2.cancel()
        await server.close()
        return connected, held_at_1s, freed, freed_after, closed_seen

    with caplog.at_level(logging.INFO, logger="lostface"):
        connected, held_at_1s, freed, freed_after, closed_seen = asyncio.run(main())
    assert connected and held_at_1s == 1
    assert freed and 1.9 <= freed_after < 8, freed_after
    assert closed_seen  # the peer is told: its connection closes
    assert "sent no video within 2 s" in caplog.text


def test_a_peer_that_never_connects_is_let_go(frame):
    """An offer whose peer goes away before ICE (it never applies the answer) is freed once
    live.connect_timeout passes."""
    settings = load_settings(overrides=[*LIGHT, "live.max_sessions=1", "live.connect_timeout=2.0"])

    async def main():
        server = LiveServer(settings)
        url = await server.start(port=0)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(FrameTrack([frame], 30.0))
        await pc.setLocalDescription(await pc.createOffer())
        offer = {"sdp": pc.localDescription.sdp, "type": "offer"}
        await pc.close()  # gone: nobody answers the server's connectivity checks
        async with aiohttp.ClientSession() as http:
            async with http.post(url + "offer", json=offer) as r:
                status = r.status
        t0 = time.monotonic()
        held = len(server.sessions)
        freed = await _until(lambda: server.in_use() == 0, 15)
        took = time.monotonic() - t0
        await server.close()
        return status, held, freed, took

    status, held, freed, took = asyncio.run(main())
    assert status == 200 and held == 1
    assert freed and 1.5 <= took < 8, took


# -- malformed requests -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def offer_sdp(astronaut_bgr) -> str:
    """A real offer from an aiortc peer: video and a data channel, candidates gathered."""

    async def make() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTrack(FrameTrack([astronaut_bgr], 30.0))
        pc.createDataChannel("control")
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        await pc.close()
        return sdp

    return asyncio.run(make())


@pytest.fixture(scope="module")
def server_thread():
    settings = load_settings(
        overrides=[*LIGHT, "live.max_sessions=1", "live.max_offer_bytes=65536"]
    )
    with ServerThread(LiveServer(settings)) as srv:
        yield srv


def _without(sdp: str, prefix: str) -> str:
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith(prefix))


def _offer_body(sdp: str) -> bytes:
    return json.dumps({"sdp": sdp, "type": "offer"}).encode()


def _raw(port: int, head: str, body: bytes = b"") -> tuple[int, str]:
    """One HTTP request as bytes on a loopback socket: (status, body text)."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
        s.sendall(head.encode("latin-1") + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status_line, _, rest = data.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2].decode("utf-8", "replace")


def _post_head(port: int, body: bytes, **headers: str) -> str:
    fields = {
        "Host": f"127.0.0.1:{port}",
        "Content-Type": "application/json",
        "Content-Length": str(len(body)),
        "Connection": "close",
    }
    for k, v in headers.items():
        key = k.replace("_", "-")
        if v is None:
            fields.pop(key, None)
        else:
            fields[key] = v
    return "POST /offer HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"


DEEP = b"[" * 20000 + b"]" * 20000  # 40 KB: under the body limit, far over the recursion limit


def _cases(port: int, sdp: str) -> dict[str, tuple[str, bytes, int, str]]:
    """name -> (request head, body, status, words in the answer)."""
    video_port = re.search(r"^m=video (\d+)", sdp, re.M).group(1)  # type: ignore[union-attr]

    def post(body: bytes, **h: str) -> tuple[str, bytes]:
        return _post_head(port, body, **h), body

    def offer(text: str) -> tuple[str, bytes]:
        return post(_offer_body(text))

    return {
        "deep JSON": (*post(DEEP), 400, "not JSON"),
        "deep JSON in the sdp field": (
            *post(b'{"type": "offer", "sdp": ' + DEEP + b"}"),
            400,
            "not JSON",
        ),
        "not JSON": (*post(b"{garbage"), 400, "not JSON"),
        "no fingerprint": (*offer(_without(sdp, "a=fingerprint")), 400, "fingerprint"),
        "no ice-ufrag": (*offer(_without(sdp, "a=ice-ufrag")), 400, "ice-ufrag"),
        "no ice-pwd": (*offer(_without(sdp, "a=ice-pwd")), 400, "ice-pwd"),
        "no setup": (*offer(_without(sdp, "a=setup")), 400, "a=setup"),
        "m-line port 99999999": (
            *offer(sdp.replace(f"m=video {video_port} ", "m=video 99999999 ")),
            400,
            "port",
        ),
        "candidate port 99999999": (
            *offer(re.sub(r"(a=candidate:\S+ 1 udp \d+ \S+) \d+", r"\1 99999999", sdp)),
            400,
            "candidate",
        ),
        "no video m-line": (*offer(sdp.split("m=video")[0]), 400, "no media"),
        "video received only": (
            *offer(sdp.replace("a=sendrecv", "a=recvonly")),
            400,
            "no video track",
        ),
        "no codec": (
            *offer(sdp.replace("VP8/90000", "XYZ/90000").replace("H264/90000", "ABC/90000")),
            400,
            "codec",
        ),
        "SDP that is not SDP": (*offer("v=0\r\nthis is not sdp\r\n"), 400, "media"),
        "text/plain (no preflight)": (
            *post(_offer_body(sdp), Content_Type="text/plain"),
            415,
            "application/json",
        ),
        "no content type": (*post(_offer_body(sdp), Content_Type=None), 415, "application/json"),
        "foreign Origin": (
            *post(_offer_body(sdp), Origin="http://attacker.example"),
            403,
            "live.allowed_origins",
        ),
        "Origin null": (*post(_offer_body(sdp), Origin="null"), 403, "live.allowed_origins"),
        "Origin on another port": (
            *post(_offer_body(sdp), Origin="http://127.0.0.1:1"),
            403,
            "live.allowed_origins",
        ),
        "rebound Host": (
            *post(
                _offer_body(sdp),
                Host=f"attacker.example:{port}",
                Origin=f"http://attacker.example:{port}",
            ),
            403,
            "live.allowed_hosts",
        ),
        "rebound Host, page": (
            f"GET / HTTP/1.1\r\nHost: attacker.example:{port}\r\nConnection: close\r\n\r\n",
            b"",
            403,
            "live.allowed_hosts",
        ),
        "no Host": ("GET / HTTP/1.0\r\n\r\n", b"", 400, "Host"),
        "URL too long": (
            "GET /?" + "x" * 20000 + f" HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n",
            b"",
            400,
            "",
        ),
        "header too long": (
            f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: {'y' * 20000}\r\n\r\n",
            b"",
            400,
            "",
        ),
        "unknown path": (
            f"GET /nothing HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n",
            b"",
            404,
            "",
        ),
    }


CASE_NAMES = list(_cases(1, "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\n"))


@pytest.mark.parametrize("case", CASE_NAMES)
def test_a_malformed_request_gets_4xx_one_sentence_and_one_warning(
    case, server_thread, offer_sdp, caplog
):
    port = int(server_thread.url.rsplit(":", 1)[1].strip("/"))
    head, body, status, words = _cases(port, offer_sdp)[case]
    server = server_thread.server
    built = server.pipelines_built
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        got, text = _raw(port, head, body)
    assert got == status, (got, text)
    if words:  # lostface's own answers: JSON, one sentence naming what was wrong
        message = json.loads(text)["error"]
        assert words in message and message.endswith(".") and "\n" not in message
    assert server.pipelines_built == built  # refused before anything was built
    assert server.in_use() == 0 and not server.sessions
    records = [r for r in caplog.records if r.name.startswith(("lostface", "aiohttp", "aiortc"))]
    warnings = [r for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in records]
    assert "\n" not in warnings[0].getMessage()
    assert not [r for r in records if r.levelno >= logging.ERROR or r.exc_info], records
    assert "Traceback" not in caplog.text


@pytest.mark.parametrize(
    ("host", "bound", "names", "ok"),
    [
        ("127.0.0.1", "127.0.0.1", [], True),
        ("localhost", "127.0.0.1", [], True),  # browsers resolve localhost to loopback
        ("::1", "localhost", [], True),
        ("attacker.example", "127.0.0.1", [], False),  # a rebound name
        ("attacker.example", "127.0.0.1", ["Attacker.Example."], True),  # configured
        ("192.168.1.5", "192.168.1.5", [], True),
        ("192.168.1.6", "192.168.1.5", [], False),
        ("box.lan", "192.168.1.5", [], False),
        ("10.0.0.7", "0.0.0.0", [], True),  # bound everywhere: any address literal
        ("box.lan", "0.0.0.0", [], False),
        ("box.lan", "0.0.0.0", ["box.lan"], True),
    ],
)
def test_host_names_a_server_answers_to(host, bound, names, ok):
    assert host_allowed(host, bound, names) is ok


@pytest.mark.parametrize(
    ("origin", "normal"),
    [
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("HTTP://LocalHost:80", "http://localhost"),
        ("https://app.example.org:443", "https://app.example.org"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("null", ""),
        ("http://app.example.org/page", ""),
        ("file://", ""),
    ],
)
def test_origins_compare_by_scheme_host_and_port(origin, normal):
    assert normalise_origin(origin) == normal


def test_the_pages_own_requests_and_configured_origins_are_accepted(frame):
    """Same origin (Origin = the page's), localhost for a loopback server, and an origin in
    live.allowed_origins get a session; the checks stop only foreign pages."""
    settings = load_settings(overrides=[*LIGHT, 'live.allowed_origins=["https://app.example.org"]'])

    async def main():
        server = LiveServer(settings)
        url = await server.start(port=0)
        port = url.rsplit(":", 1)[1].strip("/")
        out = {}
        for name, target, origin in [
            ("same origin", url, url.rstrip("/")),
            ("localhost", f"http://localhost:{port}/", f"http://localhost:{port}"),
            ("configured", url, "https://app.example.org"),
        ]:
            got = asyncio.Event()
            pc, task, _ = await connect(
                target,
                FrameTrack([frame], 30.0),
                on_frame=lambda f, t, e=got: e.set(),
                headers={"Origin": origin},
            )
            await asyncio.wait_for(got.wait(), 30)
            await pc.close()
            task.cancel()
            out[name] = await _until(lambda: server.in_use() == 0, 15)
        await server.close()
        return out

    assert asyncio.run(main()) == {"same origin": True, "localhost": True, "configured": True}


def test_deep_json_on_the_data_channel_is_ignored_and_controls_still_work(frame):
    async def main():
        server = LiveServer(load_settings(overrides=LIGHT))
        url = await server.start(port=0)
        messages: list = []
        got = asyncio.Event()
        pc, task, channel = await connect(
            url,
            FrameTrack([frame], 30.0),
            on_frame=lambda f, t: got.set(),
            channel_messages=messages,
        )
        await asyncio.wait_for(got.wait(), 30)
        await _until(lambda: channel.readyState == "open", 10)
        channel.send("[" * 2000 + "]" * 2000)
        channel.send(json.dumps({"restore": False}))
        ok = await _until(
            lambda: any(m.get("type") == "stats" and m["restore"] is False for m in messages), 10
        )
        alive = len(server.sessions)
        await pc.close()
        task.cancel()
        await server.close()
        return ok, alive

    assert asyncio.run(main()) == (True, 1)


# -- shutting down ----------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_closes_every_session_and_exits_0(frame, sig):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lostface.cli", "serve", "--port", str(port)]
        + [a for o in LIGHT for a in ("--set", o)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )
    out: list[str] = []
    err: list[str] = []
    threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True).start()  # type: ignore[arg-type]
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()  # type: ignore[arg-type]

    async def main():
        deadline = time.monotonic() + 60
        while not any("serving" in line for line in out):
            assert proc.poll() is None and time.monotonic() < deadline, err
            await asyncio.sleep(0.1)
        got = asyncio.Event()
        pc, task, _ = await connect(
            f"http://127.0.0.1:{port}/", FrameTrack([frame], 30.0), on_frame=lambda f, t: got.set()
        )
        await asyncio.wait_for(got.wait(), 30)
        proc.send_signal(sig)
        ended = await _until(lambda: proc.poll() is not None, 30)
        seen_close = await _until(lambda: pc.connectionState in ("closed", "failed"), 15)
        stream_ended = await _until(task.done, 15)
        await pc.close()
        return ended, seen_close, stream_ended

    try:
        ended, seen_close, stream_ended = asyncio.run(main())
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    time.sleep(0.2)  # the reader threads take the last lines
    log = "".join(err)
    assert ended and proc.returncode == 0, log
    assert seen_close and stream_ended  # the client sees its connection close
    assert "stopped (1 session closed)" in "".join(out)
    assert re.search(r"Session \w+ closed \(0 left\)", log), log
    assert "Traceback" not in log and "error" not in log.lower(), log
    assert "CandidatePair" not in log  # aioice's INFO lines stay quiet below -v
