"""Named identities: a person's face learnt from a few photos (`lostface identity train`),
kept as a folder that the diffusion restorer loads by name (`--identity NAME`).

    NAME/identity.json                      name, token, class word, base model, training figures
    NAME/training.toml                      the settings it was trained with
    NAME/pytorch_lora_weights.safetensors   the identity LoRA (diffusers' LoRA format)
    NAME/lcm_lora.safetensors               (after `identity distill`) LCM-LoRA of base + identity
    NAME/faces/*.png                        the aligned faces it learnt from (also references)
    NAME/preview.png                        masked | painted with the identity | original

Identities live in identity.dir, by default $XDG_DATA_HOME/lostface/identities
(~/.local/share/lostface/identities). Nothing here needs torch.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lostface.config import Settings
from lostface.errors import ConfigError, InputError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
LORA_FILE = "pytorch_lora_weights.safetensors"
LCM_FILE = "lcm_lora.safetensors"
META_FILE = "identity.json"


def identities_dir(settings: Settings) -> Path:
    if settings.identity.dir:
        return Path(settings.identity.dir).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "lostface" / "identities"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise InputError(
            f"Identity name {name!r} is not usable; use letters, digits, '.', '_' or '-' (up "
            "to 64, starting with a letter or digit)."
        )
    return name


@dataclass(frozen=True)
class Identity:
    name: str
    folder: Path
    meta: dict[str, Any]

    @property
    def token(self) -> str:
        return str(self.meta["token"])

    @property
    def class_word(self) -> str:
        return str(self.meta.get("class", "person"))

    @property
    def prompt(self) -> str:
        """The words that call up this person in a prompt: "sks person"."""
        return f"{self.token} {self.class_word}"

    @property
    def lora(self) -> Path:
        return self.folder / LORA_FILE

    @property
    def lcm_lora(self) -> Path | None:
        """The identity's own distilled LCM-LoRA (base + identity in one), if distilled."""
        path = self.folder / LCM_FILE
        return path if path.is_file() else None

    @property
    def faces(self) -> list[Path]:
        return sorted((self.folder / "faces").glob("*.png"))


def _read(folder: Path) -> Identity | None:
    try:
        meta = json.loads((folder / META_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or "token" not in meta or not (folder / LORA_FILE).is_file():
        return None
    return Identity(folder.name, folder, meta)


def list_identities(settings: Settings) -> list[Identity]:
    root = identities_dir(settings)
    found = [_read(p) for p in sorted(root.iterdir())] if root.is_dir() else []
    return [i for i in found if i is not None]


def get_identity(settings: Settings, name: str) -> Identity:
    check_name(name)
    folder = identities_dir(settings) / name
    ident = _read(folder) if folder.is_dir() else None
    if ident is None:
        known = ", ".join(i.name for i in list_identities(settings)) or "none yet"
        raise InputError(
            f"No identity named {name} in {identities_dir(settings)} (known: {known}); train "
            "one with `lostface identity train PHOTOS --name NAME`."
        )
    return ident


def remove_identity(settings: Settings, name: str) -> Path:
    ident = get_identity(settings, name)
    shutil.rmtree(ident.folder)
    return ident.folder


def identity_for(settings: Settings) -> Identity | None:
    """The identity restore.identity names (None when empty); the diffusion engine needs it."""
    name = settings.restore.identity
    if not name:
        return None
    if settings.restore.engine != "diffusion":
        raise ConfigError(
            f"restore.identity {name} paints with the diffusion engine; add "
            "--set restore.engine=diffusion (or --preset gpu)."
        )
    return get_identity(settings, name)
