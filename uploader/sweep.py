"""``uploader bench`` over several settings: which concurrency and batch size are fastest?

``bench.py`` measures one point (one concurrency, one batch size); this module
runs it for every combination of ``--concurrency 1,2,4`` and
``--max-batch-rows 1000,10000``, one after the other against the same kind
of target (a fresh built-in emulator per point, or the same ``--base-url``),
and reduces each run to one row. The recommendation rule:

    a point qualifies when it ran all its rows (not stopped early), no row
    ended in error, its throttled share is under 5%, and its p95 submit
    latency is at most twice the lowest p95 among the points of the same
    batch size (a larger body takes longer to send: latency is compared like
    with like). Of those, the most rows per second wins; points within 5% of
    the best count as equal, and then the lower concurrency wins, then the
    smaller batches.

Its result is printed as the config keys to use, and ``--recommend-to FILE``
writes them as TOML.

Politeness: ``--max-rows`` (and ``pacing.daily_rows``, as this sweep keeps no
journal across days) is a budget for the whole sweep; the pacing rules apply
inside every point as in ``uploader run``; a point ends early after
``--stop-after-errors`` submit errors in a row, and the higher concurrency
levels of that batch size are then skipped (they would only press harder);
a point ended by the pacing rules or by another error ends the sweep.
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
    "MIN_BATCHES",
    "P95_FACTOR",
    "STOPPED",
    "TIE_SHARE",
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
TIE_SHARE = 0.05  # points within 5% of the best rows/s count as equal
MIN_BATCHES = 10  # fewer batches per point than this: the sweep warns that rates are rough
# why a point ended early (the ``stopped`` column), as the table says it
STOPPED = {
    "errors": "a run of submit errors",
    "pacing": "the pacing rules",
    "error": "an error (see the progress lines)",
}

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
    "paced_s",
    "stopped",
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
    """One sweep row from the JSON document of one bench run.

    ``rows``: rows of the batches the point began to send; ``errors``: of those,
    rows that did not end ``successful`` or ``not_found``; ``paced_s``: seconds the pacing
    rules held submits back;
    ``stopped``: why the point ended early (see ``bench.stopped_by``), "" when
    it did not.
    """
    from uploader.bench import paced_seconds

    sub, done = result["submit_latency_s"], result["complete_latency_s"]
    sent = result["rows_sent"]
    return {
        "concurrency": result["settings"]["concurrency"],
        "batch_rows": result["settings"]["max_batch_rows"],
        "rows": sent,
        "rows_per_s": result["throughput"]["rows_per_s"],
        "mb_per_s": result["throughput"]["mb_per_s"],
        "submit_p50_s": sub["p50"],
        "submit_p95_s": sub["p95"],
        "submit_p99_s": sub["p99"],
        "complete_p50_s": done["p50"],
        "complete_p95_s": done["p95"],
        "throttled_share": result["throttled_fraction"],
        "errors": sent - result["rows_successful"] - result["rows_not_found"],
        "paced_s": paced_seconds(result),
        "stopped": result["stopped"] or "",
        # not a column: for the --html distributions and --json
        "latency_cdf_s": result["latency_cdf_s"],
    }


def recommend(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The best row by the module's rule, or None when no row qualifies."""
    measured = [
        r
        for r in rows
        if r["rows_per_s"] and r["submit_p95_s"] is not None and not r.get("stopped")
    ]
    lowest_p95: dict[int, float] = {}
    for r in measured:
        size = r["batch_rows"]
        lowest_p95[size] = min(lowest_p95.get(size, math.inf), r["submit_p95_s"])
    fit = [
        r
        for r in measured
        if r["throttled_share"] < MAX_THROTTLED_SHARE
        and r["errors"] == 0
        and r["submit_p95_s"] <= P95_FACTOR * lowest_p95[r["batch_rows"]]
    ]
    if not fit:
        return None
    best_rate = max(r["rows_per_s"] for r in fit)
    tied = [r for r in fit if r["rows_per_s"] >= (1 - TIE_SHARE) * best_rate]
    return min(tied, key=lambda r: (r["concurrency"], r["batch_rows"]))


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
    """Every combination, ``opts.rows`` rows each, as far as the budget and the target allow.

    Points run batch size by batch size, concurrency rising. A point that ends on a
    run of errors skips the higher concurrency levels of its batch size; a point
    ended by the pacing rules or by any other error ends the sweep (the next
    point would meet the same).
    """
    from uploader.bench import run_bench

    budget = _budget(max_rows, opts.pacing.daily_rows)
    if _pacing_text(opts):
        _say(progress, f"pacing applies to every point: {_pacing_text(opts)}")
    few = [size for size in batch_rows if math.ceil(opts.rows / size) < MIN_BATCHES]
    if few:
        n = math.ceil(opts.rows / max(few))
        _say(
            progress,
            f"batch rows {max(few):,} gives {n} batch{'es' if n > 1 else ''} per point: "
            f"rates over fewer than {MIN_BATCHES} batches are rough; pass --rows "
            f"{MIN_BATCHES * max(few):,} or more",
        )
    points = [(c, b) for b in batch_rows for c in concurrencies]
    rows: list[dict[str, Any]] = []
    spent = 0
    started = time.monotonic()
    skip_above: dict[int, int] = {}  # batch rows -> concurrency that ended on errors
    for i, (concurrency, size) in enumerate(points):
        if size in skip_above and concurrency > skip_above[size]:
            _say(
                progress,
                f"point {i + 1}/{len(points)} skipped: concurrency {concurrency}, batch rows "
                f"{size:,} (concurrency {skip_above[size]} ended on a run of errors)",
            )
            continue
        if budget is not None and spent + opts.rows > budget[0]:
            _say(
                progress,
                f"row budget of {budget[0]:,} ({budget[1]}) reached: "
                f"{len(points) - i} points skipped",
            )
            break
        eta = ""
        if rows:
            left = sum(1 for c, b in points[i:] if not (b in skip_above and c > skip_above[b]))
            eta = f", sweep ETA {(time.monotonic() - started) / len(rows) * left:,.0f} s"
        _say(
            progress,
            f"point {i + 1}/{len(points)}: concurrency {concurrency}, batch rows {size:,}{eta}",
        )
        point = replace(opts, concurrency=concurrency, max_batch_rows=size)
        result = await run_bench(point, work_dir / f"c{concurrency}-b{size}")
        spent += result["rows_sent"]
        rows.append(point_row(result))
        stopped = result["stopped"]
        why = result["error"] or (result["pacing"] or {}).get("stopped")
        if stopped == "errors":
            skip_above[size] = concurrency
            _say(progress, f"point {i + 1} ended early: {why}")
        elif stopped is not None:
            _say(progress, f"sweep ended at point {i + 1}: {why}")
            break
    return rows


