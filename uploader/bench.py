"""``uploader bench``: measure the real pipeline against a target, end to end.

Generates a synthetic export (``gen.py``), runs ``pipeline.run_pipeline`` on
it exactly as ``uploader run`` would, against the built-in emulator (started
in this process, with latency, an in-flight limit and an apply rate) or
against ``--base-url``, then reads the journal for the per-batch timestamps
and prints one table (``--json PATH`` also writes the figures).

The figures, and the keys of the JSON document:

* ``rows``, ``batches``, ``bytes``: what was generated and sent;
  ``rows_submitted``: rows put into batches (report.json's ``rows.submitted``);
  ``rows_sent``: rows of the batches the run began to send (fewer when a time box,
  a pacing rule or a run of errors ended it early);
  ``expected_batches`` = ceil(rows / max_batch_rows) when the row bound binds.
* ``submit_window_s``: first submit started -> last batch accepted (journal);
  ``throughput`` over that window: ``rows_per_s``, ``mb_per_s`` (1 MB = 1e6
  bytes), ``batches_per_s``; None with fewer than 2 accepted batches (the
  window of one batch is its own latency, not a rate).
* ``submit_latency_s``: p50/p95/p99 of single HTTP submit requests (the
  Submitter's own timings); ``submit_stage_s``: submitted_at -> accepted_at
  per batch (includes waiting for a slot of the adaptive limiter and retries).
* ``complete_latency_s``: submitted_at -> final_at of batches that completed.
* ``latency_cdf_s``: the distributions behind both, as the 0th, 5th, ... 100th
  percentiles in seconds (``submit`` and ``complete``; empty without values).
* ``requests``: submits, retries, throttled, status_polls (journal counters);
  ``throttled_fraction`` = throttled / submits.
* ``peak_rss_mb``: ru_maxrss of this process (it includes the in-process
  emulator unless ``--base-url`` is given).
* ``elapsed_s`` (whole pipeline run), ``generate_s``, ``status`` and
  ``exit_code`` of the run, ``machine``, ``settings``, ``target``.

Timings go to stdout as a table; nothing here asserts a speed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rich import filesize

from uploader.emulator import Emulator, EmulatorConfig
from uploader.emulator.config import STORES, parse_latency
from uploader.errors import ConfigError
from uploader.gen import generate_export
from uploader.journal import BatchRecord, Journal
from uploader.settings import (
    MAX_BATCH_BYTES,
    PacingSettings,
    Settings,
    is_loopback_host,
    load_settings,
)
from uploader.states import BatchState

__all__ = [
    "BenchOptions",
    "add_arguments",
    "batch_figures",
    "machine_info",
    "main",
    "options_from_args",
    "percentiles",
    "run_bench",
]

MB = 1_000_000
MIN_RATE_BATCHES = 2  # a throughput needs at least this many accepted batches
EXIT_OK, EXIT_ERROR = 0, 1
# Ids of a safe bench: documented as reserved, so nobody's real visitors carry them.
SAFE_ID_PREFIX = "uploader-bench-"


@dataclass(frozen=True)
class BenchOptions:
    """One benchmark run (defaults are the ``--help`` defaults)."""

    rows: int = 100_000
    id_prefix: str = "B"
    seed: int = 0
    max_batch_rows: int = 1_000
    max_batch_bytes: int = 50_000_000
    concurrency: int = 8
    api: str = "v2"
    adaptive: bool = True  # the adaptive limiter below `concurrency`, as in `uploader run`
    wait: bool = True
    poll_initial_s: float = 0.5
    poll_max_s: float = 5.0
    # The built-in emulator (ignored with base_url).
    latency_ms: tuple[float, float] = (50.0, 50.0)
    max_inflight: int | None = None
    apply_rate: float = 1_000_000.0
    retry_after_s: float = 1.0
    store: str = "none"  # the emulator keeps counts and a digest: memory stays flat
    # Politeness: the operator's pacing rules (--config's [pacing], pacing flags), and
    # the end of a run after this many submit errors in a row (None: never).
    pacing: PacingSettings = field(default_factory=PacingSettings)
    stop_after_errors: int | None = 5
    # An external target.
    base_url: str | None = None
    client: str = "bench"
    work_dir: Path | None = None
    keep: bool = False
    loop: str = "auto"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``uploader bench`` (every default shown in ``--help``)."""
    d = BenchOptions()
    add = parser.add_argument
    g = parser.add_argument_group("workload")
    g.add_argument("--rows", type=int, default=d.rows, help=f"rows to generate (default: {d.rows})")
    g.add_argument(
        "--id-prefix",
        default=None,
        help=f"profile ids are PREFIX1.. (default: {d.id_prefix}; in safe mode "
        f"{SAFE_ID_PREFIX}RUNID-, and only that)",
    )
    g.add_argument("--seed", type=int, default=d.seed, help=f"generator seed (default: {d.seed})")
    g.add_argument(
        "--max-batch-rows",
        "--batch-rows",
        type=_int_list,
        default=[d.max_batch_rows],
        metavar="N[,N...]",
        help=f"rows per batch; a list sweeps (default: {d.max_batch_rows})",
    )
    g.add_argument(
        "--max-batch-bytes",
        type=int,
        default=d.max_batch_bytes,
        metavar="N",
        help=f"bytes per batch (default: {d.max_batch_bytes})",
    )
    g = parser.add_argument_group("client")
    g.add_argument(
        "--concurrency",
        type=_int_list,
        default=[d.concurrency],
        metavar="N[,N...]",
        help=f"max submits in flight; a list sweeps, e.g. 1,2,4,8,16 (default: {d.concurrency})",
    )
    g.add_argument(
        "--api",
        choices=("v1", "v2"),
        default=None,
        help=f"(default: {d.api} against the emulator or a loopback host; v1 in safe mode)",
    )
    g.add_argument(
        "--adaptive",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="lower the submits in flight on 429 as `uploader run` does (default: --adaptive "
        "for one point; a sweep measures each level as given unless --adaptive)",
    )
    g.add_argument(
        "--stop-after-errors",
        type=int,
        default=d.stop_after_errors,
        metavar="N",
        help="end a run (a sweep point) after N submit attempts in a row failed with an error "
        f"other than throttling; 0: never (default: {d.stop_after_errors})",
    )
    g.add_argument(
        "--wait",
        action=argparse.BooleanOptionalAction,
        default=d.wait,
        help="follow batches to `complete` (default: --wait; needed for complete latency)",
    )
    g.add_argument(
        "--poll-initial",
        type=float,
        default=d.poll_initial_s,
        metavar="S",
        help=f"first status poll after S seconds (default: {d.poll_initial_s})",
    )
    g.add_argument(
        "--poll-max",
        type=float,
        default=d.poll_max_s,
        metavar="S",
        help=f"longest interval between polls (default: {d.poll_max_s})",
    )
    g.add_argument(
        "--loop",
        choices=("auto", "uvloop", "asyncio"),
        default=d.loop,
        help=f"event loop (default: {d.loop})",
    )
    from uploader.cli import add_pacing_arguments

    g.add_argument(
        "--config",
        default=None,
        metavar="PATH",
        help="TOML config whose [pacing] section applies (pacing flags win); nothing else "
        "of it is used (default: none)",
    )
    add_pacing_arguments(parser)
    g = parser.add_argument_group("built-in emulator (default: target)")
    g.add_argument(
        "--latency-ms",
        type=parse_latency,
        default=d.latency_ms,
        metavar="A-B",
        help="latency of every submit, uniform in A-B ms (default: 50)",
    )
    g.add_argument(
        "--max-inflight",
        type=int,
        default=d.max_inflight,
        metavar="N",
        help="HTTP 429 above N submits in flight (default: no limit)",
    )
    g.add_argument(
        "--apply-rate",
        type=float,
        default=d.apply_rate,
        metavar="R",
        help=f"rows applied per second (default: {d.apply_rate:g})",
    )
    g.add_argument(
        "--retry-after",
        type=float,
        default=d.retry_after_s,
        metavar="S",
        help=f"Retry-After of a 429 (default: {d.retry_after_s:g})",
    )
    g.add_argument(
        "--store",
        choices=STORES,
        default=d.store,
        help="emulator profile store: none keeps counts and a digest (flat memory), full "
        f"keeps every profile (about 1.3 KB each) (default: {d.store})",
    )
    g = parser.add_argument_group("external target (instead of the emulator)")
    g.add_argument("--base-url", default=None, metavar="URL", help="API base URL (default: none)")
    g.add_argument(
        "--client", default=d.client, metavar="CODE", help=f"client code (default: {d.client})"
    )
    g.add_argument(
        "--safe",
        action="store_true",
        help="safe mode even against a loopback host: v1 and synthetic ids, so no profile "
        "is created or changed (default: on for any host that is not loopback)",
    )
    g.add_argument(
        "--allow-writes",
        action="store_true",
        help="against a host that is not loopback, allow v2 and --id-prefix: the bench then "
        "creates or changes real profiles (default: refuse)",
    )
    g = parser.add_argument_group("output")
    add("--json", default=None, metavar="PATH", help="also write the figures as JSON here")
    add("--csv", default=None, metavar="PATH", help="sweep: also write one CSV row per point")
    add(
        "--html",
        default=None,
        metavar="PATH",
        help="sweep: an offline page with throughput and latency by concurrency (extra [html])",
    )
    add(
        "--recommend-to",
        default=None,
        metavar="FILE",
        help="sweep: write the recommended submit.concurrency and batch.max_rows as TOML",
    )
    add(
        "--max-rows",
        type=int,
        default=None,
        metavar="N",
        help="sweep: stop before the rows sent would pass N (default: no budget)",
    )
    add("--work-dir", default=None, metavar="DIR", help="keep export and run here (default: temp)")
    add("--keep", action="store_true", help="keep the temporary work dir (default: delete)")


