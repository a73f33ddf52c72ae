"""Which rows of a run ended successful, and what they should have left in Target.

Reads the job's own input again (the export, a local file or an object store
URL in any format the run reads, or the copy of standard input kept in the
work dir) the way the chunker read it: the same source, the same column plan,
the same validation, and ``rejects.csv`` for the rows the encoder refused.
Each remaining row is placed in its batch by its input line (batches record
the lines they hold), and a row counts when its batch ended ``complete`` and
the server did not list its id as failed. A run of ``uploader submit`` has
no input but its batch files: those are read instead.

The result streams into ``VerifyStore.add_rows`` a block at a time, in input
order, so memory does not grow with the export.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader.chunk import read_batch_rows
from uploader.encode import check_rows, plan_columns
from uploader.errors import InputError
from uploader.journal import BatchRecord
from uploader.rejects import reject_rows
from uploader.settings import InputSettings
from uploader.sources import is_url, object_identity, open_source
from uploader.sources.spool import SPOOL_NAME
from uploader.states import BatchState

__all__ = ["Layout", "SentRows", "row_values", "sent_rows"]

Row = tuple[str, dict[str, str], float | None]  # id, non-empty values by Target name, final_at


@dataclass(frozen=True)
class Layout:
    """The columns as sent (Target names) and as the input names them (for re-sending)."""

    names: tuple[str, ...]  # Target names of the attributes, id excluded
    header: tuple[str, ...]  # the input's names: id column first, then one per attribute


def row_values(names: Sequence[str], fields: Sequence[str]) -> dict[str, str]:
    """One sent row's contribution: its non-empty values (an empty one never clears)."""
    return {name: value for name, value in zip(names, fields, strict=False) if value}


class SentRows:
    """The successful rows of a run, in input order, in blocks."""

    def __init__(
        self,
        batches: Sequence[BatchRecord],
        profile_errors: Sequence[tuple[int, str, str, str | None]],
    ) -> None:
        self._batches = sorted(batches, key=lambda b: b.first_line)
        self._firsts = [b.first_line for b in self._batches]
        self._failed_ids = {(seq, pid) for seq, pid, status, _ in profile_errors}
        self.rows_seen: dict[int, int] = {}  # seq -> rows of the input placed in it

    def _batch_of(self, line: int) -> BatchRecord | None:
        i = bisect_right(self._firsts, line) - 1
        if i < 0 or line > self._batches[i].last_line:
            return None
        return self._batches[i]

    def from_input(
        self, path: str, settings: InputSettings, rejected_lines: set[int]
    ) -> tuple[Layout, Iterator[list[Row]]]:
        """Read the export; InputError when it no longer matches the run's batches."""
        src = open_source(path, settings)
        try:
            plan = plan_columns(src.header, settings, f"{src.label}:{src.header_line}")
        except BaseException:
            src.close()
            raise
        layout = Layout(plan.names[1:], plan.sources)

        def blocks() -> Iterator[list[Row]]:
            with src:
                for block in src.blocks():
                    checked = check_rows(block.rows, block.lines, plan)
                    out: list[Row] = []
                    for fields, line in zip(checked.keep, checked.lines, strict=True):
                        if line in rejected_lines:
                            continue
                        row = self._place(line, fields, layout.names)
                        if row is not None:
                            out.append(row)
                    yield out
            self._check_counts(src.label)

        return layout, blocks()

    def _place(self, line: int, fields: Sequence[str], names: Sequence[str]) -> Row | None:
        batch = self._batch_of(line)
        if batch is None:
            return None  # never sent (the run stopped before chunking it)
        self.rows_seen[batch.seq] = self.rows_seen.get(batch.seq, 0) + 1
        pid = fields[0]
        if batch.state is not BatchState.COMPLETE or (batch.seq, pid) in self._failed_ids:
            return None
        return pid, row_values(names, fields[1:]), batch.final_at

    def _check_counts(self, label: str) -> None:
        for b in self._batches:
            seen = self.rows_seen.get(b.seq, 0)
            if seen != b.rows:
                raise InputError(
                    f"{label}: input lines {b.first_line}-{b.last_line} hold {seen} rows to "
                    f"send, batch {b.seq} of the run held {b.rows}: this is not the input "
                    "the run read"
                )

    def from_batch_files(
        self, rename: Mapping[str, str], id_column: str | None = None
    ) -> tuple[Layout, Iterator[list[Row]]]:
        """Read the batch files themselves (a run of ``uploader submit``, or one that folded)."""
        ordered = sorted(self._batches, key=lambda b: b.seq)
        if not ordered:
            return Layout((), ()), iter(())
        try:
            head = next(read_batch_rows(Path(ordered[0].file)))
        except OSError as exc:
            raise InputError(f"{ordered[0].file}: cannot read batch file: {exc}") from exc
        back = {target: crm for crm, target in rename.items()}
        first = id_column or head[0]
        layout = Layout(tuple(head[1:]), (first, *(back.get(n, n) for n in head[1:])))

        def blocks() -> Iterator[list[Row]]:
            for b in ordered:
                if b.state is not BatchState.COMPLETE:
                    continue
                try:
                    rows = read_batch_rows(Path(b.file))
                    names = next(rows)[1:]
                    yield [
                        (f[0], row_values(names, f[1:]), b.final_at)
                        for f in rows
                        if f and (b.seq, f[0]) not in self._failed_ids
                    ]
                except OSError as exc:
                    raise InputError(f"{b.file}: cannot read batch file: {exc}") from exc

        return layout, blocks()


