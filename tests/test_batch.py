"""`lostface batch` on real Dask (loopback only): a local cluster of worker processes, a
scheduler and workers started as separate processes, segments cut and joined, a worker killed
mid-batch, resuming, and bad input."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests.conftest import shared_path
from tests.media import (
    audio_span,
    audio_tracks,
    probe,
    subtitle_lines,
    with_subtitles,
    write_clip,
    write_gif,
)

pytest.importorskip("distributed")


def _frames(path: Path, n: int, size: tuple[int, int]) -> list[np.ndarray]:
    import cv2

    out = []
    with av.open(str(path)) as c:
        for f in c.decode(video=0):
            out.append(cv2.resize(f.to_ndarray(format="bgr24"), size, interpolation=cv2.INTER_AREA))
            if len(out) == n:
                break
    return out


@pytest.fixture(scope="module")
def stage() -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The stage clip at 320x180 with a synthetic covering on its largest face (drawn at
    640x360, as the live tests draw it), and each frame's covered pixels."""
    import cv2

    from tests.live_helpers import masked_stage_clip

    masked, covered, _ = masked_stage_clip(
        str(shared_path("video", "stage_clip.mp4")), 275, letterboxed=False
    )
    assert len(masked) == 275  # a face in every frame: the clip's frames and times kept
    return (
        [cv2.resize(f, (320, 180), interpolation=cv2.INTER_AREA) for f in masked],
        [
            cv2.resize(c.astype(np.uint8), (320, 180), interpolation=cv2.INTER_NEAREST) > 0
            for c in covered
        ],
    )


@pytest.fixture(scope="module")
def clips(tmp_path_factory, stage) -> dict[str, Path]:
    """Short clips with sound and a keyframe every second: from the masked stage clip (with
    its reference photo's person) and from carphone (no covering: nothing to paint), plus the
    whole masked stage clip to cut, whose keyframes fall only every second (no extra ones at
    its shot cuts: the segments then start mid-shot)."""
    from lostface.demo import carphone_path

    root = tmp_path_factory.mktemp("clips")
    frames, _ = stage
    out = {
        "stage_a": write_clip(root / "stage_a.mp4", frames[:60], rate=30, gop=30),
        "stage_b": write_clip(root / "stage_b.mp4", frames[150:210], rate=30, gop=30),
        "carphone": write_clip(
            root / "carphone.mp4", _frames(carphone_path(), 60, (176, 144)), rate=30, gop=30
        ),
        "long": write_clip(
            root / "long.mp4", frames, rate=30, gop=30, options={"sc_threshold": "0"}
        ),
    }
    return out


# Batch and single runs both encode losslessly: a worker of one thread encodes on one thread,
# `lostface run` on several, and x264 then spends its bits otherwise (the same pictures came
# back a median 0.5-1.3 levels apart at the default crf, the whole frame over). One run id:
# the invisible frame mark (up to 2 levels on every painted face) is then the same in both.
SAME = ["video.crf=0", "provenance.run_id=b47"]


def _synchronous_run(src: Path, out: Path) -> list[np.ndarray]:
    """`lostface run`'s restoration of src (with the stage clip's reference) with each
    keyframe painted in the frame loop, as a worker of one thread paints it: the pictures do
    not depend on the keyframe worker's timing. Returns the decoded frames."""
    from lostface.config import load_settings
    from lostface.factory import build_stages
    from lostface.runner import process_video

    settings = load_settings(overrides=["output.progress=false", *SAME])
    settings.restore.references = [str(shared_path("identity", "stage_clip_reference.png"))]
    process_video(src, out, settings, build_stages(settings), synchronous=True)
    return _decoded(out)


