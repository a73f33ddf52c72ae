"""Submission against a server with a known limit: how close do we get to ideal?

The emulator (own process) answers every submit after a fixed latency and
throttles (HTTP 429) above an in-flight limit. With L = that limit and
t = the latency, the best any client can do with B batches is
``B / L * t``; efficiency = ideal / achieved (the journal's submit window:
first submit started -> last batch accepted). Two clients side by side:
concurrency = L (should be ~ideal) and concurrency = 4 L (the adaptive
limiter must find L: we report the throttled fraction).

    python -m benchmarks.bench_submit [--quick] [--batches N] [--latency-ms 50] [--limit 8]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    SUBMIT_BENCH_APPLY_RATE,
    EmulatorProcess,
    Result,
    command_line,
    finish,
    out_dir,
    server_limit_parser,
    stats_delta,
    submit_files,
    write_batches,
)

APPLY_RATE = SUBMIT_BENCH_APPLY_RATE


def main(argv: Sequence[str] | None = None) -> int:
    p = server_limit_parser(__doc__.splitlines()[0], batches=1200, quick_batches=80)
    ns = p.parse_args(argv)
    batches = ns.batches or (80 if ns.quick else 1200)
    limit, latency = ns.limit, ns.latency_ms / 1000.0
    ideal = batches / limit * latency
    result = Result(
        "submit",
        f"Submission vs a server limit ({limit} in flight, {ns.latency_ms:g} ms per submit)",
        command_line("benchmarks.bench_submit", argv),
        params={
            "batches": batches,
            "rows_per_batch": ns.rows_per_batch,
            "latency_ms": ns.latency_ms,
            "server_limit": limit,
            "ideal_s": ideal,
        },
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-submit-") as tmp:
        files = write_batches(Path(tmp) / "batches", batches, ns.rows_per_batch)
        for factor in (1, 4):
            concurrency = limit * factor
            with EmulatorProcess(
                latency_ms=(ns.latency_ms, ns.latency_ms), max_inflight=limit, apply_rate=APPLY_RATE
            ) as emu:
                before = emu.stats()
                run = submit_files(
                    files, emu.base_url, Path(tmp) / f"run-{factor}", concurrency=concurrency
                )
                server = stats_delta(before, emu.stats())
            req = run["report"]["requests"]
            throttled = req["throttled"] / req["submits"] if req["submits"] else 0.0
            case = {
                "case": f"ours, concurrency {concurrency}",
                "accepted": run["figures"]["batches_accepted"],
                "window_s": run["window_s"],
                "wall_s": run["wall_s"],
                "ideal_s": ideal,
                "eff": ideal / run["window_s"] if run["window_s"] else None,
                "submits": req["submits"],
                "throttled": req["throttled"],
                "throttled_frac": throttled,
                "retries": req["retries"],
                "peak_inflight": server["peak_inflight"],
                "exit_code": run["exit_code"],
            }
            result.cases.append(case)
            goal = 0.95 if factor == 1 else 0.85
            result.add(
                f"efficiency, concurrency = {factor}x limit",
                case["eff"],
                op=">=",
                goal=goal,
                note="ideal / submit window",
            )
            if factor == 4:
                result.add(
                    "throttled fraction, concurrency = 4x limit", throttled, op="<", goal=0.05
                )
            if case["accepted"] != batches:
                result.notes.append(f"{case['case']}: only {case['accepted']} accepted")
    result.notes.append(
        "window = first submit started -> last batch accepted (journal timestamps); "
        "wall also includes journal setup, file hashing and the report"
    )
    result.elapsed_s = time.perf_counter() - started
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
