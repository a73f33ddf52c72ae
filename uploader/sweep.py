"""``uploader bench`` over several settings: which concurrency and batch size are fastest?

``bench.py`` measures one point (one concurrency, one batch size); this module
runs it for every combination of ``--concurrency 1,2,4`` and
``--max-batch-rows 1000,10000``, one after the other against the same kind
of target (a fresh built-in emulator per point, or the same ``--base-url``),
and reduces each run to one row. The recommendation rule:

    among the points whose throttled share is under 5% and whose p95 submit
    latency is at most twice the lowest p95 of the sweep, the one with the most
    rows per second (ties: the lower concurrency, then the smaller batches).

Its result is printed as the config keys to use, and ``--recommend-to FILE``
writes them as TOML.
"""

from __future__ import annotations

import csv
import html
import io
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from uploader.bench import BenchOptions

__all__ = [
    "COLUMNS",
    "MAX_THROTTLED_SHARE",
    "P95_FACTOR",
    "parse_int_list",
    "point_row",
    "recommend",
    "recommendation_toml",
    "render_sweep",
    "run_sweep",
    "sweep_csv",
    "sweep_html",
]

MAX_THROTTLED_SHARE = 0.05
P95_FACTOR = 2.0

# The columns of a sweep row: printed, in --csv and in --json, with one meaning each.
COLUMNS = (
    "concurrency",
    "batch_rows",
    "rows",
    "rows_per_s",
    "mb_per_s",
    "submit_p50_s",
    "submit_p95_s",
    "submit_p99_s",
    "complete_p50_s",
    "complete_p95_s",
    "throttled_share",
    "errors",
)


def parse_int_list(text: str) -> list[int]:
    """``"1,2,4"`` -> ``[1, 2, 4]`` (argparse type); every value at least 1."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"expected integers separated by commas, got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"expected integers of at least 1, got {text!r}")
    return values


def point_row(result: dict[str, Any]) -> dict[str, Any]:
    """One sweep row from the JSON document of one bench run."""
    sub, done = result["submit_latency_s"], result["complete_latency_s"]
    errors = result["rows_submitted"] - result["rows_successful"] - result["rows_not_found"]
    return {
        "concurrency": result["settings"]["concurrency"],
        "batch_rows": result["settings"]["max_batch_rows"],
        "rows": result["rows"],
        "rows_per_s": result["throughput"]["rows_per_s"],
        "mb_per_s": result["throughput"]["mb_per_s"],
        "submit_p50_s": sub["p50"],
        "submit_p95_s": sub["p95"],
        "submit_p99_s": sub["p99"],
        "complete_p50_s": done["p50"],
        "complete_p95_s": done["p95"],
        "throttled_share": result["throttled_fraction"],
        "errors": errors + result["rows"] - result["rows_submitted"],
    }


def recommend(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The best row by the module's rule, or None when no row qualifies."""
    measured = [r for r in rows if r["rows_per_s"] and r["submit_p95_s"] is not None]
    if not measured:
        return None
    lowest_p95 = min(r["submit_p95_s"] for r in measured)
    fit = [
        r
        for r in measured
        if r["throttled_share"] < MAX_THROTTLED_SHARE
        and r["errors"] == 0
        and r["submit_p95_s"] <= P95_FACTOR * lowest_p95
    ]
    if not fit:
        return None
    return max(fit, key=lambda r: (r["rows_per_s"], -r["concurrency"], -r["batch_rows"]))


def recommendation_toml(best: dict[str, Any]) -> str:
    """The recommended settings as config keys (a TOML fragment)."""
    return (
        "[submit]\n"
        f"concurrency = {best['concurrency']}\n"
        "\n[batch]\n"
        f"max_rows = {best['batch_rows']}\n"
    )


