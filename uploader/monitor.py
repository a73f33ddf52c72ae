"""The run's monitor: once a second, record how the run is going.

Beside the stages, never in their way: it reads the pipeline's live figures
(a ``snapshot()`` function, the same one the progress display reads) and the
journal, and writes

* one point of the run's time series to the journal (``samples``, thinned to
  stay bounded), which the HTML report draws;
* the submit-latency histogram to the journal (``meta.submit_latency``),
  summed over reruns;
* the Prometheus state of :mod:`uploader.metrics` when metrics are on, and
  the metrics textfile every ``TEXTFILE_EVERY_S`` seconds.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from uploader.journal import Journal, Sample
from uploader.metrics import LatencyHistogram, RunMetrics, RunState
from uploader.progress import every
from uploader.report import account_rows, listed_failed
from uploader.states import BatchState

__all__ = ["KEEP_SAMPLES", "SAMPLE_EVERY_S", "TEXTFILE_EVERY_S", "Monitor"]

SAMPLE_EVERY_S = 1.0
TEXTFILE_EVERY_S = 5.0
KEEP_SAMPLES = 2000  # points of time series kept in the journal (older ones thinned)

Snapshot = Callable[[], dict[str, Any]]


class Monitor:
    """Samples one run; ``finish`` records the exit code."""

    def __init__(
        self,
        journal: Journal,
        *,
        metrics: RunMetrics | None,
        started_s: float,
        every_s: float | None = None,  # default SAMPLE_EVERY_S
    ) -> None:
        self._journal = journal
        self._metrics = metrics
        self._started_s = started_s
        self._every_s = every_s or SAMPLE_EVERY_S
        self._snapshot: Snapshot | None = None
        self._latencies: Sequence[float] = ()
        self._seen = 0  # latencies already in the histogram
        self._hist = LatencyHistogram.from_json(journal.get_meta("submit_latency"))
        self._last_textfile = 0.0

    def attach(self, snapshot: Snapshot, latencies_s: Sequence[float]) -> None:
        """The live figures of the running pipeline (``latencies_s`` grows as submits end)."""
        self._snapshot = snapshot
        self._latencies = latencies_s

    def running(self) -> contextlib.AbstractAsyncContextManager[None]:
        """Sample now, every ``every_s`` seconds while the body runs, and once at the end."""
        self.sample()
        return every(self._every_s, self.sample)

    def sample(self) -> None:
        live = self._snapshot() if self._snapshot is not None else {}
        self._journal.add_sample(
            Sample(
                t=time.time(),
                rows_accepted=int(live.get("rows_accepted", 0)),
                in_flight=int(live.get("in_flight", 0)),
                limit=int(live.get("limit", 0)),
                throttles=int(live.get("throttles", 0)),
                backlog_rows=int(live.get("backlog_rows", 0)),
                waiting=live.get("waiting_for"),
            ),
            keep=KEEP_SAMPLES,
        )
        if len(self._latencies) > self._seen:
            self._hist.add(self._latencies[self._seen :])
            self._seen = len(self._latencies)
            self._journal.set_meta("submit_latency", self._hist.to_json())
        if self._metrics is not None:
            self._metrics.update(self._state(live, None))
            now = time.monotonic()
            if now - self._last_textfile >= TEXTFILE_EVERY_S:
                self._last_textfile = now
                self._metrics.write_textfile()

    def finish(self, exit_code: int) -> None:
        """The run ended: the metrics say so (and the textfile holds the final figures)."""
        if self._metrics is None:
            return
        live = self._snapshot() if self._snapshot is not None else {}
        self._metrics.update(self._state(live, exit_code))
        self._metrics.write_textfile()

    def _state(self, live: dict[str, Any], exit_code: int | None) -> RunState:
        journal = self._journal
        batches = journal.batches()
        chunk = journal.get_meta("chunk") or {}
        rejected = sum(chunk.get("rejected", {}).values())
        folded = int(chunk.get("folded", 0))
        submitted = sum(b.rows for b in batches)
        rows = account_rows(
            batches,
            rows_read=chunk.get("rows_read", submitted + rejected + folded),
            rejected=rejected,
            folded=folded,
            listed_failed=listed_failed(journal),
        )
        by_state = {s.value: 0 for s in BatchState}
        for b in batches:
            by_state[b.state.value] += 1
        return RunState(
            rows={
                "read": rows.read,
                "rejected": rows.rejected,
                "folded": rows.folded,
                "submitted": rows.submitted,
                "successful": rows.successful,
                "failed": rows.failed,
                "not_found": rows.not_found,
                "pending": rows.pending,
            },
            batches=by_state,
            counters=journal.counters(),
            in_flight=int(live.get("in_flight", 0)),
            limit=int(live.get("limit", 0)),
            backlog_rows=int(live.get("backlog_rows", 0)),
            waiting=live.get("waiting_for"),
            latency=LatencyHistogram(list(self._hist.counts), self._hist.sum_s),
            last_progress_s=float(live.get("last_progress_s", self._started_s)),
            started_s=self._started_s,
            exit_code=exit_code,
        )
