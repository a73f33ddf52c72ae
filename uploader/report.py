"""The end of the flow: where every row ended, as report.json, JUnit XML, failed.csv and text.

The accounting is pure (:func:`account_rows`, :func:`build_report`) so its
invariants can be property-tested: ``read = rejected + submitted`` once the
input was read to the end, and ``submitted = successful + failed + not_found
+ pending`` always. Server counts are never trusted blindly: Adobe may drop a
few rows of a large batch (then the unexplained rows are counted failed and
noted) or count a row twice (then each row is still counted once).

The writers are thin: every file holds personal data, so each is created
owner-only and replaced atomically, and a reader never sees half a report.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import json
import os
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from uploader.journal import BatchRecord, Journal
from uploader.rates import basis_rate, rate_basis
from uploader.states import BatchState
from uploader.summary_lines import counts_line, sent_line

__all__ = [
    "EXIT_CODES",
    "EXIT_INTERNAL",
    "FailedRows",
    "RowCounts",
    "account_rows",
    "build_report",
    "exit_code",
    "listed_failed",
    "private_file",
    "render_summary",
    "repeats_line",
    "write_failed_csv",
    "write_junit",
    "write_report",
]

# report["status"] -> exit code of `run` and `submit` (SPEC section 3). Exit 4
# (internal error) is an "error" report whose "exit_code" says 4.
EXIT_CODES = {"complete": 0, "partial": 1, "error": 2, "incomplete": 3}
EXIT_INTERNAL = 4

_REQUESTS = ("submits", "retries", "throttled", "status_polls")


@dataclass
class RowCounts:
    """Where the rows ended; the last two fields explain server counts we corrected."""

    read: int
    rejected: int
    folded: int  # merged into the one row their id was sent as (see repeats.py)
    submitted: int
    successful: int
    failed: int
    not_found: int
    pending: int
    unaccounted: int = 0  # server counts short of the batch: counted failed (ids unknown)
    overcounted: int = 0  # server counts above the batch (duplicates): ignored
    # rows the server listed with status error beyond its failedUpdates: counted failed
    listed_beyond: int = 0


@dataclass(frozen=True)
class FailedRows:
    """What ``write_failed_csv`` wrote: ``rows`` in all, and per complete batch how
    many of its rows the server listed with status ``error`` (``listed``: seq -> batch
    rows whose id was listed; a folded row counts once, whatever it folds)."""

    rows: int
    listed: dict[int, int]


def account_rows(
    batches: Sequence[BatchRecord],
    *,
    rows_read: int,
    rejected: int,
    folded: int = 0,
    listed_failed: Mapping[int, int] | None = None,
) -> RowCounts:
    """Put every submitted row in exactly one bucket.

    A folded input row is not submitted on its own: its values travel in the
    one row of its id, so ``read = rejected + folded + submitted``.

    ``listed_failed`` (seq -> rows of the batch the server listed with status
    ``error``, as failed.csv holds them): a complete batch has at least that
    many failed rows, whatever its ``failedUpdates`` says.

    Rows of stuck batches count as failed: the server says they were not
    applied (SPEC section 2). A stuck batch that is resent moves back to
    pending, so a later report counts it again from scratch.
    """
    c = RowCounts(rows_read, rejected, folded, 0, 0, 0, 0, 0)
    for b in batches:
        c.submitted += b.rows
        if b.state is BatchState.COMPLETE:
            listed = (listed_failed or {}).get(b.seq, 0)
            ok, bad, nf, short, over = _complete_counts(b, listed)
            c.listed_beyond += max(0, min(listed, b.rows) - min(max(b.failed or 0, 0), b.rows))
            c.successful += ok
            c.failed += bad
            c.not_found += nf
            c.unaccounted += short
            c.overcounted += over
        elif b.state in (BatchState.FAILED, BatchState.STUCK):
            c.failed += b.rows
        else:
            c.pending += b.rows
    return c


def listed_failed(journal: Journal) -> dict[int, int]:
    """The ``listed`` of the last failed.csv, as the journal keeps it (seq -> ids)."""
    return {int(seq): int(n) for seq, n in (journal.get_meta("listed_failed") or {}).items()}


def _complete_counts(b: BatchRecord, listed: int = 0) -> tuple[int, int, int, int, int]:
    """(successful, failed, not_found, unaccounted, overcounted) of a complete batch.

    ``listed``: rows the server listed with status error; they are failed even
    when ``failedUpdates`` says fewer (then they come off ``successful``).
    """
    failed = min(max(b.failed or 0, listed, 0), b.rows)
    not_found = min(max(b.not_found or 0, 0), b.rows - failed)
    rest = b.rows - failed - not_found
    if b.successful is None:  # no counts (or no successfulUpdates): the server said complete
        return rest, failed, not_found, 0, 0
    reported = b.successful + (b.failed or 0) + (b.not_found or 0)
    if reported > b.rows:
        return rest, failed, not_found, 0, reported - b.rows
    successful = min(b.successful, rest)
    short = rest - successful
    return successful, failed + short, not_found, short, 0


def _status(rows: RowCounts, *, stuck: int, chunking_done: bool, interrupted: bool) -> str:
    if interrupted or not chunking_done or rows.pending:
        return "incomplete"
    if rows.rejected or rows.failed or stuck:
        return "partial"
    return "complete"


def build_report(
    *,
    job_id: str,
    batches: Sequence[BatchRecord],
    counters: Mapping[str, int],
    rows_read: int,
    rejected_by_reason: Mapping[str, int],
    chunking_done: bool,
    elapsed_s: float,
    outputs: Mapping[str, str | None],
    interrupted: bool,
    error: str | None = None,
    error_exit: int = 2,
    settings_summary: Mapping[str, Any] | None = None,
    finished_at: float | None = None,
    pacing: Mapping[str, Any] | None = None,
    shard: Mapping[str, Any] | None = None,
    short_rows: int = 0,
    input_warnings: Sequence[str] = (),
    rows_folded: int = 0,
    repeated_ids: Mapping[str, Any] | None = None,
    listed_failed: Mapping[int, int] | None = None,
    outcome: str | None = None,
    started_at: float | None = None,
    submit_limit: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The report.json document (SPEC section 4 keys first, then extras).

    ``outcome`` is how the run's stages ended (``done``, ``stopped``,
    ``timeout``, ``paused``, ``killed`` when it never recorded an end,
    ``running`` while it runs): it gives ``stopped_by``. ``started_at`` is when the job
    first started (epoch seconds); without it, ``finished_at - elapsed_s``.

    ``input_warnings`` come from reading the input (a header with no
    attribute column, no data rows, short rows, a likely encoding) and lead
    the report's ``warnings``.
    ``error_exit`` is the exit code an ``error`` stands for: 2 (nothing more
    was sent), 3 (the run stopped part-way: ``incomplete``, rerun) or 4 (an
    internal error).
    """
    rejected = sum(rejected_by_reason.values())
    rows = account_rows(
        batches,
        rows_read=rows_read,
        rejected=rejected,
        folded=rows_folded,
        listed_failed=listed_failed,
    )
    stuck = sum(1 for b in batches if b.state is BatchState.STUCK)
    status = _status(rows, stuck=stuck, chunking_done=chunking_done, interrupted=interrupted)
    if error is not None:
        status = "incomplete" if error_exit == EXIT_CODES["incomplete"] else "error"
    finished = datetime.now(UTC).timestamp() if finished_at is None else finished_at
    settings = _without_secrets(dict(settings_summary or {}))
    accepted = [b for b in batches if b.accepted_at is not None]
    # rows_per_s: rows of the batches Target accepted, over the run's active time.
    basis = rate_basis(sum(b.rows for b in accepted), len(accepted), elapsed_s)
    report: dict[str, Any] = {
        "job_id": job_id,
        "status": status,
        "rows": {
            k: v
            for k, v in asdict(rows).items()
            if k not in ("unaccounted", "overcounted", "listed_beyond")
        },
        "batches": {
            "total": len(batches),
            "complete": sum(1 for b in batches if b.state is BatchState.COMPLETE),
            "incomplete": sum(1 for b in batches if not b.is_final),
            "stuck": stuck,
            "failed": sum(1 for b in batches if b.state is BatchState.FAILED),
            "resubmitted": sum(max(b.submits - 1, 0) for b in batches),
        },
        "requests": {
            **{k: int(counters.get(k, 0)) for k in _REQUESTS},
            **{
                k: int(v)
                for k, v in sorted(counters.items())
                if k not in _REQUESTS and k != "bytes_sent"
            },
        },
        # Bodies that reached the server, resends included (refused connections are not).
        "bytes_submitted": int(counters.get("bytes_sent", 0)),
        "elapsed_s": round(elapsed_s, 3),
        "rows_per_s": basis_rate(basis),
        "rate_basis": basis,
        "outputs": {"rejects": None, "failed_rows": None, "journal": None, **outputs},
        "exit_code": error_exit if error is not None else EXIT_CODES[status],
        "error": error,
        "interrupted": interrupted,
        "chunking_done": chunking_done,
        "rejected_by_reason": dict(sorted(rejected_by_reason.items())),
        "short_rows": short_rows,
        "errors": [_batch_error(b) for b in batches if b.state in _FAILED_STATES],
        "duplicates": _duplicates(batches, rows),
        "repeated_ids": _repeated_ids(repeated_ids),
        "warnings": [
            *input_warnings,
            *_warnings(rows, batches, counters, repeated_ids, chunking_done=chunking_done),
        ],
        "stopped_by": _stopped_by(outcome, rows, error=error is not None, interrupted=interrupted),
        "started_at": _iso(finished - elapsed_s if started_at is None else started_at),
        "finished_at": _iso(finished),
        "client": settings.get("client"),
        "api": settings.get("api"),
        "settings": settings,
        "pacing": dict(pacing) if pacing else None,
        "shard": dict(shard) if shard else None,
        "submit_limit": dict(submit_limit) if submit_limit else None,
    }
    return report


