"""`lostface identity train | list | show | remove | distill`: a person's face learnt from a
few photos (lostface.identities, lostface.generative.identity)."""

from __future__ import annotations

import argparse
import json

from lostface.cli_common import add_config_args
from lostface.config import Settings
from lostface.errors import ModelError


def add_identity_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "identity",
        help="learn a person's face from photos (DreamBooth LoRA) and manage identities",
        description="Identities: a LoRA of the inpainting model learnt from a few unmasked "
        "photos of one person; `--identity NAME` on run, restore, serve, vcam and stream paints "
        "with it (the diffusion engine). Needs the diffusion extra and models.inpaint.",
    )
    isub = p.add_subparsers(dest="identity_command", metavar="ACTION", required=True)
    q = isub.add_parser(
        "train",
        help="train an identity from photos of one person",
        description="Find and align the face of each photo, cover copies with synthetic masks, "
        "and train a LoRA of the inpainting model to fill the person's lower face. At least 3 "
        "usable photos; a GPU makes it minutes instead of hours.",
    )
    q.add_argument("photos", nargs="+", metavar="PHOTO", help="photos or folders of photos")
    q.add_argument("--name", required=True, help="the identity's name (letters, digits, . _ -)")
    q.add_argument(
        "--class",
        dest="class_word",
        help="what the person is: person, man, woman (identity.class_word)",
    )
    q.add_argument("--steps", type=int, help="training steps (identity.steps, default 400)")
    q.add_argument(
        "--prior-preservation",
        action="store_true",
        help="keep the class word painting as the base model does (identity.prior_preservation)",
    )
    q.add_argument(
        "--text-encoder", action="store_true", help="also train the text encoder (a LoRA)"
    )
    add_config_args(q)
    q = isub.add_parser("list", help="the trained identities")
    q.add_argument("--json", action="store_true", help="one JSON object per identity and line")
    add_config_args(q)
    for name, text in (("show", "an identity's details"), ("remove", "delete an identity")):
        q = isub.add_parser(name, help=text)
        q.add_argument("name", metavar="NAME")
        add_config_args(q)
    q = isub.add_parser(
        "distill",
        help="distil base model + identity into one LCM-LoRA (the fastest painting)",
        description="Consistency distillation (the LCM recipe): the base model with the "
        "identity teaches a new LoRA to paint in 2 to 8 LCM steps; the identity then needs no "
        "separate LCM-LoRA.",
    )
    q.add_argument("name", metavar="NAME")
    q.add_argument("--steps", type=int, default=200, help="distillation steps (default 200)")
    add_config_args(q)


def overrides_of(args: argparse.Namespace) -> list[str]:
    """The identity.* settings the train flags set."""
    out = []
    if getattr(args, "class_word", None):
        out.append(f'identity.class_word="{args.class_word}"')
    if getattr(args, "steps", None) and args.identity_command == "train":
        out.append(f"identity.steps={args.steps}")
    if getattr(args, "prior_preservation", False):
        out.append("identity.prior_preservation=true")
    if getattr(args, "text_encoder", False):
        out.append("identity.text_encoder=true")
    return out


def cmd_identity(args: argparse.Namespace, settings: Settings) -> int:
    from lostface.identities import get_identity, list_identities, remove_identity

    action = args.identity_command
    if action == "list":
        for ident in list_identities(settings):
            row: dict[str, object] = {
                "name": ident.name,
                "token": ident.token,
                "folder": str(ident.folder),
                "faces": len(ident.faces),
                "distilled": ident.lcm_lora is not None,
            }
            if args.json:
                print(json.dumps(row), flush=True)
            else:
                lcm = ", distilled" if row["distilled"] else ""
                print(f"{ident.name:<20} {row['faces']} faces{lcm}  {ident.folder}")
        return 0
    if action == "show":
        ident = get_identity(settings, args.name)
        print(json.dumps({**ident.meta, "folder": str(ident.folder)}, indent=1))
        return 0
    if action == "remove":
        print(remove_identity(settings, args.name))
        return 0
    try:
        from lostface.generative.identity import distill_identity, train_identity
    except ImportError as exc:
        raise ModelError(
            f"Identities need torch, diffusers and peft ({exc.name} is missing); run "
            "`pip install 'lostface[diffusion]'`."
        ) from None
    progress = settings.output.progress
    if action == "train":
        ident = train_identity(settings, args.photos, args.name, progress=progress)
    else:
        ident = distill_identity(settings, args.name, steps=args.steps, progress=progress)
    print(ident.folder)
    return 0
