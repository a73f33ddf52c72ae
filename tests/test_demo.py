"""``uploader demo`` end to end, as a user runs it: a subprocess, its output, its files."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import pytest

from tests.test_cli_errors import uploader
from uploader import demo
from uploader.gen import generate_export

ROWS = 20_000
# The generator is seeded: the invalid records sit on these input lines, every time.
REJECTED_LINES = (4027, 7980, 11989, 15979, 20002, 23951)
VERIFIED = (
    "verified: 19,994 of 19,994 profiles match the export exactly; "
    "6 rows rejected as expected (lines 4027, 7980, 11989, 15979, 20002, 23951)"
)


async def run_demo(*args: str, cwd: Path) -> tuple[int, str, str]:
    r = await uploader("demo", *args, cwd=cwd, timeout_s=90)
    return r.code, r.stdout, r.stderr


def test_expected_lines_are_the_generators() -> None:
    """The hard-coded lines above are what gen.py puts in a demo export of ROWS rows."""
    info = generate_export(
        Path(os.devnull), ROWS, seed=demo.SEED, invalid_every=demo.invalid_every(ROWS)
    )
    assert tuple(sorted(info.rejects)) == REJECTED_LINES
    assert demo.batch_rows_for(info.valid_rows) == 800


async def test_demo_verifies_every_profile(tmp_path: Path) -> None:
    code, out, err = await run_demo(
        "--rows", str(ROWS), "--out", "d", "--progress", "none", cwd=tmp_path
    )
    assert code == 0, out + err
    assert "Traceback" not in err
    assert VERIFIED in out.splitlines()
    work = tmp_path / "d" / "run"
    report = json.loads((work / "report.json").read_text())
    assert report["rows"] == {
        "read": 20_000,
        "rejected": 6,
        "folded": 0,
        "submitted": 19_994,
        "successful": 19_994,
        "failed": 0,
        "not_found": 0,
        "pending": 0,
    }
    assert report["batches"]["total"] == 25
    assert report["batches"]["complete"] == 25
    with (work / "rejects.csv").open(newline="", encoding="utf-8") as fh:
        rejects = [(int(r["line"]), r["reason"]) for r in csv.DictReader(fh)]
    assert rejects == [
        (4027, "missing_id"),
        (7980, "invalid_id"),
        (11989, "too_many_fields"),
        (15979, "missing_id"),
        (20002, "invalid_id"),
        (23951, "too_many_fields"),
    ]
    # Without --keep the bulky files go; everything the demo wrote stays under --out.
    assert not (tmp_path / "d" / demo.EXPORT_NAME).exists()
    assert not (work / "batches").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]
    kept = ["journal.sqlite", "manifest.jsonl", "rejects.csv", "report.json"]
    assert sorted(p.name for p in work.iterdir() if not p.name.startswith(".")) == kept
    assert (
        "           kept d/run/report.json, rejects.csv, manifest.jsonl and journal.sqlite; "
        "removed the export and batch files (--keep keeps them)"
    ) in out.splitlines()


async def test_demo_with_faults_still_verifies(tmp_path: Path) -> None:
    code, out, err = await run_demo(
        "--rows", str(ROWS), "--faults", "--keep", "--out", "d", "--progress", "none", cwd=tmp_path
    )
    assert code == 0, out + err
    assert VERIFIED in out.splitlines()
    report = json.loads((tmp_path / "d" / "run" / "report.json").read_text())
    assert report["rows"]["successful"] == 19_994
    # The emulator counts 429s and 503s apart; the run's `throttled` is their sum.
    stats = next(line for line in out.splitlines() if line.startswith("stats:"))
    found = dict(re.findall(r"(throttled \(429\)|errors injected \(503\)) (\d+)", stats))
    assert report["requests"]["throttled"] == sum(int(v) for v in found.values())
    assert len(found) == 2
    assert report["batches"]["total"] == 100
    assert (tmp_path / "d" / demo.EXPORT_NAME).exists()  # --keep
    assert len(list((tmp_path / "d" / "run" / "batches").iterdir())) == 100


async def test_demo_refuses_a_directory_that_is_not_its_own(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "important.txt").write_text("keep me")
    code, _, err = await run_demo("--rows", "100", "--out", "mine", cwd=tmp_path)
    assert code == 2
    assert err.splitlines() == [
        "uploader: error: mine: directory is not empty and was not made by `uploader demo`; "
        "choose another with --out DIR"
    ]
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["important.txt"]


@pytest.mark.parametrize(
    ("rows", "problem"),
    [
        ("0", "must be at least 1, got 0"),
        ("-5", "must be at least 1, got -5"),
        ("many", "expected a whole number, got 'many'"),
    ],
)
async def test_demo_rejects_bad_rows(tmp_path: Path, rows: str, problem: str) -> None:
    code, _, err = await run_demo("--rows", rows, cwd=tmp_path)
    assert code == 2
    assert err.splitlines() == [
        f"uploader: error: argument --rows: {problem} (see 'uploader demo --help')"
    ]
    assert list(tmp_path.iterdir()) == []


def test_verification_line_on_mismatch() -> None:
    check = demo.Verification(expected=10, matched=8, mismatched=2, stray_profiles=1)
    assert demo.verification_line(check, False, {5: "missing_id"}) == (
        "verification FAILED: 8 of 10 profiles match the export; 2 differ or are missing; "
        "1 profiles exist that no valid row explains; "
        "rejected lines (5) are not the invalid ones"
    )
