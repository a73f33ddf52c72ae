"""Stream an export into size-bounded batch files, a manifest and rejects.csv.

Third stage of the flow (``source -> encode -> chunk``), synchronous: the
pipeline runs it in a worker thread and gets each batch file through
``on_batch`` as soon as it is closed (the callback may block: backpressure).

Layout of the output directory (directories 0o700, files 0o600: they hold
personal data)::

    DIR/batches/batch-000001.txt   one submit body each, seq from 1
    DIR/manifest.jsonl             one JSON line per batch (file, rows, bytes, lines, sha256)
    DIR/rejects.csv                line,id,reason,record - always created, header first

A batch file is written under a temporary name and renamed once complete and
fsynced, so a crash never leaves a partial file under a final name. No file
reaches ``max_bytes`` (every byte counted: ``batch=``, header, newlines) or
holds more than ``max_rows`` rows. Memory stays bounded by one block of rows:
neither a batch nor the export is ever held whole. The same input and
settings always give byte-identical files, which is what makes resume
(``skip_through_seq``) safe.
"""

from __future__ import annotations

import builtins
import contextlib
import csv
import hashlib
import io
import json
import os
import re
import threading
from bisect import bisect_right
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from itertools import accumulate, compress, repeat
from operator import add, itemgetter
from pathlib import Path
from typing import IO, Any, cast
from urllib.parse import unquote_to_bytes

from uploader.encode import (
    ColumnPlan,
    Reject,
    check_rows,
    encode_rows,
    header_line,
    plan_columns,
    profile_bytes,
)
from uploader.errors import ConfigError, InputError
from uploader.repeats import (
    HeldRows,
    RepeatFinder,
    RepeatStats,
    fold_encoded,
    id_keys,
    scan_repeats,
)
from uploader.settings import MAX_PROFILE_BYTES, BatchSettings, InputSettings
from uploader.source import ESCAPE, RecordBlock, guess_encoding
from uploader.sources import Source, open_source
from uploader.sources.shard import ShardFilter
from uploader.states import RejectReason

__all__ = [
    "BatchFile",
    "ChunkSummary",
    "Chunker",
    "decode_row",
    "originals_path",
    "read_batch_header",
    "read_batch_rows",
    "read_sent_rows",
]

_FOLD_BLOCK = 256  # folded rows handed to the sink at once


@dataclass(frozen=True)
class BatchFile:
    """One closed batch file: what the submitter needs and the manifest records."""

    seq: int
    path: Path
    rows: int
    bytes: int
    first_line: int  # input line of the first row in the file
    last_line: int  # input line (first physical line) of the last row
    sha256: str


@dataclass(frozen=True)
class ChunkSummary:
    """The accounting of one chunker run.

    ``rows_read == rows_rejected + rows_folded + rows_written``: a folded row
    was merged into the one row its id is sent as (see ``repeats``). After a
    stop, rows of the unfinished batch (deleted) and rows held back for
    folding are not counted at all.
    """

    rows_read: int
    rows_written: int
    rejected: Counter[RejectReason]
    batches: int
    bytes: int
    header: tuple[str, ...]  # the input header (CRM names)
    columns: tuple[str, ...]  # the batch header (Target names, id type first)
    files: tuple[BatchFile, ...]
    out_dir: Path
    stopped: bool = False
    rows_other_shards: int = 0  # with input.shard: records left to the other shards
    short_rows: int = 0  # rows with fewer fields than the header (padded, or rejected)
    warnings: tuple[str, ...] = ()  # about the input as a whole, for the summary and report
    sample: tuple[tuple[int, builtins.bytes], ...] = ()  # (input line, encoded row), first rows
    limited: bool = False  # reading stopped at input.limit records
    short_lines: tuple[int, ...] = ()  # input lines of the first short rows
    repeats: RepeatStats | None = None

    @property
    def rows_folded(self) -> int:
        return self.repeats.rows_folded if self.repeats is not None else 0

    @property
    def rows_rejected(self) -> int:
        return sum(self.rejected.values())

    @property
    def rejects_path(self) -> Path:
        return self.out_dir / "rejects.csv"

    @property
    def manifest_path(self) -> Path:
        return self.out_dir / "manifest.jsonl"


