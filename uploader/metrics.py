"""Prometheus metrics of a run: served on 127.0.0.1 and/or written to a textfile.

An output like ``report.json``, read from the same facts: the monitor
(:mod:`uploader.monitor`) hands a :class:`RunState` over every second, built
from the journal (rows and batches by state, request counters) and the live
stages (in flight, limit, latencies). Scrapes and textfile writes read the
last state handed over, so a scrape never touches the journal or the event
loop. ``prometheus-client`` is an optional extra (``uploader[metrics]``).

Metric names (all carry a ``job_id`` label):

=====================================  =======  ===============================================
``uploader_rows``                      gauge    rows by ``state``: read, rejected, folded,
                                                submitted, successful, failed, not_found,
                                                pending
``uploader_batches``                   gauge    batches by ``state`` (the journal's states)
``uploader_submits_total``             counter  submit requests that reached the server
``uploader_retries_total``             counter  submit retries
``uploader_throttled_total``           counter  submits answered 429 or 503
``uploader_status_polls_total``        counter  status calls answered
``uploader_bytes_sent_total``          counter  submit body bytes that reached the server
``uploader_submits_in_flight``         gauge    submit requests on the wire now
``uploader_submit_limit``              gauge    the adaptive cap on submits in flight
``uploader_backlog_rows``              gauge    rows submitted and not final in Target
``uploader_pacing_waiting``            gauge    1 while pacing holds submits, by ``reason``
``uploader_submit_latency_seconds``    histo    accepted submit requests of this run
``uploader_last_progress_timestamp_seconds``  gauge  last batch accepted or final (epoch)
``uploader_run_started_timestamp_seconds``    gauge  start of this run (epoch)
``uploader_run_finished``              gauge    1 once the run has ended
``uploader_run_exit_code``             gauge    the exit code once finished, -1 before
=====================================  =======  ===============================================

Counters count over the whole job (resumed runs included): they come from the
journal, which counts across reruns.
"""

from __future__ import annotations

import bisect
import logging
import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from uploader.closing import Closing
from uploader.errors import ConfigError

if TYPE_CHECKING:
    from prometheus_client.registry import CollectorRegistry

__all__ = ["LATENCY_BUCKETS_S", "LatencyHistogram", "RunMetrics", "RunState"]

log = logging.getLogger(__name__)

# Upper bounds of the submit-latency histogram (seconds); +Inf is implied.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_COUNTERS = {
    "submits": "submit requests that reached the server",
    "retries": "submit retries",
    "throttled": "submits answered 429 or 503 (throttled)",
    "status_polls": "status calls answered",
    "bytes_sent": "submit body bytes that reached the server",
}
_WAIT_REASONS = ("window", "backlog", "rate")


