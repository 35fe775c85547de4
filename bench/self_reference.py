"""Self-reference: masked faces painted from the person's own unmasked frames of the footage.

The stage clip (../shared/data/video/stage_clip.mp4) gets a synthetic mask, as
bench/quality.py draws it (one person per shot), on part of it only (--frames FROM:TO,
default 110: to the end); outside it everyone is unmasked: a speaker puts the mask on (the
default), or takes it off (--frames 0:150: the masked frames come before the open ones, which
only a first pass over the file learns from in time). The masked clip is restored three times
by the video pipeline, with the keyframe work in the frame loop (results do not depend on
timing):

- self: no reference photo, restore.self_reference=auto (the first pass learns the people);
- neutral: no reference photo, self-reference off (the neutral fill);
- given: the singer's real reference photo (../shared/data/identity/stage_clip_reference.png),
  self-reference off.

Per masked frame: dlib's identity distance to the unmasked original (bench/quality.py's
metric, the chip placed on the original) of the masked input and of each restoration, all
frames and the singer's own (told by dlib against his reference photo). A frame painted from
a learned person whose faces are not the masked face's person (judge_people: per shot, the
learned faces' mean dlib distance at or past dlib's threshold) counts as painted from another
person. With --runs N, the throughput of `lostface run` (the two passes; and with
--self-reference off, one) against a plain decode + encode of the same clip, at 640x360 and
scaled to 1280x720, each in a fresh process, interleaved, medians of N; and at 640x360 on the
clip played four times (36 s): a 9 s clip's figure is mostly start-up (the process's imports
and models, about 1 s against the plain job's 0.15 s), so the target is read on the longer
clip, and the rate of the added 27 s (the difference of the two clips' times) is printed too.

    python bench/self_reference.py [--frames 110:] [--runs 3] [--set KEY=VALUE ...]

Prints a table and writes bench/results/self_reference.json and a grid of faces
(masked | neutral | self | given | original) to bench/results/self_reference_grid.png.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import CLIP, CLIP_REFERENCE, box_iou, masked_person, smooth_landmarks  # noqa: E402
from throughput import enlarge, plain_process  # noqa: E402

from lostface.benchmark.common import face_tiles, stack_rows  # noqa: E402
from lostface.config import load_settings  # noqa: E402
from lostface.factory import build_detector, build_stages  # noqa: E402
from lostface.frame import Frame  # noqa: E402
from lostface.metrics import SAME_PERSON_DISTANCE, IdentityMetric  # noqa: E402
from lostface.restore.identity import _dlib_models  # noqa: E402
from lostface.runner import process_video  # noqa: E402
from lostface.stream.video import VideoReader, VideoWriter, read_frames  # noqa: E402
from lostface.synthetic import draw_mask  # noqa: E402
from lostface.tracking.scenecut import HistogramSceneCut  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
RUNS = ("neutral", "self", "given")


def mask_frames(
    settings, detector, kind: str, span: tuple[int, int], path: Path
) -> tuple[list[np.ndarray], list[np.ndarray | None]]:
    """Write the clip with masks on frames span[0] <= i < span[1]; return the originals and,
    per frame, the masked face's box (None: no mask on that frame)."""
    with VideoReader(CLIP) as reader:
        info = reader.info
        frames = [f for f in reader.items() if isinstance(f, Frame)]
    images = [f.image for f in frames]
    found = [detector.detect(im) for im in images]
    picks = masked_person(found, images)
    lms = [
        None if i is None else d.landmarks[i][:5].astype(np.float64)
        for d, i in zip(found, picks, strict=True)
    ]
    boxes = [None if i is None else d.boxes[i].copy() for d, i in zip(found, picks, strict=True)]
    lms = smooth_landmarks(lms, boxes, images, 2)
    originals = [im.copy() for im in images]
    masked_boxes: list[np.ndarray | None] = []
    writer = VideoWriter(path, info, settings.video, None)
    for f, lm, box in zip(frames, lms, boxes, strict=True):
        if span[0] <= f.index < span[1] and lm is not None and box is not None:
            f.image = draw_mask(f.image, lm, kind=kind, rng=np.random.default_rng(0)).image
            masked_boxes.append(box)
        else:
            masked_boxes.append(None)
        writer.write(f)
    writer.commit()
    return originals, masked_boxes