def _private_opener(path: str, flags: int) -> int:
    fd = os.open(path, flags, 0o600)
    os.fchmod(fd, 0o600)  # whatever the umask
    return fd


def _private_dir(path: Path) -> None:
    """Create ``path`` owner-only (whatever the umask); an existing one keeps its mode."""
    try:
        if not path.is_dir():
            path.mkdir(mode=0o700, parents=True)
            path.chmod(0o700)  # never a directory we did not create
    except OSError as exc:
        raise ConfigError(f"{path}: cannot create output directory: {exc.strerror}") from exc


class _Rejects:
    """rejects.csv: the input line, id, reason and the record exactly as it was read.

    The record is the raw text of the input (quotes, delimiters, line breaks
    and ``\\r`` inside it as they were, its own line ending dropped), written
    as one quoted CSV field: ``csv.reader`` gives it back unchanged. The file
    is in the input encoding with ``source.ESCAPE``, so undecodable bytes (UTF-16
    code units too) come back exactly as they were in the export.
    """

    def __init__(self, path: Path, encoding: str) -> None:
        if encoding.lower().replace("_", "-") in ("utf-8-sig", "utf8-sig"):
            encoding = "utf-8"
        self._file = open(  # noqa: SIM115 - closed in close()
            path,
            "w",
            encoding=encoding,
            errors=ESCAPE,
            newline="",
            opener=_private_opener,
        )
        self._writer = csv.writer(self._file)
        self._writer.writerow(["line", "id", "reason", "record"])

    def write(self, rejects: Sequence[Reject], record_text: Callable[[int], str]) -> None:
        for r in sorted(rejects, key=lambda r: r.line):
            self._writer.writerow([r.line, r.id, r.reason.value, record_text(r.line)])

    def close(self) -> None:
        self._file.close()


