"""A quote that opens a field and never closes swallows the lines after it.

The CSV reader makes one record of everything up to the closing quote that
never comes: up to the end of the input, or until the field passes the csv
module's limit of 131,072 characters. That record is one ``malformed_record``
reject, so thousands of rows would be left out behind a count of 1; the
summary and report.json must say how many lines that reject holds. The record
is kept whole in rejects.csv, so everything that reads the file back (``check``,
the job summary) must read a field over the csv module's default limit.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tests.conftest import EmulatorFactory
from tests.test_cli_errors import run_in_w, uploader
from uploader.rejects import reject_rows

ONE_LONG = (
    "1 record that does not parse runs over {span:,} input lines (lines 7-{last:,}): "
    "a quote that opens a field and never closes? None of those lines was sent: "
    "each such record is one malformed_record in rejects.csv"
)


def export(path: Path, rows: int, *, bad: set[int]) -> Path:
    """``id,a`` then ``R{i},v{i}``; a row in ``bad`` opens a quote it never closes."""
    with path.open("w", newline="") as fh:
        fh.write("id,a\n")
        for i in range(rows):
            fh.write(f'R{i},"oops\n' if i in bad else f"R{i},v{i}\n")
    return path


async def test_a_quote_to_the_end_is_one_reject_and_a_warning_naming_its_lines(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    emu = await emulator_factory()
    export(tmp_path / "in.csv", 1_000, bad={5})  # line 7 opens a quote; 1,001 lines in all
    r = await run_in_w(tmp_path, "in.csv", emu.base_url, "--summary-md", "sum.md")
    assert r.code == 1, r.stderr
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["rows"]["read"] == 6
    assert report["rows"]["rejected"] == 1
    assert report["rows"]["successful"] == 5
    assert report["warnings"] == [ONE_LONG.format(span=995, last=1_001)]
    assert f"warning   {ONE_LONG.format(span=995, last=1_001)}" in r.stderr.splitlines()
    with (tmp_path / "w" / "rejects.csv").open(newline="") as fh:
        (record,) = list(csv.reader(fh))[1:]
    assert record[:3] == ["7", "", "malformed_record"]
    assert record[3].split("\n") == ['R5,"oops', *(f"R{i},v{i}" for i in range(6, 1_000))]
    assert "malformed_record" in (tmp_path / "sum.md").read_text()


async def test_a_record_over_the_csv_field_limit_is_read_back_by_check_and_the_summary(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    emu = await emulator_factory()
    # The open field passes 131,072 characters at line 10,953 (R10951); reading
    # goes on at the next line, so R10952 onwards are sent.
    export(tmp_path / "in.csv", 20_000, bad={5})
    check = await uploader("check", "in.csv", "--json", cwd=tmp_path)
    assert check.code == 1, check.stderr
    findings = json.loads(check.stdout)
    assert findings["warnings"] == [ONE_LONG.format(span=10_947, last=10_953)]
    assert findings["rows"]["read"] == 9_054
    (example,) = findings["rejects"]["malformed_record"]["first"]
    assert example["line"] == 7
    assert len(example["record"].split("\n")) == 10_947

    r = await run_in_w(tmp_path, "in.csv", emu.base_url, "--summary-md", "sum.md")
    assert r.code == 1, r.stderr  # not 4: the summary reads the long record back
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["rows"]["successful"] == 9_053
    assert report["warnings"] == [ONE_LONG.format(span=10_947, last=10_953)]
    rows = list(reject_rows(tmp_path / "w" / "rejects.csv", "utf-8"))
    assert [row[:3] for row in rows] == [["7", "", "malformed_record"]]
    assert rows[0][3].split("\n")[-1] == "R10951,v10951"
    assert csv.field_size_limit() == 131_072  # put back after reading
    assert "malformed_record" in (tmp_path / "sum.md").read_text()