_FAILED_STATES = (BatchState.FAILED, BatchState.STUCK)

# How the stages of a run ended -> report["stopped_by"] (None: it ran to its end).
_STOPPED_BY = {
    "stopped": "signal",
    "timeout": "status_timeout",
    "paused": "pacing",
    "killed": "killed",
    "error": "error",
    # a batch's status answers stayed unreadable (status.max_unreadable): exit 2
    "status_unreadable": "status_unreadable",
}


def _stopped_by(
    outcome: str | None, rows: RowCounts, *, error: bool, interrupted: bool
) -> str | None:
    """Why a run stopped before its end: the one word the summary's hint explains."""
    if error:
        return "status_unreadable" if outcome == "status_unreadable" else "error"
    if not interrupted:  # with --wait, a finished run is final; with --no-wait, some are open
        return "no_wait" if rows.pending else None
    return _STOPPED_BY.get(outcome or "")


def _batch_error(b: BatchRecord) -> dict[str, Any]:
    default = "stuck on the server" if b.state is BatchState.STUCK else "failed"
    return {
        "seq": b.seq,
        "file": b.file,
        "state": b.state.value,
        "rows": b.rows,
        "lines": [b.first_line, b.last_line],
        "batch_id": b.batch_id,
        "error": b.last_error or default,
    }


