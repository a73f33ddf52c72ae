"""``uploader status``: what it says of a run that ended, of one still going, and after --no-wait.

The command line runs in a subprocess; servers are the in-process emulator.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from tests.conftest import EmulatorFactory
from tests.test_cli_errors import run_in_w, small_export, uploader
from uploader.combine import combine, render_combined
from uploader.gen import generate_export
from uploader.journal import Journal
from uploader.workdir import locked


async def test_status_of_a_run_that_could_not_connect(tmp_path: Path) -> None:
    """The stored error and the exit code the run ended with; no bytes reached a server."""
    small_export(tmp_path)
    r = await uploader(
        "run", "export.csv", "--client", "demo", "--base-url", "http://127.0.0.1:1",
        "--max-attempts", "2", "--work-dir", "w", "--progress", "none", cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 2
    s = await uploader("status", "w", cwd=tmp_path)
    assert s.code == 2
    lines = s.stdout.splitlines()
    assert lines[0].endswith(": ERROR (exit 2)")
    assert lines[5].startswith("sent      0 bytes in ")
    assert lines[-1].startswith("hint      error: cannot reach http://127.0.0.1:1: ")
    j = await uploader("status", "w", "--json", cwd=tmp_path)
    rep = json.loads(j.stdout)
    assert (j.code, rep["exit_code"], rep["bytes_submitted"]) == (2, 2, 0)
    assert rep["error"].startswith("cannot reach http://127.0.0.1:1: ")


async def test_status_of_a_run_still_going(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    emu = await emulator_factory()
    small_export(tmp_path)
    r = await uploader(
        "run", "export.csv", "--client", "demo", "--base-url", emu.base_url,
        "--work-dir", "w", "--progress", "none", cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 0
    with locked(tmp_path / "w"):  # as a run holds it: this process plays the running run
        s = await uploader("status", "w", cwd=tmp_path)
        again = await uploader(
            "run", "export.csv", "--client", "demo", "--base-url", emu.base_url,
            "--work-dir", "w", "--progress", "none", cwd=tmp_path,
        )  # fmt: skip
    assert s.code == 3
    lines = s.stdout.splitlines()
    assert lines[0].endswith(f": RUNNING (pid {os.getpid()})")
    assert lines[-1] == (
        f"hint      still running as pid {os.getpid()}: these are its figures so far "
        "(a second run is refused while it holds the work dir)"
    )
    assert "re-run" not in s.stdout
    assert again.code == 2
    assert f"another uploader run is using this work dir (pid {os.getpid()})" in again.stderr
    after = await uploader("status", "w", cwd=tmp_path)  # the lock is released: it ended, exit 0
    assert after.code == 0
    assert after.stdout.splitlines()[0].endswith(": COMPLETE (exit 0)")


async def test_no_wait_says_what_finishes_it(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    emu = await emulator_factory(apply_rate=1.0)  # batches stay incomplete for a while
    small_export(tmp_path)
    r = await run_in_w(tmp_path, "export.csv", emu.base_url, "--no-wait")
    assert r.code == 3
    hint = (
        "hint      not final yet (--no-wait): run it again with --wait to follow the batches "
        "to the end"
    )
    assert r.lines[-1] == hint
    s = await uploader("status", "w", cwd=tmp_path)
    assert (s.code, s.stdout.splitlines()[-1]) == (3, hint)


async def test_status_of_a_finished_run_is_its_report(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """Every field, the times and target included: the run's end as it wrote it."""
    emu = await emulator_factory()
    src = small_export(tmp_path)
    with src.open("a") as f:
        f.write(",gold\n")  # one reject (missing_id): rejects.csv is named
    r = await run_in_w(tmp_path, "export.csv", emu.base_url)
    assert r.code == 1, r.stderr
    written = json.loads((tmp_path / "w" / "report.json").read_text())
    s = await uploader("status", "w", "--json", cwd=tmp_path)
    assert s.code == 1
    assert json.loads(s.stdout) == written
    assert (written["client"], written["stopped_by"]) == ("demo", None)
    assert written["settings"] == {"client": "demo", "api": "v2", "base_url": emu.base_url}
    assert written["outputs"]["rejects"] == "w/rejects.csv"
    assert written["started_at"] <= written["finished_at"]


