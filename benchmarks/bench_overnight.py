"""Overnight simulation: a big export end to end against a realistic emulator.

``uploader run`` (child process, default settings: concurrency 8, batches of
up to 500,000 rows / 50 MB, --wait) against the emulator in its own process
with a per-submit latency of 200-500 ms, an in-flight limit of 8 and an
apply rate of 50,000 rows/s. The total time is compared with the lower
bound set by the slowest stage: chunking alone (measured first, same
machine), the ideal submit time (batches / 8 x mean latency), and applying
every row at the emulator's rate. The goal: total / bound <= 1.1.

The full size is 10,000,000 rows (the default of this program): ~1.4 GB of
CSV; on a 2-core machine expect ~8-10 minutes in all (export generation
~30 s, chunking alone, then the run, which is bound by the 200 s of
applying). The emulator runs with ``--store none`` (counts and a digest, no
profiles) and its default ``--queue-memory`` of 256 MB (the batches waiting to
be applied beyond it wait on disk), so its memory stays flat; with every
profile kept it would need about 13 GB at the full size (see
``bench_emulator``).
``python -m benchmarks`` runs it at 1,000,000 rows unless given --full.

    python -m benchmarks.bench_overnight [--quick] [--rows N]
"""

from __future__ import annotations

import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_memory import run_child
from benchmarks.common import MB, EmulatorProcess, Result, command_line, finish, out_dir, parser
from uploader.bench import percentiles
from uploader.chunk import Chunker
from uploader.gen import generate_export
from uploader.journal import Journal
from uploader.settings import BatchSettings, InputSettings

FULL_ROWS = 10_000_000
LATENCY_MS = (200.0, 500.0)
LIMIT = 8
APPLY_RATE = 50_000.0
QUEUE_MEMORY_MB = 256.0  # the emulator's default: queued bodies beyond it wait on disk


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--rows", type=int, default=None, help=f"rows (default {FULL_ROWS:,}; quick 100,000)"
    )
    p.add_argument("--data-dir", default=None, help="where the export goes (default: a temp dir)")
    ns = p.parse_args(argv)
    rows = ns.rows or (100_000 if ns.quick else FULL_ROWS)
    result = Result(
        "overnight",
        f"Overnight simulation, {rows:,} rows"
        + ("" if rows >= FULL_ROWS else f" (reduced; full size is {FULL_ROWS:,})"),
        command_line("benchmarks.bench_overnight", argv),
        params={
            "rows": rows,
            "full_size": rows >= FULL_ROWS,
            "latency_ms": list(LATENCY_MS),
            "server_limit": LIMIT,
            "apply_rate": APPLY_RATE,
            "concurrency": 8,
            "emulator_queue_memory_mb": QUEUE_MEMORY_MB,
        },
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-overnight-", dir=ns.data_dir) as tmp:
        export = Path(tmp) / "export.csv"
        t = time.perf_counter()
        generate_export(export, rows, id_prefix="N")
        gen_s = time.perf_counter() - t
        t = time.perf_counter()
        summary = Chunker(str(export), Path(tmp) / "split", InputSettings(), BatchSettings()).run()
        chunk_s = time.perf_counter() - t
        shutil.rmtree(Path(tmp) / "split")
        work = Path(tmp) / "run"
        with EmulatorProcess(
            latency_ms=LATENCY_MS,
            max_inflight=LIMIT,
            apply_rate=APPLY_RATE,
            store="none",
            queue_memory_mb=QUEUE_MEMORY_MB,
        ) as emu:
            args = [
                sys.executable, "-m", "uploader", "run", str(export),
                "--client", "bench", "--base-url", emu.base_url,
                "--work-dir", str(work), "--progress", "none", "--fresh",
            ]  # fmt: skip
            code, rss, total_s = run_child(args)
            stats = emu.stats()
            emu_rss = emu.rss_mb()
        with Journal(work / "journal.sqlite") as journal:
            records = journal.batches()
            counters = journal.counters()
    batches = len(records)
    submit_ideal = batches / LIMIT * statistics.mean(LATENCY_MS) / 1000
    apply_s = summary.rows_written / APPLY_RATE
    bound = max(chunk_s, submit_ideal, apply_s)
    t0 = min((r.submitted_at or 0) for r in records) if records else 0
    stage = [(r.accepted_at or 0) - (r.submitted_at or 0) for r in records]
    last_accept = max((r.accepted_at or 0) for r in records) - t0 if records else 0
    last_final = max((r.final_at or 0) for r in records) - t0 if records else 0
    result.cases.append(
        {
            "case": "stage",
            "generate_s": gen_s,
            "chunk_alone_s": chunk_s,
            "submit_ideal_s": submit_ideal,
            "apply_s": apply_s,
            "bound_s": bound,
            "total_s": total_s,
            "first_submit_to_last_accept_s": last_accept,
            "first_submit_to_last_final_s": last_final,
        }
    )
    result.cases.append(
        {
            "case": "run",
            "exit_code": code,
            "batches": batches,
            "rows_applied": stats["rows_applied"],
            "submits": counters.get("submits", 0),
            "throttled": counters.get("throttled", 0),
            "status_polls": counters.get("status_polls", 0),
            "peak_rss_mb": rss,
            "emulator_rss_mb": emu_rss,
            "emulator_peak_queued_memory_mb": stats["peak_queued_bytes_memory"] / MB,
            "emulator_batches_spilled": stats["batches_spilled"],
        }
    )
    result.params["submit_stage_s"] = percentiles(stage)
    result.params["input_mb"] = summary.bytes / MB if hasattr(summary, "bytes") else None
    result.add("total / lower bound", total_s / bound, "x", "<=", 1.1)
    result.add("total time", total_s, "s")
    result.add(
        "lower bound (slowest stage)",
        bound,
        "s",
        note=f"chunk {chunk_s:.1f} s, submit ideal {submit_ideal:.1f} s, apply {apply_s:.1f} s",
    )
    result.add("run exit code", code, "", "<=", 0)
    result.add("peak RSS of the run", rss, "MB")
    result.add(
        "peak RSS of the emulator (--store none)",
        emu_rss,
        "MB",
        note=f"bodies waiting in its memory peaked at {stats['peak_queued_bytes_memory'] / MB:,.0f}"
        f" MB (--queue-memory {QUEUE_MEMORY_MB:g}); {stats['batches_spilled']} of {batches} "
        "batches waited on disk",
    )
    result.add("rows/s end to end", rows / total_s, "rows/s")
    if rows < FULL_ROWS:
        result.notes.append(
            f"reduced size ({rows:,} rows); the full {FULL_ROWS:,}-row run: "
            "python -m benchmarks.bench_overnight (or python -m benchmarks --full)"
        )
    result.notes.append(
        f"emulator: latency {LATENCY_MS[0]:g}-{LATENCY_MS[1]:g} ms, limit {LIMIT}, "
        f"apply {APPLY_RATE:,.0f} rows/s, --store none; the bound ignores that applying "
        "cannot start before the first batch is chunked and accepted"
    )
    result.elapsed_s = time.perf_counter() - started
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