def _cli(*args: str, timeout: int = 600, **kw) -> subprocess.CompletedProcess:
    env = dict(os.environ, **kw.pop("env", {}))
    return subprocess.run(
        [sys.executable, "-m", "lostface.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        **kw,
    )


def _decoded(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as c:
        return [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]


REF = ["-r"]


def test_a_local_cluster_restores_clips_as_single_runs_do(clips, stage, tmp_path):
    """Two worker processes, three clips: every output has the input's frames, timestamps
    and sound, and its pictures are a single run's with keyframes in the loop (what a worker
    of one thread does), painted faces and the reference photo included."""
    ref = str(shared_path("identity", "stage_clip_reference.png"))
    names = ["stage_a", "stage_b", "carphone"]
    firsts = {"stage_a": 0, "stage_b": 150}  # their first frames in the stage clip
    out = tmp_path / "out"
    sets = [x for item in SAME for x in ("--set", item)]
    done = _cli(
        "batch", *[str(clips[n]) for n in names], "-o", str(out), "--workers", "2", "-r", ref,
        "-q", *sets,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 done, 0 skipped, 0 failed" in done.stdout
    report = json.loads((out / "lostface-batch.json").read_text())
    assert {f["status"] for f in report["files"]} == {"done"} and report["workers"] == 2
    for n in names:
        src, got = clips[n], out / f"{n}.mp4"
        assert probe(got)["pts"] == probe(src)["pts"]
        a, b = audio_span(got), audio_span(src)
        assert a is not None and b is not None and abs((a[1] - a[0]) - (b[1] - b[0])) < 0.03
        frames = _decoded(got)
        single = _synchronous_run(src, tmp_path / f"single_{n}.mp4")
        diffs = [np.abs(x.astype(int) - y).mean() for x, y in zip(frames, single, strict=True)]
        assert max(diffs) < 0.5, (n, diffs)
        if n in firsts:  # where the faces are painted (a face is a few % of the picture)
            hidden = stage[1][firsts[n] : firsts[n] + 60]
            there = [
                np.abs(x.astype(int) - y)[c].mean() if c.any() else 0.0
                for x, y, c in zip(frames, single, hidden, strict=True)
            ]
            assert max(there) < 2.0, (n, there)
        # `lostface run` itself paints keyframes beside its loop: a patch may land a frame
        # earlier or later (one frame of stage_a 6.5 levels off, in a hand probe), most do not
        run = tmp_path / f"run_{n}.mp4"
        assert _cli("run", str(src), "-o", str(run), "-r", ref, "-q", *sets).returncode == 0
        loose = [
            np.abs(x.astype(int) - y).mean() for x, y in zip(frames, _decoded(run), strict=True)
        ]
        assert np.median(loose) < 1.0, (n, loose)
    # stage_b's faces were painted: its coverings are gone from the output
    covered = stage[1][150:210]
    restored, inputs = _decoded(out / "stage_b.mp4"), _decoded(clips["stage_b"])
    painted = [
        np.abs(x.astype(int) - y)[c].mean()
        for x, y, c in zip(restored, inputs, covered, strict=True)
    ]
    assert np.median(painted) > 20.0, painted


def test_a_long_clip_is_cut_into_segments_and_joined_exactly(clips, tmp_path):
    """9 s cut every 3 s: three segments, joined with the input's frame count, timestamps and
    sound. The first segment's pictures are a single run's (keyframes in the loop, as above);
    at each join, within a level of them: the segment's pipeline starts 1 s early, so its
    tracks and patches are under way when its own frames begin (the keyframes' rhythm still
    differs from the single run's after the join: a patch may come from another frame)."""
    from lostface.batch import plan

    src = clips["long"]
    segs = plan(src, 3.0, 1.0)
    assert len(segs) == 3 and segs[0].start is None and segs[-1].end is None
    assert all(s.warm is not None and s.start is not None and s.warm < s.start for s in segs[1:])
    ref = str(shared_path("identity", "stage_clip_reference.png"))
    out = tmp_path / "out"
    sets = ["--set", "batch.segment_seconds=3", "--set", "batch.overlap_seconds=1"]
    sets += [x for item in SAME for x in ("--set", item)]
    done = _cli("batch", str(src), "-o", str(out), "--workers", "2", "-r", ref, "-q", *sets)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((out / "lostface-batch.json").read_text())
    assert report["files"][0]["segments"] == 3
    got = out / "long.mp4"
    assert probe(got)["pts"] == probe(src)["pts"]
    a, b = audio_span(got), audio_span(src)
    assert a is not None and b is not None and abs((a[1] - a[0]) - (b[1] - b[0])) < 0.03
    frames, ones = _decoded(got), _synchronous_run(src, tmp_path / "single.mp4")
    diffs = [np.abs(x.astype(int) - y).mean() for x, y in zip(frames, ones, strict=True)]
    pts = probe(src)["pts"]
    joins = [pts.index(next(p for p in pts if p >= s.start)) for s in segs[1:]]  # first frames
    assert 60 < joins[0] < joins[1] < 240, joins  # mid-shot: no keyframe at the shot cuts
    assert max(diffs[: joins[0]]) < 0.5, diffs[: joins[0]]
    for j in joins:
        assert max(diffs[j - 2 : j + 3]) < 1.0, (j, diffs[j - 2 : j + 3])


def _start_cluster(tmp_path: Path) -> tuple[str, list[subprocess.Popen]]:
    """`dask scheduler` and two `dask worker`s as separate processes on loopback."""
    scheduler_file = tmp_path / "scheduler.json"
    env = dict(os.environ, DASK_DISTRIBUTED__LOGGING__DISTRIBUTED="error")
    dask = Path(sys.executable).with_name("dask")
    procs = [
        subprocess.Popen(
            [str(dask), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(scheduler_file)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    ]  # fmt: skip
    for _ in range(100):
        if scheduler_file.is_file() and scheduler_file.stat().st_size:
            break
        time.sleep(0.1)
    address = json.loads(scheduler_file.read_text())["address"]
    for i in range(2):
        procs.append(
            subprocess.Popen(
                [str(dask), "worker", address, "--nthreads", "1", "--nworkers", "1",
                 "--host", "127.0.0.1", "--no-dashboard", "--name", f"w{i}"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
        )  # fmt: skip
    from distributed import Client

    with Client(address, timeout="20s") as client:
        client.wait_for_workers(2, timeout=60)
    return address, procs


def _stop(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    for p in procs:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def test_an_existing_scheduler_and_a_worker_killed_mid_batch(clips, tmp_path):
    """--scheduler uses a running cluster; one of its two workers killed while the batch runs
    has its tasks rerun on the other, and the batch completes."""
    address, procs = _start_cluster(tmp_path)
    try:
        out = tmp_path / "out"
        sets = ["--set", "batch.segment_seconds=2", "--set", "batch.overlap_seconds=0.5"]
        cmd = [
            sys.executable,
            "-m",
            "lostface.cli",
            "batch",
            str(clips["long"]),
            str(clips["stage_a"]),
        ]
        cmd += ["-o", str(out), "--scheduler", address, "-q", *sets]
        batch = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        from distributed import Client

        with Client(address, timeout="20s") as client:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and not client.processing():
                time.sleep(0.2)
            while time.monotonic() < deadline and not any(client.processing().values()):
                time.sleep(0.2)
            time.sleep(1.0)  # a segment is being painted
            victim = None
            while victim is None and time.monotonic() < deadline and batch.poll() is None:
                busy = [w for w, tasks in client.processing().items() if tasks]
                victim = busy[0] if busy else None  # none between two tasks: look again
                time.sleep(0.1)
            assert victim is not None, "no worker was ever seen processing a segment"
            pid = client.run(os.getpid, workers=[victim])[victim]
        os.kill(pid, signal.SIGKILL)
        stdout, stderr = batch.communicate(timeout=600)
        assert batch.returncode == 0, stderr[-3000:]
        assert "2 done, 0 skipped, 0 failed" in stdout
        assert probe(out / "long.mp4")["pts"] == probe(clips["long"])["pts"]
    finally:
        _stop(procs)


def test_a_batch_resumes_and_redoes_what_changed(clips, tmp_path):
    out = tmp_path / "out"
    first = _cli(
        "batch",
        str(clips["stage_a"]),
        str(clips["carphone"]),
        "-o",
        str(out),
        "--workers",
        "1",
        "-q",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    stamp = (out / "stage_a.mp4").stat().st_mtime_ns
    again = _cli(
        "batch", str(clips["stage_a"]), str(clips["carphone"]), str(clips["stage_b"]),
        "-o", str(out), "--workers", "1", "-q",
    )  # fmt: skip
    assert again.returncode == 0 and "1 done, 2 skipped, 0 failed" in again.stdout, again.stdout
    assert (out / "stage_a.mp4").stat().st_mtime_ns == stamp  # not redone
    changed = _cli("batch", str(clips["stage_a"]), "-o", str(out), "--workers", "1", "-q",
                   "--set", "video.crf=30")  # fmt: skip
    assert "1 done, 0 skipped" in changed.stdout  # other settings: redone


def test_bad_input_and_a_corrupt_file_among_good_ones(clips, tmp_path):
    out = tmp_path / "out"
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 255, 5000, dtype=np.uint8).tobytes())
    done = _cli(
        "batch", str(clips["carphone"]), str(corrupt), "-o", str(out), "--workers", "1", "-q"
    )
    assert done.returncode == 1 and "1 done, 0 skipped, 1 failed" in done.stdout
    assert "corrupt.mp4 failed" in done.stderr and "Traceback" not in done.stderr
    assert (out / "carphone.mp4").is_file() and not (out / "corrupt.mp4").exists()
    assert not [p for p in out.iterdir() if "partial" in p.name]

    unreachable = _cli("batch", str(clips["carphone"]), "-o", str(tmp_path / "o2"),
                       "--scheduler", "tcp://127.0.0.1:9", timeout=120)  # fmt: skip
    assert unreachable.returncode == 2 and "Cannot reach the Dask scheduler" in unreachable.stderr

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    if os.geteuid() != 0:  # root writes anywhere
        ro = _cli("batch", str(clips["carphone"]), "-o", str(locked / "sub"))
        assert ro.returncode == 4 and "Cannot write to" in ro.stderr

    from lostface.batch import MANIFEST, FolderLock

    busy = tmp_path / "busy"
    busy.mkdir()
    lock = FolderLock(busy)
    try:
        two = _cli("batch", str(clips["carphone"]), "-o", str(busy), "--workers", "1")
        assert two.returncode == 4 and "Another lostface batch" in two.stderr
    finally:
        lock.release()
    db = sqlite3.connect(str(out / MANIFEST))
    with db:
        db.execute("UPDATE meta SET value='99' WHERE key='schema'")
    db.close()
    old = _cli("batch", str(clips["carphone"]), "-o", str(out), "--workers", "1")
    assert old.returncode == 2 and "manifest schema 99" in old.stderr


def test_every_segment_paints_the_people_the_whole_file_shows(tmp_path):
    """Self-reference in a batch: the person is masked for the first 3 s and shows the face
    only after; one task learns the file's people first, so the first segment's masked
    frames are painted from the face its later segments show, as `lostface run`'s two passes
    paint them, and unlike a batch without self-reference."""
    pytest.importorskip("dlib")
    import cv2

    from lostface.synthetic import draw_mask
    from lostface.tracking.detectors import CenterFaceDetector

    def canvas(person: str, k: int) -> np.ndarray:
        img = cv2.imread(str(shared_path("identity", person, f"{person}{k}.jpg")))
        s = min(640 / img.shape[1], 480 / img.shape[0])
        small = cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        out = np.full((480, 640, 3), 96, np.uint8)
        y, x = (480 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
        out[y : y + small.shape[0], x : x + small.shape[1]] = small
        return out

    from lostface.config import DetectSettings

    masked = canvas("obama", 2)
    det = CenterFaceDetector(DetectSettings()).detect(masked)
    masked = draw_mask(masked, det.landmarks[int(np.argmax(det.scores))][:5], "surgical", rng=0)
    frames = [masked.image] * 48 + [canvas("obama", 1)] * 48
    src = write_clip(tmp_path / "onoff.mp4", frames, rate=16, gop=16)
    # one run id for every output: the invisible frame mark (up to 2 levels in every pixel)
    # is then the same in all of them, and only what was painted differs
    sets = ["--set", "batch.segment_seconds=1", "--set", "batch.overlap_seconds=0.5"]
    sets += ["--set", "provenance.run_id=a5c"]
    outs = {}
    for mode in ("auto", "off"):
        out = tmp_path / mode
        done = _cli(
            "batch", str(src), "-o", str(out), "--workers", "2", "-q", *sets,
            "--self-reference", mode,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-3000:]
        assert json.loads((out / "lostface-batch.json").read_text())["files"][0]["segments"] >= 5
        outs[mode] = _decoded(out / "onoff.mp4")
    single = tmp_path / "single.mp4"
    assert _cli("run", str(src), "-o", str(single), "-q", *sets[4:]).returncode == 0
    ones = _decoded(single)
    region = masked.covered
    first = range(4, 16)  # the first segment's masked frames (its first keyframe has landed)
    to_run = [np.abs(outs["auto"][k].astype(int) - ones[k])[region].mean() for k in first]
    to_off = [np.abs(outs["auto"][k].astype(int) - outs["off"][k])[region].mean() for k in first]
    assert np.median(to_run) < 2.0, to_run  # painted as the two-pass run paints it
    assert np.median(to_off) > 5.0, to_off  # not the neutral fill
    # the joined file is marked as painted, with the tag `lostface run` writes (same run id)
    from lostface.provenance.metadata import TAG_KEYS

    tags = []
    for path in (tmp_path / "auto" / "onoff.mp4", single):
        with av.open(str(path)) as c:
            tags.append({k: c.metadata.get(k) for k in TAG_KEYS})
    assert tags[0] == tags[1] and all(tags[0].values()), tags


def test_a_folder_gives_its_videos_and_animated_gifs(tmp_path):
    """A folder's videos and animated GIFs (short clips) are restored, its photos and
    one-picture GIFs are not; .txt lists and files named outright come in as given, each once."""
    from lostface.batch import expand_inputs

    folder = tmp_path / "in"
    folder.mkdir()
    frames = [np.full((48, 64, 3), 40 * i, np.uint8) for i in range(3)]
    write_clip(folder / "b.mp4", frames, audio=False)
    write_gif(folder / "a.gif", frames)
    write_gif(folder / "still.gif", frames[:1])
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    listed = tmp_path / "list.txt"
    listed.write_text(f"# clips\n{folder / 'b.mp4'}\n{tmp_path / 'other.mkv'}\n")
    got = expand_inputs([str(folder), str(listed)])
    assert got == [folder / "a.gif", folder / "b.mp4", tmp_path / "other.mkv"]


def test_joined_parts_keep_every_audio_track(tmp_path):
    """The join puts the input's sound back beside the parts' pictures: every track, each
    with its language and its own sound (copied, or re-encoded where the container needs it),
    and its subtitles where the container holds them; the file keeps its recording date and
    title."""
    from lostface.batch import join, plan
    from lostface.config import load_settings
    from lostface.frame import Frame
    from lostface.stream.video import VideoReader, VideoWriter

    frames = [np.full((96, 128, 3), 20 + 10 * i, np.uint8) for i in range(20)]
    langs = [("aac", "eng", "Main"), ("libopus", "fra", "Commentary")]
    meta = {"creation_time": "2025-06-01T10:20:30.000000Z", "title": "Birthday"}
    sound = write_clip(tmp_path / "two.mkv", frames, rate=20, gop=10, tracks=langs, metadata=meta)
    src = with_subtitles(sound, tmp_path / "film.mkv")
    settings = load_settings()
    part = tmp_path / "part.mkv"
    with VideoReader(src) as reader:
        writer = VideoWriter(part, reader.info, settings.video, None)  # pictures only
        for item in reader.items():
            if isinstance(item, Frame):
                writer.write(item)
        writer.commit()
    for ext in (".mkv", ".mp4"):
        out = tmp_path / f"joined{ext}"
        seen: list[tuple[Path, bool]] = []  # finalize (C2PA signing) sees the whole file
        join(
            src,
            [part],
            out,
            settings,
            plan(src, 60.0, 0.0),
            {"comment": "painted"},
            lambda tmp, seen=seen: seen.append((tmp, probe(tmp)["frames"] == 20)),
        )
        assert len(seen) == 1 and seen[0][1] and not seen[0][0].exists(), seen
        assert probe(out)["frames"] == 20
        got = audio_tracks(out)
        assert [t["language"] for t in got] == ["eng", "fra"], ext
        assert [round(t["peak_hz"] / 440) for t in got] == [1, 2], ext
        with av.open(str(out)) as c:
            entries = {k.lower(): v for k, v in c.metadata.items()}  # Matroska: COMMENT
            assert entries.get("comment") == "painted", ext
            assert c.metadata.get("title") == "Birthday", ext
            assert c.metadata.get("creation_time", "").startswith("2025-06-01T10:20:30"), ext
        lines = subtitle_lines(out)
        assert lines == ([("spa", 0.1, b"Hello there"), ("spa", 0.24, b"Second line")]
                         if ext == ".mkv" else []), ext  # fmt: skip
