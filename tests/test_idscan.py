"""The repeated-id first pass read from CSV text: the same ids as csv.reader + check_rows."""

from __future__ import annotations

import csv
import functools
import gzip
import io
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from uploader import chunk, idscan
from uploader.chunk import Chunker
from uploader.encode import check_rows, plan_columns
from uploader.repeats import scan_repeats
from uploader.settings import BatchSettings, InputSettings
from uploader.source import CsvSource
from uploader.sources import open_source

# Ids: repeated, padded (kept with input.strip_ids), rejected (empty, "+" in a
# thirdPartyId, a non-ASCII space), outside ASCII and the BMP, the scan's placeholder.
IDS = st.sampled_from(
    [
        "a",
        "b",
        "c",
        "a",
        "b",
        "é",
        "東京",
        "🎉",
        " a",
        "a ",
        "x+y",
        "",
        "\x1e",
        "a\u3000",
        "b\udcff",
    ]
)
# Other values: what csv.writer quotes (quotes, delimiters, line breaks) and what it does not.
VALUES = st.sampled_from(
    ["", "v", "x\ny", 'q"q', '"', ",", ";", "\t", "|", "\r\n", "\r", "é", "🎉", "\x1e", " "]
)
# Unquoted text csv.reader reads otherwise than a naive split: a stray or late quote, a
# quote left open (until some later quote), a lone \r (it ends a record).
JUNK = st.sampled_from(['x"y', '"a"b', '"open', '""x', "x\ry", "\r", '"q""'])
DELIMITERS = st.sampled_from([",", ";", "\t", "|"])


def exact_ids(path: Path, inp: InputSettings) -> list[str]:
    """The ids of the rows the chunker keeps, read the exact way (blocks + check_rows)."""
    with open_source(str(path), inp) as src:
        plan = plan_columns(src.header, inp, "test")
        out: list[str] = []
        for block in src.blocks():
            out += [row[0] for row in check_rows(block.rows, block.lines, plan).keep]
    return out


def fast_ids(path: Path, inp: InputSettings) -> list[str]:
    with open_source(str(path), inp) as src:
        assert isinstance(src, CsvSource)
        plan = plan_columns(src.header, inp, "test")
        return [i for ids in idscan.csv_kept_ids(src, plan) for i in ids]


@st.composite
def exports(draw: st.DrawFn) -> tuple[bytes, InputSettings]:
    """An export (bytes) and its settings: clean rows first, the odd ones anywhere."""
    delimiter = draw(DELIMITERS)
    width = draw(st.integers(1, 4))
    id_at = draw(st.integers(0, width - 1))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    encoding = draw(st.sampled_from(["utf-8", "utf-8", "latin-1", "utf-16"]))
    clean = st.tuples(IDS, st.lists(VALUES, min_size=width - 1, max_size=width - 1)).map(
        lambda t: [*t[1][:id_at], t[0], *t[1][id_at:]]
    )
    odd = st.lists(st.one_of(IDS, VALUES), min_size=0, max_size=width + 2)  # short, long
    junk_at = draw(st.integers(0, width - 1))
    raw_line = st.tuples(
        clean, JUNK
    ).map(  # written as it is, not by csv.writer
        lambda t: "<raw>" + delimiter.join([*t[0][:junk_at], t[1], *t[0][junk_at + 1 :]])
    )
    rows = draw(st.lists(clean, max_size=20)) + draw(
        st.lists(st.one_of(clean, odd, raw_line), max_size=10)
    )
    text = io.StringIO(newline="")
    writer = csv.writer(text, delimiter=delimiter, lineterminator=ending)
    text.write(draw(st.sampled_from(["", "\n", "\r\n", "\r", "\n\n"])))  # before the header
    names = [f"c{i}" for i in range(width)]
    if id_at < width - 1 and draw(st.booleans()):
        names[-1] += "\nof two lines"  # a quoted line break in the header
    writer.writerow(names)
    for row in rows:
        if isinstance(row, str):  # a raw line: stray quotes, a lone \r, a blank line
            text.write(row.removeprefix("<raw>") + ending)
        else:
            writer.writerow(row)
    data = text.getvalue()
    if draw(st.booleans()):
        data = data.rstrip("\r\n")  # no line break after the last record
    if encoding == "latin-1":
        data = data.encode("latin-1", "replace").decode("latin-1")
    # Undecodable bytes (b"\xff") where the encoding can have them.
    raw = data.encode(encoding, "replace" if encoding == "utf-16" else "surrogateescape")
    if encoding == "utf-8" and draw(st.booleans()):
        raw = b"\xef\xbb\xbf" + raw  # a BOM
    if draw(st.booleans()):
        raw = gzip.compress(raw)
    inp = InputSettings(
        id_column=f"c{id_at}",
        delimiter=delimiter,
        encoding=encoding,
        strip_ids=draw(st.booleans()),
        short_rows=draw(st.sampled_from(["pad", "reject"])),
        id_type=draw(st.sampled_from(["thirdPartyId", "pcId"])),
    )
    return raw, inp


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exports(), st.sampled_from([8, 64, 1 << 16]))
def test_text_scan_keeps_the_ids_csv_reader_keeps(
    tmp_path_factory: pytest.TempPathFactory, export: tuple[bytes, InputSettings], chunk: int
) -> None:
    raw, inp = export
    path = tmp_path_factory.mktemp("scan") / "export.csv"
    path.write_bytes(raw)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(idscan, "CHUNK_CHARS", chunk)  # many chunk boundaries in a small export
        assert fast_ids(path, inp) == exact_ids(path, inp)


