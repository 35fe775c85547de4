"""Do no harm: how often open faces are judged covered (and so painted), and how often real
coverings are missed.

- photos: the largest face of every photo in ../shared/data/unmasked (must be left alone) and
  ../shared/data/masked (real coverings, must be judged covered), through the product's own
  painter (detector, alignment, segmenter), as `lostface restore` judges them; in the unmasked
  photos every other face found too (none may be judged covered);
- regions: of the masked photos judged covered, those whose covered region holds under half of
  the zone between the nose tip and the mouth (the covering left in sight), and those whose
  region lies along a side edge of the aligned crop on 20 rows or more (a turned face's
  covering reaching past the crop, where the compositor fills what lies beyond);
- clips: real footage in which nobody wears a mask (../shared/data/video/stage_clip.mp4 and
  the demo's carphone clip) through the video pipeline (runner.process_video, `--tracks`):
  the frames with a face judged covered are frames with a painted face.

    python bench/harm.py [--photos N] [--no-clips] [--dim K] [--bright K] [--set KEY=VALUE ...]
                         [--tiles DIR]
    python bench/harm.py --folders UNMASKED MASKED [--set KEY=VALUE ...]

--folders judges the largest face of every photo in two other folders instead, less the photos
../shared/data holds (matched by a small thumbnail): the dataset that ../shared/data's photos
were taken from (the `dataset/without_mask` and `dataset/with_mask` folders of the public
repository chandrikadeb7/Face-Mask-Detection) checks that the decision was not fitted to the
photos here. Its photos are not part of the project; fetch them yourself. Most of its faces
are tight crops that the picture's edge cuts: the figures are printed for those and the others
apart.

--dim K also judges every photo darkened K times (a night scene, a dim stage), and --bright K
every photo brightened K times, clipped to white (an overexposed webcam, a face in the sun):
the faces are found on the photo as it is, so only the decision changes.

Prints the figures and writes bench/results/harm.json; --tiles writes PNG mosaics of the
faces that were judged wrongly (aligned crops, with their scores).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

from lostface.config import Settings, load_settings
from lostface.demo import carphone_path
from lostface.factory import build_stages
from lostface.registry import build_detector, build_painter
from lostface.restore import align, regions
from lostface.restore.painter import PaintJob
from lostface.runner import process_video

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"
# Photos of ../shared/data/unmasked whose face is covered all the same (looked at: a man holds a
# blue cloth over his nose and mouth; the dataset's `without_mask` folder holds them): judged
# covered, they are painted as they should be. The share of open faces judged covered is
# printed without them too.
COVERED_IN_UNMASKED = ("0106.jpg", "0248.jpg")
# Canonical crop: from the nose tip to just below the mouth, between its corners. Every face
# covering hides it; a region that holds little of it left the covering in sight.
_NOSE, _LEFT, _RIGHT = align.CANON_LANDMARKS[2], align.CANON_LANDMARKS[3], align.CANON_LANDMARKS[4]
MOUTH_ZONE = np.zeros(align.CANON_SHAPE, bool)
MOUTH_ZONE[int(_NOSE[1]) : int(_LEFT[1]) + 8, int(_LEFT[0]) : int(_RIGHT[0]) + 1] = True
SIDE_COLUMNS = 3  # a region "at a side edge" holds pixels in the crop's 3 outermost columns
SIDE_ROWS = 20  # ... on this many rows or more
LOWER_FACE = regions.lower_face_mask() > 0


def lower_face_in_sight(shape: tuple[int, ...], landmarks: np.ndarray) -> float:
    """Share of the aligned crop's lower face that lies inside a picture of this shape (under
    1: the picture's edge cuts the face, and the crop repeats the edge's pixels there)."""
    inside = align.in_picture(shape, align.to_canonical(landmarks))
    return 1.0 if inside is None else round(float(inside[LOWER_FACE].mean()), 3)


def _thumb(image: np.ndarray) -> np.ndarray:
    """A 16x16 grey thumbnail, normalised, and the aspect ratio: the same photo resized or
    saved again matches it."""
    g = cv2.resize(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), (16, 16), interpolation=cv2.INTER_AREA)
    g = g.astype(np.float32).ravel()
    return np.concatenate([(g - g.mean()) / (g.std() + 1e-6), [image.shape[1] / image.shape[0]]])


def held_out(folder: Path, shared: Path) -> set[str]:
    """The photos of `folder` that `shared` does not hold (../shared/data took its photos from
    a public dataset; its other photos are a check that the decision was not fitted to ours)."""
    known = np.array([_thumb(cv2.imread(str(p))) for p in sorted(shared.iterdir())])
    keep = set()
    for path in sorted(folder.iterdir()):
        image = cv2.imread(str(path))
        if image is None:
            continue
        t = _thumb(image)
        near = np.abs(known[:, :-1] - t[:-1]).mean(axis=1) + 5 * np.abs(known[:, -1] - t[-1])
        if near.min() > 0.15:
            keep.add(path.name)
    return keep


def photos(
    settings: Settings,
    folder: Path,
    limit: int,
    dim: float = 1.0,
    every_face: bool = False,
    bright: float = 1.0,
    only: set[str] | None = None,
    shifts: bool = False,
) -> dict:
    """The covered/not-covered decision on the largest face of each photo in `folder`
    (darkened `dim` times, or brightened `bright` times and clipped, after the face was
    found); with every_face, also on each other face found (in an unmasked photo none may be
    judged covered)."""
    detector = build_detector(settings)
    painter = build_painter(settings)
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".jpg", ".png"))
    if only is not None:
        files = [p for p in files if p.name in only]
    if limit:
        files = files[:limit]
    covered: list[str] = []
    scores: dict[str, float] = {}
    no_face: list[str] = []
    tiles: dict[str, np.ndarray] = {}
    moved: dict[str, float] = {}
    sizes: dict[str, int] = {}  # the short side of each photo as read
    in_sight: dict[str, float] = {}  # share of the largest face's lower face in the picture
    held: dict[str, float] = {}  # faces judged covered: share of the mouth zone their region holds
    at_side: dict[str, int] = {}  # faces judged covered: rows of their region at a side edge
    others_found = 0
    others_covered: dict[str, float] = {}  # "photo#k" (face k, detector order): its score
    for path in files:
        image = cv2.imread(str(path))
        if image is None:
            continue
        sizes[path.name] = min(image.shape[:2])
        if max(image.shape[:2]) > 1024:  # as ../shared/data's photos were resized
            k = 1024 / max(image.shape[:2])
            image = cv2.resize(image, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        detector.reset()  # each photo searched as `lostface restore` searches it
        dets = detector.detect(image)
        if len(dets) == 0:
            no_face.append(path.name)
            continue
        area = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
        i = int(np.argmax(area))
        if dim != 1.0:
            image = (image.astype(np.float32) / dim).astype(np.uint8)
        if bright != 1.0:
            image = np.clip(image.astype(np.float32) * bright, 0, 255).astype(np.uint8)
        job = PaintJob.of_detection(image, dets, i, settings.mask.closer_look_below, track_id=0)
        if job is None:
            no_face.append(path.name)
            continue
        painter.reset()
        painted = painter.judge(job)
        scores[path.name] = round(float(painted.score), 4)
        in_sight[path.name] = lower_face_in_sight(image.shape, dets.landmarks[i])
        if painted.covered:
            covered.append(path.name)
            if painted.cover is not None:
                hard = painted.cover.hard
                held[path.name] = round(float(hard[MOUTH_ZONE].mean()), 4)
                at_side[path.name] = int(
                    max(hard[:, :SIDE_COLUMNS].any(1).sum(), hard[:, -SIDE_COLUMNS:].any(1).sum())
                )
        tiles[path.name] = align.warp_to_canonical(image, align.to_canonical(dets.landmarks[i]))
        if shifts:  # how far a neutral covering moves the face (the segmenter's second look)
            from lostface.restore.identity import cover_shift

            moved[path.name] = round(cover_shift(tiles[path.name]), 4)
        for k in range(len(dets)) if every_face else ():
            other = (
                PaintJob.of_detection(image, dets, k, settings.mask.closer_look_below)
                if k != i
                else None
            )
            if other is None:
                continue
            painter.reset()
            decision = painter.judge(other)
            others_found += 1  # (faces narrower than mask.min_face count, never covered)
            if decision.covered:
                others_covered[f"{path.name}#{k}"] = round(float(decision.score), 4)
                tiles[f"{path.name}#{k}"] = align.warp_to_canonical(
                    image, align.to_canonical(dets.landmarks[k])
                )
    judged = len(scores)
    extra = {}
    if every_face:
        with_any = {n.split("#")[0] for n in others_covered} | set(covered)
        extra = {
            "other_faces_found": others_found,
            "other_faces_covered": others_covered,
            "photos_with_any_face_judged_covered": sorted(with_any),
        }
    return {
        "photos": len(files),
        "faces": judged,
        "no_face": no_face,
        "judged_covered": len(covered),
        "share_judged_covered": len(covered) / max(judged, 1),
        "covered": covered,
        "scores": scores,
        **({"cover_shift": moved} if shifts else {}),
        "short_side": sizes,
        "lower_face_in_sight": in_sight,
        "region_holds_mouth_zone": held,
        "region_rows_at_side_edge": at_side,
        **extra,
        "_tiles": tiles,
    }


def clip(settings: Settings, path: Path, synchronous: bool) -> dict:
    """Frames of an unmasked clip with a face judged covered (painted), from `--tracks`."""
    stages = build_stages(settings)
    with tempfile.TemporaryDirectory(prefix="lostface-harm-") as tmp:
        tracks = Path(tmp) / "tracks.jsonl"
        process_video(path, Path(tmp) / "out.mp4", settings, stages, tracks, synchronous)
        records = [json.loads(line) for line in tracks.read_text().splitlines()]
    judged = [r["frame"] for r in records if any(f["masked"] for f in r["faces"])]
    return {
        "frames": len(records),
        "frames_with_a_face_judged_covered": len(judged),
        "frames_judged": judged,
        "face_frames": sum(len(r["faces"]) for r in records),
        "face_frames_judged_covered": sum(1 for r in records for f in r["faces"] if f["masked"]),
    }


def mosaic(faces: list[tuple[str, float, np.ndarray]], path: Path, per_row: int = 8) -> None:
    tiles = []
    for name, score, face in faces:
        t = cv2.resize(face, (128, 144), interpolation=cv2.INTER_AREA)
        cv2.putText(t, f"{name} {score:.2f}", (2, 12), 0, 0.35, (0, 255, 255), 1, cv2.LINE_AA)
        tiles.append(t)
    if not tiles:
        return
    tiles += [np.zeros_like(tiles[0])] * (-len(tiles) % per_row)
    rows = [np.hstack(tiles[r : r + per_row]) for r in range(0, len(tiles), per_row)]
    cv2.imwrite(str(path), np.vstack(rows))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--photos", type=int, default=0, help="photos per folder (0: all)")
    ap.add_argument("--no-clips", action="store_true", help="photos only")
    ap.add_argument("--synchronous", action="store_true", help="keyframe work in the loop")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--dim", type=float, default=0.0, help="also judge photos darkened K times")
    ap.add_argument(
        "--bright", type=float, default=0.0, help="also judge photos brightened K times, clipped"
    )
    ap.add_argument("--tiles", type=Path, default=None, help="write mosaics of wrong decisions")
    ap.add_argument("--out", type=Path, default=RESULTS / "harm.json")
    ap.add_argument(
        "--shifts",
        action="store_true",
        help="also how far a neutral covering moves each largest face in dlib's embedding",
    )
    ap.add_argument(
        "--folders",
        nargs=2,
        type=Path,
        metavar=("UNMASKED", "MASKED"),
        help="judge the photos of these folders instead (e.g. the dataset ../shared/data's "
        "photos come from), less those ../shared/data holds; writes harm_folders.json",
    )
    args = ap.parse_args(argv)
    if args.folders:
        return other_folders(args)
    for part in ("unmasked", "masked", "video/stage_clip.mp4"):
        if not (DATA / part).exists():
            print(f"{DATA / part} is absent: this benchmark needs ../shared/data", file=sys.stderr)
            return 2
    settings = load_settings(overrides=args.overrides)
    result: dict = {"settings": args.overrides}
    for kind in ("unmasked", "masked"):
        r = photos(
            settings, DATA / kind, args.photos, every_face=kind == "unmasked", shifts=args.shifts
        )
        tiles = r.pop("_tiles")
        result[kind] = r
        wrong = (
            r["covered"] + list(r["other_faces_covered"])
            if kind == "unmasked"
            else [n for n in r["scores"] if n not in set(r["covered"])]
        )
        if args.tiles is not None:
            args.tiles.mkdir(parents=True, exist_ok=True)
            score = {**r["scores"], **r.get("other_faces_covered", {})}
            mosaic([(n, score[n], tiles[n]) for n in wrong], args.tiles / f"wrong_{kind}.png")
    u, m = result["unmasked"], result["masked"]
    print(
        f"unmasked photos judged covered: {u['judged_covered']}/{u['faces']} "
        f"({100 * u['share_judged_covered']:.1f}%, target <= 0.5%): {', '.join(u['covered'])}"
    )
    open_faces = [n for n in u["scores"] if n not in COVERED_IN_UNMASKED]
    open_covered = [n for n in u["covered"] if n not in COVERED_IN_UNMASKED]
    u["open_faces"], u["open_faces_judged_covered"] = len(open_faces), open_covered
    print(
        f"  the open faces ({', '.join(COVERED_IN_UNMASKED)} show a cloth held over the nose "
        f"and mouth): {len(open_covered)}/{len(open_faces)} "
        f"({100 * len(open_covered) / max(len(open_faces), 1):.1f}%) judged covered"
        + (f": {', '.join(open_covered)}" if open_covered else "")
    )
    print(
        f"  every face of the unmasked photos: {len(u['photos_with_any_face_judged_covered'])}"
        f"/{u['photos']} photos with a face judged covered; other faces judged covered "
        f"{len(u['other_faces_covered'])}/{u['other_faces_found']}: "
        f"{', '.join(u['other_faces_covered'])}"
    )
    print(
        f"masked photos judged covered:   {m['judged_covered']}/{m['faces']} "
        f"({100 * m['share_judged_covered']:.1f}%, target >= 97%); no face found on "
        f"{len(m['no_face'])}"
    )
    short = sorted(n for n, v in m["region_holds_mouth_zone"].items() if v < 0.5)
    print(
        f"  of those, outlined short (the region holds under half the zone between the nose tip "
        f"and the mouth): {len(short)}: {', '.join(short)}"
    )
    side = sorted(n for n, v in m["region_rows_at_side_edge"].items() if v >= SIDE_ROWS)
    print(
        f"  reaching a side edge of the aligned crop ({SIDE_ROWS} rows or more): {len(side)}: "
        f"{', '.join(side)}"
    )
    for kind in ("unmasked", "masked") if args.shifts else ():
        q = np.percentile(list(result[kind]["cover_shift"].values()), [5, 25, 50, 75, 95])
        print(f"  {kind}: a neutral covering moves the face {' / '.join(f'{v:.2f}' for v in q)}")
    if args.shifts:
        print("  (5th / 25th / 50th / 75th / 95th percentiles, dlib distance)")
    # the same photos darkened or brightened (`photos`' argument of that name)
    for key, word, k in (("dim", "darkened", args.dim), ("bright", "brightened", args.bright)):
        if not k:
            continue
        result[key] = {word: k}
        for kind in ("unmasked", "masked"):
            r = photos(settings, DATA / kind, args.photos, **{key: k})
            r.pop("_tiles")
            result[key][kind] = r
        u, v = result[key]["unmasked"], result[key]["masked"]
        print(
            f"{word} {k:g} times: unmasked judged covered {u['judged_covered']}/"
            f"{u['faces']} ({', '.join(u['covered'])}), masked {v['judged_covered']}/{v['faces']}"
        )
    if not args.no_clips:
        result["clips"] = {}
        for name, path in (("stage_clip", DATA / "video" / "stage_clip.mp4"), ("carphone", None)):
            src = path if path is not None else carphone_path()
            c = clip(settings, src, args.synchronous)
            result["clips"][name] = c
            print(
                f"{name}: {c['frames_with_a_face_judged_covered']}/{c['frames']} frames with a "
                f"face judged covered (target 0); frames {c['frames_judged'][:40]}"
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


def other_folders(args: argparse.Namespace) -> int:
    """--folders: the decision on photos that are not ../shared/data's."""
    settings = load_settings(overrides=args.overrides)
    result: dict = {"settings": args.overrides, "folders": [str(f) for f in args.folders]}
    for kind, folder in zip(("unmasked", "masked"), args.folders, strict=True):
        if not folder.is_dir():
            print(f"{folder} is not a folder of photos", file=sys.stderr)
            return 2
        only = held_out(folder, DATA / kind) if (DATA / kind).exists() else None
        r = photos(settings, folder, args.photos, only=only)
        r.pop("_tiles")
        result[kind] = r
        # ../shared/data took photos of 224 px or more (open) and 256 px or more (masked)
        least = 224 if kind == "unmasked" else 256
        large = [n for n in r["scores"] if r["short_side"][n] >= least]
        covered = set(r["covered"])
        print(
            f"{kind} ({folder}, {len(only) if only is not None else 'all'} photos not in "
            f"../shared/data): {r['judged_covered']}/{r['faces']} faces judged covered "
            f"({100 * r['share_judged_covered']:.2f}%); on the photos of {least} px or more: "
            f"{sum(n in covered for n in large)}/{len(large)}"
        )
        cut = [n for n, v in r["lower_face_in_sight"].items() if v < 1.0]
        print(
            f"  faces the picture's edge cuts (part of the lower face outside it): "
            f"{sum(n in covered for n in cut)}/{len(cut)} judged covered; the others: "
            f"{len(covered) - sum(n in covered for n in cut)}/{r['faces'] - len(cut)}"
        )
        if kind == "masked":
            short = [n for n, v in r["region_holds_mouth_zone"].items() if v < 0.5]
            print(
                f"  of those judged covered, outlined short (the region holds under half the zone "
                f"between the nose tip and the mouth): {len(short)}/{len(covered)}"
            )
    out = args.out if args.out != RESULTS / "harm.json" else RESULTS / "harm_folders.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
