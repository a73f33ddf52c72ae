"""Shared helpers of the benchmark programs: results, tables, the emulator process, batch files.

Every benchmark builds a ``Result`` (figures with their goal and whether it
was met, the raw measurements, the parameters), prints it as a table and
writes it to ``benchmarks/results/NAME.json`` with the machine it ran on.
``python -m benchmarks`` collects those files into ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from uploader.bench import machine_info

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MB = 1_000_000


@dataclass
class Figure:
    """One measured figure and its goal (``op`` is '>=', '<=', '<' or '>'; None: no goal)."""

    name: str
    measured: float | None
    unit: str = ""
    op: str | None = None
    goal: float | None = None
    note: str = ""

    @property
    def met(self) -> bool | None:
        if self.op is None or self.goal is None:
            return None
        if self.measured is None:
            return False
        return {
            ">=": self.measured >= self.goal,
            "<=": self.measured <= self.goal,
            ">": self.measured > self.goal,
            "<": self.measured < self.goal,
        }[self.op]

    def goal_text(self) -> str:
        if self.op is None or self.goal is None:
            return "-"
        return f"{self.op} {fmt(self.goal)}{(' ' + self.unit) if self.unit else ''}"

    def measured_text(self) -> str:
        if self.measured is None:
            return "n/a"
        return f"{fmt(self.measured)}{(' ' + self.unit) if self.unit else ''}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "unit": self.unit,
            "goal": None if self.op is None else {"op": self.op, "value": self.goal},
            "met": self.met,
            "note": self.note,
        }


@dataclass
class Result:
    name: str
    title: str
    command: str
    params: dict[str, Any] = field(default_factory=dict)
    figures: list[Figure] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    elapsed_s: float = 0.0

    def add(self, *args: Any, **kwargs: Any) -> Figure:
        fig = Figure(*args, **kwargs)
        self.figures.append(fig)
        return fig

    @property
    def passed(self) -> bool:
        return all(f.met is not False for f in self.figures)

    def as_dict(self) -> dict[str, Any]:
        return {
            "benchmark": self.name,
            "title": self.title,
            "command": self.command,
            "passed": self.passed,
            "figures": [f.as_dict() for f in self.figures],
            "params": self.params,
            "cases": self.cases,
            "notes": self.notes,
            "elapsed_s": round(self.elapsed_s, 2),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine_info(),
        }


def fmt(value: float) -> str:
    if isinstance(value, int) or (float(value).is_integer() and abs(value) >= 10):
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"


def quick_dir() -> Path:
    """Where ``--quick`` runs write: smoke-size figures never replace the committed ones."""
    return Path(tempfile.gettempdir()) / "uploader-bench-quick"


def out_dir(ns: argparse.Namespace) -> Path:
    """``--out`` when given; else ``benchmarks/results``, or ``quick_dir()`` with ``--quick``."""
    if ns.out is not None:
        return Path(ns.out)
    return quick_dir() if ns.quick else RESULTS_DIR


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick",
        action="store_true",
        help="small smoke size (seconds); writes under $TMPDIR/uploader-bench-quick",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"JSON output dir (default: {RESULTS_DIR}; with --quick: "
        "$TMPDIR/uploader-bench-quick)",
    )
    return p


# Batches are not followed to `complete` in the submit benchmarks, so the emulator barely
# applies them: its applier would otherwise compete for the CPU with request handling.
SUBMIT_BENCH_APPLY_RATE = 1000.0


def server_limit_parser(
    description: str, batches: int, quick_batches: int
) -> argparse.ArgumentParser:
    """``parser`` plus the knobs of a server with a fixed latency and an in-flight limit."""
    p = parser(description)
    p.add_argument(
        "--batches",
        type=int,
        default=None,
        help=f"batches (default {batches}; quick {quick_batches})",
    )
    p.add_argument("--rows-per-batch", type=int, default=100, help="(default %(default)s)")
    p.add_argument(
        "--latency-ms",
        type=float,
        default=200.0,
        help="server time per submit (default %(default)s: a submit to Target over the "
        "internet takes a few hundred ms; on loopback 50 ms mostly measures Python overhead)",
    )
    p.add_argument("--limit", type=int, default=8, help="server in-flight limit (default 8)")
    return p


def command_line(module: str, argv: Sequence[str] | None) -> str:
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python -m", module, *map(shlex.quote, args)])


def finish(result: Result, out_dir: str | Path) -> Path:
    """Print the table and write ``OUT/NAME.json``; return the JSON path."""
    print_table(result)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{result.name}.json"
    path.write_text(json.dumps(result.as_dict(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}")
    return path


def print_table(result: Result) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    if result.cases:
        keys = list(dict.fromkeys(k for c in result.cases for k in c if not k.startswith("_")))
        cases = Table(title=f"{result.title}: cases", title_justify="left")
        for k in keys:
            cases.add_column(k, justify="left" if k == "case" else "right")
        for c in result.cases:
            cases.add_row(*[_cell(c.get(k)) for k in keys])
        console.print(cases)
    table = Table(title=result.title, title_justify="left")
    for col in ("figure", "measured", "goal", "met?"):
        table.add_column(col, justify="left" if col == "figure" else "right")
    for f in result.figures:
        met = {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[f.met]
        table.add_row(f.name, f.measured_text(), f.goal_text(), met)
    console.print(table)
    for note in result.notes:
        console.print(f"  note: {note}", highlight=False)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return fmt(value)
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


# -- the emulator in its own process ------------------------------------------------------


class EmulatorProcess:
    """``uploader emulator --port 0 ...`` in a child process (so curl and we share a server)."""

    def __init__(
        self,
        *,
        latency_ms: tuple[float, float] = (0.0, 0.0),
        max_inflight: int | None = None,
        apply_rate: float = 1_000_000.0,
        retry_after_s: float = 1.0,
        fetch_latency_ms: tuple[float, float] = (0.0, 0.0),
        store: str = "full",
        queue_memory_mb: float | None = None,
    ) -> None:
        self.args = [
            sys.executable,
            "-m",
            "uploader",
            "emulator",
            "--port",
            "0",
            "--latency-ms",
            f"{latency_ms[0]:g}-{latency_ms[1]:g}",
            "--apply-rate",
            f"{apply_rate:g}",
            "--retry-after",
            f"{retry_after_s:g}",
            "--fetch-latency-ms",
            f"{fetch_latency_ms[0]:g}-{fetch_latency_ms[1]:g}",
            "--store",
            store,
        ]
        if max_inflight is not None:
            self.args += ["--max-inflight", str(max_inflight)]
        if queue_memory_mb is not None:
            self.args += ["--queue-memory", f"{queue_memory_mb:g}"]
        self.proc: subprocess.Popen[str] | None = None
        self.base_url = ""

    def __enter__(self) -> EmulatorProcess:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        found = re.search(r"(http://[\d.]+:\d+)", line)
        if not found:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            self.proc.kill()
            raise RuntimeError(f"emulator did not start: {line!r} {err[-2000:]}")
        self.base_url = found.group(1)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def stats(self) -> dict[str, int]:
        with urllib.request.urlopen(f"{self.base_url}/_emulator/stats", timeout=10) as r:
            data: dict[str, int] = json.loads(r.read())
        return data

    def submit_url(self, client: str = "bench") -> str:
        return f"{self.base_url}/m2/{client}/v2/profile/batchUpdate"

    def rss_mb(self) -> float | None:
        """Resident memory of the emulator process now (Linux /proc)."""
        if self.proc is None:
            return None
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024 / MB
        return None


def stats_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before.get(k, 0) for k in after if k not in ("inflight",)}


# -- synthetic batch files ----------------------------------------------------------------

_HEADER = "thirdPartyId,loyaltyTier,lifetimeValue,lastPurchase,favoriteStore,visits,optIn,notes"
_STORES = [quote(s, safe="") for s in ("Main St, Springfield", "Zürich HB", "Online", "東京 銀座")]
_NOTES = [quote(s, safe="") for s in ("", "50% off coupon used", "Tom & Jerry's", "VIP 🎉")]


def write_batches(
    out_dir: Path, batches: int, rows_per_batch: int, *, prefix: str = "S", pad: int = 0
) -> list[Path]:
    """Write ``batches`` valid, URL-encoded batch files (``batch=`` + header + rows).

    Faster than generating a CSV and chunking it, and independent of the
    chunker: the submit-side benchmarks measure submission only. ``pad``
    adds that many characters to every row (to reach large batch sizes).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    filler = "x" * pad
    paths = []
    row_id = 0
    for b in range(1, batches + 1):
        lines = [f"batch={_HEADER}"]
        for _ in range(rows_per_batch):
            row_id += 1
            r = row_id * 2654435761 % 1_000_003
            lines.append(
                f"{prefix}{row_id},{('bronze', 'silver', 'gold')[r % 3]},{r % 5000}.{r % 100:02d},"
                f"2024-{r % 12 + 1:02d}-{r % 28 + 1:02d},{_STORES[r % 4]},{r % 200},"
                f"{('true', 'false')[r & 1]},{_NOTES[r % 4]}{filler}"
            )
        path = out_dir / f"batch-{b:06d}.txt"
        path.write_text("\n".join(lines) + "\n", encoding="ascii")
        paths.append(path)
    return paths


