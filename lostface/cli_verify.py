"""`lostface verify FILE...`: whether each file says its faces were painted by lostface: the
invisible watermark in its frames (or RivaGAN's in its faces), the metadata tag, a valid C2PA
manifest.

Exit code: 0 when every file is marked, 1 when one is not, 2 when one could not be read (a
missing, corrupt or non-media file); each file gets one summary line (or, with --json, one JSON
object per line)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from lostface.cli_common import add_config_args
from lostface.config import Settings
from lostface.errors import InputError, ModelError

log = logging.getLogger("lostface")


def add_verify_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "verify",
        help="say whether files carry lostface's marks (watermark, tag, C2PA)",
        description="For each video or photo: whether lostface's invisible watermark is in its "
        'frames (or, with provenance.engine="faces", in its faces), with its payload and how '
        "strongly it reads, whether it carries a lostface metadata tag or a valid C2PA "
        "manifest, and one summary line. Exit code 0 when every file is marked, 1 when one is "
        "not, 2 when one cannot be read.",
    )
    p.add_argument("inputs", nargs="+", metavar="FILE", help="videos or photos")
    p.add_argument("--json", action="store_true", help="one JSON object per file and line")
    p.add_argument(
        "--frames",
        type=int,
        default=96,
        metavar="N",
        help="video frames read for the mark in faces, spread evenly over the file (default "
        "96); the frame mark is read from 4 times as many",
    )
    add_config_args(p)


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from lostface.provenance.verify import WatermarkReader, verify_file

    if args.frames < 1:
        raise InputError("--frames must be 1 or more.")
    reader: WatermarkReader | None = None
    reader_error = ""
    try:
        import os

        from lostface.factory import build_detector
        from lostface.provenance.watermark import RivaGan

        model = RivaGan(threads=min(2, os.cpu_count() or 1))  # nothing else runs beside it
        reader = WatermarkReader(build_detector(settings), model)
    except ModelError as exc:
        reader_error = str(exc)
        log.warning("RivaGAN's watermark in faces is not read: %s", exc)
    worst = 0
    for name in args.inputs:
        path = Path(name)
        try:
            verdict = verify_file(path, reader, args.frames, reader_error)
        except InputError as exc:
            worst = 2
            if args.json:
                print(json.dumps({"path": name, "marked": False, "error": str(exc)}), flush=True)
            else:
                print(f"lostface: error: {exc}", file=sys.stderr, flush=True)
            continue
        if not verdict.marked:
            worst = max(worst, 1)
        if args.json:
            print(json.dumps(verdict.to_json()), flush=True)
        else:
            print(verdict.summary(), flush=True)
    return worst
