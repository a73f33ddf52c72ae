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
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader import report as reporting
from uploader.chunk import BatchFile, read_batch_rows
from uploader.combine import shard_section
from uploader.errors import ConfigError, InputError, UploaderError
from uploader.journal import BatchRecord, Journal
from uploader.settings import MAX_BATCH_BYTES, MAX_BATCH_ROWS, Settings
from uploader.sources import is_url, object_identity

__all__ = [
    "RunOutcome",
    "clear_outputs",
    "default_job_id",
    "describe_batch_file",
    "fingerprint",
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


def default_job_id(input_name: str, settings: Settings) -> str:
    """Stable for the same input and target, so re-running the same command resumes."""
    stem = "stdin" if input_name == "-" else Path(input_name).name.split(".")[0] or "input"
    local = input_name != "-" and not is_url(input_name)
    where = str(Path(input_name).resolve()) if local else input_name
    key = "\0".join((where, settings.target.base_url, settings.target.client, settings.target.api))
    shard = settings.input.shard_spec
    if shard is not None:  # each shard is its own job, with its own work dir
        key += f"\0shard {shard[0]}/{shard[1]}"
        stem += f"-shard{shard[0]}of{shard[1]}"
    # A trial load (--limit N) is a run of its own: the full load later starts afresh.
    trial = f"-first{settings.input.limit}" if settings.input.limit is not None else ""
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}{trial}"


def fingerprint(
    input_name: str, settings: Settings, files: Sequence[Path] | None = None
) -> dict[str, Any]:
    """What must not change between a run and its resume."""
    inp = settings.input
    source: dict[str, Any] = {"path": input_name}
    if files is not None:
        source = {"files": [[str(f.resolve()), f.stat().st_size] for f in files]}
    elif is_url(input_name):  # an object's version: its ETag or version id, and size
        source = {"url": input_name, "object": object_identity(input_name, inp.storage_options)}
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
        max_rows=settings.batch.max_rows,
        max_bytes=settings.batch.max_bytes,
    )
    target = settings.target
    return {
        "input": source,
        "target": {"base_url": target.base_url, "client": target.client, "api": target.api},
    }


@contextlib.contextmanager
def locked(work_dir: Path) -> Iterator[None]:
    """Hold the work dir's lock: two runs must never share one journal.

    The lock file holds the pid of the run while it runs, for ``running_pid``.
    """
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(work_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
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
    for name in ("batches",):
        shutil.rmtree(work_dir / name, ignore_errors=True)
    for name in ("manifest.jsonl", "rejects.csv", "failed.csv", "report.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(work_dir / name)


def write_outputs(
    journal: Journal,
    settings: Settings,
    work_dir: Path,
    job_id: str,
    started: float,
    outcome: str,
    error: UploaderError | None = None,
    *,
    pacing: dict[str, Any] | None = None,
) -> RunOutcome:
    # Time spent running, summed over resumes (not the idle time between them).
    elapsed = float(journal.get_meta("active_s", 0.0)) + (time.time() - started)
    journal.set_meta("active_s", elapsed)
    chunk = journal.get_meta("chunk") or {}
    rejected = chunk.get("rejected", {})
    batches = journal.batches()
    failed_path = work_dir / "failed.csv"
    try:
        failed_rows = reporting.write_failed_csv(
            failed_path,
            batches,
            journal.profile_errors(),
            _read_rows,
            failed_header(chunk.get("header", []), batches, settings),
            delimiter=settings.input.delimiter,
            encoding=settings.input.encoding,
        )
    except OSError as exc:  # a batch file was removed by hand: still write the report
        log.error("cannot write %s: %s", failed_path, exc)
        failed_rows = 0
    rejects_path = work_dir / "rejects.csv"
    report = reporting.build_report(
        job_id=job_id,
        batches=batches,
        counters=journal.counters(),
        rows_read=chunk.get("rows_read", sum(b.rows for b in batches)),
        rejected_by_reason=rejected,
        chunking_done=bool(journal.get_meta("chunk_done")),
        short_rows=int(chunk.get("short_rows", 0)),
        input_warnings=chunk.get("warnings", []),
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
        settings_summary={
            "client": settings.target.client,
            "api": settings.target.api,
            "base_url": settings.target.base_url,
            "outcome": outcome,
        },
        pacing=pacing,
        shard=shard_section(chunk),
    )
    report_path = settings.run.report or work_dir / "report.json"
    reporting.write_report(report_path, report)
    if settings.run.report:
        reporting.write_report(work_dir / "report.json", report)
    if settings.run.junit:
        reporting.write_junit(settings.run.junit, batches, report)
    code = reporting.exit_code(report)
    # What `uploader status` shows of a run that has ended (cleared when one starts).
    journal.set_meta("last_exit", {"exit_code": code, "error": report["error"]})
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
    return read_batch_rows(Path(path))


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