async def run_sweep(
    opts: BenchOptions,
    concurrencies: Sequence[int],
    batch_rows: Sequence[int],
    work_dir: Path,
    *,
    max_rows: int | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every combination, ``opts.rows`` rows each, until ``max_rows`` rows are spent."""
    from uploader.bench import run_bench

    points = [(c, b) for b in batch_rows for c in concurrencies]
    rows: list[dict[str, Any]] = []
    spent = 0
    started = time.monotonic()
    for i, (concurrency, size) in enumerate(points):
        if max_rows is not None and spent + opts.rows > max_rows:
            _say(progress, f"row budget of {max_rows:,} reached: {len(points) - i} points skipped")
            break
        eta = ""
        if i:
            left = (time.monotonic() - started) / i * (len(points) - i)
            eta = f", sweep ETA {left:,.0f} s"
        _say(
            progress,
            f"point {i + 1}/{len(points)}: concurrency {concurrency}, batch rows {size:,}{eta}",
        )
        point = replace(opts, concurrency=concurrency, max_batch_rows=size)
        result = await run_bench(point, work_dir / f"c{concurrency}-b{size}")
        spent += result["rows_submitted"]
        rows.append(point_row(result))
    return rows


def render_sweep(rows: Sequence[dict[str, Any]], best: dict[str, Any] | None) -> str:
    """The printed table, one line per point, then the recommendation."""
    head = (
        f"{'conc':>5} {'batch':>8} {'rows/s':>10} {'MB/s':>7} {'sub p50':>8} {'p95':>7} "
        f"{'p99':>7} {'done p50':>9} {'p95':>7} {'throttled':>9} {'errors':>6}"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['concurrency']:>5} {r['batch_rows']:>8,} {_n(r['rows_per_s'], ',.0f'):>10} "
            f"{_n(r['mb_per_s'], '.2f'):>7} {_n(r['submit_p50_s'], '.3f'):>8} "
            f"{_n(r['submit_p95_s'], '.3f'):>7} {_n(r['submit_p99_s'], '.3f'):>7} "
            f"{_n(r['complete_p50_s'], '.3f'):>9} {_n(r['complete_p95_s'], '.3f'):>7} "
            f"{r['throttled_share']:>9.1%} {r['errors']:>6}"
        )
    if best is None:
        lines.append("no recommendation: every point was throttled, slow or had errors")
    else:
        lines.append(
            f"recommended (most rows/s with throttled share under {MAX_THROTTLED_SHARE:.0%} "
            f"and p95 submit latency within {P95_FACTOR:g}x the lowest):"
        )
        lines.extend("  " + line for line in recommendation_toml(best).splitlines() if line)
    return "\n".join(lines)


def sweep_html(rows: Sequence[dict[str, Any]], best: dict[str, Any] | None) -> str:
    """An offline page: rows/s against concurrency per batch size, and submit latencies."""
    from uploader import charts

    sizes = sorted({r["batch_rows"] for r in rows})

    def by_size(key: str) -> dict[str, charts.Series]:
        series: dict[str, charts.Series] = {}
        for size in sizes:
            points = sorted((r["concurrency"], r[key]) for r in rows if r["batch_rows"] == size)
            points = [(c, v) for c, v in points if v is not None]
            series[f"{size:,} rows per batch"] = ([c for c, _ in points], [v for _, v in points])
        return series

    sections = [
        charts.Section(
            "Throughput",
            charts.line_chart(
                "rows/s by concurrency", "submits in flight", "rows/s", by_size("rows_per_s")
            ),
        ),
        charts.Section(
            "Throttled share",
            charts.line_chart(
                "share of submits throttled",
                "submits in flight",
                "share",
                by_size("throttled_share"),
            ),
            note=f"the rule accepts points under {MAX_THROTTLED_SHARE:.0%}",
        ),
    ]
    for q in ("p50", "p95", "p99"):
        sections.append(
            charts.Section(
                f"Submit latency {q}",
                charts.line_chart(
                    f"submit latency {q}", "submits in flight", "seconds", by_size(f"submit_{q}_s")
                ),
            )
        )
    sections.append(charts.Section("Points", f"<pre>{html.escape(render_sweep(rows, best))}</pre>"))
    chosen = (
        f"recommended: submit.concurrency = {best['concurrency']}, "
        f"batch.max_rows = {best['batch_rows']}"
        if best
        else "no point meets the rule"
    )
    return charts.html_page("uploader bench sweep", sections, subtitle=chosen)


def sweep_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _n(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _say(progress: Callable[[str], None] | None, line: str) -> None:
    if progress is not None:
        progress(line)
    else:
        print(f"uploader bench: {line}", file=sys.stderr)