def _budget(max_rows: int | None, daily_rows: int | None) -> tuple[int, str] | None:
    """The sweep's row budget and where it comes from, or None."""
    limits = [(n, "--max-rows") for n in (max_rows,) if n is not None]
    limits += [(n, "pacing.daily_rows") for n in (daily_rows,) if n is not None]
    return min(limits) if limits else None


def _pacing_text(opts: BenchOptions) -> str:
    p = opts.pacing
    parts = []
    if p.max_rows_per_s is not None:
        parts.append(f"at most {p.max_rows_per_s:,g} rows/s")
    if p.window is not None:
        tz = p.timezone or "local time"
        how = "else stop" if p.exit_outside_window else "else wait"
        parts.append(f"submits only in {p.window} ({tz}; {how})")
    if p.daily_rows is not None:
        parts.append(f"{p.daily_rows:,} rows for the whole sweep")
    if p.max_backlog_rows is not None:
        parts.append(f"at most {p.max_backlog_rows:,} rows not yet final")
    if p.send_for_s is not None:
        parts.append(f"each point sends for at most {p.send_for_s:g} s")
    return ", ".join(parts)


def render_sweep(rows: Sequence[dict[str, Any]], best: dict[str, Any] | None) -> str:
    """The printed table, one line per point, then the recommendation."""
    head = (
        f"{'conc':>5} {'batch':>8} {'rows/s':>10} {'MB/s':>7} {'sub p50':>8} {'p95':>7} "
        f"{'p99':>7} {'done p50':>9} {'p95':>7} {'throttled':>9} {'errors':>6}  note"
    )
    lines = [head]
    for r in rows:
        lines.append(
            f"{r['concurrency']:>5} {r['batch_rows']:>8,} {_n(r['rows_per_s'], ',.0f'):>10} "
            f"{_n(r['mb_per_s'], '.2f'):>7} {_n(r['submit_p50_s'], '.3f'):>8} "
            f"{_n(r['submit_p95_s'], '.3f'):>7} {_n(r['submit_p99_s'], '.3f'):>7} "
            f"{_n(r['complete_p50_s'], '.3f'):>9} {_n(r['complete_p95_s'], '.3f'):>7} "
            f"{r['throttled_share']:>9.1%} {r['errors']:>6}  {_note(r)}".rstrip()
        )
    if best is None:
        lines.append("no recommendation: every point was throttled, slow or had errors")
    else:
        lines.append(
            f"recommended: the most rows/s (within {TIE_SHARE:.0%}: the lower concurrency) "
            f"among points run to the end with no errors,\n  a throttled share under "
            f"{MAX_THROTTLED_SHARE:.0%} and p95 submit latency within {P95_FACTOR:g}x the "
            "lowest at their batch size:"
        )
        lines.extend("  " + line for line in recommendation_toml(best).splitlines() if line)
    return "\n".join(lines)


