"""The one place that knows the order of the stages of a run.

    source/encode/chunk ──(thread)──> submit queue ──> Submitter ──> Poller ──> report
                    │                                    │             │
                    └──────────────── journal (every step, before the next acts) ─┘

``run_pipeline`` resumes from the journal when one exists: complete and
failed batches are left alone, accepted ones are polled again, written ones
(and ones whose submit was in flight when the last run died) are sent, and
the chunker continues after the last batch it had recorded. Resume is
checked, not assumed: the chunker regenerates every recorded batch from the
input and each must match the sha256 the journal holds; a batch of the last
run is sent again only once its check passed, and the first difference stops
the run (exit 2, "pass --fresh"). Disk use is bounded: the chunker blocks
when ``batch.max_waiting`` files wait to be accepted. SIGINT/SIGTERM stop new
work, give requests on the wire a short grace, and end with the journal
intact (exit 3). An exception in any stage or callback ends the run the same
way within seconds, with one line saying what failed: a full or read-only
work dir (exit 2 before anything was sent, 3 after), a bug (exit 4).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from uploader.chunk import BatchFile, Chunker
from uploader.client import TargetClient
from uploader.errors import (
    AuthError,
    ConfigError,
    ErrorStreakError,
    InputError,
    NotFoundError,
    StorageError,
    TransportError,
    UnreadableStatusError,
    UnusableURLError,
    UploaderError,
    storage_error,
)
from uploader.journal import BatchRecord, Journal
from uploader.metrics import RunMetrics
from uploader.monitor import Monitor
from uploader.pacing import Clock, Pacer, PacingStop, parse_window, resolve_timezone
from uploader.poll import Poller
from uploader.report import EXIT_INTERNAL
from uploader.retry import Sleep
from uploader.settings import Settings
from uploader.sources import is_url, open_input
from uploader.sources.spool import SPOOL_NAME, Spool, discard_spool, keep_spool
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
        self.held: dict[int, SubmitJob] = {}  # batches of the last run, sent once checked
        self.verified_through = 0  # batches up to this seq match the input (see resume)
        self.recorded = journal.max_seq()  # batches the journal held when this run started
        self.verify_only = False  # chunking was done: the chunker only checks the input
        self.known = 0  # batches in the journal
        self.rows_known = 0  # rows in those batches
        self.chunker: Chunker | None = None  # while this run chunks: its input position
        # The report counts throttled requests over every run of the work dir; so does progress.
        self.throttled_before = journal.counters().get("throttled", 0)
        self.chunk_done = asyncio.Event()
        self.changed = asyncio.Event()
        self.stop_requested = asyncio.Event()
        self.chunk_stop = threading.Event()
        self.fatal: UploaderError | None = None  # stops the run, exit 2
        self.fatal_outcome = "error"  # how `fatal` is recorded (report's stopped_by)
        self.lost: str | None = None  # the server went away or kept failing mid-run, exit 3
        self.crashed: BaseException | None = None  # anything unexpected, in any stage
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
            client,
            journal,
            settings.status,
            on_final=self.final,
            on_stuck=self.stuck,
            on_stop_run=self.stop_following,
        )

    # -- chunker thread -> loop -------------------------------------------------

    def batch_written(self, batch: BatchFile) -> None:
        """Called in the chunker thread after each new batch file is closed."""
        if self.verify_only:
            raise InputError(
                f"the input changed since the last run: it now has more rows than the "
                f"{self.known} batches {self.journal.path} recorded; pass --fresh to "
                "start over with this input"
            )
        while not self.waiting.acquire(timeout=0.2):
            if self.chunk_stop.is_set():
                return  # not journaled: the resumed chunker writes it again
        self._call_soon(self._enqueue_new, batch)

    def batch_regenerated(self, batch: BatchFile) -> None:
        """Chunker thread, on resume: a recorded batch, made again from the input, must match."""
        record = self.journal.batch(batch.seq)
        if record.sha256 != batch.sha256:
            raise InputError(_changed(record, self.journal))
        self._call_soon(self._verified, batch.seq)

    def _call_soon(
        self, callback: Callable[[BatchFile], None] | Callable[[int], None], arg: Any
    ) -> None:
        """Run ``callback(arg)`` on the loop; an exception there ends the run, never vanishes."""

        def guarded() -> None:
            try:
                callback(arg)
            except Exception as exc:
                self.crash(exc)

        self.loop.call_soon_threadsafe(guarded)

    def _verified(self, seq: int) -> None:
        """Batches up to ``seq`` match; once all recorded ones do, the held ones go out.

        Not one by one: a difference further on stops the run (exit 2), and
        then nothing of this run may have been sent.
        """
        if seq < self.recorded:
            return
        self.verified_through = max(self.verified_through, seq)
        for held in sorted(self.held):
            self.send(self.held.pop(held))

    def _enqueue_new(self, batch: BatchFile) -> None:
        # A batch handed over while the run is ending (a stop, or the end of a pacing
        # window or budget) is not journaled: the resumed chunker writes it again.
        if self.stop_requested.is_set() or self.chunk_stop.is_set():
            self.waiting.release()
            return
        self.journal.add_batch(batch)
        self.known += 1
        self.rows_known += batch.rows
        self.verified_through = batch.seq  # just written from this very input
        self.send(SubmitJob(batch.seq, batch.path, batch.rows, batch.bytes), hold=True)

    # -- stage callbacks --------------------------------------------------------

    def send(self, job: SubmitJob, *, hold: bool = False) -> None:
        """Queue a batch; ``hold``: the chunker already took its disk permit."""
        self.open.add(job.seq)
        self.unsent.add(job.seq)
        if job.seq > self.verified_through:
            # A batch of the last run: it goes out once the chunker has made it
            # again from this input and it matched (``_verified``).
            self.held[job.seq] = job
            return
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
        """A problem every submit would hit: stop the run, keep the batches.

        A bad token or a wrong client code is a configuration error (exit 2).
        A server that keeps failing (``submit.stop_after_errors``) is exit 3.
        So is a server we never reached; losing it once bodies went out is an
        interruption (exit 3): they may have been accepted, and the same
        command continues when the server is back.
        """
        if isinstance(exc, ErrorStreakError):
            if self.lost is None:
                log.error("stopping: %s", exc, extra={"event": "stopping", "error": str(exc)})
                self.lost = (
                    f"stopped: {exc}; the batches not accepted stay to be sent: run the same "
                    "command again to continue"
                )
        elif not isinstance(exc, TransportError) or not _anything_sent(self):
            if self.fatal is None:
                self.fatal = ConfigError(_stop_message(exc, self.settings))
        elif self.lost is None:
            log.error(
                "stopping: %s; run the same command again to continue",
                exc,
                extra={"event": "stopping", "error": str(exc)},
            )
            self.lost = (
                f"lost {self.settings.target.base_url} after batches went out: {exc}; they "
                "may have been accepted: run the same command again to continue"
            )
        self.request_stop()

    def stop_following(self, exc: UploaderError) -> None:
        """HTTP 401/403/404 on a status call, a status URL we refuse to call, or
        status answers that stayed unreadable (``Poller``).

        Every call would meet the same: stop now (exit 2) rather than idle
        until the status timeout. The batches stay accepted.
        """
        if self.fatal is None and isinstance(exc, UnreadableStatusError):
            self.fatal_outcome = "status_unreadable"
            self.fatal = ConfigError(
                f"status answers unreadable while following batches: {exc}; accepted batches "
                "stay accepted (not resent, not failed): run `uploader status "
                f"{self.journal.path.parent} --refresh` (or the same command) later to follow "
                "them, and check --base-url and any proxy between us and Target if it persists"
            )
        if self.fatal is None:
            what = "credentials refused" if isinstance(exc, AuthError) else "status calls refused"
            if isinstance(exc, UnusableURLError):
                what = "cannot call a status URL"
            self.fatal = ConfigError(
                f"{what} while following batches: {exc}; accepted batches stay accepted "
                "and the same command follows them again once this is fixed"
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
        # Only resends for `stuck` count against the budget; a resend after a
        # crash cut a submit short is not one.
        if record.stuck_resends < self.settings.status.resubmit_stuck:
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

    def crash(self, exc: BaseException) -> None:
        """An unexpected exception anywhere: stop at once, keep the first cause."""
        if self.crashed is None:
            self.crashed = exc
            log.debug("a stage of the run failed", exc_info=exc)
        self.request_stop()

    def watch(self, task: asyncio.Task[None]) -> None:
        """Done-callback of every stage task: a stage that dies ends the run."""
        if not task.cancelled() and task.exception() is not None:
            self.crash(task.exception())  # type: ignore[arg-type]

    # -- resume -----------------------------------------------------------------

    def resume(self) -> None:
        """Put every unfinished batch of an earlier run back where it belongs.

        Accepted batches are polled at once (nothing is sent). Batches to send
        are held until the chunker has regenerated them from the input and
        found them identical to the journal's record.
        """
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
            if state == BatchState.ACCEPTED:
                # Never sent again, even when its status URL cannot be called: following
                # it then stops the run (``stop_following``) and it stays accepted.
                self.open.add(record.seq)
                self.pacer.track(record.seq, record.rows)
                if self.settings.status.wait:
                    self.poller.follow(record.seq, record.status_url or "", delay=0.0)
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
        send_for_s=p.send_for_s,
        ledger=journal,
        clock=clock,
    )


def _anything_sent(run: _Run) -> bool:
    """Did any request body of this job reach the server (this run or an earlier one)?"""
    if run.submitter.stats.batches_accepted:
        return True
    try:
        return bool(run.journal.counters().get("submits")) or any(
            b.batch_id or b.outcome_unknown for b in run.journal.batches()
        )
    except UploaderError:  # the journal cannot be read: assume the worse
        return True


def _already_sent(run: _Run) -> str:
    """For an input error found part-way (a truncated file with --unique-ids): what went out."""
    try:
        sent = [b for b in run.journal.batches() if b.batch_id or b.outcome_unknown]
    except UploaderError:
        return ""
    if not sent:
        return ""
    return (
        f"; {len(sent)} batches ({sum(b.rows for b in sent):,} rows) had been sent before "
        f"this was found: they stay in the journal (`uploader status {run.journal.path.parent} "
        "--refresh` follows them)"
    )


def _changed(record: BatchRecord, journal: Journal) -> str:
    return (
        f"the input changed since the last run: batch {record.seq:06d} (input lines "
        f"{record.first_line}-{record.last_line}) is not the one recorded in {journal.path}; "
        "nothing was sent by this run; pass --fresh to start over with this input"
    )


def _stop_message(exc: UploaderError, settings: Settings) -> str:
    if isinstance(exc, TransportError):
        return f"cannot reach {settings.target.base_url}: {exc}"
    return str(exc)


def _job(record: BatchRecord) -> SubmitJob:
    return SubmitJob(record.seq, Path(record.file), record.rows, record.bytes)


def _classify(exc: BaseException, *, sent: bool) -> tuple[str, int]:
    """The one-line message and exit code of an exception that ended a run."""
    after = 3 if sent else 2
    disk = exc if isinstance(exc, StorageError) else storage_error(exc)
    if disk is not None:
        return str(disk), after
    if isinstance(exc, (InputError, ConfigError, AuthError, NotFoundError)):
        return str(exc), 2
    return (
        f"internal error: {type(exc).__name__}: {exc}; the journal is intact: run the same "
        "command again after fixing the cause (--debug shows the traceback)",
        EXIT_INTERNAL,
    )


def _ending(run: _Run, status: str) -> tuple[str | None, int]:
    """Why the run ended, when it was not a plain finish: (message, exit code)."""
    if run.crashed is not None:
        message, code = _classify(run.crashed, sent=_anything_sent(run))
        return message + (_already_sent(run) if code == 2 else ""), code
    if run.fatal is not None:
        return str(run.fatal), 2
    if run.lost is not None:
        return run.lost, 3
    unreadable = run.poller.unreadable
    if status == "timeout" and unreadable:
        seq = min(unreadable)
        return (
            f"the status of {len(unreadable)} accepted batches could not be read until the "
            f"status timeout (batch {seq:06d}: {unreadable[seq]}); they stay accepted: run "
            "the same command again to follow them",
            3,
        )
    return None, 2


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
    stdin: Spool | None = None,
) -> RunOutcome:
    """Chunk, submit and track one input to completion (or to a resumable stop).

    With ``files``, the batch files already exist (``uploader submit``): they
    are registered in the journal as they are, and no chunker runs. With
    ``stdin``, ``input_name`` is ``-`` and the input is that spool of standard
    input: it is kept in the work dir as ``stdin.csv`` and read from there.
    Metrics are served or written as ``settings.run`` says, unless the caller
    passes its own ``metrics`` (then the caller closes them).
    """
    started = time.time()
    owned = metrics is None and (
        settings.run.metrics_port is not None or settings.run.metrics_textfile is not None
    )
    try:
        # The input must open before anything is created: a mistyped path leaves nothing.
        batch_files = [describe_batch_file(i, f) for i, f in enumerate(files or (), 1)]
        if files is None and stdin is None and input_name != "-":
            open_input(input_name, storage_options=settings.input.storage_options).close()
        source = fingerprint(
            input_name, settings, files, stdin=(stdin.sha256, stdin.bytes) if stdin else None
        )
        if owned:
            metrics = RunMetrics(
                job_id, port=settings.run.metrics_port, textfile=settings.run.metrics_textfile
            )
        with locked(work_dir), Journal(work_dir / "journal.sqlite") as journal:
            resuming = journal.start_run(source, fresh=settings.run.fresh)
            if stdin is not None:
                input_name = str(keep_spool(stdin, work_dir, resuming=resuming))
            _prepare(
                journal,
                work_dir,
                job_id,
                started,
                resuming=resuming,
                batch_files=batch_files if files is not None else None,
            )
            return await _run(
                journal,
                input_name,
                settings,
                work_dir,
                job_id,
                started,
                progress=progress,
                sleep=sleep,
                clock=clock,
                install_signals=install_signals,
                checked=files is not None,
                metrics=metrics,
            )
    finally:
        if stdin is not None:
            discard_spool(stdin)
        if owned and metrics is not None:
            metrics.close()


async def _run(
    journal: Journal,
    input_name: str,
    settings: Settings,
    work_dir: Path,
    job_id: str,
    started: float,
    *,
    progress: Any,
    sleep: Sleep | None,
    clock: Clock | None,
    install_signals: bool,
    checked: bool,
    metrics: RunMetrics | None,
) -> RunOutcome:
    monitor = Monitor(journal, metrics=metrics, started_s=started)
    message: str | None = None
    exit_code = 2
    run: _Run | None = None
    status, latencies = "error", tuple[float, ...]()
    pacing: dict[str, Any] | None = None
    try:
        connections = settings.submit.concurrency + settings.status.max_inflight
        async with TargetClient.for_settings(settings, connections=connections) as client:
            run = _Run(settings, journal, client, sleep=sleep, clock=clock)
            monitor.attach(lambda: _snapshot(run), run.submitter.stats.latencies_s)
            try:
                async with monitor.running():
                    status = await _drive(
                        run, input_name, work_dir, progress, install_signals, checked
                    )
            finally:
                latencies = tuple(run.submitter.stats.latencies_s)
            try:
                pacing = _pacing_summary(run)
                _limit_summary(run)
            except UploaderError as exc:  # a full disk, most likely: said below
                run.crash(exc)
    except Exception as exc:  # before the stages ran, or while they were set up
        if run is None:
            message, exit_code = _classify(exc, sent=False)
        else:
            run.crash(exc)
    if run is not None:
        message, exit_code = _ending(run, status)
        if message is not None and run.crashed is not None and exit_code == EXIT_INTERNAL:
            log.debug("internal error", exc_info=run.crashed)
    try:
        outcome = write_outputs(
            journal,
            settings,
            work_dir,
            job_id,
            started,
            status,
            message,
            error_exit=exit_code,
            pacing=pacing,
        )
        try:
            monitor.finish(outcome.exit_code)
        except OSError as exc:  # the metrics textfile: the run's outcome still stands
            log.error("%s", storage_error(exc) or exc)
    finally:
        if install_signals and run is not None:
            # Only now: a second Ctrl-C while the run winds down or writes its report
            # asks again for the same stop instead of breaking it off half-way.
            for sig in (signal.SIGINT, signal.SIGTERM):
                run.loop.remove_signal_handler(sig)
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
    journal.set_meta("run_started_at", started)  # this run's; `started_at` is the job's
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
    checked: bool,
) -> str:
    settings, journal, loop = run.settings, run.journal, run.loop
    deadline = loop.time() + settings.status.timeout_s
    run.resume()
    tasks = [
        asyncio.create_task(run.submitter.run(), name="submitter"),
        asyncio.create_task(run.poller.run(), name="poller"),
    ]
    chunk_task = asyncio.create_task(_chunk(run, input_name, work_dir, checked), name="chunker")
    for task in (*tasks, chunk_task):
        task.add_done_callback(run.watch)
    if install_signals:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, run.request_stop)
    outcome = "stopped"
    try:
        async with progress(lambda: _snapshot(run)) if progress else contextlib.nullcontext():
            outcome = await run.wait_until_finished(deadline)
    finally:
        run.chunk_stop.set()
        run.submitter.stop()
        run.poller.close()
        if not outcome_is_clean(run):
            tasks[1].cancel()  # stop polling at once; submits on the wire get a grace
            await asyncio.wait(tasks[:1], timeout=STOP_GRACE_S)
            tasks[0].cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # The chunker thread sees `chunk_stop` between blocks of rows: wait for it, so
        # that no thread of this run still writes in the work dir once its lock is free.
        await asyncio.wait({chunk_task}, timeout=STOP_GRACE_S)
        chunk_task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await chunk_task
    if run.crashed is not None or run.fatal is not None or run.lost is not None:
        outcome = "error"  # not a Ctrl-C: the stop the stages asked for themselves
        if run.crashed is None and run.fatal is not None:
            outcome = run.fatal_outcome
    try:
        journal.set_meta("last_outcome", outcome)
    except StorageError as exc:
        run.crash(exc)
    return outcome


def outcome_is_clean(run: _Run) -> bool:
    return run.finished() and not run.stop_requested.is_set()


async def _chunk(run: _Run, input_name: str, work_dir: Path, checked: bool) -> None:
    """Run the chunker in a worker thread so the event loop keeps its timing.

    On resume it regenerates the batches the journal holds and checks each
    (``_Run.batch_regenerated``) before writing new ones; when the last run
    had finished chunking, it only checks, and only if batches wait to be sent
    or the input file was modified since (a same-size rewrite that keeps the
    first MiB passes the fingerprint; a rerun must not call it complete).
    """
    journal = run.journal
    recorded = journal.max_seq()
    mtime_ns = None if checked else _input_mtime_ns(input_name, work_dir)
    touched = mtime_ns is not None and journal.get_meta("input_mtime_ns", mtime_ns) != mtime_ns
    if journal.get_meta("chunk_done") and (checked or not (run.held or touched)):
        # Finished by an earlier run, or `uploader submit` (files checked by hash).
        run._verified(recorded)
        run.chunk_done.set()
        run.changed.set()
        return
    run.verify_only = bool(journal.get_meta("chunk_done"))
    chunker = Chunker(
        input_name,
        work_dir,
        run.settings.input,
        run.settings.batch,
        on_batch=run.batch_written,
        on_regenerated=run.batch_regenerated,
        skip_through_seq=recorded,
        stop=run.chunk_stop,
    )
    run.chunker = chunker
    summary = await asyncio.to_thread(chunker.run)
    if run.chunk_stop.is_set():
        return
    if summary.batches < recorded:
        raise InputError(
            f"the input changed since the last run: it now ends after batch {summary.batches:06d}"
            f" but {journal.path} recorded {recorded} batches; nothing was sent by this run; "
            "pass --fresh "
            "to start over with this input"
        )
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
            "folded": summary.rows_folded,
            "repeated_ids": summary.repeats.as_dict() if summary.repeats else None,
        },
    )
    journal.set_meta("input_mtime_ns", mtime_ns)  # as it was before this whole read
    journal.set_meta("chunk_done", True)
    run.chunk_done.set()
    run.changed.set()


def _input_mtime_ns(input_name: str, work_dir: Path) -> int | None:
    """When a local input file was last modified; None for an object URL or
    standard input, whose fingerprint already holds their identity whole (ETag
    or version id, sha256 of the spool)."""
    if is_url(input_name) or Path(input_name) == work_dir / SPOOL_NAME:
        return None
    try:
        return os.stat(input_name).st_mtime_ns
    except OSError:
        return None


def _pacing_summary(run: _Run) -> dict[str, Any] | None:
    """Pacing as the report shows it (None when no limit is set); kept for `status`."""
    if not run.pacer.active:
        run.journal.set_meta("pacing", None)
        return None
    summary = run.pacer.describe()
    stop = run.paused
    summary["stopped"] = str(stop) if stop else None
    summary["stopped_rule"] = stop.rule if stop else None  # window, daily or time
    summary["resume_after"] = _iso(stop.resume_at) if stop and stop.resume_at else None
    run.journal.set_meta("pacing", summary)
    return summary


def _limit_summary(run: _Run) -> None:
    """The adaptive limit as the report shows it (``submit_limit``), over every run of the job.

    Kept in the journal, so that a resumed run and ``uploader status`` add to it.
    """
    limiter, journal = run.submitter.limiter, run.journal
    earlier = journal.get_meta("submit_limit") or {}
    lows = [low for low in (earlier.get("lowest"), limiter.lowest) if low is not None]
    journal.set_meta(
        "submit_limit",
        {
            "concurrency": limiter.max_limit,
            "adaptive": run.settings.submit.adaptive,
            "peak_in_flight": max(int(earlier.get("peak_in_flight", 0)), limiter.peak_in_flight),
            "lowered": int(earlier.get("lowered", 0)) + limiter.decreases,
            "lowest": min(lows) if lows else None,
        },
    )


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
        "batches_accepted": len(stats.accepted_seqs),  # once each, resumed ones too
        "open": len(run.open),
        "unsent": len(run.unsent),
        "following": run.poller.following,
        "limit": limiter.limit,
        "limit_max": limiter.max_limit,
        "in_flight": limiter.in_flight,
        "limit_waiting": limiter.waiting,  # submits held back by the limit now
        "limit_lowered": limiter.decreases,  # times throttling lowered it, this run
        "throttles": limiter.throttles,  # this run's 429 and 503 answers
        "throttled": run.throttled_before + limiter.throttles,  # as report.json counts them
        "waiting": run.pacer.waiting,
        "waiting_for": run.pacer.waiting_for,
        "last_progress_s": run.last_progress_s,
        "backlog_rows": run.pacer.backlog_rows,
    }
