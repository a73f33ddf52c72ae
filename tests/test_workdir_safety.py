"""Directories that are not ours, and disks that refuse writes.

A work dir (or `split --out`) that holds files and no journal of ours is
refused with one line: nothing in it is deleted, replaced or re-moded. A
journal that cannot be written (a file-size limit stands in for a full disk)
stops the run with one line naming the path: exit 2 before anything was
sent, exit 3 after, and the same command then finishes from the journal.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import sqlite3
import stat
import sys
from pathlib import Path

from tests.conftest import EmulatorFactory
from tests.helpers import read_report, write_csv
from tests.test_cli_errors import assert_one_error_line, uploader

FOREIGN = {
    "notes.txt": b"mine\n",
    "report.json": b'{"mine": true}\n',
    "rejects.csv": b"mine\n",
    "manifest.jsonl": b"{}\n",
    "batches/keep.bin": b"\x00mine",
}


def _foreign_dir(path: Path, mode: int) -> Path:
    for name, data in FOREIGN.items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_bytes(data)
    path.chmod(mode)
    return path


def _unchanged(path: Path, mode: int) -> None:
    assert stat.S_IMODE(path.stat().st_mode) == mode
    assert {
        str(p.relative_to(path)): p.read_bytes() for p in path.rglob("*") if p.is_file()
    } == FOREIGN


def _export(tmp_path: Path, rows: int = 50) -> Path:
    return write_csv(
        tmp_path / "export.csv", ["id", "tier"], [[f"W{i:04d}", "gold"] for i in range(rows)]
    )


async def test_run_refuses_a_work_dir_with_files_of_its_own(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    _export(tmp_path)
    work = _foreign_dir(tmp_path / "shared", 0o1777)
    for extra in ([], ["--fresh"]):
        r = await uploader(
            "run", "export.csv", "--client", "acme", "--base-url", emu.base_url,
            "--work-dir", str(work), "--progress", "none", *extra, cwd=tmp_path,
        )  # fmt: skip
        assert_one_error_line(
            r,
            2,
            f"{work}: not an uploader work dir: it holds files of its own (such as "
            "'batches/keep.bin') and no journal.sqlite; choose a new or empty --work-dir",
        )
        _unchanged(work, 0o1777)
    assert emu.stats()["submits"] == 0


async def test_split_refuses_an_out_dir_with_files_of_its_own(tmp_path: Path) -> None:
    _export(tmp_path)
    out = _foreign_dir(tmp_path / "out", 0o755)
    r = await uploader("split", "export.csv", "--out", str(out), cwd=tmp_path)
    assert_one_error_line(
        r,
        2,
        f"{out}: not an uploader output dir: it holds files of its own (such as "
        "'batches/keep.bin') and no journal.sqlite; choose a new or empty --out",
    )
    _unchanged(out, 0o755)


async def test_split_refuses_the_work_dir_of_a_run(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """A split there would delete and replace the batch files the run sends (while it
    runs, the run then fails them: 'cannot read batch file')."""
    emu = await emulator_factory()
    _export(tmp_path)
    r = await uploader(
        "run", "export.csv", "--client", "acme", "--base-url", emu.base_url,
        "--work-dir", "w", "--progress", "none", "--max-batch-rows", "10", "--no-wait",
        cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 3, r.stderr
    work = tmp_path / "w"
    before = {str(p.relative_to(work)): p.read_bytes() for p in work.rglob("batch*") if p.is_file()}
    assert len(before) == 5
    r = await uploader("split", "export.csv", "--out", "w", cwd=tmp_path)
    assert_one_error_line(
        r,
        2,
        "w: the work dir of a run (it holds journal.sqlite): a split there would replace "
        "the batch files that run sends; choose another --out",
    )
    after = {str(p.relative_to(work)): p.read_bytes() for p in work.rglob("batch*") if p.is_file()}
    assert after == before


async def test_an_empty_existing_dir_is_used_and_keeps_its_mode(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    _export(tmp_path)
    work, out = tmp_path / "work", tmp_path / "out"
    work.mkdir(mode=0o755)
    out.mkdir(mode=0o755)
    work.chmod(0o1777)
    out.chmod(0o755)
    r = await uploader(
        "run", "export.csv", "--client", "acme", "--base-url", emu.base_url,
        "--work-dir", str(work), "--progress", "none", cwd=tmp_path,
    )  # fmt: skip
    assert r.code == 0, r.stderr
    assert stat.S_IMODE(work.stat().st_mode) == 0o1777
    assert stat.S_IMODE((work / "journal.sqlite").stat().st_mode) == 0o600
    assert (await uploader("split", "export.csv", "--out", str(out), cwd=tmp_path)).code == 0
    assert stat.S_IMODE(out.stat().st_mode) == 0o755
    # an earlier split's output is ours: split again into it
    assert (await uploader("split", "export.csv", "--out", str(out), cwd=tmp_path)).code == 0
    assert sorted(p.name for p in out.iterdir()) == ["batches", "manifest.jsonl", "rejects.csv"]


def _file_size_limit(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


async def _limited(limit: int, *args: str, cwd: Path) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uploader", *args, cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        preexec_fn=lambda: _file_size_limit(limit),
    )  # fmt: skip
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, err.decode()


async def test_a_journal_that_cannot_grow_stops_the_run_with_one_line(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu = await emulator_factory()
    _export(tmp_path, rows=3000)
    work = tmp_path / "work"
    cmd = [
        "run", "export.csv", "--client", "acme", "--base-url", emu.base_url,
        "--work-dir", str(work), "--progress", "none", "--max-batch-rows", "50",
        "--concurrency", "2",
    ]  # fmt: skip
    journal = work / "journal.sqlite"

    # Too small even to create the journal: nothing was sent, exit 2.
    code, err = await _limited(16_000, *cmd, cwd=tmp_path)
    assert code == 2, err
    assert err.startswith(f"uploader: error: cannot write the journal {journal}: ")
    assert err.endswith(
        "; free space (or fix the work dir's permissions) and run the same command again\n"
    )
    assert err.count("\n") == 1
    assert emu.stats()["submits"] == 0

    # Room for a part of the run: it stops mid-way, exit 3, the last line says why.
    os.unlink(journal)
    for leftover in work.glob("journal.sqlite-*"):
        os.unlink(leftover)
    code, err = await asyncio.wait_for(_limited(300_000, *cmd, cwd=tmp_path), 60)
    assert code == 3, err
    last = err.splitlines()[-1]
    assert last.startswith(f"uploader: error: cannot write the journal {journal}: ")
    assert "Traceback" not in err
    sent = emu.stats()["submits"]
    assert 0 < sent < 60
    assert read_report(work)["status"] == "incomplete"
    with sqlite3.connect(journal) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    shown = await uploader("status", str(work), "--json", cwd=tmp_path)
    assert shown.code == 3
    assert json.loads(shown.stdout)["status"] == "incomplete"

    # Space again: the same command finishes from the journal.
    r = await uploader(*cmd, cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert read_report(work)["rows"]["successful"] == 3000
    assert emu.stats()["rows_accepted"] >= 3000
