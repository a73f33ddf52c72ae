"""A settings sweep: 5 concurrency levels x 2 batch sizes against the emulator at 50 ms.

``uploader bench``'s sweep (``uploader/sweep.py``) in this process: for every
combination of concurrency 1, 2, 4, 8, 16 and batches of 1,000 and 10,000 rows
(--quick: 100 and 1,000, so that a point still sends at least 10 batches),
a fresh built-in emulator (50 ms per submit, HTTP 429 above 4 submits in
flight, Retry-After 0.2 s) receives the same number of rows; each level is
held as given (``submit.adaptive = false``). Prints and writes one case per
point, the wall time of the whole sweep and the recommended settings.

    python -m benchmarks.bench_sweep [--quick] [--rows N]
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import Result, command_line, finish, out_dir, parser
from uploader import sweep
from uploader.bench import BenchOptions

ROWS = 100_000
CONCURRENCY = (1, 2, 4, 8, 16)
BATCH_ROWS = (1_000, 10_000)
QUICK_BATCH_ROWS = (100, 1_000)  # at least 10 batches a point at the quick size too
LIMIT = 4


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help=f"rows per point (default {ROWS:,})")
    ns = p.parse_args(argv)
    rows = ns.rows or (10_000 if ns.quick else ROWS)
    sizes = QUICK_BATCH_ROWS if ns.quick else BATCH_ROWS
    opts = BenchOptions(
        rows=rows,
        latency_ms=(50.0, 50.0),
        max_inflight=LIMIT,
        retry_after_s=0.2,
        adaptive=False,
        poll_initial_s=0.2,
        poll_max_s=1.0,
    )
    result = Result(
        "sweep",
        f"Settings sweep (5 x 2 points, {rows:,} rows each, 50 ms per submit, limit {LIMIT})",
        command_line("benchmarks.bench_sweep", argv),
        params={"rows_per_point": rows, "concurrency": CONCURRENCY, "batch_rows": sizes},
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        points = asyncio.run(sweep.run_sweep(opts, CONCURRENCY, sizes, Path(tmp)))
    result.elapsed_s = time.perf_counter() - started
    best = sweep.recommend(points)
    print(sweep.render_sweep(points, best))
    result.cases.extend(points)
    result.add("sweep wall time", result.elapsed_s, "s")
    if best is not None:
        result.add("recommended submit.concurrency", best["concurrency"], "", "<=", LIMIT)
        result.add("recommended batch.max_rows", best["batch_rows"], "")
        result.add("rows/s at the recommendation", best["rows_per_s"], "rows/s")
    finish(result, out_dir(ns))
    return 0 if best is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
