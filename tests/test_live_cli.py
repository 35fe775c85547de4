"""The live commands end to end: `lostface stream` plays a masked clip at its rate into a UDP
MPEG-TS stream that PyAV receives; no camera, no virtual camera and an exposed server
without a token each end with one clear sentence and their exit code."""

from __future__ import annotations

import argparse
import socket
import threading
import time

import av
import pytest

from lostface.cli_live import LIVE_COMMANDS, add_live_commands
from tests.conftest import shared_path


@pytest.fixture
def main(monkeypatch):
    """lostface.cli.main with the live commands (registered here until cli.py wires them)."""
    from lostface import cli

    if "serve" not in cli.COMMANDS:
        original = cli.build_parser

        def build() -> argparse.ArgumentParser:
            parser = original()
            sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
            add_live_commands(sub)
            return parser

        monkeypatch.setattr(cli, "build_parser", build)
        monkeypatch.setattr(cli, "COMMANDS", {**cli.COMMANDS, **LIVE_COMMANDS})
    return cli.main


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_stream_command_sends_mpegts_that_pyav_plays(main, capsys):
    clip = shared_path("video", "stage_clip.mp4")
    port = _free_udp_port()
    frames: list = []

    def receive() -> None:
        url = f"udp://127.0.0.1:{port}?timeout=15000000&overrun_nonfatal=1&fifo_size=100000"
        with av.open(url, format="mpegts", timeout=15) as c:
            for f in c.decode(video=0):
                frames.append((f.width, f.height))
                if len(frames) >= 20:
                    return

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    time.sleep(0.5)
    code = main(
        [
            "stream",
            f"udp://127.0.0.1:{port}",
            "--file",
            str(clip),
            "--seconds",
            "4",
            "--set",
            "detect.input_size=160",
            "-q",
        ]
    )
    rx.join(20)
    assert code == 0
    assert len(frames) >= 20 and frames[-1] == (640, 360)
    assert "live from file at 640x360" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "code", "words"),
    [
        (["vcam", "--camera", "/dev/video97"], 2, ["No camera at /dev/video97"]),
        (["stream", "udp://127.0.0.1:9", "--camera", "97"], 2, ["No camera 97", "--file"]),
        (["stream", "tcp://127.0.0.1:9", "--camera", "0"], 4, ["udp://HOST:PORT"]),
        (["serve", "--host", "0.0.0.0"], 2, ["token"]),
        (["serve", "--set", "live.max_sessions=0"], 2, ["live.max_sessions"]),
    ],
)
def test_bad_live_input_gets_one_clear_sentence(main, capsys, argv, code, words):
    assert main(argv) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("lostface: error: ")
    for w in words:
        assert w in err[0]


def test_vcam_without_a_virtual_camera_says_how_to_create_one(main, capsys, tmp_path):
    clip = shared_path("video", "stage_clip.mp4")
    assert main(["vcam", "--file", str(clip), "--seconds", "1"]) == 4
    err = capsys.readouterr().err
    assert "v4l2loopback" in err and "exclusive_caps=1" in err and "card_label" in err
