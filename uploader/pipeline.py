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
import dataclasses
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uploader.chunk import BatchFile, Chunker
from uploader.client import TargetClient
from uploader.errors import ConfigError, InputError, TransportError, UploaderError
from uploader.journal import BatchRecord, Journal
from uploader.metrics import RunMetrics
from uploader.monitor import Monitor
from uploader.pacing import Clock, Pacer, PacingStop, parse_window, resolve_timezone
from uploader.poll import Poller
from uploader.retry import Sleep
from uploader.settings import Settings
from uploader.states import BatchState
from uploader.submit import SubmitJob, Submitter
from uploader.workdir import (
    RunOutcome,
    clear_outputs,
    describe_batch_file,
    fingerprint,
    locked,
    write_outputs,
)

__all__ = ["RunOutcome", "run_pipeline"]

log = logging.getLogger(__name__)

# How long requests already on the wire may finish after SIGINT/SIGTERM.
STOP_GRACE_S = 5.0


class _Run:
    """State of one pipeline run; methods are the callbacks between stages."""

    def __init__(
        self,
        settings: Settings,
        journal: Journal,
        client: TargetClient,
        *,
        sleep: Sleep | None,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        self.journal = journal
        self.loop = asyncio.get_running_loop()
        self.open: set[int] = set()  # batches not yet final
        self.unsent: set[int] = set()  # batches not yet accepted or failed
        self.holding: set[int] = set()  # unsent batches holding a `waiting` permit
        self.known = 0  # batches in the journal
        self.rows_known = 0  # rows in those batches
        self.chunker: Chunker | None = None  # while this run chunks: its input position
        # The report counts throttled requests over every run of the work dir; so does progress.
        self.throttled_before = journal.counters().get("throttled", 0)
        self.chunk_done = asyncio.Event()
        self.changed = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.chunk_stop = threading.Event()
        self.fatal: UploaderError | None = None
        self.paused: PacingStop | None = None  # a pacing limit ended this run's submits
        self.last_progress_s = time.time()  # a batch accepted or final (for metrics)
        self.waiting = threading.Semaphore(settings.batch.max_waiting)
        self.pacer = make_pacer(settings, journal, clock)
        self.submitter = Submitter(
            client,
            journal,
            settings.submit,
            on_accepted=self.accepted,
            on_failed=self.failed,
            on_stop_run=self.stop_run,
            sleep=sleep,
            pacer=self.pacer,
            on_paused=self.pause,
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
        self.rows_known += batch.rows
        self.send(SubmitJob(batch.seq, batch.path, batch.rows, batch.bytes), hold=True)

    # -- stage callbacks --------------------------------------------------------

    def send(self, job: SubmitJob, *, hold: bool = False) -> None:
        """Queue a batch; ``hold``: the chunker already took its disk permit."""
        self.open.add(job.seq)
        self.unsent.add(job.seq)
        # Resent and resumed files count against the disk bound too, when there is room.
        if hold or self.waiting.acquire(blocking=False):
            self.holding.add(job.seq)
        self.submitter.put(job)

    def accepted(self, seq: int, status_url: str) -> None:
        self._sent(seq)
        if self.settings.status.wait:
            self.poller.follow(seq, status_url)

    def failed(self, seq: int) -> None:
        self._sent(seq)
        self.final(seq)

    def _sent(self, seq: int) -> None:
        self.last_progress_s = time.time()
        self.unsent.discard(seq)
        if seq in self.holding:
            self.holding.discard(seq)
            self.waiting.release()
        self.changed.set()

    def stop_run(self, exc: UploaderError) -> None:
        """A problem every request would hit: stop the run, keep the batches.

        A bad token or a wrong client code is a configuration error (exit 2).
        So is a server we never reached; losing it mid-run is an interruption
        (exit 3): the same command continues when the server is back.
        """
        never_reached = not self.submitter.stats.batches_accepted and not any(
            b.batch_id for b in self.journal.batches()
        )
        if not isinstance(exc, TransportError) or never_reached:
            if self.fatal is None:
                self.fatal = ConfigError(_stop_message(exc, self.settings))
        elif not self.stop_requested.is_set():
            log.error(
                "stopping: %s; run the same command again to continue",
                exc,
                extra={"event": "stopping", "error": str(exc)},
            )
        self.request_stop()

    def pause(self, stop: PacingStop) -> None:
        """A pacing limit: send nothing more; follow what was accepted, then exit 3."""
        if self.paused is None:
            self.paused = stop
            log.warning("pausing: %s", stop, extra={"event": "paused"})
        self.changed.set()

    def final(self, seq: int) -> None:
        self.last_progress_s = time.time()
        self.open.discard(seq)
        self.pacer.settled(seq)
        self.changed.set()

    def stuck(self, seq: int) -> None:
        self.pacer.settled(seq)
        record = self.journal.batch(seq)
        if record.submits <= self.settings.status.resubmit_stuck:
            log.warning(
                "batch %06d is stuck; submitting it again",
                seq,
                extra={"event": "batch_stuck", "batch": seq},
            )
            self.journal.requeue(seq)
            self.journal.bump("resubmitted")
            self.send(_job(record))
        else:
            self.journal.record_failed(seq, f"stuck after {record.submits} submits")
            self.submitter.stats.batches_failed += 1
            log.warning("batch %06d failed: stuck after %d submits", seq, record.submits)
            self.final(seq)

    # -- resume -----------------------------------------------------------------

    def resume(self) -> None:
        """Put every unfinished batch of an earlier run back where it belongs."""
        for record in self.journal.batches():
            self.known += 1
            self.rows_known += record.rows
            state = record.state
            if state in (BatchState.ACCEPTED, BatchState.COMPLETE, BatchState.STUCK):
                self.submitter.stats.mark_accepted(record.seq, record.rows, record.bytes)
            elif state == BatchState.FAILED:
                self.submitter.stats.batches_failed += 1
            if state in (BatchState.COMPLETE, BatchState.FAILED):
                continue
            if state == BatchState.ACCEPTED and record.status_url:
                self.open.add(record.seq)
                self.pacer.track(record.seq, record.rows)
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
        if self.paused is not None:  # nothing more is sent: done once the accepted are final
            if self.submitter.active:
                return False
            return not self.settings.status.wait or self.open <= self.unsent
        if not self.chunk_done.is_set():
            return False
        if not self.settings.status.wait:
            return not self.unsent
        return not self.open

    def request_stop(self) -> None:
        """SIGINT/SIGTERM: stop taking new work (see ``_drive`` for the grace)."""
        self.stop_requested.set()
        self.changed.set()

    async def wait_until_finished(self, deadline: float) -> str:
        """'done', 'stopped' or 'timeout'. Every stage callback sets ``changed``."""
        while True:
            self.changed.clear()
            if self.finished():
                return "done" if self.paused is None else "paused"
            if self.stop_requested.is_set():
                return "stopped"
            remaining = deadline - self.loop.time()
            if remaining <= 0:
                return "timeout"
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):  # not wait_for: see poll.Poller._wait
                    await self.changed.wait()


def make_pacer(settings: Settings, journal: Journal, clock: Clock | None = None) -> Pacer:
    """The run's pacer from ``settings.pacing``; rows per day are counted in the journal."""
    p = settings.pacing
    return Pacer(
        max_rows_per_s=p.max_rows_per_s,
        window=parse_window(p.window) if p.window else None,
        timezone=resolve_timezone(p.timezone),
        exit_outside_window=p.exit_outside_window,
        daily_rows=p.daily_rows,
        max_backlog_rows=p.max_backlog_rows,
        ledger=journal,
        clock=clock,
    )


def _stop_message(exc: UploaderError, settings: Settings) -> str:
    if isinstance(exc, TransportError):
        return f"cannot reach {settings.target.base_url}: {exc}"
    return str(exc)


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
    clock: Clock | None = None,
    install_signals: bool = True,
    files: Sequence[Path] | None = None,
    metrics: RunMetrics | None = None,
) -> RunOutcome:
    """Chunk, submit and track one input to completion (or to a resumable stop).

    With ``files``, the batch files already exist (``uploader submit``): they
    are registered in the journal as they are, and no chunker runs. Metrics
    are served or written as ``settings.run`` says, unless the caller passes
    its own ``metrics`` (then the caller closes them).
    """
    started = time.time()
    batch_files = [describe_batch_file(i, f) for i, f in enumerate(files or (), 1)]
    owned = metrics is None and (
        settings.run.metrics_port is not None or settings.run.metrics_textfile is not None
    )
    if owned:
        metrics = RunMetrics(
            job_id, port=settings.run.metrics_port, textfile=settings.run.metrics_textfile
        )
    try:
        return await _run_locked(
            input_name,
            settings,
            work_dir,
            job_id=job_id,
            started=started,
            progress=progress,
            sleep=sleep,
            clock=clock,
            install_signals=install_signals,
            files=files,
            batch_files=batch_files,
            metrics=metrics,
        )
    finally:
        if owned and metrics is not None:
            metrics.close()


