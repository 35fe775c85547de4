"""Shared pieces of the benchmark suites: the run context, metric rows (figure, baseline,
ratio), latency summaries, machine information and figure encoding."""

from __future__ import annotations

import base64
import io
import logging
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from lostface.config import Settings
from lostface.errors import InputError
from lostface.frame import Detections

log = logging.getLogger(__name__)

SEED = 1234
PACKAGES = (
    "lostface",
    "numpy",
    "opencv-python",
    "av",
    "onnxruntime",
    "scikit-image",
    "matplotlib",
    "motmetrics",
    "dlib-bin",
    "face-recognition-models",
    "filterpy",
    "scipy",
)
DATA_PARTS = ("masked", "unmasked", "groups", "identity", "video/stage_clip.mp4")


def default_data_dir() -> Path:
    """../shared/data beside the project (LOSTFACE_SHARED_DATA overrides it, as in the tests)."""
    env = os.environ.get("LOSTFACE_SHARED_DATA")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[3] / "shared" / "data"


def check_data_dir(data: Path) -> Path:
    """The data folder holds what every suite reads, or one clear error."""
    missing = [p for p in DATA_PARTS if not (data / p).exists()]
    if missing:
        raise InputError(
            f"Benchmark data folder {data} lacks {', '.join(missing)}; pass --data DIR pointing "
            "at the shared data (masked/, unmasked/, groups/, identity/, video/stage_clip.mp4)."
        )
    return data


@dataclass
class Scale:
    """How much of the data each suite uses (quick: a smoke run under 3 minutes)."""

    photos: int = 300  # detection: masked photos
    seg_photos: int = 100  # segmentation: unmasked photos (x every mask kind)
    pair_kinds: int = 3  # restoration pairs: mask kinds per pair
    pair_people: int = 2
    pair_photos: int = 99  # photos per person
    clip_frames: int = 275  # stage_clip frames
    identity_every: int = 3  # identity distance on every Nth clip frame
    mot_frames: int = 150
    free_crops: int = 6  # face-free crops per face-free photo
    speed_frames: int = 275
    speed_runs: int = 2

    @classmethod
    def quick(cls) -> Scale:
        return cls(60, 24, 1, 1, 2, 90, 4, 90, 3, 90, 1)

    @classmethod
    def tiny(cls) -> Scale:
        """For the test: every code path, the least data."""
        return cls(6, 4, 1, 1, 2, 16, 4, 24, 1, 16, 1)


@dataclass
class Context:
    data: Path
    settings: Settings
    scale: Scale
    work: Path  # scratch folder for intermediate videos
    seed: int = SEED
    figures: dict[str, bytes] = field(default_factory=dict)  # name -> PNG

    def rng(self, salt: int = 0) -> np.random.Generator:
        return np.random.default_rng(self.seed + salt)


def metric(
    name: str,
    value: float | None,
    baseline: float | None,
    baseline_name: str,
    better: str,
    unit: str = "",
    note: str = "",
) -> dict[str, Any]:
    """One row of the report: the figure, the baseline and their ratio (value / baseline)."""
    ratio = None
    if value is not None and baseline not in (None, 0) and np.isfinite(value):
        ratio = float(value) / float(baseline)  # type: ignore[arg-type]
    return {
        "name": name,
        "value": None if value is None else float(value),
        "baseline": None if baseline is None else float(baseline),
        "baseline_name": baseline_name,
        "ratio": ratio,
        "better": better,
        "unit": unit,
        "note": note,
    }


def latency(samples_s: list[float]) -> dict[str, float]:
    """p50/p95 of wall times given in seconds, in milliseconds."""
    if not samples_s:
        return {"count": 0, "p50_ms": float("nan"), "p95_ms": float("nan")}
    a = 1000 * np.asarray(samples_s, np.float64)
    return {
        "count": len(a),
        "p50_ms": float(np.percentile(a, 50)),
        "p95_ms": float(np.percentile(a, 95)),
        "mean_ms": float(a.mean()),
    }


def machine_info() -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {
        "cpu_count": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "opencv_build_threads": cv2.getNumThreads(),
        "versions": versions,
    }


def png_bytes(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes (the figure is closed)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def image_png(image_bgr: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image_bgr)
    if not ok:
        raise ValueError("could not encode an image grid as PNG")
    return buf.tobytes()


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display here or in CI)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def sample(files: list[Path], n: int) -> list[Path]:
    """A deterministic, evenly spaced sample of sorted files."""
    files = sorted(files)
    step = max(1, len(files) // max(n, 1))
    return files[::step][:n]


def largest(dets: Detections) -> int | None:
    if not len(dets):
        return None
    area = (dets.boxes[:, 2] - dets.boxes[:, 0]) * (dets.boxes[:, 3] - dets.boxes[:, 1])
    return int(np.argmax(area))


def read_bgr(path: Path, long_side: int | None = 1024) -> np.ndarray:
    """A photo, shrunk so its long side is at most `long_side` (some are 2300 px; None keeps it)."""
    img = cv2.imread(str(path))
    if img is None:
        raise InputError(f"Cannot read the photo {path}; the data folder looks damaged.")
    if long_side is None:
        return img
    s = long_side / max(img.shape[:2])
    return cv2.resize(img, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else img


def label_tile(image: np.ndarray, text: str) -> np.ndarray:
    out = image.copy()
    for colour, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
        cv2.putText(out, text, (4, 15), cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, thick, cv2.LINE_AA)
    return out


def face_tiles(images: dict[str, np.ndarray], box: np.ndarray, height: int = 160) -> np.ndarray:
    """The same face-centred crop of each labelled image, side by side."""
    h, w = next(iter(images.values())).shape[:2]
    x0, y0, x1, y1 = (float(v) for v in box[:4])
    side = 1.5 * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + 0.08 * side
    a0, b0 = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    a1, b1 = int(min(cx + side / 2, w)), int(min(cy + side / 2, h))
    tiles = []
    for name, img in images.items():
        crop = img[b0:b1, a0:a1]
        s = height / max(crop.shape[0], 1)
        tiles.append(label_tile(cv2.resize(crop, (max(int(crop.shape[1] * s), 1), height)), name))
    return np.hstack(tiles)


def stack_rows(rows: list[np.ndarray]) -> np.ndarray:
    w = max(r.shape[1] for r in rows)
    return np.vstack([np.pad(r, ((0, 2), (0, w - r.shape[1]), (0, 0))) for r in rows])
