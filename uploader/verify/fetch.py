"""Fetch profiles back from Target, politely, and record what each one holds.

The same machinery as the submit path: the ``AdaptiveLimiter`` caps fetches
in flight and backs off for everyone when the server throttles, and the
``retry_policy`` of ``submit.*`` settings retries transport errors, 429 and
5xx with jittered backoff. On top, a rate cap (profiles per second) keeps a
verify of millions of ids from hammering a production profile API.

Every result is committed to the journal as it arrives (``VerifyStore``), so
a stopped verify continues where it was. A problem every fetch would meet (a
refused token, a server that cannot be reached) stops the whole verify
instead of marking every id as an error. What a profile holds is compared as
the server sent it, but kept (journal, verify.csv, report) redacted: a server
may echo the token in a value, and no piece of it is ever written.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from tenacity import RetryCallState

from uploader.client import TargetClient
from uploader.errors import (
    AuthError,
    NotFoundError,
    RetryableError,
    ThrottledError,
    TransportError,
    UploaderError,
)
from uploader.retry import AdaptiveLimiter, Sleep, retry_policy
from uploader.settings import SubmitSettings
from uploader.verify.compare import CheckOutcome, Mismatch, classify, compare
from uploader.verify.store import Expected, VerifyStore

__all__ = ["CheckStats", "Checker", "RateCap"]

log = logging.getLogger(__name__)


class RateCap:
    """At most ``per_s`` admissions per second, evenly spaced, shared by all workers."""

    def __init__(self, per_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / per_s if per_s > 0 else 0.0
        self._clock = clock
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if not self._interval:
            return
        async with self._lock:
            now = self._clock()
            start = max(now, self._next)
            self._next = start + self._interval
        if start > now:
            await asyncio.sleep(start - now)


@dataclass
class CheckStats:
    """Live figures of this verify process (the journal holds every result)."""

    total: int = 0  # ids this process set out to check
    done: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    started: float = field(default_factory=time.monotonic)
    fetch_s: float = 0.0  # time spent fetching, once the run is over


class Checker:
    """``concurrency`` workers fetching the ids of ``VerifyStore.to_check``."""

    def __init__(
        self,
        client: TargetClient,
        store: VerifyStore,
        submit: SubmitSettings,
        *,
        concurrency: int,
        rows_per_s: float,
        settle_s: float,
        api: str,
        id_type: str,
        sleep: Sleep | None = None,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._store = store
        self._submit = submit
        self._concurrency = concurrency
        self._settle_s = settle_s
        self._api = api
        self._id_type = id_type
        self._sleep = sleep
        self._now = now
        self.limiter = AdaptiveLimiter(concurrency)
        self.rate = RateCap(rows_per_s)
        self.stats = CheckStats()
        self.fatal: UploaderError | None = None
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Take no new id; fetches on the wire finish and are recorded."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    async def run(self, work: Iterator[Expected]) -> None:
        """Check every id ``work`` yields, or until stopped."""
        self.stats.started = time.monotonic()
        queue: asyncio.Queue[Expected | None] = asyncio.Queue(4 * self._concurrency)
        workers = [
            asyncio.create_task(self._worker(queue), name=f"verify-{i}")
            for i in range(self._concurrency)
        ]
        try:
            for item in work:
                if self._stop.is_set():
                    break
                await queue.put(item)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for task in workers:
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*workers, return_exceptions=True)
            self.stats.fetch_s = time.monotonic() - self.stats.started

    async def _worker(self, queue: asyncio.Queue[Expected | None]) -> None:
        while (item := await queue.get()) is not None:
            if self._stop.is_set():
                continue  # drain: the producer may still be putting
            await self.rate.wait()
            if self._stop.is_set():
                continue
            await self.check_one(item)

    async def check_one(self, item: Expected) -> None:
        try:
            profile = await self._fetch(item.id)
        except (AuthError, NotFoundError, TransportError) as exc:
            # Every fetch would meet it: stop, keep the id unchecked for the next run.
            if self.fatal is None:
                self.fatal = exc
            self.stop()
            return
        except UploaderError:
            self._record(item, CheckOutcome.FETCH_ERROR, [])
            return
        mismatches = compare(item.attrs, profile)
        settled = item.final_at is None or self._now() - item.final_at >= self._settle_s
        outcome = classify(
            mismatches, profile_found=profile is not None, api=self._api, settled=settled
        )
        self._record(item, outcome, mismatches)

    def _record(self, item: Expected, outcome: CheckOutcome, mismatches: list[Mismatch]) -> None:
        redact = self._client.redact
        kept = [
            replace(
                m,
                found=None if m.found is None else redact(m.found),
                modified_at=None if m.modified_at is None else redact(m.modified_at),
            )
            for m in mismatches
        ]
        self._store.record(item.id, outcome, kept)
        self.stats.done += 1
        self.stats.outcomes[outcome.value] += 1

    async def _fetch(self, pid: str) -> dict[str, object] | None:
        """One profile, retried by the submit path's policy.

        The first try goes without tenacity: building and driving a retry
        controller costs about as much as a fetch from a nearby server, and
        almost every fetch succeeds at once. Only a retryable failure enters
        the policy, for the attempts that are left.
        """
        try:
            return await self._attempt(pid)
        except RetryableError as exc:
            if self._submit.max_attempts <= 1:
                raise
            first_wait_s = self._first_backoff_s(exc)
            _log_retry(1, exc, first_wait_s)
        retrying = retry_policy(
            max_attempts=self._submit.max_attempts - 1,
            initial_s=self._submit.backoff_initial_s,
            max_s=self._submit.backoff_max_s,
            sleep=self._sleep,
            before_sleep=_log_policy_retry,
        )
        await (self._sleep or asyncio.sleep)(first_wait_s)
        async for attempt in retrying:
            with attempt:
                return await self._attempt(pid)
        raise AssertionError("unreachable: tenacity re-raises the last error")  # pragma: no cover

    def _first_backoff_s(self, exc: RetryableError) -> float:
        """The policy's first wait: full jitter, with ``Retry-After`` as a floor (``Backoff``)."""
        cap = self._submit.backoff_max_s
        draw = random.uniform(0.0, min(self._submit.backoff_initial_s, cap))
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            return max(draw, min(exc.retry_after, cap))
        return draw

    async def _attempt(self, pid: str) -> dict[str, object] | None:
        async with self.limiter.slot() as slot:
            try:
                profile = await self._client.fetch_profile(pid, id_type=self._id_type)
            except UploaderError as exc:
                if self.limiter.observe(exc):
                    slot.throttled()
                raise
            slot.succeeded()
            return profile


def _log_retry(attempt: int, exc: BaseException | None, wait_s: float) -> None:
    """One info line per retried fetch (``-v``); the id is personal data, so not named."""
    error = f"{type(exc).__name__}: {exc}" if exc is not None else "no answer"
    log.info(
        "profile fetch: attempt %d failed (%s); retrying in %.2f s",
        attempt,
        error,
        wait_s,
        extra={
            "event": "fetch_retry",
            "attempt": attempt,
            "wait_s": round(wait_s, 3),
            "error": error,
        },
    )


def _log_policy_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome is not None else None
    wait_s = state.next_action.sleep if state.next_action is not None else 0.0
    _log_retry(state.attempt_number + 1, exc, wait_s)  # the first attempt came before the policy
