"""`lostface bench` end to end on the least data (Scale.tiny), plus the report's pieces."""

from __future__ import annotations

import base64
import io
import json
import os
import sys
from html.parser import HTMLParser
from pathlib import Path

import cv2
import numpy as np
import pytest

from lostface.benchmark import SUITES, Scale, run_bench
from lostface.benchmark.common import metric
from lostface.benchmark.report import verdict
from lostface.config import load_settings
from lostface.errors import InputError
from tests.conftest import shared_path

pytest.importorskip("matplotlib")
pytest.importorskip("motmetrics")
pytest.importorskip("dlib")

FIGURES = {
    "detection",
    "segmentation",
    "restoration_scores",
    "grid_pairs",
    "grid_clip",
    "flicker",
    "tracking",
    "timeline",
    "speed",
}


class _Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: dict[str, str] = {}
        self.figure: str | None = None
        self.external: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "figure":
            self.figure = (a.get("id") or "").removeprefix("fig-")
        if tag == "img" and self.figure:
            self.srcs[self.figure] = a.get("src") or ""
        if tag in ("script", "link") or (
            tag == "img" and not (a.get("src") or "").startswith("data:")
        ):
            self.external.append(tag)


class _Terminal(io.StringIO):
    """stderr as a terminal: progress bars draw into it."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, str]:
    data = shared_path()
    out = tmp_path_factory.mktemp("bench")
    settings = load_settings()
    terminal, stderr = _Terminal(), sys.stderr
    sys.stderr = terminal
    try:
        results = run_bench(out, True, settings, data=data, scale=Scale.tiny())
    finally:
        sys.stderr = stderr
    return out, results, terminal.getvalue()


@pytest.fixture(scope="module")
def bench(bench_run: tuple[Path, dict, str]) -> tuple[Path, dict]:
    return bench_run[0], bench_run[1]


def test_every_step_shows_progress_labelled_with_what_it_does(
    bench_run: tuple[Path, dict, str],
) -> None:
    shown = bench_run[2]
    for label in (
        "bench: detection, centerface",
        "bench: detection, haar",
        "bench: segmentation",
        "bench: masking the stage clip",
        "bench: restoration, photo pairs",
        "bench: restoring the clip, reference",
        "bench: scoring the restored clip",
        "bench: tracking",
        "bench: speed, whole runs",
    ):
        assert f"{label}: 100%" in shown, label


def test_results_json_has_every_suite_and_metric_rows(bench: tuple[Path, dict]) -> None:
    out, results = bench
    on_disk = json.loads((out / "results.json").read_text())
    assert set(SUITES) | {"meta"} <= set(on_disk)
    for suite in SUITES:
        rows = on_disk[suite]["metrics"]
        assert rows, suite
        for r in rows:
            assert {"name", "value", "baseline", "baseline_name", "ratio"} <= set(r)
            if r["value"] is not None and r["baseline"]:
                assert r["ratio"] == pytest.approx(r["value"] / r["baseline"])
    meta = on_disk["meta"]
    assert meta["machine"]["cpu_count"] == os.cpu_count()
    assert meta["machine"]["versions"]["scikit-image"]
    assert (
        meta["config"]["tracking"]["detect_every"]
        == results["meta"]["config"]["tracking"]["detect_every"]
    )
    assert "[detect]" in meta["config_toml"]
    assert meta["seed"] == results["meta"]["seed"]


def test_suites_measure_real_behaviour(bench: tuple[Path, dict]) -> None:
    _, r = bench
    det = r["detection"]["detectors"]
    assert det["centerface"]["recall"] > 0.5  # masked photos: the embedded detector finds most
    assert det["centerface"]["latency"]["count"] == Scale.tiny().photos
    kinds = r["segmentation"]["kinds"]
    assert all(0.3 < kinds[k]["iou_mean"] <= 1.0 for k in kinds)
    pairs = r["restoration"]["pairs"]["table"]
    # restoring the covered region brings it closer to the truth than leaving the mask there
    assert pairs["psnr"]["reference"]["mean"] > pairs["psnr"]["masked"]["mean"]
    assert r["restoration"]["clip"]["identity_items"] > 0
    flick = r["temporal"]["flicker"]
    assert flick["pairs"] > 0 and flick["flicker_mean"]["original"] > 0
    track = r["temporal"]["tracking"]
    assert track["kalman"]["num_unique_objects"] >= 2
    assert 0.0 <= track["kalman"]["idf1"] <= 1.0
    sp = r["speed"]
    assert set(sp["fps_median"]) == {"plain", "keyframe", "naive"}
    assert sp["runs"]["keyframe"][0]["frames"] == sp["runs"]["naive"][0]["frames"] > 0
    assert sp["runs"]["keyframe"][0]["keyframe_jobs"] >= 1
    assert sp["timeline"]["keyframes"]
    # each variant's peak memory is its own process's (not the parent's inherited peak)
    peaks = {v: sp["runs"][v][0]["peak_rss_mb"] for v in ("plain", "naive")}
    assert peaks["plain"] < peaks["naive"]


def test_report_is_self_contained_html_with_every_plot(bench: tuple[Path, dict]) -> None:
    out, _ = bench
    text = (out / "report.html").read_text()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    parser = _Images()
    parser.feed(text)
    parser.close()
    assert parser.external == []  # nothing to fetch: viewable offline
    assert set(parser.srcs) == FIGURES
    for name, src in parser.srcs.items():
        assert src.startswith("data:image/png;base64,"), name
        png = base64.b64decode(src.split(",", 1)[1])
        img = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 200, name
        assert img.std() > 5, name  # not a blank plot
    assert "baseline" in text and "ratio" in text


def test_quality_figures_repeat_across_runs(tmp_path: Path) -> None:
    data = shared_path()
    settings = load_settings(overrides=["output.progress=false"])
    runs = [
        run_bench(
            tmp_path / str(i),
            True,
            settings,
            data=data,
            scale=Scale.tiny(),
            suites=("segmentation",),
        )
        for i in range(2)
    ]
    a, b = (r["segmentation"]["kinds"] for r in runs)
    assert {k: v["iou_mean"] for k, v in a.items()} == {k: v["iou_mean"] for k, v in b.items()}


def test_missing_data_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="--data"):
        run_bench(tmp_path / "out", True, load_settings(), data=tmp_path / "nowhere")


@pytest.mark.parametrize(
    ("value", "baseline", "better", "expected"),
    [
        (0.9, 0.8, "higher", "better"),
        (0.9, 0.8, "lower", "worse"),
        (1.1, 0.5, "near 1", "better"),
        (3.0, 1.2, "near 1", "worse"),
        (2.0, 2.0, "lower", "even"),
    ],
)
def test_verdict_reads_the_ratio_in_the_metric_direction(
    value: float, baseline: float, better: str, expected: str
) -> None:
    row = metric("m", value, baseline, "b", better)
    assert row["ratio"] == pytest.approx(value / baseline)
    assert verdict(row) == expected


def test_ratio_is_none_against_a_zero_baseline() -> None:
    assert metric("fp", 3, 0, "b", "lower")["ratio"] is None
