"""``uploader report WORK_DIR --html FILE``: one offline page with pictures of a run.

An output like ``report.json``, read from the journal alone: the summary
figures, then rows per second over time, submits in flight against the
adaptive limit, throttling events, the submit-latency histogram and how long
each batch took from its first submit to a final status. The time series are
the points the run's monitor recorded once a second (thinned when long); a
resumed job shows every run on one time axis, with the gaps between them.
Drawing is done by :mod:`uploader.charts`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from uploader import charts
from uploader.commands import status_report
from uploader.errors import InputError
from uploader.journal import BatchRecord, Journal, Sample
from uploader.metrics import LATENCY_BUCKETS_S, LatencyHistogram
from uploader.rates import MIN_BATCHES, MIN_WINDOW_S, rate_text

__all__ = ["build_html", "write_html_report"]

_BINS = 60  # throttling events are counted in about this many time bins
NO_RATE = (
    f"No rate: the run accepted fewer than {MIN_BATCHES} batches or lasted under "
    f"{MIN_WINDOW_S:g} s, too little to measure one (rows_per_s is null in report.json)."
)


def write_html_report(work_dir: Path, out: Path) -> Path:
    """Build the page for ``work_dir`` and write it to ``out`` atomically (owner-only)."""
    page = build_html(work_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(page)
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def build_html(work_dir: Path) -> str:
    path = work_dir / "journal.sqlite"
    if not path.exists():
        raise InputError(f"{work_dir}: no journal here (expected {path})")
    report = status_report(work_dir)
    with Journal(path) as journal:
        samples = journal.samples()
        batches = journal.batches()
        latency = LatencyHistogram.from_json(journal.get_meta("submit_latency"))
    sections = [charts.Section("Summary", charts.table(_summary_rows(report)))]
    sections += _time_sections(samples, report)
    sections.append(_latency_section(latency))
    sections.append(_batch_section(batches))
    subtitle = f"{report['status']} (exit {report['exit_code']}); work dir {work_dir}"
    return charts.html_page(f"uploader job {report['job_id']}", sections, subtitle=subtitle)


def _summary_rows(report: dict[str, Any]) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = [("status", report["status"]), ("exit code", report["exit_code"])]
    rows += [(f"rows {k}", f"{v:,}") for k, v in report["rows"].items()]
    rows += [(f"batches {k}", f"{v:,}") for k, v in report["batches"].items()]
    rows += [(k.replace("_", " "), f"{v:,}") for k, v in report["requests"].items()]
    rows += [
        ("bytes submitted", f"{report['bytes_submitted']:,}"),
        ("elapsed (s)", f"{report['elapsed_s']:,.1f}"),
        ("rows accepted per second", rate_text(report["rows_per_s"]).removesuffix(" rows/s")),
    ]
    for key, value in (report.get("pacing") or {}).items():
        if value not in (None, {}, False):
            rows.append((f"pacing {key.replace('_', ' ')}", value))
    return rows


def _time_sections(samples: Sequence[Sample], report: dict[str, Any]) -> list[charts.Section]:
    titles = ("Rows per second", "Submits in flight and the adaptive limit", "Throttling")
    if len(samples) < 2:
        note = "The journal holds no time series (a run records one point a second)."
        return [charts.Section(t, "", note) for t in titles]
    t0 = samples[0].t
    xs, label = charts.time_axis([s.t - t0 for s in samples])
    accepted_x, accepted_n, throttle_x, throttle_n = [], [], [], []
    for prev, cur, x in zip(samples, samples[1:], xs[1:], strict=False):
        if cur.rows_accepted < prev.rows_accepted:  # a new run counts from zero again
            continue
        accepted_x.append(x)
        accepted_n.append(cur.rows_accepted - prev.rows_accepted)
        if cur.throttles > prev.throttles:
            throttle_x.append(x)
            throttle_n.append(cur.throttles - prev.throttles)
    # Rows arrive a batch at a time: a rate per bin of the span reads better than per sample,
    # and a bin is never shorter than a rate's shortest window (see rates.py).
    span_s = samples[-1].t - t0
    bins = max(1, min(_BINS, int(span_s / MIN_WINDOW_S)))
    bins_x, bins_rows = _bin(accepted_x, accepted_n, xs[-1], bins)
    bin_s = span_s / bins if span_s > 0 else MIN_WINDOW_S
    rate_x, rate_y = bins_x, [n / bin_s for n in bins_rows]
    waits = _waiting_spans(samples, xs)
    rate, note = "", NO_RATE
    if report["rows_per_s"] is not None:
        note = (
            f"{len(samples):,} points, recorded once a second during the run (thinned when long)."
        )
        rate = charts.line_chart(
            f"Rows accepted per second (over {_seconds(bin_s)} bins)",
            label,
            "rows/s",
            {"rows/s": (rate_x, rate_y)},
            shade=waits,
            shade_label="pacing holds submits",
        )
    flight = charts.line_chart(
        "Submits in flight and the adaptive limit",
        label,
        "requests",
        {
            "in flight": (xs, [s.in_flight for s in samples]),
            "limit": (xs, [s.limit for s in samples]),
        },
        step=True,
    )
    bins_x, bins_n = _bin(throttle_x, throttle_n, xs[-1], _BINS)
    throttled = sum(throttle_n)
    throttle = charts.bar_chart(
        f"Throttled submits (429/503): {throttled:,} in all",
        label,
        "per bin",
        bins_x,
        bins_n,
        width=(xs[-1] / _BINS) or 1.0,
    )
    return [
        charts.Section(titles[0], rate, note),
        charts.Section(titles[1], flight),
        charts.Section(titles[2], throttle),
    ]


def _seconds(s: float) -> str:
    return f"{s:.3g} s" if s < 120 else f"{s / 60:.3g} min"


def _waiting_spans(samples: Sequence[Sample], xs: Sequence[float]) -> list[tuple[float, float]]:
    spans, start = [], None
    for s, x in zip(samples, xs, strict=True):
        if s.waiting and start is None:
            start = x
        elif not s.waiting and start is not None:
            spans.append((start, x))
            start = None
    if start is not None:
        spans.append((start, xs[-1]))
    return spans


def _bin(
    xs: Sequence[float], ns: Sequence[int], span: float, bins: int
) -> tuple[list[float], list[int]]:
    width = span / bins or 1.0
    counts = [0] * bins
    for x, n in zip(xs, ns, strict=True):
        counts[min(bins - 1, int(x / width))] += n
    return [i * width + width / 2 for i in range(bins)], counts


def _latency_section(latency: LatencyHistogram) -> charts.Section:
    title = "Submit latency"
    if not latency.count:
        return charts.Section(title, "", "No submit was accepted yet.")
    labels = [_ms(b) for b in LATENCY_BUCKETS_S] + [f"> {_ms(LATENCY_BUCKETS_S[-1])}"]
    labels = [f"≤ {x}" if not x.startswith(">") else x for x in labels]
    mean_ms = 1000 * latency.sum_s / latency.count
    svg = charts.bar_chart(
        f"Accepted submits by latency ({latency.count:,}; mean {mean_ms:,.0f} ms)",
        "request to answer",
        "submits",
        labels,
        latency.counts,
    )
    return charts.Section(title, svg)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:g} ms" if seconds < 1 else f"{seconds:g} s"


def _batch_section(batches: Sequence[BatchRecord]) -> charts.Section:
    title = "Time from submit to final, per batch"
    done = [b for b in batches if b.submitted_at is not None and b.final_at is not None]
    if not done:
        return charts.Section(title, "", "No batch is final yet.")
    took = [max(0.0, (b.final_at or 0.0) - (b.submitted_at or 0.0)) for b in done]
    values, unit = charts.time_axis(took)
    svg = charts.bar_chart(
        f"{len(done):,} of {len(batches):,} batches final",
        "batch",
        unit.replace(" since start", ""),
        [float(b.seq) for b in done],
        values,
    )
    note = "From the first submit of a batch to the status call that found it final."
    return charts.Section(title, svg, note)
