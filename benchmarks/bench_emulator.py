"""Emulator memory: what its profile store holds at millions of demo-shaped profiles.

Each case runs in a child process that builds the emulator's ``Store`` and
feeds it demo-shaped rows (the nine columns of ``uploader.gen``: ids, hashes,
tiers, amounts, dates, store names with commas and non-ASCII text, notes)
through the same path as a submit: encoded into batches of 100,000 rows,
scanned by ``formdata.scan_batch`` and applied by ``Store.apply_rows``. It
reports the resident memory the store added (VmRSS after minus before) and
the peak (VmHWM). ``--store none`` runs at 10,000,000 profiles; ``--store
full`` at 1,000,000 (its cost per profile is flat, so 10,000,000 would need
about ten times as much, more than this machine should give a benchmark).

    python -m benchmarks.bench_emulator [--quick] [--rows N] [--full-rows N]
"""

from __future__ import annotations

import gc
import json
import random
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import MB, Result, command_line, finish, out_dir, parser

ROWS_NONE, ROWS_FULL, BATCH = 10_000_000, 1_000_000, 100_000
GOAL_MB = 2_000.0  # 10,000,000 profiles in at most 2 GB


def _vm(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024 / MB
    return 0.0


def child(store: str, rows: int) -> dict[str, float]:
    """Fill one Store with ``rows`` demo-shaped rows; return its memory figures."""
    from uploader.emulator import formdata
    from uploader.emulator.spool import MemoryBody
    from uploader.emulator.store import Batch, Store
    from uploader.encode import encode_rows, header_line
    from uploader.gen import HEADER, _records

    target = Store(keep_profiles=store == "full")
    before = _vm("VmRSS")
    started = time.perf_counter()
    header = header_line(["thirdPartyId", *HEADER[1:]])
    records = _records(rows, random.Random(0), "E", 0)
    done = 0
    while done < rows:
        block = [fields for fields, _ in (next(records) for _ in range(min(BATCH, rows - done)))]
        lines = [line for line in encode_rows(block) if line is not None]
        scan = formdata.scan_batch(header + b"\n" + b"\n".join(lines))
        batch = Batch(f"b{done}", "bench", "v2", scan.header, MemoryBody(scan.value), scan.rows)
        target.apply_rows(batch, rows)
        done += len(block)
    del block, lines, scan, batch  # the last batch's body: not the store's
    gc.collect()
    return {
        "rows": rows,
        "profiles_stored": len(target),
        "rows_digest": target.rows_digest,
        "store_mb": _vm("VmRSS") - before,
        "peak_rss_mb": _vm("VmHWM"),
        "seconds": time.perf_counter() - started,
    }


def run_case(store: str, rows: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.bench_emulator", "--child", store, str(rows)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["--child"]:
        print(json.dumps(child(args[1], int(args[2]))))
        return 0
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help=f"--store none (default {ROWS_NONE:,})")
    p.add_argument(
        "--full-rows", type=int, default=None, help=f"--store full (default {ROWS_FULL:,})"
    )
    ns = p.parse_args(argv)
    rows_none = ns.rows or (200_000 if ns.quick else ROWS_NONE)
    rows_full = ns.full_rows or (100_000 if ns.quick else ROWS_FULL)
    result = Result(
        "emulator",
        f"Emulator memory: store none at {rows_none:,} profiles, full at {rows_full:,}",
        command_line("benchmarks.bench_emulator", argv),
        params={"rows_none": rows_none, "rows_full": rows_full, "batch_rows": BATCH},
    )
    started = time.perf_counter()
    none_small = run_case("none", rows_none // 10)
    none = run_case("none", rows_none)
    half = run_case("full", rows_full // 2)
    full = run_case("full", rows_full)
    result.cases += [
        {"store": "none", **none_small},
        {"store": "none", **none},
        {"store": "full", **half},
        {"store": "full", **full},
    ]
    # The slope between two sizes: what one more profile costs, without the fixed part
    # (interpreter, the last batch's buffers that the allocator keeps).
    per_profile_kb = (full["store_mb"] - half["store_mb"]) * MB / (rows_full - rows_full // 2)
    per_profile_kb /= 1000
    result.add(
        f"store none, {rows_none:,} rows: memory added",
        none["store_mb"],
        "MB",
        "<=",
        GOAL_MB,
        note=f"{none_small['store_mb']:,.0f} MB at {rows_none // 10:,} rows; process peak "
        f"{none['peak_rss_mb']:,.0f} MB",
    )
    result.add(f"store full, {rows_full:,} profiles: memory added", full["store_mb"], "MB")
    result.add(
        "store full, per profile",
        per_profile_kb,
        "KB",
        note=f"slope between {rows_full // 2:,} and {rows_full:,} profiles",
    )
    result.add(
        "store full, 10,000,000 profiles (extrapolated)",
        per_profile_kb * 10_000_000 / 1000,
        "MB",
        note="flat cost per profile times 10,000,000: not measured",
    )
    result.notes.append(
        "in-process Store fed through formdata.scan_batch and apply_rows (no HTTP); "
        "the machine was shared with other work while it ran"
    )
    result.elapsed_s = time.perf_counter() - started
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
