"""Paint only under the covering: where the product changes pixels on synthetic masks.

Synthetic masks (lostface.synthetic, ground truth known) are drawn on the largest face of
real photos (../shared/data/unmasked, every kind) and of frames of
../shared/data/video/stage_clip.mp4, and each image is restored as `lostface restore` does
(restore_image: detector, painter, compositor; the neutral fill, no reference). Per face:

- eyes and brows unchanged: fewer than 1% of the pixels of the brows-and-eyes band (from the
  unmasked face's own landmarks, outside the covering and its feather band) changed;
- outside: pixels changed outside the covered region dilated by the feather band
  (mask.dilate + mask.feather_radius canonical pixels, in frame pixels), over the covered
  region's area;
- recall: the share of the covering's pixels that were painted (changed), over the faces
  judged covered (a face left alone is counted in painted_share, not here);
- the fill's colour, on the faces painted: how far the median colour painted over the
  covering lies from the median colour of the skin it hides (CIE76 delta E, Lab with L
  0..100; and the lightness alone, positive when painted lighter), and the PSNR there.

A pixel counts as changed when any channel moved by more than 2 levels.

    python bench/paint_region.py [--photos 100] [--frames 90] [--set KEY=VALUE ...] [--tiles DIR]
                                 [--ear-loops] [--video]

--ear-loops draws surgical coverings only, with their elastic ear loops (thin lines of the
material from the covering's side corners back to the ears, part of the truth), and also
prints the recall on the loops' own pixels: the loops a real surgical mask shows, which the
covered region does not follow far from the covering.

--video also runs the whole stage clip three times, a synthetic covering of each kind (one
material for the whole clip) drawn in every frame on one person per shot (the largest face
when the shot starts; landmarks averaged over +-2 frames of the shot, as bench/quality.py
draws it), through `lostface run`'s pipeline (synchronous: keyframes in the
loop): the same figures per face and frame, on keyframes and on the frames between them,
where the patch painted on a keyframe follows the tracked face. Changes are read from the
compositor itself (the frame before and after it paints, not the encoded file, whose
compression moves pixels everywhere), with the invisible watermark off.

Prints medians and 95th percentiles and writes bench/results/paint_region.json
(paint_region_loops.json with --ear-loops).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

from lostface.config import Settings, load_settings
from lostface.factory import build_stages
from lostface.restore import align
from lostface.restore_image import restore_image
from lostface.stream.video import read_frames
from lostface.synthetic import KINDS, draw_mask

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
CHANGED = 2  # levels
EYE_BAND = (62, 120, 46, 210)  # canonical rows y0..y1, columns x0..x1: brows and eyes


def largest(detector, image: np.ndarray) -> np.ndarray | None:
    detector.reset()  # each photo searched as `lostface restore` searches it
    d = detector.detect(image)
    if len(d) == 0:
        return None
    area = (d.boxes[:, 2] - d.boxes[:, 0]) * (d.boxes[:, 3] - d.boxes[:, 1])
    return d.landmarks[int(np.argmax(area))][:5].astype(np.float64)


def eye_band(lm: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The brows-and-eyes band of a face in frame pixels (from its canonical position)."""
    y0, y1, x0, x1 = EYE_BAND
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)
    pts = align.apply(align.invert(align.to_canonical(lm)), corners)
    m = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(m, np.round(pts).astype(np.int32), 1)
    return m > 0


