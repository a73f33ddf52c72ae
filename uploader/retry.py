"""Retry policy and shared throttling for requests to Target.

Two concerns live here because they answer the same question, "when may the
next request go?":

* ``retry_policy`` builds a tenacity ``AsyncRetrying`` from settings: retry
  only ``RetryableError``, full-jitter exponential backoff capped per wait,
  ``Retry-After`` honoured as a floor, stop after ``max_attempts``. The sleep
  function is injectable so tests of backoff never wait.
* ``AdaptiveLimiter`` caps requests in flight for the whole worker pool and
  adapts that cap to what the server sustains: a throttle (429, or 503) seen
  by any worker lowers the cap for everyone; a long run of successes probes
  one step higher. The probe interval grows with the cap, so a server with an
  unknown in-flight limit is used near that limit with few throttled calls.

Neither knows about batches, files or the journal.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from uploader.errors import RetryableError, ServerError, ThrottledError

__all__ = ["AdaptiveLimiter", "Backoff", "Slot", "longest_backoff", "retry_policy"]

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Backoff:
    """Full-jitter exponential backoff with a cap, and ``Retry-After`` as a floor.

    Full jitter (a uniform draw in ``[0, min(cap, initial * 2**n)]``) spreads
    the retries of many workers that failed together, so they do not return
    together. When the server said how long to wait, we wait at least that.
    """

    initial_s: float
    max_s: float
    rng: random.Random | None = None

    def __call__(self, state: RetryCallState) -> float:
        exponent = max(0, state.attempt_number - 1)
        ceiling = min(self.max_s, self.initial_s * (2.0**exponent))
        draw = (self.rng or random).uniform(0.0, ceiling)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, ThrottledError) and exc.retry_after is not None:
            # Honour the server, but never beyond our own cap per wait.
            return max(draw, min(exc.retry_after, self.max_s))
        return draw


def longest_backoff(max_attempts: int, initial_s: float, max_s: float) -> float:
    """The most ``Backoff`` can wait in all between ``max_attempts`` attempts."""
    return sum(min(max_s, initial_s * 2.0**n) for n in range(max_attempts - 1))


def retry_policy(
    *,
    max_attempts: int,
    initial_s: float,
    max_s: float,
    sleep: Sleep | None = None,
    before_sleep: Callable[[RetryCallState], Awaitable[None] | None] | None = None,
    rng: random.Random | None = None,
) -> AsyncRetrying:
    """A tenacity controller: retry ``RetryableError`` only; re-raise the last error."""
    kwargs: dict[str, object] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    if before_sleep is not None:
        kwargs["before_sleep"] = before_sleep
    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=Backoff(initial_s, max_s, rng),
        retry=retry_if_exception_type(RetryableError),
        reraise=True,
        **kwargs,  # type: ignore[arg-type]
    )


class Slot:
    """One admitted request; tells the limiter how it went."""

    __slots__ = ("_admitted_with", "_generation", "_outcome")

    def __init__(self, generation: int, admitted_with: int) -> None:
        self._generation = generation
        self._admitted_with = admitted_with  # requests in flight, this one included
        self._outcome: str | None = None

    def throttled(self) -> None:
        self._outcome = "throttled"

    def succeeded(self) -> None:
        self._outcome = "ok"


class AdaptiveLimiter:
    """A cap on requests in flight, shared by all workers, that adapts to throttling.

    Starts at half the maximum and grows by one per success (slow start)
    until the first throttle. A throttled request that was admitted with
    ``k`` requests in flight tells us the server's limit is below ``k``: the
    cap drops to ``k - 1`` (and by at least one per generation), and the
    other throttles of the same burst only refine it to their own ``k - 1``,
    so a burst of 429s lowers the cap once, to about the server's limit.
    Afterwards ``probe_factor * cap`` successes in a row raise it by one,
    which costs one throttled request per probe.
    """

    def __init__(
        self,
        max_limit: int,
        *,
        min_limit: int = 1,
        initial: int | None = None,
        probe_factor: int = 8,
    ) -> None:
        if not 1 <= min_limit <= max_limit:
            raise ValueError("need 1 <= min_limit <= max_limit")
        self.max_limit = max_limit
        self.min_limit = min_limit
        start = initial if initial is not None else max_limit // 2
        self.limit = max(min_limit, min(max_limit, start))
        self.probe_factor = probe_factor
        self.in_flight = 0
        self.peak_in_flight = 0  # most requests on the wire at once
        self.waiting = 0  # requests waiting now for room under the cap
        self.throttles = 0
        self.decreases = 0  # times throttling lowered the cap
        self.lowest: int | None = None  # the lowest cap throttling left; None: never lowered
        self._slow_start = True
        self._successes = 0
        self._generation = 0
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[Slot]:
        """Wait for room under the current cap; the body is one request."""
        async with self._changed:
            self.waiting += 1
            try:
                await self._changed.wait_for(lambda: self.in_flight < self.limit)
            finally:
                self.waiting -= 1
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
            slot = Slot(self._generation, self.in_flight)
        try:
            yield slot
        finally:
            async with self._changed:
                self.in_flight -= 1
                if slot._outcome == "ok":
                    self._on_success()
                elif slot._outcome == "throttled":
                    self._on_throttle(slot._generation, slot._admitted_with)
                self._changed.notify_all()

    def observe(self, exc: BaseException) -> bool:
        """True when ``exc`` is the server asking the whole pool to slow down."""
        return isinstance(exc, ThrottledError) or (
            isinstance(exc, ServerError) and exc.status == 503
        )

    def _on_success(self) -> None:
        self._successes += 1
        if self._slow_start:
            self.limit = min(self.max_limit, self.limit + 1)
        elif self._successes >= self.probe_factor * self.limit:
            self.limit = min(self.max_limit, self.limit + 1)
            self._successes = 0

    def _on_throttle(self, generation: int, admitted_with: int) -> None:
        self.throttles += 1
        self._slow_start = False
        self._successes = 0
        before = self.limit
        if generation == self._generation:
            self._generation += 1
            self.limit = max(self.min_limit, min(self.limit - 1, admitted_with - 1))
            self.decreases += self.limit < before  # not at the floor (or a fixed cap) already
        else:  # same burst: only what this request adds
            self.limit = max(self.min_limit, min(self.limit, admitted_with - 1))
        if self.limit < before:
            self.lowest = self.limit if self.lowest is None else min(self.lowest, self.limit)
