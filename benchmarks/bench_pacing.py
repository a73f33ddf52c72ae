"""Pacing accuracy: the rows/s achieved under ``--max-rows-per-s`` against a fast emulator.

``uploader run`` (child process) with ``--max-rows-per-s 20000`` on a 200,000-row
export (batches of 5,000 rows) against an emulator that answers at once and
applies a million rows per second, so the cap is the only thing that sets the
pace. The achieved rate is the rows submitted over the span from the first
submit to the last one accepted (journal times): the token bucket starts with
one batch of credit, so it may run up to one batch ahead of the cap. Goal:
within 5% of the cap.

    python -m benchmarks.bench_pacing [--quick] [--rows N] [--cap R]
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_memory import run_child
from benchmarks.common import EmulatorProcess, Result, command_line, finish, out_dir, parser
from uploader.gen import generate_export
from uploader.journal import Journal

ROWS, CAP, BATCH = 200_000, 20_000.0, 5_000


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help=f"rows (default {ROWS:,})")
    p.add_argument("--cap", type=float, default=CAP, help=f"rows per second (default {CAP:g})")
    ns = p.parse_args(argv)
    rows = ns.rows or (40_000 if ns.quick else ROWS)
    result = Result(
        "pacing",
        f"Pacing accuracy, --max-rows-per-s {ns.cap:g} on {rows:,} rows",
        command_line("benchmarks.bench_pacing", argv),
        params={"rows": rows, "cap_rows_per_s": ns.cap, "batch_rows": BATCH},
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-pacing-") as tmp:
        export = Path(tmp) / "export.csv"
        info = generate_export(export, rows, id_prefix="P")
        work = Path(tmp) / "run"
        with EmulatorProcess(apply_rate=1_000_000.0, store="none") as emu:
            args = [
                sys.executable, "-m", "uploader", "run", str(export),
                "--client", "bench", "--base-url", emu.base_url, "--work-dir", str(work),
                "--progress", "none", "--max-batch-rows", str(BATCH),
                "--max-rows-per-s", f"{ns.cap:g}",
            ]  # fmt: skip
            code, rss, total_s = run_child(args)
        with Journal(work / "journal.sqlite") as journal:
            records = journal.batches()
    first = min(r.submitted_at or 0.0 for r in records)
    last = max(r.accepted_at or 0.0 for r in records)
    sent = sum(r.rows for r in records)
    achieved = sent / (last - first)
    starts = sorted(r.submitted_at or 0.0 for r in records)
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    result.cases.append(
        {
            "exit_code": code,
            "rows_valid": info.valid_rows,
            "rows_sent": sent,
            "batches": len(records),
            "first_submit_to_last_accept_s": last - first,
            "mean_gap_between_submits_s": sum(gaps) / len(gaps) if gaps else None,
            "ideal_gap_s": BATCH / ns.cap,
            "total_s": total_s,
            "peak_rss_mb": rss,
        }
    )
    error = (achieved / ns.cap - 1) * 100
    result.add("achieved rows/s", achieved, "rows/s", note=f"cap {ns.cap:,.0f}")
    result.add("deviation from the cap", abs(error), "%", "<=", 5.0, note=f"{error:+.2f} %")
    result.add("run exit code", code, "", "<=", 0)
    result.notes.append(
        "achieved = rows sent / (last accepted - first submitted); the bucket holds one "
        f"batch ({BATCH:,} rows), so the first batch goes at once"
    )
    result.elapsed_s = time.perf_counter() - started
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