def one(
    stages,
    settings: Settings,
    image: np.ndarray,
    lm: np.ndarray,
    kind: str,
    seed: int,
    ear_loops: bool = False,
) -> tuple[dict, np.ndarray] | None:
    syn = draw_mask(image, lm, kind, rng=seed, ear_loops=ear_loops)
    truth = syn.covered
    # the loops alone: what the same covering drawn without them does not cover
    loops = truth & ~draw_mask(image, lm, kind, rng=seed).covered if ear_loops else None
    area = int(truth.sum())
    if area < 50:
        return None
    out = restore_image(syn.image, stages, settings).image
    changed = np.abs(out.astype(np.int16) - syn.image).max(axis=2) > CHANGED
    scale = align.scale_of(align.to_canonical(lm))  # canonical px per frame px
    band = (settings.mask.dilate + settings.mask.feather_radius) / scale
    r = max(1, int(np.ceil(band)))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    allowed = cv2.dilate(truth.astype(np.uint8), kernel) > 0
    eyes = eye_band(lm, image.shape) & ~allowed
    painted = truth & changed
    de, dl = colour_error(out, image, painted) if painted.any() else (0.0, 0.0)
    mse = float(((out[truth].astype(np.float32) - image[truth]) ** 2).mean())
    row = {
        "kind": kind,
        "recall": float(changed[truth].mean()),
        "outside": float((changed & ~allowed).sum() / area),
        "eyes_changed": float(changed[eyes].mean()) if eyes.any() else 0.0,
        "painted": bool(changed[truth].mean() > 0.5),
        "face_px": float(align.CANON_SIZE / scale * 0.65),
        "colour_de": de,
        "colour_dl": dl,
        "psnr": 10.0 * float(np.log10(255.0**2 / max(mse, 1e-6))),
    }
    if loops is not None and loops.any():
        row["loops_recall"] = float(changed[loops].mean())
    vis = np.hstack([syn.image, out])
    return row, vis


def video_rows(
    settings: Settings, kind: str, worst: list[tuple[float, np.ndarray]] | None = None
) -> list[dict]:
    """The stage clip with a synthetic covering on one person per shot in every frame,
    through the video pipeline (synchronous); per frame with a covering, what the compositor
    changed (see --video)."""
    import copy
    import tempfile

    from quality import masked_person, smooth_landmarks, write_masked

    from lostface.frame import Frame
    from lostface.runner import process_video
    from lostface.stream.video import VideoReader

    settings = copy.deepcopy(settings)
    # the frame's invisible watermark moves every pixel of a painted face's crop by a level or
    # two (more than a photo's); what is painted is what this measures
    settings.provenance.watermark = False
    stages = build_stages(settings)
    with VideoReader(DATA / "video" / "stage_clip.mp4") as reader:
        info = reader.info
        frames = [item for item in reader.items() if isinstance(item, Frame)]
    images = [f.image for f in frames]
    found = [stages.detector.detect(im) for im in images]
    # a covering stays on one person: the largest face when a shot starts, then the same
    # person; landmarks averaged over +-2 frames of the shot (as bench/quality.py draws it)
    picks = masked_person(found, images)
    boxes = [None if k is None else d.boxes[k] for d, k in zip(found, picks, strict=True)]
    lms = smooth_landmarks(
        [
            None if k is None else d.landmarks[k][:5].astype(np.float64)
            for d, k in zip(found, picks, strict=True)
        ],
        boxes,
        images,
        2,
    )
    changed = [np.zeros(f.image.shape[:2], bool) for f in frames]
    keyframe = [False] * len(frames)  # a patch painted on this very frame was composited
    compositor = stages.compositor
    composite = compositor.composite
    at = {"frame": 0}
    begin = compositor.begin_frame

    def begin_frame(index: int) -> None:
        at["frame"] = index
        begin(index)

    painted_frames: dict[int, np.ndarray] = {}

    def traced(image, track, patch):  # type: ignore[no-untyped-def]
        before = image.copy()
        painted = composite(image, track, patch)
        i = at["frame"]
        if worst is not None:
            painted_frames[i] = image.copy()
        if i < len(changed):
            changed[i] |= np.abs(image.astype(np.int16) - before).max(axis=2) > CHANGED
            keyframe[i] |= patch.frame_index == i
        return painted

    compositor.begin_frame = begin_frame  # type: ignore[method-assign]
    compositor.composite = traced  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory(prefix="lostface-paint-region-") as tmp:
        masked = Path(tmp) / "masked.mp4"
        truths = write_masked(frames, lms, kind, masked, info, settings)
        process_video(masked, Path(tmp) / "restored.mp4", settings, stages, synchronous=True)
    rows = []
    for i, (lm, truth) in enumerate(zip(lms, truths, strict=True)):
        if lm is None or int(truth.sum()) < 50:
            continue
        ch = changed[i]
        scale = align.scale_of(align.to_canonical(lm))
        r = max(1, int(np.ceil((settings.mask.dilate + settings.mask.feather_radius) / scale)))
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
        allowed = cv2.dilate(truth.astype(np.uint8), kernel) > 0
        eyes = eye_band(lm, truth.shape) & ~allowed
        outside = float((ch & ~allowed).sum() / truth.sum())
        if worst is not None and i in painted_frames:
            # the frame as painted, the changes beyond the feather band in magenta and the
            # eyes' band's in red, the covering's outline in green
            vis = painted_frames[i].copy()
            vis[ch & ~allowed] = (255, 0, 255)
            vis[ch & eyes] = (0, 0, 255)
            contours, _ = cv2.findContours(
                truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE
            )
            cv2.drawContours(vis, contours, -1, (0, 255, 0), 1)
            worst.append((-outside - float(ch[eyes].mean() if eyes.any() else 0.0), vis))
        rows.append(
            {
                "frame": i,
                "kind": kind,
                "recall": float(ch[truth].mean()),
                "outside": outside,
                "eyes_changed": float(ch[eyes].mean()) if eyes.any() else 0.0,
                "painted": bool(ch[truth].mean() > 0.5),
                "face_px": float(align.CANON_SIZE / scale * 0.65),
                "keyframe": keyframe[i],
            }
        )
    return rows


