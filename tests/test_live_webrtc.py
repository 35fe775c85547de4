"""The WebRTC server with real aiortc peers on this machine: restored video comes back,
controls work, bad offers and extra clients get one clear answer each while the server keeps
serving, and a peer that vanishes is cleaned up."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import aiohttp
import cv2
import numpy as np
import pytest

from lostface.config import load_settings
from lostface.errors import ConfigError
from lostface.stream.live import badge_box
from lostface.stream.webrtc import (
    FrameTrack,
    LiveServer,
    check_exposure,
    connect,
    ice_configuration,
    read_index,
    stamp_index,
)
from tests.live_helpers import PAD_TOP


class Receiver:
    """Collects returned frames with their stamped index."""

    def __init__(self) -> None:
        self.frames: list[tuple[int | None, np.ndarray]] = []

    def __call__(self, vf, t) -> None:
        img = vf.to_ndarray(format="bgr24")
        self.frames.append((read_index(img), img))

    async def wait(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        start = len(self.frames)
        while len(self.frames) - start < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)


def _skin_share(img: np.ndarray, covered: np.ndarray) -> float:
    px = img[covered].astype(np.int16)
    return float((px[:, 2] > px[:, 0]).mean())


def _is_painted(img: np.ndarray, masked: np.ndarray, covered: np.ndarray) -> bool:
    """The light-blue mask (blue over red) came back as skin (red over blue)."""
    return _skin_share(img, covered) > max(0.6, _skin_share(masked, covered) + 0.4)


def _painted_frames(frames: list, masked: list, covered: list) -> int:
    return sum(
        _is_painted(img, masked[i % len(masked)], covered[i % len(masked)])
        for i, img in frames
        if i is not None
    )


def _region_errors(img, masked, covered, original):
    c = covered
    to_masked = np.abs(img[c].astype(np.int16) - masked[c]).mean()
    to_original = np.abs(img[c].astype(np.int16) - original[c]).mean()
    return float(to_masked), float(to_original)


# Painted frames the round trip must return. How many come back in a given time depends on
# the machine's speed (the keyframes run beside the frame loop in real time): 25 within 600
# frames on this project's CI machines until 2026-12-02; on 2026-12-03, with the same code
# and the machine about 1.7 times slower, 12-13 within 730 frames.
PAINTED = 10


def test_round_trip_restores_the_covered_region(stage_masked, stage_reference):
    masked, covered, original = stage_masked

    async def main():
        server = LiveServer(load_settings(), reference_images=[("stage.png", stage_reference)])
        url = await server.start(port=0)
        assert url.startswith("http://127.0.0.1:")
        rx = Receiver()
        messages: list = []
        track = FrameTrack(masked, 30.0, stamp=stamp_index)
        pc, task, channel = await connect(url, track, on_frame=rx, channel_messages=messages)
        try:
            await rx.wait(150)
            # painting starts once the first keyframe is done, later on a busy machine, and
            # each new shot's face waits for its own: go on until PAINTED frames came back
            # painted (or 900 more frames, a minute, have gone by)
            for _ in range(30):
                if _painted_frames(rx.frames, masked, covered) >= PAINTED:
                    break
                await rx.wait(30)
            on_until = len(rx.frames)
            # restoration off: the masked face comes back as sent, without the badge
            channel.send(json.dumps({"restore": False}))
            await asyncio.sleep(1.0)
            off_from = len(rx.frames)
            await rx.wait(20)
            stats = [m for m in messages if m["type"] == "stats"]
            hello = [m for m in messages if m["type"] == "hello"]
        finally:
            await pc.close()
            await server.close()
        return rx, on_until, off_from, track.sent, stats, hello

    rx, on_until, off_from, sent, stats, hello = asyncio.run(main())
    assert hello and hello[0]["references"] == ["stage.png"]
    assert stats and stats[-1]["frames_out"] > 0 and stats[-1]["latency_p50_ms"] > 0
    on = [(i, img) for i, img in rx.frames[:on_until] if i is not None]
    # frames come back at the source's rate (most of them; the newest wins over a backlog)
    assert on_until >= 150 and len(rx.frames) >= 0.4 * sent
    indices = [i for i, _ in on]
    assert indices == sorted(indices)
    x0, y0, x1, y1 = badge_box(640, 480)
    painted, errors = 0, []
    for i, img in on:
        j = i % len(masked)
        c = covered[j]
        # the badge is drawn while restoration is on
        assert np.abs(img[y0:y1, x0:x1].astype(np.int16) - masked[j][y0:y1, x0:x1]).mean() > 20
        # away from the face nothing changes beyond the codec's noise
        near = cv2.dilate(c.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0
        outside = ~near
        outside[: PAD_TOP + 4] = False
        outside[y0 - 4 :, : x1 + 4] = False
        assert np.abs(img[outside].astype(np.int16) - masked[j][outside]).mean() < 10
        # the light-blue mask (blue over red) becomes skin (red over blue) like the original
        sent_share = _skin_share(masked[j], c)
        assert sent_share < 0.3 and _skin_share(original[j], c) > 0.8
        if _is_painted(img, masked[j], c):
            to_masked, to_original = _region_errors(img, masked[j], c, original[j])
            errors.append((to_masked, to_original))
            painted += 1
    assert painted >= PAINTED, painted
    to_masked, to_original = np.mean(errors, axis=0)
    assert to_original < to_masked  # on the whole, nearer the hidden face than the mask
    off = [(i, img) for i, img in rx.frames[off_from:] if i is not None]
    assert off
    near_masked = []
    for i, img in off:
        j = i % len(masked)
        to_masked, to_original = _region_errors(img, masked[j], covered[j], original[j])
        assert to_masked < to_original
        near_masked.append(to_masked)
        assert np.abs(img[y0:y1, x0:x1].astype(np.int16) - masked[j][y0:y1, x0:x1]).mean() < 12
    assert np.median(near_masked) < 12  # the mask as sent, up to the codec's noise


async def _post(url: str, body: bytes, headers: dict | None = None) -> tuple[int, dict]:
    headers = {"Content-Type": "application/json", **(headers or {})}
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "offer", data=body, headers=headers) as r:
            return r.status, await r.json()


def test_bad_offers_and_extra_clients_get_one_clear_answer(stage_masked):
    masked, _, _ = stage_masked
    settings = load_settings(overrides=["live.max_sessions=1", "live.max_offer_bytes=4096"])

    async def main():
        server = LiveServer(settings)
        url = await server.start(port=0)
        rx = Receiver()
        pc, task, _ = await connect(url, FrameTrack(masked, 30.0, stamp=stamp_index), on_frame=rx)
        answers = {}
        try:
            await rx.wait(10)
            answers["not json"] = await _post(url, b"{garbage")
            answers["wrong shape"] = await _post(url, json.dumps({"sdp": 3}).encode())
            answers["answer type"] = await _post(
                url, json.dumps({"sdp": "v=0", "type": "answer"}).encode()
            )
            answers["oversized"] = await _post(
                url, json.dumps({"sdp": "x" * 10000, "type": "offer"}).encode()
            )
            server.live.max_sessions = 2  # room for one more: the SDP itself is checked
            answers["bad sdp"] = await _post(
                url, json.dumps({"sdp": "v=0\r\nthis is not sdp\r\n", "type": "offer"}).encode()
            )
            server.live.max_sessions = 1
            try:
                await connect(url, FrameTrack(masked, 30.0))
                answers["second client"] = (200, {})
            except ConnectionRefusedError as exc:
                answers["second client"] = (int(str(exc).split(":")[0]), {"error": str(exc)})
            before = len(rx.frames)
            await rx.wait(15)
            still_serving = len(rx.frames) - before
            sessions = len(server.sessions)
        finally:
            await pc.close()
            await server.close()
        return answers, still_serving, sessions

    answers, still_serving, sessions = asyncio.run(main())
    expected = {
        "not json": 400,
        "wrong shape": 400,
        "answer type": 400,
        "oversized": 413,
        "bad sdp": 400,
        "second client": 503,
    }
    for case, status in expected.items():
        got, body = answers[case]
        assert got == status, (case, got, body)
        assert body.get("error", "").strip(), case
    assert still_serving >= 15
    assert sessions == 1


def test_token_and_exposure_rules(stage_masked):
    masked, _, _ = stage_masked
    with pytest.raises(ConfigError, match="token"):
        check_exposure(load_settings(overrides=['live.host="0.0.0.0"']).live)
    assert ice_configuration(load_settings().live).iceServers == []
    turn = ['live.ice_servers=["turn:turn.example.org:3478"]', 'live.ice_username="u"']
    (server,) = ice_configuration(load_settings(overrides=turn).live).iceServers
    assert server.urls == "turn:turn.example.org:3478" and server.username == "u"
    with pytest.raises(ConfigError, match="ice_servers"):
        load_settings(overrides=['live.ice_servers=["http://x"]'])
    settings = load_settings(overrides=['live.token="s3cret-s3cret-s3cret"'])

    async def main():
        server = LiveServer(settings)
        url = await server.start(port=0)
        try:
            status, body = await _post(url, json.dumps({"sdp": "v=0", "type": "offer"}).encode())
            rx = Receiver()
            pc, task, _ = await connect(
                url, FrameTrack(masked, 30.0), token="s3cret-s3cret-s3cret", on_frame=rx
            )
            await rx.wait(5)
            await pc.close()
            async with aiohttp.ClientSession() as http:
                async with http.get(url) as r:
                    page = await r.text()
                async with http.get(url + "app.js") as r:
                    script = await r.text()
        finally:
            await server.close()
        return status, body, len(rx.frames), page, script

    status, body, frames, page, script = asyncio.run(main())
    assert status == 401 and "token" in body["error"]
    assert frames >= 5
    assert "<video" in page and "app.js" in page
    # no STUN/TURN handed to the browser unless configured
    assert "const ICE_SERVERS = [];" in script and 'fetch("offer"' in script


_CLIENT = textwrap.dedent(
    """
    import asyncio, sys
    import numpy as np
    from lostface.stream.webrtc import FrameTrack, connect
    async def main():
        img = np.full((240, 320, 3), 90, np.uint8)
        pc, task, _ = await connect(sys.argv[1], FrameTrack([img], 30.0),
                                    on_frame=lambda f, t: print("frame", flush=True))
        await asyncio.sleep(600)
    asyncio.run(main())
    """
)


def test_a_peer_that_vanishes_is_cleaned_up_and_others_keep_going(stage_masked):
    """The client process is killed (SIGKILL: no goodbye); the server closes its session."""
    masked, _, _ = stage_masked

    async def main():
        server = LiveServer(load_settings(overrides=["live.idle_timeout=2.0"]))
        url = await server.start(port=0)
        proc = subprocess.Popen(
            [sys.executable, "-c", _CLIENT, url],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        lines = []
        reader = threading.Thread(
            target=lambda: [lines.append(x) for x in proc.stdout],
            daemon=True,  # type: ignore[union-attr]
        )
        reader.start()
        rx = Receiver()
        pc = None
        try:
            deadline = time.monotonic() + 60
            while len(lines) < 10 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            assert len(server.sessions) == 1
            pc, task, _ = await connect(url, FrameTrack(masked, 30.0), on_frame=rx)
            await rx.wait(5)
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            deadline = time.monotonic() + 30
            while len(server.sessions) > 1 and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            left = len(server.sessions)
            before = len(rx.frames)
            await rx.wait(10)
            after = len(rx.frames) - before
        finally:
            if proc.poll() is None:
                proc.kill()
            if pc is not None:
                await pc.close()
            await server.close()
        return len(lines), left, after

    got, left, after = asyncio.run(main())
    assert got >= 10
    assert left == 1  # only the surviving client
    assert after >= 10


async def _capture_state(messages: list, states: tuple, timeout: float = 40.0) -> dict:
    """The capture as the newest stats message reports it, once it is in one of `states`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = [m for m in messages if m["type"] == "stats"]
        if stats and stats[-1]["capture"]["state"] in states:
            return stats[-1]
        await asyncio.sleep(0.1)
    raise AssertionError(f"no capture {states} within {timeout} s: {messages[-1:]}")


