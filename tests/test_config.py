from __future__ import annotations

import pytest

from lostface.config import Settings, dump_toml, load_settings, parse_override
from lostface.errors import ConfigError


def test_cpu_preset_is_default_and_typed():
    s = load_settings()
    assert isinstance(s, Settings)
    assert s.detect.engine == "centerface"
    assert isinstance(s.tracking.detect_every, int) and s.tracking.detect_every >= 1


@pytest.mark.parametrize(
    "item, path, value",
    [
        ("tracking.detect_every=2", ("tracking", "detect_every"), 2),
        ("detect.engine=yolov8", ("detect", "engine"), "yolov8"),
        ("detect.threshold=0.4", ("detect", "threshold"), 0.4),
        ("output.debug_overlay=true", ("output", "debug_overlay"), True),
        ('restore.references=["a.jpg", "b"]', ("restore", "references"), ["a.jpg", "b"]),
        ("detect.threshold=1", ("detect", "threshold"), None),  # int where float: out of range
    ],
)
def test_overrides(item, path, value):
    if value is None:
        with pytest.raises(ConfigError):
            load_settings(overrides=[item])
        return
    s = load_settings(overrides=[item])
    assert getattr(getattr(s, path[0]), path[1]) == value


@pytest.mark.parametrize(
    "item, words",
    [
        ("tracking.nope=1", "Unknown setting tracking.nope"),
        ("tracking.detect_every=fast", "whole number"),
        ("tracking.detect_every=0", "detect_every"),
        ("output.debug_overlay=3", "true or false"),
        ("detect.half=true", "half needs a cuda"),
        ("tracking=3", "section"),
        ("novalue", "key=value"),
        ("mask.closer_look_below=1.5", "closer_look_below must lie between 0 and 1"),
    ],
)
def test_bad_overrides_say_what_is_wrong(item, words):
    with pytest.raises(ConfigError, match=words):
        load_settings(overrides=[item])


def test_config_file_then_overrides_and_round_trip(tmp_path):
    f = tmp_path / "my.toml"
    f.write_text("[tracking]\ndetect_every = 5\n[keyframe]\nmax_age = 10\n")
    s = load_settings(config_file=f, overrides=["tracking.detect_every=4"])
    assert s.tracking.detect_every == 4 and s.keyframe.max_age == 10
    dumped = tmp_path / "resolved.toml"
    dumped.write_text(dump_toml(s))
    assert load_settings(config_file=dumped) == s


def test_bad_config_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_file=tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[tracking\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_file=bad)


def test_parse_override_nests():
    assert parse_override("a.b.c=1") == {"a": {"b": {"c": 1}}}
