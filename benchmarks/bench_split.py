"""Benchmark ``uploader split`` against a bare ``csv.reader`` pass over the same file.

Run: ``python -m benchmarks.bench_split [--quick] [--rows N] [--repeat K] [--data-dir DIR]``.

The speed goal of the chunker is relative, so the number that matters is the
ratio of chunker time to the time of ``for row in csv.reader(f): pass``; the
two are run alternately and the median of each is taken, which cancels most
of the drift of a shared machine. Peak memory (VmHWM) is measured in
fresh subprocesses for a small input and one four times larger: constant
memory means both peaks are about the same. Results are printed as a table
and written to ``benchmarks/results/split.json`` (``--quick``: 200,000 rows,
two rounds, written under ``$TMPDIR/uploader-bench-quick``). The exports are
generated in a temporary directory and removed, unless ``--data-dir`` keeps
them for the next run.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich import filesize

from benchmarks.common import out_dir
from benchmarks.common import parser as common_parser
from uploader.chunk import Chunker
from uploader.gen import generate_export
from uploader.settings import BatchSettings, InputSettings

# VmHWM, not ru_maxrss: Linux carries ru_maxrss over fork+exec from the parent,
# so a child would report at least the benchmark's own peak.
_PEAK_SCRIPT = """
import sys
from pathlib import Path
from benchmarks.common import out_dir
from benchmarks.common import parser as common_parser
from uploader.chunk import Chunker
from uploader.settings import BatchSettings, InputSettings
if sys.argv[1] != "-":
    Chunker(sys.argv[1], Path(sys.argv[2]), InputSettings(), BatchSettings()).run()
status = open("/proc/self/status").read().split("VmHWM:")[1]
print(int(status.split()[0]))
"""


def export(data_dir: Path, rows: int) -> Path:
    """Reuse or generate the export of ``rows`` rows (seed 0, so reuse is safe)."""
    path = data_dir / f"export-{rows}.csv"
    if not path.exists():
        tmp = path.with_suffix(".csv.tmp")
        generate_export(tmp, rows, seed=0)
        tmp.replace(path)
    return path


def csv_pass(path: Path) -> float:
    start = time.perf_counter()
    with open(path, newline="", encoding="utf-8") as f:
        for _row in csv.reader(f):
            pass
    return time.perf_counter() - start


def chunk_pass(path: Path, out: Path) -> tuple[float, int]:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    summary = Chunker(path, out, InputSettings(), BatchSettings()).run()
    elapsed = time.perf_counter() - start
    return elapsed, summary.rows_written


def peak_rss_kb(path: Path | None, out: Path) -> int:
    """Peak RSS (KiB) of a fresh interpreter that chunks ``path`` (None: imports only)."""
    shutil.rmtree(out, ignore_errors=True)
    args = [sys.executable, "-c", _PEAK_SCRIPT, str(path) if path else "-", str(out)]
    done = subprocess.run(args, check=True, capture_output=True, text=True)
    return int(done.stdout.split()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = common_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=None, help="rows (default: 1000000; quick 200000)"
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="rounds of each pass (default: 5; quick 2)"
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="keep the generated exports here and reuse them (default: a temporary dir)",
    )
    args = parser.parse_args(argv)
    args.rows = args.rows or (200_000 if args.quick else 1_000_000)
    args.repeat = args.repeat or (2 if args.quick else 5)
    with contextlib.ExitStack() as stack:
        data_dir = args.data_dir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-split-data-"))
        )
        data_dir.mkdir(parents=True, exist_ok=True)
        return _measure(args, data_dir, out_dir(args) / "split.json")


def _measure(args: argparse.Namespace, data_dir: Path, results: Path) -> int:
    big = export(data_dir, args.rows)
    small = export(data_dir, max(args.rows // 4, 1))
    size_mb = big.stat().st_size / 1e6
    base: list[float] = []
    chunk: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-split-") as tmp:
        out = Path(tmp) / "out"
        for _ in range(args.repeat):
            base.append(csv_pass(big))
            elapsed, written = chunk_pass(big, out)
            chunk.append(elapsed)
        peaks = {
            "interpreter_kb": peak_rss_kb(None, out),
            "small_kb": peak_rss_kb(small, out),
            "large_kb": peak_rss_kb(big, out),
        }
    b, c = statistics.median(base), statistics.median(chunk)
    result = {
        "rows": args.rows,
        "input_mb": round(size_mb, 1),
        "repeat": args.repeat,
        "csv_reader_s": round(b, 3),
        "split_s": round(c, 3),
        "ratio": round(c / b, 2),
        "split_mb_per_s": round(size_mb / c, 1),
        "split_rows_per_s": round(args.rows / c),
        "csv_reader_mb_per_s": round(size_mb / b, 1),
        "rows_written": written,
        "peak_rss": {**peaks, "small_rows": max(args.rows // 4, 1), "large_rows": args.rows},
        "python": platform.python_version(),
        "machine": f"{platform.machine()} x{os.cpu_count()}",
    }
    print(f"input: {args.rows:,} rows, {size_mb:.1f} MB ({big})")
    print(f"{'':24}{'median s':>10}{'MB/s':>10}{'rows/s':>12}   runs")
    for name, runs in (("csv.reader pass", base), ("uploader split", chunk)):
        med = statistics.median(runs)
        shown = " ".join(f"{r:.2f}" for r in runs)
        print(f"{name:24}{med:>10.3f}{size_mb / med:>10.1f}{args.rows / med:>12,.0f}   {shown}")
    print(f"ratio split / csv.reader: {result['ratio']:.2f}x (goal <= 3x, stretch 2x)")
    print(
        f"peak RSS: interpreter {filesize.decimal(peaks['interpreter_kb'] * 1024)}, "
        f"{result['peak_rss']['small_rows']:,} rows {filesize.decimal(peaks['small_kb'] * 1024)}, "
        f"{args.rows:,} rows {filesize.decimal(peaks['large_kb'] * 1024)}"
    )
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
