"""Submit workers: take batch files from a queue and get each one accepted.

Sits between the chunker (which fills the queue) and the poller (which
follows accepted batches). Every step is written to the journal *before* the
next one acts on it: ``submitting`` before the request goes out, ``accepted``
with the batch id before the poller hears of it, ``failed`` with the reason
when we give up. A worker holds a slot of the shared ``AdaptiveLimiter`` only
while its request is on the wire, never while it sleeps in backoff.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tenacity import RetryCallState

from uploader.client import TargetClient
from uploader.errors import (
    AuthError,
    ErrorStreakError,
    NotFoundError,
    OutcomeUnknownError,
    TransportError,
    UploaderError,
)
from uploader.journal import Journal
from uploader.outages import OutageNotices
from uploader.pacing import Pacer, PacingStop
from uploader.retry import AdaptiveLimiter, Sleep, Slot, longest_backoff, retry_policy
from uploader.settings import SubmitSettings

__all__ = ["SubmitJob", "Submitter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SubmitJob:
    """One batch file to send (again)."""

    seq: int
    path: Path
    rows: int
    bytes: int


@dataclass
class SubmitStats:
    """Live figures for progress display and the benchmark (the journal has the truth).

    Rows are counted once per batch however often it is sent (resends after a
    dropped connection or a stuck batch): ``rows_sent`` are the rows of batches
    whose body reached a server, ``rows_accepted`` those of batches the server
    accepted. The pipeline seeds both with the batches of an earlier run.
    """

    rows_accepted: int = 0
    bytes_accepted: int = 0
    rows_sent: int = 0
    batches_accepted: int = 0  # accept answers, resends included
    batches_failed: int = 0
    errors: int = 0  # submit attempts that failed with an error other than throttling
    error_streak: int = 0  # of those, how many in a row since the last success
    latencies_s: list[float] = field(default_factory=list)
    sent_seqs: set[int] = field(default_factory=set)
    accepted_seqs: set[int] = field(default_factory=set)

    def mark_sent(self, seq: int, rows: int) -> None:
        if seq not in self.sent_seqs:
            self.sent_seqs.add(seq)
            self.rows_sent += rows

    def mark_accepted(self, seq: int, rows: int, size_bytes: int) -> None:
        self.mark_sent(seq, rows)
        if seq not in self.accepted_seqs:
            self.accepted_seqs.add(seq)
            self.rows_accepted += rows
            self.bytes_accepted += size_bytes


class Submitter:
    """Runs ``concurrency`` workers over a bounded queue of ``SubmitJob``."""

    def __init__(
        self,
        client: TargetClient,
        journal: Journal,
        settings: SubmitSettings,
        *,
        on_accepted: Callable[[int, str], None],
        on_failed: Callable[[int], None],
        on_stop_run: Callable[[UploaderError], None] | None = None,
        limiter: AdaptiveLimiter | None = None,
        sleep: Sleep | None = None,
        pacer: Pacer | None = None,
        on_paused: Callable[[PacingStop], None] | None = None,
    ) -> None:
        self._client = client
        self._journal = journal
        self._settings = settings
        self._on_accepted = on_accepted
        self._on_failed = on_failed
        self._on_stop_run = on_stop_run
        self._sleep = sleep
        self._pacer = pacer
        self._on_paused = on_paused
        # not adaptive: the cap starts at, and never leaves, the configured concurrency
        level = None if settings.adaptive else settings.concurrency
        self.limiter = limiter or AdaptiveLimiter(
            settings.concurrency, initial=level, min_limit=level or 1
        )
        self.queue: asyncio.Queue[SubmitJob | None] = asyncio.Queue()
        self.stats = SubmitStats()
        self.active = 0  # batches admitted and not yet accepted or given up
        self._stopping = False
        self.outages = OutageNotices(log, _retry_plan(settings))

    async def run(self) -> None:
        """Work until a ``None`` per worker arrives on the queue (see ``close``)."""
        workers = [
            asyncio.create_task(self._worker(), name=f"submit-{i}")
            for i in range(self._settings.concurrency)
        ]
        try:
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            # Let each finish its cleanup (close its batch file) before this returns.
            await asyncio.gather(*workers, return_exceptions=True)

    def put(self, job: SubmitJob) -> None:
        self.queue.put_nowait(job)

    def close(self) -> None:
        """No more jobs: each worker exits once the queue is drained."""
        for _ in range(self._settings.concurrency):
            self.queue.put_nowait(None)

    def stop(self) -> None:
        """Take no new jobs; requests already on the wire may finish."""
        self._stopping = True
        self.close()

    async def _worker(self) -> None:
        while True:
            job = await self.queue.get()
            if job is None or self._stopping:
                return
            await self.submit_one(job)

    async def submit_one(self, job: SubmitJob) -> None:
        """Send one batch until accepted or given up; record the outcome."""
        if self._pacer is not None:
            try:
                await self._pacer.admit(job.seq, job.rows)
            except PacingStop as exc:
                # Not begun: the batch stays written, and the next run sends it.
                self._stopping = True
                if self._on_paused is None:
                    raise
                self._on_paused(exc)
                return
            if self._stopping:
                return
        self.active += 1
        try:
            await self._submit_admitted(job)
        finally:
            self.active -= 1

    async def _submit_admitted(self, job: SubmitJob) -> None:
        journal = self._journal
        journal.begin_submit(job.seq)
        retrying = retry_policy(
            max_attempts=self._settings.max_attempts,
            initial_s=self._settings.backoff_initial_s,
            max_s=self._settings.backoff_max_s,
            sleep=self._sleep,
            before_sleep=functools.partial(self._count_retry, job),
        )
        loop = asyncio.get_running_loop()
        maybe_applied = False  # an attempt whose fate is unknown: the server may have it
        try:
            async for attempt in retrying:
                with attempt:
                    async with self.limiter.slot() as slot:
                        started = loop.time()
                        try:
                            result = await self._client.submit(job.path)
                        except UploaderError as exc:
                            last = attempt.retry_state.attempt_number >= self._settings.max_attempts
                            self._record_attempt(job, slot, exc, last=last)
                            maybe_applied |= isinstance(exc, OutcomeUnknownError)
                            self._check_streak(exc)
                            raise
                        self.outages.succeeded(_SUBMIT_HOST)
                        journal.record_attempt(job.seq, None)
                        self._count_sent(job)
                        slot.succeeded()
                        self.stats.error_streak = 0
                        self.stats.latencies_s.append(loop.time() - started)
        except (AuthError, NotFoundError, TransportError, ErrorStreakError) as exc:
            if self._on_stop_run is None:
                raise
            # Every batch would meet the same problem: a bad token, a wrong client
            # code, a server we cannot reach, or one that keeps failing (the
            # ``stop_after_errors`` streak). That says nothing about this
            # batch's rows, so it stays to be sent by the next run, and this run stops.
            # Refused or never delivered, it was not applied: sending it again later
            # is not a resend (nor a possible duplicate) unless an attempt may have landed.
            journal.requeue(job.seq, sent=maybe_applied)
            self._stopping = True  # this worker and the others take no further batch
            self._on_stop_run(exc)
            return
        except UploaderError as exc:
            journal.record_failed(job.seq, f"{type(exc).__name__}: {exc}")
            self.stats.batches_failed += 1
            log.warning(
                "batch %06d failed: %s",
                job.seq,
                exc,
                extra={"event": "batch_failed", "batch": job.seq, "error": str(exc)},
            )
            self._on_failed(job.seq)
            return
        journal.record_accepted(job.seq, result.batch_id or None, result.status_url)
        named = result.batch_id or "(no batch id)"
        log.info("batch %06d accepted as %s (%d rows)", job.seq, named, job.rows)
        self.stats.mark_accepted(job.seq, job.rows, job.bytes)
        self.stats.batches_accepted += 1
        self._on_accepted(job.seq, result.status_url)

    def _record_attempt(
        self, job: SubmitJob, slot: Slot, exc: UploaderError, *, last: bool
    ) -> None:
        if isinstance(exc, TransportError):
            if not last:  # the last attempt of a batch is retried no more: its error says it
                self.outages.failed(_SUBMIT_HOST, exc)
        else:  # an answer, if not the one hoped for: the server is there
            self.outages.succeeded(_SUBMIT_HOST)
        unknown = isinstance(exc, OutcomeUnknownError)
        self._journal.record_attempt(
            job.seq, f"{type(exc).__name__}: {exc}", outcome_unknown=unknown
        )
        if unknown or not isinstance(exc, TransportError):
            self._count_sent(job)  # the request reached the server
        if unknown:
            self._journal.bump("outcome_unknown")
        if self.limiter.observe(exc):  # 429, and 503: both ask the whole pool to slow down
            self._journal.bump("throttled")
            slot.throttled()
        else:
            self.stats.errors += 1
            self.stats.error_streak += 1

    def _check_streak(self, exc: UploaderError) -> None:
        """Raise ``ErrorStreakError`` once ``stop_after_errors`` attempts in a row failed."""
        limit = self._settings.stop_after_errors
        if limit is not None and self.stats.error_streak >= limit:
            raise ErrorStreakError(
                f"{self.stats.error_streak} submit attempts in a row failed "
                f"(submit.stop_after_errors = {limit}; the last: {type(exc).__name__}: {exc})"
            ) from exc

    def _count_sent(self, job: SubmitJob) -> None:
        """A submit request (and its body) that reached the server."""
        self.stats.mark_sent(job.seq, job.rows)
        with self._journal.transaction():
            self._journal.bump("submits")
            self._journal.bump("bytes_sent", job.bytes)

    async def _count_retry(self, job: SubmitJob, state: RetryCallState) -> None:
        self._journal.bump("retries")
        exc = state.outcome.exception() if state.outcome is not None else None
        wait_s = state.next_action.sleep if state.next_action is not None else 0.0
        log.info(
            "batch %06d: attempt %d failed (%s); retrying in %.2f s",
            job.seq,
            state.attempt_number,
            f"{type(exc).__name__}: {exc}" if exc is not None else "no answer",
            wait_s,
            extra={
                "event": "retry",
                "batch": job.seq,
                "attempt": state.attempt_number,
                "wait_s": round(wait_s, 3),
                "error": f"{type(exc).__name__}: {exc}" if exc is not None else None,
            },
        )


_SUBMIT_HOST = "submit"  # every submit of a run goes to the one host of its base URL


def _retry_plan(settings: SubmitSettings) -> str:
    """What a submit failing at the transport level goes through, for its warning line."""
    waits = longest_backoff(
        settings.max_attempts, settings.backoff_initial_s, settings.backoff_max_s
    )
    return (
        f"retrying each batch up to {settings.max_attempts} attempts (backoff waits at most "
        f"{waits:g} s in all), then the run stops and keeps the batch for the next run; "
        "-v logs each attempt"
    )