class _BatchSink:
    """Cuts a stream of encoded rows into batch files and records each in the manifest."""

    def __init__(
        self,
        out_dir: Path,
        head: bytes,
        limits: BatchSettings,
        *,
        skip_through_seq: int,
        on_batch: Callable[[BatchFile], None] | None,
        on_regenerated: Callable[[BatchFile], None] | None,
        fsync: bool,
    ) -> None:
        self._dir = out_dir / "batches"
        self._head = head
        self._max_rows = limits.max_rows
        self._max_bytes = limits.max_bytes - 1  # a file must stay *under* max_bytes
        self._skip = skip_through_seq
        self._on_batch = on_batch
        self._on_regenerated = on_regenerated
        self._fsync = fsync
        self._manifest = open(  # noqa: SIM115 - closed in close()
            out_dir / "manifest.jsonl", "w", encoding="utf-8", opener=_private_opener
        )
        self.files: list[BatchFile] = []
        self.seq = 0
        self._out: IO[bytes] | None = None
        self._side: IO[bytes] | None = None  # originals of the folded rows of this file
        self._open = False
        self._rows = self._bytes = self._first = self._last = self._folded = 0
        self._hash = hashlib.sha256()

    def _path(self, seq: int) -> Path:
        return self._dir / f"batch-{seq:06d}.txt"

    def _write_originals(self, originals: Sequence[Sequence[bytes] | None]) -> None:
        """Keep the input rows a folded row stands for, next to its batch file."""
        for rows in originals:
            if not rows:
                continue
            self._folded += 1
            if self.seq <= self._skip:
                continue  # resume: the file exists already
            if self._side is None:
                tmp = originals_path(self._path(self.seq)).with_suffix(".tmp")
                self._side = open(tmp, "wb", opener=_private_opener)  # noqa: SIM115
                self._side.write(self._head)
            self._side.write(b"\n" + b"\n".join(rows))

    def _start(self, first_line: int) -> None:
        self.seq += 1
        self._open, self._rows, self._first, self._folded = True, 0, first_line, 0
        self._hash = hashlib.sha256(self._head)
        self._bytes = len(self._head)
        if self.seq > self._skip:  # resume: batches up to skip exist already; only hash them
            tmp = self._path(self.seq).with_suffix(".txt.tmp")
            self._out = open(tmp, "wb", buffering=1 << 20, opener=_private_opener)  # noqa: SIM115
            self._out.write(self._head)

    def add(
        self,
        datas: list[bytes],
        lines: list[int],
        originals: Sequence[Sequence[bytes] | None] | None = None,
    ) -> None:
        """Append encoded rows (each known to fit an empty batch) in input order.

        ``originals``: for a folded row, the encoded input rows it folds.
        """
        cum = list(accumulate(map(add, map(len, datas), repeat(1))))  # bytes incl. each "\n"
        i, n = 0, len(datas)
        while i < n:
            if not self._open:
                self._start(lines[i])
            base = cum[i - 1] if i else 0
            end = min(n, i + self._max_rows - self._rows)
            j = bisect_right(cum, base + self._max_bytes - self._bytes, i, end)
            if j == i:  # the next row does not fit: this file is full
                assert self._rows, "a row that fits no batch reached the sink"
                self.finish()
                continue
            chunk = b"\n".join([b"", *datas[i:j]])
            self._hash.update(chunk)
            if self._out is not None:
                self._out.write(chunk)
            if originals is not None:
                self._write_originals(originals[i:j])
            self._rows += j - i
            self._bytes += len(chunk)
            self._last = lines[j - 1]
            i = j
            if self._rows == self._max_rows:
                self.finish()

    def finish(self) -> BatchFile | None:
        """Close the current file (if any): fsync, rename to its final name, record it."""
        if not self._open:
            return None
        self._open = False
        path = self._path(self.seq)
        if self._side is not None:  # before the batch file: a batch never lacks its originals
            self._side.flush()
            if self._fsync:
                os.fsync(self._side.fileno())
            self._side.close()
            self._side = None
            side = originals_path(path)
            os.replace(side.with_suffix(".tmp"), side)
        if self._out is not None:
            self._out.flush()
            if self._fsync:
                os.fsync(self._out.fileno())
            self._out.close()
            self._out = None
            os.replace(path.with_suffix(".txt.tmp"), path)
        batch = BatchFile(
            self.seq, path, self._rows, self._bytes, self._first, self._last, self._hash.hexdigest()
        )
        self.files.append(batch)
        entry = {
            "file": f"batches/{path.name}",
            "seq": batch.seq,
            "rows": batch.rows,
            "bytes": batch.bytes,
            "first_line": batch.first_line,
            "last_line": batch.last_line,
            "sha256": batch.sha256,
        }
        if self._folded:
            entry["folded_ids"] = self._folded
            entry["originals"] = f"batches/{originals_path(path).name}"
        self._manifest.write(json.dumps(entry) + "\n")
        self._manifest.flush()
        if batch.seq > self._skip:
            if self._on_batch is not None:
                self._on_batch(batch)
        elif self._on_regenerated is not None:
            self._on_regenerated(batch)
        return batch

    def discard(self) -> int:
        """Drop the unfinished file (stop or error); return how many rows it held."""
        rows = self._rows if self._open else 0
        if self._side is not None:
            self._side.close()
            self._side = None
            with contextlib.suppress(OSError):
                originals_path(self._path(self.seq)).with_suffix(".tmp").unlink()
        if self._out is not None:
            self._out.close()
            self._out = None
            with contextlib.suppress(OSError):
                self._path(self.seq).with_suffix(".txt.tmp").unlink()
        if self._open:
            self._open = False
            self.seq -= 1
        return rows

    def close(self) -> None:
        self.discard()
        self._manifest.close()