def _duplicates(batches: Sequence[BatchRecord], rows: RowCounts) -> dict[str, int]:
    """At-least-once made visible: what may have been applied more than once."""
    maybe = [b for b in batches if b.submits > 1 or b.outcome_unknown > 0]
    return {
        "resent_batches": len(maybe),
        "outcome_unknown_attempts": sum(b.outcome_unknown for b in batches),
        "possible_duplicate_rows": sum(b.rows for b in maybe),
        "server_overcounted_rows": rows.overcounted,
        "server_unaccounted_rows": rows.unaccounted,
    }


_NO_REPEATS: dict[str, Any] = {
    "handling": None,
    "ids": 0,
    "rows": 0,
    "rows_folded": 0,
    "max_rows_per_id": 0,
    "examples": [],
}


def _repeated_ids(found: Mapping[str, Any] | None) -> dict[str, Any]:
    """Ids on more than one valid row: how many, their rows, how many were folded."""
    return {**_NO_REPEATS, **(found or {})}


def _warnings(
    rows: RowCounts,
    batches: Sequence[BatchRecord],
    counters: Mapping[str, int],
    repeated: Mapping[str, Any] | None = None,
    *,
    chunking_done: bool,
) -> list[str]:
    """Inconsistencies worth a human look, ours or the server's; none changes the counts."""
    out = []
    if chunking_done and rows.read != rows.rejected + rows.folded + rows.submitted:
        out.append(
            f"rows read ({rows.read}) != rejected ({rows.rejected}) + folded ({rows.folded}) "
            f"+ submitted ({rows.submitted}): the journal and the input disagree"
        )
    if repeated and repeated.get("handling") == "off" and repeated.get("ids"):
        out.append(
            f"{repeated['ids']} ids appear on more than one row, but repeated-id handling "
            "is off (input.unique_ids): their rows were sent as they are, and Target may "
            "apply an earlier row after a later one"
        )
    by_id: dict[str, list[int]] = {}
    for b in batches:
        if b.batch_id:
            by_id.setdefault(b.batch_id, []).append(b.seq)
        if b.state is not BatchState.COMPLETE or b.batch_size is None:
            continue
        if b.batch_size != b.rows:
            out.append(f"batch {b.seq}: server counted {b.batch_size} rows, we sent {b.rows}")
        counted = (b.successful or 0) + (b.failed or 0) + (b.not_found or 0)
        if b.successful is not None and b.successful > b.batch_size:
            out.append(
                f"batch {b.seq}: server reported {b.successful} successful updates "
                f"for a batch of {b.batch_size} rows"
            )
        elif counted > b.batch_size:
            out.append(
                f"batch {b.seq}: server counts add up to {counted} ({b.successful or 0} "
                f"successful, {b.failed or 0} failed, {b.not_found or 0} not found) for a "
                f"batch of {b.batch_size} rows: its failed and not found counts were taken"
            )
    for batch_id, seqs in by_id.items():
        if len(seqs) > 1:
            listed = ", ".join(str(seq) for seq in seqs)
            out.append(
                f"server returned the same batch id {batch_id!r} for {len(seqs)} different "
                f"batches ({listed}): their statuses cannot be told apart"
            )
    wrong = int(counters.get("status_wrong_batch", 0))
    if wrong:
        out.append(
            f"{wrong} status answers named another batch than the one asked for: they were ignored"
        )
    if rows.unaccounted:
        out.append(f"{rows.unaccounted} rows missing from the server's counts: counted failed")
    if rows.listed_beyond:
        out.append(
            f"{rows.listed_beyond} rows listed by the server with status error beyond its "
            "failedUpdates: counted failed (they are in failed.csv)"
        )
    return out


