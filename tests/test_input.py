"""Input hygiene: the common mistakes in an export are caught before anything is sent.

One test per problem, each on a file built in the test: the wrong delimiter,
ids with spaces, short rows, blank lines before the header, encodings
(UTF-16 with a bad code unit, UTF-16 read as UTF-8, binary files, cp1252),
limits that cannot hold one row, and a header-only export. Results are read
back with the csv module (rejects.csv) and the form-data decoder (batches).
"""

from __future__ import annotations

import csv
import struct
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory
from tests.helpers import make_settings, read_report, run, stored_profiles
from tests.test_cli_errors import assert_one_error_line, uploader
from uploader.chunk import Chunker, ChunkSummary, read_batch_rows
from uploader.emulator import Emulator
from uploader.errors import InputError
from uploader.pipeline import run_pipeline
from uploader.report import render_summary
from uploader.settings import BatchSettings, InputSettings, load_settings
from uploader.source import ESCAPE
from uploader.states import RejectReason
from uploader.workdir import default_job_id


def chunk(path: Path, out: Path, **input_kw: object) -> ChunkSummary:
    settings = InputSettings(**input_kw)  # type: ignore[arg-type]
    return Chunker(path, out, settings, BatchSettings(), fsync=False).run()


def sent_rows(summary: ChunkSummary) -> list[list[str]]:
    rows: list[list[str]] = []
    for f in summary.files:
        rows += list(read_batch_rows(f.path))[1:]
    return rows


def rejects(out: Path, encoding: str = "utf-8") -> list[list[str]]:
    with (out / "rejects.csv").open(encoding=encoding, errors=ESCAPE, newline="") as f:
        return list(csv.reader(f))[1:]


def write(tmp_path: Path, data: bytes, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


# -- 1. delimiter --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "flag"),
    [
        (b"id;tier;ltv\nS10;gold;1\n", "--delimiter ';'"),
        (b"id\ttier\nS10\tgold\n", "--delimiter tab"),
        (b'"id"|"tier"\nS10|gold\n', "--delimiter '|'"),
    ],
)
def test_a_one_column_header_holding_another_delimiter_is_refused(
    tmp_path: Path, data: bytes, flag: str
) -> None:
    with pytest.raises(InputError) as err:
        chunk(write(tmp_path, data), tmp_path / "out")
    assert str(err.value).startswith(f"{tmp_path}/in.csv:1: the header is a single column")
    assert str(err.value).endswith(f"-separated; pass {flag}")
    assert not (tmp_path / "out").exists()


def test_the_named_delimiter_then_works_and_a_comma_file_read_with_semicolon_is_caught(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, b"id\ttier\nS10\tgold\n")
    summary = chunk(path, tmp_path / "out", delimiter="tab")
    assert sent_rows(summary) == [["S10", "gold"]]
    with pytest.raises(InputError, match=r"comma-separated; pass --delimiter ,$"):
        chunk(write(tmp_path, b"id,tier\nS10,gold\n", "c.csv"), tmp_path / "o2", delimiter=";")


def test_a_header_without_attribute_columns_is_a_warning(tmp_path: Path) -> None:
    summary = chunk(write(tmp_path, b"id\nC1\nC2\n"), tmp_path / "out")
    assert sent_rows(summary) == [["C1"], ["C2"]]
    assert summary.warnings == (
        "the header has no attribute column besides the id: rows carry no profile "
        "attributes (is --delimiter right?)",
    )


# -- 2. ids with whitespace ----------------------------------------------------------------


IDS = b"id,tier\nC1,gold\n   ,silver\n C3,bronze\nC4 ,gold\n\t,x\n"


def test_whitespace_ids_are_missing_or_invalid_by_default(tmp_path: Path) -> None:
    summary = chunk(write(tmp_path, IDS), tmp_path / "out")
    assert sent_rows(summary) == [["C1", "gold"]]
    assert rejects(tmp_path / "out") == [
        ["3", "   ", "missing_id", "   ,silver"],
        ["4", " C3", "invalid_id", " C3,bronze"],
        ["5", "C4 ", "invalid_id", "C4 ,gold"],
        ["6", "\t", "missing_id", "\t,x"],
    ]


