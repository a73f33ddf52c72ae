"""The status poller: follows every accepted batch until Target says it is final.

One task owns a heap of (due time, batch) and wakes for the earliest; each
batch is asked again when the server's own progress says it should be done
(``consumedCount`` moving: remaining rows / observed rate), otherwise after a
quarter of its age; always between ``poll_initial_s`` and ``poll_max_s``,
with jitter so batches accepted together spread out. When a batch completes,
the oldest few still followed are asked soon (Target tends to work through
batches in order, so the next one has likely started), and at most
``max_inflight`` status calls run at once, so thousands of batches do not
flood the server. A failing status call is retried later; it never loses a
batch. A throttled status call (HTTP 429, or 503 with ``Retry-After``) holds
back every status call to that host for the time the server asked (at most
``poll_max_s``), not only the one batch's. Results go to the journal first,
then to the pipeline's callbacks.

A status call we cannot read (a redirect, an HTML maintenance page, an
unknown status word, an answer about another batch) never fails a batch
Target accepted: the first is one warning line, the error is kept in
``unreadable`` for the report, and the batch is asked again; once
``status.max_unreadable`` answers in a row, over at least
``status.unreadable_for_s``, were unreadable, ``on_stop_run`` stops the run
(a readable answer starts the count again). A refused token or an unknown client (HTTP 401, 403,
404), or a status URL we refuse to call, would meet every call the same way:
``on_stop_run`` stops the run and the batches stay accepted for the next run
to follow. Any other exception in
a status task ends ``run`` with it, so the pipeline stops at once instead of
idling.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from yarl import URL

from uploader.client import BatchStatus, TargetClient
from uploader.errors import (
    AuthError,
    NotFoundError,
    PermanentError,
    ProtocolError,
    RetryableError,
    ThrottledError,
    TransportError,
    UnreadableStatusError,
    UnusableURLError,
    UploaderError,
    WrongBatchError,
)
from uploader.journal import Journal
from uploader.outages import OutageNotices
from uploader.settings import StatusSettings
from uploader.states import RemoteStatus

__all__ = ["Poller", "next_interval", "record_status"]

log = logging.getLogger(__name__)


@dataclass(order=True)
class _Due:
    at: float
    seq: int
    url: str = field(compare=False)
    since: float = field(compare=False)  # when we started following it
    progress: tuple[float, int] | None = field(default=None, compare=False)  # (when, consumed)
    unreadable: int = field(default=0, compare=False)  # unreadable answers in a row
    unreadable_since: float = field(default=0.0, compare=False)  # loop time of the first


# After a batch completes, this many of the oldest followed batches are asked soon.
NUDGE_OLDEST = 4


def next_interval(
    age_s: float,
    settings: StatusSettings,
    *,
    remaining_rows: int | None = None,
    rows_per_s: float | None = None,
) -> float:
    """Seconds until the next status call of a batch followed for ``age_s`` seconds.

    With the server's progress (rows left, rows per second seen between two
    calls), ask when it should be done; without, after a quarter of its age.
    """
    wanted = age_s / 4
    if remaining_rows is not None:
        # Started but no rate yet: ask again soon to measure one.
        wanted = remaining_rows / rows_per_s if rows_per_s else 0.0
    return min(settings.poll_max_s, max(settings.poll_initial_s, wanted))


class Poller:
    """Follows batches by their status URL; calls ``on_final`` / ``on_stuck`` once each."""

    def __init__(
        self,
        client: TargetClient,
        journal: Journal,
        settings: StatusSettings,
        *,
        on_final: Callable[[int], None],
        on_stuck: Callable[[int], None],
        on_stop_run: Callable[[UploaderError], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self._client = client
        self._journal = journal
        self._settings = settings
        self._on_final = on_final
        self._on_stuck = on_stuck
        self._on_stop_run = on_stop_run
        self.unreadable: dict[int, str] = {}  # seq -> why its last status call failed
        self._warned: set[int] = set()  # batches whose unreadable answer was reported
        self._crashed: BaseException | None = None
        self._rng = rng or random.Random()
        self._heap: list[_Due] = []
        self._wake = asyncio.Event()
        self._calls = asyncio.Semaphore(settings.max_inflight)
        self._active: set[asyncio.Task[None]] = set()
        self._held: dict[str, float] = {}  # host:port -> loop time before which we do not call
        self._closed = False
        self.outages = OutageNotices(log, _retry_plan(settings))

    @property
    def following(self) -> int:
        """Batches accepted and not yet final."""
        return len(self._heap) + len(self._active)

    def follow(self, seq: int, url: str, *, delay: float | None = None) -> None:
        first = self._settings.poll_initial_s if delay is None else delay
        loop = asyncio.get_running_loop()
        heapq.heappush(self._heap, _Due(loop.time() + first, seq, url, loop.time()))
        self._wake.set()

    def close(self) -> None:
        """No more batches will be followed; ``run`` returns when these are final."""
        self._closed = True
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._heap or self._active or not self._closed:
                if self._crashed is not None:
                    raise self._crashed
                if not self._heap:
                    await self._wait(None)
                    continue
                delay = self._heap[0].at - loop.time()
                if delay > 0:
                    await self._wait(delay)
                    continue
                held = self._held_until(self._heap[0].url)
                if held > loop.time():
                    due = heapq.heappop(self._heap)
                    due.at = held
                    heapq.heappush(self._heap, due)
                    continue
                await self._calls.acquire()
                due = heapq.heappop(self._heap)
                task = asyncio.create_task(self._check(due), name=f"status-{due.seq}")
                self._active.add(task)
                task.add_done_callback(self._finished)
        finally:
            for task in list(self._active):
                task.cancel()

    async def _wait(self, delay: float | None) -> None:
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel
        # that lands as the event fires, and the poller would never stop.
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await self._wake.wait()

    def _finished(self, task: asyncio.Task[None]) -> None:
        self._active.discard(task)
        self._calls.release()
        self._wake.set()
        if not task.cancelled() and task.exception() is not None and self._crashed is None:
            self._crashed = task.exception()  # raised by run(): the run must not idle

    async def _check(self, due: _Due) -> None:
        journal = self._journal
        try:
            # Details on every call: the counts show progress, and the final call
            # already carries the final counts and per-profile errors.
            status = await self._ask(due.url)
            journal.bump("status_polls")
        except ThrottledError as exc:
            journal.bump("status_throttled")
            log.info("status of batch %06d: %s; holding back calls to that host", due.seq, exc)
            self._hold(due, exc.retry_after)
            return
        except RetryableError as exc:
            journal.bump("status_errors")
            self.unreadable[due.seq] = f"{type(exc).__name__}: {exc}"
            log.info(
                "status of batch %06d: %s; will ask again",
                due.seq,
                exc,
                extra={"event": "status_retry", "batch": due.seq, "error": str(exc)},
            )
            self._again(due)
            return
        except (AuthError, NotFoundError, UnusableURLError) as exc:
            if not isinstance(exc, UnusableURLError):  # that one was never called
                journal.bump("status_errors")
            if self._on_stop_run is None:
                raise
            self.unreadable[due.seq] = f"{type(exc).__name__}: {exc}"
            heapq.heappush(self._heap, due)  # still accepted: the next run follows it
            self._on_stop_run(exc)
            return
        except PermanentError as exc:
            # We could not read the answer; Target may well have the batch. Never
            # fail it for this: ask again, and stop the run (the batch still
            # accepted) once its answers stay unreadable (``_unreadable``).
            journal.bump("status_errors")
            if isinstance(exc, WrongBatchError):
                journal.bump("status_wrong_batch")
            self.unreadable[due.seq] = f"{type(exc).__name__}: {exc}"
            stop = self._unreadable(due, exc)
            if stop is None:
                self._again(due)
                return
            if self._on_stop_run is None:
                raise stop from exc
            heapq.heappush(self._heap, due)  # still accepted: a later run follows it
            self._on_stop_run(stop)
            return
        except UploaderError:  # pragma: no cover - the tree has only the two branches
            raise
        self.unreadable.pop(due.seq, None)
        due.unreadable = 0  # a readable answer ends the streak
        if status.status == RemoteStatus.INCOMPLETE:
            self._again(due, status)
            return
        await record_status(journal, due.seq, status, redact=self._client.redact)
        if status.status == RemoteStatus.STUCK:
            self._on_stuck(due.seq)
        else:
            log.info(
                "batch %06d complete: %s successful, %s failed, %s not found",
                due.seq,
                status.successful,
                status.failed,
                status.not_found,
            )
            self._nudge_oldest()
            self._on_final(due.seq)

    def _unreadable(self, due: _Due, exc: PermanentError) -> UnreadableStatusError | None:
        """Count an unreadable answer; the error that stops the run once they persist.

        The first of a batch is one warning line (its HTTP status and the
        problem, never the body). ``status.max_unreadable`` in a row, the first
        at least ``status.unreadable_for_s`` ago, stop the run: asking on until
        ``--status-timeout`` would leave a night's load pending without a word.
        """
        now = asyncio.get_running_loop().time()
        if due.unreadable == 0:
            due.unreadable_since = now
        due.unreadable += 1
        what = _what(exc)
        settings = self._settings
        limit = settings.max_unreadable
        if due.seq not in self._warned:
            self._warned.add(due.seq)
            rule = (
                f"the run stops if {limit} answers in a row over "
                f"{settings.unreadable_for_s:g} s are unreadable"
                if limit
                else f"until the status timeout ({settings.timeout_s:g} s)"
            )
            log.warning(
                "status of batch %06d unreadable: %s; asking again (%s)",
                due.seq,
                what,
                rule,
                extra={"event": "status_unreadable", "batch": due.seq, "error": what},
            )
        span = now - due.unreadable_since
        if not limit or due.unreadable < limit or span < settings.unreadable_for_s:
            return None
        return UnreadableStatusError(
            f"the status answers of batch {due.seq:06d} stayed unreadable for {due.unreadable} "
            f"calls in a row over {span:.1f} s (last: {what})"
        )

    async def _ask(self, url: str) -> BatchStatus:
        """One status call (with details); the outage notices hear how it went."""
        key = _host_key(url)
        try:
            status = await self._client.status(url, details=True)
        except TransportError as exc:
            self.outages.failed(key, exc)
            raise
        except UploaderError:
            self.outages.succeeded(key)  # an answer, if not a usable one
            raise
        self.outages.succeeded(key)
        return status

    def _again(self, due: _Due, status: BatchStatus | None = None) -> None:
        """Reschedule (see ``next_interval``), jittered by +-20 %."""
        now = asyncio.get_running_loop().time()
        remaining: int | None = None
        rate: float | None = None
        consumed = status.consumed if status is not None else None
        if status is not None and consumed and status.batch_size:
            remaining = max(0, status.batch_size - consumed)
            seen = due.progress
            if seen is not None and consumed > seen[1] > 0:
                rate = (consumed - seen[1]) / max(now - seen[0], 1e-3)
            if seen is None or consumed != seen[1]:
                due.progress = (now, consumed)
            elif rate is None:
                # No progress since the last answer (stalled, or all consumed and
                # still incomplete): nothing to estimate an end from, so back off
                # with the batch's age rather than ask every poll_initial_s forever.
                remaining = None
        interval = next_interval(
            now - due.since, self._settings, remaining_rows=remaining, rows_per_s=rate
        )
        due.at = now + interval * self._rng.uniform(0.8, 1.2)
        heapq.heappush(self._heap, due)
        self._wake.set()

    def _hold(self, due: _Due, retry_after: float | None) -> None:
        """Throttled: no status call to this host until the server's time is up.

        ``Retry-After`` is honoured up to ``poll_max_s`` (a server asking for
        days must not stall the run; the run's own deadline still applies);
        without one, the host rests for ``poll_initial_s``.
        """
        wait = self._settings.poll_initial_s if retry_after is None else retry_after
        wait = min(self._settings.poll_max_s, max(0.0, wait))
        until = asyncio.get_running_loop().time() + wait
        key = _host_key(due.url)
        self._held[key] = max(self._held.get(key, 0.0), until)
        due.at = until
        heapq.heappush(self._heap, due)
        self._wake.set()

    def _held_until(self, url: str) -> float:
        if not self._held:
            return 0.0
        key = _host_key(url)
        until = self._held.get(key, 0.0)
        if until and until <= asyncio.get_running_loop().time():
            del self._held[key]
        return until

    def _nudge_oldest(self) -> None:
        """Ask the oldest few followed batches soon: one finishing often starts the next."""
        soon = asyncio.get_running_loop().time() + self._settings.poll_initial_s
        oldest = heapq.nsmallest(NUDGE_OLDEST, self._heap, key=lambda d: d.seq)
        for due in oldest:
            due.at = min(due.at, soon)
        heapq.heapify(self._heap)
        self._wake.set()


async def record_status(
    journal: Journal,
    seq: int,
    status: BatchStatus,
    *,
    redact: Callable[[str], str] | None = None,
) -> None:
    """Journal a status answer from the event loop, without holding it.

    Up to 100,000 listed profile errors are written a few thousand per commit
    (``Journal.record_status_steps``, which redacts them with ``redact``),
    other tasks running between commits.
    """
    for _ in journal.record_status_steps(seq, status, redact=redact):
        await asyncio.sleep(0)


def _retry_plan(settings: StatusSettings) -> str:
    """What a status call failing at the transport level goes through, for its warning line."""
    return (
        f"asking again every {settings.poll_initial_s:g}-{settings.poll_max_s:g} s until the "
        f"batch is final or the status timeout ({settings.timeout_s:g} s) ends the run; "
        "-v logs each attempt"
    )


def _what(exc: PermanentError) -> str:
    """An unreadable answer in a few words: its HTTP status and the problem, no body."""
    status = getattr(exc, "status", None)
    problem = exc.problem if isinstance(exc, ProtocolError) else str(exc)
    return f"HTTP {status}: {problem}" if status and f"HTTP {status}" not in problem else problem


def _host_key(url: str) -> str:
    try:
        parsed = URL(url)
        return f"{(parsed.host or '').lower()}:{parsed.port}"
    except (TypeError, ValueError):
        return ""
