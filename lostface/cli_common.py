"""What every `lostface` command shares: the configuration and reference arguments, and
the settings they resolve to. The command modules (cli, cli_live, benchmark.cli) import from
here and never from each other."""

from __future__ import annotations

import argparse
from pathlib import Path

from lostface.config import PRESETS, Settings, dump_toml, load_settings

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


def add_config_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("configuration")
    g.add_argument(
        "--preset", default="cpu", choices=PRESETS, help="settings preset (default: cpu)"
    )
    g.add_argument("--config", metavar="FILE", help="TOML file of settings over the preset")
    g.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting, e.g. --set tracking.detect_every=2 (repeatable)",
    )
    g.add_argument("-v", "--verbose", action="store_true", help="log details (and tracebacks)")
    g.add_argument("-q", "--quiet", action="store_true", help="only errors; no progress bar")


def add_reference_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-r",
        "--reference",
        action="append",
        default=[],
        metavar="[NAME=]PATH",
        help="unmasked photo (or folder of photos) of a person, NAME=PATH to name them; "
        "repeatable: each masked face is painted from the person it matches, or gets a "
        "neutral fill",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    overrides = list(args.overrides)
    if getattr(args, "debug_overlay", False):
        overrides.append("output.debug_overlay=true")
    if args.quiet:
        overrides.append("output.progress=false")
    return load_settings(args.preset, args.config, overrides)


def write_config(settings: Settings, output: Path) -> None:
    if settings.output.write_config:
        output.with_name(output.name + ".lostface.toml").write_text(dump_toml(settings))
