"""The offline HTML report: one self-contained file, every image embedded as base64 PNG."""

from __future__ import annotations

import html
import json
import math
from typing import Any

from lostface.benchmark.common import data_uri

SECTIONS = (
    ("detection", "Detection", ["detection"]),
    ("segmentation", "Segmentation", ["segmentation"]),
    ("restoration", "Restoration", ["restoration_scores", "grid_pairs", "grid_clip"]),
    ("temporal", "Temporal: flicker and tracking", ["flicker", "tracking"]),
    ("speed", "Speed", ["timeline", "speed"]),
)
CAPTIONS = {
    "grid_pairs": "Same-person pairs: masked | reference | neutral fill | no restoration | "
    "Telea | Navier-Stokes | ground truth",
    "grid_clip": "stage_clip frames: masked | reference | neutral fill | no restoration | "
    "Telea | Navier-Stokes | ground truth",
}
CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222}
h1{margin-bottom:4px} h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:14px}
td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}
.better{color:#1a7f37;font-weight:600} .worse{color:#b42318;font-weight:600}
figure{margin:12px 0} figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:13px;color:#555}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px}
.meta{font-size:13px;color:#444}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"
    return html.escape(str(v))


def verdict(row: dict) -> str:
    """better / worse / even: the figure against its baseline, in the row's direction."""
    v, b = row["value"], row["baseline"]
    if v is None or b is None or not (math.isfinite(v) and math.isfinite(b)):
        return "n/a"
    if row["better"] == "near 1":
        dv, db = abs(math.log(max(v, 1e-9))), abs(math.log(max(b, 1e-9)))
    elif row["better"] == "lower":
        dv, db = v, b
    else:
        dv, db = -v, -b
    if math.isclose(dv, db, rel_tol=1e-9, abs_tol=1e-12):
        return "even"
    return "better" if dv < db else "worse"


def metrics_table(rows: list[dict]) -> str:
    head = (
        "<tr><th>metric</th><th>figure</th><th>baseline</th><th>baseline is</th>"
        "<th>ratio</th><th>better is</th><th>verdict</th></tr>"
    )
    body = []
    for r in rows:
        v = verdict(r)
        unit = f" {html.escape(r['unit'])}" if r["unit"] else ""
        note = f"<br><small>{html.escape(r['note'])}</small>" if r.get("note") else ""
        body.append(
            f"<tr><td>{html.escape(r['name'])}{note}</td><td>{_fmt(r['value'])}{unit}</td>"
            f"<td>{_fmt(r['baseline'])}{unit}</td><td>{html.escape(r['baseline_name'])}</td>"
            f"<td>{_fmt(r['ratio'])}</td><td>{html.escape(r['better'])}</td>"
            f"<td class='{v}'>{v}</td></tr>"
        )
    return f"<table class='metrics'>{head}{''.join(body)}</table>"


def variant_table(table: dict[str, dict[str, dict[str, float]]], title: str) -> str:
    variants: list[str] = []
    for per in table.values():
        variants += [v for v in per if v not in variants]
    head = "<tr><th>score (mean)</th>" + "".join(f"<th>{html.escape(v)}</th>" for v in variants)
    rows = [
        f"<tr><td>{html.escape(s)}</td>"
        + "".join(f"<td>{_fmt(per.get(v, {}).get('mean'))}</td>" for v in variants)
        + "</tr>"
        for s, per in table.items()
    ]
    return f"<h3>{html.escape(title)}</h3><table>{head}</tr>{''.join(rows)}</table>"


def figure(name: str, png: bytes) -> str:
    cap = CAPTIONS.get(name, name.replace("_", " "))
    return (
        f"<figure id='fig-{name}'><img alt='{html.escape(cap)}' src='{data_uri(png)}'>"
        f"<figcaption>{html.escape(cap)}</figcaption></figure>"
    )


def render(results: dict, figures: dict[str, bytes]) -> str:
    meta = results["meta"]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<title>lostface benchmark</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>lostface benchmark</h1>",
        f"<p class='meta'>{'quick' if meta['quick'] else 'full'} run, "
        f"{_fmt(meta['wall_s'])} s, seed {meta['seed']}, {html.escape(meta['started'])}; "
        f"machine: {meta['machine']['cpu_count']} CPUs, {html.escape(meta['machine']['platform'])}"
        "</p>",
        "<p class='meta'>Each metric shows the figure, its baseline and their ratio "
        "(figure / baseline); the verdict reads the ratio in the metric's direction.</p>",
    ]
    for key, title, figs in SECTIONS:
        sec = results.get(key)
        if sec is None:
            continue
        parts.append(f"<h2 id='{key}'>{html.escape(title)}</h2>")
        parts.append(metrics_table(sec.get("metrics", [])))
        for label in ("pairs", "clip"):
            if label in sec and "table" in sec[label]:
                parts.append(variant_table(sec[label]["table"], f"all variants, {label}"))
        parts += [figure(f, figures[f]) for f in figs if f in figures]
        detail = {k: v for k, v in sec.items() if k not in ("metrics", "timeline")}
        parts.append(
            "<details><summary>details (JSON)</summary><pre>"
            + html.escape(json.dumps(detail, indent=1, default=str))
            + "</pre></details>"
        )
    parts.append("<h2 id='machine'>Machine and configuration</h2>")
    parts.append("<pre>" + html.escape(json.dumps(meta["machine"], indent=1)) + "</pre>")
    parts.append("<pre>" + html.escape(meta["config_toml"]) + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