def rejected_lines(path: Path, encoding: str) -> set[int]:
    """Input lines listed in rejects.csv (empty when there is none)."""
    if not path.exists():
        return set()
    return {int(row[0]) for row in reject_rows(path, encoding) if row and row[0].isdigit()}


def _check_identity(path: str, recorded: Mapping[str, Any], settings: InputSettings) -> None:
    """The input must be the one the run read, checked the way a resumed run checks it."""
    if is_url(path):
        if (
            "object" in recorded
            and object_identity(path, settings.storage_options) != recorded["object"]
        ):
            raise InputError(f"{path}: the object changed since the run read it")
        return
    if "size" not in recorded or "head_sha256" not in recorded:
        return  # a spooled copy of stdin: the batch counts are checked while reading
    with open(path, "rb") as fh:
        head = hashlib.sha256(fh.read(1 << 20)).hexdigest()
    if Path(path).stat().st_size != recorded["size"] or head != recorded["head_sha256"]:
        raise InputError(
            f"{path}: not the input the run read (its size or first bytes differ); "
            "pass the run's input with --input PATH"
        )


def sent_rows(
    fingerprint: Mapping[str, Any],
    work_dir: Path,
    batches: Sequence[BatchRecord],
    profile_errors: Sequence[tuple[int, str, str, str | None]],
    settings: InputSettings,
    *,
    input_path: str | None = None,
    folded_id_column: str | None = None,
) -> tuple[Layout, Iterator[list[Row]], str]:
    """The run's successful rows from the best source; the last item names the source.

    ``folded_id_column`` (the input's id column) is given when the run folded
    rows of repeated ids into one row per id (see ``repeats``): input lines
    then no longer map to batches by range, and the batch files hold exactly
    what was sent, the end state the export asks for.
    """
    source = SentRows(batches, profile_errors)
    recorded = fingerprint.get("input", {})
    if "files" in recorded:
        layout, blocks = source.from_batch_files(settings.rename)
        return layout, blocks, "batch files"
    path = input_path or recorded.get("path") or recorded.get("url")
    if path in (None, "-"):
        spool = work_dir / SPOOL_NAME  # the copy of standard input the run kept
        if spool.exists():
            path = str(spool)
        else:
            layout, blocks = source.from_batch_files(settings.rename)
            return layout, blocks, "batch files (the input was standard input)"
    if not is_url(path) and not Path(path).is_file():
        raise InputError(f"{path}: the run's input is gone; pass its new place with --input PATH")
    _check_identity(path, recorded, settings)
    if folded_id_column is not None:
        layout, blocks = source.from_batch_files(settings.rename, folded_id_column)
        return layout, blocks, "batch files (rows of repeated ids were folded)"
    encoding = settings.encoding
    layout, blocks = source.from_input(
        path, settings, rejected_lines(work_dir / "rejects.csv", encoding)
    )
    return layout, blocks, path