def test_strip_ids_trims_them_instead(tmp_path: Path) -> None:
    summary = chunk(write(tmp_path, IDS), tmp_path / "out", strip_ids=True)
    assert sent_rows(summary) == [["C1", "gold"], ["C3", "bronze"], ["C4", "gold"]]
    assert [r[:3] for r in rejects(tmp_path / "out")] == [
        ["3", "   ", "missing_id"],
        ["6", "\t", "missing_id"],
    ]


# -- 3. short rows -------------------------------------------------------------------------


SHORT = b"id,a,b,c\nC1,1,2,3\nC2,1\nC3\nC4,1,2\n"


def test_short_rows_are_padded_and_counted(tmp_path: Path) -> None:
    summary = chunk(write(tmp_path, SHORT), tmp_path / "out")
    assert sent_rows(summary) == [["C1", "1", "2", "3"], ["C2", "1"], ["C3"], ["C4", "1", "2"]]
    assert summary.short_rows == 3
    assert summary.warnings == (
        "3 rows have fewer fields than the header (first at line 3): padded with empty "
        'values; input.short_rows = "reject" (--short-rows reject) refuses them',
    )


def test_short_rows_reject(tmp_path: Path) -> None:
    summary = chunk(write(tmp_path, SHORT), tmp_path / "out", short_rows="reject")
    assert sent_rows(summary) == [["C1", "1", "2", "3"]]
    assert summary.short_rows == 3 and summary.warnings == ()
    assert rejects(tmp_path / "out") == [
        ["3", "C2", "too_few_fields", "C2,1"],
        ["4", "C3", "too_few_fields", "C3"],
        ["5", "C4", "too_few_fields", "C4,1,2"],
    ]


# -- 4. blank lines before the header ------------------------------------------------------


def test_blank_lines_before_the_header_are_skipped_and_lines_still_count(tmp_path: Path) -> None:
    path = write(tmp_path, b"\r\n\n\r\nid,a\nC1,x\n\nC 2,y\n+,z\n")
    summary = chunk(path, tmp_path / "out")
    assert sent_rows(summary) == [["C1", "x"], ["C 2", "y"]]
    assert [f.first_line for f in summary.files] == [5]
    assert summary.files[0].last_line == 7
    assert rejects(tmp_path / "out") == [["8", "+", "invalid_id", "+,z"]]


# -- 5. encodings --------------------------------------------------------------------------


def test_a_bad_utf16_code_unit_rejects_that_row_with_its_line(tmp_path: Path) -> None:
    bad_unit = struct.pack("<H", 0xD800)  # a lone high surrogate: not valid UTF-16
    data = (
        "id,a\r\nC1,é\r\n".encode("utf-16")
        + "C2,".encode("utf-16-le")
        + bad_unit
        + "x\r\nC3,ok\r\n".encode("utf-16-le")
    )
    summary = chunk(write(tmp_path, data), tmp_path / "out", encoding="utf-16")
    assert sent_rows(summary) == [["C1", "é"], ["C3", "ok"]]
    assert summary.rows_read == 3
    (row,) = rejects(tmp_path / "out", "utf-16")
    assert row[:3] == ["3", "C2", "bad_encoding"]
    # rejects.csv gives the original bytes back, bad code unit included
    raw = (tmp_path / "out" / "rejects.csv").read_bytes()
    assert "C2,".encode("utf-16-le") + bad_unit + "x".encode("utf-16-le") in raw


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        ("utf-16", "the file starts with a UTF-16 byte order mark but is read as utf-8"),
        ("utf-32", "the file starts with a UTF-32 byte order mark but is read as utf-8"),
        (
            "utf-16-le",
            "the first line has a NUL byte in every other position: "
            "the file looks like UTF-16-LE text read as utf-8",
        ),
        (
            "utf-16-be",
            "the first line has a NUL byte in every other position: "
            "the file looks like UTF-16-BE text read as utf-8",
        ),
    ],
)
def test_utf16_read_as_utf8_names_the_encoding_to_pass(
    tmp_path: Path, codec: str, message: str
) -> None:
    data = "id,a\nC1,x\n".encode(codec)
    with pytest.raises(InputError) as err:
        chunk(write(tmp_path, data), tmp_path / "out")
    assert str(err.value) == f"{tmp_path}/in.csv: {message}; pass --encoding {codec}"
    assert sent_rows(chunk(write(tmp_path, data), tmp_path / "o2", encoding=codec)) == [["C1", "x"]]


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "it starts like a PNG image"),
        (b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00", "it starts like an ELF executable"),
        (b"PK\x03\x04\x14\x00\x06\x00", "it starts like a ZIP archive (an .xlsx workbook?)"),
        (b"ab\x00\x01\x02\x00\xff\xfe\x00\x00zz\n", "NUL bytes in the first line: binary data?"),
    ],
)
def test_binary_files_do_not_look_like_csv(tmp_path: Path, data: bytes, what: str) -> None:
    with pytest.raises(InputError) as err:
        chunk(write(tmp_path, data + bytes(range(256)) * 4), tmp_path / "out")
    assert str(err.value) == f"{tmp_path}/in.csv: does not look like CSV text ({what})"


