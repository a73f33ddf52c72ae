"""The ids of a CSV export's rows, read from its text without the CSV parser.

Used by the repeated-id first pass (``repeats.scan_repeats``), which needs
only the id of every row the chunker keeps, not its fields: running
``csv.reader`` over every record cost about as much as the chunking itself.
``csv_kept_ids`` reads a local UTF-8 file (gzipped or not) as bytes, from
where its header ends, and decodes only the ids (UTF-8 keeps ``"``, the
delimiter and line breaks single bytes that occur in no other character);
any other source as the decoded text (the source's own decoder, so any
``--encoding``). It cuts what it reads into chunks after a line break, and
takes each chunk apart with a few C-level string calls:

1. A chunk starts at a record boundary. Split at ``"``, the pieces at even
   positions are outside quotes. Where every quote is where CSV allows one
   (a quoted field starts after a delimiter or line break and its closing
   quote is followed by one, or by a doubled quote), this is exactly how
   ``csv.reader`` (``strict=True``) reads the quotes; joining the outside
   pieces with a placeholder gives a quote-free *skeleton* whose line breaks
   are the record ends and whose delimiters are the field separators.
2. Blank lines are not records; each other line is a row whose field count
   is its delimiter count + 1, and whose id is its ``id_index``-th field.
3. When every row has an acceptable field count and every id (stripped with
   ``input.strip_ids``) passes the chunker's id checks as it is, those ids
   are what ``check_rows`` keeps, row for row.

A chunk with anything else (rows with too many or too few fields, a quoted
id, an id the checks reject, a lone ``\\r`` line ending) is read with
``csv.reader`` and ``check_rows``, as the exact pass does, and the first
chunk whose quotes CSV would read otherwise (or over ``csv.field_size_limit``)
switches to that exact reading for the rest of the input. Either way the ids
are those of the rows the chunker keeps, in the same numbers.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterable, Iterator
from operator import itemgetter, methodcaller
from typing import AnyStr, Generic, NamedTuple, cast

from uploader.encode import ColumnPlan, check_rows, plan_ids_valid
from uploader.source import BLOCK_ROWS, ESCAPE, CsvSource

__all__ = ["CHUNK_CHARS", "csv_kept_ids"]

CHUNK_CHARS = 1 << 16  # characters read at a time: well under csv.field_size_limit()
_QUOTE = '"'
_MARK = "\x1e"  # stands for quoted text in the skeleton; an id holding it is read exactly
_FIRST = itemgetter(0)
_EXACT: list[str] = ["read with csv.reader"]  # returned by identity, never used as ids
_STOP: list[str] = ["read with csv.reader from here on"]


def csv_kept_ids(src: CsvSource, plan: ColumnPlan) -> Iterator[list[str]]:
    """The ids of the rows ``check_rows`` keeps (as it keeps them), in chunks, after the header.

    A UTF-8 file is read as bytes (``CsvSource.raw_chunks``): no decoding of
    the text, four times less memory traffic than text with a character
    outside the BMP; only the ids are decoded. Other sources, as text.
    """
    delimiter = src.delimiter
    raw = src.raw_chunks(CHUNK_CHARS) if delimiter.isascii() else None
    if raw is not None:
        yield from _kept_ids(raw, _Syntax.of(delimiter.encode()), plan)
    else:
        yield from _kept_ids(src.text_chunks(CHUNK_CHARS), _Syntax.of(delimiter), plan)


class _Syntax(NamedTuple, Generic[AnyStr]):
    """The characters the scan looks for, as ``str`` or as (UTF-8) ``bytes``."""

    delimiter: AnyStr
    quote: AnyStr
    nl: AnyStr
    cr: AnyStr
    crlf: AnyStr
    mark: AnyStr
    empty: AnyStr

    @staticmethod
    def of(delimiter: AnyStr) -> _Syntax[AnyStr]:
        if isinstance(delimiter, bytes):
            return _Syntax(delimiter, b'"', b"\n", b"\r", b"\r\n", b"\x1e", b"")
        return _Syntax(delimiter, '"', "\n", "\r", "\r\n", "\x1e", "")


def _kept_ids(
    pieces: Iterator[AnyStr], syntax: _Syntax[AnyStr], plan: ColumnPlan
) -> Iterator[list[str]]:
    """``csv_kept_ids`` over text or UTF-8 bytes."""
    delimiter = _decoded(syntax.delimiter)
    limit = csv.field_size_limit()  # csv.reader refuses longer fields; a chunk is no longer
    if delimiter == _MARK:  # the skeleton would not tell quoted text from separators
        yield from _exact_ids(_lines(_as_text(syntax.empty, pieces)), plan, delimiter)
        return
    carry = syntax.empty
    for data in pieces:
        text = carry + data if carry else data
        cut, outside = _whole_records(text, syntax)
        if cut == 0 and len(text) <= limit:
            carry = text  # no record ends in it yet: read on
            continue
        carry = text[cut:]
        ids = _chunk_ids(outside, syntax, plan) if 0 < cut <= limit else _STOP
        if ids is _STOP:  # quotes not provably read as csv.reader reads them: exact from here
            yield from _exact_ids(_lines(_as_text(text, pieces)), plan, delimiter)
            return
        if ids is _EXACT:  # whole records the fast path cannot vouch for row by row
            yield from _exact_ids(_lines([_decoded(text[:cut])]), plan, delimiter)
        elif ids:
            yield ids
    if carry:  # the last record may lack its line break, or end inside quotes
        yield from _exact_ids(_lines([_decoded(carry)]), plan, delimiter)


def _decoded(data: str | bytes) -> str:
    """Text of whole records (bytes: UTF-8 from a line break on, so no character is cut)."""
    return data.decode("utf-8", ESCAPE) if isinstance(data, bytes) else data


def _as_text(first: AnyStr, rest: Iterator[AnyStr]) -> Iterator[str]:
    """``first`` (from a record boundary) and the pieces after it, as text."""
    if isinstance(first, str):
        yield first
        yield from rest
        return
    decoder = codecs.getincrementaldecoder("utf-8")(ESCAPE)  # pieces may cut a character
    yield decoder.decode(first)
    for piece in rest:
        yield decoder.decode(piece)
    yield decoder.decode(b"", True)


def _whole_records(text: AnyStr, syntax: _Syntax[AnyStr]) -> tuple[int, list[AnyStr]]:
    """Where the last line break outside quotes ends, and the pieces outside quotes before it.

    ``text`` starts at a record boundary; quotes are paired from there (which
    ``_quotes_as_csv`` checks is how csv.reader pairs them). (0, []): none.
    """
    parts = text.split(syntax.quote)
    last = len(parts) - 1 if len(parts) % 2 else len(parts) - 2  # the last piece outside
    for i in range(last, -1, -2):
        j = parts[i].rfind(syntax.nl)
        if j >= 0:
            outside = parts[0:i:2]
            outside.append(parts[i][: j + 1])
            after = sum(map(len, parts[i + 1 :])) + len(parts) - 1 - i  # mostly nothing
            return len(text) - after - len(parts[i]) + j + 1, outside
    return 0, []


def _chunk_ids(outside: list[AnyStr], syntax: _Syntax[AnyStr], plan: ColumnPlan) -> list[str]:
    """The kept ids of whole records, or ``_EXACT`` (read them with csv) or ``_STOP``.

    ``outside`` are the pieces of the records' text outside quotes; the last
    one ends with a line break.
    """
    delimiter, cr = syntax.delimiter, syntax.cr
    if len(outside) > 1 and not _quotes_as_csv(outside, syntax):
        return _STOP
    skeleton = syntax.mark.join(outside)
    crlf = cr in skeleton
    lines = skeleton.split(syntax.nl)
    lines.pop()  # after the final line break
    if crlf and skeleton.count(cr) != sum(map(methodcaller("endswith", cr), lines)):
        return _EXACT  # a lone \r ends a record too: leave it to csv.reader
    if syntax.empty in lines or (crlf and cr in lines):
        lines = [line for line in lines if line and line != cr]  # blank lines: no records
    if not lines:
        return []
    counts = list(map(methodcaller("count", delimiter), lines))
    k = plan.id_index
    fewest = plan.width - 1 if plan.reject_short else k
    if min(counts) < fewest or max(counts) > plan.width - 1:
        return _EXACT
    if k == 0:
        raw = list(map(_FIRST, map(methodcaller("partition", delimiter), lines)))
    else:
        raw = list(map(itemgetter(k), map(methodcaller("split", delimiter, k + 1), lines)))
    if crlf and min(counts) == k:  # the id ends some line: without its \r
        raw = list(map(methodcaller("removesuffix", cr), raw))
    if syntax.mark in syntax.empty.join(raw):
        return _EXACT  # a quoted id (or the placeholder in the data): csv.reader reads it
    ids = (
        cast(list[str], raw)
        if isinstance(delimiter, str)
        else _decoded(b"\n".join(raw)).split("\n")
    )
    if plan.strip_ids:
        ids = list(map(str.strip, ids))
    return ids if plan_ids_valid(ids, plan) else _EXACT


def _quotes_as_csv(outside: list[AnyStr], syntax: _Syntax[AnyStr]) -> bool:
    """Do the pieces outside quotes put every quote where ``csv.reader`` reads it that way?

    Each quoted field must open at a field start (after a delimiter or a
    line break) and close before a delimiter or a line break; an empty piece
    between two quoted ones is a doubled quote inside a field.
    """
    starts = (syntax.delimiter, syntax.cr, syntax.nl)
    ends = (syntax.delimiter, syntax.nl)
    head, *middle, tail = outside
    if head and not head.endswith(ends):
        return False
    if tail and not tail.startswith(starts):
        return False
    middle = list(filter(None, middle))
    return all(map(methodcaller("startswith", starts), middle)) and all(
        map(methodcaller("endswith", ends), middle)
    )


def _lines(pieces: Iterable[str]) -> Iterator[str]:
    """Physical lines of text given in pieces, split as the source's reader splits them."""
    carry = ""
    for piece in pieces:
        lines = io.StringIO(carry + piece, newline="").readlines()
        # A last line without "\n" may go on (or be the "\r" of a "\r\n") in the next piece.
        carry = lines.pop() if lines and not lines[-1].endswith("\n") else ""
        yield from lines
    if carry:
        yield carry


def _exact_ids(lines: Iterable[str], plan: ColumnPlan, delimiter: str) -> Iterator[list[str]]:
    """Kept ids as the exact pass finds them: ``csv.reader``, then ``check_rows``."""
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    rows: list[list[str]] = []
    while True:
        try:
            for row in reader:
                if row:  # blank lines are not records
                    rows.append(row)
                    if len(rows) >= BLOCK_ROWS:
                        yield _kept(rows, plan)
                        rows = []
            break
        except csv.Error:
            continue  # a malformed record is no row; reading goes on with the next line
    if rows:
        yield _kept(rows, plan)


def _kept(rows: list[list[str]], plan: ColumnPlan) -> list[str]:
    """The ids of the rows ``check_rows`` keeps (projected: the id comes first)."""
    return list(map(_FIRST, check_rows(rows, range(len(rows)), plan).keep))
