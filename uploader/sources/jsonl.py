"""Read a JSON Lines export: one JSON object per line, gzip or not.

The header is the keys of the first object, in order (or ``input.columns``
picks among them as for CSV); a later object with a key the header does not
have is rejected as ``too_many_fields``, a missing key is an empty value. A
line that is not a JSON object is a ``malformed_record``; blank lines are
skipped. Numbers keep the text they were written with (``1200.50`` stays
``1200.50``, ``1e3`` stays ``1e3``); other values are rendered by
``sources.render``. The "line" of a record is its physical line in the file.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from itertools import islice
from typing import Any

from uploader.closing import Closing
from uploader.errors import InputError
from uploader.source import BLOCK_ROWS, RecordBlock
from uploader.sources.render import JsonNumber, render_value
from uploader.sources.stream import open_input

__all__ = ["JsonLinesSource"]


_decode = json.JSONDecoder(parse_float=JsonNumber, parse_int=JsonNumber).decode


class JsonLinesSource(Closing):
    """An open JSON Lines export, with the same shape as ``CsvSource``."""

    def __init__(self, name: str, *, storage_options: Mapping[str, Any] | None = None) -> None:
        self._stream = open_input(name, storage_options=storage_options)
        self.label = self._stream.label
        self._lines = enumerate(self._stream.data, 1)
        self._first_text = ""
        try:
            self._first = self._first_object()
        except BaseException:
            self.close()
            raise
        self.header_line = self._first[0]
        self.header = tuple(self._first[1])
        self._index = {name: i for i, name in enumerate(self.header)}

    def _first_object(self) -> tuple[int, dict[str, Any]]:
        for number, raw in self._read(self._lines):
            if not raw.strip():
                continue
            self._first_text = raw.decode("utf-8", "surrogateescape")
            obj = self._parse(self._first_text)
            if not isinstance(obj, dict):
                raise InputError(f"{self.label}:{number}: the first record is not a JSON object")
            if not obj:
                raise InputError(f"{self.label}:{number}: the first record has no keys")
            return number, obj
        raise InputError(f"{self.label}: empty file (no JSON object)")

    def _read(self, lines: Iterator[tuple[int, bytes]]) -> Iterator[tuple[int, bytes]]:
        try:
            yield from lines
        except (OSError, EOFError) as exc:
            raise InputError(f"{self.label}: cannot read: {exc}") from exc

    def _parse(self, text: str) -> Any:
        try:
            return _decode(text)
        except ValueError:
            return None

    def _row(self, obj: dict[str, Any]) -> list[str]:
        row = [""] * len(self.header)
        extra: list[str] = []
        for key, value in obj.items():
            i = self._index.get(key)
            if i is None:
                extra.append(f"{key}={render_value(value)}")
            else:
                row[i] = render_value(value)
        # Keys the header lacks make the row longer than the header: the encoder
        # rejects it as too_many_fields, and rejects.csv shows them as key=value.
        return row + extra

    def blocks(self, size: int = BLOCK_ROWS) -> Iterator[RecordBlock]:
        first_number, first = self._first
        block = RecordBlock(raw_first=first_number)
        block.rows.append(self._row(first))
        block.lines.append(first_number)
        block.raw.append(self._first_text)
        lines = self._read(self._lines)
        while True:
            chunk = list(islice(lines, size))
            if not chunk:
                break
            for number, raw in chunk:
                if not block.raw:
                    block.raw_first = number
                text = raw.decode("utf-8", "surrogateescape")
                block.raw.append(text)  # rejects.csv writes a record back from its line
                if not text.strip():
                    continue
                obj = self._parse(text)
                if isinstance(obj, dict):
                    block.rows.append(self._row(obj))
                    block.lines.append(number)
                else:
                    block.malformed.append((number, "not a JSON object"))
            if len(block.rows) >= size:
                yield block
                block = RecordBlock()
        if block.rows or block.malformed:
            yield block

    def close(self) -> None:
        self._stream.close()
