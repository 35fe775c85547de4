"""The live commands end to end: `lostface stream` plays a masked clip at its rate into a UDP
MPEG-TS stream that PyAV receives; no camera, no virtual camera and an exposed server
without a token each end with one clear sentence and their exit code."""

from __future__ import annotations

import socket
import threading
import time

import av
import pytest

from tests.conftest import shared_path


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
        (["serve", "--token", "short-secret"], 2, ["has 12 characters", "16 or more"]),
        (["serve", "--set", 'live.allowed_origins=["https://x.org/app"]'], 2, ["no path"]),
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


def _numbered_frames(n: int) -> list:
    """Frames that say which they are: the index in large digits on a level of its own."""
    import cv2
    import numpy as np

    out = []
    for i in range(n):
        img = np.full((240, 320, 3), 30 + 2 * i, np.uint8)
        cv2.putText(img, f"{i:02d}", (40, 150), cv2.FONT_HERSHEY_SIMPLEX, 4, (255, 255, 255), 8)
        out.append(img)
    return out


def test_stream_file_starts_at_its_first_frame_and_carries_its_audio(main, tmp_path):
    import numpy as np

    from tests.media import write_clip

    sent = _numbered_frames(75)
    clip = write_clip(tmp_path / "numbered.mp4", sent, rate=25, audio=True)
    port = _free_udp_port()
    first: list = []
    audio: list = []
    streams: list = []

    def receive() -> None:
        url = f"udp://127.0.0.1:{port}?timeout=15000000&overrun_nonfatal=1&fifo_size=100000"
        with av.open(url, format="mpegts", timeout=15) as c:
            streams.extend(s.type for s in c.streams)
            for packet in c.demux():
                for f in packet.decode():
                    if isinstance(f, av.VideoFrame) and not first:
                        first.append(f.to_ndarray(format="bgr24"))
                    elif isinstance(f, av.AudioFrame):
                        audio.append(f.to_ndarray().reshape(-1))
                if first and sum(len(a) for a in audio) >= 44100:
                    return

    rx = threading.Thread(target=receive, daemon=True)
    rx.start()
    time.sleep(0.5)  # the receiver binds inside av.open
    argv = ["stream", f"udp://127.0.0.1:{port}", "--file", str(clip), "--seconds", "3", "-q"]
    assert main(argv) == 0
    rx.join(20)
    assert "video" in streams and "audio" in streams
    # the first picture is the file's first frame (the badge's corner left out)
    top = first[0][:150].astype(float)
    errors = [np.abs(top - f[:150]).mean() for f in sent]
    assert int(np.argmin(errors)) == 0 and errors[0] < 8
    # the sound is the file's own: its 440 Hz tone
    samples = np.concatenate(audio)[:44100]
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    assert abs(np.argmax(spectrum) * 44100 / len(samples) - 440) < 5