def _without_secrets(value: Any) -> Any:
    """Drop any ``token`` key: the token is never written to a report (SPEC section 6)."""
    if isinstance(value, Mapping):
        return {k: _without_secrets(v) for k, v in value.items() if str(k).lower() != "token"}
    return value


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def exit_code(report: Mapping[str, Any]) -> int:
    """The process exit code for a report: 0, 1, 3, 4, or 2 for errors and unknown statuses."""
    code = report.get("exit_code")
    if isinstance(code, int) and code in (*EXIT_CODES.values(), EXIT_INTERNAL):
        return code
    return EXIT_CODES.get(str(report.get("status")), 2)


# -- writers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _private_file(
    path: Path, *, newline: str | None = None, encoding: str = "utf-8"
) -> Iterator[IO[str]]:
    """A text file written to a temp name and moved into place; owner-only.

    The temp file is made by ``mkstemp`` (mode 0o600) in the target's directory
    so the final ``os.replace`` is atomic; on error it is removed.

    A path that is a symbolic link or not a regular file (``/dev/stdout``, a
    pipe) is not ours to replace: it is written through, as ``open(path, "w")``
    would (a file it creates is 0o600). Replacing ``/dev/stdout`` would break
    it for every process of the machine.
    """
    if path.is_symlink() or (path.exists() and not path.is_file()):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding=encoding, newline=newline) as f:
            yield f
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline=newline) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


private_file = _private_file  # for the other outputs (verify.csv ...) that hold personal data