def summary(rows: list[dict]) -> dict:
    if not rows:
        return {"faces": 0}
    rec = np.array([r["recall"] for r in rows if r["painted"]] or [0.0])
    # the fill's colour: on photos and frames restored on their own (not --video's rows)
    coloured = [r for r in rows if r["painted"] and "colour_de" in r]
    de = np.array([r["colour_de"] for r in coloured] or [0.0])
    dl = np.array([r["colour_dl"] for r in coloured] or [0.0])
    psnr = np.array([r["psnr"] for r in coloured] or [0.0])
    out = np.array([r["outside"] for r in rows])
    eyes = np.array([r["eyes_changed"] for r in rows])
    loops = np.array([r["loops_recall"] for r in rows if r["painted"] and "loops_recall" in r])
    extra = {}
    if len(loops):
        extra = {
            "loops_faces": len(loops),
            "loops_recall_mean": float(loops.mean()),
            "loops_painted_share": float((loops >= 0.9).mean()),
        }
    return {
        **extra,
        "faces": len(rows),
        "eyes_unchanged_share": float((eyes < 0.01).mean()),
        "outside_median": float(np.median(out)),
        "outside_p95": float(np.percentile(out, 95)),
        "recall_median": float(np.median(rec)),
        "recall_mean": float(rec.mean()),
        "recall_p5": float(np.percentile(rec, 5)),
        "painted_share": float(np.mean([r["painted"] for r in rows])),
        "colour_de_median": float(np.median(de)),
        "colour_de_p90": float(np.percentile(de, 90)),
        "colour_dl_median": float(np.median(dl)),
        "psnr_mean": float(psnr.mean()),
    }


