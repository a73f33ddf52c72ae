"""Repeated ids: what folding costs ``uploader split``, and peak RSS of a big ``uploader run``.

Split: one export of N rows with unique ids and the same export in which 10%
of the rows carry the id of an earlier row (so about 10% of the ids repeat,
far apart), chunked in this process alternately, the median of each case
taken: repeats with the handling on, unique ids with it on, and unique ids
with ``--unique-ids`` (handling off) for the price of the first pass itself.
Goal: repeats take at most 1.3x the unique export, both with the default
handling on.

Memory: ``uploader run`` on M rows with 10% repeated ids in a child process,
against the emulator in its own process keeping no profiles (``--store
none``), peak RSS (VmHWM) read from /proc while it runs. Goal: under 150 MB.

    python -m benchmarks.bench_repeats [--quick] [--rows N] [--memory-rows M] [--repeat K]
"""

from __future__ import annotations

import csv
import json
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.bench_memory import run_child
from benchmarks.common import MB, EmulatorProcess, Result, command_line, finish, out_dir, parser
from uploader.chunk import Chunker
from uploader.gen import generate_export
from uploader.settings import BatchSettings, InputSettings

REPEAT_SHARE = 10  # one row in REPEAT_SHARE takes the id of an earlier row


def with_repeats(unique: Path, path: Path, seed: int = 1) -> None:
    """The same export, but every 10th row has the id of a random earlier row."""
    rng = random.Random(seed)
    with (
        open(unique, newline="", encoding="utf-8") as src,
        open(path, "w", newline="", encoding="utf-8") as dst,
    ):
        reader, writer = csv.reader(src), csv.writer(dst, lineterminator="\r\n")
        writer.writerow(next(reader))
        ids: list[str] = []
        for i, row in enumerate(reader):
            if i % REPEAT_SHARE == REPEAT_SHARE - 1 and ids:
                row[0] = ids[rng.randrange(len(ids))]
            else:
                ids.append(row[0])
            writer.writerow(row)


def split_once(path: Path, out: Path, *, unique_ids: bool) -> tuple[float, dict[str, Any]]:
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    summary = Chunker(path, out, InputSettings(unique_ids=unique_ids), BatchSettings()).run()
    elapsed = time.perf_counter() - started
    assert summary.repeats is not None
    return elapsed, {
        "rows_read": summary.rows_read,
        "rows_written": summary.rows_written,
        "rows_folded": summary.rows_folded,
        "repeated_ids": summary.repeats.ids,
    }


def measure_split(result: Result, data: Path, rows: int, repeat: int) -> None:
    unique, repeated = data / f"unique-{rows}.csv", data / f"repeated-{rows}.csv"
    generate_export(unique, rows, seed=0)
    with_repeats(unique, repeated)
    cases = {
        "repeats, handling on": (repeated, False),
        "unique ids, handling on": (unique, False),
        "unique ids, handling off (--unique-ids)": (unique, True),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    info: dict[str, dict[str, Any]] = {}
    out = data / "out"
    for _ in range(repeat):  # alternate the cases: a shared machine drifts
        for name, (path, unique_ids) in cases.items():
            elapsed, info[name] = split_once(path, out, unique_ids=unique_ids)
            times[name].append(elapsed)
    shutil.rmtree(out, ignore_errors=True)
    medians = {name: statistics.median(runs) for name, runs in times.items()}
    for name, (path, _) in cases.items():
        result.cases.append(
            {
                "case": f"split {name}",
                "rows": rows,
                "input_mb": path.stat().st_size / MB,
                "median_s": medians[name],
                "runs_s": " ".join(f"{t:.2f}" for t in times[name]),
                **info[name],
            }
        )
    rep, uni, off = (medians[n] for n in cases)
    result.add("split: repeats / unique ids (both handling on)", rep / uni, "x", "<=", 1.3)
    result.add("split: unique ids, handling on / off (the first pass)", uni / off, "x")
    result.add("split: repeats (on) / unique ids (off)", rep / off, "x")
    folded = info["repeats, handling on"]
    share = 100 * folded["repeated_ids"] / folded["rows_written"]
    result.add("split: ids repeated (share of distinct ids)", share, "%")
    unique.unlink()
    repeated.unlink()


def measure_memory(result: Result, data: Path, rows: int) -> None:
    unique, repeated = data / "mem-unique.csv", data / "mem-repeated.csv"
    generate_export(unique, rows, seed=2, id_prefix="M")
    with_repeats(unique, repeated)
    unique.unlink()
    emu = EmulatorProcess(apply_rate=5_000_000.0)
    emu.args += ["--store", "none"]  # the emulator keeps no profiles: its memory stays flat
    with emu:
        args = [
            sys.executable, "-m", "uploader", "run", str(repeated),
            "--client", "bench", "--base-url", emu.base_url, "--concurrency", "8",
            "--work-dir", str(data / "run"), "--progress", "none", "--fresh",
        ]  # fmt: skip
        code, rss, seconds = run_child(args)
    report_path = data / "run" / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    rep = report.get("repeated_ids", {})
    result.cases.append(
        {
            "case": f"uploader run, {rows:,} rows, 10% repeated ids",
            "input_mb": repeated.stat().st_size / MB,
            "peak_rss_mb": rss,
            "seconds": seconds,
            "exit_code": code,
            "repeated_ids": rep.get("ids"),
            "rows_folded": rep.get("rows_folded"),
        }
    )
    result.add(f"run: peak RSS, {rows:,} rows with repeats", rss, "MB", "<", 150.0)
    result.add("run: exit code", code, "", "<=", 0)
    repeated.unlink()
    shutil.rmtree(data / "run", ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=None, help="split rows (default 1000000)")
    p.add_argument(
        "--memory-rows", type=int, default=None, help="run rows (default 10000000; 0: skip)"
    )
    p.add_argument("--repeat", type=int, default=None, help="rounds per split case (default 3)")
    p.add_argument("--data-dir", type=Path, default=None, help="where exports go (default: tmp)")
    ns = p.parse_args(argv)
    rows = ns.rows or (100_000 if ns.quick else 1_000_000)
    memory_rows = (
        ns.memory_rows if ns.memory_rows is not None else (200_000 if ns.quick else 10_000_000)
    )
    repeat = ns.repeat or (1 if ns.quick else 3)
    result = Result(
        "repeats",
        f"Repeated ids ({rows:,} rows split; {memory_rows:,} rows run)",
        command_line("benchmarks.bench_repeats", argv),
        params={"rows": rows, "memory_rows": memory_rows, "repeat": repeat},
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-repeats-", dir=ns.data_dir) as tmp:
        measure_split(result, Path(tmp), rows, repeat)
        if memory_rows:
            measure_memory(result, Path(tmp), memory_rows)
    result.notes.append(
        "repeats: every 10th row takes the id of a random earlier row; split cases alternate "
        "and the median is taken; the run's emulator keeps no profiles (--store none)"
    )
    result.elapsed_s = time.perf_counter() - started
    finish(result, out_dir(ns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