def split_outputs(out: Path) -> dict[str, bytes]:
    """Every file a split wrote (batches, rejects), and the report's repeated_ids section."""
    files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return files


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(exports())
def test_split_is_byte_identical_with_the_exact_first_pass(
    tmp_path_factory: pytest.TempPathFactory, export: tuple[bytes, InputSettings]
) -> None:
    raw, inp = export
    tmp = tmp_path_factory.mktemp("split")
    path = tmp / "export.csv"
    path.write_bytes(raw)
    batch = BatchSettings(max_rows=3)
    summaries, outputs = [], []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(idscan, "CHUNK_CHARS", 16)
        for exact in (False, True):
            if exact:
                mp.setattr(chunk, "scan_repeats", functools.partial(scan_repeats, exact=True))
            out = tmp / f"out-{exact}"
            summary = Chunker(path, out, inp, batch).run()
            summaries.append(summary.repeats.as_dict() if summary.repeats else None)
            outputs.append(split_outputs(out))
    assert outputs[0] == outputs[1]
    assert summaries[0] == summaries[1]


def test_a_clean_export_is_read_without_csv_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Quoted fields with line breaks, delimiters and doubled quotes, \\r\\n endings: all fast."""
    from uploader.gen import generate_export

    path = tmp_path / "export.csv"
    generate_export(path, 3000, seed=1)
    expected = exact_ids(path, InputSettings())
    assert len(expected) == 3000

    def refuse(*args: object) -> None:
        raise AssertionError("read with csv.reader")

    monkeypatch.setattr(idscan, "_exact_ids", refuse)
    monkeypatch.setattr(idscan, "CHUNK_CHARS", 1000)
    assert fast_ids(path, InputSettings()) == expected  # from the file's bytes
    with CsvSource(path, encoding="cp1252") as src:
        assert src.raw_chunks(1000) is None  # not UTF-8: read as text
    assert fast_ids(path, InputSettings(encoding="cp1252")) == exact_ids(
        path, InputSettings(encoding="cp1252")
    )


def test_a_late_stray_quote_switches_to_csv_reader_for_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = [f"id{i},x{i}\n" for i in range(200)]
    rows[150] = 'id150,a"b\n'  # csv.reader keeps the quote as data; the pairing would not
    rows[170] = 'id170,"c,d"\n'
    rows[180] = "id180,\n"
    rows[181] = "id180,again\n"
    path = tmp_path / "export.csv"
    path.write_text("id,v\n" + "".join(rows))
    calls: list[int] = []
    exact = idscan._exact_ids

    def counted(*args: object, **kwargs: object) -> object:
        calls.append(1)
        return exact(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(idscan, "_exact_ids", counted)
    monkeypatch.setattr(idscan, "CHUNK_CHARS", 100)
    ids = fast_ids(path, InputSettings())
    assert ids == [f"id{i}" for i in range(181)] + ["id180"] + [f"id{i}" for i in range(182, 200)]
    assert calls == [1]  # once, from the chunk with the stray quote to the end
    assert scan_repeats(path, InputSettings()).ids == 1


@pytest.mark.parametrize("chunk_bytes", [5, 7, 64])
def test_after_the_switch_the_bytes_are_decoded_across_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk_bytes: int
) -> None:
    """Chunks of the file's bytes cut characters; the text read after the switch does not."""
    rows = ['é1,a"b"c\n'] + [f"é東🎉{i % 7},x\n" for i in range(60)]
    path = tmp_path / "export.csv"
    path.write_text("id,v\n" + "".join(rows), encoding="utf-8")
    monkeypatch.setattr(idscan, "CHUNK_CHARS", chunk_bytes)
    assert fast_ids(path, InputSettings()) == ["é1"] + [f"é東🎉{i % 7}" for i in range(60)]
