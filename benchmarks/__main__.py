"""Run every benchmark and write ``benchmarks/RESULTS.md``.

    python -m benchmarks            # all, default sizes (< ~10 min on 2 cores);
                                    # the overnight simulation at 1,000,000 rows
    python -m benchmarks --quick    # smoke sizes (about a minute), written under
                                    # $TMPDIR/uploader-bench-quick, never over the results
    python -m benchmarks --full     # the overnight simulation and the repeated-ids run at
                                    # 10,000,000 rows
    python -m benchmarks --only submit,curl

Each program also runs alone (``python -m benchmarks.bench_submit`` ...) and
writes ``benchmarks/results/NAME.json``; RESULTS.md is built from those files.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS_DIR, Figure, out_dir, run_module
from uploader.bench import machine_info

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
ORDER = (
    "split",
    "repeats",
    "submit",
    "curl",
    "wire",
    "memory",
    "hostile",
    "overnight",
    "verify",
    "sources",
    "pacing",
    "observability",
    "emulator",
    "sweep",
)


def _argv(name: str, quick: bool, full: bool, out: Path) -> list[str]:
    where = ["--out", str(out)]
    if name == "split":
        return [*where, "--quick"] if quick else [*where, "--rows", "1000000", "--repeat", "3"]
    if name == "repeats":  # the 10,000,000-row run only with --full
        if full:
            return where
        return [*where, "--quick"] if quick else [*where, "--memory-rows", "2000000"]
    if name == "overnight":
        if full:
            return where
        return [*where, "--quick"] if quick else [*where, "--rows", "1000000"]
    return [*where, "--quick"] if quick else where


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run all benchmarks; write benchmarks/RESULTS.md")
    p.add_argument("--quick", action="store_true", help="smoke sizes")
    p.add_argument("--full", action="store_true", help="overnight simulation at 10,000,000 rows")
    p.add_argument("--only", default=",".join(ORDER), help="comma-separated subset (default: all)")
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="JSON files and RESULTS.md (default: benchmarks/results and benchmarks/RESULTS.md; "
        "with --quick: $TMPDIR/uploader-bench-quick)",
    )
    ns = p.parse_args(argv)
    out = out_dir(ns)
    results_md = RESULTS_MD if out.resolve() == RESULTS_DIR.resolve() else out / "RESULTS.md"
    wanted = [n.strip() for n in ns.only.split(",") if n.strip()]
    unknown = set(wanted) - set(ORDER)
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    started = time.perf_counter()
    failures = []
    for name in (n for n in ORDER if n in wanted):
        print(f"\n=== {name} ===", flush=True)
        module = importlib.import_module(f"benchmarks.bench_{name}")
        if run_module(module.main, _argv(name, ns.quick, ns.full, out)) != 0:
            failures.append(name)
    command = "python -m benchmarks" + "".join(
        f" {a}" for a in (sys.argv[1:] if argv is None else argv)
    )
    write_results_md(command, time.perf_counter() - started, out, results_md)
    print(f"\nwrote {results_md}")
    if failures:
        print(f"benchmarks that crashed: {', '.join(failures)}", file=sys.stderr)
    return 1 if failures else 0


def _split_figures(data: dict[str, Any]) -> list[Figure]:
    """The chunker's own JSON (benchmarks/bench_split.py) in our figure shape."""
    peaks = data.get("peak_rss", {})
    figs = [
        Figure("split time / csv.reader pass", data.get("ratio"), "x", "<=", 3.0),
        Figure("split rows/s", data.get("split_rows_per_s"), "rows/s"),
        Figure("split MB/s", data.get("split_mb_per_s"), "MB/s"),
    ]
    if peaks.get("small_kb") and peaks.get("large_kb"):
        growth = (peaks["large_kb"] / peaks["small_kb"] - 1) * 100
        figs.append(Figure("split peak RSS growth, input x4", growth, "%", "<", 10.0))
    return figs


def _load(name: str, out: Path) -> tuple[str, list[Figure], dict[str, Any]] | None:
    path = out / f"{name}.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    if name == "split":
        title = f"Chunking ({data.get('rows', 0):,} rows; benchmarks/bench_split.py)"
        return title, _split_figures(data), data
    figs = []
    for f in data["figures"]:
        goal = f.get("goal") or {}
        figs.append(
            Figure(
                f["name"], f["measured"], f["unit"], goal.get("op"), goal.get("value"), f["note"]
            )
        )
    return data["title"], figs, data


def write_results_md(command: str, elapsed: float, out: Path, results_md: Path) -> None:
    m = machine_info()
    lines = [
        "# Benchmark results",
        "",
        f"Generated by `{command}` in {elapsed / 60:.1f} min on {m['cpu_count']} CPUs, "
        f"Python {m['python']} ({m['implementation']}), {m['platform']}. "
        "Loopback only: the emulator stands in for Target. Rerun to refresh.",
        "",
        "| benchmark | figure | measured | goal | met? |",
        "|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for name in ORDER:
        loaded = _load(name, out)
        if loaded is None:
            lines.append(f"| {name} | not run | - | - | - |")
            continue
        title, figs, data = loaded
        for f in figs:
            met = {True: "yes", False: "**no**", None: "-"}[f.met]
            lines.append(f"| {title} | {f.name} | {f.measured_text()} | {f.goal_text()} | {met} |")
        notes += [f"- {name}: {n}" for n in data.get("notes", [])]
        if data.get("command"):
            notes.append(f"- {name}: `{data['command']}`")
    lines += ["", "Notes and per-benchmark commands:", "", *notes, ""]
    results_md.write_text("\n".join(lines), encoding="utf-8")


if __name__ == "__main__":
    raise SystemExit(main())