async def _run_locked(
    input_name: str,
    settings: Settings,
    work_dir: Path,
    *,
    job_id: str,
    started: float,
    progress: Any,
    sleep: Sleep | None,
    clock: Clock | None,
    install_signals: bool,
    files: Sequence[Path] | None,
    batch_files: list[BatchFile],
    metrics: RunMetrics | None,
) -> RunOutcome:
    with locked(work_dir), Journal(work_dir / "journal.sqlite") as journal:
        resuming = journal.start_run(
            fingerprint(input_name, settings, files), fresh=settings.run.fresh
        )
        _prepare(
            journal,
            work_dir,
            job_id,
            started,
            resuming=resuming,
            batch_files=batch_files if files is not None else None,
        )
        error: UploaderError | None = None
        monitor = Monitor(journal, metrics=metrics, started_s=started)
        try:
            async with TargetClient(
                settings.target,
                connections=settings.submit.concurrency + settings.status.max_inflight,
                timeout_s=settings.submit.request_timeout_s,
            ) as client:
                run = _Run(settings, journal, client, sleep=sleep, clock=clock)
                monitor.attach(lambda: _snapshot(run), run.submitter.stats.latencies_s)
                async with monitor.running():
                    status = await _drive(run, input_name, work_dir, progress, install_signals)
                error = run.fatal
                latencies = tuple(run.submitter.stats.latencies_s)
                pacing = _pacing_summary(run)
        except (InputError, ConfigError) as exc:
            status, error, latencies, pacing = "error", exc, (), None
        outcome = write_outputs(
            journal, settings, work_dir, job_id, started, status, error, pacing=pacing
        )
        monitor.finish(outcome.exit_code)
        return dataclasses.replace(outcome, submit_latencies_s=latencies)