class Chunker:
    """Turn one export into batch files; see the module docstring for the layout.

    ``on_batch`` is called in the chunker's thread after each new file is
    closed and may block (backpressure). ``skip_through_seq`` (resume): batches
    with a seq up to it are encoded, hashed and counted but neither written nor
    passed to ``on_batch``; ``on_regenerated`` gets each of them instead (with
    its sha256), so the caller can check the input is the one it recorded.
    ``stop`` is checked between blocks of rows; the unfinished file is then
    deleted and the summary says ``stopped``.
    """

    def __init__(
        self,
        input: str | Path,
        out_dir: Path,
        input_settings: InputSettings,
        batch_settings: BatchSettings,
        *,
        on_batch: Callable[[BatchFile], None] | None = None,
        on_regenerated: Callable[[BatchFile], None] | None = None,
        skip_through_seq: int = 0,
        stop: threading.Event | None = None,
        fsync: bool = True,
        sample_rows: int = 0,
    ) -> None:
        self.input = input
        self.out_dir = Path(out_dir).absolute()
        self.input_settings = input_settings
        self.batch_settings = batch_settings
        self.on_batch = on_batch
        self.on_regenerated = on_regenerated
        self.skip_through_seq = skip_through_seq
        self.stop = stop
        self.fsync = fsync
        # Read by the progress display from another thread: plain ints, set once per block.
        self.input_bytes_read: int | None = None
        self.input_bytes_total: int | None = None
        self.input_rows_read = 0
        self.sample_rows = sample_rows  # keep the first N encoded rows (``uploader check``)

    def run(self) -> ChunkSummary:
        """Chunk the whole input; InputError/ConfigError before writing anything if unusable."""
        inp = self.input_settings
        with open_source(str(self.input), inp) as src:
            plan = plan_columns(src.header, inp, f"{src.label}:{src.header_line}")
            head = header_line(plan.names)
            max_bytes = self.batch_settings.max_bytes
            if len(head) + 2 >= max_bytes:
                raise ConfigError(
                    f"batch.max_bytes {max_bytes} is too small for the header line "
                    f"({len(head)} bytes) plus one row"
                )
            # An encoded row longer than this cannot fit even an empty batch.
            row_limit = max_bytes - len(head) - 2
            _private_dir(self.out_dir)
            _private_dir(self.out_dir / "batches")
            for stale in (self.out_dir / "batches").glob("*.tmp"):
                stale.unlink()
            # Sources that know where they are in their bytes (CSV) say so, for progress.
            self.input_bytes_total = getattr(src, "size_bytes", None)
            return self._stream(src, plan, head, row_limit)

    def _repeats(self) -> tuple[RepeatStats, Any]:
        """How this run treats repeated ids, and the pre-pass that finds them.

        Folding needs a second read of the input: ``uploader run -`` and
        ``split -`` hand us a spool of standard input; a bare ``-`` (a caller
        of this class that did not spool) cannot be read twice, so its
        repeats are only counted, and the report says so.
        """
        inp = self.input_settings
        if inp.unique_ids or str(self.input) == "-":
            return RepeatStats("off"), None
        found = scan_repeats(self.input, inp, tmp_dir=self.out_dir)
        return RepeatStats("fold"), found.keys if found.ids else None

    def _stream(self, src: Source, plan: ColumnPlan, head: bytes, row_limit: int) -> ChunkSummary:
        inp = self.input_settings
        stats, repeated = self._repeats()
        finder = RepeatFinder(self.out_dir) if stats.handling == "off" else None
        rejects = _Rejects(self.out_dir / "rejects.csv", inp.encoding)
        sink = _BatchSink(
            self.out_dir,
            head,
            self.batch_settings,
            skip_through_seq=self.skip_through_seq,
            on_batch=self.on_batch,
            on_regenerated=self.on_regenerated,
            fsync=self.fsync,
        )
        held = HeldRows(self.out_dir / "repeats.sqlite") if repeated is not None else None
        first = itemgetter(0)
        counts: Counter[RejectReason] = Counter()
        size_check = min(MAX_PROFILE_BYTES, row_limit)  # a shorter encoded row is within both
        notes = _InputNotes(inp)
        read = written = 0
        stopped = limited = False
        sample: list[tuple[int, bytes]] = []
        try:
            for block in src.blocks():
                if self.stop is not None and self.stop.is_set():
                    stopped = True
                    break
                if inp.limit is not None and read + _records(block) >= inp.limit:
                    block, limited = _first_records(block, inp.limit - read), True
                read += _records(block)
                checked = check_rows(block.rows, block.lines, plan)
                lines, bad = checked.lines, checked.rejects
                bad += [
                    Reject(line, [], RejectReason.MALFORMED_RECORD) for line, _ in block.malformed
                ]
                notes.malformed(block)
                hold: list[bool] | None = None
                if finder is not None:
                    finder.add(id_keys(map(first, checked.keep)))
                elif repeated is not None:
                    hold = repeated.flags(id_keys(map(first, checked.keep)))
                encoded = encode_rows(checked.keep)
                datas = cast(list[bytes], encoded)
                if None in encoded or (datas and max(map(len, datas)) > size_check):
                    datas, lines, hold = _drop_unsendable(
                        encoded, lines, checked.originals, plan, row_limit, bad, hold
                    )
                if bad:
                    rejects.write(bad, block.record_text)
                    counts.update(r.reason for r in bad)
                    notes.rejected(bad)
                notes.short(checked.short)
                if hold is not None and held is not None and any(hold):
                    held.add(list(compress(datas, hold)), list(compress(lines, hold)))
                    send = [not h for h in hold]
                    datas, lines = list(compress(datas, send)), list(compress(lines, send))
                if len(sample) < self.sample_rows:  # rows sent as they are (not folded ones)
                    sample += list(zip(lines, datas, strict=True))[: self.sample_rows - len(sample)]
                sink.add(datas, lines)
                written += len(datas)
                self.input_bytes_read = getattr(src, "bytes_read", None)
                self.input_rows_read = read
                if limited:
                    break
            if not stopped:
                if held is not None:
                    written += self._fold(held, sink, stats, rejects, counts, row_limit)
                elif finder is not None:
                    stats = _counted(finder)
                sink.finish()
                # Never files a resumed run recorded, even if this input is shorter.
                self._remove_stale(max(sink.seq, self.skip_through_seq))
            else:
                dropped = sink.discard()
                read -= dropped + (held.rows if held is not None else 0)
                written -= dropped
        finally:
            sink.close()
            rejects.close()
            if held is not None:
                held.close()
        return ChunkSummary(
            rows_read=read,
            rows_written=written,
            rejected=counts,
            batches=len(sink.files),
            bytes=sum(f.bytes for f in sink.files),
            header=src.header,
            columns=plan.names,
            files=tuple(sink.files),
            out_dir=self.out_dir,
            stopped=stopped,
            rows_other_shards=src.skipped if isinstance(src, ShardFilter) else 0,
            short_rows=notes.short_count,
            warnings=tuple(notes.warnings(plan, read, limited=limited)),
            sample=tuple(sample),
            limited=limited,
            short_lines=tuple(notes.short_lines),
            repeats=stats,
        )

    def _fold(
        self,
        held: HeldRows,
        sink: _BatchSink,
        stats: RepeatStats,
        rejects: _Rejects,
        counts: Counter[RejectReason],
        row_limit: int,
    ) -> int:
        """Write one folded row per held id into the last batches; return rows written.

        A fold over the row limit (the id's values together exceed Target's
        64 KB profile) cannot be sent as one row: every row of that id is
        rejected as ``profile_too_large``, as Target would refuse the profile.
        The raw text of those records is gone by now: rejects.csv gets the
        values of their sent columns, in the input's delimiter.
        """
        delimiter = self.input_settings.delimiter
        datas: list[bytes] = []
        lines: list[int] = []
        originals: list[list[bytes]] = []
        written = 0
        for rid, id_lines, rows in held.groups():
            folded = fold_encoded(rows)
            if len(folded) > row_limit or profile_bytes(folded) > MAX_PROFILE_BYTES:
                too_large, rid_text = RejectReason.PROFILE_TOO_LARGE, decode_row(rid)[0]
                bad = [
                    Reject(line, decode_row(row), too_large, rid_text)
                    for line, row in zip(id_lines, rows, strict=True)
                ]
                pairs = zip(id_lines, rows, strict=True)
                texts = {line: _sent_record(row, delimiter) for line, row in pairs}
                rejects.write(bad, texts.__getitem__)
                counts[RejectReason.PROFILE_TOO_LARGE] += len(bad)
                continue
            stats.group(rid, id_lines)
            datas.append(folded)
            lines.append(id_lines[0])
            originals.append(rows if len(rows) > 1 else [])
            if len(datas) >= _FOLD_BLOCK:
                sink.add(datas, lines, originals)
                written += len(datas)
                datas, lines, originals = [], [], []
        sink.add(datas, lines, originals)
        return written + len(datas)

    def _remove_stale(self, last_seq: int) -> None:
        """Delete batch files left by an earlier, longer run into the same directory."""
        for path in (self.out_dir / "batches").glob("batch-*"):
            seq = path.name.removeprefix("batch-").partition(".")[0]
            if seq.isdigit() and int(seq) > last_seq:
                path.unlink()