def options_from_args(ns: argparse.Namespace) -> BenchOptions:
    """The options of the command line, made safe (see ``safe_mode``)."""
    opts = BenchOptions(
        rows=ns.rows,
        id_prefix=ns.id_prefix or BenchOptions.id_prefix,
        seed=ns.seed,
        max_batch_rows=ns.max_batch_rows[0],
        max_batch_bytes=ns.max_batch_bytes,
        concurrency=ns.concurrency[0],
        api=ns.api or BenchOptions.api,
        adaptive=ns.adaptive if ns.adaptive is not None else not _is_sweep(ns),
        wait=ns.wait,
        poll_initial_s=ns.poll_initial,
        poll_max_s=ns.poll_max,
        latency_ms=(float(ns.latency_ms[0]), float(ns.latency_ms[1])),
        max_inflight=ns.max_inflight,
        apply_rate=ns.apply_rate,
        store=ns.store,
        retry_after_s=ns.retry_after,
        base_url=ns.base_url,
        client=ns.client,
        work_dir=Path(ns.work_dir) if ns.work_dir else None,
        keep=ns.keep,
        loop=ns.loop,
        pacing=pacing_from_args(ns),
        stop_after_errors=ns.stop_after_errors or None,
    )
    safe = ns.safe or (_external(opts.base_url) and not ns.allow_writes)
    if not safe:
        return opts
    if ns.api == "v2" or ns.id_prefix is not None:
        raise ConfigError(
            f"bench against {opts.base_url} runs in safe mode (v1, ids {SAFE_ID_PREFIX}RUNID-N): "
            "--api v2 and --id-prefix would create or change real profiles; "
            "pass --allow-writes to do that on purpose"
        )
    return safe_mode(opts, secrets.token_hex(4))


