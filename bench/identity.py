"""The right person's face: how often the identity gate paints a masked face from the
reference of someone else, and how often from the person's own.

The stage clip (../shared/data/video/stage_clip.mp4) gets a synthetic mask on one person per
shot, as bench/quality.py draws it; it is restored by the video pipeline with one named
reference, the singer (`--reference singer=../shared/data/identity/stage_clip_reference.png`),
and `--tracks` says per frame which identity each face was given. Who wears the mask on each
frame is told by dlib on the unmasked original (as bench/quality.py does).

    python bench/identity.py [--set KEY=VALUE ...]

Prints the shares, the gate's cost and how long covered keyframes take from being sent to
being painted (the lag of a painted face behind its head), and writes
bench/results/identity.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quality import CLIP, CLIP_REFERENCE, box_iou, masked_person, smooth_landmarks  # noqa: E402

from lostface.config import load_settings  # noqa: E402
from lostface.factory import build_detector, build_stages  # noqa: E402
from lostface.frame import Frame  # noqa: E402
from lostface.metrics import SAME_PERSON_DISTANCE, IdentityMetric  # noqa: E402
from lostface.runner import process_video  # noqa: E402
from lostface.stream.video import VideoReader, VideoWriter  # noqa: E402
from lostface.synthetic import draw_mask  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
NAME = "singer"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--kind", default="surgical")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "identity.json")
    args = ap.parse_args(argv)
    if not CLIP.is_file() or not CLIP_REFERENCE.is_file():
        print(f"{CLIP} or {CLIP_REFERENCE} is absent: it needs ../shared/data", file=sys.stderr)
        return 2
    settings = load_settings(overrides=args.overrides)
    detector = build_detector(settings)
    metric = IdentityMetric()
    ref_anchor = metric.anchor(cv2.imread(str(CLIP_REFERENCE)))
    with VideoReader(CLIP) as reader:
        info = reader.info
        frames = [f for f in reader.items() if isinstance(f, Frame)]
    found = [detector.detect(f.image) for f in frames]
    picks = masked_person(found, [f.image for f in frames])
    lms = [
        None if i is None else d.landmarks[i][:5].astype(np.float64)
        for d, i in zip(found, picks, strict=True)
    ]
    boxes = [None if i is None else d.boxes[i].copy() for d, i in zip(found, picks, strict=True)]
    lms = smooth_landmarks(lms, boxes, [f.image for f in frames], 2)
    main_person: list[bool | None] = []
    with tempfile.TemporaryDirectory(prefix="lostface-identity-") as tmp:
        masked = Path(tmp) / "masked.mp4"
        writer = VideoWriter(masked, info, settings.video, None)
        for f, lm, box in zip(frames, lms, boxes, strict=True):
            if lm is None or box is None:
                main_person.append(None)
            else:
                anchor = metric.anchor(f.image, box)
                main_person.append(
                    None
                    if anchor is None or ref_anchor is None
                    else IdentityMetric.between(anchor, ref_anchor) < SAME_PERSON_DISTANCE
                )
                f.image = draw_mask(f.image, lm, kind=args.kind, rng=np.random.default_rng(0)).image
            writer.write(f)
        writer.commit()
        stages = build_stages(settings, references=[f"{NAME}={CLIP_REFERENCE}"], detector=detector)
        tracks = Path(tmp) / "tracks.jsonl"
        stats = process_video(masked, Path(tmp) / "out.mp4", settings, stages, tracks)
        records = [json.loads(line) for line in tracks.read_text().splitlines()]
    counts = {"own": [0, 0], "others": [0, 0]}  # [painted from his reference, frames]
    for rec, box, who in zip(records, boxes, main_person, strict=False):
        if box is None or who is None:
            continue
        group = "own" if who else "others"
        counts[group][1] += 1
        faces = [f for f in rec["faces"] if box_iou(np.array(f["box"]), box) > 0.3]
        if any(f["masked"] and f.get("identity") == NAME for f in faces):
            counts[group][0] += 1
    result = {
        "settings": args.overrides,
        "own_frames": counts["own"][1],
        "own_painted_from_reference": counts["own"][0] / max(counts["own"][1], 1),
        "others_frames": counts["others"][1],
        "others_painted_from_reference": counts["others"][0] / max(counts["others"][1], 1),
    }
    gate = stages.painter.gate
    t = stats.timings
    ident, keyframe = t.get("identity", {}), [t.get(k, {}) for k in ("segment", "restore")]
    result["gate"] = {
        "covered_keyframes": int(ident.get("count", 0)),
        "looks": gate.looks if gate is not None else 0,
        "identity_s": float(ident.get("total_s", 0.0)),
        "segment_and_restore_s": float(sum(k.get("total_s", 0.0) for k in keyframe)),
    }
    wait = t.get("keyframe_wait", {})
    result["keyframe_wait"] = {
        "count": int(wait.get("count", 0)),
        "p50_s": float(wait.get("p50_ms", 0.0)) / 1000,
        "p95_s": float(wait.get("p95_ms", 0.0)) / 1000,
    }
    g = result["gate"]
    print(
        f"identity gate: {g['looks']} looks over {g['covered_keyframes']} covered keyframes, "
        f"{g['identity_s']:.2f} s against {g['segment_and_restore_s']:.2f} s of segmenting and "
        "painting (keyframe worker)"
    )
    w = result["keyframe_wait"]
    print(
        f"covered keyframes: {w['count']}, from sent to painted median {w['p50_s']:.2f} s, "
        f"95th percentile {w['p95_s']:.2f} s (how long a painted face lags its keyframe)"
    )
    print(
        f"singer's masked frames painted from his reference: {counts['own'][0]}/"
        f"{counts['own'][1]} ({100 * result['own_painted_from_reference']:.1f}%, target >= 80%)"
    )
    print(
        f"other people's masked frames painted from his reference: {counts['others'][0]}/"
        f"{counts['others'][1]} ({100 * result['others_painted_from_reference']:.1f}%, "
        "target <= 5%)"
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
