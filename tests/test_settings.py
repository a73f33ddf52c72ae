"""Settings loading: every key, every TOML type, one-line messages with the file and the key."""

from __future__ import annotations

import datetime
import json
import math
import tomllib
import types
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uploader.config_types import convert
from uploader.errors import ConfigError
from uploader.settings import _SECTIONS, known_keys, load_settings

KEYS = known_keys()
# Characters a TOML basic string can hold once JSON-escaped (DEL must not appear raw).
TOML_CHARS = st.characters(codec="utf-8", exclude_characters="\x7f")

scalars = st.one_of(
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.sampled_from([0, 1, 2, 4, 100, 50_000_000, 500_001]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.5, 1e5, 2.0]),
    st.text(TOML_CHARS, max_size=12),
    st.sampled_from(["v1", "v2", "auto", "log", "pcId", ";", "latin-1", "https://x.example"]),
    st.datetimes(),
    st.dates(),
    st.times(),
)
toml_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(TOML_CHARS, max_size=4), scalars, max_size=2),
)


def render(value: Any) -> str:
    """``value`` as a TOML value (the standard library reads TOML but does not write it)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    if isinstance(value, list):
        return "[" + ", ".join(render(v) for v in value) + "]"
    return "{" + ", ".join(f"{render(k)} = {render(v)}" for k, v in value.items()) + "}"


def holds(hint: Any, value: Any) -> bool:
    """Whether a loaded value is of the annotated type (and finite, for numbers)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        return any(holds(a, value) for a in args)
    if hint is type(None):
        return value is None
    if origin is Literal:
        return value in args
    if origin is tuple:
        return isinstance(value, tuple) and all(isinstance(v, str) for v in value)
    if origin is Mapping:
        strings = args[1] is str
        return isinstance(value, Mapping) and all(
            isinstance(v, str) or not strings for v in value.values()
        )
    if hint is float:
        return type(value) is float and math.isfinite(value)
    if hint is int:
        return type(value) is int
    return isinstance(value, hint)


@pytest.mark.parametrize("key", KEYS)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=toml_values)
def test_any_toml_value_loads_typed_or_fails_in_one_line(
    key: str, value: Any, tmp_path_factory: pytest.TempPathFactory
) -> None:
    section, _, name = key.partition(".")
    tables: dict[str, dict[str, Any]] = {"target": {"client": "acme"}}
    tables.setdefault(section, {})[name] = value
    lines = []
    for table, items in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{k} = {render(v)}" for k, v in items.items())
    text = "\n".join(lines) + "\n"
    assert tomllib.loads(text)[section][name] is not None  # the file says what we meant
    path = tmp_path_factory.mktemp("cfg") / "c.toml"
    path.write_text(text, encoding="utf-8")
    try:
        loaded = load_settings(path, environ={})
    except ConfigError as exc:
        message = str(exc)
        assert "\n" not in message
        assert message.startswith(f"{path}: ")
        assert key in message
        return
    hint = get_type_hints(_SECTIONS[section])[name]
    assert holds(hint, getattr(getattr(loaded, section), name)), (key, value)


def _error(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_settings(path, environ={})
    return str(info.value)


def test_misspelt_key_names_the_closest(tmp_path: Path) -> None:
    assert _error(tmp_path, '[target]\nclinet = "acme"\n') == (
        f"{tmp_path / 'c.toml'}: unknown config key target.clinet; did you mean target.client?"
    )


def test_key_in_the_wrong_table_names_the_right_one(tmp_path: Path) -> None:
    text = '[target]\nclient = "acme"\n[batch]\nconcurrency = 4\n'
    assert _error(tmp_path, text).endswith(
        "unknown config key batch.concurrency; did you mean submit.concurrency?"
    )


def test_unknown_top_level_key_is_not_called_a_section(tmp_path: Path) -> None:
    message = _error(tmp_path, 'client = "acme"\n')
    assert message == (
        f"{tmp_path / 'c.toml'}: unknown config key client; did you mean target.client?"
    )
    assert "section" not in message


def test_misspelt_table(tmp_path: Path) -> None:
    assert _error(tmp_path, '[targte]\nclient = "acme"\n').endswith(
        "unknown config table [targte]; did you mean [target]?"
    )


def test_section_that_is_not_a_table(tmp_path: Path) -> None:
    assert _error(tmp_path, "batch = 5\n").endswith(
        "batch must be a table ([batch]), got an integer"
    )


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
def test_non_finite_timeouts_are_refused(tmp_path: Path, value: str) -> None:
    text = f'[target]\nclient = "acme"\n[status]\ntimeout_s = {value}\n'
    assert _error(tmp_path, text) == (
        f"{tmp_path / 'c.toml'}: status.timeout_s: expected a finite number, "
        f"got {float(value)!r} (a float)"
    )


def test_wrong_type_names_file_key_and_expected_type(tmp_path: Path) -> None:
    text = '[target]\nclient = "acme"\n[batch]\nmax_rows = "1000"\n'
    assert _error(tmp_path, text) == (
        f"{tmp_path / 'c.toml'}: batch.max_rows: expected an integer, got '1000' (a string)"
    )


def test_value_checks_name_the_file(tmp_path: Path) -> None:
    text = '[target]\nclient = "acme"\napi = "v3"\n'
    assert _error(tmp_path, text) == (
        f"{tmp_path / 'c.toml'}: target.api must be one of v1, v2; got 'v3'"
    )


def test_flag_values_are_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^command line: status.timeout_s: expected a finite"):
        load_settings(None, {"target.client": "acme", "status.timeout_s": math.nan}, environ={})


def test_conversion_follows_the_annotation_not_its_text() -> None:
    assert convert("k", int | None, 5) == 5
    assert convert("k", float | None, 5) == 5.0
    assert convert("k", int, 1e5) == 100_000
    assert convert("k", tuple[str, ...], "a, b") == ("a", "b")
    assert convert("k", Path | None, "x/y") == Path("x/y")
    with pytest.raises(ConfigError, match=r"^k: expected an integer, got 1.5 \(a float\)$"):
        convert("k", int | None, 1.5)
    with pytest.raises(ConfigError, match=r"^k: expected true or false, got 'yes'"):
        convert("k", bool, "yes")
    with pytest.raises(ConfigError, match=r"^k: expected one of 'a', 'b', got 'c'"):
        convert("k", Literal["a", "b"], "c")


def test_settings_are_frozen() -> None:
    s = load_settings(None, {"target.client": "acme"}, environ={})
    with pytest.raises(AttributeError):
        s.submit.concurrency = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        s.input.rename["a"] = "b"  # type: ignore[index]