def pacing_from_args(ns: argparse.Namespace) -> PacingSettings:
    """The ``[pacing]`` section of ``--config``, with the pacing flags over it."""
    from uploader.cli import PACING_FLAGS

    flags = {key: getattr(ns, dest, None) for dest, key in PACING_FLAGS.items()}
    return load_settings(ns.config, flags, environ={}, require_client=False).pacing


def safe_mode(opts: BenchOptions, run_id: str) -> BenchOptions:
    """v1 and ids under the reserved prefix: v1 never creates a profile, so ids that no
    visitor has end as ``profilesNotFound`` and nothing in the account changes, while the
    submit, queue and processing path of the server is exercised all the same."""
    return replace(opts, api="v1", id_prefix=f"{SAFE_ID_PREFIX}{run_id}-")


def writes_notice(opts: BenchOptions) -> str | None:
    """The confirmation line printed before a bench that writes to a real account."""
    if not _external(opts.base_url) or (
        opts.api == "v1" and opts.id_prefix.startswith(SAFE_ID_PREFIX)
    ):
        return None
    return (
        f"uploader bench: --allow-writes: {opts.rows:,} synthetic profiles (ids "
        f"{opts.id_prefix}1..) go to {opts.base_url} client {opts.client} with the {opts.api} "
        "API; they create or change profiles in that account"
    )


