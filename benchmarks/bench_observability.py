"""What metrics and JSON logs cost: the overnight simulation with and without them.

The overnight setup of ``bench_overnight`` (emulator with 200-500 ms per
submit, an in-flight limit of 8, applying 50,000 rows/s; ``uploader run``
with its defaults) at a reduced size, run alternately plain
(``--progress none``) and observed (``--metrics-port``, ``--metrics-textfile``
rewritten every 5 s, ``--log-format json -v --progress log``). Compared: the
end-to-end time (goal: at most 3% more) and the CPU time of the uploader
process (user + system), which shows the cost even where waiting on the
server hides it.

    python -m benchmarks.bench_observability [--quick] [--rows N] [--repeat K]
"""

from __future__ import annotations

import resource
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.bench_memory import run_child
from benchmarks.bench_overnight import APPLY_RATE, LATENCY_MS, LIMIT
from benchmarks.common import EmulatorProcess, Result, command_line, finish, out_dir, parser
from uploader.gen import generate_export

ROWS = 1_000_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help=f"rows (default {ROWS:,})")
    p.add_argument("--repeat", type=int, default=2, help="runs of each kind (default 2)")
    ns = p.parse_args(argv)
    rows = ns.rows or (100_000 if ns.quick else ROWS)
    result = Result(
        "observability",
        f"Metrics and JSON logs overhead, overnight setup at {rows:,} rows",
        command_line("benchmarks.bench_observability", argv),
        params={
            "rows": rows,
            "repeat": ns.repeat,
            "latency_ms": list(LATENCY_MS),
            "server_limit": LIMIT,
            "apply_rate": APPLY_RATE,
        },
    )
    started = time.perf_counter()
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "observed": []}
    with tempfile.TemporaryDirectory(prefix="bench-observability-") as tmp:
        export = Path(tmp) / "export.csv"
        generate_export(export, rows, id_prefix="O")
        for i in range(ns.repeat):
            for kind in ("plain", "observed"):
                work = Path(tmp) / f"{kind}-{i}"
                verbose, extra = [], ["--progress", "none"]
                if kind == "observed":
                    verbose, extra = ["-v"], [
                        "--progress", "log", "--log-format", "json",
                        "--metrics-port", str(_free_port()),
                        "--metrics-textfile", str(Path(tmp) / "uploader.prom"),
                    ]  # fmt: skip
                with EmulatorProcess(
                    latency_ms=LATENCY_MS, max_inflight=LIMIT, apply_rate=APPLY_RATE, store="none"
                ) as emu:
                    args = [
                        sys.executable, "-m", "uploader", *verbose, "run", str(export),
                        "--client", "bench", "--base-url", emu.base_url,
                        "--work-dir", str(work), *extra,
                    ]  # fmt: skip
                    cpu = _cpu_children()
                    code, _rss, total_s = run_child(args)
                    cpu = _cpu_children() - cpu
                if code != 0:
                    raise RuntimeError(f"{kind} run {i} exited {code}")
                runs[kind].append((total_s, cpu))
                result.cases.append({"kind": kind, "run": i, "total_s": total_s, "cpu_s": cpu})
    plain_s = statistics.median(t for t, _ in runs["plain"])
    observed_s = statistics.median(t for t, _ in runs["observed"])
    plain_cpu = statistics.median(c for _, c in runs["plain"])
    observed_cpu = statistics.median(c for _, c in runs["observed"])
    result.add(
        "end-to-end time added",
        (observed_s / plain_s - 1) * 100,
        "%",
        "<=",
        3.0,
        note=f"median {observed_s:.1f} s observed vs {plain_s:.1f} s plain",
    )
    result.add(
        "uploader CPU time added",
        (observed_cpu / plain_cpu - 1) * 100,
        "%",
        note=f"median {observed_cpu:.2f} s vs {plain_cpu:.2f} s (user + system)",
    )
    result.notes.append(
        f"reduced size ({rows:,} rows; the overnight simulation's full size is 10,000,000); "
        "the machine was shared with other work while it ran"
    )
    result.elapsed_s = time.perf_counter() - started
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
