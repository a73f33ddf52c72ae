"""Fault decisions of the emulator, drawn from one seeded generator.

Decisions are plain method calls returning what to do; the HTTP handlers in
``app.py`` do the I/O. One ``random.Random(seed)`` drives everything, and a
draw is made only for a switch that is on, so the same seed and the same
order of requests give the same faults whatever other switches are set to.
"""

from __future__ import annotations

import hashlib
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
    rows_lost: int = 0  # rows counted successful but silently not applied (lose_rate)
    spill_errors: int = 0  # 503 answers: an accepted body could not be spilled to a file
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
        # Own generator: fetch delays must not shift the sequence of submit faults.
        self._fetch_rng = random.Random(config.seed)
        self._lose_key = str(config.seed).encode()

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

    def fetch_latency_s(self) -> float:
        low, high = self._config.fetch_latency_ms
        if high <= 0.0:
            return 0.0
        return (low if low == high else self._fetch_rng.uniform(low, high)) / 1000.0

    def lost(self, batch_digest: bytes, pid: str) -> bool:
        """True when this batch's row of ``pid`` is to be silently dropped (``lose_rate``).

        Decided by a keyed hash of the batch body and the id, not by a draw:
        batches applied in any order lose the same rows, a resend of the same
        body loses them again, and a different batch holding the id (a
        re-send of the rows that did not land) rolls again.
        """
        digest = hashlib.blake2b(batch_digest, key=self._lose_key, digest_size=8)
        digest.update(pid.encode("utf-8", "surrogatepass"))
        return int.from_bytes(digest.digest(), "big") < self._config.lose_rate * 2.0**64

    def drop(self) -> bool:
        return self._roll(self._config.drop_rate)

    def stuck(self) -> bool:
        return self._roll(self._config.stuck_rate)

    def status_error(self) -> bool:
        return self._roll(self._config.status_error_rate)

    def next_batch(self, queued: int) -> int:
        """Index of the queued batch to apply a slice of next (0: the oldest)."""
        if self._config.apply_order != "random" or queued < 2:
            return 0
        return self._rng.randrange(queued)