def write_report(path: Path, report: Mapping[str, Any]) -> None:
    """Write report.json atomically, owner-only."""
    with _private_file(Path(path)) as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_junit(path: Path, batches: Sequence[BatchRecord], report: Mapping[str, Any]) -> None:
    """One testcase per batch for CI dashboards.

    A failed or stuck batch, and a complete batch whose server counted failed
    rows, is a ``failure``; a batch not final yet is ``skipped``. A testcase's
    time is its batch's, from first submit to final; the suite's is the run's
    ``elapsed_s``.
    """
    job = str(report.get("job_id", "uploader"))
    suite = ET.Element("testsuite", name="uploader", timestamp=str(report.get("finished_at", "")))
    failures = skipped = 0
    tests = len(batches)
    if report.get("chunking_done"):
        failures += _junit_validation(suite, job, report)
        tests += 1
    for b in batches:
        case = ET.SubElement(
            suite, "testcase", name=Path(b.file).name, classname=job, time=f"{_elapsed(b):.3f}"
        )
        problem = _junit_problem(b)
        if problem is not None:
            kind, message = problem
            failures += 1
            node = ET.SubElement(case, "failure", message=message, type=kind)
            node.text = _batch_detail(b)
        elif not b.is_final:
            skipped += 1
            ET.SubElement(case, "skipped", message=f"not final yet ({b.state.value})")
        ET.SubElement(case, "system-out").text = _batch_detail(b)
    suite.set("tests", str(tests))
    suite.set("failures", str(failures))
    suite.set("errors", "0")
    suite.set("skipped", str(skipped))
    # The run's own time: batches overlap, so the sum of theirs would overstate it.
    suite.set("time", f"{float(report.get('elapsed_s') or 0.0):.3f}")
    ET.SubElement(suite, "system-out").text = render_summary(report)
    root = ET.Element("testsuites", name="uploader")
    root.append(suite)
    ET.indent(root)
    with _private_file(Path(path)) as f:
        f.write('<?xml version="1.0" encoding="UTF-8"?>\n')
        f.write(ET.tostring(root, encoding="unicode"))
        f.write("\n")


def _junit_validation(suite: ET.Element, job: str, report: Mapping[str, Any]) -> int:
    """The ``input validation`` testcase: it fails when rows were rejected (1 failure)."""
    case = ET.SubElement(suite, "testcase", name="input validation", classname=job, time="0.000")
    rejected = int(report.get("rows", {}).get("rejected", 0))
    if not rejected:
        return 0
    path = report.get("outputs", {}).get("rejects") or "rejects.csv"
    reasons = ", ".join(f"{k} {v}" for k, v in report.get("rejected_by_reason", {}).items())
    node = ET.SubElement(
        case,
        "failure",
        message=f"{rejected} rows rejected; see {path}",
        type="rejected",
    )
    node.text = f"{rejected} of {report['rows']['read']} rows rejected ({reasons}): {path}"
    return 1


def _junit_problem(b: BatchRecord) -> tuple[str, str] | None:
    if b.state is BatchState.FAILED:
        return "failed", b.last_error or "failed"
    if b.state is BatchState.STUCK:
        return "stuck", f"stuck on the server (batch id {b.batch_id})"
    if b.state is BatchState.COMPLETE:
        _, failed, _, _, _ = _complete_counts(b)
        if failed:
            return "rows_failed", f"{failed} of {b.rows} rows failed"
    return None


def _elapsed(b: BatchRecord) -> float:
    if b.final_at is None or b.submitted_at is None:
        return 0.0
    return max(b.final_at - b.submitted_at, 0.0)


def _batch_detail(b: BatchRecord) -> str:
    return (
        f"seq {b.seq}, input lines {b.first_line}-{b.last_line}, {b.rows} rows, {b.bytes} bytes, "
        f"state {b.state.value}, batch id {b.batch_id}, attempts {b.attempts}, "
        f"submits {b.submits}, successful {b.successful}, failed {b.failed}, "
        f"not found {b.not_found}"
    )


