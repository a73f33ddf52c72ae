"""Read the CSV export: file, gzip or stdin, with the line number of every record.

First stage of the flow (``source -> encode -> chunk``). It knows about bytes,
text encodings and CSV syntax, and nothing about batches. Records come out in
blocks (lists of rows plus the first physical input line of each) so that the
next stages can work on many rows per Python call.

Decoding uses the ``ESCAPE`` error handler (``surrogateescape`` that also
covers UTF-16 and UTF-32 code units): a row with undecodable bytes still
parses, carries lone surrogates, and is rejected as ``bad_encoding`` by the
encoder instead of stopping the whole run; writing it back with the same
error handler restores the original bytes in ``rejects.csv``.

Before any CSV parsing, the first bytes are looked at (``_refuse_non_text``):
a binary file, or UTF-16/32 text read as an 8-bit encoding, is a one-line
error with the ``--encoding`` to use. Blank lines before the header are
skipped like blank lines anywhere else. A header that is one column holding
another likely delimiter (``;``, tab, ``|``, ``,``) is refused with the
``--delimiter`` to pass: guessing would silently change what every later
run of the same command sends.

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
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain, islice, tee
from pathlib import Path
from typing import IO, Any, BinaryIO

from uploader.closing import Closing
from uploader.errors import InputError
from uploader.sources.stream import is_url, open_url, stdin_bytes

__all__ = ["BLOCK_ROWS", "ESCAPE", "CsvSource", "RecordBlock", "guess_encoding"]

BLOCK_ROWS = 256  # rows per block: amortises per-call costs; bounds memory (rows are <= ~128 KB)
_READ_ERRORS = (OSError, EOFError, zlib.error, UnicodeDecodeError)
_SAMPLE_BYTES = 4096  # looked at before parsing: enough for the header of any real export
_MAX_HEADER_CHARS = 1 << 20  # a first line longer than this is not a CSV header
_DELIMITERS = {",": "comma", ";": "semicolon", "\t": "tab", "|": "pipe"}
_FLAG_VALUE = {",": ",", ";": "';'", "\t": "tab", "|": "'|'"}
# File signatures of things people pass by mistake instead of a CSV export.
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\x7fELF", "an ELF executable"),
    (b"PK\x03\x04", "a ZIP archive (an .xlsx workbook?)"),
    (b"%PDF", "a PDF document"),
    (b"GIF8", "a GIF image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PAR1", "a Parquet file"),
    (b"SQLite format 3\x00", "an SQLite database"),
    (b"\xd0\xcf\x11\xe0", "an OLE document (an .xls workbook?)"),
    (b"\xfd7zXZ\x00", "an xz archive"),
    (b"BZh9", "a bzip2 archive"),
)

ESCAPE = "uploader-escape"


def _escape(exc: UnicodeError) -> tuple[str | bytes, int]:
    """``surrogateescape`` for every byte, so UTF-16/32 code units round-trip too.

    Decoding maps each undecodable byte ``b`` to ``U+DC00 + b``; encoding maps
    such characters back to their bytes. For bytes >= 0x80 this is exactly
    ``surrogateescape``.
    """
    if isinstance(exc, UnicodeDecodeError):
        bad = exc.object[exc.start : exc.end]
        return "".join([chr(0xDC00 + b) for b in bad]), exc.end
    if isinstance(exc, UnicodeEncodeError):
        # Take the whole run of escaped bytes: UTF-16/32 encoders accept only
        # whole code units back, and one bad unit is two or four bytes.
        text, end = exc.object, exc.start
        while end < len(text) and "\udc00" <= text[end] <= "\udcff":
            end += 1
        if end >= exc.end:
            return bytes([ord(c) - 0xDC00 for c in text[exc.start : end]]), end
    raise exc


codecs.register_error(ESCAPE, _escape)


def guess_encoding(data: bytes, encoding: str) -> str | None:
    """An encoding other than ``encoding`` that decodes ``data`` cleanly, or None.

    Tried in the order of how often exports come in them: UTF-8, then
    Windows-1252 (Excel and most Western European exporters), then
    ISO-8859-1 (which decodes anything, so it is only named when the bytes
    use none of its C1 control range).
    """
    current = codecs.lookup(encoding).name
    for candidate in ("utf-8", "cp1252", "iso8859-1"):
        if codecs.lookup(candidate).name == current:
            continue
        try:
            text = data.decode(candidate)
        except UnicodeDecodeError:
            continue
        if candidate == "iso8859-1" and any("\x80" <= c <= "\x9f" for c in text):
            continue
        return {"iso8859-1": "latin-1"}.get(candidate, candidate)
    return None


def _refuse_non_text(label: str, sample: bytes, encoding: str) -> None:
    """InputError when the first bytes are not text in ``encoding`` (binary, UTF-16...)."""
    for magic, what in _MAGIC:
        if sample.startswith(magic):
            raise InputError(f"{label}: does not look like CSV text (it starts like {what})")
    if codecs.lookup(encoding).name.startswith(("utf-16", "utf-32")):
        return
    for bom, name in (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    ):
        if sample.startswith(bom):
            raise InputError(
                f"{label}: the file starts with a {name.upper()} byte order mark but is read "
                f"as {encoding}; pass --encoding {name}"
            )
    first = sample.split(b"\n", 1)[0]
    if b"\x00" not in first:
        return
    even, odd = first[0::2], first[1::2]
    if len(first) >= 4 and odd.count(0) >= len(odd) * 0.8 and even.count(0) == 0:
        name = "utf-16-le"
    elif len(first) >= 4 and even.count(0) >= len(even) * 0.8 and odd.count(0) == 0:
        name = "utf-16-be"
    else:
        raise InputError(
            f"{label}: does not look like CSV text (NUL bytes in the first line: binary data?)"
        )
    raise InputError(
        f"{label}: the first line has a NUL byte in every other position: the file looks "
        f"like {name.upper()} text read as {encoding}; pass --encoding {name}"
    )


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


class CsvSource(Closing):
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
        # A local file can be read again as bytes (``raw_chunks``); stdin and URLs cannot.
        self._path = None if str(path) == "-" or is_url(str(path)) else Path(path)
        self._encoding = encoding
        self.delimiter = delimiter
        self._binary: IO[bytes] | None = None
        self.size_bytes: int | None = None  # of a regular file, for progress
        self._skipped = 0  # blank lines before the header: csv's line_num does not see them
        self._text = self._open(str(path), encoding, stdin, storage_options)
        try:
            first = self._first_line()
            # The reader and ``_raw`` share the physical lines (C-level tee): the
            # raw text of each block is kept so rejects can be written back verbatim.
            lines, self._raw = tee(chain([first], self._text))
            self._reader = csv.reader(lines, delimiter=delimiter, strict=True)
            self.header, self.header_line = self._read_header(encoding, first)
            self._raw_pos = 1 + sum(1 for _ in islice(self._raw, self._reader.line_num))
        except BaseException:
            self.close()
            raise

    @property
    def line_num(self) -> int:
        """The physical input line the CSV reader has read up to."""
        return self._reader.line_num + self._skipped

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
                raw: Any = stdin if stdin is not None else stdin_bytes()
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
            sample = stream.peek(_SAMPLE_BYTES)[:_SAMPLE_BYTES]
        except IsADirectoryError as exc:  # the same words as sources.open_input's
            raise InputError(f"{self.label}: is a directory") from exc
        except FileNotFoundError as exc:
            raise InputError(f"{self.label}: no such file") from exc
        except OSError as exc:
            if self._binary is not None:
                self._binary.close()
            raise InputError(f"{self.label}: cannot read: {exc.strerror or exc}") from exc
        except _READ_ERRORS as exc:
            binary.close()
            raise InputError(f"{self.label}: cannot read: {exc}") from exc
        try:
            _refuse_non_text(self.label, sample, encoding)
        except InputError:
            binary.close()
            raise
        return io.TextIOWrapper(stream, encoding=text_encoding, errors=ESCAPE, newline="")

    def _first_line(self) -> str:
        """The first non-blank physical line; blank lines before it are counted, not parsed."""
        while True:
            try:
                line = self._text.readline(_MAX_HEADER_CHARS)
            except _READ_ERRORS as exc:
                raise InputError(f"{self.label}: cannot read: {exc}") from exc
            if line.strip("\r\n") or not line:
                break
            self._skipped += 1
        if len(line) >= _MAX_HEADER_CHARS and not line.endswith(("\n", "\r")):
            raise InputError(
                f"{self.label}:{self._skipped + 1}: does not look like CSV text "
                f"(the first line is over {_MAX_HEADER_CHARS:,} characters long)"
            )
        return line

    def _read_header(self, encoding: str, first: str) -> tuple[tuple[str, ...], int]:
        if not first:
            raise InputError(f"{self.label}: empty file (no header)")
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            self._refuse_other_delimiter(first, self._skipped + 1)
            raise InputError(f"{self.label}:{self.line_num}: malformed header: {exc}") from exc
        except _READ_ERRORS as exc:
            raise InputError(f"{self.label}: cannot read: {exc}") from exc
        line = self._skipped + 1
        if not header:  # the first line holds only a quoted line break, or nothing at all
            raise InputError(f"{self.label}:{line}: no header (the first line is empty)")
        for name in header:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError as exc:
                raw = "".join(header).encode(encoding, ESCAPE)
                bad = next(c for c in name if "\udc00" <= c <= "\udcff")
                guess = guess_encoding(raw, encoding)
                hint = f"; the export may be {guess}: pass --encoding {guess}" if guess else ""
                raise InputError(
                    f"{self.label}:{line}: header is not valid {encoding} "
                    f"(byte 0x{ord(bad) - 0xDC00:02X}){hint}"
                ) from exc
        if len(header) == 1:
            self._refuse_other_delimiter(first, line)
        return tuple(header), line

    def _refuse_other_delimiter(self, first: str, line: int) -> None:
        """A one-column header holding another delimiter: the wrong ``--delimiter``."""
        counts = {c: first.count(c) for c in _DELIMITERS if c != self.delimiter}
        best = max(counts, key=lambda c: counts[c])
        if counts[best]:
            raise InputError(
                f"{self.label}:{line}: the header is a single column holding "
                f"{counts[best]} {_DELIMITERS[best]} character(s): the export looks "
                f"{_DELIMITERS[best]}-separated; pass --delimiter {_FLAG_VALUE[best]}"
            )

    def blocks(self, size: int = BLOCK_ROWS) -> Iterator[RecordBlock]:
        """Yield the records after the header, ``size`` rows per block.

        Blank lines are not records and are skipped. A record the CSV parser
        cannot parse is reported in ``malformed`` with its first line, and
        reading goes on with the next line.
        """
        reader = self._reader
        prev = self.line_num
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
                    prev = self.line_num
            except csv.Error as exc:
                block.malformed.append((prev + 1, str(exc)))
                prev = self.line_num
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

    def text_chunks(self, size: int) -> Iterator[str]:
        """The decoded text after the header, up to ``size`` characters at a time.

        For a pass that reads the text rather than records (the repeated-id
        first pass); the source's ``blocks`` are spent afterwards. Line
        endings are as in the input.
        """
        while True:
            try:
                data = self._text.read(size)
            except _READ_ERRORS as exc:
                raise InputError(f"{self.label}: cannot read: {exc}") from exc
            if not data:
                return
            yield data

    def raw_chunks(self, size: int) -> Iterator[bytes] | None:
        """The bytes after the header, ``size`` at a time, for a regular UTF-8 file (else None).

        The file is opened again (gunzipped if need be), and the blank lines
        before the header and the header's physical lines are skipped,
        as the text reader split them (``\n``, ``\r\n`` or a lone ``\r``).
        """
        if self._path is None or codecs.lookup(self._encoding).name != "utf-8":
            return None
        if not self._path.is_file():  # a named pipe cannot be read again
            return None
        try:
            binary = open(self._path, "rb")  # noqa: SIM115 - closed by the generator
        except OSError:
            return None
        return self._raw_after_header(binary, size)

    def _raw_after_header(self, binary: BinaryIO, size: int) -> Iterator[bytes]:
        with binary:
            stream: Any = binary
            if binary.read(2) == b"\x1f\x8b":
                binary.seek(0)
                stream = gzip.GzipFile(fileobj=binary, mode="rb")
            else:
                binary.seek(0)
            try:
                data = stream.read(size)  # a BOM is part of the header's first line
                pos, lines = 0, self._skipped + self._reader.line_num
                while lines:
                    cr, nl = data.find(b"\r", pos), data.find(b"\n", pos)
                    end = min(i for i in (cr, nl) if i >= 0) if cr >= 0 or nl >= 0 else -1
                    if end < 0 or (end == len(data) - 1 and data[end] == 13):
                        more = stream.read(size)  # the line goes on (or a \n may follow)
                        if more:
                            data = data[pos:] + more
                            pos = 0
                            continue
                        if end < 0:
                            return  # the header was the last line
                    pos = end + 2 if data[end : end + 2] == b"\r\n" else end + 1
                    lines -= 1
                if pos < len(data):
                    yield data[pos:]
                while chunk := stream.read(size):
                    yield chunk
            except _READ_ERRORS as exc:
                raise InputError(f"{self.label}: cannot read: {exc}") from exc

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
        block.raw_first = self._raw_pos + self._skipped
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
