"""The one place that knows the order of the stages of a run.

    source/encode/chunk ──(thread)──> submit queue ──> Submitter ──> Poller ──> report
                    │                                    │             │
                    └──────────────── journal (every step, before the next acts) ─┘

``run_pipeline`` resumes from the journal when one exists: complete and
failed batches are left alone, accepted ones are polled again, written ones
(and ones whose submit was in flight when the last run died) are sent, and
the chunker continues after the last batch it had recorded. Disk use is
bounded: the chunker blocks when ``batch.max_waiting`` files wait to be
accepted. SIGINT/SIGTERM stop new work, give requests on the wire a short
grace, and end with the journal intact (exit 3).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from uploader import report as reporting
from uploader.chunk import BatchFile, Chunker, read_batch_rows
from uploader.client import TargetClient
from uploader.errors import ConfigError, InputError, UploaderError
from uploader.journal import BatchRecord, Journal
from uploader.poll import Poller
from uploader.retry import Sleep
from uploader.settings import MAX_BATCH_BYTES, MAX_BATCH_ROWS, Settings
from uploader.states import BatchState
from uploader.submit import SubmitJob, Submitter

__all__ = ["RunOutcome", "default_job_id", "fingerprint", "run_pipeline"]

log = logging.getLogger(__name__)

# How long requests already on the wire may finish after SIGINT/SIGTERM.
STOP_GRACE_S = 5.0


@dataclass(frozen=True)
class RunOutcome:
    report: dict[str, Any]
    exit_code: int
    work_dir: Path


def default_job_id(input_name: str, settings: Settings) -> str:
    """Stable for the same input and target, so re-running the same command resumes."""
    stem = "stdin" if input_name == "-" else Path(input_name).name.split(".")[0] or "input"
    where = input_name if input_name == "-" else str(Path(input_name).resolve())
    key = "\0".join((where, settings.target.base_url, settings.target.client, settings.target.api))
    return f"{stem}-{hashlib.sha256(key.encode()).hexdigest()[:10]}"


def fingerprint(
    input_name: str, settings: Settings, files: Sequence[Path] | None = None
) -> dict[str, Any]:
    """What must not change between a run and its resume."""
    inp = settings.input
    source: dict[str, Any] = {"path": input_name}
    if files is not None:
        source = {"files": [[str(f.resolve()), f.stat().st_size] for f in files]}
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
        columns=list(inp.columns) if inp.columns is not None else None,
        rename=dict(inp.rename),
        max_rows=settings.batch.max_rows,
        max_bytes=settings.batch.max_bytes,
    )
    target = settings.target
    return {
        "input": source,
        "target": {"base_url": target.base_url, "client": target.client, "api": target.api},
    }


class _Run:
    """State of one pipeline run; methods are the callbacks between stages."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        client: TargetClient,
        *,
        sleep: Sleep | None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.loop = asyncio.get_running_loop()
        self.open: set[int] = set()  # batches not yet final
        self.unsent: set[int] = set()  # batches not yet accepted or failed
        self.known = 0  # batches in the journal
        self.chunk_done = asyncio.Event()
        self.changed = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.chunk_stop = threading.Event()
        self.fatal: UploaderError | None = None
        self.waiting = threading.Semaphore(settings.batch.max_waiting)
        self.submitter = Submitter(
            client,
            journal,
            settings.submit,
            on_accepted=self.accepted,
            on_failed=self.failed,
            on_fatal=self.fatal_error,
            sleep=sleep,
        )
        self.poller = Poller(
            client, journal, settings.status, on_final=self.final, on_stuck=self.stuck
        )

    # -- chunker thread -> loop -------------------------------------------------

    def batch_written(self, batch: BatchFile) -> None:
        """Called in the chunker thread after each batch file is closed."""
        while not self.waiting.acquire(timeout=0.2):
            if self.chunk_stop.is_set():
                return  # not journaled: the resumed chunker writes it again
        self.loop.call_soon_threadsafe(self._enqueue_new, batch)

    def _enqueue_new(self, batch: BatchFile) -> None:
        if self.stop_requested.is_set():
            self.waiting.release()
            return
        self.journal.add_batch(batch)
        self.known += 1
        self.send(SubmitJob(batch.seq, batch.path, batch.rows, batch.bytes), hold=True)

    # -- stage callbacks --------------------------------------------------------

    def send(self, job: SubmitJob, *, hold: bool = False) -> None:
        self.open.add(job.seq)
        self.unsent.add(job.seq)
        if not hold:
            self.waiting.acquire(blocking=False)  # resumed files count against the bound too
        self.submitter.put(job)

    def accepted(self, seq: int, status_url: str) -> None:
        self._sent(seq)
        if self.settings.status.wait:
            self.poller.follow(seq, status_url)

    def failed(self, seq: int) -> None:
        self._sent(seq)
        self.final(seq)

    def _sent(self, seq: int) -> None:
        if seq in self.unsent:
            self.unsent.discard(seq)
            self.waiting.release()
        self.changed.set()

    def fatal_error(self, exc: UploaderError) -> None:
        """A problem every request would hit (bad token, wrong client): stop the run."""
        if self.fatal is None:
            self.fatal = exc
        self.stop_requested.set()

    def final(self, seq: int) -> None:
        self.open.discard(seq)
        self.changed.set()

    def stuck(self, seq: int) -> None:
        record = self.journal.batch(seq)
        if record.submits <= self.settings.status.resubmit_stuck:
            log.warning("batch %06d is stuck; submitting it again", seq)
            self.journal.requeue(seq)
            self.journal.bump("resubmitted")
            self.send(_job(record))
        else:
            self.journal.record_failed(seq, f"stuck after {record.submits} submits")
            self.final(seq)

    # -- resume -----------------------------------------------------------------

    def resume(self) -> None:
        """Put every unfinished batch of an earlier run back where it belongs."""
        for record in self.journal.batches():
            self.known += 1
            state = record.state
            if state in (BatchState.COMPLETE, BatchState.FAILED):
                continue
            if state == BatchState.ACCEPTED and record.status_url:
                self.open.add(record.seq)
                if self.settings.status.wait:
                    self.poller.follow(record.seq, record.status_url, delay=0.0)
            elif state == BatchState.STUCK:
                self.open.add(record.seq)
                self.stuck(record.seq)
            else:
                if state == BatchState.SUBMITTING:
                    # The last run died with this submit on the wire: it may have been
                    # accepted. Sending again is at-least-once; the resend is counted.
                    self.journal.requeue(record.seq)
                    self.journal.bump("resubmitted")
                self.send(_job(record))

    # -- completion -------------------------------------------------------------

    def finished(self) -> bool:
        if not self.chunk_done.is_set():
            return False
        if not self.settings.status.wait:
            return not self.unsent
        return not self.open

    async def wait_until_finished(self, deadline: float) -> str:
        """'done', 'stopped' or 'timeout'."""
        while not self.finished():
            if self.stop_requested.is_set():
                return "stopped"
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return "timeout"
            self.changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._any_change(), min(remaining, 1.0))
        return "done"

    async def _any_change(self) -> None:
        waits = [
            asyncio.ensure_future(self.changed.wait()),
            asyncio.ensure_future(self.stop_requested.wait()),
            asyncio.ensure_future(self.chunk_done.wait()),
        ]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


