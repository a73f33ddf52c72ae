"""The work directory of a run: its identity, its files, and its final outputs.

A run's work directory holds the journal, the batch files, ``rejects.csv``,
``failed.csv`` and ``report.json``. This module decides the job id (stable,
so the same command finds the same directory and resumes), the fingerprint
that a resumed run must match, and writes the final outputs from the journal
once the pipeline has stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader import report as reporting
from uploader.chunk import BatchFile, originals_path, read_batch_rows, read_sent_rows
from uploader.combine import shard_section
from uploader.errors import (
    ConfigError,
    InputError,
    StorageError,
    UploaderError,
    storage_error,
)
from uploader.journal import BatchRecord, Journal
from uploader.settings import MAX_BATCH_BYTES, MAX_BATCH_ROWS, Settings
from uploader.sources import is_url, object_identity

__all__ = [
    "RunOutcome",
    "check_ours",
    "clear_outputs",
    "default_job_id",
    "describe_batch_file",
    "fingerprint",
    "journal_facts",
    "locked",
    "running_pid",
    "write_outputs",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOutcome:
    report: dict[str, Any]
    exit_code: int
    work_dir: Path
    submit_latencies_s: tuple[float, ...] = ()  # each accepted submit request, this run


def default_job_id(input_name: str, settings: Settings, *, stdin_sha256: str = "") -> str:
    """Stable for the same input and target, so re-running the same command resumes.

    Standard input is named by its content (``stdin_sha256``, from the spool):
    the same bytes piped again resume their run, other bytes are a new job.
    """
    stem = "stdin" if input_name == "-" else Path(input_name).name.split(".")[0] or "input"
    if input_name == "-":
        where = f"-:{stdin_sha256}"
    else:
        where = input_name if is_url(input_name) else str(Path(input_name).resolve())
    key = "\0".join((where, settings.target.base_url, settings.target.client, settings.target.api))
    shard = settings.input.shard_spec
    if shard is not None:  # each shard is its own job, with its own work dir
        key += f"\0shard {shard[0]}/{shard[1]}"
        stem += f"-shard{shard[0]}of{shard[1]}"
    # A trial load (--limit N) is a run of its own: the full load later starts afresh.
    trial = f"-first{settings.input.limit}" if settings.input.limit is not None else ""
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}{trial}"


def fingerprint(
    input_name: str,
    settings: Settings,
    files: Sequence[Path] | None = None,
    *,
    stdin: tuple[str, int] | None = None,
) -> dict[str, Any]:
    """What must not change between a run and its resume.

    A quick first check (path, size, first MiB; the whole content for stdin,
    given as its spool's ``(sha256, bytes)``); the resumed chunker then checks
    every batch it regenerates against the journal (see ``pipeline``).
    """
    inp = settings.input
    source: dict[str, Any] = {"path": input_name}
    if files is not None:
        source = {"files": [[str(f.resolve()), f.stat().st_size] for f in files]}
    elif is_url(input_name):  # an object's version: its ETag or version id, and size
        source = {"url": input_name, "object": object_identity(input_name, inp.storage_options)}
    elif stdin is not None:
        source = {"path": "-", "sha256": stdin[0], "size": stdin[1]}
    elif input_name != "-":
        path = Path(input_name)
        st = path.stat()
        head = hashlib.sha256()
        with path.open("rb") as fh:
            head.update(fh.read(1 << 20))
        source = {"path": str(path.resolve()), "size": st.st_size, "head_sha256": head.hexdigest()}
    source.update(
        id_column=inp.id_column,
        id_type=inp.id_type,
        delimiter=inp.delimiter,
        encoding=inp.encoding,
        format=inp.format,
        shard=inp.shard,
        columns=list(inp.columns) if inp.columns is not None else None,
        rename=dict(inp.rename),
        strip_ids=inp.strip_ids,
        short_rows=inp.short_rows,
        limit=inp.limit,
        unique_ids=inp.unique_ids,
        max_rows=settings.batch.max_rows,
        max_bytes=settings.batch.max_bytes,
    )
    target = settings.target
    return {
        "input": source,
        "target": {"base_url": target.base_url, "client": target.client, "api": target.api},
    }


# What a run or `uploader split` writes in its directory. A directory that holds
# anything else and no journal is not ours: we refuse it rather than replace
# or delete someone's files (or chmod /tmp).
_OUR_NAMES = frozenset(
    {
        ".lock",
        "journal.sqlite",
        "journal.sqlite-wal",
        "journal.sqlite-shm",
        "journal.sqlite-journal",
        "batches",
        "manifest.jsonl",
        "rejects.csv",
        "failed.csv",
        "report.json",
        "stdin.csv",
    }
)
_OUR_TEMP = re.compile(r"\.(stdin-.*|(report\.json|failed\.csv|rejects\.csv)\..*)\.tmp")
_OUR_BATCH = re.compile(r"batch-\d{6,}\.txt(\.tmp)?")


def check_ours(path: Path, *, what: str = "work dir", flag: str = "--work-dir") -> None:
    """Refuse a directory that holds files and no journal of ours (ConfigError, exit 2).

    Missing or empty is fine (a directory we create is made owner-only; one
    that exists keeps its mode). So is one with our journal, or only files
    with the names we write (a run that stopped before its journal, a split).
    """
    try:
        if not path.exists():
            return
        if not path.is_dir():
            raise ConfigError(f"{path}: not a directory; choose another {flag}")
        if (path / "journal.sqlite").is_file():
            return
        foreign = [name for entry in path.iterdir() for name in _foreign(entry)]
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the {what}: {exc.strerror or exc}") from exc
    if foreign:
        raise ConfigError(
            f"{path}: not an uploader {what}: it holds files of its own (such as "
            f"{sorted(foreign)[0]!r}) and no journal.sqlite; choose a new or empty {flag}"
        )


def _foreign(entry: Path) -> list[str]:
    """Names under ``entry`` that a run or a split did not write."""
    if entry.name == "batches" and entry.is_dir() and not entry.is_symlink():
        return [f"batches/{e.name}" for e in entry.iterdir() if not _OUR_BATCH.fullmatch(e.name)]
    if entry.name in _OUR_NAMES or _OUR_TEMP.fullmatch(entry.name):
        return []
    return [entry.name]


@contextlib.contextmanager
def locked(work_dir: Path) -> Iterator[None]:
    """Hold the work dir's lock: two runs must never share one journal.

    The lock file holds the pid of the run while it runs, for ``running_pid``.
    """
    check_ours(work_dir)
    try:
        work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(work_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise _storage_error(exc, work_dir) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = running_pid(work_dir)
            raise ConfigError(
                f"{work_dir}: another uploader run is using this work dir"
                + (f" (pid {pid})" if pid else "")
                + "; wait for it to finish or use another --work-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
    finally:
        os.close(fd)  # closing releases the lock


def running_pid(work_dir: Path) -> int | None:
    """The pid of the run holding the work dir's lock, or None when no run holds it.

    The pid written by ``locked`` is only believed while the lock is held: a
    run killed with SIGKILL leaves its pid behind but not its lock.
    """
    try:
        fd = os.open(work_dir / ".lock", os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        text = os.read(fd, 32).decode("ascii", "replace").strip()
        if not text.isdigit():
            return None
        try:
            os.kill(int(text), 0)  # cheap check first: no probe of a dead pid's lock
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, another user's
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return int(text)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def clear_outputs(work_dir: Path) -> None:
    """A fresh run starts clean: remove the files a run writes, and only those."""
    batches = work_dir / "batches"
    if batches.is_dir() and not batches.is_symlink():
        for entry in batches.iterdir():
            if _OUR_BATCH.fullmatch(entry.name) and entry.is_file():
                entry.unlink()
        with contextlib.suppress(OSError):
            batches.rmdir()  # only when nothing else is left in it
    for name in ("manifest.jsonl", "rejects.csv", "failed.csv", "report.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(work_dir / name)


def _storage_error(exc: OSError, path: Path) -> UploaderError:
    """An OSError about the disk as a one-line StorageError; others stay ConfigError."""
    return storage_error(exc, path) or ConfigError(f"{exc.filename or path}: {exc.strerror or exc}")


def journal_facts(
    journal: Journal, chunk: dict[str, Any], batches: Sequence[BatchRecord]
) -> dict[str, Any]:
    """The ``build_report`` arguments the journal alone holds (``chunk``: its chunker record).

    A run's end (``write_outputs``) and ``uploader status`` both build their
    report from these, so the two count rows the same way.
    """
    return {
        "batches": batches,
        "counters": journal.counters(),
        "rows_read": chunk.get("rows_read", sum(b.rows for b in batches)),
        "rejected_by_reason": chunk.get("rejected", {}),
        "rows_folded": chunk.get("folded", 0),
        "repeated_ids": chunk.get("repeated_ids"),
        "chunking_done": bool(journal.get_meta("chunk_done")),
        "short_rows": int(chunk.get("short_rows", 0)),
        "input_warnings": chunk.get("warnings", []),
        "shard": shard_section(chunk),
        "started_at": journal.get_meta("started_at"),
        "submit_limit": journal.get_meta("submit_limit"),
        "listed_failed": reporting.listed_failed(journal),
    }


def write_outputs(
    journal: Journal,
    settings: Settings,
    work_dir: Path,
    job_id: str,
    started: float,
    outcome: str,
    error: UploaderError | str | None = None,
    *,
    error_exit: int = 2,
    pacing: dict[str, Any] | None = None,
) -> RunOutcome:
    """report.json (and JUnit, failed.csv) from the journal, also when the disk is full.

    A write that fails is logged and the rest still happens: the outcome
    (exit code, error line) must reach the user whatever the disk says.
    """
    # Time spent running, summed over resumes (not the idle time between them).
    elapsed = float(journal.get_meta("active_s", 0.0)) + (time.time() - started)
    try:
        journal.set_meta("active_s", elapsed)
    except StorageError as exc:
        log.error("%s", exc)
    chunk = journal.get_meta("chunk") or {}
    rejected = chunk.get("rejected", {})
    batches = journal.batches()
    failed_path = work_dir / "failed.csv"
    listed: dict[int, int] = {}
    try:
        failed = reporting.write_failed_csv(
            failed_path,
            batches,
            journal.error_ids,
            _read_rows,
            failed_header(chunk.get("header", []), batches, settings),
            delimiter=settings.input.delimiter,
            encoding=settings.input.encoding,
            folded=lambda file: originals_path(Path(file)).exists(),
        )
        failed_rows, listed = failed.rows, failed.listed
        journal.set_meta("listed_failed", {str(seq): n for seq, n in listed.items()})
    except StorageError as exc:  # the journal: status counts as of the last run's end
        log.error("%s", exc)
    except OSError as exc:  # a batch file was removed by hand: still write the report
        log.error("cannot write %s: %s", failed_path, exc)
        failed_rows = 0
    rejects_path = work_dir / "rejects.csv"
    report = reporting.build_report(
        job_id=job_id,
        **{**journal_facts(journal, chunk, batches), "listed_failed": listed},
        elapsed_s=elapsed,
        outputs={
            "rejects": str(rejects_path) if sum(rejected.values()) else None,
            "failed_rows": str(failed_path) if failed_rows else None,
            "journal": str(work_dir / "journal.sqlite"),
            "junit": str(settings.run.junit) if settings.run.junit else None,
            "work_dir": str(work_dir),
        },
        interrupted=outcome != "done",
        error=str(error) if error else None,
        error_exit=error_exit,
        settings_summary={
            "client": settings.target.client,
            "api": settings.target.api,
            "base_url": settings.target.base_url,
        },
        pacing=pacing,
        outcome=outcome,
    )
    report_path = settings.run.report or work_dir / "report.json"
    try:
        reporting.write_report(report_path, report)
        if settings.run.report:
            reporting.write_report(work_dir / "report.json", report)
        if settings.run.junit:
            reporting.write_junit(settings.run.junit, batches, report)
    except OSError as exc:
        log.error("%s", _storage_error(exc, report_path))
    code = reporting.exit_code(report)
    # What `uploader status` shows of a run that has ended (cleared when one starts).
    ended = {
        "exit_code": code,
        "error": report["error"],
        "finished_at": report["finished_at"],
        "outputs": report["outputs"],
    }
    try:
        journal.set_meta("last_exit", ended)
    except StorageError as exc:
        log.error("%s", exc)
    return RunOutcome(report, code, work_dir)


def describe_batch_file(seq: int, path: Path) -> BatchFile:
    """Size, rows and checksum of an existing batch file, checked against Target's limits."""
    digest = hashlib.sha256()
    newlines = size = 0
    last = b""
    try:
        with path.open("rb") as fh:
            if fh.read(6) != b"batch=":
                raise InputError(f"{path}: not a batch file (it must start with 'batch=')")
            fh.seek(0)
            while block := fh.read(1 << 20):
                digest.update(block)
                newlines += block.count(b"\n")
                size += len(block)
                last = block[-1:]
    except OSError as exc:
        raise InputError(f"{path}: cannot read batch file: {exc.strerror}") from exc
    rows = newlines - (1 if last == b"\n" else 0)
    if rows < 1:
        raise InputError(f"{path}: batch file has a header but no rows")
    if size >= MAX_BATCH_BYTES or rows > MAX_BATCH_ROWS:
        raise InputError(
            f"{path}: {size} bytes, {rows} rows: over Target's limits "
            f"(under {MAX_BATCH_BYTES} bytes, at most {MAX_BATCH_ROWS} rows)"
        )
    return BatchFile(seq, path.resolve(), rows, size, 0, 0, digest.hexdigest())


def _read_rows(path: str) -> Iterator[list[str]]:
    return read_sent_rows(Path(path))


def failed_header(
    input_header: list[str], batches: list[BatchRecord], settings: Settings
) -> list[str]:
    """The input's names for the columns we sent, id first, so failed.csv can be fed back."""
    if not batches:
        return []
    sent = next(read_batch_rows(Path(batches[0].file)))
    inp = settings.input
    id_name = inp.id_column or (input_header[0] if input_header else sent[0])
    back = {target: crm for crm, target in inp.rename.items()}
    return [id_name] + [back.get(name, name) for name in sent[1:]]
