"""Reading a load back: profiles verified per second, next to the submit throughput.

One emulator (own process) answers submits and profile fetches after the
same fixed latency (default 50 ms). A generated CRM export goes through
``uploader run``; then ``uploader verify --all --rate 0`` fetches every
profile back, at concurrency 8 (the default) and 32. A fetch is one profile
per request, so with latency t the best a client can do at concurrency c is
``c / t`` profiles per second: efficiency = measured / that bound. Submits
carry thousands of rows per request, so rows submitted per second are
shown only for scale: checking every id of a load takes far longer than
loading it, which is why a sample is the default.

    python -m benchmarks.bench_verify [--quick] [--rows N] [--latency-ms 50]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS_DIR,
    EmulatorProcess,
    Result,
    command_line,
    finish,
    parser,
)
from uploader.gen import generate_export

CONCURRENCIES = (8, 32)


def _uploader(*args: str) -> tuple[int, float]:
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "uploader", *args, "--progress", "none"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"uploader {args[0]} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc.returncode, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="export rows (default 20000; quick 2000)")
    p.add_argument("--latency-ms", type=float, default=50.0, help="per request (default 50)")
    ns = p.parse_args(argv)
    rows = ns.rows or (2000 if ns.quick else 20_000)
    latency_s = ns.latency_ms / 1000.0
    result = Result(
        "verify",
        f"Verify vs submit ({rows:,} rows, {ns.latency_ms:g} ms per request)",
        command_line("benchmarks.bench_verify", argv),
        params={"rows": rows, "latency_ms": ns.latency_ms, "concurrencies": CONCURRENCIES},
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        export, work = Path(tmp) / "export.csv", Path(tmp) / "run"
        gen = generate_export(export, rows, seed=7, invalid_every=0)
        with EmulatorProcess(
            latency_ms=(ns.latency_ms, ns.latency_ms),
            fetch_latency_ms=(ns.latency_ms, ns.latency_ms),
        ) as emu:
            code, _ = _uploader(
                "run", str(export), "--client", "bench", "--base-url", emu.base_url,
                "--work-dir", str(work), "--max-batch-rows", str(max(1, rows // 20)),
            )  # fmt: skip
            report = json.loads((work / "report.json").read_text())
            # None when the run was too short to measure a rate (uploader.rates)
            submit_rows_per_s: float | None = report["rows_per_s"]
            result.cases.append(
                {
                    "case": "uploader run (submit + follow to complete)",
                    "profiles": report["rows"]["successful"],
                    "wall_s": report["elapsed_s"],
                    "per_s": submit_rows_per_s,
                    "exit_code": code,
                }
            )
            for concurrency in CONCURRENCIES:
                code, wall = _uploader(
                    "verify", str(work), "--all", "--fresh", "--rate", "0", "--settle", "0",
                    "--concurrency", str(concurrency),
                )  # fmt: skip
                section: dict[str, Any] = json.loads((work / "report.json").read_text())["verify"]
                fetch_s = section["fetch_s"]
                per_s = section["profiles_per_s"]
                bound = concurrency / latency_s
                result.cases.append(
                    {
                        "case": f"uploader verify --all, concurrency {concurrency}",
                        "profiles": section["checked"],
                        "exact": section["exact"],
                        "build_s": section["expected_build_s"],
                        "fetch_s": fetch_s,
                        "wall_s": wall,
                        "per_s": per_s,
                        "bound_per_s": bound,
                        "exit_code": code,
                    }
                )
                result.add(
                    f"verified profiles/s, concurrency {concurrency}",
                    per_s,
                    "profiles/s",
                    note="fetch phase only (folding the export is build_s)",
                )
                result.add(
                    f"efficiency vs {concurrency} / latency, concurrency {concurrency}",
                    per_s / bound,
                    op=">=",
                    goal=0.8,
                )
                if section["exact"] != gen.valid_rows:
                    result.notes.append(
                        f"concurrency {concurrency}: only {section['exact']} of "
                        f"{gen.valid_rows} profiles exact"
                    )
            result.add("submitted rows/s (uploader run, same server)", submit_rows_per_s, "rows/s")
    result.notes.append(
        "one profile per fetch request against thousands of rows per submit: verify every id "
        "of a big load only when needed; a sample (the default) estimates the landed share"
    )
    result.elapsed_s = time.perf_counter() - started
    out = Path(ns.out)
    if ns.quick and out == RESULTS_DIR:  # a smoke run never replaces the committed figures
        out = RESULTS_DIR / "quick"
    finish(result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
