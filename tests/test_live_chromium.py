"""Headless Chromium opens the page with a fake camera fed from a .y4m of the masked stage
clip: the page gets the restored video back, plays it and reports its frames/s."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from lostface.config import load_settings
from lostface.stream.webrtc import LiveServer
from tests.conftest import shared_path
from tests.live_helpers import ServerThread, masked_stage_clip, singer_frames

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def _ensure_chromium() -> None:
    """Installs the Debian packages when missing (root only); else skips with the command."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        pytest.skip("needs chromium + chromium-driver: apt-get install -y chromium chromium-driver")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "chromium", "chromium-driver"],
    ):
        r = subprocess.run(cmd, env=env, capture_output=True, timeout=600)
        if r.returncode != 0:
            pytest.skip(f"could not install chromium ({r.stderr.decode()[-200:]})")


def write_y4m(path: Path, frames: list[np.ndarray], fps: int = 30) -> None:
    """4:2:0 YUV4MPEG2 (limited range, as cameras send) for Chromium's fake camera."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n".encode())
        for img in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(img, cv2.COLOR_BGR2YUV_I420).tobytes())


def _options(tmp_path: Path, y4m: Path):
    """Headless Chromium with a fake camera playing `y4m` (and nothing fetched from outside)."""
    from selenium import webdriver

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-video-capture={y4m}",
    ):
        opts.add_argument(flag)
    return opts


def test_browser_sends_its_camera_and_plays_the_restored_video(tmp_path):
    _ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    masked, _, _ = masked_stage_clip(str(shared_path("video", "stage_clip.mp4")), 90)
    y4m = tmp_path / "masked.y4m"
    write_y4m(y4m, masked)
    reference = cv2.imread(str(shared_path("identity", "stage_clip_reference.png")))
    server = LiveServer(load_settings(), reference_images=[("stage.png", reference)])
    opts = _options(tmp_path, y4m)
    with ServerThread(server) as srv:
        driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=opts)
        try:
            driver.set_page_load_timeout(30)
            driver.get(srv.url + "?autostart=1")
            stats: dict = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.5)
                stats = driver.execute_script("return window.lostfaceStats") or {}
                if stats.get("framesDecoded", 0) >= 60 and stats.get("fps", 0) > 0:
                    break
            video = driver.execute_script(
                "const v = document.getElementById('remote');"
                "return [v.videoWidth, v.videoHeight, v.currentTime, v.paused];"
            )
            time.sleep(1.5)
            shown = driver.execute_script(
                "return [document.getElementById('fps').textContent,"
                " document.getElementById('latency').textContent, document.body.innerText];"
            )
            t_later = driver.execute_script("return document.getElementById('remote').currentTime")
            options = driver.execute_script(
                "return [...document.querySelectorAll('#reference option')].map(o => o.value)"
            )
            sessions = len(server.sessions)
        finally:
            driver.quit()
    assert stats.get("state") == "connected", stats
    assert stats["framesDecoded"] >= 60 and stats["fps"] > 0, stats
    width, height, _, paused = video
    assert (width, height) == (640, 480) and not paused
    assert t_later > video[2]  # the remote video plays on
    assert float(shown[0]) > 0  # the readout shows frames/s
    assert float(shown[1]) > 0  # and an end-to-end latency
    assert "restored by AI" in shown[2]
    assert options == ["", "stage.png"]
    assert sessions == 1


def test_capture_my_face_now_from_the_page(tmp_path):
    """The page's button captures the camera's open face: the page shows what was learned,
    where the photos were saved and the --reference that gives them to a later run."""
    _ensure_chromium()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    open_, _, _ = singer_frames(str(shared_path("video", "stage_clip.mp4")))
    y4m = tmp_path / "open.y4m"
    write_y4m(y4m, open_)
    captures = tmp_path / "captures"
    server = LiveServer(load_settings(), capture_dir=captures)
    with ServerThread(server) as srv:
        driver = webdriver.Chrome(
            service=Service(executable_path=CHROMEDRIVER), options=_options(tmp_path, y4m)
        )
        try:
            driver.set_page_load_timeout(30)
            driver.get(srv.url + "?autostart=1")
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.5)
                stats = driver.execute_script("return window.lostfaceStats") or {}
                if stats.get("framesDecoded", 0) >= 30:
                    break
            name = driver.execute_script("return document.getElementById('capture-name').value")
            driver.find_element("id", "capture").click()
            capture: dict = {}
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                time.sleep(0.5)
                capture = driver.execute_script("return window.lostfaceStats.capture") or {}
                if capture.get("state") in ("learned", "failed"):
                    break
            time.sleep(1.5)  # the next readout
            shown = driver.execute_script(
                "return [document.getElementById('capture-state').innerText,"
                " [...document.querySelectorAll('#reference option')].map(o => o.value),"
                " document.getElementById('capture').disabled]"
            )
        finally:
            driver.quit()
    folder = captures / "me"
    assert name == "me"
    assert capture.get("state") == "learned", capture
    text, options, disabled = shown
    assert "capture: learned me from" in text
    assert f"saved in {folder}" in text and f"--reference me={folder}" in text
    assert options == ["", "me"]  # the captured name joins the session's reference list
    assert not disabled  # ready for another capture
    k = int(text.split("learned me from ")[1].split()[0])
    assert k >= 1 and len(list(folder.glob("*.png"))) == k