# -- running our client over existing files -----------------------------------------------


def submit_files(
    files: Sequence[Path],
    base_url: str,
    work_dir: Path,
    *,
    concurrency: int,
    client: str = "bench",
    wait: bool = False,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``uploader submit FILES`` in this process (uvloop): wall time and journal figures."""
    from uploader.bench import batch_figures
    from uploader.cli import run_async
    from uploader.journal import Journal
    from uploader.pipeline import run_pipeline
    from uploader.settings import load_settings

    overrides: dict[str, Any] = {
        "target.client": client,
        "target.base_url": base_url,
        "submit.concurrency": concurrency,
        "status.wait": wait,
        "status.poll_initial_s": 0.5,
        "status.poll_max_s": 5.0,
        "run.progress": "none",
        "run.fresh": True,
        **(extra or {}),
    }
    settings = load_settings(None, overrides)
    started = time.perf_counter()
    outcome = run_async(
        run_pipeline(
            "-",
            settings,
            work_dir,
            job_id="bench-submit",
            install_signals=False,
            files=list(files),
        )
    )
    wall = time.perf_counter() - started
    with Journal(work_dir / "journal.sqlite") as journal:
        records = journal.batches()
    figures = batch_figures(records, None)
    return {
        "wall_s": wall,
        "window_s": figures["submit_window_s"],
        "exit_code": outcome.exit_code,
        "report": outcome.report,
        "figures": figures,
    }


# -- curl --------------------------------------------------------------------------------


def curl_sequential(files: Sequence[Path], url: str) -> tuple[float, int]:
    """The documented loop: one ``curl --data-binary @file`` at a time; (seconds, exit code)."""
    script = (
        'for f in "$@"; do curl -sS -o /dev/null -f --data-binary "@$f" "$URL" '
        "|| n=$((n+1)); done; exit ${n:-0}"
    )
    return _timed_shell(script, files, url)


def curl_parallel(files: Sequence[Path], url: str, parallel: int) -> tuple[float, int]:
    """``xargs -P N curl --retry``: N curls at once, curl's own retry on 429/5xx."""
    script = (
        f'printf "%s\\n" "$@" | xargs -P {parallel} -I{{}} '
        'curl -sS -o /dev/null -f --retry 8 --retry-delay 0 --data-binary "@{}" "$URL"'
    )
    return _timed_shell(script, files, url)


def _timed_shell(script: str, files: Sequence[Path], url: str) -> tuple[float, int]:
    env = {**os.environ, "URL": url}
    started = time.perf_counter()
    proc = subprocess.run(
        ["bash", "-c", script, "bench", *map(str, files)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - started
    return elapsed, proc.returncode


def run_module(main: Any, argv: list[str]) -> int:
    """Call a benchmark's ``main(argv)`` and keep going if it fails (for ``__main__``)."""
    try:
        return int(main(argv) or 0)
    except Exception as exc:  # a broken benchmark must not hide the others
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
