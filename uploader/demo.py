"""``uploader demo``: the whole tool, end to end, on this machine, with proof.

Generates a realistic CRM export (``gen.py``), serves the built-in emulator
in-process on a free loopback port, runs the real pipeline against it, then
runs ``uploader verify --all`` on the run: every profile is fetched back
through the emulator's profile HTTP API and compared value for value with the
export read again (the one way to check a load, see ``verify/``). A few
deliberately invalid rows must come back in ``rejects.csv`` at exactly the
lines the generator put them on. Exit 0 only when everything matches.

The emulator and the pipeline share one event loop, so nothing here leaves
127.x, and the demo never reads a token from the environment.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import itertools
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from uploader.emulator import Emulator, EmulatorConfig
from uploader.errors import ConfigError
from uploader.gen import GenInfo, generate_export
from uploader.settings import Settings, load_settings
from uploader.verify import VerifyOptions, run_verify

__all__ = [
    "DemoOptions",
    "Verification",
    "add_arguments",
    "batch_rows_for",
    "demo_settings",
    "emulator_config",
    "main",
    "run_demo",
]

DEFAULT_ROWS = 200_000
DEFAULT_OUT = Path("uploader-demo")
CLIENT = "demo"
TARGET_BATCHES = 25  # enough batches to show concurrency, small enough to read the log
# With faults, more and slower batches: enough submits that 2% fault rates happen, and
# enough of them overlapping that the in-flight limit is hit and throttling shows.
FAULT_BATCHES = 100
INVALID_ROWS = 6  # deliberately invalid records spread through the export
FETCH_CONCURRENCY = 32  # `uploader verify --concurrency`: the emulator is local, no rate cap
SEED = 7
MARKER = ".uploader-demo"  # says "this directory is the demo's; safe to overwrite"
EXPORT_NAME = "crm-export.csv"
RUN_DIR = "run"
_SHOW_LINES = 10  # reject line numbers printed in the verification line
_SHOW_MISMATCHES = 5


@dataclass(frozen=True)
class DemoOptions:
    rows: int = DEFAULT_ROWS
    faults: bool = False
    out: Path = DEFAULT_OUT
    keep: bool = False
    progress: str = "auto"


@dataclass
class Verification:
    """What fetching the profiles back found."""

    expected: int = 0  # valid export rows, one profile each
    matched: int = 0
    mismatches: list[str] = field(default_factory=list)  # first few, human readable
    mismatched: int = 0
    stray_profiles: int = 0  # profiles the emulator holds that no valid row explains

    @property
    def ok(self) -> bool:
        return self.matched == self.expected and not self.mismatched and not self.stray_profiles


# -- command line -------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text.replace("_", "").replace(",", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``uploader demo``."""
    parser.description = (
        "Generate a CRM export, serve the Target emulator on 127.0.0.1, upload the export "
        "with the real pipeline, then fetch every profile back and compare it with the export. "
        "Exit 0 only when every profile matches and exactly the invalid rows were rejected."
    )
    add = parser.add_argument
    add(
        "--rows",
        type=_positive_int,
        default=DEFAULT_ROWS,
        metavar="N",
        help=f"records in the generated export (default: {DEFAULT_ROWS})",
    )
    add(
        "--faults",
        action="store_true",
        help="make the emulator slow, throttling and faulty: latency 50-250 ms, 429 above 4 "
        "submits in flight, 2%% dropped connections, 2%% HTTP 503, about one stuck batch, 5%% "
        f"failed status calls; {FAULT_BATCHES} batches instead of {TARGET_BATCHES} "
        "(default: off)",
    )
    add(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        metavar="DIR",
        help=f"directory for everything the demo writes (default: ./{DEFAULT_OUT}/)",
    )
    add(
        "--keep",
        action="store_true",
        help="keep the export and batch files after a successful demo (default: delete them, "
        "keep report.json, rejects.csv, manifest.jsonl and the journal; all is kept on failure)",
    )
    add(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="progress display (default: auto = bars on a terminal, log lines otherwise)",
    )


def main(ns: argparse.Namespace) -> int:
    """Entry point of ``uploader demo``; returns the exit code."""
    from uploader.cli import run_async

    opts = DemoOptions(
        rows=ns.rows, faults=ns.faults, out=Path(ns.out), keep=ns.keep, progress=ns.progress
    )
    return run_async(run_demo(opts, sys.stdout))


# -- the pieces ---------------------------------------------------------------------------


def invalid_every(rows: int) -> int:
    """Every N-th record is made invalid, so that ``INVALID_ROWS`` of them exist."""
    return rows // INVALID_ROWS if rows >= 10 * INVALID_ROWS else 0


