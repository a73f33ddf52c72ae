"""How a typed value (Parquet, JSON Lines) becomes the text Target receives.

CSV values are text already; typed formats need one documented rendering,
the same for every reader:

| value | sent as |
|---|---|
| null (None), NaN | empty (Target ignores empty values) |
| string | as is |
| integer, decimal | as written: ``42``, ``1200.50`` (a decimal keeps its scale) |
| float | the shortest text that reads back as the same float: ``0.1``, ``1e+20`` |
| boolean | ``true`` / ``false`` |
| date, time, timestamp | ISO 8601: ``2026-11-29``, ``2026-11-29T01:30:00+00:00`` |
| bytes | decoded as UTF-8; invalid bytes make the row ``bad_encoding`` |
| list, struct, map (nested) | compact JSON text: ``["a",1]``, ``{"k":"v"}`` |
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

__all__ = ["JsonNumber", "render_value"]


class JsonNumber(str):
    """A number of a JSON Lines record, kept as the text it was written with."""


def render_value(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return "" if math.isnan(value) else repr(value)
    if isinstance(value, Decimal):
        return "" if value.is_nan() else format(value, "f")
    if isinstance(value, dt.date | dt.time):  # datetime is a date
        return value.isoformat()
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "surrogateescape")
    return _json(value)


def _json(value: Any) -> str:
    """Compact JSON for nested values; scalars inside keep the rendering above."""
    if isinstance(value, JsonNumber):
        return str.__str__(value)
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_json(str(k))}:{_json(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        # pyarrow gives maps as lists of (key, value) pairs
        return "[" + ",".join(_json(v) for v in value) + "]"
    if value is None:
        return "null"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, bool | int | float | Decimal):
        text = render_value(value)
        return text if text and not (isinstance(value, float) and math.isinf(value)) else "null"
    return json.dumps(render_value(value), ensure_ascii=False)