def _job(record: BatchRecord) -> SubmitJob:
    return SubmitJob(record.seq, Path(record.file), record.rows, record.bytes)


async def run_pipeline(
    input_name: str,
    settings: Settings,
    work_dir: Path,
    *,
    job_id: str,
    progress: Callable[[Callable[[], dict[str, Any]]], contextlib.AbstractAsyncContextManager[None]]
    | None = None,
    sleep: Sleep | None = None,
    install_signals: bool = True,
    files: Sequence[Path] | None = None,
) -> RunOutcome:
    """Chunk, submit and track one input to completion (or to a resumable stop).

    With ``files``, the batch files already exist (``uploader submit``): they
    are registered in the journal as they are, and no chunker runs.
    """
    started = time.time()
    work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    journal = Journal(work_dir / "journal.sqlite")
    try:
        batch_files = [describe_batch_file(i, f) for i, f in enumerate(files or (), 1)]
        resuming = journal.start_run(
            fingerprint(input_name, settings, files), fresh=settings.run.fresh
        )
        if not resuming and files is None:
            _clear_outputs(work_dir)
        if files is not None:
            for batch in batch_files:
                journal.add_batch(batch)
            journal.set_meta("chunk", {"rows_read": sum(b.rows for b in batch_files)})
            journal.set_meta("chunk_done", True)
        if not resuming:
            journal.set_meta("job_id", job_id)
            journal.set_meta("started_at", started)
        else:
            log.info("resuming run %s from %s", job_id, work_dir)
        error: UploaderError | None = None
        try:
            async with TargetClient(
                settings.target,
                connections=settings.submit.concurrency + settings.status.max_inflight,
                timeout_s=settings.submit.request_timeout_s,
            ) as client:
                run = _Run(settings, journal, client, sleep=sleep)
                status = await _drive(run, input_name, work_dir, progress, install_signals)
                error = run.fatal
        except (InputError, ConfigError) as exc:
            status, error = "error", exc
        return _finish(journal, settings, work_dir, job_id, started, status, error)
    finally:
        journal.close()


