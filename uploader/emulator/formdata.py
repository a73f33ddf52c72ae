"""Decode a Bulk Profile Update request body the way form data is decoded.

Pure functions, no I/O: the emulator's submit handler calls :func:`scan_batch`
(fast, synchronous validation, because Target rejects a malformed batch in the
submit answer), and the background applier calls :func:`decode_windows` to decode
the accepted rows lazily, a window of lines at a time.

The body is ``batch=`` followed by lines of comma-separated fields, each field
URL-encoded. The reading order matters and is the faithful one: take the raw
body, cut it at the first raw ``&`` (a raw ``&`` silently truncates the batch),
split the raw value into lines on ``\\n`` and into fields on ``,``, and only
then percent-decode each field (``+`` is a space). So ``%2C`` is a comma inside
a value, while a raw ``,`` starts a new field. A ``%`` not followed by two hex
digits, or bytes that are not UTF-8 once decoded, reject the whole batch with
Target's "Unexpected error".

Blank lines are skipped and a trailing ``\\r`` is dropped from every line
(CRLF bodies are read like LF bodies); both choices are the emulator's, not
documented by Adobe.
"""

from __future__ import annotations

import binascii
import codecs
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import quote

__all__ = [
    "BODY_LIMIT",
    "ID_TYPES",
    "MAX_ROWS",
    "WINDOW",
    "BatchFormatError",
    "BatchHeader",
    "BatchScan",
    "Raw",
    "batch_value",
    "count_rows",
    "decode_field",
    "decode_windows",
    "encode_body",
    "iter_decoded_rows",
    "iter_lines",
    "iter_rows",
    "iter_windows",
    "parse_header",
    "scan_batch",
]

BODY_LIMIT = 50 * 1024 * 1024  # a body must be *under* 50 MB: len(body) < BODY_LIMIT
MAX_ROWS = 500_000  # rows after the header
ID_TYPES = ("pcId", "thirdPartyId")
UNEXPECTED = "Unexpected error"  # Target's message for a body it cannot decode

# raw form data: the emulator reads a body into a bytearray and cuts it to its value in place
Raw = bytes | bytearray
_PREFIX = b"batch="
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_HIGH_ESCAPE = re.compile(rb"%[89A-Fa-f]")
# an empty (or lone "\r") line that follows a newline; the first line is checked apart
_BLANK_AFTER_NL = re.compile(rb"\n\r?(?=\n|\Z)")
_UTF8_CHUNK = 1 << 18  # bytes of the raw value checked at once
WINDOW = 1 << 18  # bytes of value the applier decodes at once (at least)
# raw "," and "\n" become these before a window is decoded at once (see _decode_window_fast)
_FIELD_SEP, _LINE_SEP = "\x1f", "\x1e"
_SEPARATORS = bytes.maketrans(b",\n", b"\x1f\x1e")


