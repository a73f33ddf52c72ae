"""config.example.toml documents every settings key, with the real defaults, and loads."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path
from typing import Any, get_type_hints

import pytest

from uploader.errors import ConfigError
from uploader.settings import Settings, load_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "config.example.toml"
# Fields that exist on the dataclasses but never come from a file.
NOT_IN_FILE = {("target", "token"), ("run", "fresh")}
SECTIONS = [f.name for f in dataclasses.fields(Settings)]
CLASSES: dict[str, type[Any]] = {name: get_type_hints(Settings)[name] for name in SECTIONS}


def _keys_by_section(text: str) -> dict[str, set[str]]:
    """Keys written in each [section], set or commented out (``# key = ...``)."""
    found: dict[str, set[str]] = {}
    section = ""
    for line in text.splitlines():
        if m := re.fullmatch(r"\[(\w+)\]\s*", line):
            section = m.group(1)
            found[section] = set()
        elif m := re.match(r"#?\s?(\w+) = ", line):
            found.setdefault(section, set()).add(m.group(1))
    return found


def _fields(section: str) -> tuple[dataclasses.Field[Any], ...]:
    return dataclasses.fields(CLASSES[section])


def test_example_loads_and_equals_the_defaults() -> None:
    loaded = load_settings(EXAMPLE, {"target.client": "acme"}, environ={})
    defaults = load_settings(None, {"target.client": "acme"}, environ={})
    assert loaded == defaults


def test_every_field_is_documented_in_its_section() -> None:
    keys = _keys_by_section(EXAMPLE.read_text(encoding="utf-8"))
    assert list(keys) == SECTIONS == list(CLASSES)
    for section in SECTIONS:
        wanted = {f.name for f in _fields(section)} - {n for s, n in NOT_IN_FILE if s == section}
        assert keys[section] == wanted, section


def test_every_key_has_a_comment() -> None:
    for line in EXAMPLE.read_text(encoding="utf-8").splitlines():
        if re.match(r"#?\s?\w+ = ", line):
            assert re.search(r"\S\s+# \S", line), f"no comment: {line!r}"


def test_set_keys_hold_the_dataclass_defaults() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for section in SECTIONS:
        for f in _fields(section):
            if f.name not in data.get(section, {}):
                continue
            default = (
                f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            )
            value = data[section][f.name]
            if isinstance(default, tuple):
                value = tuple(value)
            assert value == default, f"{section}.{f.name}"


def test_commented_keys_are_the_unset_ones() -> None:
    data = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    for section in SECTIONS:
        for f in _fields(section):
            if (section, f.name) in NOT_IN_FILE or f.name in data.get(section, {}):
                continue
            assert f.default in (None, "", dataclasses.MISSING), f"{section}.{f.name} not set"


def test_token_cannot_come_from_the_example(tmp_path: Path) -> None:
    text = EXAMPLE.read_text(encoding="utf-8").replace("[target]\n", '[target]\ntoken = "x"\n')
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"unknown config key target\.token"):
        load_settings(path, {"target.client": "acme"}, environ={})


def test_uncommented_optional_keys_validate(tmp_path: Path) -> None:
    """Uncommenting the example lines gives a valid config too."""
    text = EXAMPLE.read_text(encoding="utf-8")
    text = re.sub(r"^# (\w+ = )", r"\1", text, flags=re.MULTILINE)
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    s = load_settings(path, environ={"TARGET_PROFILE_TOKEN": "secret"})
    assert s.target.client == "yourclientcode"
    assert s.target.token == "secret"
    assert s.input.id_column == "customerId"
    assert s.input.columns == ("loyaltyTier", "lifetimeValue")
    assert s.run.work_dir == Path("uploader-runs/JOB_ID")
    assert s.run.junit == Path("junit.xml")