def test_bad_encoding_rows_hint_the_likely_encoding(tmp_path: Path) -> None:
    data = "id,city\nC1,Zürich\nC2,Köln \u2013 Mülheim\nC3,plain\n".encode("cp1252")
    summary = chunk(write(tmp_path, data), tmp_path / "out")
    assert sent_rows(summary) == [["C3", "plain"]]
    assert [r[:3] for r in rejects(tmp_path / "out")] == [
        ["2", "C1", "bad_encoding"],
        ["3", "C2", "bad_encoding"],
    ]
    assert summary.warnings == (
        "2 rows are not valid utf-8 (bad_encoding); they decode as cp1252: pass --encoding cp1252",
    )
    again = chunk(write(tmp_path, data, "again.csv"), tmp_path / "o2", encoding="cp1252")
    assert sent_rows(again) == [["C1", "Zürich"], ["C2", "Köln \u2013 Mülheim"], ["C3", "plain"]]


def test_a_cp1252_header_hints_the_encoding(tmp_path: Path) -> None:
    with pytest.raises(InputError) as err:
        chunk(write(tmp_path, "id,Straße\n".encode("cp1252")), tmp_path / "out")
    assert str(err.value) == (
        f"{tmp_path}/in.csv:1: header is not valid utf-8 (byte 0xDF); "
        "the export may be cp1252: pass --encoding cp1252"
    )


# -- 6 and 7. messages and limits, from the command line -----------------------------------


