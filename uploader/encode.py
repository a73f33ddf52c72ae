"""The batch format: column mapping, row validation and URL-encoding (pure, no I/O).

Sits between ``source`` (CSV records with line numbers) and ``chunk`` (batch
files). A batch body is form data: ``batch=`` + header line, then one line per
row, every name and value percent-encoded from UTF-8 except ``A-Za-z0-9-._~``,
trailing empty fields trimmed, lines joined by ``\\n`` with no trailing newline
(the server splits on ``\\n``, so a final newline would be a blank row).

Encoding is the hot path of ``uploader split``. Per-character Python work
(``urllib.parse.quote``, a ``str.translate`` dict, a regex callback) costs
3-7x a bare ``csv.reader`` pass, so ``encode_rows`` encodes a whole block of
rows with a handful of C-level bytes operations: three 1:1 ``bytes.translate``
tables give, for every input byte, a lead byte (the byte itself or ``%``) and
two hex digits (or a filler byte for safe bytes); they are interleaved with
strided slice assignment and the filler is deleted. Rows and fields are joined
with control characters that the tables map to ``\\n`` and ``,``; a block whose
data itself holds those characters, or undecodable bytes, falls back to the
exact per-row encoder, which is also the reference the tests compare against.
"""

from __future__ import annotations

import operator
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

from uploader.config_types import closest
from uploader.errors import InputError
from uploader.settings import MAX_PROFILE_BYTES, InputSettings
from uploader.states import RejectReason

__all__ = [
    "MAX_PROFILE_BYTES",
    "Checked",
    "ColumnPlan",
    "Reject",
    "check_rows",
    "encode_row",
    "encode_rows",
    "encode_value",
    "header_line",
    "id_problem",
    "ids_valid",
    "plan_columns",
    "plan_ids_valid",
    "profile_bytes",
]

_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_HEX = b"0123456789ABCDEF"
_FIELD_SEP = "\x00"  # joins fields inside a block; mapped to ","
_ROW_SEP = "\x01"  # joins rows inside a block; mapped to "\n"
_FILL = 0xFF  # never produced by UTF-8, never output by the tables: safe to delete


def _tables() -> tuple[bytes, bytes, bytes]:
    lead, high, low = bytearray(256), bytearray(256), bytearray(256)
    for b in range(256):
        if b in _SAFE:
            lead[b], high[b], low[b] = b, _FILL, _FILL
        else:
            lead[b], high[b], low[b] = ord("%"), _HEX[b >> 4], _HEX[b & 15]
    lead[ord(_FIELD_SEP)], high[ord(_FIELD_SEP)], low[ord(_FIELD_SEP)] = ord(","), _FILL, _FILL
    lead[ord(_ROW_SEP)], high[ord(_ROW_SEP)], low[ord(_ROW_SEP)] = ord("\n"), _FILL, _FILL
    return bytes(lead), bytes(high), bytes(low)


_LEAD, _HIGH, _LOW = _tables()
_FILL_BYTE = bytes([_FILL])


def encode_value(value: str) -> str:
    """Percent-encode one name or value (raises UnicodeEncodeError on undecodable input)."""
    return quote(value, safe="")


def encode_row(fields: Sequence[str]) -> bytes | None:
    """Encode one row exactly, one value at a time; None when it holds undecodable bytes.

    The slow reference path: used for the rare blocks ``encode_rows`` cannot
    take in one piece, and by the tests as the definition of the format.
    """
    try:
        return ",".join([quote(v, safe="") for v in fields]).rstrip(",").encode("ascii")
    except UnicodeEncodeError:
        return None


def encode_rows(rows: Sequence[Sequence[str]]) -> list[bytes | None]:
    """Encode a block of rows; one line per row (None: the row has undecodable bytes).

    Same result as ``[encode_row(r) for r in rows]``, several times faster.
    """
    if not rows:
        return []
    text = _ROW_SEP.join([_FIELD_SEP.join(r) for r in rows])
    separators_only = (
        text.count(_FIELD_SEP) + len(rows) == sum(map(len, rows))
        and text.count(_ROW_SEP) == len(rows) - 1
    )
    if not separators_only:
        return [encode_row(r) for r in rows]
    try:
        data = text.encode("utf-8")  # strict: lone surrogates (undecodable input) raise
    except UnicodeEncodeError:
        return [encode_row(r) for r in rows]
    out = bytearray(3 * len(data))
    out[0::3] = data.translate(_LEAD)
    out[1::3] = data.translate(_HIGH)
    out[2::3] = data.translate(_LOW)
    # Data commas are %2C, so raw trailing commas are exactly the trailing empty fields.
    return [line.rstrip(b",") for line in bytes(out.translate(None, _FILL_BYTE)).split(b"\n")]


