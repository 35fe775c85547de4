"""`lostface batch INPUTS... -o OUT_DIR`: many files on a Dask cluster (lostface.batch)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lostface.cli_common import add_audio_arg, add_config_args, add_reference_arg
from lostface.config import Settings

log = logging.getLogger("lostface")


def add_batch_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "batch",
        help="restore many video files (long ones in segments) on a Dask cluster",
        description="Restore every input (files, folders of videos, or .txt lists of paths) "
        "into OUT_DIR, long files cut into segments processed in parallel and joined back. "
        "Starts a Dask cluster on this machine (one worker per core) unless --scheduler names "
        "one. Finished outputs are recorded in OUT_DIR: a rerun skips them.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="videos, folders or .txt lists")
    p.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="output folder")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a running Dask scheduler (tcp://...)")
    p.add_argument("--workers", type=int, help="local cluster: worker processes (default: cores)")
    p.add_argument(
        "--dashboard", action="store_true", help="local cluster: Dask's dashboard on :8787"
    )
    add_reference_arg(p)
    add_audio_arg(p)
    add_config_args(p)


def cmd_batch(args: argparse.Namespace, settings: Settings) -> int:
    from lostface.batch import run_batch

    report = run_batch(
        args.inputs,
        Path(args.output),
        settings,
        scheduler=args.scheduler,
        workers=args.workers,
        dashboard=args.dashboard,
    )
    for f in report.files:
        if f.status == "failed":
            log.error("%s failed: %s", f.input, f.error)
    print(report.summary(), flush=True)
    return 1 if report.count("failed") else 0
