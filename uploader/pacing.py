"""Pacing: when the next batch may be submitted, by the operator's rules.

Sits beside :mod:`uploader.retry`: retry and the adaptive limiter react to
what the *server* says; pacing enforces what the *operator* asked for, before
a batch is sent at all. The submitter asks one question per batch,
``await pacer.admit(seq, rows)``, which returns when the batch may go, or
raises :class:`PacingStop` when this run should end here (exit 3) and a later
run continue. Five rules, each off unless configured:

* ``max_rows_per_s``: a token bucket on rows shared by every worker. It holds
  at most one batch worth of rows, so a burst is never more than one batch.
* ``window`` (``HH:MM-HH:MM`` in ``timezone``): new batches start only inside
  it; outside, admission waits for the window to open, or stops the run when
  ``exit_outside_window`` is set. Accepted batches are still followed.
* ``daily_rows``: rows submitted per calendar day (in ``timezone``) for this
  job, counted in the journal so reruns share the day's budget.
* ``max_backlog_rows``: no new submit while rows submitted or accepted but not
  yet final in Target would exceed the cap (one batch may always go alone).
* ``send_for_s``: no new batch once this many seconds have passed since the
  run started (a time box: a CI job's limit, a benchmark point).

Time comes from an injectable :class:`Clock`, so tests run a night in
milliseconds. Nothing here knows about HTTP or files.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from uploader.errors import ConfigError, UploaderError

log = logging.getLogger(__name__)

__all__ = [
    "Clock",
    "Pacer",
    "PacingStop",
    "ScaledClock",
    "SystemClock",
    "Window",
    "parse_window",
    "resolve_timezone",
]


class PacingStop(UploaderError):
    """This run must stop submitting; a later run of the same command continues.

    ``resume_at`` (epoch seconds) says when it can continue, when known;
    ``rule`` which rule stopped it: ``window``, ``daily`` or ``time``.
    """

    exit_code = 3

    def __init__(self, message: str, *, rule: str, resume_at: float | None = None) -> None:
        super().__init__(message)
        self.rule = rule
        self.resume_at = resume_at


class Clock(Protocol):
    """Wall time and sleeping, injectable so tests do not wait real minutes."""

    def now(self) -> float:
        """Epoch seconds."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The real clock."""

    def now(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class ScaledClock:
    """A clock that starts at ``start`` (epoch seconds) and runs ``speed`` times faster.

    For tests and demos: a 10-minute wait for a window takes 10 / speed
    minutes of real time, and every reading stays consistent with the sleeps.
    """

    def __init__(self, start: float, speed: float = 1.0) -> None:
        self.start = start
        self.speed = speed
        self._t0 = time.monotonic()

    def now(self) -> float:
        return self.start + (time.monotonic() - self._t0) * self.speed

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds) / self.speed)


def resolve_timezone(name: str | None) -> ZoneInfo | None:
    """A zone by IANA name; None means the machine's local time."""
    if name is None or name == "" or name == "local":
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"pacing.timezone {name!r} is not a known time zone") from None


@dataclass(frozen=True)
class Window:
    """Daily hours in which new batches may start; may wrap midnight (22:00-06:00)."""

    start: dtime
    end: dtime

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    def contains(self, moment: datetime) -> bool:
        t = moment.time().replace(tzinfo=None)
        if self.start < self.end:
            return self.start <= t < self.end
        return t >= self.start or t < self.end

    def next_open(self, moment: datetime) -> datetime:
        """The next time the window opens after ``moment`` (same tzinfo)."""
        opening = datetime.combine(moment.date(), self.start, moment.tzinfo)
        if opening <= moment:
            opening = datetime.combine(moment.date() + timedelta(days=1), self.start, moment.tzinfo)
        return opening


def parse_window(text: str) -> Window:
    """``"HH:MM-HH:MM"`` -> :class:`Window`; a clear error naming the key otherwise."""
    start, sep, end = text.partition("-")
    try:
        if not sep:
            raise ValueError(text)
        window = Window(_hhmm(start), _hhmm(end))
    except ValueError:
        raise ConfigError(
            f"pacing.window must look like HH:MM-HH:MM (e.g. 22:00-06:00); got {text!r}"
        ) from None
    if window.start == window.end:
        raise ConfigError(f"pacing.window {text!r} is empty (start equals end)")
    return window


