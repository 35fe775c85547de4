"""The `bench` subcommand, wired into lostface.cli by add_bench_command / cmd_bench."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("lostface")


def add_bench_command(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from lostface.benchmark.common import default_data_dir
    from lostface.benchmark.core import SUITES
    from lostface.cli_common import add_config_args

    p = subparsers.add_parser(
        "bench",
        help="measure quality and speed; write results.json and report.html",
        description="Measure detection, segmentation, restoration, temporal steadiness and "
        "speed on ../shared/data; write DIR/results.json and an offline DIR/report.html.",
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for the results")
    p.add_argument("--quick", action="store_true", help="a smaller run (under 3 minutes)")
    p.add_argument(
        "--data",
        metavar="DIR",
        default=None,
        help=f"benchmark data folder (default: {default_data_dir()})",
    )
    p.add_argument(
        "--suite",
        action="append",
        choices=SUITES,
        default=None,
        help="run only this suite (repeatable; default: all)",
    )
    add_config_args(p)
    return p


def cmd_bench(args: argparse.Namespace) -> int:
    from lostface.benchmark.core import SUITES, run_bench
    from lostface.cli_common import settings_from_args

    settings = settings_from_args(args)
    results = run_bench(
        Path(args.output),
        args.quick,
        settings,
        data=args.data,
        suites=tuple(args.suite) if args.suite else SUITES,
    )
    speed = results.get("speed", {})
    if speed.get("speedup_vs_naive") is not None:
        log.info(
            "keyframe pipeline %.1f frames/s, %.1fx the naive pipeline",
            speed["fps_median"]["keyframe"],
            speed["speedup_vs_naive"],
        )
    print(Path(args.output) / "report.html")
    return 0