def colour_error(out: np.ndarray, original: np.ndarray, where: np.ndarray) -> tuple[float, float]:
    """Delta E (CIE76) between the median colours of two images at `where`, and the
    lightness difference (out minus original), Lab with L 0..100."""
    lab = [
        np.median(cv2.cvtColor(x.astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)[where], axis=0)
        for x in (out, original)
    ]
    return float(np.linalg.norm(lab[0] - lab[1])), float(lab[0][0] - lab[1][0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=100, help="unmasked photos (every kind each)")
    ap.add_argument("--frames", type=int, default=90, help="stage-clip frames (every 3rd)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--tiles", type=Path, default=None, help="write worst cases as PNG here")
    ap.add_argument("--out", type=Path, default=RESULTS / "paint_region.json")
    ap.add_argument(
        "--ear-loops",
        action="store_true",
        help="surgical coverings with their ear loops (part of the truth): recall on the loops",
    )
    ap.add_argument(
        "--video",
        action="store_true",
        help="also the whole stage clip through the video pipeline (keyframes and between)",
    )
    args = ap.parse_args(argv)
    if not (DATA / "unmasked").is_dir():
        print(
            f"{DATA / 'unmasked'} is absent: this benchmark needs ../shared/data", file=sys.stderr
        )
        return 2
    settings = load_settings(overrides=[*args.overrides, "restore.engine=neutral"])
    stages = build_stages(settings)
    rows: dict[str, list[dict]] = {"photos": [], "stage_clip": []}
    worst: list[tuple[float, np.ndarray]] = []
    files = sorted((DATA / "unmasked").glob("*.jpg"))
    step = max(1, len(files) // max(args.photos, 1))
    for i, path in enumerate(files[::step][: args.photos]):
        image = cv2.imread(str(path))
        lm = largest(stages.detector, image) if image is not None else None
        if lm is None:
            continue
        for j, kind in enumerate(("surgical",) if args.ear_loops else KINDS):
            got = one(stages, settings, image, lm, kind, 1000 * i + j, args.ear_loops)
            if got is not None:
                rows["photos"].append({"name": path.name, **got[0]})
                if got[0]["painted"]:
                    worst.append((got[0]["recall"] - got[0]["outside"], got[1]))
    clip = DATA / "video" / "stage_clip.mp4"
    if args.frames and clip.is_file():
        for k, frame in enumerate(read_frames(clip)[: 3 * args.frames : 3]):
            lm = largest(stages.detector, frame)
            if lm is None:
                continue
            kind = "surgical" if args.ear_loops else KINDS[k % len(KINDS)]
            got = one(stages, settings, frame, lm, kind, k, args.ear_loops)
            if got is not None:
                rows["stage_clip"].append({"frame": 3 * k, **got[0]})
    if args.video and clip.is_file():
        video_worst: list[tuple[float, np.ndarray]] | None = [] if args.tiles else None
        rows["stage_clip_video"] = [
            r for kind in KINDS for r in video_rows(settings, kind, video_worst)
        ]
    result = {"settings": args.overrides, **{k: summary(v) for k, v in rows.items()}}
    if "stage_clip_video" in rows:
        # the keyframes' own frames, and the frames a patch is carried onto
        video = rows["stage_clip_video"]
        result["video_keyframes"] = summary([r for r in video if r["keyframe"]])
        result["video_between"] = summary([r for r in video if not r["keyframe"]])
    result["rows"] = rows
    for name in rows:
        s = result[name]
        if not s["faces"]:
            continue
        print(
            f"{name} ({s['faces']} faces): eyes and brows unchanged on "
            f"{100 * s['eyes_unchanged_share']:.1f}% (target >= 99%); changed outside the "
            f"covering + feather band {100 * s['outside_median']:.2f}% of its area (median, "
            f"target <= 1%; p95 {100 * s['outside_p95']:.1f}%); recall median "
            f"{s['recall_median']:.3f}, mean {s['recall_mean']:.3f} (target >= 0.98), p5 "
            f"{s['recall_p5']:.3f} (faces painted); faces painted "
            f"{100 * s['painted_share']:.1f}%"
        )
        if "loops_faces" in s:
            print(
                f"  ear loops ({s['loops_faces']} faces painted): recall mean "
                f"{s['loops_recall_mean']:.3f}; loops painted (recall >= 0.9) on "
                f"{100 * s['loops_painted_share']:.1f}% of the faces"
            )
        if name == "stage_clip_video":
            for part, key in (("keyframes", "video_keyframes"), ("between", "video_between")):
                v = result[key]
                if v["faces"]:
                    print(
                        f"  {part} ({v['faces']} faces): eyes and brows unchanged on "
                        f"{100 * v['eyes_unchanged_share']:.1f}%; changed outside "
                        f"{100 * v['outside_median']:.2f}% (p95 {100 * v['outside_p95']:.1f}%); "
                        f"recall mean {v['recall_mean']:.3f}; painted "
                        f"{100 * v['painted_share']:.1f}%"
                    )
            continue  # the fill's colour is read on the photos and frames above
        print(
            f"  the fill's colour against the skin it hides: delta E median "
            f"{s['colour_de_median']:.2f} (p90 {s['colour_de_p90']:.2f}), lightness median "
            f"{s['colour_dl_median']:+.2f}; covered-region PSNR mean {s['psnr_mean']:.2f} dB"
        )
    out = args.out
    if args.ear_loops and out == RESULTS / "paint_region.json":
        out = RESULTS / "paint_region_loops.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if args.tiles is not None:
        args.tiles.mkdir(parents=True, exist_ok=True)
        worst.sort(key=lambda t: t[0])
        for n, (_, vis) in enumerate(worst[:6]):
            cv2.imwrite(str(args.tiles / f"worst_{n}.png"), vis)
        if args.video and video_worst:
            video_worst.sort(key=lambda t: t[0])
            for n, (_, vis) in enumerate(video_worst[:12]):
                cv2.imwrite(str(args.tiles / f"video_worst_{n}.png"), vis)
    return 0


if __name__ == "__main__":
    sys.exit(main())