async def _drive(
    run: _Run,
    input_name: str,
    work_dir: Path,
    progress: Any,
    install_signals: bool,
) -> str:
    settings, journal, loop = run.settings, run.journal, run.loop
    deadline = loop.time() + settings.status.timeout_s
    run.resume()
    tasks = [
        asyncio.create_task(run.submitter.run(), name="submitter"),
        asyncio.create_task(run.poller.run(), name="poller"),
    ]
    chunk_task = asyncio.create_task(_chunk(run, input_name, work_dir), name="chunker")
    if install_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, run.stop_requested.set)
    try:
        async with progress(lambda: _snapshot(run)) if progress else contextlib.nullcontext():
            outcome = await _race(run, chunk_task, deadline)
    finally:
        if install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        run.chunk_stop.set()
        run.submitter.stop()
        run.poller.close()
        if not outcome_is_clean(run):
            tasks[1].cancel()  # stop polling at once; submits on the wire get a grace
            await asyncio.wait(tasks[:1], timeout=STOP_GRACE_S)
            tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        chunk_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await chunk_task
    journal.set_meta("last_outcome", outcome)
    return outcome


def outcome_is_clean(run: _Run) -> bool:
    return run.finished() and not run.stop_requested.is_set()


async def _race(run: _Run, chunk_task: asyncio.Task[None], deadline: float) -> str:
    """Wait for the run to finish, a stop, a timeout, or the chunker to fail."""
    waiter = asyncio.create_task(run.wait_until_finished(deadline))
    done, _ = await asyncio.wait({waiter, chunk_task}, return_when=asyncio.FIRST_COMPLETED)
    if chunk_task in done and chunk_task.exception() is not None:
        waiter.cancel()
        raise chunk_task.exception()  # type: ignore[misc]
    return await waiter


async def _chunk(run: _Run, input_name: str, work_dir: Path) -> None:
    """Run the chunker in a worker thread so the event loop keeps its timing."""
    journal = run.journal
    if journal.get_meta("chunk_done"):  # finished by an earlier run, or `uploader submit`
        run.chunk_done.set()
        run.changed.set()
        return
    chunker = Chunker(
        input_name,
        work_dir,
        run.settings.input,
        run.settings.batch,
        on_batch=run.batch_written,
        skip_through_seq=journal.max_seq(),
        stop=run.chunk_stop,
    )
    summary = await asyncio.to_thread(chunker.run)
    if run.chunk_stop.is_set():
        return
    journal.set_meta(
        "chunk",
        {
            "rows_read": summary.rows_read,
            "rejected": dict(summary.rejected),
            "header": list(summary.header),
        },
    )
    journal.set_meta("chunk_done", True)
    run.chunk_done.set()
    run.changed.set()


def _snapshot(run: _Run) -> dict[str, Any]:
    stats = run.submitter.stats
    return {
        "rows_accepted": stats.rows_accepted,
        "batches_known": run.known,
        "batches_final": run.known - len(run.open),
        "batches_accepted": stats.batches_accepted,
        "batches_failed": stats.batches_failed,
        "open": len(run.open),
        "unsent": len(run.unsent),
        "following": run.poller.following,
        "limit": run.submitter.limiter.limit,
        "in_flight": run.submitter.limiter.in_flight,
        "throttles": run.submitter.limiter.throttles,
        "chunk_done": run.chunk_done.is_set(),
    }


def _clear_outputs(work_dir: Path) -> None:
    for name in ("batches",):
        shutil.rmtree(work_dir / name, ignore_errors=True)
    for name in ("manifest.jsonl", "rejects.csv", "failed.csv", "report.json"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(work_dir / name)


def _finish(
    journal: Journal,
    settings: Settings,
    work_dir: Path,
    job_id: str,
    started: float,
    outcome: str,
    error: UploaderError | None = None,
) -> RunOutcome:
    chunk = journal.get_meta("chunk") or {}
    rejected = chunk.get("rejected", {})
    batches = journal.batches()
    failed_path = work_dir / "failed.csv"
    failed_rows = reporting.write_failed_csv(
        failed_path,
        batches,
        journal.profile_errors(),
        _read_rows,
        failed_header(chunk.get("header", []), batches, settings),
    )
    rejects_path = work_dir / "rejects.csv"
    report = reporting.build_report(
        job_id=job_id,
        batches=batches,
        counters=journal.counters(),
        rows_read=chunk.get("rows_read", sum(b.rows for b in batches)),
        rejected_by_reason=rejected,
        chunking_done=bool(journal.get_meta("chunk_done")),
        elapsed_s=time.time() - float(journal.get_meta("started_at", started)),
        outputs={
            "rejects": str(rejects_path) if sum(rejected.values()) else None,
            "failed_rows": str(failed_path) if failed_rows else None,
            "journal": str(work_dir / "journal.sqlite"),
            "work_dir": str(work_dir),
        },
        interrupted=outcome != "done",
        error=f"{type(error).__name__}: {error}" if error else None,
        settings_summary={
            "client": settings.target.client,
            "api": settings.target.api,
            "base_url": settings.target.base_url,
            "outcome": outcome,
        },
    )
    report_path = settings.run.report or work_dir / "report.json"
    reporting.write_report(report_path, report)
    if settings.run.report:
        reporting.write_report(work_dir / "report.json", report)
    if settings.run.junit:
        reporting.write_junit(settings.run.junit, batches, report)
    return RunOutcome(report, reporting.exit_code(report), work_dir)


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