async def test_command_line_messages(tmp_path: Path) -> None:
    r = await uploader("split", str(tmp_path), "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert_one_error_line(r, 2, f"{tmp_path}: is a directory")
    r = await uploader("run", str(tmp_path), "--client", "acme", cwd=tmp_path)
    assert_one_error_line(r, 2, f"{tmp_path}: is a directory")
    csv_path = write(tmp_path, b"id,a\nC1,x\n")
    r = await uploader(
        "run", str(csv_path), "--client", "acme", "--base-url", "http://example.com", cwd=tmp_path
    )
    assert_one_error_line(
        r,
        2,
        "target.base_url 'http://example.com' uses plain http to a non-loopback host; use "
        "https, or pass --allow-http (target.allow_http = true) to accept sending profiles "
        "unencrypted",
    )
    r = await uploader(
        "split", str(csv_path), "--out", "o", "--max-batch-bytes", "100", cwd=tmp_path
    )
    assert_one_error_line(
        r,
        2,
        "batch.max_bytes 100 cannot hold one row of the maximum size (a 64 KB profile is up "
        "to 196,608 bytes once percent-encoded); use at least 262144",
    )
    assert not (tmp_path / "o").exists()


async def test_global_flags_work_after_the_command(tmp_path: Path) -> None:
    bad = write(tmp_path, b"id;a\nC1;x\n")
    r = await uploader("split", str(bad), "--out", "o", "--debug", cwd=tmp_path)
    assert r.code == 2 and "Traceback" in r.stderr  # --debug shows the traceback
    r = await uploader("--debug", "split", str(bad), "--out", "o", cwd=tmp_path)
    assert r.code == 2 and "Traceback" in r.stderr  # and still works before it
    r = await uploader("split", str(bad), "--out", "o", "-v", cwd=tmp_path)
    assert r.code == 2 and "Traceback" not in r.stderr


async def test_profile_limit_is_measured_like_the_emulator(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    """11,000 x é (22 KB decoded, 66 KB encoded) is sent; 32,800 x é (65.6 KB) is not."""
    emu: Emulator = await emulator_factory()
    ok, big = "é" * 11_000, "é" * 32_800
    path = write(tmp_path, f"id,a\nC1,{ok}\nC2,{big}\n".encode())
    outcome = await run(emu, path, tmp_path / "work")
    assert outcome.report["rows"]["successful"] == 1
    assert outcome.report["rejected_by_reason"] == {"profile_too_large": 1}
    assert stored_profiles(emu, ["C1", "C2"]) == {"C1": {"a": ok}}
    # The emulator, sent the big row in a batch made by hand, refuses that profile too.
    batch = write(tmp_path, b"batch=thirdPartyId,a\nC2," + b"%C3%A9" * 32_800, "big.txt")
    settings = make_settings(emu)
    outcome = await run_pipeline(
        "-", settings, tmp_path / "w2", job_id="big", install_signals=False, files=[batch]
    )
    assert outcome.report["rows"]["failed"] == 1
    assert stored_profiles(emu, ["C2"]) == {}


# -- 8. header only ------------------------------------------------------------------------


async def test_a_header_only_export_exits_0_with_a_warning(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    emu = await emulator_factory()
    outcome = await run(emu, write(tmp_path, b"id,tier\n"), tmp_path / "work")
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "work")
    assert report["rows"]["read"] == 0
    assert report["warnings"] == ["the input has a header but no data rows: nothing to send"]


# -- 9. --limit: a trial load --------------------------------------------------------------


def test_limit_reads_only_the_first_n_records_rejects_included(tmp_path: Path) -> None:
    data = b'id,a\nC1,x\n,missing\nC3,"multi\nline"\n"C4,broken\nC5,y\nC6,z\n'
    summary = chunk(write(tmp_path, data), tmp_path / "out", limit=3)
    assert summary.rows_read == 3 and summary.limited
    assert sent_rows(summary) == [["C1", "x"], ["C3", "multi\nline"]]
    assert [r[:3] for r in rejects(tmp_path / "out")] == [["3", "", "missing_id"]]
    assert summary.warnings == ("input.limit: only the first 3 data records were read",)


def test_a_trial_load_has_its_own_work_dir() -> None:
    base = {"target.client": "acme"}
    full = default_job_id("e.csv", load_settings(None, base, {}))
    trial = default_job_id("e.csv", load_settings(None, {**base, "input.limit": 100}, {}))
    assert trial == full + "-first100"


async def test_short_rows_are_in_the_report_and_the_summary(
    tmp_path: Path, emulator_factory: EmulatorFactory
) -> None:
    emu = await emulator_factory()
    outcome = await run(emu, write(tmp_path, SHORT), tmp_path / "work")
    assert outcome.exit_code == 0
    report = read_report(tmp_path / "work")
    assert report["short_rows"] == 3
    warning = report["warnings"][0]
    assert warning.startswith("3 rows have fewer fields than the header (first at line 3)")
    assert f"warning   {warning}" in render_summary(report).splitlines()
    assert stored_profiles(emu, ["C2", "C3"]) == {"C2": {"a": "1"}, "C3": {}}


# -- 10. exports concatenated with their headers -------------------------------------------


def test_a_copy_of_the_header_is_rejected_not_sent_as_a_profile(tmp_path: Path) -> None:
    day = b"\xef\xbb\xbfid,tier\nC1,gold\n"  # Excel's UTF-8 export starts with a BOM
    data = day + b"id,tier\nC2,silver\n" + day.replace(b"C1", b"C3") + b"C\xe2\x80\x8b4,x\n"
    summary = chunk(write(tmp_path, data), tmp_path / "out")
    assert sent_rows(summary) == [["C1", "gold"], ["C2", "silver"], ["C3", "gold"]]
    assert [r[:3] for r in rejects(tmp_path / "out")] == [
        ["3", "id", "header_row"],
        ["5", "\ufeffid", "header_row"],
        ["7", "C\u200b4", "invalid_id"],  # a zero-width space: another profile than C4
    ]
    assert summary.rejected == {RejectReason.HEADER_ROW: 2, RejectReason.INVALID_ID: 1}


def test_attribute_names_with_spaces_around_them_are_a_warning(tmp_path: Path) -> None:
    summary = chunk(write(tmp_path, b"id, tier,ltv ,note\nC1, gold,1,x\n"), tmp_path / "out")
    assert sent_rows(summary) == [["C1", " gold", "1", "x"]]  # sent as the export says
    assert summary.warnings == (
        "2 attribute names have spaces around them and are sent as they are: ' tier', "
        "'ltv ' (Target keeps ' tier' apart from 'tier'); fix the header, or map the names "
        "with input.rename",
    )
