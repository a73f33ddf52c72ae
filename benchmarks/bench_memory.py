"""Memory: peak RSS of a whole ``uploader run`` for an input and one 4x larger.

Each run is a child process (``python -m uploader run ... --concurrency 8``,
default batch limits: 500,000 rows / 50,000,000 bytes) against the emulator
in its own process; its peak RSS comes from ``os.wait4`` (ru_maxrss of that
child alone). Memory must not grow with the input: goals are growth
< 10 % from N to 4N rows, and < 150 MB at 4N.

    python -m benchmarks.bench_memory [--quick] [--rows N]
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import MB, EmulatorProcess, Result, command_line, finish, out_dir, parser
from uploader.gen import generate_export


def run_child(args: list[str]) -> tuple[int, float, float]:
    """(exit code, peak RSS in MB, seconds) of one child process.

    The peak is the child's VmHWM read from /proc while it runs: ru_maxrss of
    a child (wait4) is useless here, since Linux carries the parent's high-water
    mark across fork+exec, so every child would report this process's peak.
    """
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    status = Path(f"/proc/{proc.pid}/status")
    peak_kb = 0
    while proc.poll() is None:
        try:
            for line in status.read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak_kb = max(peak_kb, int(line.split()[1]))
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return proc.returncode, peak_kb * 1024 / MB, time.perf_counter() - started


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="N (default 300000; quick 30000)")
    p.add_argument("--concurrency", type=int, default=8, help="(default %(default)s)")
    ns = p.parse_args(argv)
    base = ns.rows or (30_000 if ns.quick else 300_000)
    result = Result(
        "memory",
        f"Peak RSS of `uploader run`, {base:,} vs {4 * base:,} rows",
        command_line("benchmarks.bench_memory", argv),
        params={"rows": [base, 4 * base], "concurrency": ns.concurrency},
    )
    started = time.perf_counter()
    peaks: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        # A baseline: the interpreter with the package imported, doing nothing.
        code, idle, _ = run_child([sys.executable, "-c", "import uploader.cli, uploader.pipeline"])
        result.cases.append(
            {"case": "python + imports only", "peak_rss_mb": idle, "exit_code": code}
        )
        for rows in (base, 4 * base):
            export = Path(tmp) / f"export-{rows}.csv"
            generate_export(export, rows, id_prefix=f"M{rows}-")
            with EmulatorProcess(apply_rate=2_000_000.0) as emu:
                args = [
                    sys.executable, "-m", "uploader", "run", str(export),
                    "--client", "bench", "--base-url", emu.base_url,
                    "--concurrency", str(ns.concurrency),
                    "--work-dir", str(Path(tmp) / f"run-{rows}"),
                    "--progress", "none", "--fresh",
                ]  # fmt: skip
                code, rss, seconds = run_child(args)
                emu_rss = emu.rss_mb()
            peaks[rows] = rss
            case: dict[str, Any] = {
                "case": f"uploader run, {rows:,} rows",
                "input_mb": export.stat().st_size / MB,
                "peak_rss_mb": rss,
                "seconds": seconds,
                "exit_code": code,
                "emulator_rss_mb": emu_rss,
            }
            result.cases.append(case)
            export.unlink()
    growth = peaks[4 * base] / peaks[base] - 1
    result.add(f"RSS growth {base:,} -> {4 * base:,} rows", growth * 100, "%", "<", 10.0)
    result.add(f"peak RSS at {4 * base:,} rows", peaks[4 * base], "MB", "<", 150.0)
    result.add(f"peak RSS at {base:,} rows", peaks[base], "MB")
    result.add("peak RSS of python + imports", idle, "MB")
    result.elapsed_s = time.perf_counter() - started
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
