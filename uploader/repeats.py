"""Repeated ids: find them in bounded memory, hold their rows back, fold them into one row.

Sits beside ``chunk`` in the flow (``source -> encode -> [repeats] -> chunk``).
Target applies batches in whatever order it takes them in, and with several
submits in flight, retries, resends and resumes, a later batch can be applied
before an earlier one. The rule we promise is "each profile ends as if the
valid rows had been applied one at a time in input order (per attribute the
last non-empty value wins)". We keep it by sending every id *once per run*:
all valid rows of a repeated id are folded into one row (per column, the last
non-empty value) which goes into a single batch, so no two batches of a run
share an id and the order in which Target applies them stops mattering, at
any concurrency, across retries, stuck resends and resumes, and for ``split``
+ ``submit`` too. An ordering barrier (a batch waits while an earlier batch
holding one of its ids is unfinished) would keep submitting unique rows
early but must survive stuck resends and resume in the journal, and it
serialises exactly the exports that repeat ids a lot; folding needs no state
beyond the run and makes each batch independent.

How, in bounded memory (no set or dict of every id):

1. ``scan_repeats`` reads the input once more before chunking and turns each
   valid row's id into a 64-bit key (CRC-32 and Adler-32 of its UTF-8 bytes:
   deterministic across processes, unlike ``hash()``, so a resumed run holds
   back exactly the same rows). A CSV export is read from its text, without
   the CSV parser where ``idscan`` can prove it reads the records the same
   way, and with ``csv.reader`` where it cannot; the ids come out the same.
   The chunker relies on less: it takes from this pass only which keys to
   hold back, so the pass may over-approximate but never miss one. A key
   that is not repeated only holds a unique row back (it is folded alone
   and sent in the last batches); a missed one would send an id twice.
   ``RepeatFinder`` sorts the keys into 256 key ranges,
   spilled to a temporary file above ``SPILL_KEYS`` keys, and checks one
   range at a time: memory is about ``SPILL_KEYS`` keys plus one range,
   whatever the input size. What comes out is the sorted array of keys seen
   more than once (8 bytes per repeated id) behind a byte filter.
2. The chunker asks ``RepeatSet.flags`` which rows to hold back and passes
   only those to ``HeldRows``, a scratch SQLite table on disk (SQLite sorts
   it with bounded memory). Every other row streams into batches as before.
3. After the last input row, ``HeldRows.groups`` gives each id's rows in
   input order, grouped by the exact id (a key collision only holds a unique
   row back, it never merges two ids), and ``fold_encoded`` folds them. The
   folded rows go into the last batches, in the order of their encoded ids:
   deterministic, so a resumed chunker writes byte-identical files.

Folding works on encoded rows: every value is percent-encoded, so a raw
``,`` only ever separates fields and an empty field is an empty value.
"""

from __future__ import annotations

import contextlib
import heapq
import operator
import os
import sqlite3
import tempfile
from array import array
from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import unquote_to_bytes
from zlib import adler32, crc32

from uploader.encode import check_rows, plan_columns
from uploader.idscan import csv_kept_ids
from uploader.settings import InputSettings
from uploader.source import CsvSource
from uploader.sources import open_source

__all__ = [
    "EXAMPLES",
    "HeldRows",
    "RepeatFinder",
    "RepeatSet",
    "RepeatStats",
    "count_repeats",
    "fold_encoded",
    "id_keys",
    "scan_repeats",
]

BUCKETS = 256  # key ranges sorted one at a time (top 8 bits of the key)
SPILL_KEYS = 1 << 17  # keys kept in memory (1 MB) before the ranges are appended to disk
SET_KEYS = 1 << 18  # repeated keys looked up in a frozenset; above, filter + binary search
_FLUSH_KEYS = 1 << 15  # keys sorted into ranges at once (one C-level sort)
_BOUNDS = [i << 56 for i in range(1, BUCKETS)]
EXAMPLES = 5  # ids shown in the report
_EXAMPLE_LINES = 10  # input lines shown per example id
_ENCODE = operator.methodcaller("encode", "utf-8", "surrogateescape")


