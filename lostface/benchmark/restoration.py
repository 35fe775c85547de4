"""Restoration and flicker suites on ground truth made by drawing synthetic masks on real faces.

- pairs: for each person in identity/, each ordered pair (reference photo, target photo) and
  mask kind: the masked target is restored from that one reference (restore_image).
- clip: stage_clip.mp4 with a synthetic mask on its largest face in every frame, restored
  through the real video pipeline (runner.process_video) with the clip's reference photo.

Every restorer (reference restoration, neutral fill) is compared with the baselines: the
masked image (no restoration) and OpenCV's Telea and Navier-Stokes inpainting of the
ground-truth region. Scores of the covered region: identity distance (dlib ResNet, chip
placed once on the original), PSNR and SSIM (scikit-image), detail and seam relative to the
original (lostface.metrics). Flicker (lostface.metrics.FlickerMeter) is measured on the clip.
"""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from lostface.benchmark.common import (
    Context,
    face_tiles,
    image_png,
    largest,
    metric,
    png_bytes,
    pyplot,
    read_bgr,
    stack_rows,
)
from lostface.frame import Frame
from lostface.metrics import FaceAnchor, FlickerMeter, IdentityMetric, detail_score, seam_score

log = logging.getLogger(__name__)

RESTORERS = ("reference", "neutral_fill")
BASELINES = ("masked", "telea", "navier_stokes")
VARIANTS = RESTORERS + BASELINES
SCORES = {  # name -> what is better
    "identity": "lower",
    "psnr": "higher",
    "ssim": "higher",
    "detail": "near 1",
    "seam": "near 1",
}
INPAINT_RADIUS = 5


def inpaint_baselines(masked: np.ndarray, covered: np.ndarray) -> dict[str, np.ndarray]:
    m = covered.astype(np.uint8) * 255
    return {
        "telea": cv2.inpaint(masked, m, INPAINT_RADIUS, cv2.INPAINT_TELEA),
        "navier_stokes": cv2.inpaint(masked, m, INPAINT_RADIUS, cv2.INPAINT_NS),
    }


def region_ssim(image: np.ndarray, original: np.ndarray, region: np.ndarray) -> float:
    """Mean of scikit-image's SSIM map over the region (computed on its bounding box + 8 px)."""
    ys, xs = np.nonzero(region)
    y0, y1 = max(ys.min() - 8, 0), ys.max() + 9
    x0, x1 = max(xs.min() - 8, 0), xs.max() + 9
    _, smap = structural_similarity(
        original[y0:y1, x0:x1], image[y0:y1, x0:x1], channel_axis=2, data_range=255, full=True
    )
    return float(smap.mean(axis=2)[region[y0:y1, x0:x1]].mean())


def score(
    original: np.ndarray,
    region: np.ndarray,
    variants: dict[str, np.ndarray],
    identity: IdentityMetric | None,
    anchor: FaceAnchor | None,
) -> dict[str, dict[str, float]]:
    """score name -> variant -> value, for one restored face."""
    seam_o = max(seam_score(original, region), 1e-6)
    detail_o = max(detail_score(original, region), 1e-6)
    out: dict[str, dict[str, float]] = {k: {} for k in SCORES}
    for name, img in variants.items():
        out["psnr"][name] = float(
            peak_signal_noise_ratio(original[region], img[region], data_range=255)
        )
        out["ssim"][name] = region_ssim(img, original, region)
        out["detail"][name] = detail_score(img, region) / detail_o
        out["seam"][name] = seam_score(img, region) / seam_o
    if identity is not None and anchor is not None:
        out["identity"] = identity.distances(anchor, variants)
    return out


@dataclass
class Collected:
    """Per-item scores of one data set."""

    items: list[dict[str, dict[str, float]]] = field(default_factory=list)

    def add(self, item: dict[str, dict[str, float]]) -> None:
        self.items.append(item)

    def table(self) -> dict[str, dict[str, dict[str, float]]]:
        """score -> variant -> {mean, median, n}; infinite PSNRs (identical pixels) dropped."""
        out: dict[str, dict[str, dict[str, float]]] = {}
        for s in SCORES:
            out[s] = {}
            for v in VARIANTS:
                vals = np.array([it[s][v] for it in self.items if v in it.get(s, {})], np.float64)
                vals = vals[np.isfinite(vals)]
                if len(vals):
                    out[s][v] = {
                        "mean": float(vals.mean()),
                        "median": float(np.median(vals)),
                        "n": int(len(vals)),
                    }
        return out