def profile_bytes(line: bytes) -> int:
    """The decoded UTF-8 size of an encoded row's values: what the 64 KB limit measures.

    Every data byte is either kept as is or written as ``%XX``, and raw commas
    are only separators (a comma in a value is ``%2C``).
    """
    return len(line) - 2 * line.count(b"%") - line.count(b",")


def header_line(names: Sequence[str]) -> bytes:
    """The first line of every batch file: ``batch=`` and the encoded column names."""
    return ("batch=" + ",".join(encode_value(n) for n in names)).encode("ascii")


def _has_control(value: str) -> bool:
    """A control character, or an invisible format one (a byte-order mark, a zero-width
    space): either makes an id that looks like another but is not."""
    return any(unicodedata.category(c) in ("Cc", "Cf") for c in value)


def id_problem(value: str, *, third_party: bool) -> RejectReason | None:
    """Why ``value`` cannot be a visitor id, or None.

    Target forbids ``+`` and ``/`` in a thirdPartyId; a control character
    (a stray tab or newline from the export) or an invisible format character
    (the byte-order mark of a second export pasted after the first) is never a
    real id of either kind.
    An id of only whitespace is missing; whitespace around an id would make
    another profile than the trimmed id (``input.strip_ids`` trims it first).
    """
    if not value or value.isspace():
        return RejectReason.MISSING_ID
    if value[0].isspace() or value[-1].isspace():
        return RejectReason.INVALID_ID
    if third_party and ("+" in value or "/" in value):
        return RejectReason.INVALID_ID
    if not value.isprintable() and _has_control(value):
        return RejectReason.INVALID_ID
    return None


@dataclass(frozen=True)
class ColumnPlan:
    """How input columns become batch columns.

    ``names`` are the batch header names (id type first); ``picks`` the input
    indices they come from, or None when every column is sent in input order
    with the id first (the common case, which needs no per-row reshuffle).
    """

    names: tuple[str, ...]
    sources: tuple[str, ...]  # the input names of the sent columns, same order as names
    width: int  # columns in the input header: a row with more fields is rejected
    id_index: int
    third_party: bool
    picks: tuple[int, ...] | None
    strip_ids: bool = False  # trim whitespace around ids instead of rejecting them
    reject_short: bool = False  # rows with fewer fields than the header are rejected
    header: tuple[str, ...] = ()  # the input header: a data row equal to it is rejected

    def project(self) -> Callable[[list[str]], Sequence[str]] | None:
        """A fast row -> sent values function, or None for the identity."""
        if self.picks is None:
            return None
        picks, width = self.picks, self.width
        getter = operator.itemgetter(*picks)

        def pick(row: list[str]) -> Sequence[str]:
            if len(row) < width:
                row = row + [""] * (width - len(row))
            if len(picks) == 1:  # itemgetter of one index returns the value, not a tuple
                return (row[picks[0]],)
            return getter(row)  # type: ignore[no-any-return]

        return pick


def _nearest(name: str, header: Iterable[str]) -> str:
    """'; did you mean ...?' for a column name that is in the header with other case or a typo."""
    names = list(header)
    same = [h for h in names if h.casefold() == name.casefold()]
    if same:
        return f"; did you mean {same[0]!r}? (column names are case-sensitive)"
    near = closest(name, names)
    return f"; did you mean {near!r}?" if near else ""


def plan_columns(header: Sequence[str], settings: InputSettings, where: str) -> ColumnPlan:
    """Map the input header to batch columns; InputError ("WHERE: problem") if impossible."""
    positions: dict[str, list[int]] = {}
    for i, name in enumerate(header):
        positions.setdefault(name, []).append(i)

    def index(name: str, what: str) -> int:
        found = positions.get(name)
        if not found:
            raise InputError(
                f"{where}: {what} {name!r} not found in the header{_nearest(name, positions)}"
            )
        if len(found) > 1:
            raise InputError(f"{where}: {what} {name!r} appears {len(found)} times in the header")
        return found[0]

    id_index = 0 if settings.id_column is None else index(settings.id_column, "id column")
    for crm in settings.rename:
        index(crm, "renamed column")
    if settings.columns is None:
        rest = [i for i in range(len(header)) if i != id_index]
    else:
        rest = [index(c, "column") for c in settings.columns]
        rest = [i for n, i in enumerate(rest) if i != id_index and i not in rest[:n]]
    names = [settings.id_type] + [settings.rename.get(header[i], header[i]) for i in rest]
    sent = [header[i] for i in (id_index, *rest)]
    for name in sent:  # the input side too: failed.csv maps sent columns back by name
        if not name.strip():
            raise InputError(f"{where}: empty column name in the header")
        if sent.count(name) > 1:
            raise InputError(f"{where}: duplicate column name {name!r} in the header")
    seen: set[str] = set()
    for name in names:
        if not name.strip():
            raise InputError(f"{where}: empty column name in the header")
        if name in seen:
            raise InputError(f"{where}: duplicate column name {name!r} (after renaming)")
        seen.add(name)
    picks = [id_index, *rest]
    identity = picks == list(range(len(header)))
    return ColumnPlan(
        names=tuple(names),
        sources=tuple(header[i] for i in picks),
        width=len(header),
        id_index=id_index,
        third_party=settings.id_type == "thirdPartyId",
        picks=None if identity else tuple(picks),
        strip_ids=settings.strip_ids,
        reject_short=settings.short_rows == "reject",
        header=tuple(header),
    )