def id_keys(ids: Iterable[str]) -> list[int]:
    """A 64-bit key per id: CRC-32 and Adler-32 of its UTF-8 bytes, both C calls."""
    raw = list(map(_ENCODE, ids))
    return [c << 32 | a for c, a in zip(map(crc32, raw), map(adler32, raw), strict=True)]


def fold_encoded(rows: Sequence[bytes]) -> bytes:
    """Fold encoded rows of one id: per column, the last non-empty value in order.

    The same profile as applying the rows one at a time, since Target ignores
    empty values. Trailing empty fields stay trimmed, as the encoder writes them.
    """
    if len(rows) == 1:
        return rows[0]
    out = rows[0].split(b",")
    for row in islice(rows, 1, None):
        fields = row.split(b",")
        if len(fields) > len(out):
            out.extend([b""] * (len(fields) - len(out)))
        for i, value in enumerate(fields):
            if value:
                out[i] = value
    return b",".join(out).rstrip(b",")


class RepeatFinder:
    """Which 64-bit keys occur more than once, in bounded memory.

    ``add`` keys as they come; ``finish`` returns the repeated keys, sorted,
    and how many rows beyond the first each one has (``Counter``-free: the
    duplicates of a sorted range are found with one zip). Keys are kept in
    memory up to ``SPILL_KEYS``, then appended to one temporary file, range
    after range, with where each range's piece lies; ``finish`` reads back
    one range at a time (about 1/256 of the keys, as Python ints).
    """

    def __init__(self, tmp_dir: Path | None = None) -> None:
        self._tmp_dir = tmp_dir
        self._pending: list[int] = []
        self._ranges = [array("Q") for _ in range(BUCKETS)]
        self._in_memory = 0
        self._spill: Any = None  # the temporary file, once spilled
        self._pieces: list[list[tuple[int, int]]] = [[] for _ in range(BUCKETS)]  # (offset, keys)
        self.keys = 0

    def add(self, keys: list[int]) -> None:
        self._pending += keys
        self.keys += len(keys)
        if len(self._pending) >= _FLUSH_KEYS:
            self._flush()

    def _flush(self) -> None:
        keys = sorted(self._pending)
        self._pending = []
        start = 0
        for i, bound in enumerate(_BOUNDS):
            end = bisect_left(keys, bound, start)
            if end > start:
                self._ranges[i].extend(keys[start:end])
            start = end
        self._ranges[-1].extend(keys[start:])
        self._in_memory += len(keys)
        if self._in_memory >= SPILL_KEYS:
            self._spill_ranges()

    def _spill_ranges(self) -> None:
        if self._spill is None:
            self._spill = tempfile.TemporaryFile(dir=self._tmp_dir, prefix="uploader-keys-")  # noqa: SIM115
        fh = self._spill
        offset = fh.seek(0, os.SEEK_END)
        for rng, pieces in zip(self._ranges, self._pieces, strict=True):
            if rng:
                rng.tofile(fh)
                pieces.append((offset, len(rng)))
                offset += len(rng) * rng.itemsize
                del rng[:]
        self._in_memory = 0

    def _range(self, i: int) -> array[int]:
        keys = self._ranges[i]
        self._ranges[i] = array("Q")
        if not self._pieces[i]:
            return keys
        stored = array("Q")
        for offset, count in self._pieces[i]:
            self._spill.seek(offset)
            stored.fromfile(self._spill, count)
        stored.extend(keys)
        return stored

    def finish(self) -> tuple[array[int], array[int]]:
        """(repeated keys sorted, extra rows of each); the finder is spent afterwards."""
        if self._pending:
            self._flush()
        repeated, extra = array("Q"), array("Q")
        try:
            for i in range(BUCKETS):
                stored = self._range(i)
                if len(set(stored)) == len(stored):
                    continue  # no key twice (the common case: one C-level pass)
                keys = sorted(stored)
                dups = [a for a, b in zip(keys, islice(keys, 1, None), strict=False) if a == b]
                counts = Counter(dups)
                for key in sorted(counts):
                    repeated.append(key)
                    extra.append(counts[key])
        finally:
            if self._spill is not None:
                self._spill.close()
            self._spill = None
        return repeated, extra