def _external(base_url: str | None) -> bool:
    return base_url is not None and not is_loopback_host(urlsplit(base_url).hostname or "")


def main(ns: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write ``--json``; 0 when the run completed
    (or sent for its ``--send-for`` and followed what it sent)."""
    from uploader.cli import run_async

    try:
        opts = options_from_args(ns)
    except ConfigError as exc:
        print(f"uploader bench: {exc}", file=sys.stderr)
        return 2
    notice = writes_notice(opts)
    if notice:
        print(notice, file=sys.stderr)
    if opts.rows < 1:
        print("uploader bench: --rows must be at least 1", file=sys.stderr)
        return 2
    if _is_sweep(ns):
        return _sweep(ns, opts)
    with _work_dir(opts) as work_dir:
        result = run_async(run_bench(opts, work_dir), opts.loop)
    render_table(result)
    # exit 3 without a cause is the planned end of --send-for (see stopped_by)
    finished = result["exit_code"] == 0 or (result["exit_code"] == 3 and not result["stopped"])
    if ns.json:
        path = Path(ns.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return EXIT_OK if finished else EXIT_ERROR


def _sweep(ns: argparse.Namespace, opts: BenchOptions) -> int:
    """Every combination of the lists; one row per point, the recommendation, the files."""
    from uploader import sweep
    from uploader.cli import run_async

    with _work_dir(opts) as work_dir:
        rows = run_async(
            sweep.run_sweep(
                opts, ns.concurrency, ns.max_batch_rows, work_dir, max_rows=ns.max_rows
            ),
            opts.loop,
        )
    best = sweep.recommend(rows)
    print(sweep.render_sweep(rows, best))
    outputs = [
        (ns.json, json.dumps(_sweep_document(rows, best, opts), indent=2) + "\n"),
        (ns.csv, sweep.sweep_csv(rows)),
        (ns.recommend_to, sweep.recommendation_toml(best) if best else None),
        (ns.html, sweep.sweep_html(rows, best) if ns.html else None),
    ]
    for target, text in outputs:
        if target and text is not None:
            path = Path(target)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return EXIT_OK if best is not None else EXIT_ERROR


def _sweep_document(
    rows: list[dict[str, Any]], best: dict[str, Any] | None, opts: BenchOptions
) -> dict[str, Any]:
    """The ``--json`` of a sweep: the points, the recommended one, the rules they ran under."""
    return {
        "points": rows,
        "recommended": best,
        "pacing": asdict(opts.pacing),
        "stop_after_errors": opts.stop_after_errors,
    }


def _is_sweep(ns: argparse.Namespace) -> bool:
    return len(ns.concurrency) > 1 or len(ns.max_batch_rows) > 1


def _int_list(text: str) -> list[int]:
    from uploader.sweep import parse_int_list

    try:
        return parse_int_list(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


@contextlib.contextmanager
def _work_dir(opts: BenchOptions) -> Iterator[Path]:
    if opts.work_dir is not None:
        opts.work_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        yield opts.work_dir
        return
    tmp = tempfile.mkdtemp(prefix="uploader-bench-")
    try:
        yield Path(tmp)
    finally:
        if opts.keep:
            print(f"uploader bench: kept {tmp}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)


def settings_for(opts: BenchOptions, base_url: str) -> Settings:
    """The run settings: product defaults except what the benchmark varies."""
    overrides: dict[str, Any] = {
        "target.client": opts.client,
        "target.base_url": base_url,
        "target.api": opts.api,
        "batch.max_rows": opts.max_batch_rows,
        "batch.max_bytes": min(opts.max_batch_bytes, MAX_BATCH_BYTES - 1),
        "submit.concurrency": opts.concurrency,
        "submit.adaptive": opts.adaptive,
        "status.wait": opts.wait,
        "status.poll_initial_s": opts.poll_initial_s,
        "status.poll_max_s": max(opts.poll_max_s, opts.poll_initial_s),
        "submit.stop_after_errors": opts.stop_after_errors,
        "run.progress": "none",
        "run.fresh": True,
    }
    for key, value in asdict(opts.pacing).items():
        overrides[f"pacing.{key}"] = value
    return load_settings(None, overrides)


async def run_bench(opts: BenchOptions, work_dir: Path) -> dict[str, Any]:
    """Generate, run the pipeline, and return the figures (the JSON document)."""
    started = time.perf_counter()
    info = generate_export(
        work_dir / "export.csv", opts.rows, seed=opts.seed, id_prefix=opts.id_prefix
    )
    generate_s = time.perf_counter() - started
    async with _target(opts) as (base_url, emulator):
        settings = settings_for(opts, base_url)
        run_dir = work_dir / "run"
        began = time.perf_counter()
        from uploader.pipeline import run_pipeline

        outcome = await run_pipeline(
            str(info.path),
            settings,
            run_dir,
            job_id=f"bench-{opts.rows}",
            install_signals=False,
        )
        elapsed = time.perf_counter() - began
        emulator_stats = emulator.stats() if emulator else None
    with Journal(run_dir / "journal.sqlite") as journal:
        records = journal.batches()
    report = outcome.report
    requests = {k: int(report["requests"].get(k, 0)) for k in _REQUEST_KEYS}
    pacing = report["pacing"]
    figures = batch_figures(records, list(outcome.submit_latencies_s))
    expected = math.ceil(info.valid_rows / opts.max_batch_rows)
    return {
        "rows": opts.rows,
        "rows_submitted": int(report["rows"]["submitted"]),
        "rows_sent": sum(r.rows for r in records if r.submitted_at is not None),
        "rows_successful": int(report["rows"]["successful"]),
        "rows_not_found": int(report["rows"]["not_found"]),
        "batches": len(records),
        "expected_batches": expected,
        "bytes": sum(r.bytes for r in records),
        **figures,
        "requests": requests,
        "throttled_fraction": _ratio(requests["throttled"], requests["submits"]),
        "retried_fraction": _ratio(requests["retries"], requests["submits"]),
        "peak_rss_mb": round(peak_rss_bytes() / MB, 1),
        "peak_rss_includes_emulator": emulator_stats is not None,
        "elapsed_s": round(elapsed, 3),
        "generate_s": round(generate_s, 3),
        "status": report["status"],
        "exit_code": outcome.exit_code,
        "error": report["error"],
        "stopped": stopped_by(outcome.exit_code, report["error"], pacing),
        "pacing": pacing,
        "settings": {
            "concurrency": opts.concurrency,
            "adaptive": opts.adaptive,
            "max_batch_rows": opts.max_batch_rows,
            "max_batch_bytes": settings.batch.max_bytes,
            "api": opts.api,
            "id_prefix": opts.id_prefix,
            "wait": opts.wait,
            "poll_initial_s": opts.poll_initial_s,
            "poll_max_s": settings.status.poll_max_s,
            "stop_after_errors": opts.stop_after_errors,
        },
        "target": {
            "base_url": base_url,
            "emulator": emulator_stats is not None,
            "latency_ms": list(opts.latency_ms) if emulator_stats is not None else None,
            "max_inflight": opts.max_inflight if emulator_stats is not None else None,
            "apply_rate": opts.apply_rate if emulator_stats is not None else None,
            "store": opts.store if emulator_stats is not None else None,
        },
        "emulator_stats": emulator_stats,
        "options": {k: str(v) if isinstance(v, Path) else v for k, v in asdict(opts).items()},
        "machine": machine_info(),
    }


_REQUEST_KEYS = ("submits", "retries", "throttled", "status_polls")


def stopped_by(exit_code: int, error: str | None, pacing: dict[str, Any] | None) -> str | None:
    """Why a bench run ended before its last row was final; None when it did not.

    ``errors``: a run of submit errors (``submit.stop_after_errors``); ``pacing``: a
    pacing rule ended it (outside the window with exit_outside_window, or the daily
    budget); ``error``: anything else that ended it early (credentials, the server
    lost, the status timeout, an internal error). The end of ``pacing.send_for_s``
    (``--send-for``) is the planned end of a time-boxed run, not an early stop.
    """
    if exit_code in (0, 1):
        return None
    if pacing and pacing.get("stopped"):
        return None if pacing.get("stopped_rule") == "time" else "pacing"
    if error and "submit.stop_after_errors" in error:  # ErrorStreakError's message
        return "errors"
    return "error"


@contextlib.asynccontextmanager
async def _target(opts: BenchOptions) -> AsyncIterator[tuple[str, Emulator | None]]:
    if opts.base_url:
        yield opts.base_url, None
        return
    config = EmulatorConfig(
        apply_rate=opts.apply_rate,
        latency_ms=opts.latency_ms,
        max_inflight=opts.max_inflight,
        retry_after_s=opts.retry_after_s,
        store=opts.store,
    )
    async with Emulator(config) as emu:
        yield emu.base_url, emu


def batch_figures(
    records: Sequence[BatchRecord], request_latencies: Sequence[float] | None
) -> dict[str, Any]:
    """Throughput and latency figures from the journal's per-batch timestamps."""
    accepted = [r for r in records if r.submitted_at is not None and r.accepted_at is not None]
    window = 0.0
    if accepted:
        window = max(_f(r.accepted_at) for r in accepted) - min(
            _f(r.submitted_at) for r in accepted
        )
    rows = sum(r.rows for r in accepted)
    size = sum(r.bytes for r in accepted)
    stage = [_f(r.accepted_at) - _f(r.submitted_at) for r in accepted]
    complete = [
        _f(r.final_at) - _f(r.submitted_at)
        for r in records
        if r.state is BatchState.COMPLETE and r.submitted_at is not None and r.final_at is not None
    ]
    rated = window > 0 and len(accepted) >= MIN_RATE_BATCHES
    return {
        "batches_accepted": len(accepted),
        "submit_window_s": round(window, 4),
        "throughput": {
            "rows_per_s": round(rows / window, 1) if rated else None,
            "mb_per_s": round(size / MB / window, 3) if rated else None,
            "batches_per_s": round(len(accepted) / window, 2) if rated else None,
        },
        "submit_latency_s": percentiles(request_latencies or []),
        "submit_latency_source": "submitter" if request_latencies is not None else "unavailable",
        "submit_stage_s": percentiles(stage),
        "complete_latency_s": percentiles(complete),
        "latency_cdf_s": {
            "submit": cdf(request_latencies or []),
            "complete": cdf(complete),
        },
    }


CDF_STEP = 5  # latency_cdf_s: every 5th percentile, 0 to 100


def cdf(values: Sequence[float]) -> list[float]:
    """The 0th, 5th, ... 100th percentiles of ``values`` (as ``percentiles`` computes
    them; the 0th is the smallest, the 100th the largest); [] without values."""
    if not values:
        return []
    inner = percentiles(values, range(CDF_STEP, 100, CDF_STEP))
    return [
        round(min(values), 4),
        *(inner[f"p{p}"] for p in range(CDF_STEP, 100, CDF_STEP)),
        round(max(values), 4),
    ]


def percentiles(values: Sequence[float], points: Sequence[int] = (50, 95, 99)) -> dict[str, Any]:
    """Percentiles with linear interpolation between the nearest values (the
    standard library's "inclusive" method; None when there are no values), and ``n``."""
    out: dict[str, Any] = {"n": len(values)}
    if len(values) == 1:  # statistics.quantiles needs two points before Python 3.13
        cuts = [float(values[0])] * 99
    elif values:
        cuts = statistics.quantiles(values, n=100, method="inclusive")
    for p in points:
        out[f"p{p}"] = round(cuts[p - 1], 4) if values else None
    return out


def _f(value: float | None) -> float:
    assert value is not None
    return value


def _ratio(a: int, b: int) -> float:
    return round(a / b, 4) if b else 0.0


def peak_rss_bytes() -> int:
    """Peak resident set size of this process (ru_maxrss is KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(rss if sys.platform == "darwin" else rss * 1024)


def machine_info() -> dict[str, Any]:
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "machine": platform.machine(),
    }


def render_table(result: dict[str, Any]) -> None:
    """The figures as one rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="uploader bench", title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for name, value in _table_rows(result):
        table.add_row(name, value)
    Console().print(table)


def _table_rows(r: dict[str, Any]) -> list[tuple[str, str]]:
    tp, req = r["throughput"], r["requests"]
    t = r["target"]
    where = t["base_url"]
    if t["emulator"]:
        low, high = t["latency_ms"]
        lat = f"{low:g}" if low == high else f"{low:g}-{high:g}"
        where += f" (emulator: latency {lat} ms, max in flight {t['max_inflight']}, "
        where += f"apply {t['apply_rate']:g} rows/s)"
    s = r["settings"]
    size = filesize.decimal(r["bytes"])
    return [
        ("target", where),
        ("rows / batches / size", f"{r['rows']:,} / {r['batches']:,} / {size}"),
        ("concurrency / batch rows", f"{s['concurrency']} / {s['max_batch_rows']:,}"),
        ("submit window", f"{r['submit_window_s']:.3f} s"),
        ("throughput rows/s", _num(tp["rows_per_s"], ",.0f")),
        ("throughput MB/s", _num(tp["mb_per_s"], ".2f")),
        ("throughput batches/s", _num(tp["batches_per_s"], ".1f")),
        ("submit request p50/p95/p99", _pct(r["submit_latency_s"])),
        ("submit stage p50/p95/p99", _pct(r["submit_stage_s"])),
        ("submit -> complete p50/p95/p99", _pct(r["complete_latency_s"])),
        (
            "submits / retries / throttled",
            f"{req['submits']} / {req['retries']} / {req['throttled']}",
        ),
        ("throttled fraction", f"{r['throttled_fraction']:.2%}"),
        ("status polls", f"{req['status_polls']}"),
        (
            "peak RSS" + (" (incl. emulator)" if r["peak_rss_includes_emulator"] else ""),
            f"{r['peak_rss_mb']:.1f} MB",
        ),
        ("run elapsed / generate", f"{r['elapsed_s']:.2f} s / {r['generate_s']:.2f} s"),
        ("status / exit code", f"{r['status']} / {r['exit_code']}"),
        *([("stopped", str(r["error"]))] if r["error"] else []),
        *([("held back by pacing", f"{paced_seconds(r):.2f} s")] if r["pacing"] else []),
    ]


def paced_seconds(result: dict[str, Any]) -> float:
    """Seconds the pacing rules held submits back in one bench run (0.0 without pacing)."""
    pacing = result["pacing"]
    return round(sum(pacing["waited_s"].values()), 3) if pacing else 0.0


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _pct(p: dict[str, Any]) -> str:
    if not p["n"]:
        return "-"
    return " / ".join(f"{p[k] * 1000:.1f}" for k in ("p50", "p95", "p99")) + f" ms (n={p['n']})"
