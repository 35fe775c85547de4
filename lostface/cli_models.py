"""`lostface models list | pull | verify`: the full engines' models (settings under models.*,
and detect.model). `pull` is the only command that touches the network."""

from __future__ import annotations

import argparse
import json
import logging

from lostface.cli_common import add_config_args
from lostface.config import Settings
from lostface.errors import ModelError

log = logging.getLogger("lostface")


def add_models_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "models",
        help="list, download (pull), check (verify) and merge the full engines' models",
        description="The models the full engines load, as named by the settings (models.*, "
        "detect.model): hub ids, downloaded once by `pull` into the cache, or local paths. "
        "Nothing else in lostface downloads.",
    )
    msub = p.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    q = msub.add_parser("list", help="each model setting, where its files are, and their size")
    q.add_argument("--json", action="store_true", help="one JSON object per model and line")
    add_config_args(q)
    for name, text in (
        ("pull", "download hub models into the cache (default: those the engines use)"),
        ("verify", "check the models' files and tensor shapes, offline"),
    ):
        q = msub.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")
        q.add_argument(
            "keys",
            nargs="*",
            metavar="KEY",
            help="models.inpaint, models.lcm_lora, models.upscale, models.sam, "
            "models.face_mesh or detect.model "
            "(default: those the chosen "
            "engines use, or every one that is set when they use none)",
        )
        add_config_args(q)
    _add_merge(msub)


def _add_merge(msub: argparse._SubParsersAction) -> None:
    q = msub.add_parser(
        "merge",
        help="merge fine-tuned models by task arithmetic, or LoRAs",
        description="Models: OUT = BASE + sum of W_i * (FT_i - BASE), all fine-tuned from the "
        "same weights (diffusers folders or single .safetensors checkpoints, one form). With "
        "--onto TARGET the task vectors are added to TARGET instead (add-difference: a "
        "text-to-image fine-tune onto an inpainting model). With --lora the inputs are LoRAs "
        "of one base model, merged linearly or by TIES.",
    )
    q.add_argument("inputs", nargs="+", metavar="MODEL", help="BASE FT1 [FT2 ...], or LoRAs")
    q.add_argument("--weights", nargs="+", type=float, required=True, metavar="W")
    q.add_argument("-o", "--output", required=True, metavar="OUT", help="the merged model")
    q.add_argument("--onto", metavar="TARGET", help="add the task vectors onto this model")
    q.add_argument("--lora", action="store_true", help="the inputs are LoRAs")
    q.add_argument("--combination", default="linear", choices=("linear", "ties"))
    q.add_argument(
        "--density", type=float, default=0.5, help="ties: share of each delta kept (0-1)"
    )
    add_config_args(q)


def _merge(args: argparse.Namespace, settings: Settings) -> int:
    from pathlib import Path

    from lostface.errors import InputError

    try:
        from lostface.generative.merge import describe, merge_loras, merge_models
    except ImportError as exc:
        raise ModelError(
            f"Merging needs torch and safetensors ({exc.name} is missing); run "
            "`pip install 'lostface[diffusion]'`."
        ) from None
    paths = [Path(p).expanduser() for p in args.inputs]
    onto = Path(args.onto).expanduser() if args.onto else None
    for p in [*paths, *([onto] if onto else [])]:
        if not p.exists():
            raise InputError(f"{p} does not exist; check the path.")
    out = Path(args.output).expanduser()
    if args.lora:
        if not 0 < args.density <= 1:
            raise InputError("--density must lie in (0, 1].")
        merge_loras(paths, args.weights, out, args.combination, args.density)
    else:
        if len(paths) < 2:
            raise InputError("Give the base and at least one fine-tuned model: BASE FT1 [FT2 ...].")
        merge_models(paths[0], paths[1:], args.weights, out, onto)
    print(describe(out))
    return 0


def _keys(settings: Settings, keys: list[str]) -> list[str]:
    from lostface.models import CATALOGUE, model_entry, model_spec, needed_models

    if keys:
        return [model_entry(k).key for k in keys]
    return needed_models(settings) or [k for k in CATALOGUE if model_spec(settings, k)]


def cmd_models(args: argparse.Namespace, settings: Settings) -> int:
    actions = {"list": _list, "pull": _pull, "verify": _verify, "merge": _merge}
    return actions[args.models_command](args, settings)


def _list(args: argparse.Namespace, settings: Settings) -> int:
    from lostface.models import CATALOGUE, folder_size, locate, model_spec, needed_models

    used = set(needed_models(settings))
    for key, entry in CATALOGUE.items():
        spec = model_spec(settings, key)
        mesh = entry.kind == "mesh"
        path = locate(settings, key) if spec or mesh else None
        size = folder_size(path) if path else 0
        row = {
            "key": key,
            "spec": spec,
            "path": str(path) if path else None,
            "bytes": size,
            "used": key in used,
            "what": entry.summary,
        }
        if args.json:
            print(json.dumps(row), flush=True)
            continue
        where = (
            f"{path} ({size / 1e6:.1f} MB)"
            if path
            else ("not downloaded" if spec or mesh else "not set")
        )
        mark = "*" if key in used else " "
        shown = spec or ("(PyPI: mediapipe==0.10.21)" if mesh else "-")
        print(f"{mark} {key:<16} {shown:<52} {where}")
    if not args.json:
        print("(* used by the chosen engines)")
    return 0


def _pull(args: argparse.Namespace, settings: Settings) -> int:
    from lostface.models import pull

    keys = _keys(settings, args.keys)
    for path in pull(settings, keys):
        print(path, flush=True)
    return 0


def _verify(args: argparse.Namespace, settings: Settings) -> int:
    from lostface.models import resolve

    keys = _keys(settings, args.keys)
    failed = 0
    for key in keys:
        try:
            path = resolve(settings, key)
            problems = _problems(settings, key)
        except ModelError as exc:
            print(exc, flush=True)
            failed += 1
            continue
        if problems:
            failed += 1
            print(f"{key}: {path}: {'; '.join(p.rstrip('.') for p in problems)}.", flush=True)
        else:
            what = {"detect.model": "the file is there", "models.face_mesh": "sha256 matches"}.get(
                key, "tensor shapes match"
            )
            print(f"{key}: ok ({path}: {what})", flush=True)
    return 3 if failed else 0


def _problems(settings: Settings, key: str) -> list[str]:
    from lostface.models import resolve

    if key in ("detect.model", "models.face_mesh"):
        return []  # resolve checked the face mesh's sha256
    if key == "models.sam":
        try:
            from lostface.generative.sam import sam_problems
        except ImportError as exc:
            raise ModelError(
                f"checking {key} needs torch ({exc.name} is missing); run "
                "`pip install 'lostface[sam]'`."
            ) from None
        return sam_problems(resolve(settings, key))
    try:
        from lostface.generative.loading import verify_model
    except ImportError as exc:
        raise ModelError(
            f"checking {key} needs torch and diffusers ({exc.name} is missing); run "
            "`pip install 'lostface[diffusion]'`."
        ) from None
    return verify_model(settings, key)
