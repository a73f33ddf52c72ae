"""Retry policy and the shared adaptive limiter, without waiting on real time."""

from __future__ import annotations

import asyncio
import random
from contextlib import AsyncExitStack

import pytest
from tenacity import RetryCallState

from uploader.errors import (
    BatchRejectedError,
    ServerError,
    ThrottledError,
    TransportError,
    UploaderError,
)
from uploader.retry import AdaptiveLimiter, Backoff, Slot, retry_policy


def _state(attempt: int, exc: BaseException) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    backoff = Backoff(0.5, 10.0, random.Random(1))
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (5, 8.0), (6, 10.0), (12, 10.0)):
        waits = [backoff(_state(attempt, ServerError("x", status=500))) for _ in range(200)]
        assert min(waits) >= 0.0 and max(waits) <= ceiling
        assert max(waits) > ceiling * 0.8  # spread over the whole range, not a constant


def test_backoff_honours_retry_after_up_to_the_cap() -> None:
    backoff = Backoff(0.01, 30.0, random.Random(2))
    assert backoff(_state(1, ThrottledError("slow", retry_after=7.0))) == 7.0
    assert backoff(_state(1, ThrottledError("slow", retry_after=300.0))) == 30.0
    assert backoff(_state(1, ThrottledError("slow", retry_after=None))) <= 0.01


async def _call_with_policy(
    failures: list[UploaderError], max_attempts: int
) -> tuple[str | UploaderError, list[float], int]:
    slept: list[float] = []
    calls = 0

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = retry_policy(
        max_attempts=max_attempts, initial_s=1.0, max_s=4.0, sleep=sleep, rng=random.Random(0)
    )
    try:
        async for attempt in policy:
            with attempt:
                calls += 1
                if failures:
                    raise failures.pop(0)
                result: str | UploaderError = "ok"
    except UploaderError as exc:
        result = exc
    return result, slept, calls


async def test_retryable_errors_are_retried_with_injected_sleep() -> None:
    errors: list[UploaderError] = [ServerError("boom", status=503), TransportError("reset")]
    result, slept, calls = await _call_with_policy(errors, max_attempts=5)
    assert result == "ok"
    assert calls == 3
    assert len(slept) == 2


async def test_permanent_errors_are_not_retried() -> None:
    rejected = BatchRejectedError("Unexpected error")
    result, slept, calls = await _call_with_policy([rejected], max_attempts=5)
    assert result is rejected
    assert (calls, slept) == (1, [])


async def test_gives_up_after_max_attempts_with_the_last_error() -> None:
    errors: list[UploaderError] = [ServerError(f"e{i}", status=500) for i in range(10)]
    result, slept, calls = await _call_with_policy(errors, max_attempts=4)
    assert isinstance(result, ServerError) and result.message == "e3"
    assert (calls, len(slept)) == (4, 3)


async def test_a_burst_of_throttles_lowers_the_cap_once_to_the_server_limit() -> None:
    limiter = AdaptiveLimiter(10, initial=10)
    async with AsyncExitStack() as stack:
        slots: list[Slot] = [await stack.enter_async_context(limiter.slot()) for _ in range(10)]
        assert limiter.in_flight == 10
        for i, slot in enumerate(slots, start=1):
            # a server that allows 6 in flight refuses the 7th to 10th request
            if i > 6:
                slot.throttled()
            else:
                slot.succeeded()
    assert limiter.in_flight == 0
    assert limiter.throttles == 4
    assert limiter.decreases == 1
    assert limiter.limit == 6


async def test_limiter_finds_an_unknown_server_limit_with_few_throttles() -> None:
    server_limit, jobs = 4, 600
    limiter = AdaptiveLimiter(16, probe_factor=8)
    in_server = 0
    peak = 0
    throttled = done = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(jobs):
        queue.put_nowait(i)

    async def worker() -> None:
        nonlocal in_server, peak, throttled, done
        while not queue.empty():
            job = queue.get_nowait()
            async with limiter.slot() as slot:
                in_server += 1
                try:
                    if in_server > server_limit:
                        slot.throttled()
                        throttled += 1
                        queue.put_nowait(job)
                        continue
                    peak = max(peak, in_server)
                    for _ in range(3):
                        await asyncio.sleep(0)
                    slot.succeeded()
                    done += 1
                finally:
                    in_server -= 1

    await asyncio.gather(*(worker() for _ in range(16)))
    assert done == jobs
    assert peak == server_limit
    assert limiter.limit in (server_limit, server_limit + 1)
    assert throttled / (jobs + throttled) < 0.05


def test_limiter_rejects_bad_bounds() -> None:
    with pytest.raises(ValueError):
        AdaptiveLimiter(2, min_limit=3)


def test_status_polls_slow_down_with_the_age_of_a_batch() -> None:
    from uploader.poll import next_interval
    from uploader.settings import StatusSettings

    settings = StatusSettings(poll_initial_s=2.0, poll_max_s=60.0)
    assert [next_interval(age, settings) for age in (0, 4, 8, 20, 100, 240, 10_000)] == [
        2.0, 2.0, 2.0, 5.0, 25.0, 60.0, 60.0,
    ]  # fmt: skip
    # with the server's progress: when the rest should be done, within the bounds
    assert next_interval(100, settings, remaining_rows=50_000, rows_per_s=10_000) == 5.0
    assert next_interval(100, settings, remaining_rows=500, rows_per_s=10_000) == 2.0
    assert next_interval(100, settings, remaining_rows=10**7, rows_per_s=10) == 60.0
    # started, no rate yet: soon
    assert next_interval(100, settings, remaining_rows=50_000, rows_per_s=None) == 2.0