def _records(block: RecordBlock) -> int:
    return len(block.rows) + len(block.malformed)


def _first_records(block: RecordBlock, n: int) -> RecordBlock:
    """The first ``n`` records of a block, parsed and malformed ones in input order."""
    starts = sorted([*block.lines, *(line for line, _ in block.malformed)])
    last = starts[n - 1] if n > 0 else 0
    keep = [i for i, line in enumerate(block.lines) if line <= last]
    raw = block.raw
    if n < len(starts):  # the raw text ends where the first record left out starts
        raw = raw[: starts[n] - block.raw_first]
    return RecordBlock(
        rows=[block.rows[i] for i in keep],
        lines=[block.lines[i] for i in keep],
        malformed=[(line, err) for line, err in block.malformed if line <= last],
        raw=raw,
        raw_first=block.raw_first,
    )


_LINE_BREAK = re.compile(r"\r\n|\r|\n")  # as the CSV reader splits lines


def _rows(n: int, one: str, many: str) -> str:
    """``1 row has`` / ``3 rows have``."""
    return f"1 row {one}" if n == 1 else f"{n:,} rows {many}"


class _InputNotes:
    """What is worth telling about the input as a whole: short rows, a likely encoding."""

    _SAMPLES = 50  # bad_encoding rows looked at to guess the export's real encoding
    _SHORT_LINES = 20  # lines of short rows kept as examples

    def __init__(self, settings: InputSettings) -> None:
        self._settings = settings
        self.short_count = 0
        self.short_lines: list[int] = []
        self._undecodable = bytearray()
        self._bad_encoding = 0
        self.long_malformed = 0  # malformed records over several physical lines
        self.long_malformed_lines = 0  # the physical lines they hold
        self.longest_malformed = (0, 0)  # (first line, lines) of the longest

    def short(self, lines: list[int]) -> None:
        self.short_lines += lines[: self._SHORT_LINES - len(self.short_lines)]
        self.short_count += len(lines)

    def malformed(self, block: RecordBlock) -> None:
        """Count the physical lines of malformed records that span several.

        A quote that opens a field and never closes makes one record of every
        line after it (up to the csv field limit or the end of the input): a
        single ``malformed_record`` that may hold thousands of rows.
        """
        for line, _ in block.malformed:
            span = len(_LINE_BREAK.findall(block.record_text(line))) + 1
            if span > 1:
                self.long_malformed += 1
                self.long_malformed_lines += span
                if span > self.longest_malformed[1]:
                    self.longest_malformed = (line, span)

    def rejected(self, bad: Sequence[Reject]) -> None:
        for r in bad:
            if r.reason is RejectReason.BAD_ENCODING:
                self._bad_encoding += 1
                if self._bad_encoding <= self._SAMPLES:
                    self._undecodable += "\n".join(r.record).encode(self._settings.encoding, ESCAPE)

    def warnings(self, plan: ColumnPlan, read: int, *, limited: bool) -> list[str]:
        out = []
        if len(plan.names) == 1:
            out.append(
                "the header has no attribute column besides the id: rows carry no profile "
                "attributes (is --delimiter right?)"
            )
        spaced = [name for name in plan.names[1:] if name != name.strip()]
        if spaced:
            shown = ", ".join(repr(name) for name in spaced[:5])
            what = (
                "1 attribute name has spaces around it and is sent as it is"
                if len(spaced) == 1
                else f"{len(spaced)} attribute names have spaces around them and are sent "
                "as they are"
            )
            out.append(
                f"{what}: {shown} (Target keeps ' tier' apart from 'tier'); fix the header, "
                "or map the names with input.rename"
            )
        if read == 0:
            out.append("the input has a header but no data rows: nothing to send")
        if limited:
            out.append(f"input.limit: only the first {read:,} data records were read")
        if self.short_count and not plan.reject_short:
            out.append(
                f"{_rows(self.short_count, 'has', 'have')} fewer fields than the header "
                f"(first at line {self.short_lines[0]}): padded with empty values; "
                'input.short_rows = "reject" (--short-rows reject) refuses them'
            )
        if self.long_malformed:
            line, span = self.longest_malformed
            where = f"lines {line:,}-{line + span - 1:,}"
            if self.long_malformed == 1:
                what = f"1 record that does not parse runs over {span:,} input lines ({where})"
            else:
                what = (
                    f"{self.long_malformed:,} records that do not parse run over "
                    f"{self.long_malformed_lines:,} input lines (the longest: {where})"
                )
            out.append(
                f"{what}: a quote that opens a field and never closes? None of those lines "
                "was sent: each such record is one malformed_record in rejects.csv"
            )
        if self._bad_encoding:
            enc = self._settings.encoding
            guess = guess_encoding(bytes(self._undecodable), enc)
            hint = f"; they decode as {guess}: pass --encoding {guess}" if guess else ""
            count = _rows(self._bad_encoding, "is", "are")
            out.append(f"{count} not valid {enc} (bad_encoding){hint}")
        return out