def restore(masked: Path, out: Path, overrides: list[str], detector, refs: list) -> dict:
    """One synchronous restoration; its --tracks records and the painter (learned people)."""
    settings = load_settings(overrides=overrides)
    stages = build_stages(settings, references=refs, detector=detector)
    tracks = out.with_suffix(".jsonl")
    stats = process_video(masked, out, settings, stages, tracks, synchronous=True)
    records = [json.loads(line) for line in tracks.read_text().splitlines()]
    return {"records": records, "painter": stages.painter, "stats": stats}


def face_at(record: dict, box: np.ndarray) -> dict | None:
    faces = [f for f in record["faces"] if box_iou(np.array(f["box"]), box) > 0.3]
    return faces[0] if faces else None


def judge_people(rows: list[dict], anchors: dict, originals: list, learned: dict, ref) -> None:
    """Mark each frame painted from a learned person whose faces are someone else's.

    One frame's dlib anchor is unreliable on a turned or blurred face, so the masked person
    is judged per shot (the mask stays on one person per shot): the singer's shots (most of
    their frames match his reference photo) against that photo, the other shots against the
    mean of their frames' embeddings. A learned person is someone else when the mean
    distance of their faces is at or past dlib's threshold."""
    cut = HistogramSceneCut(0.35)
    shot_of = [int(v) for v in np.cumsum([cut.is_cut(im) for im in originals])]
    shots: dict[int, list[dict]] = {}
    for row in rows:
        shots.setdefault(shot_of[row["frame"]], []).append(row)
    for shot_rows in shots.values():
        main = float(np.mean([r["main"] for r in shot_rows])) > 0.5
        person = (
            ref.descriptor
            if main
            else np.mean([anchors[r["frame"]].descriptor for r in shot_rows], axis=0)
        )
        for r in shot_rows:
            r["shot_main"] = main
            if r["source"] != "self":
                continue
            faces = learned.get(r["identity"] or "", [])
            d = [float(np.linalg.norm(f.descriptor - person)) for f in faces]
            r["learned_distance"] = float(np.mean(d)) if d else None
            r["wrong_person"] = not d or float(np.mean(d)) >= SAME_PERSON_DISTANCE


def repeat(src: Path, dst: Path, times: int, vs) -> None:  # noqa: ANN001 - VideoSettings
    """The clip played `times` times in a row (one file)."""
    from dataclasses import replace

    with VideoReader(src) as r:
        frames = [f for f in r.items() if isinstance(f, Frame)]
        info = replace(r.info, frames=len(frames) * times)
    step = frames[-1].pts - frames[-2].pts if len(frames) > 1 else 1
    span = frames[-1].pts - frames[0].pts + step
    w = VideoWriter(dst, info, vs, None)
    for k in range(times):
        for i, f in enumerate(frames):
            w.write(Frame(f.image, k * len(frames) + i, f.pts + k * span, f.time_base))
    w.commit()


