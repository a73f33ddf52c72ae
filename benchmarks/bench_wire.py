"""Bytes on the wire: large batches (near 50 MB) over loopback, our client vs curl.

The emulator runs in its own process with no latency and no limit, so the
time is spent moving and reading bodies. Cases: one stream (``curl`` one
file at a time vs our concurrency 1) and four streams (``xargs -P 4 curl``
vs our concurrency 4). Our figure uses the journal's submit window (first
submit started -> last accepted), which is the time bytes were on the wire;
the wall time of the whole in-process run (which first hashes every file,
as ``uploader submit`` does) is shown next to it. Goal: our MB/s >= 0.8 x
curl's at the same parallelism.

    python -m benchmarks.bench_wire [--quick] [--batches N] [--batch-mb 48]
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import (
    MB,
    EmulatorProcess,
    Result,
    command_line,
    curl_parallel,
    finish,
    out_dir,
    parser,
    stats_delta,
    submit_files,
    write_batches,
)

ROW_PAD = 900  # characters added to every row: ~1 KB rows, so a 48 MB batch is ~48k rows


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--batches", type=int, default=None, help="batches (default 8; quick 4)")
    p.add_argument(
        "--batch-mb", type=float, default=None, help="MB per batch (default 48; quick 8)"
    )
    ns = p.parse_args(argv)
    batches = ns.batches or (4 if ns.quick else 8)
    batch_mb = ns.batch_mb or (8.0 if ns.quick else 48.0)
    result = Result(
        "wire",
        f"Bytes on the wire ({batches} batches of ~{batch_mb:g} MB, loopback)",
        command_line("benchmarks.bench_wire", argv),
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-wire-") as tmp:
        row_bytes = 1000  # measured below; rows are ~100 chars + the pad
        rows = max(1, int(batch_mb * MB / row_bytes))
        files = write_batches(Path(tmp) / "batches", batches, rows, prefix="W", pad=ROW_PAD)
        total = sum(f.stat().st_size for f in files)
        result.params = {
            "batches": batches,
            "rows_per_batch": rows,
            "bytes_total": total,
            "mean_batch_mb": total / batches / MB,
        }
        mbps: dict[str, float] = {}
        for n in (1, 4):
            with EmulatorProcess(apply_rate=1000.0) as emu:
                seconds, code = curl_parallel(files, emu.submit_url(), n)
                server = stats_delta({}, emu.stats())
            name = f"curl -P {n}"
            mbps[name] = total / MB / seconds
            result.cases.append(
                {
                    "case": name,
                    "time_s": seconds,
                    "wall_s": seconds,
                    "mb_per_s": mbps[name],
                    "accepted": server["batches_accepted"],
                    "exit_code": code,
                }
            )
            with EmulatorProcess(apply_rate=1000.0) as emu:
                run = submit_files(files, emu.base_url, Path(tmp) / f"ours-{n}", concurrency=n)
                server = stats_delta({}, emu.stats())
            name = f"ours, concurrency {n}"
            mbps[name] = total / MB / run["window_s"]
            result.cases.append(
                {
                    "case": name,
                    "time_s": run["window_s"],
                    "wall_s": run["wall_s"],
                    "mb_per_s": mbps[name],
                    "accepted": server["batches_accepted"],
                    "exit_code": run["exit_code"],
                }
            )
            result.add(
                f"ours / curl MB/s, {n} stream{'s' if n > 1 else ''}",
                mbps[f"ours, concurrency {n}"] / mbps[f"curl -P {n}"],
                "x",
                ">=",
                0.8,
            )
        for name, value in mbps.items():
            result.add(f"{name} MB/s", value, "MB/s")
    result.notes.append(
        "ours: time_s = journal submit window; wall_s = the whole run incl. hashing every file"
    )
    result.elapsed_s = time.perf_counter() - started
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