async def _reported(messages: list, key: str, value, timeout: float = 20.0) -> dict:
    """The newest stats message once it reports `value` under `key` (the page learns of a
    choice on the session's next stats message, not on the frame it takes effect), else the
    newest one when the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = [m for m in messages if m["type"] == "stats"]
        if stats and stats[-1].get(key) == value:
            return stats[-1]
        await asyncio.sleep(0.1)
    return [m for m in messages if m["type"] == "stats"][-1]


def _identities(server: LiveServer, after: int = 0) -> set:
    """(identity, source) of the faces the session's painter painted on frame `after` or
    later."""
    out = set()
    for session in server.sessions.values():
        worker = session.pipe.worker
        for tid in worker.known():
            res = worker.result(tid)
            if res is not None and res.patch is not None and res.patch.frame_index >= after:
                out.add((res.identity, res.source))
    return out


def _frames_in(server: LiveServer) -> int:
    return sum(s.source.index for s in server.sessions.values() if s.source is not None)


async def _painted_as(server: LiveServer, who: tuple, after: int, timeout: float = 40) -> set:
    deadline = time.monotonic() + timeout
    while who not in _identities(server, after) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    return _identities(server, after)


def test_capture_over_the_data_channel_learns_saves_and_paints(tmp_path):
    from lostface.factory import build_detector, load_references
    from lostface.stream.capture import NO_OPEN_FACE
    from tests.conftest import shared_path
    from tests.live_helpers import singer_frames

    open_, masked, _ = singer_frames(str(shared_path("video", "stage_clip.mp4")))
    captures = tmp_path / "captures"

    async def main():
        # No photo and self-reference off: the capture is the only face the session can paint
        # from. (With self-reference on, a loaded machine drops frames, the singer's turning
        # head is found again on new tracks, and his open faces can be learned as several
        # people, some further than restore.self_join from the captured faces; the closest of
        # them then paints him, his own face, not the capture. A capture taking over from a
        # learned person is tests/test_selfref.py's
        # test_a_face_captured_later_takes_over_from_the_person_learned.)
        settings = load_settings(overrides=["restore.self_reference=off"])
        server = LiveServer(settings, capture_dir=captures)
        url = await server.start(port=0)
        rx = Receiver()
        messages: list = []
        track = FrameTrack(masked, 30.0, stamp=stamp_index)
        pc, task, channel = await connect(url, track, on_frame=rx, channel_messages=messages)
        seen: dict = {}
        try:
            await rx.wait(20)
            # the mask is on: nothing is learned, and the page is told why
            channel.send(json.dumps({"capture": "me"}))
            seen["masked"] = await _capture_state(messages, ("failed", "learned"))
            # the mask off: the singer is learned and saved
            track.images = open_
            await asyncio.sleep(0.5)
            channel.send(json.dumps({"capture": "singer"}))
            seen["capturing"] = await _capture_state(messages, ("capturing", "building"))
            seen["open"] = await _capture_state(messages, ("failed", "learned"))
            # the mask back on: his face is painted from the capture
            track.images = masked
            after = _frames_in(server)
            seen["painted"] = await _painted_as(server, ("singer", "given"), after)
            # the captured name is on the session's reference list, and can be chosen
            channel.send(json.dumps({"reference": "singer"}))
            after = _frames_in(server)
            seen["chosen"] = await _painted_as(server, ("singer", "given"), after)
            seen["last"] = await _reported(messages, "reference", "singer")
        finally:
            await pc.close()
            await server.close()
        return seen

    seen = asyncio.run(main())
    assert seen["masked"]["capture"]["state"] == "failed"
    assert seen["masked"]["capture"]["text"] == NO_OPEN_FACE
    assert seen["masked"]["captured"] == [] and not (captures / "me").exists()
    capture = seen["open"]["capture"]
    assert capture["state"] == "learned", capture
    k = int(capture["text"].split(" from ")[1].split()[0])
    assert capture["text"] == f"learned singer from {k} face" + ("s" if k > 1 else "")
    folder = captures / "singer"
    assert capture["saved"] == str(folder) and capture["use"] == f"--reference singer={folder}"
    assert seen["open"]["captured"] == ["singer"]
    saved = sorted(folder.glob("*.png"))
    assert len(saved) == k >= 2
    settings = load_settings()
    bank = load_references(settings, build_detector(settings), [capture["use"].split()[1]])
    assert bank is not None and len(bank) == k  # what a later run reads
    assert ("singer", "given") in seen["painted"], seen["painted"]
    assert seen["last"]["reference"] == "singer"
    assert ("singer", "given") in seen["chosen"], seen["chosen"]