def _drop_unsendable(
    encoded: list[bytes | None],
    lines: list[int],
    originals: list[list[str]],
    plan: ColumnPlan,
    row_limit: int,
    bad: list[Reject],
    hold: list[bool] | None,
) -> tuple[list[bytes], list[int], list[bool] | None]:
    """Move rows with undecodable bytes or over the size limits from a block to ``bad``.

    Target's 64 KB limit is on the decoded values (``profile_bytes``); ``row_limit``
    is what fits one batch with the header.
    """
    keep: list[bytes] = []
    keep_lines: list[int] = []
    keep_hold: list[bool] = []
    for i, (data, line, row) in enumerate(zip(encoded, lines, originals, strict=True)):
        if data is not None and len(data) <= row_limit and profile_bytes(data) <= MAX_PROFILE_BYTES:
            keep.append(data)
            keep_lines.append(line)
            keep_hold.append(bool(hold and hold[i]))
            continue
        reason = RejectReason.BAD_ENCODING if data is None else RejectReason.PROFILE_TOO_LARGE
        rid = row[plan.id_index] if len(row) > plan.id_index else ""
        bad.append(Reject(line, row, reason, rid))
    return keep, keep_lines, keep_hold if hold is not None else None


def _counted(finder: RepeatFinder) -> RepeatStats:
    repeated, extra = finder.finish()
    return RepeatStats("off", ids=len(repeated), rows=len(repeated) + sum(extra))