def throughput(masked: Path, tmp: Path, runs: int, overrides: list[str]) -> dict:
    """`lostface run` (self-reference auto, and off) against a plain decode + encode, each in
    a fresh process, interleaved; medians of wall seconds."""
    settings = load_settings(overrides=overrides)
    sets = [a for o in overrides for a in ("--set", o)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", YOLO_OFFLINE="1")
    walls: dict[str, list[float]] = {"plain": [], "self": [], "off": []}
    scans: list[float] = []
    for _ in range(runs):
        walls["plain"].append(plain_process(masked, tmp / "plain.mp4", settings.video))
        for name in ("self", "off"):
            cmd = [sys.executable, "-m", "lostface.cli", "run", str(masked)]
            cmd += [
                "-o",
                str(tmp / f"run_{name}.mp4"),
                "--self-reference",
                "auto" if name == "self" else "off",
            ]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd + sets, capture_output=True, text=True, env=env)
            walls[name].append(time.perf_counter() - t0)
            if proc.returncode != 0:
                raise RuntimeError(f"lostface run failed: {proc.stderr.strip()}")
            m = re.search(r"looked at\s+in ([\d.]+) s", proc.stderr)
            if name == "self" and m:
                scans.append(float(m.group(1)))
    med = {k: float(np.median(v)) for k, v in walls.items()}
    return {
        "runs": runs,
        "wall_s": med,
        "first_pass_s": float(np.median(scans)) if scans else None,
        "two_pass_vs_plain": med["plain"] / med["self"],
        "one_pass_vs_plain": med["plain"] / med["off"],
        "load_average": os.getloadavg(),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--kind", default="surgical")
    ap.add_argument("--frames", default="110:", help="masked frames FROM:TO (TO: excluded)")
    ap.add_argument("--runs", type=int, default=0, help="throughput runs (0: none)")
    ap.add_argument("--out", type=Path, default=RESULTS / "self_reference.json")
    args = ap.parse_args(argv)
    if not CLIP.is_file() or not CLIP_REFERENCE.is_file():
        print(f"{CLIP} or {CLIP_REFERENCE} is absent: it needs ../shared/data", file=sys.stderr)
        return 2
    base = load_settings(overrides=args.overrides)
    detector = build_detector(base)
    metric = IdentityMetric()
    ref_anchor = metric.anchor(cv2.imread(str(CLIP_REFERENCE)))
    first, _, last = args.frames.partition(":")
    span = (int(first or 0), int(last) if last else 1 << 30)
    result: dict = {"settings": args.overrides, "frames": args.frames, "kind": args.kind}
    t0 = time.perf_counter()
    _dlib_models()  # what the first pass pays once a face to learn from is found
    result["dlib_load_s"] = time.perf_counter() - t0
    with tempfile.TemporaryDirectory(prefix="lostface-selfref-") as tmpdir:
        tmp = Path(tmpdir)
        masked = tmp / "masked.mp4"
        originals, boxes = mask_frames(base, detector, args.kind, span, masked)
        off = [*args.overrides, 'restore.self_reference="off"']
        auto = [*args.overrides, 'restore.self_reference="auto"']
        runs = {
            "neutral": restore(masked, tmp / "neutral.mp4", off, detector, []),
            "self": restore(masked, tmp / "self.mp4", auto, detector, []),
            "given": restore(masked, tmp / "given.mp4", off, detector, [CLIP_REFERENCE]),
        }
        frames = {"masked": read_frames(masked)}
        frames.update({k: read_frames(tmp / f"{k}.mp4") for k in RUNS})
        selfref = runs["self"]["painter"].selfref
        # each learned person's faces, told apart by dlib (the same metric as the distances)
        learned: dict[str, list] = {}
        if selfref is not None:
            for person in selfref.people:
                anchors = [metric.anchor(r.image) for r in selfref.references(person)]
                learned[person] = [a for a in anchors if a is not None]
        # how far each learned face is from the singer's photo (under dlib's 0.6: his)
        result["learned_to_reference"] = {
            p: [round(IdentityMetric.between(a, ref_anchor), 3) for a in faces]
            for p, faces in learned.items()
        }
        rows: list[dict] = []
        anchors: dict[int, object] = {}
        grid: list[np.ndarray] = []
        with_mask = [i for i, b in enumerate(boxes) if b is not None]
        grid_at = set(with_mask[:: max(len(with_mask) // 5, 1)][:5])
        for i in with_mask:
            box = boxes[i]
            anchor = metric.anchor(originals[i], box)
            if anchor is None or i >= min(len(v) for v in frames.values()):
                continue
            anchors[i] = anchor
            row = {
                "frame": i,
                "main": IdentityMetric.between(anchor, ref_anchor) < SAME_PERSON_DISTANCE,
            }
            row["distance"] = metric.distances(anchor, {k: v[i] for k, v in frames.items()})
            face = face_at(runs["self"]["records"][i], box)
            row["source"] = face.get("reference") if face else None
            row["identity"] = face.get("identity") if face else None
            rows.append(row)
            if i in grid_at:
                tiles = {k: frames[k][i] for k in ("masked", *RUNS)}
                tiles["original"] = originals[i]
                grid.append(face_tiles(tiles, box, 160))
        judge_people(rows, anchors, originals, learned, ref_anchor)
    RESULTS.mkdir(parents=True, exist_ok=True)
    if grid:
        cv2.imwrite(str(RESULTS / "self_reference_grid.png"), stack_rows(grid))

    def summary(sel: list[dict]) -> dict:
        out = {"frames": len(sel)}
        for k in ("masked", *RUNS):
            d = [r["distance"][k] for r in sel]
            out[k] = {"mean": float(np.mean(d)), "median": float(np.median(d))} if d else None
        out["painted_from_self"] = sum(r["source"] == "self" for r in sel)
        out["painted_from_another_person"] = sum(bool(r.get("wrong_person")) for r in sel)
        return out

    result["all"] = summary(rows)
    result["main_person"] = summary([r for r in rows if r["main"]])
    result["other_people"] = summary([r for r in rows if not r["main"]])
    stats = runs["self"]["stats"]
    result["learned"] = stats.learned
    result["first_pass_s"] = stats.scan_seconds
    result["looks"] = selfref.looks if selfref is not None else 0
    result["rows"] = rows
    if args.runs:
        with tempfile.TemporaryDirectory(prefix="lostface-selfref-tp-") as tmpdir:
            tmp = Path(tmpdir)
            masked = tmp / "masked.mp4"
            mask_frames(base, detector, args.kind, span, masked)
            result["throughput"] = {"640x360": throughput(masked, tmp, args.runs, args.overrides)}
            big = tmp / "masked_720p.mp4"
            enlarge(masked, big, base.video)
            result["throughput"]["1280x720"] = throughput(big, tmp, args.runs, args.overrides)
            longer = tmp / "masked_x4.mp4"
            repeat(masked, longer, 4, base.video)
            short = result["throughput"]["640x360"]
            long = throughput(longer, tmp, args.runs, args.overrides)
            added = {k: long["wall_s"][k] - short["wall_s"][k] for k in long["wall_s"]}
            long["added_27s"] = {
                "wall_s": added,
                "two_pass_vs_plain": added["plain"] / added["self"],
                "one_pass_vs_plain": added["plain"] / added["off"],
            }
            result["throughput"]["640x360, played 4 times"] = long
    print(
        f"masked frames {args.frames}; learned: {result['learned']} "
        f"(first pass {result['first_pass_s']:.1f} s, {result['looks']} embeddings; dlib's "
        f"models load in {result['dlib_load_s']:.2f} s); learned faces' distance to the "
        f"singer's photo: {result['learned_to_reference']}"
    )
    print(
        f"{'identity distance (mean)':30s} {'frames':>6s} "
        + " ".join(f"{k:>8s}" for k in ("masked", *RUNS))
    )
    for group in ("all", "main_person", "other_people"):
        s = result[group]
        cells = " ".join(
            f"{s[k]['mean']:8.3f}" if s[k] else f"{'-':>8s}" for k in ("masked", *RUNS)
        )
        print(f"{group:30s} {s['frames']:6d} {cells}")
    for group in ("all", "main_person"):
        s = result[group]
        if s["self"] and s["neutral"] and s["given"]:
            print(
                f"{group}: self {s['self']['mean']:.3f} vs neutral {s['neutral']['mean']:.3f} "
                f"(target: below), vs given {s['given']['mean']:.3f} (target: within 0.03: "
                f"{s['self']['mean'] - s['given']['mean']:+.3f})"
            )
    s = result["all"]
    print(
        f"painted from learned people: {s['painted_from_self']}/{s['frames']} masked frames; "
        f"from another person's frames: {s['painted_from_another_person']} (target 0)"
    )
    for size, t in result.get("throughput", {}).items():
        target = " (target >= 0.45)" if size.endswith("4 times") else ""
        walls = {k: round(v, 2) for k, v in t["wall_s"].items()}
        print(
            f"{size} throughput vs plain decode + encode, whole processes: two passes "
            f"x{t['two_pass_vs_plain']:.2f}{target}, one pass x{t['one_pass_vs_plain']:.2f}; "
            f"first pass {t['first_pass_s'] or 0:.2f} s; wall {walls}"
        )
        if "added_27s" in t:
            a = t["added_27s"]
            print(
                f"  the added 27 s of video alone: two passes x{a['two_pass_vs_plain']:.2f}, "
                f"one pass x{a['one_pass_vs_plain']:.2f}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