def _hhmm(text: str) -> dtime:
    hours, sep, minutes = text.strip().partition(":")
    if not sep or len(minutes) != 2 or not hours.isdigit() or not minutes.isdigit():
        raise ValueError(text)
    return dtime(int(hours), int(minutes))


class DailyLedger(Protocol):
    """Where rows per day are counted (the journal): survives reruns."""

    def rows_on(self, day: str) -> int: ...
    def add_rows(self, day: str, rows: int) -> None: ...


class Pacer:
    """Admission control for submits; see the module docstring for the rules."""

    def __init__(
        self,
        *,
        max_rows_per_s: float | None = None,
        window: Window | None = None,
        timezone: ZoneInfo | None = None,
        exit_outside_window: bool = False,
        daily_rows: int | None = None,
        max_backlog_rows: int | None = None,
        send_for_s: float | None = None,
        ledger: DailyLedger | None = None,
        clock: Clock | None = None,
    ) -> None:
        if daily_rows is not None and ledger is None:
            raise ValueError("daily_rows needs a ledger")
        self.max_rows_per_s = max_rows_per_s
        self.window = window
        self.timezone = timezone
        self.exit_outside_window = exit_outside_window
        self.daily_rows = daily_rows
        self.max_backlog_rows = max_backlog_rows
        self.send_for_s = send_for_s
        self.clock: Clock = clock or SystemClock()
        self._until = None if send_for_s is None else self.clock.now() + send_for_s
        self._ledger = ledger
        self._lock = asyncio.Lock()  # admissions are served in order
        self._backlog: dict[int, int] = {}  # seq -> rows submitted or accepted, not final
        self._backlog_changed = asyncio.Event()
        self._tokens = 0.0
        self._capacity = 0.0  # one batch: the largest admitted so far
        self._refilled_at: float | None = None
        self.waiting: str | None = None  # what admission waits for now, for progress
        self.waiting_for: str | None = None  # the rule behind it: window, backlog, rate
        self.waited_s = {"window": 0.0, "backlog": 0.0, "rate": 0.0}  # clock time, by rule
        self.peak_backlog_rows = 0

    @property
    def active(self) -> bool:
        return any(
            x is not None
            for x in (
                self.max_rows_per_s,
                self.window,
                self.daily_rows,
                self.max_backlog_rows,
                self.send_for_s,
            )
        )

    @property
    def backlog_rows(self) -> int:
        return sum(self._backlog.values())

    # -- what the pipeline tells us --------------------------------------------------

    def track(self, seq: int, rows: int) -> None:
        """A batch accepted by an earlier run and not final yet counts in the backlog."""
        self._backlog[seq] = rows
        self._backlog_changed.set()

    def settled(self, seq: int) -> None:
        """The batch is final (or will be sent again): it leaves the backlog."""
        if self._backlog.pop(seq, None) is not None:
            self._backlog_changed.set()

    # -- the one call of the submitter -----------------------------------------------

    async def admit(self, seq: int, rows: int) -> None:
        """Return when batch ``seq`` of ``rows`` rows may be submitted; or raise PacingStop."""
        if not self.active:
            self._backlog[seq] = rows  # still known, for the metrics and the report
            return
        async with self._lock:
            try:
                while not await self._try_admit(seq, rows):
                    pass
            finally:
                self._set_waiting(None, None)

    async def _try_admit(self, seq: int, rows: int) -> bool:
        """One pass over the rules: True when admitted, False after a wait."""
        now = self.clock.now()
        local = self._local(now)
        if self._until is not None and now >= self._until:
            raise PacingStop(
                f"sent for {self.send_for_s:g} s (pacing.send_for_s); run the same command "
                "again to continue",
                rule="time",
            )
        if self.window is not None and not self.window.contains(local):
            opens = self.window.next_open(local)
            if self.exit_outside_window:
                raise PacingStop(
                    f"outside the submit window {self.window} ({self._zone_name()}); "
                    f"run again after {opens:%Y-%m-%d %H:%M %Z}",
                    rule="window",
                    resume_at=opens.timestamp(),
                )
            self._set_waiting("window", f"waiting for the window (opens {opens:%Y-%m-%d %H:%M %Z})")
            await self._wait("window", self.clock.sleep(min(opens.timestamp() - now, 60.0)))
            return False
        if self.daily_rows is not None:
            self._check_daily(local, rows)
        if self.max_backlog_rows is not None:
            backlog = self.backlog_rows
            if backlog and backlog + rows > self.max_backlog_rows:
                self._set_waiting(
                    "backlog",
                    f"waiting for the backlog ({backlog:,} rows not final, cap "
                    f"{self.max_backlog_rows:,})",
                )
                self._backlog_changed.clear()
                await self._wait("backlog", self._backlog_changed.wait())
                return False
        if self.max_rows_per_s is not None:
            wait_s = self._take_tokens(now, rows)
            if wait_s > 0:
                self._set_waiting("rate", "waiting for the rate cap")
                await self._wait("rate", self.clock.sleep(wait_s))
                return False
        if self.daily_rows is not None:
            assert self._ledger is not None
            self._ledger.add_rows(local.date().isoformat(), rows)
        self._backlog[seq] = rows
        self.peak_backlog_rows = max(self.peak_backlog_rows, self.backlog_rows)
        return True

    async def _wait(self, rule: str, waiting: Awaitable[Any]) -> None:
        before = self.clock.now()
        try:
            await waiting
        finally:
            self.waited_s[rule] += max(0.0, self.clock.now() - before)

    def _check_daily(self, local: datetime, rows: int) -> None:
        assert self._ledger is not None and self.daily_rows is not None
        if rows > self.daily_rows:
            raise PacingStop(
                f"a batch of {rows:,} rows is larger than the daily budget "
                f"pacing.daily_rows = {self.daily_rows:,}; lower batch.max_rows",
                rule="daily",
            )
        used = self._ledger.rows_on(local.date().isoformat())
        if used + rows > self.daily_rows:
            tomorrow = datetime.combine(local.date() + timedelta(days=1), dtime(), local.tzinfo)
            raise PacingStop(
                f"daily budget used: {used:,} of {self.daily_rows:,} rows submitted on "
                f"{local.date()} ({self._zone_name()}); run again after "
                f"{tomorrow:%Y-%m-%d %H:%M %Z}",
                rule="daily",
                resume_at=tomorrow.timestamp(),
            )

    def _take_tokens(self, now: float, rows: int) -> float:
        """Seconds to wait for ``rows`` tokens (0: taken now). The bucket holds one batch."""
        assert self.max_rows_per_s is not None
        if self._refilled_at is None:  # a new run starts with one batch of credit
            self._capacity = self._tokens = float(rows)
        else:
            self._capacity = max(self._capacity, float(rows))
            elapsed = max(0.0, now - self._refilled_at)
            self._tokens = min(self._capacity, self._tokens + elapsed * self.max_rows_per_s)
        self._refilled_at = now
        if self._tokens >= rows:
            self._tokens -= rows
            return 0.0
        return (rows - self._tokens) / self.max_rows_per_s

    # -- helpers ---------------------------------------------------------------------

    def _local(self, epoch_s: float) -> datetime:
        if self.timezone is None:
            return datetime.fromtimestamp(epoch_s).astimezone()
        return datetime.fromtimestamp(epoch_s, self.timezone)

    def _zone_name(self) -> str:
        return self.timezone.key if self.timezone is not None else "local time"

    def _set_waiting(self, rule: str | None, what: str | None) -> None:
        if rule in ("window", "backlog") and rule != self.waiting_for:
            log.info("%s", what, extra={"event": "pacing_wait", "reason": rule})
        self.waiting_for = rule
        self.waiting = what

    def rows_today(self) -> int | None:
        """Rows counted against today's budget (None without a daily budget)."""
        if self._ledger is None or self.daily_rows is None:
            return None
        return self._ledger.rows_on(self._local(self.clock.now()).date().isoformat())

    def describe(self) -> dict[str, Any]:
        """The pacing settings as the summary and the report show them."""
        return {
            "max_rows_per_s": self.max_rows_per_s,
            "window": str(self.window) if self.window else None,
            "timezone": self._zone_name(),
            "exit_outside_window": self.exit_outside_window,
            "daily_rows": self.daily_rows,
            "rows_today": self.rows_today(),
            "max_backlog_rows": self.max_backlog_rows,
            "peak_backlog_rows": self.peak_backlog_rows,
            "send_for_s": self.send_for_s,
            "waited_s": {k: round(v, 3) for k, v in self.waited_s.items()},
        }