def write_failed_csv(
    path: Path,
    batches: Sequence[BatchRecord],
    error_ids: Callable[[int], Collection[str]],
    read_rows: Callable[[str], Iterator[list[str]]],
    header_names: Sequence[str],
    *,
    delimiter: str = ",",
    encoding: str = "utf-8",
    folded: Callable[[str], bool] = lambda _file: False,
) -> FailedRows:
    """Write the rows to send again, in the input's layout; say how many (``FailedRows``).

    Whole batches that failed or got stuck, plus rows of complete batches
    that the server listed with status ``error`` (``error_ids(seq)``, asked
    one batch at a time: a server may list 100,000 per batch). The file
    exists only when it holds a row, so a stale one from an earlier run never
    misleads. It is in the input's encoding and delimiter, so the same
    options read it back.

    ``folded(file)``: the batch holds folded rows, which ``read_rows`` gives
    as the input rows each one folds; there an id is one batch row. In any
    other batch every row written is a batch row, the rows of an id sent
    twice in it (``--unique-ids`` with a repeat) included: Target lists the
    id, not the row, so both are sent again and both count failed.
    """
    path = Path(path)
    width = len(header_names)
    count = 0
    listed: dict[int, int] = {}  # seq -> ids of its rows listed with status error
    if codecs.lookup(encoding).name in ("utf-8", "utf-8-sig"):
        encoding = "utf-8"  # utf-8-sig input: no byte-order mark is needed to read it back
    with _private_file(path, newline="", encoding=encoding) as f:
        writer = csv.writer(f, delimiter=delimiter)
        writer.writerow(header_names)
        for b in batches:
            whole = b.state in _FAILED_STATES
            ids = error_ids(b.seq) if b.state is BatchState.COMPLETE else None
            if not whole and not ids:
                continue
            rows = read_rows(b.file)
            next(rows, None)  # the batch's own header line
            found: set[str] = set()
            written = 0
            for row in rows:
                if whole or (row and ids and row[0] in ids):
                    writer.writerow(row + [""] * (width - len(row)))
                    count += 1
                    if not whole:
                        found.add(row[0])
                        written += 1
            if found:
                listed[b.seq] = len(found) if folded(b.file) else written
    if count == 0:
        path.unlink(missing_ok=True)
    return FailedRows(count, listed)


# -- human summary ------------------------------------------------------------------------


# Warnings shown in the summary; report.json has all of them.
_SUMMARY_WARNINGS = 5


def render_summary(report: Mapping[str, Any]) -> str:
    """A one-screen plain-text summary for the end of a run."""
    rows, batches, requests = report["rows"], report["batches"], report["requests"]
    status = str(report["status"])
    pid = report.get("running_pid")
    state = f"RUNNING (pid {pid})" if pid else f"{status.upper()} (exit {report['exit_code']})"
    lines = [
        f"uploader job {report['job_id']}: {state}",
        counts_line("rows", rows, ("read", "rejected", *_folded(rows), "submitted")),
        counts_line("", rows, ("successful", "failed", "not_found", "pending")),
        counts_line("batches", batches, tuple(batches)),
        counts_line("requests", requests, _REQUESTS),
        sent_line(report["bytes_submitted"], report["elapsed_s"], report["rows_per_s"]),
    ]
    limit = report.get("submit_limit")
    if limit:
        lines.append(f"{'limit':<10}{_limit_line(limit)}")
    outputs = [(k, v) for k, v in report.get("outputs", {}).items() if v]
    for i, (name, value) in enumerate(outputs):
        lines.append(f"{'outputs' if i == 0 else '':<10}{name:<13}{value}")
    pacing = report.get("pacing")
    if pacing:
        lines.append(f"{'pacing':<10}{_pacing_line(pacing)}")
    shard = report.get("shard")
    if shard:
        lines.append(
            f"{'shard':<10}{shard['index']}/{shard['count']}: "
            f"{shard['rows_in_other_shards']:,} records left to the other shards"
        )
    dup = report.get("duplicates", {})
    if dup.get("possible_duplicate_rows"):
        lines.append(
            f"{'note':<10}{dup['possible_duplicate_rows']:,} rows were sent more than once "
            "(at-least-once delivery)"
        )
    if dup.get("server_unaccounted_rows"):
        lines.append(
            f"{'note':<10}{dup['server_unaccounted_rows']:,} rows missing from the server's "
            "counts are counted failed"
        )
    repeats = repeats_line(report.get("repeated_ids") or {})
    if repeats:
        lines.append(f"{'repeats':<10}{repeats}")
    warnings = list(report.get("warnings") or ())
    for warning in warnings[:_SUMMARY_WARNINGS]:
        lines.append(f"{'warning':<10}{warning}")
    if len(warnings) > _SUMMARY_WARNINGS:
        lines.append(
            f"{'warning':<10}... and {len(warnings) - _SUMMARY_WARNINGS} more in report.json"
        )
    hint = _hint(report)
    if hint:
        lines.append(f"{'hint':<10}{hint}")
    return "\n".join(lines)