class RepeatSet:
    """Membership of keys in the repeated ones.

    Up to ``SET_KEYS`` keys a frozenset (C-level lookups, under 20 MB); above
    that a byte filter of at most 16 MB, then a binary search in the sorted
    array (8 bytes per key) for the keys that pass it.
    """

    def __init__(self, keys: array[int]) -> None:
        self._keys = keys
        self._set: frozenset[int] | None = None
        self._filter = bytearray()
        self._shift = 64
        if len(keys) <= SET_KEYS:
            self._set = frozenset(keys)
            return
        size = 1 << 20
        while size < 8 * len(keys) and size < 1 << 24:
            size <<= 1
        self._shift = 64 - (size.bit_length() - 1)
        self._filter = bytearray(size)
        for key in keys:
            self._filter[key >> self._shift] = 1

    def __len__(self) -> int:
        return len(self._keys)

    def _exact(self, key: int) -> bool:
        i = bisect_left(self._keys, key)
        return i < len(self._keys) and self._keys[i] == key

    def flags(self, keys: list[int]) -> list[bool]:
        """For each key: is it a repeated one (rows with it are held back)?"""
        if self._set is not None:
            return list(map(self._set.__contains__, keys))
        filt, shift = self._filter, self._shift
        return [bool(filt[k >> shift]) and self._exact(k) for k in keys]


@dataclass(frozen=True)
class RepeatCounts:
    """What a scan found: ids on more than one valid row, and their rows."""

    ids: int
    rows: int  # valid rows of those ids
    keys: RepeatSet = field(repr=False, compare=False)

    @property
    def rows_folded(self) -> int:
        return self.rows - self.ids


def _counts(finder: RepeatFinder) -> RepeatCounts:
    repeated, extra = finder.finish()
    return RepeatCounts(len(repeated), len(repeated) + sum(extra), RepeatSet(repeated))


def scan_repeats(
    input: str | Path,
    settings: InputSettings,
    *,
    tmp_dir: Path | None = None,
    exact: bool = False,
) -> RepeatCounts:
    """Read the export once and find the ids on more than one row (bounded memory).

    Rows are checked as the chunker checks them before encoding (field count,
    id), so rejected rows do not count; a row rejected later for its encoding
    or size may still count here, and is then simply not part of the fold.
    A CSV export is read from its text (``idscan``) unless ``exact`` is set
    or ``input.limit`` stops the chunker early; other formats, by records.
    """
    finder = RepeatFinder(tmp_dir)
    with open_source(str(input), settings) as src:
        plan = plan_columns(src.header, settings, f"{src.label}:{src.header_line}")
        if isinstance(src, CsvSource) and not exact and settings.limit is None:
            for ids in csv_kept_ids(src, plan):
                finder.add(id_keys(ids))
            return _counts(finder)
        first = operator.itemgetter(0)
        records = 0
        for block in src.blocks():
            rows, lines = block.rows, block.lines
            if settings.limit is not None:  # the chunker reads no further
                starts = sorted([*lines, *(line for line, _ in block.malformed)])
                left = settings.limit - records
                if left < len(starts):
                    last = starts[left - 1] if left > 0 else 0
                    n = sum(1 for line in lines if line <= last)
                    rows, lines = rows[:n], lines[:n]
                records += len(starts)
            finder.add(id_keys(map(first, check_rows(rows, lines, plan).keep)))
            if settings.limit is not None and records >= settings.limit:
                break
    return _counts(finder)


def count_repeats(input: str | Path, settings: InputSettings) -> tuple[int, int]:
    """(ids on more than one row, rows of those ids): for a dry run or check of an export."""
    found = scan_repeats(input, settings, exact=True)
    return found.ids, found.rows