def batch_rows_for(rows: int, *, faults: bool = False) -> int:
    """Rows per batch so that the demo has about ``TARGET_BATCHES`` (or ``FAULT_BATCHES``)."""
    return max(1, -(-rows // (FAULT_BATCHES if faults else TARGET_BATCHES)))


def emulator_config(faults: bool) -> EmulatorConfig:
    """A fault-free emulator, or one that misbehaves in every way Target can."""
    if not faults:
        return EmulatorConfig(latency_ms=(2.0, 10.0), seed=SEED)
    return EmulatorConfig(
        latency_ms=(50.0, 250.0),
        max_inflight=4,  # more submits than this in flight -> 429
        retry_after_s=0.2,
        drop_rate=0.02,  # accepted, then the connection is dropped: resent, a duplicate
        error_rate=0.02,  # HTTP 503, not accepted
        stuck_rate=1 / FAULT_BATCHES,  # about one batch ends `stuck`
        status_error_rate=0.05,
        seed=SEED,
    )


def demo_settings(
    base_url: str, rows: int, work_dir: Path, *, faults: bool, progress: str
) -> Settings:
    """The settings of the demo run, built the way the CLI builds them."""
    overrides: dict[str, Any] = {
        "target.client": CLIENT,
        "target.base_url": base_url,
        "batch.max_rows": batch_rows_for(rows, faults=faults),
        "status.poll_initial_s": 0.2,
        "status.poll_max_s": 1.0,
        "submit.backoff_initial_s": 0.05,
        "submit.backoff_max_s": 1.0,
        "run.work_dir": work_dir,
        "run.progress": progress,
        "run.fresh": True,  # a new emulator knows no earlier run: never resume
    }
    if faults:
        # Throttling counts as an attempt; stuck batches are sent again until one applies.
        overrides["submit.max_attempts"] = 30
        overrides["status.resubmit_stuck"] = 3
    # environ={}: a real token in the user's environment is never sent to the demo server.
    return load_settings(None, overrides, environ={})


def prepare_out_dir(out: Path) -> None:
    """Create ``out``; refuse to write into a non-empty directory that is not the demo's."""
    if out.exists():
        if not out.is_dir():
            raise ConfigError(f"{out}: exists and is not a directory")
        if any(out.iterdir()) and not (out / MARKER).exists():
            raise ConfigError(
                f"{out}: directory is not empty and was not made by `uploader demo`; "
                "choose another with --out DIR"
            )
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    (out / MARKER).write_text("written by `uploader demo`; safe to delete\n")


def verification_from(section: Mapping[str, Any], stray_profiles: int) -> Verification:
    """The demo's verdict from the ``verify`` section of report.json."""
    not_ok = (
        section["wrong"]
        + section["missing_profile"]
        + section["not_yet_applied"]
        + section["fetch_errors"]
        + section["unchecked"]
    )
    return Verification(
        expected=section["picked"],
        matched=section["exact"],
        mismatched=not_ok,
        stray_profiles=stray_profiles,
    )


def first_mismatches(path: Path, limit: int = _SHOW_MISMATCHES) -> list[str]:
    """The first lines of verify.csv, human readable (none when it does not exist)."""
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(itertools.islice(csv.DictReader(fh), limit))
    return [
        f"id {r['id']}: {r['attribute']} expected {r['expected']!r}, found {r['found']!r} "
        f"({r['outcome']})"
        for r in rows
    ]


def read_rejects(path: Path) -> dict[int, str]:
    """``rejects.csv`` as {input line: reason} (empty when the file does not exist)."""
    if not path.exists():
        return {}
    with path.open(newline="", encoding="utf-8") as fh:
        return {int(row["line"]): row["reason"] for row in csv.DictReader(fh)}


def _lines(lines: list[int]) -> str:
    shown = ", ".join(str(n) for n in lines[:_SHOW_LINES])
    return shown + (", ..." if len(lines) > _SHOW_LINES else "")


def verification_line(check: Verification, rejects_ok: bool, rejected: dict[int, str]) -> str:
    lines = sorted(rejected)
    if check.ok and rejects_ok:
        return (
            f"verified: {check.matched:,} of {check.expected:,} profiles match the export "
            f"exactly; {len(lines)} rows rejected as expected"
            + (f" (lines {_lines(lines)})" if lines else "")
        )
    parts = [f"{check.matched:,} of {check.expected:,} profiles match the export"]
    if check.mismatched:
        parts.append(f"{check.mismatched:,} differ or are missing")
    if check.stray_profiles:
        parts.append(f"{check.stray_profiles:,} profiles exist that no valid row explains")
    if not rejects_ok:
        parts.append(f"rejected lines ({_lines(lines) or 'none'}) are not the invalid ones")
    return "verification FAILED: " + "; ".join(parts)


# -- the demo -----------------------------------------------------------------------------


async def run_demo(opts: DemoOptions, out: TextIO) -> int:
    """Generate, serve, upload, fetch back, compare; return the exit code."""
    from uploader.pipeline import run_pipeline
    from uploader.progress import progress_display
    from uploader.report import render_summary

    def say(text: str) -> None:
        print(text, file=out, flush=True)

    prepare_out_dir(opts.out)
    export, work_dir = opts.out / EXPORT_NAME, opts.out / RUN_DIR
    started = time.monotonic()
    gen: GenInfo = await asyncio.to_thread(
        generate_export, export, opts.rows, seed=SEED, invalid_every=invalid_every(opts.rows)
    )
    say(
        f"export:    {export} ({gen.rows:,} records on {gen.lines:,} lines, "
        f"{len(gen.rejects)} invalid on purpose)"
    )
    async with Emulator(emulator_config(opts.faults)) as emu:
        mode = "with faults (latency, 429, 503, drops, stuck, status errors)" if opts.faults else ""
        say(f"emulator:  {emu.base_url} {mode or '(fault-free)'}")
        settings = demo_settings(
            emu.base_url, gen.valid_rows, work_dir, faults=opts.faults, progress=opts.progress
        )
        say(
            f"upload:    uploader run {export} --client {CLIENT} --base-url {emu.base_url} "
            f"--max-batch-rows {settings.batch.max_rows} --work-dir {work_dir}"
        )
        outcome = await run_pipeline(
            str(export),
            settings,
            work_dir,
            job_id="demo",
            progress=progress_display(settings.run.progress),
        )
        report = outcome.report
        say(render_summary(report))
        if report["status"] == "partial" and report["rows"]["rejected"] == len(gen.rejects):
            say(
                f"note:      the run says PARTIAL (exit 1) because the {len(gen.rejects)} "
                "invalid rows were rejected, as intended; the demo checks them below"
            )
        if report["status"] not in ("complete", "partial"):
            say(f"demo stopped: the run is {report['status']}; nothing to verify")
            return outcome.exit_code
        say(f"stats:     emulator {_emulator_stats(emu.stats())}")
        await emu.wait_applied(timeout=60.0)
        say(
            f"verify:    uploader verify {work_dir} --all --concurrency {FETCH_CONCURRENCY} "
            "--rate 0 --settle 0"
        )
        checked = await run_verify(
            VerifyOptions(
                work_dir=work_dir,
                mode="all",
                concurrency=FETCH_CONCURRENCY,
                rows_per_s=0.0,
                settle_s=0.0,
                progress=opts.progress,
            ),
            environ={},  # as for the run: a real token is never sent to the demo server
            out=out,
        )
        section = checked.section
        check = verification_from(section, max(0, len(emu.store) - section["checked"]))
        check.mismatches = first_mismatches(work_dir / "verify.csv")
    rejected = read_rejects(work_dir / "rejects.csv")
    expected_rejects = {line: reason.value for line, reason in gen.rejects.items()}
    rejects_ok = rejected == expected_rejects and report["rows"]["rejected"] == len(gen.rejects)
    accounted = report["rows"]["failed"] == 0 and report["rows"]["pending"] == 0
    for problem in check.mismatches:
        say(f"mismatch:  {problem}")
    if rejected != expected_rejects:
        say(f"rejects:   expected {expected_rejects}, rejects.csv has {rejected}")
    if not accounted:
        say("report:    some rows failed or are pending (see report.json and failed.csv)")
    ok = check.ok and rejects_ok and accounted
    say(verification_line(check, rejects_ok, rejected))
    say(f"outputs:   {opts.out}/ ({time.monotonic() - started:.1f} s in all)")
    if ok and not opts.keep:
        export.unlink(missing_ok=True)
        shutil.rmtree(work_dir / "batches", ignore_errors=True)
        say(
            f"           kept {work_dir}/report.json, rejects.csv, manifest.jsonl and "
            "journal.sqlite; "
            "removed the export and batch files (--keep keeps them)"
        )
    return 0 if ok else 1


def _emulator_stats(stats: Mapping[str, int]) -> str:
    """The emulator's side of the run; the status codes say how it adds up to the run's."""
    labels = {
        "submits": "submits",
        "batches_accepted": "batches accepted",
        "duplicate_batches": "duplicate batches",
        # The run's `throttled` counts both: it slows down on a 429 and on a 503.
        "throttled": "throttled (429)",
        "errors_injected": "errors injected (503)",
        "dropped": "dropped",
        "stuck": "stuck",
        "status_errors": "status errors",
        "peak_inflight": "peak inflight",
    }
    return ", ".join(f"{label} {stats.get(k, 0):,}" for k, label in labels.items())
