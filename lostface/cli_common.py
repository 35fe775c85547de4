"""What every `lostface` command shares: the configuration and reference arguments, and
the settings they resolve to. The command modules (cli, cli_live, benchmark.cli) import from
here and never from each other."""

from __future__ import annotations

import argparse
import os
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


def add_reference_arg(p: argparse.ArgumentParser, footage: bool = True) -> None:
    """--reference, --self-reference (footage: videos and live sources, not photos), and
    --identity (a trained identity: the diffusion engine with its LoRA)."""
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
    if footage:
        p.add_argument(
            "--self-reference",
            choices=("auto", "off"),
            help="learn each person's face from the moments the footage shows them unmasked "
            "(default auto; named references take precedence); sets restore.self_reference",
        )
    p.add_argument(
        "--identity",
        metavar="NAME",
        help="paint with a trained identity (`lostface identity train`): the diffusion engine "
        "with the person's LoRA; sets restore.identity and restore.engine=diffusion",
    )


def add_audio_arg(p: argparse._ActionsContainer, what: str = "write video only") -> None:
    p.add_argument(
        "--no-audio",
        action="store_true",
        help=f"leave the input's audio out ({what}); sets video.audio=false",
    )


def reference_paths(entries: list[str]) -> list[str]:
    """Reference photos and folders as absolute paths, each once, in the order given: the
    saved configuration then finds them from any folder. NAME=PATH keeps its NAME (checked
    where the references are read) and makes its PATH absolute."""
    out: list[str] = []
    for entry in entries:
        name, named, rest = entry.partition("=")
        if named and not os.path.exists(os.path.expanduser(entry)):
            path = f"{name}={os.path.abspath(os.path.expanduser(rest)) if rest else ''}"
        else:
            path = os.path.abspath(os.path.expanduser(entry))
        if path not in out:
            out.append(path)
    return out


def settings_from_args(args: argparse.Namespace) -> Settings:
    """The settings of a command: preset, --config, --set, then the flags that change the
    output (--debug-overlay, --no-audio, --reference, --self-reference, --identity), so that
    the configuration
    saved beside
    an output (write_config) reproduces the run with --config alone."""
    overrides = list(args.overrides)
    if getattr(args, "debug_overlay", False):
        overrides.append("output.debug_overlay=true")
    if getattr(args, "no_audio", False):
        overrides.append("video.audio=false")
    if args.quiet:
        overrides.append("output.progress=false")
    if getattr(args, "self_reference", None):
        overrides.append(f'restore.self_reference="{args.self_reference}"')
    if getattr(args, "identity", None):
        overrides += [f'restore.identity="{args.identity}"', "restore.engine=diffusion"]
    settings = load_settings(args.preset, args.config, overrides)
    given = getattr(args, "reference", None) or []
    settings.restore.references = reference_paths([*settings.restore.references, *given])
    return settings


def write_config(settings: Settings, output: Path) -> None:
    """OUT.lostface.toml beside the output: `--config` of it alone gives the same output."""
    if settings.output.write_config:
        output.with_name(output.name + ".lostface.toml").write_text(dump_toml(settings))