def headline(table: dict, label: str) -> list[dict]:
    """The reference restorer against the strongest inpainting baseline of each score, and
    its identity distance against no restoration at all (the masked face)."""
    rows = []
    for s, better in SCORES.items():
        t = table.get(s, {})
        if "reference" not in t:
            continue
        unit = "dB" if s == "psnr" else ""
        name = f"{label}: {s} (mean of {t['reference']['n']})"
        cands = {b: t[b]["mean"] for b in ("telea", "navier_stokes") if b in t}
        if cands:
            best = min(cands, key=lambda b: _badness(cands[b], better))
            rows.append(
                metric(
                    name,
                    t["reference"]["mean"],
                    cands[best],
                    f"{best} (best inpainting)",
                    better,
                    unit,
                )
            )
        if s == "identity" and "masked" in t:
            rows.append(
                metric(
                    name,
                    t["reference"]["mean"],
                    t["masked"]["mean"],
                    "no restoration",
                    better,
                    unit,
                )
            )
    return rows


def _badness(value: float, better: str) -> float:
    """Smaller is better, whatever the score's direction."""
    if better == "lower":
        return value
    if better == "higher":
        return -value
    return abs(float(np.log(max(value, 1e-6))))


def _stages_for(ctx: Context, detector, reference: list[tuple[str, np.ndarray]]):
    from lostface.factory import build_stages
    from lostface.restore.fill import NeutralFill

    return {
        "reference": build_stages(ctx.settings, reference_images=reference, detector=detector),
        "neutral_fill": build_stages(ctx.settings, detector=detector, restorer=NeutralFill()),
    }


def run_pairs(ctx: Context, identity: IdentityMetric) -> dict:
    from lostface.factory import build_detector
    from lostface.restore_image import restore_image
    from lostface.runner import progress_bar
    from lostface.synthetic import KINDS, draw_mask

    detector = build_detector(ctx.settings)
    coll = Collected()
    grid: list[np.ndarray] = []
    people = sorted(p for p in (ctx.data / "identity").iterdir() if p.is_dir())
    kinds = KINDS[: ctx.scale.pair_kinds]
    skipped = 0
    people = people[: ctx.scale.pair_people]
    counts = [min(len(list(p.glob("*.jpg"))), ctx.scale.pair_photos) for p in people]
    bar = progress_bar(
        sum(n * (n - 1) for n in counts) * len(kinds),
        ctx.settings,
        "bench: restoration, photo pairs",
        unit="pair",
    )
    for person in people:
        files = sorted(person.glob("*.jpg"))[: ctx.scale.pair_photos]
        photos = {f.stem: read_bgr(f) for f in files}
        faces = {}
        for stem, img in photos.items():
            dets = detector.detect(img)
            j = largest(dets)
            if j is not None:
                faces[stem] = (dets.landmarks[j].copy(), dets.boxes[j].copy())
        anchors = {s: identity.anchor(photos[s], faces[s][1]) for s in faces}
        for ref, tgt in itertools.permutations(sorted(faces), 2):
            stages = _stages_for(ctx, detector, [(ref, photos[ref])])
            original = photos[tgt]
            lm, box = faces[tgt]
            for k, kind in enumerate(kinds):
                bar.update(1)
                syn = draw_mask(original, lm, kind, rng=ctx.seed + k)
                variants = {"masked": syn.image}
                for name, st in stages.items():
                    variants[name] = restore_image(syn.image, st, ctx.settings).image
                variants.update(inpaint_baselines(syn.image, syn.covered))
                if not syn.covered.any():
                    skipped += 1
                    continue
                coll.add(score(original, syn.covered, variants, identity, anchors[tgt]))
                if len(grid) < 6:
                    grid.append(face_tiles({**_ordered(variants), "original": original}, box))
    bar.close()
    if grid:
        ctx.figures["grid_pairs"] = image_png(stack_rows(grid))
    table = coll.table()
    return {"items": len(coll.items), "kinds": list(kinds), "skipped": skipped, "table": table}