async def test_status_says_why_a_run_stopped(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """A status timeout, then a run killed without writing its end: each hint says which."""
    emu = await emulator_factory(apply_rate=1.0)  # batches stay incomplete for a while
    small_export(tmp_path)
    r = await run_in_w(tmp_path, "export.csv", emu.base_url, "--status-timeout", "1")
    assert r.code == 3
    hint = (
        "hint      --status-timeout reached before every batch was final: re-run the same "
        "command to continue"
    )
    assert r.lines[-1] == hint
    written = json.loads((tmp_path / "w" / "report.json").read_text())
    assert (written["status"], written["stopped_by"]) == ("incomplete", "status_timeout")
    s = await uploader("status", "w", "--json", cwd=tmp_path)
    assert (s.code, json.loads(s.stdout)) == (3, written)
    with Journal(tmp_path / "w" / "journal.sqlite") as journal:  # as a SIGKILL leaves it
        journal.set_meta("last_outcome", None)
        journal.set_meta("last_exit", None)
    s = await uploader("status", "w", "--json", cwd=tmp_path)
    killed = json.loads(s.stdout)
    assert (s.code, killed["stopped_by"], killed["finished_at"]) == (3, "killed", None)
    assert killed["started_at"] == written["started_at"]
    assert killed["elapsed_s"] >= written["elapsed_s"]
    text = await uploader("status", "w", cwd=tmp_path)
    assert text.stdout.splitlines()[-1] == (
        "hint      the last run ended without writing its end (killed, or the machine "
        "stopped): re-run the same command to continue"
    )


async def test_an_input_error_found_after_batches_went_out_says_so(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """A truncated gzip read without the pre-pass (--unique-ids): exit 2, naming what was sent;
    status --refresh then follows those batches and keeps the error."""
    emu = await emulator_factory()
    data = generate_export(tmp_path / "full.csv.gz", 5000, seed=2, gzip=True).path.read_bytes()
    (tmp_path / "export.csv.gz").write_bytes(data[: len(data) * 6 // 10])
    r = await uploader(
        "run", "export.csv.gz", "--client", "demo", "--base-url", emu.base_url, "--work-dir",
        "w", "--unique-ids", "--max-batch-rows", "100", "--progress", "none", cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 2
    found = re.fullmatch(
        r"uploader: error: export\.csv\.gz:\d+: cannot read: .*; (\d+) batches \(([\d,]+) rows\) "
        r"had been sent before this was found: they stay in the journal "
        r"\(`uploader status w --refresh` follows them\)",
        r.stderr.strip(),
    )
    assert found, r.stderr
    sent = int(found[1])
    assert sent == emu.stats()["batches_accepted"] and int(found[2].replace(",", "")) == sent * 100
    s = await uploader("status", "w", "--refresh", "--json", cwd=tmp_path)
    after = json.loads(s.stdout)
    assert (s.code, after["stopped_by"], after["rows"]["successful"]) == (2, "error", sent * 100)
    assert after["error"] == r.stderr.strip().removeprefix("uploader: error: ")


def test_combined_lines_keep_long_job_ids_apart() -> None:
    """A job id longer than the column still leaves a space before the status."""
    rows = {"read": 10, "rejected": 0, "submitted": 10, "successful": 10, "failed": 0}
    runs = [
        {
            "job_id": job_id,
            "status": "complete",
            "exit_code": 0,
            "rows": {**rows, "not_found": 0, "pending": 0},
            "batches": {"total": 1, "complete": 1},
            "outputs": {"work_dir": work_dir},
            "elapsed_s": 1.0,
        }
        for job_id, work_dir in (("big-01f6253193", "runA"), ("short", "runB"))
    ]
    lines = render_combined(combine(runs), runs).splitlines()
    assert lines[:2] == [
        "big-01f6253193  complete     exit 0  read 10  successful 10  failed 0  pending 0  (runA)",
        "short           complete     exit 0  read 10  successful 10  failed 0  pending 0  (runB)",
    ]