def _folded(rows: Mapping[str, Any]) -> tuple[str, ...]:
    """The folded count is shown when rows were folded (most exports have none)."""
    return ("folded",) if rows.get("folded") else ()


def repeats_line(found: Mapping[str, Any]) -> str:
    """One line on repeated ids for the summaries ("" when there were none)."""
    ids = int(found.get("ids") or 0)
    if not ids:
        return ""
    if found.get("handling") == "off":
        return (
            f"{_count(ids, 'id')} on more than one row ({_count(found.get('rows'), 'row')}) "
            "sent unfolded: repeated-id handling is off (--unique-ids)"
        )
    return (
        f"{_count(ids, 'id')} on more than one row: {_count(found.get('rows_folded'), 'row')} "
        f"folded into one row per id (at most {_count(found.get('max_rows_per_id'), 'row')} "
        "for one id)"
    )


def _count(n: Any, noun: str) -> str:
    n = int(n or 0)
    return f"{n:,} {noun}" if n == 1 else f"{n:,} {noun}s"


def _limit_line(limit: Mapping[str, Any]) -> str:
    """The adaptive limit in one line: how many submits were on the wire at most, and why."""
    text = f"in flight at most {limit['peak_in_flight']} of --concurrency {limit['concurrency']}"
    if not limit.get("adaptive", True):
        return text + " (a fixed limit: submit.adaptive = false)"
    lowered = int(limit.get("lowered") or 0)
    if not lowered:
        return text + "; the limit was never lowered by throttling"
    times = "once" if lowered == 1 else f"{lowered} times"
    return text + f"; throttling lowered the limit {times}, to {limit['lowest']} at the lowest"


def _pacing_line(p: Mapping[str, Any]) -> str:
    parts = []
    if p.get("max_rows_per_s"):
        parts.append(f"max {p['max_rows_per_s']:,.0f} rows/s")
    if p.get("window"):
        outside = "exit" if p.get("exit_outside_window") else "wait"
        parts.append(f"window {p['window']} {p.get('timezone')} (outside: {outside})")
    if p.get("daily_rows"):
        today = p.get("rows_today")
        used = f", {today:,} used today" if today is not None else ""
        parts.append(f"daily {p['daily_rows']:,} rows{used}")
    if p.get("max_backlog_rows"):
        parts.append(f"backlog cap {p['max_backlog_rows']:,} rows")
    if p.get("send_for_s"):
        parts.append(f"send for {p['send_for_s']:g} s")
    return "; ".join(parts)


def _hint(report: Mapping[str, Any]) -> str:
    status = report["status"]
    if report.get("running_pid"):
        return (
            f"still running as pid {report['running_pid']}: these are its figures so far "
            "(a second run is refused while it holds the work dir)"
        )
    if status == "error":
        return f"error: {report.get('error')}"
    stopped = (report.get("pacing") or {}).get("stopped")
    if status == "incomplete" and stopped:
        return f"paused: {stopped}"
    if status == "incomplete":
        return _STOP_HINTS.get(report.get("stopped_by"), _STOP_HINTS[None])
    if status == "partial":
        outputs = report.get("outputs", {})
        hints = []
        if outputs.get("rejects"):
            hints.append(f"fix the rows in {outputs['rejects']}")
        if outputs.get("failed_rows"):
            hints.append(f"feed {outputs['failed_rows']} back with `uploader run`")
        return "; ".join(hints) or "see rejects.csv and failed.csv in the work dir"
    return ""


_STOP_HINTS = {
    # --no-wait: every batch is accepted; only following them to the end is left.
    "no_wait": (
        "not final yet (--no-wait): run it again with --wait to follow the batches to the end"
    ),
    "signal": "interrupted (SIGINT or SIGTERM): re-run the same command to continue",
    "status_timeout": (
        "--status-timeout reached before every batch was final: re-run the same command to continue"
    ),
    "killed": (
        "the last run ended without writing its end (killed, or the machine stopped): "
        "re-run the same command to continue"
    ),
    None: "not finished: re-run the same command to continue",
}