def _ordered(variants: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: variants[k] for k in VARIANTS if k in variants}


@dataclass
class MaskedClip:
    """stage_clip with a synthetic mask on the largest face of each frame (ground truth kept)."""

    path: Path
    originals: list[np.ndarray]
    covered: list[np.ndarray]
    boxes: list[np.ndarray | None]


def make_masked_clip(ctx: Context, kind: str = "surgical") -> MaskedClip:
    """Mask the clip's largest face; its landmarks are smoothed (EMA within one face and one
    shot) so the drawn mask moves rigidly with the face like a real one, not with detector
    jitter, which would count as flicker of the input."""
    from lostface.factory import build_detector
    from lostface.runner import progress_bar
    from lostface.stream.video import VideoReader, VideoWriter
    from lostface.synthetic import draw_mask
    from lostface.tracking.scenecut import HistogramSceneCut

    detector = build_detector(ctx.settings)
    cut = HistogramSceneCut(ctx.settings.tracking.scene_cut_threshold)
    path = ctx.work / "stage_clip_masked.mp4"
    originals: list[np.ndarray] = []
    covered: list[np.ndarray] = []
    boxes: list[np.ndarray | None] = []
    prev_lm: np.ndarray | None = None
    prev_box: np.ndarray | None = None
    with VideoReader(ctx.data / "video" / "stage_clip.mp4") as reader:
        writer = VideoWriter(path, reader.info, ctx.settings.video, None)
        total = min(reader.info.frames or ctx.scale.clip_frames, ctx.scale.clip_frames)
        bar = progress_bar(total, ctx.settings, "bench: masking the stage clip")
        try:
            for item in reader.items():
                if not isinstance(item, Frame):
                    continue
                if len(originals) >= ctx.scale.clip_frames:
                    break
                bar.update(1)
                originals.append(item.image.copy())
                new_shot = cut.is_cut(item.image) if len(originals) > 1 else True
                dets = detector.detect(item.image)
                j = largest(dets)
                if j is None:
                    covered.append(np.zeros(item.image.shape[:2], bool))
                    boxes.append(None)
                    prev_lm = None
                else:
                    lm, box = dets.landmarks[j][:5].astype(np.float64), dets.boxes[j].copy()
                    if (
                        prev_lm is not None
                        and prev_box is not None
                        and not new_shot
                        and _iou(prev_box, box) > 0.3
                    ):
                        lm = 0.5 * lm + 0.5 * prev_lm
                    prev_lm, prev_box = lm, box
                    syn = draw_mask(item.image, lm, kind, rng=ctx.seed)  # one material
                    item.image = syn.image
                    covered.append(syn.covered)
                    boxes.append(box)
                writer.write(item)
            writer.commit()
        except BaseException:
            writer.abort()
            raise
        finally:
            bar.close()
    return MaskedClip(path, originals, covered, boxes)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def run_clip(ctx: Context, clip: MaskedClip, identity: IdentityMetric) -> tuple[dict, dict]:
    """Restore the masked clip with every restorer through the video pipeline; return the
    restoration scores and the flicker figures."""
    from lostface.factory import build_detector
    from lostface.runner import process_video
    from lostface.stream.video import VideoReader

    detector = build_detector(ctx.settings)
    ref_path = ctx.data / "identity" / "stage_clip_reference.png"
    ref = [(ref_path.stem, read_bgr(ref_path))]
    paths, fps = {}, {}
    for name, stages in _stages_for(ctx, detector, ref).items():
        paths[name] = ctx.work / f"stage_clip_{name}.mp4"
        stats = process_video(
            clip.path, paths[name], ctx.settings, stages, label=f"bench: restoring the clip, {name}"
        )
        fps[name] = stats.fps
    readers = {n: VideoReader(p) for n, p in {"masked": clip.path, **paths}.items()}
    streams = {n: (f.image for f in r.items() if isinstance(f, Frame)) for n, r in readers.items()}
    coll = Collected()
    meter = FlickerMeter(cut_residual=20.0)
    per_frame: dict[str, list[float]] = {}
    grid: list[np.ndarray] = []
    with_face = [i for i, c in enumerate(clip.covered) if c.any()]
    grid_at = set(with_face[:: max(len(with_face) // 4, 1)][:4])
    from lostface.runner import progress

    scoring = progress(
        clip.originals, ctx.settings, "bench: scoring the restored clip", unit="frame"
    )
    try:
        for i, original in enumerate(scoring):
            got = {n: next(s, None) for n, s in streams.items()}
            frames = {n: f for n, f in got.items() if f is not None}
            if len(frames) < len(got):
                log.warning("restored clip ended early at frame %d", i)
                break
            region = clip.covered[i]
            variants = {"original": original, **frames}
            if region.any():
                variants.update(inpaint_baselines(frames["masked"], region))
            before = {k: len(v) for k, v in meter.sums.items()}
            meter.add(original, region, variants)
            for k, v in meter.sums.items():
                if len(v) > before.get(k, 0):
                    per_frame.setdefault(k, []).append(v[-1])
            if not region.any():
                continue
            anchor = None
            if i % ctx.scale.identity_every == 0:
                anchor = identity.anchor(original, clip.boxes[i])
            judged = {k: variants[k] for k in VARIANTS}
            coll.add(score(original, region, judged, identity, anchor))
            if i in grid_at and clip.boxes[i] is not None:
                tiles = {**_ordered(judged), "original": original}
                grid.append(face_tiles(tiles, clip.boxes[i]))  # type: ignore[arg-type]
    finally:
        for r in readers.values():
            r.close()
    if grid:
        ctx.figures["grid_clip"] = image_png(stack_rows(grid))
    flicker = meter.result()
    restoration = {
        "frames": len(clip.originals),
        "items": len(coll.items),
        "identity_items": sum(1 for it in coll.items if it["identity"]),
        "pipeline_fps": fps,
        "table": coll.table(),
    }
    temporal = {
        "flicker_mean": flicker,
        "flicker_p50": meter.percentile(50),
        "flicker_p95": meter.percentile(95),
        "pairs": meter.pairs,
        "skipped_cuts": meter.skipped_cuts,
        "skipped_empty": meter.skipped_empty,
        "metrics": [
            metric(
                f"flicker of the covered region, {name} (mean |diff| after flow warp)",
                flicker.get(name),
                flicker.get("original"),
                "original clip",
                "lower",
                "grey levels",
            )
            for name in ("reference", "neutral_fill", "telea")
            if name in flicker
        ],
    }
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(10, 3))
    for name in ("original", "reference", "telea", "masked"):
        if name in per_frame:
            ax.plot(per_frame[name], label=name, lw=1)
    ax.set_xlabel("frame pair (cuts skipped)")
    ax.set_ylabel("flicker")
    ax.set_title("flicker of the covered region after optical-flow warping (DIS)")
    ax.legend()
    ctx.figures["flicker"] = png_bytes(fig)
    return restoration, temporal


def scores_figure(ctx: Context, tables: dict[str, dict]) -> None:
    """Bar charts: each score, each variant, for each data set."""
    plt = pyplot()
    fig, axes = plt.subplots(
        len(tables), len(SCORES), figsize=(15, 3.2 * len(tables)), squeeze=False
    )
    colours = {
        "reference": "C0",
        "neutral_fill": "C1",
        "masked": "C7",
        "telea": "C2",
        "navier_stokes": "C3",
    }
    for r, (label, table) in enumerate(tables.items()):
        for c, s in enumerate(SCORES):
            ax = axes[r][c]
            t = table.get(s, {})
            names = [v for v in VARIANTS if v in t]
            ax.bar(
                range(len(names)), [t[v]["mean"] for v in names], color=[colours[v] for v in names]
            )
            ax.set_xticks(range(len(names)), [v.replace("_", "\n") for v in names], fontsize=7)
            ax.set_title(f"{label}: {s} ({SCORES[s]} is better)", fontsize=9)
            if SCORES[s] == "near 1":
                ax.axhline(1.0, color="k", lw=0.8, ls="--")
    fig.tight_layout()
    ctx.figures["restoration_scores"] = png_bytes(fig)
