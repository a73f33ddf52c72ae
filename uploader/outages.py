"""One warning line when calls to a host stop getting through, and one when they do again.

A refused connection, a reset or a timeout is retried quietly (``-v`` logs
every attempt), so without this a user watching a run would see nothing for
as long as the retries last. ``submit.py`` and ``poll.py`` each keep one
``OutageNotices`` and tell it of every transport failure (``TransportError``)
and every answer. It logs at WARNING, so without ``-v`` too:

- the first failure of a kind (``cannot connect (Connection refused)``) at a
  host: the call and host, the failure, and what happens next (the caller's
  ``plan``: how many attempts, for how long);
- while failures go on: a reminder at most every ``remind_s`` (a minute),
  with the attempts failed and the time since the first;
- the first answer after an outage it warned of: one line saying the host
  answers again.

At most one line per kind of failure and host per ``remind_s``, plus one
when it ends: a server dropping one connection in twenty costs two lines a
minute, an outage of a night a line a minute, never one per attempt.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from uploader.errors import TransportError

__all__ = ["REMIND_S", "OutageNotices"]

REMIND_S = 60.0  # at most one line per kind of failure and host this often


@dataclass
class _Outage:
    where: str  # "submit 127.0.0.1:9": the call and host, as the error named them
    host: str  # "127.0.0.1:9"
    reason: str  # "cannot connect (Connection refused)"
    since: float
    failures: int = 0
    announced: bool = False  # its first line was printed (else a line a minute ago covered it)


class OutageNotices:
    """Warns when calls of one kind (submits, status calls) to a host get no answer."""

    def __init__(
        self,
        log: logging.Logger,
        plan: str,
        *,
        remind_s: float = REMIND_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._plan = plan
        self._remind_s = remind_s
        self._clock = clock
        self._outages: dict[str, _Outage] = {}  # host key -> its outage going on
        self._said: dict[tuple[str, str], float] = {}  # (host key, reason) -> last line

    def failed(self, key: str, exc: TransportError) -> None:
        """A call to the host ``key`` got no usable answer."""
        now = self._clock()
        reason = exc.reason or type(exc).__name__
        outage = self._outages.get(key)
        if outage is None or outage.reason != reason:
            where = f"{exc.action} {exc.host}" if exc.host else key
            outage = self._outages[key] = _Outage(where, exc.host or key, reason, now)
        outage.failures += 1
        if now - self._said.get((key, reason), -math.inf) < self._remind_s:
            return
        self._said[(key, reason)] = now
        fields = {"event": "unreachable", "host": outage.host, "error": reason}
        if not outage.announced:
            outage.announced = True
            self._log.warning("%s: %s; %s", outage.where, reason, self._plan, extra=fields)
        else:
            self._log.warning(
                "%s: still %s after %.0f s (failed attempts: %d)",
                outage.where,
                reason,
                now - outage.since,
                outage.failures,
                extra=fields,
            )

    def succeeded(self, key: str) -> None:
        """A call to the host ``key`` was answered (whatever the answer said)."""
        outage = self._outages.pop(key, None) if self._outages else None
        if outage is None or not outage.announced:
            return
        self._log.warning(
            "%s: answering again after %.0f s (failed attempts: %d, %s)",
            outage.where,
            self._clock() - outage.since,
            outage.failures,
            outage.reason,
            extra={"event": "reachable", "host": outage.host},
        )