class BatchFormatError(ValueError):
    """The batch as a whole is refused (``success=false`` in the submit answer)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class BatchHeader:
    """The decoded first line: the id column type and the parameter names."""

    id_type: str  # "pcId" or "thirdPartyId"
    names: tuple[str, ...]  # parameter names, in column order after the id column


@dataclass(frozen=True, slots=True)
class BatchScan:
    """What the submit handler learns from the fast validation pass."""

    header: BatchHeader
    rows: int  # non-blank lines after the header
    value: Raw  # the raw (still encoded) batch value, cut at the first raw '&'


def batch_value(body: Raw) -> Raw:
    """The raw value of the first form field, which must be ``batch``.

    Everything from the first raw ``&`` on is another form field and is ignored,
    which is how a raw ``&`` inside a value truncates a batch. A bytearray body
    (the emulator reads bodies into one) is cut down to its value in place, so
    a body of up to 50 MB is not copied.
    """
    if not body.startswith(_PREFIX):
        raise BatchFormatError("Request body must start with batch=")
    end = body.find(b"&")
    if isinstance(body, bytearray):
        if end >= 0:
            del body[end:]
        del body[: len(_PREFIX)]  # O(1) at the front of a bytearray
        return body
    return body[len(_PREFIX) :] if end < 0 else body[len(_PREFIX) : end]


def _percent_decode(raw: Raw) -> bytes:
    """Percent-decode at C speed (escapes already validated).

    ``binascii.a2b_qp`` decodes ``=XX`` escapes; protecting the raw ``=`` first
    makes it an exact percent decoder (property-tested against urllib).
    """
    return binascii.a2b_qp(raw.replace(b"=", b"=3D").replace(b"%", b"="))


def _check_utf8(value: Raw, chunk: int = _UTF8_CHUNK) -> None:
    """Strict UTF-8 validation of the percent-decoded value, a chunk at a time.

    Neither a decoded copy of the whole value nor a 4-bytes-per-char str of
    50 MB is built: the value is decoded in chunks cut outside any escape
    (escapes are already validated, so every ``%`` starts one of 3 bytes).
    """
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    escaped = b"%" in value
    pos, size = 0, len(value)
    try:
        while pos < size:
            end = min(pos + chunk, size)
            if end < size:  # not inside an escape
                end -= 1 if value[end - 1] == 0x25 else 2 if value[end - 2] == 0x25 else 0
            raw = value[pos:end]
            decoder.decode(_percent_decode(raw) if escaped else raw)
            pos = end
        decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise BatchFormatError(UNEXPECTED) from exc


def decode_field(raw: Raw) -> str:
    """One field: ``+`` is a space, ``%XX`` a byte, the bytes UTF-8 (strict)."""
    if b"%" in raw:
        if _BAD_ESCAPE.search(raw):
            raise BatchFormatError(UNEXPECTED)
        raw = _percent_decode(raw.replace(b"+", b" "))
    elif b"+" in raw:
        raw = raw.replace(b"+", b" ")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BatchFormatError(UNEXPECTED) from exc


def _strip_cr(line: Raw) -> Raw:
    return line[:-1] if line.endswith(b"\r") else line


def iter_lines(value: Raw) -> Iterator[Raw]:
    """The non-blank raw lines of a batch value, lazily, a window at a time."""
    pos, size = 0, len(value)
    while pos < size:
        end = value.find(b"\n", pos + WINDOW)
        if end < 0:
            end = size
        for line in value[pos:end].split(b"\n"):
            line = _strip_cr(line)
            if line:
                yield line
        pos = end + 1


def count_rows(value: Raw) -> int:
    """Number of non-blank lines, without a Python loop over them.

    Equal to ``sum(1 for _ in iter_lines(value))`` (property-tested).
    """
    if not value:
        return 0
    lines = value.count(b"\n") + 1
    blank = len(_BLANK_AFTER_NL.findall(value))
    newline = value.find(b"\n")
    if (value if newline < 0 else value[:newline]) in (b"", b"\r"):
        blank += 1
    return lines - blank


def parse_header(line: Raw) -> BatchHeader:
    """Decode the header line; its first column names the id type."""
    fields = [decode_field(f) for f in line.split(b",")]
    if fields[0] not in ID_TYPES:
        raise BatchFormatError("First column of the header must be pcId or thirdPartyId")
    names = tuple(fields[1:])
    if any(not name for name in names):
        raise BatchFormatError("Empty parameter name in the header")
    return BatchHeader(id_type=fields[0], names=names)


def scan_batch(body: Raw) -> BatchScan:
    """The synchronous validation Target does before answering a submit.

    A bytearray ``body`` becomes the scan's value in place (see :func:`batch_value`).

    Whole-body passes only (regex, count, C-level decoding), no loop per row:
    bad escapes, invalid UTF-8, header, empty batch, too many rows. The body
    size limit is enforced by the HTTP layer before the body is buffered.
    """
    value = batch_value(body)
    if _BAD_ESCAPE.search(value):
        raise BatchFormatError(UNEXPECTED)
    # Escapes below %80 decode to ASCII and cannot change UTF-8 validity.
    if not value.isascii() or _HIGH_ESCAPE.search(value):
        _check_utf8(value)
    lines = iter_lines(value)
    first = next(lines, None)
    if first is None:
        raise BatchFormatError("Batch is empty")
    header = parse_header(first)
    rows = count_rows(value) - 1
    if rows <= 0:
        raise BatchFormatError("Batch has no rows")
    if rows > MAX_ROWS:
        raise BatchFormatError(f"Batch has {rows} rows, more than {MAX_ROWS}")
    return BatchScan(header=header, rows=rows, value=value)


def iter_rows(value: Raw) -> Iterator[Sequence[Raw]]:
    """The raw fields of every row after the header (decode with :func:`decode_field`)."""
    lines = iter_lines(value)
    next(lines, None)
    for line in lines:
        yield line.split(b",")


def _decode_window_fast(raw: Raw) -> list[str] | None:
    """Decode many lines with a handful of C-level passes, or None when ambiguous.

    Raw separators are swapped for control characters first, the whole window
    is percent- and UTF-8-decoded at once, and the result is trusted only if no
    escape produced (and no raw byte was) one of those control characters.
    """
    raw = raw.replace(b"\r\n", b"\n")
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    commas, newlines = raw.count(b","), raw.count(b"\n")
    data = raw.translate(_SEPARATORS).replace(b"+", b" ")
    if b"%" in data:
        if _BAD_ESCAPE.search(data):
            return None
        data = _percent_decode(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text.count(_FIELD_SEP) != commas or text.count(_LINE_SEP) != newlines:
        return None
    return text.split(_LINE_SEP)


def _decode_line_lenient(line: Raw) -> list[str]:
    """Slow path, one field at a time; an undecodable field (impossible once
    :func:`scan_batch` accepted the body) keeps its bytes with U+FFFD."""
    fields = []
    for raw in line.split(b","):
        try:
            fields.append(decode_field(raw))
        except BatchFormatError:
            fields.append(raw.decode("utf-8", "replace"))
    return fields


def iter_windows(value: Raw) -> Iterator[Raw]:
    """A batch value cut into windows of whole lines (each at least ``WINDOW`` bytes
    but the last), without their final newline: what :func:`decode_windows` reads."""
    pos, size = 0, len(value)
    while pos < size:
        end = value.find(b"\n", pos + WINDOW)
        if end < 0:
            end = size
        yield value[pos:end]
        pos = end + 1


def iter_decoded_rows(value: Raw) -> Iterator[list[str]]:
    """The decoded fields of every row after the header, a window at a time.

    Same result as decoding :func:`iter_rows` field by field (property-tested),
    several times faster: this is the applier's hot loop.
    """
    return decode_windows(iter_windows(value))


def decode_windows(windows: Iterable[Raw]) -> Iterator[list[str]]:
    """The decoded rows after the header of a value given as windows of whole lines.

    Where the windows are cut does not matter, as long as every cut is at a raw
    newline (dropped): a queued body read back from a file gives the same rows.
    """
    header_seen = False
    for window in windows:
        lines = _decode_window_fast(window)
        if lines is None:
            rows = [_decode_line_lenient(line) for line in iter_lines(window)]
            if not header_seen and rows:
                rows, header_seen = rows[1:], True
            yield from rows
            continue
        # one row list at a time: a window's worth of live lists would be promoted
        # by the garbage collector and trigger full collections over the store
        for line in lines:
            if line:
                if header_seen:
                    yield line.split(_FIELD_SEP)
                else:
                    header_seen = True


def encode_body(rows: list[list[str]]) -> bytes:
    """Build a body the way a correct client does (tests and tools; header included)."""
    text = "\n".join(",".join(quote(v, safe="") for v in row) for row in rows)
    return b"batch=" + text.encode("ascii")
