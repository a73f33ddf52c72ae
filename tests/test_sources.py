"""Parquet and JSON Lines exports: header, records, line numbers and the text of each value."""

from __future__ import annotations

import datetime as dt
import gzip
import json
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tests.s3server import S3Server, s3_server
from uploader.errors import InputError
from uploader.settings import InputSettings
from uploader.sources import detect_format, object_identity, open_input, open_source
from uploader.sources.render import render_value


def _records(path: Path, settings: InputSettings | None = None) -> tuple[tuple[str, ...], list]:
    with open_source(str(path), settings or InputSettings()) as src:  # type: ignore[attr-defined]
        out = [
            (line, row)
            for block in src.blocks(size=3)
            for line, row in zip(block.lines, block.rows, strict=False)
        ]
        return src.header, out


def test_detect_format() -> None:
    assert detect_format("a.parquet") == "parquet"
    assert detect_format("s3://b/k/part-0.PQ") == "parquet"
    assert detect_format("x.jsonl.gz") == "jsonl"
    assert detect_format("x.ndjson") == "jsonl"
    assert detect_format("x.csv.gz") == "csv"
    assert detect_format("x.txt", "jsonl") == "jsonl"


def test_render_value_rules() -> None:
    utc = dt.UTC
    assert render_value(None) == ""
    assert render_value(float("nan")) == ""
    assert render_value(True) == "true"
    assert render_value(42) == "42"
    assert render_value(Decimal("1200.50")) == "1200.50"
    assert render_value(0.1) == "0.1"
    assert render_value(1e20) == "1e+20"
    assert render_value(dt.date(2026, 11, 29)) == "2026-11-29"
    assert render_value(dt.datetime(2026, 11, 29, 1, 30, tzinfo=utc)) == "2026-11-29T01:30:00+00:00"
    assert render_value(["a", 1, None, {"k": True}]) == '["a",1,null,{"k":true}]'
    assert render_value({"é": Decimal("2.50")}) == '{"é":2.50}'
    assert render_value(b"caf\xc3\xa9") == "café"


def test_parquet_types_render_as_documented(tmp_path: Path) -> None:
    table = pa.table(
        {
            "customerId": pa.array(["C1", "C2", None, "C4"]),
            "visits": pa.array([3, None, 7, -1], pa.int64()),
            "ltv": pa.array(
                [Decimal("1200.50"), Decimal("0.10"), None, Decimal("-3.00")], pa.decimal128(10, 2)
            ),
            "ratio": pa.array([0.5, 1e20, None, float("nan")]),
            "vip": pa.array([True, False, None, True]),
            "since": pa.array([dt.date(2026, 1, 2), None, dt.date(1999, 12, 31), None]),
            "seen": pa.array(
                [dt.datetime(2026, 11, 29, 1, 30, 5), None, None, None], pa.timestamp("s", "UTC")
            ),
            "tags": pa.array([["a", "b"], [], None, ["x,y"]]),
            "tier": pa.array(["gold", "gold", "silver", None]).dictionary_encode(),
        }
    )
    path = tmp_path / "export.parquet"
    pq.write_table(table, path, row_group_size=2)
    header, records = _records(path)
    assert header == (
        "customerId",
        "visits",
        "ltv",
        "ratio",
        "vip",
        "since",
        "seen",
        "tags",
        "tier",
    )
    assert records == [
        (
            1,
            [
                "C1",
                "3",
                "1200.50",
                "0.5",
                "true",
                "2026-01-02",
                "2026-11-29T01:30:05+00:00",
                '["a","b"]',
                "gold",
            ],
        ),
        (2, ["C2", "", "0.10", "1e+20", "false", "", "", "[]", "gold"]),
        (3, ["", "7", "", "", "", "1999-12-31", "", "", "silver"]),
        (4, ["C4", "-1", "-3.00", "", "true", "", "", '["x,y"]', ""]),
    ]


def test_parquet_not_a_parquet_file(tmp_path: Path) -> None:
    path = tmp_path / "export.parquet"
    path.write_text("id,a\n1,2\n")
    with pytest.raises(InputError, match="not a readable Parquet file"):
        open_source(str(path), InputSettings())


def test_jsonl_records_keep_numbers_as_written(tmp_path: Path) -> None:
    lines = [
        '{"id": "C1", "ltv": 1200.50, "vip": true, "n": 1e3, "tags": ["a", 2.0]}',
        "",
        '{"id": "C2", "vip": null, "ltv": 7}',
        "not json",
        '["an", "array"]',
        '{"id": "C3", "ltv": 1, "extra": "x"}',
        '{"id": "C4", "tags": {"k": "v"}}',
    ]
    path = tmp_path / "export.jsonl.gz"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    with open_source(str(path), InputSettings()) as src:  # type: ignore[attr-defined]
        blocks = list(src.blocks(size=2))
        assert src.header == ("id", "ltv", "vip", "n", "tags")
        assert src.header_line == 1
    rows = [(line, row) for b in blocks for line, row in zip(b.lines, b.rows, strict=False)]
    assert rows == [
        (1, ["C1", "1200.50", "true", "1e3", '["a",2.0]']),
        (3, ["C2", "7", "", "", ""]),
        (6, ["C3", "1", "", "", "", "extra=x"]),  # longer than the header: too_many_fields
        (7, ["C4", "", "", "", '{"k":"v"}']),
    ]
    assert [m[0] for b in blocks for m in b.malformed] == [4, 5]


def test_jsonl_empty_or_not_objects(tmp_path: Path) -> None:
    empty = tmp_path / "e.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(InputError, match="empty file"):
        open_source(str(empty), InputSettings())
    arr = tmp_path / "a.jsonl"
    arr.write_text(json.dumps([1, 2]) + "\n")
    with pytest.raises(InputError, match=r"a\.jsonl:1: the first record is not a JSON object"):
        open_source(str(arr), InputSettings())


@pytest.fixture
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.client().create_bucket(Bucket="exports")
        yield server


def test_s3_object_streams_gzip_and_has_an_identity(s3: S3Server) -> None:
    body = b"id,tier\nC1,gold\nC2,silver\n"
    s3.client().put_object(Bucket="exports", Key="day/export.csv.gz", Body=gzip.compress(body))
    stream = open_input("s3://exports/day/export.csv.gz", storage_options=s3.storage_options)
    try:
        assert stream.compressed
        assert stream.data.read() == body
    finally:
        stream.close()
    ident = object_identity("s3://exports/day/export.csv.gz", s3.storage_options)
    assert ident is not None and ident["size"] == str(len(gzip.compress(body)))
    assert ident["ETag"].strip('"')
    s3.client().put_object(Bucket="exports", Key="day/export.csv.gz", Body=gzip.compress(body * 2))
    assert object_identity("s3://exports/day/export.csv.gz", s3.storage_options) != ident
    assert object_identity("/local/file.csv") is None


def test_s3_missing_object_is_one_line(s3: S3Server) -> None:
    with pytest.raises(InputError, match=r"^s3://exports/nope\.csv: no such object$"):
        open_input("s3://exports/nope.csv", storage_options=s3.storage_options)