@dataclass
class LatencyHistogram:
    """Cumulative-free bucket counts (one per bound, plus +Inf), a sum and a count."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    sum_s: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def add(self, values: Iterable[float]) -> None:
        for v in values:
            self.counts[bisect.bisect_left(LATENCY_BUCKETS_S, v)] += 1
            self.sum_s += v

    def merged(self, other: LatencyHistogram) -> LatencyHistogram:
        counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        return LatencyHistogram(counts, self.sum_s + other.sum_s)

    def to_json(self) -> dict[str, Any]:
        return {"bounds_s": list(LATENCY_BUCKETS_S), "counts": self.counts, "sum_s": self.sum_s}

    @classmethod
    def from_json(cls, doc: Mapping[str, Any] | None) -> LatencyHistogram:
        if not doc or list(doc.get("bounds_s", ())) != list(LATENCY_BUCKETS_S):
            return cls()
        return cls(list(doc["counts"]), float(doc["sum_s"]))


@dataclass(frozen=True)
class RunState:
    """Everything the metrics show, at one instant."""

    rows: Mapping[str, int]
    batches: Mapping[str, int]
    counters: Mapping[str, int]
    in_flight: int
    limit: int
    backlog_rows: int
    waiting: str | None  # pacing rule holding submits: window, backlog, rate
    latency: LatencyHistogram
    last_progress_s: float
    started_s: float
    exit_code: int | None = None  # set once the run has ended


def _families(state: RunState, job_id: str) -> Iterator[Any]:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )

    def gauge(name: str, doc: str, value: float, **labels: str) -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=["job_id", *labels])
        g.add_metric([job_id, *labels.values()], value)
        return g

    rows = GaugeMetricFamily("uploader_rows", "rows by state", labels=["job_id", "state"])
    for name, n in state.rows.items():
        rows.add_metric([job_id, name], n)
    yield rows
    batches = GaugeMetricFamily("uploader_batches", "batches by state", labels=["job_id", "state"])
    for name, n in state.batches.items():
        batches.add_metric([job_id, name], n)
    yield batches
    for key, doc in _COUNTERS.items():
        c = CounterMetricFamily(f"uploader_{key}", doc, labels=["job_id"])
        c.add_metric([job_id], state.counters.get(key, 0))
        yield c
    yield gauge("uploader_submits_in_flight", "submit requests on the wire", state.in_flight)
    yield gauge("uploader_submit_limit", "adaptive cap on submits in flight", state.limit)
    yield gauge("uploader_backlog_rows", "rows submitted, not final in Target", state.backlog_rows)
    waiting = GaugeMetricFamily(
        "uploader_pacing_waiting", "1 while pacing holds submits", labels=["job_id", "reason"]
    )
    for reason in _WAIT_REASONS:
        waiting.add_metric([job_id, reason], 1.0 if state.waiting == reason else 0.0)
    yield waiting
    cumulative, buckets = 0, []
    for bound, n in zip((*LATENCY_BUCKETS_S, float("inf")), state.latency.counts, strict=True):
        cumulative += n
        buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
    hist = HistogramMetricFamily(
        "uploader_submit_latency_seconds", "accepted submit requests", labels=["job_id"]
    )
    hist.add_metric([job_id], buckets, state.latency.sum_s)
    yield hist
    yield gauge(
        "uploader_last_progress_timestamp_seconds",
        "last batch accepted or final",
        state.last_progress_s,
    )
    yield gauge("uploader_run_started_timestamp_seconds", "start of this run", state.started_s)
    finished = state.exit_code is not None
    yield gauge("uploader_run_finished", "1 once the run has ended", 1.0 if finished else 0.0)
    code = float(state.exit_code) if state.exit_code is not None else -1.0
    yield gauge("uploader_run_exit_code", "exit code once finished, -1 before", code)


class _Collector:
    """Hands the last ``RunState`` to prometheus_client on every scrape."""

    def __init__(self, metrics: RunMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Any]:
        state = self._metrics.state
        if state is not None:
            yield from _families(state, self._metrics.job_id)


class RunMetrics(Closing):
    """The metrics of one run: an HTTP endpoint on loopback, a textfile, or both."""

    def __init__(
        self, job_id: str, *, port: int | None = None, textfile: Path | None = None
    ) -> None:
        try:
            from prometheus_client import CollectorRegistry
        except ImportError:
            raise ConfigError(
                "metrics need prometheus-client: pip install 'uploader[metrics]'"
            ) from None
        self.job_id = job_id
        self.textfile = Path(textfile) if textfile is not None else None
        self.state: RunState | None = None
        self.registry: CollectorRegistry = CollectorRegistry(auto_describe=False)
        # cast: prometheus-client before 0.21 types register() for its own Collector class only
        self.registry.register(cast(Any, _Collector(self)))
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        if port is not None:
            self._serve(port)

    def _serve(self, port: int) -> None:
        from prometheus_client import start_http_server

        try:
            self._server, self._thread = start_http_server(
                port, addr="127.0.0.1", registry=self.registry
            )
        except OSError as exc:
            raise ConfigError(f"cannot serve metrics on 127.0.0.1:{port}: {exc.strerror}") from exc

    @property
    def port(self) -> int | None:
        """The port /metrics is served on (the real one when 0 was asked)."""
        return int(self._server.server_port) if self._server is not None else None

    def update(self, state: RunState) -> None:
        self.state = state

    def write_textfile(self) -> None:
        """Rewrite the textfile atomically (temp file + rename); errors are logged, not fatal."""
        if self.textfile is None or self.state is None:
            return
        from prometheus_client import write_to_textfile

        with self._lock:
            try:
                self.textfile.parent.mkdir(parents=True, exist_ok=True)
                write_to_textfile(str(self.textfile), self.registry)
            except OSError as exc:
                log.warning(
                    "cannot write metrics to %s: %s",
                    self.textfile,
                    exc,
                    extra={"event": "metrics_textfile_error", "error": str(exc)},
                )

    def close(self) -> None:
        """Stop serving (the textfile stays: it holds the run's final figures)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