@dataclass
class RepeatStats:
    """The ``repeated_ids`` accounting of one chunker run."""

    handling: str  # "fold", or "off" (input.unique_ids): then only counted, never folded
    ids: int = 0  # ids on more than one valid row
    rows: int = 0  # valid rows of those ids
    rows_folded: int = 0  # rows merged into another row of the same id (rows - ids when folding)
    max_rows_per_id: int = 0
    _heap: list[tuple[int, int, dict[str, Any]]] = field(default_factory=list, repr=False)

    def group(self, encoded_id: bytes, lines: Sequence[int]) -> None:
        """Count one folded id (in the deterministic order of the fold)."""
        n = len(lines)
        if n < 2:
            return
        self.ids += 1
        self.rows += n
        self.rows_folded += n - 1
        self.max_rows_per_id = max(self.max_rows_per_id, n)
        if len(self._heap) == EXAMPLES and n <= self._heap[0][0]:
            return  # not among the largest (ties: the first folded stays)
        example = {
            "id": unquote_to_bytes(encoded_id).decode("utf-8", "replace"),
            "rows": n,
            "lines": list(lines[:_EXAMPLE_LINES]),
        }
        entry = (n, -self.ids, example)
        if len(self._heap) < EXAMPLES:
            heapq.heappush(self._heap, entry)
        else:
            heapq.heappushpop(self._heap, entry)

    @property
    def examples(self) -> list[dict[str, Any]]:
        """A few of the ids with the most rows (first folded first among equals)."""
        return [e for _, _, e in sorted(self._heap, key=lambda t: (-t[0], -t[1]))]

    def as_dict(self) -> dict[str, Any]:
        return {
            "handling": self.handling,
            "ids": self.ids,
            "rows": self.rows,
            "rows_folded": self.rows_folded,
            "max_rows_per_id": self.max_rows_per_id,
            "examples": self.examples,
        }

    @classmethod
    def counted(cls, counts: RepeatCounts) -> RepeatStats:
        """Handling off: what the keys say, nothing folded."""
        return cls("off", ids=counts.ids, rows=counts.rows)


class HeldRows:
    """Rows of repeated ids, held back on disk until the input ends.

    A scratch SQLite file (no journal, no fsync: it is rebuilt by every run);
    ``groups`` sorts it by (id, input line) with SQLite's external sorter, so
    memory stays bounded however many rows are held.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows = 0
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)  # personal data
        os.close(fd)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        for pragma in (
            "journal_mode = OFF",
            "synchronous = OFF",
            "temp_store = FILE",
            "cache_size = -8000",
        ):
            self._db.execute(f"PRAGMA {pragma}")
        self._db.execute("CREATE TABLE held (id BLOB NOT NULL, line INTEGER NOT NULL, data BLOB)")
        self._db.execute("BEGIN")

    def add(self, datas: Sequence[bytes], lines: Sequence[int]) -> None:
        ids = [d.partition(b",")[0] for d in datas]
        rows = zip(ids, lines, datas, strict=True)
        self._db.executemany("INSERT INTO held (id, line, data) VALUES (?, ?, ?)", rows)
        self.rows += len(datas)

    def groups(self) -> Iterator[tuple[bytes, list[int], list[bytes]]]:
        """(encoded id, lines, encoded rows) per id: ids in byte order, rows in input order."""
        self._db.execute("COMMIT")
        cursor = self._db.execute("SELECT id, line, data FROM held ORDER BY id, line")
        current: bytes | None = None
        lines: list[int] = []
        datas: list[bytes] = []
        while batch := cursor.fetchmany(4096):
            for rid, line, data in batch:
                if rid != current:
                    if current is not None:
                        yield current, lines, datas
                    current, lines, datas = rid, [], []
                lines.append(line)
                datas.append(data)
        if current is not None:
            yield current, lines, datas

    def close(self) -> None:
        self._db.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