def _prepare(
    journal: Journal,
    work_dir: Path,
    job_id: str,
    started: float,
    *,
    resuming: bool,
    batch_files: Sequence[BatchFile] | None,
) -> None:
    """A new run starts clean; ``uploader submit`` registers its files up front."""
    # How the last run ended no longer holds once this one runs (it may be killed).
    journal.set_meta("last_outcome", None)
    journal.set_meta("last_exit", None)
    if resuming:
        log.info(
            "resuming run %s from %s",
            job_id,
            work_dir,
            extra={"event": "resuming", "job_id": job_id},
        )
    else:
        journal.set_meta("job_id", job_id)
        journal.set_meta("started_at", started)
        if batch_files is None:
            clear_outputs(work_dir)
    if batch_files is not None:
        for batch in batch_files:
            journal.add_batch(batch)
        journal.set_meta("chunk", {"rows_read": sum(b.rows for b in batch_files)})
        journal.set_meta("chunk_done", True)


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
            loop.add_signal_handler(sig, run.request_stop)
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
    run.chunker = chunker
    summary = await asyncio.to_thread(chunker.run)
    if run.chunk_stop.is_set():
        return
    for warning in summary.warnings:
        log.warning("%s: %s", input_name, warning)
    journal.set_meta(
        "chunk",
        {
            "rows_read": summary.rows_read,
            "rejected": dict(summary.rejected),
            "header": list(summary.header),
            "rows_other_shards": summary.rows_other_shards,
            "shard": run.settings.input.shard,
            "short_rows": summary.short_rows,
            "warnings": list(summary.warnings),
        },
    )
    journal.set_meta("chunk_done", True)
    run.chunk_done.set()
    run.changed.set()


def _pacing_summary(run: _Run) -> dict[str, Any] | None:
    """Pacing as the report shows it (None when no limit is set); kept for `status`."""
    if not run.pacer.active:
        run.journal.set_meta("pacing", None)
        return None
    summary = run.pacer.describe()
    stop = run.paused
    summary["stopped"] = str(stop) if stop else None
    summary["resume_after"] = _iso(stop.resume_at) if stop and stop.resume_at else None
    run.journal.set_meta("pacing", summary)
    return summary


def _iso(epoch_s: float) -> str:
    return datetime.fromtimestamp(epoch_s, UTC).isoformat(timespec="seconds")


def _snapshot(run: _Run) -> dict[str, Any]:
    """What the progress display shows; each key means one thing (see ``progress``)."""
    stats, limiter = run.submitter.stats, run.submitter.limiter
    chunker = run.chunker
    return {
        "input_bytes_read": chunker.input_bytes_read if chunker else None,
        "input_bytes_total": chunker.input_bytes_total if chunker else None,
        "input_rows_read": chunker.input_rows_read if chunker else None,
        "chunk_done": run.chunk_done.is_set(),
        "batches_known": run.known,
        "batches_final": run.known - len(run.open),
        "batches_sent": run.known - len(run.unsent),  # accepted or given up, resumed ones too
        "batches_failed": stats.batches_failed,
        "rows_known": run.rows_known,
        "rows_sent": stats.rows_sent,
        "rows_accepted": stats.rows_accepted,
        "open": len(run.open),
        "unsent": len(run.unsent),
        "following": run.poller.following,
        "limit": limiter.limit,
        "limit_max": limiter.max_limit,
        "in_flight": limiter.in_flight,
        "throttles": limiter.throttles,  # this run's 429 and 503 answers
        "throttled": run.throttled_before + limiter.throttles,  # as report.json counts them
        "waiting": run.pacer.waiting,
        "waiting_for": run.pacer.waiting_for,
        "last_progress_s": run.last_progress_s,
        "backlog_rows": run.pacer.backlog_rows,
    }