@dataclass(frozen=True, slots=True)
class Reject:
    """One input record that is not sent, and why."""

    line: int
    record: Sequence[str]  # the fields as read (empty when the CSV itself was malformed)
    reason: RejectReason
    id: str = ""


def _all_valid(rows: Sequence[list[str]], plan: ColumnPlan) -> bool:
    """True when no row of the block can be rejected before encoding (conservative)."""
    if not rows:
        return True
    shortest = plan.width if plan.reject_short else plan.id_index + 1
    if max(map(len, rows)) > plan.width or min(map(len, rows)) < shortest:
        return False
    return plan_ids_valid(list(map(operator.itemgetter(plan.id_index), rows)), plan)


def plan_ids_valid(ids: list[str], plan: ColumnPlan) -> bool:
    """``ids_valid``, and no id that may be a row copying the header (``check_rows``
    rejects those as header_row): the fast paths keep only what it would keep."""
    if plan.header and plan.header[plan.id_index] in ids:
        return False
    return ids_valid(ids, plan.third_party)


def ids_valid(ids: list[str], third_party: bool) -> bool:
    """True when every id passes ``check_rows``'s id checks as it is (conservative, C-level)."""
    if not all(ids) or ids != list(map(str.strip, ids)):
        return False
    joined = " ".join(ids)  # a space is printable, so it cannot hide a control character
    if third_party and ("+" in joined or "/" in joined):
        return False
    return joined.isprintable()


class Checked(NamedTuple):
    """A block split by ``check_rows``."""

    keep: list[Sequence[str]]  # rows to send, projected to the batch columns
    lines: list[int]  # their input lines
    originals: list[list[str]]  # the rows as read (for rejects found later)
    rejects: list[Reject]
    short: list[int]  # lines of rows with fewer fields than the header (padded or rejected)


def _is_header(row: list[str], header: tuple[str, ...]) -> bool:
    """A data row that is the header again (its byte-order mark too, if it had one):
    ``cat day1.csv day2.csv`` would otherwise send a profile named after the id column."""
    return (
        bool(row)
        and len(row) == len(header)
        and row[0].removeprefix("\ufeff") == header[0]
        and row[1:] == list(header[1:])
    )


def check_rows(rows: Sequence[list[str]], lines: Sequence[int], plan: ColumnPlan) -> Checked:
    """Split a block into rows to send (projected), their lines and originals, and rejects.

    Checks what can be seen without encoding: field count and the id. The
    reasons still possible afterwards (bad_encoding, profile_too_large) are
    found by the encoder. A short row is padded with empty values (or
    rejected, with ``reject_short``); either way its line is in ``short``.
    """
    project = plan.project()
    width, idx, third_party = plan.width, plan.id_index, plan.third_party
    if _all_valid(rows, plan):  # the common case, checked with C-level calls only
        keep_all: list[Sequence[str]] = list(rows) if project is None else list(map(project, rows))
        short: list[int] = []
        if min(map(len, rows), default=width) < width:  # padded: encoding trims empty fields
            short = [line for row, line in zip(rows, lines, strict=True) if len(row) < width]
        return Checked(keep_all, list(lines), list(rows), [], short)
    out = Checked([], [], [], [], [])
    for row, line in zip(rows, lines, strict=True):
        value = row[idx] if len(row) > idx else ""
        sent = row
        if plan.strip_ids and value != value.strip():
            value = value.strip()
            sent = row.copy()
            sent[idx] = value
        reason: RejectReason | None = None
        if len(row) > width:
            reason = RejectReason.TOO_MANY_FIELDS
        elif _is_header(row, plan.header):
            reason = RejectReason.HEADER_ROW
        elif (
            not value
            or not value.isprintable()
            or value[0] == " "
            or value[-1] == " "
            or (third_party and ("+" in value or "/" in value))
        ):  # the cheap checks first; id_problem returns None for e.g. a no-break space inside
            reason = id_problem(value, third_party=third_party)
        if reason is None and len(row) < width:
            out.short.append(line)
            if plan.reject_short:
                reason = RejectReason.TOO_FEW_FIELDS
        if reason is None:
            out.keep.append(sent if project is None else project(sent))
            out.lines.append(line)
            out.originals.append(row)
        else:
            out.rejects.append(Reject(line, row, reason, row[idx] if len(row) > idx else ""))
    return out