def _sent_record(data: bytes, delimiter: str) -> str:
    text = io.StringIO()
    csv.writer(text, delimiter=delimiter, lineterminator="").writerow(decode_row(data))
    return text.getvalue()


def originals_path(batch_path: Path) -> Path:
    """Where the input rows of a batch's folded rows are kept (the batch format, not *.txt)."""
    return batch_path.with_suffix(".originals")


def read_sent_rows(path: Path) -> Iterator[list[str]]:
    """A batch's rows as the input gave them: a folded row becomes the rows it folds.

    The header row first, like ``read_batch_rows``. Used for ``failed.csv``,
    so that sending it again folds the same rows into the same profile.
    Holds the originals of one batch in memory (at most one batch of rows).
    """
    side = originals_path(Path(path))
    rows = read_batch_rows(Path(path))
    if not side.exists():
        yield from rows
        return
    by_id: dict[str, list[list[str]]] = {}
    originals = read_batch_rows(side)
    next(originals, None)
    for row in originals:
        by_id.setdefault(row[0], []).append(row)
    for row in rows:
        yield from by_id.get(row[0], [row])


def read_batch_rows(path: Path) -> Iterator[list[str]]:
    """Decode a batch file back to values, as form data is decoded: the header row first.

    ``+`` decodes to a space and ``%XX`` to bytes (UTF-8), the way the server
    reads the body; trailing empty fields trimmed at encoding stay trimmed.
    """
    with open(path, "rb") as fh:
        yield from _decode_lines(path, fh)


def _decode_lines(path: Path, raw_lines: Iterable[bytes]) -> Iterator[list[str]]:
    first = True
    for raw in raw_lines:
        line = raw[:-1] if raw.endswith(b"\n") else raw
        if first:
            if not line.startswith(b"batch="):
                raise InputError(f"{path}: not a batch file (it must start with 'batch=')")
            line, first = line[6:], False
        yield decode_row(line)


def decode_row(line: bytes) -> list[str]:
    """One encoded batch line back to its values, as the server decodes form data."""
    return [
        unquote_to_bytes(v.replace(b"+", b" ")).decode("utf-8", "surrogateescape")
        for v in line.split(b",")
    ]


def read_batch_header(path: Path) -> list[str]:
    """The decoded column names of a batch file (id type first)."""
    with open(path, "rb") as fh:
        head = fh.readline()
    return next(_decode_lines(path, [head]))
