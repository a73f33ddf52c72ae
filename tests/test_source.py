"""Reading exports: encodings, BOM, gzip, stdin, line numbers, malformed records, input errors."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import pytest

from uploader.errors import InputError
from uploader.source import CsvSource


def records(src: CsvSource, size: int = 256) -> tuple[list[tuple[int, list[str]]], list[int]]:
    rows: list[tuple[int, list[str]]] = []
    bad: list[int] = []
    for block in src.blocks(size):
        rows += list(zip(block.lines, block.rows, strict=True))
        bad += [line for line, _ in block.malformed]
    return rows, bad


def write(tmp_path: Path, data: bytes, name: str = "in.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("size", [1, 2, 256])
def test_line_numbers_are_the_first_physical_line_of_each_record(tmp_path: Path, size: int) -> None:
    data = b'id,note\r\nC1,"two\nlines"\r\n\r\nC2,plain\r\nC3,"a\r\nb\rc"\nC4,x\n'
    with CsvSource(write(tmp_path, data)) as src:
        assert src.header == ("id", "note")
        assert src.header_line == 1
        rows, bad = records(src, size)
    assert rows == [
        (2, ["C1", "two\nlines"]),
        (5, ["C2", "plain"]),
        (6, ["C3", "a\r\nb\rc"]),
        (9, ["C4", "x"]),
    ]
    assert bad == []


def test_bom_is_skipped_and_quoted_header_read(tmp_path: Path) -> None:
    data = '\ufeff"id","näme"\nC1,é\n'.encode()
    with CsvSource(write(tmp_path, data)) as src:
        assert src.header == ("id", "näme")
        assert records(src)[0] == [(2, ["C1", "é"])]


def test_gzip_is_detected_by_content(tmp_path: Path) -> None:
    for name in ("in.csv.gz", "in.csv"):
        path = write(tmp_path, gzip.compress(b"id,a\nC1,x\nC2,y\n"), name)
        with CsvSource(path) as src:
            assert records(src)[0] == [(2, ["C1", "x"]), (3, ["C2", "y"])]


def test_stdin(tmp_path: Path) -> None:
    stdin = io.BytesIO(gzip.compress(b"id;a\nC1;x,y\n"))
    with CsvSource("-", delimiter=";", stdin=stdin) as src:
        assert src.label == "<stdin>"
        assert records(src)[0] == [(2, ["C1", "x,y"])]


def test_other_encoding(tmp_path: Path) -> None:
    with CsvSource(write(tmp_path, "id,a\nC1,café\n".encode("latin-1")), encoding="latin-1") as src:
        assert records(src)[0] == [(2, ["C1", "café"])]


def test_undecodable_bytes_become_surrogates_not_errors(tmp_path: Path) -> None:
    with CsvSource(write(tmp_path, b"id,a\nC1,caf\xe9\nC2,ok\n")) as src:
        rows, _ = records(src)
    assert rows == [(2, ["C1", "caf\udce9"]), (3, ["C2", "ok"])]


def test_malformed_records_are_reported_and_reading_goes_on(tmp_path: Path) -> None:
    data = b'id,a\nC1,"x"y\nC2,ok\nC3,"never\nclosed\n'
    with CsvSource(write(tmp_path, data)) as src:
        rows, bad = records(src)
    assert rows == [(3, ["C2", "ok"])]
    assert bad == [2, 4]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "in.csv: empty file (no header)"),
        (b"\xef\xbb\xbf", "in.csv: empty file (no header)"),
        (b"\n\r\n\n", "in.csv: empty file (no header)"),
        (b'"id,a\n', "in.csv:1: malformed header: unexpected end of data"),
        (b"id,\xff\n", "in.csv:1: header is not valid utf-8"),
    ],
)
def test_whole_input_errors(tmp_path: Path, data: bytes, message: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(InputError) as err:
        CsvSource(path)
    assert str(err.value).replace(str(tmp_path) + "/", "").startswith(message)


def test_missing_file_directory_and_unknown_encoding(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"nope\.csv: no such file$"):
        CsvSource(tmp_path / "nope.csv")
    with pytest.raises(InputError, match=r": is a directory$"):
        CsvSource(tmp_path)
    with pytest.raises(InputError, match=r"unknown encoding 'klingon'"):
        CsvSource(write(tmp_path, b"id\n"), encoding="klingon")


def test_truncated_gzip_is_an_input_error_with_a_line(tmp_path: Path) -> None:
    body = b"id,a\n" + b"".join(b"C%d,x\n" % i for i in range(5000))
    path = write(tmp_path, gzip.compress(body)[:-200], "in.csv.gz")
    with CsvSource(path) as src, pytest.raises(InputError, match=r"in\.csv\.gz:\d+: cannot read"):
        records(src)


def test_stdin_is_left_open() -> None:
    stdin = io.BytesIO(b"id\nC1\n")
    buffered = io.BufferedReader(stdin)
    with CsvSource("-", stdin=buffered) as src:
        assert records(src)[0] == [(2, ["C1"])]
    assert not buffered.closed
