"""``uploader check`` and a corpus of awkward CSV files (``tests/data/``, written by us).

Each corpus file is cut into batches by the real chunker and the batch
bodies are compared byte for byte (or the rejects exactly); ``uploader
check`` is run on the same files from the command line and its ``--json``
is parsed back.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from tests.test_cli_errors import assert_one_error_line, uploader
from uploader.check import check_input
from uploader.chunk import Chunker, decode_row
from uploader.errors import InputError
from uploader.settings import BatchSettings, InputSettings

DATA = Path(__file__).parent / "data"

# file, input settings -> the one batch body, rejects (line, id, reason), short-row lines
CORPUS: list[tuple[str, dict[str, Any], bytes | None, list[tuple[str, str, str]], list[int]]] = [
    ("cr_only.csv", {}, b"batch=thirdPartyId,tier,ltv\nC1,gold,10\nC2,silver", [], []),
    (
        "crlf_in_quotes.csv",
        {},
        b"batch=thirdPartyId,note\nC1,two%0D%0Alines\nC2,a%20%22quoted%22%20word",
        [],
        [],
    ),
    ("bom.csv", {}, b"batch=thirdPartyId,tier\nC1,gold\nC2,silver", [], []),
    (
        "ragged.csv",
        {},
        b"batch=thirdPartyId,a,b\nC1,1,2\nC2,1\nC4",
        [("4", "C3", "too_many_fields")],
        [3, 5],
    ),
    (
        "ragged.csv",
        {"short_rows": "reject"},
        b"batch=thirdPartyId,a,b\nC1,1,2",
        [
            ("3", "C2", "too_few_fields"),
            ("4", "C3", "too_many_fields"),
            ("5", "C4", "too_few_fields"),
        ],
        [3, 5],
    ),
    ("blank_leading.csv", {}, b"batch=thirdPartyId,a\nC1,x\nC2,y", [], []),
    (
        "utf16.csv",
        {"encoding": "utf-16"},
        b"batch=thirdPartyId,city\nC1,Z%C3%BCrich\nC2,%E6%9D%B1%E4%BA%AC",
        [],
        [],
    ),
    (
        "cp1252.csv",
        {},
        b"batch=thirdPartyId,city\nC3,Paris",
        [("2", "C1", "bad_encoding"), ("3", "C2", "bad_encoding")],
        [],
    ),
    (
        "cp1252.csv",
        {"encoding": "cp1252"},
        b"batch=thirdPartyId,city\nC1,Z%C3%BCrich\nC2,K%C3%B6ln\nC3,Paris",
        [],
        [],
    ),
    ("nul.csv", {}, b"batch=thirdPartyId,a\nC1,x%00y\nC3,ok", [("3", "C\x002", "invalid_id")], []),
    ("semicolon.csv", {"delimiter": ";"}, b"batch=thirdPartyId,tier,ltv\nS10,gold,1", [], []),
    (
        "spaces_in_ids.csv",
        {},
        b"batch=thirdPartyId,tier\nC1,gold",
        [("3", "   ", "missing_id"), ("4", " C3", "invalid_id"), ("5", "C4 ", "invalid_id")],
        [],
    ),
    (
        "spaces_in_ids.csv",
        {"strip_ids": True},
        b"batch=thirdPartyId,tier\nC1,gold\nC3,bronze\nC4,gold",
        [("3", "   ", "missing_id")],
        [],
    ),
    ("header_only.csv", {}, None, [], []),
]


@pytest.mark.parametrize(
    ("name", "settings", "body", "rejected", "short"),
    CORPUS,
    ids=[f"{c[0]}{'-' + '-'.join(c[1]) if c[1] else ''}" for c in CORPUS],
)
def test_corpus_batches_and_rejects_are_exact(
    tmp_path: Path,
    name: str,
    settings: dict[str, Any],
    body: bytes | None,
    rejected: list[tuple[str, str, str]],
    short: list[int],
) -> None:
    inp = InputSettings(**settings)
    summary = Chunker(DATA / name, tmp_path, inp, BatchSettings(), fsync=False).run()
    bodies = [f.path.read_bytes() for f in summary.files]
    assert bodies == ([] if body is None else [body])
    encoding = "utf-8" if inp.encoding == "utf-8" else inp.encoding
    with summary.rejects_path.open(encoding=encoding, errors="surrogateescape", newline="") as f:
        assert [tuple(r[:3]) for r in list(csv.reader(f))[1:]] == rejected
    assert list(summary.short_lines) == short
    findings = check_input(str(DATA / name), inp, BatchSettings(), show=10)
    assert findings["rows"] == {
        "read": summary.rows_read,
        "would_send": summary.rows_written,
        "rejected": len(rejected),
        "folded": 0,
        "short": len(short),
    }
    assert [
        (str(r["line"]), r["id"], reason)
        for reason, v in findings["rejects"].items()
        for r in v["first"]
    ] == sorted(rejected, key=lambda r: (r[2], int(r[0])))
    sent = [] if body is None else body.split(b"\n")[1:]
    # the first rows, decoded back from their encoded form as Target decodes them
    assert [list(s["values"].values()) for s in findings["sample"]] == [decode_row(x) for x in sent]


def test_corpus_whole_file_problems() -> None:
    with pytest.raises(InputError, match=r"semicolon-separated; pass --delimiter ';'$"):
        check_input(str(DATA / "semicolon.csv"), InputSettings(), BatchSettings())
    with pytest.raises(InputError, match=r"UTF-16 byte order mark .* pass --encoding utf-16$"):
        check_input(str(DATA / "utf16.csv"), InputSettings(), BatchSettings())
    findings = check_input(str(DATA / "header_only.csv"), InputSettings(), BatchSettings())
    assert findings["rows"]["read"] == 0 and findings["batches"]["count"] == 0
    assert findings["warnings"] == ["the input has a header but no data rows: nothing to send"]


async def test_check_from_the_command_line(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_bytes(
        b"cust,tier,secret,ltv\n"
        b" C1,gold,x,1\n"
        b"C2,silver\n"
        b",bronze,,3\n"
        b'C4,gold,"multi\nline, with %&+=",4\n'
        b"C5,g,a,b,c\n"
    )
    config = tmp_path / "c.toml"
    config.write_text('[input]\ncolumns = ["tier", "ltv"]\nrename = { ltv = "lifetimeValue" }\n')
    r = await uploader("check", str(path), "--config", str(config), "--json", cwd=tmp_path)
    assert r.code == 1, r.stderr  # rows would be rejected
    f = json.loads(r.stdout)
    assert f["columns"] == {
        "id": {"column": "cust", "type": "thirdPartyId"},
        "attributes": [
            {"column": "tier", "attribute": "tier"},
            {"column": "ltv", "attribute": "lifetimeValue"},
        ],
        "left_out": ["secret"],
    }
    assert f["rows"] == {"read": 5, "would_send": 2, "rejected": 3, "folded": 0, "short": 1}
    assert f["rejects"] == {
        "invalid_id": {"count": 1, "first": [{"line": 2, "id": " C1", "record": " C1,gold,x,1"}]},
        "missing_id": {"count": 1, "first": [{"line": 4, "id": "", "record": ",bronze,,3"}]},
        "too_many_fields": {"count": 1, "first": [{"line": 7, "id": "C5", "record": "C5,g,a,b,c"}]},
    }
    assert f["short_rows"] == {"count": 1, "first_lines": [3]}
    assert f["repeated_ids"] == {
        "handling": "fold",
        "ids": 0,
        "rows": 0,
        "rows_folded": 0,
        "max_rows_per_id": 0,
        "examples": [],
    }
    assert f["batches"]["count"] == 1 and f["batches"]["rows"] == 2
    assert f["batches"]["first"] == [
        {"seq": 1, "rows": 2, "bytes": f["batches"]["bytes"], "lines": [3, 5]}
    ]
    assert f["sample"] == [
        {"line": 3, "values": {"thirdPartyId": "C2", "tier": "silver"}},
        {"line": 5, "values": {"thirdPartyId": "C4", "tier": "gold", "lifetimeValue": "4"}},
    ]
    assert not list(tmp_path.glob("uploader-runs*"))  # nothing written where it ran
    text = await uploader("check", str(path), "--config", str(config), cwd=tmp_path)
    assert text.code == 1
    lines = text.stdout.splitlines()
    assert lines[0] == f"check {path} (csv, delimiter ',', encoding utf-8)"
    assert "          ltv -> lifetimeValue" in lines
    assert "          left out: secret" in lines
    assert "rows      read 5  would send 2  rejected 3  folded 0  short 1" in lines
    assert "repeated  no id is on more than one row" in lines
    assert "rejects   invalid_id 1: line 2 (id ' C1')" in lines
    assert "          line 3: thirdPartyId='C2'  tier='silver'" in lines
    assert "short     1 with fewer fields than the header, at line 3" in lines


async def test_check_of_a_wrong_delimiter_is_one_error_line(tmp_path: Path) -> None:
    r = await uploader("check", str(DATA / "semicolon.csv"), cwd=tmp_path)
    assert_one_error_line(
        r,
        2,
        f"{DATA / 'semicolon.csv'}:1: the header is a single column holding 2 semicolon "
        "character(s): the export looks semicolon-separated; pass --delimiter ';'",
    )


async def test_check_shows_repeated_ids_and_what_they_fold_into(tmp_path: Path) -> None:
    path = tmp_path / "rep.csv"
    path.write_bytes(b"id,a,b\nC1,x,1\nC2,y,2\nC1,,3\nC3,z,3\nC1,w,\n")
    r = await uploader("check", str(path), "--json", cwd=tmp_path)
    assert r.code == 0, r.stderr
    f = json.loads(r.stdout)
    assert f["rows"] == {"read": 5, "would_send": 3, "rejected": 0, "folded": 2, "short": 0}
    assert f["repeated_ids"]["ids"] == 1 and f["repeated_ids"]["rows_folded"] == 2
    assert f["repeated_ids"]["examples"] == [{"id": "C1", "rows": 3, "lines": [2, 4, 6]}]
    assert [s["line"] for s in f["sample"]] == [3, 5]  # rows sent as they are
    text = await uploader("check", str(path), cwd=tmp_path)
    assert "          id 'C1': 3 rows, lines 2, 4, 6" in text.stdout.splitlines()


async def test_check_of_json_lines_names_its_keys(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"id": "J1", "tier": "gold"}\n{"id": "J2", "tier": null}\n')
    r = await uploader("check", str(path), cwd=tmp_path)
    assert r.code == 0, r.stderr
    assert r.stdout.splitlines()[:4] == [
        f"check {path} (jsonl)",
        "columns   JSON key -> Target attribute",
        "          id -> thirdPartyId  (the id)",
        "          tier -> tier",
    ]
