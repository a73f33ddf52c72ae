"""Turn TOML and command-line values into the types the settings declare.

``settings.py`` owns the keys and their meaning; this module only knows
types. The conversion is chosen from the field's real annotation
(``typing.get_type_hints``), never from its text, so ``int | None`` accepts
``5`` and ``float`` refuses ``nan`` and ``inf`` (TOML has both). Every refusal
is one line that names the key, the expected type and what was given; the
caller adds the file.
"""

from __future__ import annotations

import datetime
import difflib
import math
import os
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from uploader.errors import ConfigError

__all__ = ["closest", "convert", "describe", "toml_type"]


def convert(key: str, hint: Any, value: Any) -> Any:
    """``value`` as the type ``hint`` names, or a ``ConfigError`` naming ``key``."""
    try:
        return _convert(hint, value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{key}: expected {describe(hint)}, got {_shown(value)}") from None


def describe(hint: Any) -> str:
    """The expected type in words: "an integer", "a list of strings"..."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        kinds = [describe(a) for a in args if a is not type(None)]
        return " or ".join(kinds)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is tuple:
        return "a list of strings"
    if origin is Mapping or hint is Mapping:
        return "a table" if args and args[1] is Any else "a table of strings"
    names = {
        bool: "true or false",
        int: "an integer",
        float: "a finite number",
        str: "a string",
        Path: "a path (a string)",
    }
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def toml_type(value: Any) -> str:
    """The TOML name of a parsed value's type, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, datetime.date | datetime.time):
        return "a date/time"
    return type(value).__name__


def closest(word: str, known: Iterable[str]) -> str | None:
    """The known name nearest to a misspelt one, if any is near enough."""
    found = difflib.get_close_matches(word, list(known), n=1, cutoff=0.6)
    return found[0] if found else None


def _shown(value: Any) -> str:
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{text} ({toml_type(value)})"


def _convert(hint: Any, value: Any) -> Any:
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value)
            except (TypeError, ValueError, OverflowError):
                continue
        raise ValueError(value)
    if origin is Literal:
        if isinstance(value, str) and value in args:
            return value
        raise ValueError(value)
    if origin is tuple:
        return _strings(value)
    if origin is Mapping or hint is Mapping:
        if args and args[1] is Any:  # options handed on to a library, which checks them
            if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
                return types.MappingProxyType(dict(value))
            raise TypeError(value)
        return _table_of_strings(value)
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise TypeError(value)
    if hint is int:
        return _integer(value)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(value)
        if not math.isfinite(value):
            raise ValueError(value)
        return float(value)
    if hint is str:
        if isinstance(value, str):
            return value
        raise TypeError(value)
    if hint is Path:
        if isinstance(value, str | os.PathLike) and str(value):
            return Path(value)
        raise TypeError(value)
    # A field type this loader does not know is a bug in settings.py, not bad input.
    raise NotImplementedError(f"settings field of unsupported type {hint!r}")


def _integer(value: Any) -> int:
    if isinstance(value, bool):
        raise TypeError(value)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)  # 1e5 in TOML is a float; it names an integer exactly
    raise TypeError(value)


def _strings(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):  # "a, b" from a flag or a file: a comma-separated list
        return tuple(v.strip() for v in value.split(",") if v.strip())
    if isinstance(value, list | tuple) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise TypeError(value)


def _table_of_strings(value: Any) -> Mapping[str, str]:
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        return types.MappingProxyType(dict(value))
    raise TypeError(value)
