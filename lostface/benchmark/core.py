"""run_bench: every suite in order, then DIR/results.json and DIR/report.html."""

from __future__ import annotations

import json
import logging
import math
import shutil
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from lostface.benchmark.common import (
    Context,
    Scale,
    check_data_dir,
    default_data_dir,
    machine_info,
)
from lostface.config import Settings, dump_toml, to_dict
from lostface.errors import OutputError

log = logging.getLogger(__name__)

SUITES = ("detection", "segmentation", "restoration", "temporal", "speed")


def _clean(obj: Any) -> Any:
    """JSON without NaN/inf (strict parsers reject them): those become null."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def run_bench(
    out_dir: str | Path,
    quick: bool,
    settings: Settings,
    data: str | Path | None = None,
    scale: Scale | None = None,
    suites: tuple[str, ...] = SUITES,
) -> dict:
    """Run the suites and write results.json and report.html into out_dir; returns the results."""
    from lostface.benchmark import detection, report, restoration, speed, tracking
    from lostface.metrics import IdentityMetric

    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise OutputError(f"Output {out} is a file; give a folder for the benchmark results.")
    out.mkdir(parents=True, exist_ok=True)
    data_dir = check_data_dir(Path(data) if data is not None else default_data_dir())
    scale = scale or (Scale.quick() if quick else Scale())
    work = Path(tempfile.mkdtemp(prefix="lostface-bench-"))
    ctx = Context(data_dir, settings, scale, work)
    results: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    try:

        def timed(name: str, fn, *args):  # noqa: ANN001, ANN202
            t = time.perf_counter()
            value = fn(*args)
            seconds[name] = round(time.perf_counter() - t, 2)
            log.info("bench: %s done in %.1f s", name, seconds[name])
            return value

        if "detection" in suites:
            results["detection"] = timed("detection", detection.run_detection, ctx)
        if "segmentation" in suites:
            results["segmentation"] = timed("segmentation", detection.run_segmentation, ctx)
        clip = None
        if {"restoration", "temporal", "speed"} & set(suites):
            clip = timed("mask_clip", restoration.make_masked_clip, ctx)
        if {"restoration", "temporal"} & set(suites):
            identity = IdentityMetric()
            pairs = timed("restoration_pairs", restoration.run_pairs, ctx, identity)
            rest_clip, flicker = timed(
                "restoration_clip", restoration.run_clip, ctx, clip, identity
            )
            restoration.scores_figure(ctx, {"pairs": pairs["table"], "clip": rest_clip["table"]})
            results["restoration"] = {
                "pairs": pairs,
                "clip": rest_clip,
                "metrics": restoration.headline(pairs["table"], "pairs")
                + restoration.headline(rest_clip["table"], "stage_clip"),
            }
            if "temporal" in suites:
                mot = timed("tracking", tracking.run_tracking, ctx)
                results["temporal"] = {
                    "flicker": {k: v for k, v in flicker.items() if k != "metrics"},
                    "tracking": {k: v for k, v in mot.items() if k != "metrics"},
                    "metrics": flicker["metrics"] + mot["metrics"],
                }
        if "speed" in suites and clip is not None:
            results["speed"] = timed("speed", speed.run_speed, ctx, clip.path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    wall = time.perf_counter() - t0
    results["meta"] = {
        "quick": bool(quick),
        "wall_s": round(wall, 1),
        "suite_seconds": seconds,
        "seed": ctx.seed,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": str(data_dir),
        "scale": vars(scale),
        "machine": machine_info(),
        "config": to_dict(settings),
        "config_toml": dump_toml(settings),
        "figures": sorted(ctx.figures),
    }
    results = _clean(results)
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    (out / "report.html").write_text(report.render(results, ctx.figures), encoding="utf-8")
    log.info("bench: wrote %s and %s in %.1f s", out / "results.json", out / "report.html", wall)
    return results
