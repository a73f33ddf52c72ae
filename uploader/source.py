"""Read the CSV export: file, gzip or stdin, with the line number of every record.

First stage of the flow (``source -> encode -> chunk``). It knows about bytes,
text encodings and CSV syntax, and nothing about batches. Records come out in
blocks (lists of rows plus the first physical input line of each) so that the
next stages can work on many rows per Python call.

Decoding uses ``errors='surrogateescape'``: a row with undecodable bytes still
parses, carries lone surrogates, and is rejected as ``bad_encoding`` by the
encoder instead of stopping the whole run; writing it back with the same
error handler restores the original bytes in ``rejects.csv``.

The CSV dialect is RFC 4180 with ``strict=True``: an unterminated quote at
the end of the input or text after a closing quote is a ``malformed_record``
rather than silently merged or altered data.
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import stat
import sys
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice, tee
from pathlib import Path
from types import TracebackType
from typing import IO, Any, BinaryIO

from uploader.errors import InputError
from uploader.sources.stream import is_url, open_url

__all__ = ["BLOCK_ROWS", "CsvSource", "RecordBlock"]

BLOCK_ROWS = 256  # rows per block: amortises per-call costs; bounds memory (rows are <= ~128 KB)
_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)


@dataclass(slots=True)
class RecordBlock:
    """Consecutive records: fields, first input line of each, and unparsable records.

    ``raw`` holds the physical lines the block was parsed from (line endings
    kept), the first of them being input line ``raw_first``: rejected records
    are written back from them exactly as they were read.
    """

    rows: list[list[str]] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    malformed: list[tuple[int, str]] = field(default_factory=list)  # (line, csv error)
    raw: list[str] = field(default_factory=list)
    raw_first: int = 0

    def record_text(self, line: int) -> str:
        """The text of the record starting at input ``line``, without its line ending.

        A record runs up to the next record of the block (or the block's end);
        blank lines between records are not part of either.
        """
        starts = sorted([*self.lines, *(m[0] for m in self.malformed)])
        i = starts.index(line)
        end = starts[i + 1] if i + 1 < len(starts) else self.raw_first + len(self.raw)
        lines = self.raw[line - self.raw_first : end - self.raw_first]
        while len(lines) > 1 and lines[-1] in ("\n", "\r\n", "\r"):
            lines.pop()  # blank lines are skipped, never inside a record's last line
        text = "".join(lines)
        for ending in ("\r\n", "\n", "\r"):
            if text.endswith(ending):
                return text[: -len(ending)]
        return text


def _regular_size(binary: IO[bytes]) -> int | None:
    """The size of a regular file or URL object (None for a pipe: not known in advance)."""
    size = getattr(getattr(binary, "raw", None), "size", None)  # fsspec files know theirs
    if isinstance(size, int):
        return size
    try:
        st = os.fstat(binary.fileno())
    except (OSError, ValueError, AttributeError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


def _text_encoding(encoding: str) -> str:
    """Use utf-8-sig for UTF-8 so a leading BOM is skipped (it is a no-op otherwise)."""
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


class CsvSource:
    """An open export: its header, then its records in blocks.

    Opening reads the header, so every whole-input problem (unreadable file,
    empty input, no header) raises ``InputError`` here, before the caller
    writes anything.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        delimiter: str = ",",
        encoding: str = "utf-8",
        stdin: BinaryIO | None = None,
        storage_options: Mapping[str, Any] | None = None,
    ) -> None:
        self.label = "<stdin>" if str(path) == "-" else str(path)
        self._binary: IO[bytes] | None = None
        self.size_bytes: int | None = None  # of a regular file, for progress
        self._text = self._open(str(path), encoding, stdin, storage_options)
        try:
            # The reader and ``_raw`` share the physical lines (C-level tee): the
            # raw text of each block is kept so rejects can be written back verbatim.
            lines, self._raw = tee(self._text)
            self._reader = csv.reader(lines, delimiter=delimiter, strict=True)
            self.header, self.header_line = self._read_header(encoding)
            self._raw_pos = 1 + sum(1 for _ in islice(self._raw, self._reader.line_num))
        except BaseException:
            self.close()
            raise

    def _open(
        self,
        path: str,
        encoding: str,
        stdin: BinaryIO | None,
        storage_options: Mapping[str, Any] | None,
    ) -> io.TextIOWrapper:
        try:
            text_encoding = _text_encoding(encoding)
        except LookupError as exc:
            raise InputError(f"{self.label}: unknown encoding {encoding!r}") from exc
        try:
            if path == "-":
                raw: Any = stdin if stdin is not None else sys.stdin.buffer
                binary: io.BufferedReader = (
                    raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)
                )
            elif is_url(path):
                binary = open_url(path, storage_options)
            else:
                binary = open(path, "rb")  # noqa: SIM115 - closed in close()
            self._binary = binary  # GzipFile does not close the file it wraps
            self.size_bytes = _regular_size(binary)
            stream: Any = binary
            if binary.peek(2)[:2] == b"\x1f\x8b":  # gzip magic: .gz or not, stdin too
                stream = gzip.GzipFile(fileobj=binary, mode="rb")
        except OSError as exc:
            if self._binary is not None:
                self._binary.close()
            raise InputError(f"{self.label}: cannot read: {exc.strerror or exc}") from exc
        return io.TextIOWrapper(
            stream, encoding=text_encoding, errors="surrogateescape", newline=""
        )

    def _read_header(self, encoding: str) -> tuple[tuple[str, ...], int]:
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            raise InputError(f"{self.label}:1: malformed header: {exc}") from exc
        except _READ_ERRORS as exc:
            raise InputError(f"{self.label}: cannot read: {exc}") from exc
        if header is None:
            raise InputError(f"{self.label}: empty file (no header)")
        line = self._reader.line_num
        if not header:
            raise InputError(f"{self.label}:{line}: no header (the first line is empty)")
        for name in header:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise InputError(
                    f"{self.label}:{line}: header is not valid {encoding}: {name!r}"
                ) from exc
        return tuple(header), line

    def blocks(self, size: int = BLOCK_ROWS) -> Iterator[RecordBlock]:
        """Yield the records after the header, ``size`` rows per block.

        Blank lines are not records and are skipped. A record the CSV parser
        cannot parse is reported in ``malformed`` with its first line, and
        reading goes on with the next line.
        """
        reader = self._reader
        prev = reader.line_num
        block = RecordBlock()
        while True:
            rows, lines = block.rows, block.lines
            want, before, blanks = size - len(rows), len(rows), 0
            try:
                for row in islice(reader, want):
                    if row:
                        rows.append(row)
                        lines.append(prev + 1)
                    else:
                        blanks += 1
                    prev = reader.line_num
            except csv.Error as exc:
                block.malformed.append((prev + 1, str(exc)))
                prev = reader.line_num
                continue
            except _READ_ERRORS as exc:
                raise InputError(f"{self.label}:{prev + 1}: cannot read: {exc}") from exc
            if len(rows) >= size:
                yield self._with_raw(block)
                block = RecordBlock()
            elif len(rows) - before + blanks < want:
                break  # the reader ran dry: end of input
        if block.rows or block.malformed:
            yield self._with_raw(block)

    @property
    def bytes_read(self) -> int | None:
        """How far into the input's bytes (compressed, for gzip) reading has got, if known."""
        try:
            return self._binary.tell() if self._binary is not None else None
        except (OSError, ValueError):  # a pipe, or closed
            return None

    def _with_raw(self, block: RecordBlock) -> RecordBlock:
        """Attach the physical lines read since the last block."""
        count = self._reader.line_num - self._raw_pos + 1
        block.raw_first = self._raw_pos
        block.raw = list(islice(self._raw, count))
        self._raw_pos += count
        return block

    def close(self) -> None:
        """Close the input; standard input is left open (it is not ours)."""
        if self.label == "<stdin>":
            inner = self._text.detach()  # keeps the wrapper from closing stdin
            if isinstance(inner, gzip.GzipFile):
                inner.close()  # does not close the stream it wraps
            return
        try:
            self._text.close()
        finally:
            if self._binary is not None:
                self._binary.close()

    def __enter__(self) -> CsvSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