def sweep_html(rows: Sequence[dict[str, Any]], best: dict[str, Any] | None) -> str:
    """An offline page: rows/s, throttled share and submit latency against concurrency
    (a line per batch size), then per batch size the distributions of submit latency
    and of submit to complete (a line per concurrency), and the table."""
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
    distributions = (
        ("submit", "Submit latency", "share of submit requests within"),
        ("complete", "Submit to complete", "share of batches complete within"),
    )
    for size in sizes:
        for kind, what, y_label in distributions:
            series = {
                f"concurrency {r['concurrency']}": _cdf_series(r["latency_cdf_s"][kind])
                for r in rows
                if r["batch_rows"] == size and r["latency_cdf_s"][kind]
            }
            if series:
                title = f"{what} distribution, {size:,} rows per batch"
                chart = charts.line_chart(title.lower(), "seconds", y_label, series)
                sections.append(charts.Section(title, chart))
    sections.append(charts.Section("Points", f"<pre>{html.escape(render_sweep(rows, best))}</pre>"))
    chosen = (
        f"recommended: submit.concurrency = {best['concurrency']}, "
        f"batch.max_rows = {best['batch_rows']}"
        if best
        else "no point meets the rule"
    )
    return charts.html_page("uploader bench sweep", sections, subtitle=chosen)


def _cdf_series(cuts: Sequence[float]) -> tuple[list[float], list[float]]:
    """Percentile cuts (0th, 5th, ... 100th) as a cumulative curve: seconds -> share."""
    step = 1 / (len(cuts) - 1)
    return list(cuts), [round(i * step, 4) for i in range(len(cuts))]


def sweep_csv(rows: Sequence[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def _note(row: dict[str, Any]) -> str:
    """What the last column says: why a point ended early, or that pacing held it back."""
    if row["stopped"]:
        return f"stopped: {STOPPED[row['stopped']]}"
    return f"paced {row['paced_s']:.1f} s" if row["paced_s"] else ""


def _n(value: float | None, spec: str) -> str:
    return "-" if value is None or not math.isfinite(value) else format(value, spec)


def _say(progress: Callable[[str], None] | None, line: str) -> None:
    if progress is not None:
        progress(line)
    else:
        print(f"uploader bench: {line}", file=sys.stderr)
