"""Against the documented way: a curl loop, and xargs -P curl, over the same batch files.

Adobe's documentation uploads a batch with ``curl --data-binary @file``.
Here the same batch files go to the same emulator settings (own process,
fixed latency per submit, in-flight limit L) five ways: a sequential curl
loop, ``xargs -P L curl --retry``, ``xargs -P 4L curl --retry``, and our
client at concurrency L and 4L. Each case gets a fresh emulator process.
Times are wall clock of the whole command (for us: the whole in-process
``uploader submit`` run, journal and report included). Goal: our speed-up
over the sequential loop >= 0.9 x L.

    python -m benchmarks.bench_curl [--quick] [--batches N] [--latency-ms 50] [--limit 8]
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    SUBMIT_BENCH_APPLY_RATE,
    EmulatorProcess,
    Result,
    command_line,
    curl_parallel,
    curl_sequential,
    finish,
    out_dir,
    server_limit_parser,
    stats_delta,
    submit_files,
    write_batches,
)

APPLY_RATE = SUBMIT_BENCH_APPLY_RATE


def main(argv: Sequence[str] | None = None) -> int:
    p = server_limit_parser(__doc__.splitlines()[0], batches=200, quick_batches=40)
    ns = p.parse_args(argv)
    if shutil.which("curl") is None:
        print("curl is not installed: skipping")
        return 0
    batches = ns.batches or (40 if ns.quick else 200)
    limit = ns.limit
    result = Result(
        "curl",
        f"Against curl ({batches} batches, {ns.latency_ms:g} ms per submit, limit {limit})",
        command_line("benchmarks.bench_curl", argv),
        params={
            "batches": batches,
            "rows_per_batch": ns.rows_per_batch,
            "latency_ms": ns.latency_ms,
            "server_limit": limit,
            "ideal_s": batches / limit * ns.latency_ms / 1000,
        },
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-curl-") as tmp:
        files = write_batches(Path(tmp) / "batches", batches, ns.rows_per_batch)
        times: dict[str, float] = {}

        def case(name: str, run: Callable[[EmulatorProcess], tuple[float, dict[str, Any]]]) -> None:
            with EmulatorProcess(
                latency_ms=(ns.latency_ms, ns.latency_ms), max_inflight=limit, apply_rate=APPLY_RATE
            ) as emu:
                before = emu.stats()
                seconds, extra = run(emu)
                server = stats_delta(before, emu.stats())
            times[name] = seconds
            result.cases.append(
                {
                    "case": name,
                    "wall_s": seconds,
                    "batches_per_s": batches / seconds,
                    "accepted": server["batches_accepted"],
                    "requests": server["submits"],
                    "throttled": server["throttled"],
                    "peak_inflight": server["peak_inflight"],
                    **extra,
                }
            )

        def curl_seq(emu: EmulatorProcess) -> tuple[float, dict[str, Any]]:
            seconds, code = curl_sequential(files, emu.submit_url())
            return seconds, {"exit_code": code}

        def curl_par(n: int) -> Callable[[EmulatorProcess], tuple[float, dict[str, Any]]]:
            def run(emu: EmulatorProcess) -> tuple[float, dict[str, Any]]:
                seconds, code = curl_parallel(files, emu.submit_url(), n)
                return seconds, {"exit_code": code}

            return run

        def ours(n: int) -> Callable[[EmulatorProcess], tuple[float, dict[str, Any]]]:
            def run(emu: EmulatorProcess) -> tuple[float, dict[str, Any]]:
                r = submit_files(files, emu.base_url, Path(tmp) / f"ours-{n}", concurrency=n)
                return r["wall_s"], {"exit_code": r["exit_code"], "window_s": r["window_s"]}

            return run

        case("curl loop (sequential)", curl_seq)
        case(f"xargs -P {limit} curl --retry", curl_par(limit))
        case(f"xargs -P {4 * limit} curl --retry", curl_par(4 * limit))
        case(f"ours, concurrency {limit}", ours(limit))
        case(f"ours, concurrency {4 * limit}", ours(4 * limit))
    seq = times["curl loop (sequential)"]
    for c in result.cases:
        c["speedup_vs_seq"] = seq / c["wall_s"]
    goal = 0.9 * limit
    result.add(
        f"ours (concurrency {limit}) speed-up over curl loop",
        seq / times[f"ours, concurrency {limit}"],
        "x",
        ">=",
        goal,
    )
    result.add(
        f"ours (concurrency {4 * limit}) speed-up over curl loop",
        seq / times[f"ours, concurrency {4 * limit}"],
        "x",
        ">=",
        goal,
    )
    result.add(
        f"xargs -P {limit} curl speed-up over curl loop",
        seq / times[f"xargs -P {limit} curl --retry"],
        "x",
    )
    result.add(
        f"ours (concurrency {limit}) vs xargs -P {limit} curl",
        times[f"xargs -P {limit} curl --retry"] / times[f"ours, concurrency {limit}"],
        "x",
        note="> 1: we are faster",
    )
    result.notes.append(
        f"goal: speed-up over the sequential loop >= 0.9 x limit = {goal:g}; "
        "the loop pays one curl process start per batch on top of the server latency"
    )
    result.elapsed_s = time.perf_counter() - started
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
