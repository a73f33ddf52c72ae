"""Fault decisions of the emulator, drawn from one seeded generator.

Decisions are plain method calls returning what to do; the HTTP handlers in
``app.py`` do the I/O. One ``random.Random(seed)`` drives everything, and a
draw is made only for a switch that is on, so the same seed and the same
order of requests give the same faults whatever other switches are set to.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields

from uploader.emulator.config import EmulatorConfig

__all__ = ["Faults", "Stats"]


@dataclass
class Stats:
    """Counters served by ``GET /_emulator/stats`` (design.md lists the keys)."""

    submits: int = 0  # every submit request, whatever its answer
    batches_accepted: int = 0
    batches_rejected: int = 0  # success=false or 413
    batches_applied: int = 0  # reached `complete`
    rows_accepted: int = 0
    rows_applied: int = 0
    duplicate_batches: int = 0  # an accepted body whose sha256 was accepted before
    bytes_received: int = 0  # bodies read by submits
    throttled: int = 0  # 429 answers
    errors_injected: int = 0  # 503 answers
    dropped: int = 0  # accepted, then the connection was closed unanswered
    stuck: int = 0  # accepted batches that went `stuck`
    status_calls: int = 0
    status_errors: int = 0  # injected 500 answers to status calls
    fetch_calls: int = 0
    unauthorized: int = 0  # 401 answers
    inflight: int = 0  # submits in flight right now
    peak_inflight: int = 0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Faults:
    """Seeded fault decisions for one emulator."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._config = config
        self._rng = random.Random(config.seed)

    def _roll(self, rate: float) -> bool:
        if rate <= 0.0:
            return False
        return rate >= 1.0 or self._rng.random() < rate

    def throttle(self, inflight: int) -> bool:
        """True when this submit (already counted in ``inflight``) must get a 429."""
        limit = self._config.max_inflight
        return limit is not None and inflight > limit

    def server_error(self) -> bool:
        return self._roll(self._config.error_rate)

    def latency_s(self) -> float:
        low, high = self._config.latency_ms
        if high <= 0.0:
            return 0.0
        return (low if low == high else self._rng.uniform(low, high)) / 1000.0

    def drop(self) -> bool:
        return self._roll(self._config.drop_rate)

    def stuck(self) -> bool:
        return self._roll(self._config.stuck_rate)

    def status_error(self) -> bool:
        return self._roll(self._config.status_error_rate)
