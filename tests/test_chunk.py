"""The chunker: batch files, limits, manifest, rejects.csv, resume, stop, split command."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import itertools
import json
import re
import signal
import stat
import sys
import tempfile
import threading
import unicodedata
from pathlib import Path
from urllib.parse import quote, unquote_to_bytes

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from uploader.chunk import BatchFile, Chunker, ChunkSummary, read_batch_header, read_batch_rows
from uploader.errors import ConfigError, InputError
from uploader.gen import generate_export
from uploader.settings import BatchSettings, InputSettings
from uploader.split import run_split
from uploader.states import RejectReason

HEADER = ["cid", "tier", "note"]
VALUE = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(',"\n\r%&+=#?; \x00\x01é€😀')), st.characters(codec="utf-8")
    ),
    max_size=8,
)
ROW = st.lists(VALUE, min_size=1, max_size=4)


def write_csv(path: Path, rows: list[list[str]], header: list[str] = HEADER) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def chunk(
    src: Path | str,
    out: Path,
    *,
    max_rows: int = 500_000,
    max_bytes: int = 50_000_000,
    **kw: object,
) -> ChunkSummary:
    # These tests check the batch format row for row, so ids are not folded
    # here; folding repeated ids is tested in test_repeats.py.
    inp = kw.pop("input_settings", InputSettings(unique_ids=True))
    return Chunker(
        src,
        out,
        inp,  # type: ignore[arg-type]
        BatchSettings(max_rows=max_rows, max_bytes=max_bytes),
        fsync=False,
        **kw,  # type: ignore[arg-type]
    ).run()


def form_rows(path: Path) -> list[list[str]]:
    """Decode a batch file exactly as form data: nothing reserved may appear raw."""
    body = path.read_bytes()
    assert body.startswith(b"batch=")
    rest = body[len(b"batch=") :]
    assert re.fullmatch(rb"[A-Za-z0-9\-._~%,\n]*", rest), "raw reserved characters in the body"
    assert not re.search(rb"%(?![0-9A-F]{2})", rest)
    assert not body.endswith(b"\n")
    return [
        [unquote_to_bytes(v).decode("utf-8") for v in line.split(b",")]
        for line in rest.split(b"\n")
    ]


def trimmed(row: list[str]) -> list[str]:
    while len(row) > 1 and row[-1] == "":
        row = row[:-1]
    return row


def encoded_len(row: list[str]) -> int:
    return len(",".join(quote(v, safe="") for v in trimmed(row)))


def is_valid(row: list[str], width: int = len(HEADER)) -> bool:
    ident = row[0]
    return (
        len(row) <= width
        and ident != ""
        and ident == ident.strip()  # whitespace-only: missing_id; around the id: invalid_id
        and "+" not in ident
        and "/" not in ident
        and not any(unicodedata.category(c) in ("Cc", "Cf") for c in ident)
    )


def manifest(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def rejects(out: Path) -> list[list[str]]:
    with open(out / "rejects.csv", newline="", encoding="utf-8", errors="surrogateescape") as f:
        return list(csv.reader(f))


def check_output(out: Path, summary: ChunkSummary, max_rows: int, max_bytes: int) -> None:
    """Limits, greedy filling, manifest consistency, accounting."""
    entries = manifest(out)
    assert len(entries) == summary.batches == len(summary.files)
    sizes = []
    for entry, bf in zip(entries, summary.files, strict=True):
        body = (out / str(entry["file"])).read_bytes()
        assert len(body) == entry["bytes"] == bf.bytes < max_bytes
        assert body.count(b"\n") == entry["rows"] == bf.rows <= max_rows
        assert hashlib.sha256(body).hexdigest() == entry["sha256"] == bf.sha256
        assert entry["first_line"] == bf.first_line <= bf.last_line == entry["last_line"]
        sizes.append((len(body), bf.rows, len(body.split(b"\n")[1])))
    for (size, rows, _), (_, _, next_first) in itertools.pairwise(sizes):
        assert rows == max_rows or size + 1 + next_first >= max_bytes, "a batch closed too early"
    assert summary.rows_read == summary.rows_written + summary.rows_rejected
    assert summary.rows_written == sum(f.rows for f in summary.files)
    assert len(rejects(out)) == 1 + summary.rows_rejected
    assert sorted(p.name for p in (out / "batches").iterdir()) == [
        f"batch-{i:06d}.txt" for i in range(1, summary.batches + 1)
    ]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(ROW, max_size=40),
    max_rows=st.integers(1, 8),
    max_bytes=st.integers(60, 400),
)
@example(rows=[["\xad"]], max_rows=1, max_bytes=60)  # an invisible format character: invalid
def test_round_trip_limits_and_accounting(
    rows: list[list[str]], max_rows: int, max_bytes: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        src = write_csv(Path(tmp) / "in.csv", rows)
        out = Path(tmp) / "out"
        summary = chunk(src, out, max_rows=max_rows, max_bytes=max_bytes)
        check_output(out, summary, max_rows, max_bytes)
        sent: list[list[str]] = []
        for bf in summary.files:
            decoded = form_rows(bf.path)
            assert decoded[0] == ["thirdPartyId", "tier", "note"]
            assert decoded == list(read_batch_rows(bf.path))
            sent += decoded[1:]
        assert summary.rows_read == len(rows)
        # Rows too big for these tiny batches are rejected; all others must come back exactly.
        room = max_bytes - len("batch=thirdPartyId,tier,note\n")
        expected = [trimmed(r) for r in rows if is_valid(r) and encoded_len(r) < room]
        assert sent == expected


def test_exact_bytes_of_a_small_split(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [["C1", "gold", "a b"], ["C2", "", ""], ["C3", "x,y"]])
    summary = chunk(src, tmp_path / "out", max_rows=2)
    assert [f.path.read_bytes() for f in summary.files] == [
        b"batch=thirdPartyId,tier,note\nC1,gold,a%20b\nC2",
        b"batch=thirdPartyId,tier,note\nC3,x%2Cy",
    ]
    assert [(f.seq, f.rows, f.first_line, f.last_line) for f in summary.files] == [
        (1, 2, 2, 3),
        (2, 1, 4, 4),
    ]
    assert summary.header == ("cid", "tier", "note")
    assert summary.columns == ("thirdPartyId", "tier", "note")
    assert manifest(tmp_path / "out")[0] == {
        "file": "batches/batch-000001.txt",
        "seq": 1,
        "rows": 2,
        "bytes": 45,
        "first_line": 2,
        "last_line": 3,
        "sha256": hashlib.sha256(summary.files[0].path.read_bytes()).hexdigest(),
    }
    assert rejects(tmp_path / "out") == [["line", "id", "reason", "record"]]


def test_rows_landing_exactly_on_the_byte_limit(tmp_path: Path) -> None:
    # header "batch=thirdPartyId,tier,note" is 28 bytes; each "\nC1,xxxx" row is 8 bytes.
    src = write_csv(tmp_path / "in.csv", [[f"C{i}", "xxxx"] for i in range(1, 6)])
    summary = chunk(src, tmp_path / "out", max_bytes=28 + 2 * 8 + 1)
    assert [f.bytes for f in summary.files] == [44, 44, 36]  # 45 would reach the limit
    assert [f.rows for f in summary.files] == [2, 2, 1]
    summary = chunk(src, tmp_path / "out2", max_bytes=28 + 2 * 8)
    assert [f.rows for f in summary.files] == [1, 1, 1, 1, 1]


def test_rows_landing_exactly_on_the_row_limit(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [[f"C{i}"] for i in range(1, 7)])
    summary = chunk(src, tmp_path / "out", max_rows=3)
    assert [f.rows for f in summary.files] == [3, 3]


def test_each_reject_reason_with_its_line(tmp_path: Path) -> None:
    data = (
        b"cid,tier,note\n"
        b"C1,ok,fine\n"  # 2
        b",gold,x\n"  # 3 missing_id
        b"C+4,gold,x\n"  # 4 invalid_id
        b'"C\t5",gold,x\n'  # 5 invalid_id (control character)
        b"C6,a,b,c\n"  # 6 too_many_fields
        b'C7,"' + b"y" * 70_000 + b'"\n'  # 7 profile_too_large
        b"C8,caf\xe9,x\n"  # 8 bad_encoding
        b'C9,"x"y\n'  # 9 malformed_record
        b'"C10","multi\nline",ok\n'  # 10 (two lines)
        b'C12,"never closed\n'  # 12 malformed_record (unterminated quote at EOF)
    )
    (tmp_path / "in.csv").write_bytes(data)
    summary = chunk(tmp_path / "in.csv", tmp_path / "out")
    assert summary.rows_read == 10
    assert summary.rows_written == 2
    assert summary.rejected == {
        RejectReason.MISSING_ID: 1,
        RejectReason.INVALID_ID: 2,
        RejectReason.TOO_MANY_FIELDS: 1,
        RejectReason.PROFILE_TOO_LARGE: 1,
        RejectReason.BAD_ENCODING: 1,
        RejectReason.MALFORMED_RECORD: 2,
    }
    got = rejects(tmp_path / "out")
    assert got[0] == ["line", "id", "reason", "record"]
    assert [r[:3] for r in got[1:]] == [
        ["3", "", "missing_id"],
        ["4", "C+4", "invalid_id"],
        ["5", "C\t5", "invalid_id"],
        ["6", "C6", "too_many_fields"],
        ["7", "C7", "profile_too_large"],
        ["8", "C8", "bad_encoding"],
        ["9", "", "malformed_record"],
        ["12", "", "malformed_record"],
    ]
    assert got[2][3] == "C+4,gold,x"
    assert got[3][3] == '"C\t5",gold,x'  # as it was in the input
    assert got[7][3] == 'C9,"x"y'  # malformed: the raw text that was read
    assert got[8][3] == 'C12,"never closed'
    assert got[6][3] == "C8,caf\udce9,x"  # the original bytes, written back as they were
    assert b"C8,caf\xe9,x" in (tmp_path / "out" / "rejects.csv").read_bytes()
    assert form_rows(summary.files[0].path)[1:] == [
        ["C1", "ok", "fine"],
        ["C10", "multi\nline", "ok"],
    ]
    assert (summary.files[0].first_line, summary.files[0].last_line) == (2, 10)


def test_rejects_csv_gives_back_every_record_exactly(tmp_path: Path) -> None:
    """csv.reader on rejects.csv returns each rejected record's original text, byte for byte."""
    records = [
        b'C002,silver,"Gare du Nord, Paris","line one\nline two",87.10',  # one field too many
        b',gold,"multi\r\nline",1',  # missing id, a quoted CRLF inside
        b'C+3,gold,"ends in cr\r",2',  # a value ending in \r
        b'"C4",x,y,z,too,many',
        b'C5,"x"y,z,1',  # text after a closing quote
        b',"a ""quoted"" , value\n\n",3',  # blank lines inside quotes
    ]
    good = [b"G%d,ok,fine,1" % i for i in range(600)]  # records cross block boundaries
    body = [*good[:300], *records[:3], b"", *good[300:], b"\r", *records[3:]]
    data = b"cid,tier,note,n\r\n" + b"\r\n".join(body) + b"\r\n"
    (tmp_path / "in.csv").write_bytes(data)
    summary = chunk(tmp_path / "in.csv", tmp_path / "out")
    assert summary.rows_written == 600
    with open(tmp_path / "out" / "rejects.csv", newline="", encoding="utf-8") as f:
        got = list(csv.reader(f))[1:]
    texts = [r[3].encode("utf-8") for r in got]
    assert texts == records
    assert [r[2] for r in got] == [
        "too_many_fields",
        "missing_id",
        "invalid_id",
        "too_many_fields",
        "malformed_record",
        "missing_id",
    ]
    lines = data.splitlines(keepends=True)  # physical lines, as the line numbers count them
    for row, text in zip(got, texts, strict=True):
        at = sum(map(len, lines[: int(row[0]) - 1]))
        assert data[at : at + len(text) + 2] == text + b"\r\n"


def test_row_that_cannot_fit_a_tiny_batch_is_rejected_not_lost(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [["C1", "x"], ["C2", "y" * 40], ["C3"]])
    summary = chunk(src, tmp_path / "out", max_bytes=45)
    assert summary.rejected == {RejectReason.PROFILE_TOO_LARGE: 1}
    assert [form_rows(f.path)[1:] for f in summary.files] == [[["C1", "x"], ["C3"]]]


def test_max_bytes_too_small_for_the_header(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [["C1"]])
    with pytest.raises(ConfigError, match=r"batch\.max_bytes 30 is too small for the header"):
        chunk(src, tmp_path / "out", max_bytes=30)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("data", "kwargs", "message"),
    [
        (b"", {}, "in.csv: empty file (no header)"),
        (b"\n\n", {}, "in.csv: empty file (no header)"),
        (b"a,b\nC1,x\n", {"id_column": "id"}, "in.csv:1: id column 'id' not found in the header"),
        (b"id,b,b\n", {}, "in.csv:1: duplicate column name 'b' in the header"),
        (b"id,,b\n", {}, "in.csv:1: empty column name in the header"),
        (b"id,a,b\n", {"rename": {"a": "b"}}, "in.csv:1: duplicate column name 'b'"),
    ],
)
def test_whole_input_errors_write_nothing(
    tmp_path: Path, data: bytes, kwargs: dict[str, object], message: str
) -> None:
    (tmp_path / "in.csv").write_bytes(data)
    with pytest.raises(InputError) as err:
        chunk(tmp_path / "in.csv", tmp_path / "out", input_settings=InputSettings(**kwargs))  # type: ignore[arg-type]
    assert str(err.value) == f"{tmp_path}/{message}" or str(err.value).startswith(
        f"{tmp_path}/{message}"
    )
    assert not (tmp_path / "out").exists()


def test_unreadable_input_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"missing\.csv: no such file$"):
        chunk(tmp_path / "missing.csv", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mapping_id_type_columns_and_rename(tmp_path: Path) -> None:
    src = write_csv(
        tmp_path / "in.csv", [["g", "n1", "P1"], ["s", "", "P2"]], ["tier", "note", "pc"]
    )
    inp = InputSettings(id_column="pc", id_type="pcId", columns=("tier",), rename={"tier": "lt"})
    summary = chunk(src, tmp_path / "out", input_settings=inp)
    assert form_rows(summary.files[0].path) == [["pcId", "lt"], ["P1", "g"], ["P2", "s"]]
    assert summary.columns == ("pcId", "lt")


def test_pcid_allows_plus_and_slash(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [["a+b/c", "x"]], ["id", "v"])
    summary = chunk(src, tmp_path / "out", input_settings=InputSettings(id_type="pcId"))
    assert summary.rows_written == 1


def test_permissions_are_owner_only(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [["C1"], [""]])
    out = tmp_path / "out"
    summary = chunk(src, out)
    for path in (out, out / "batches"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (out / "manifest.jsonl", out / "rejects.csv", summary.files[0].path):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_same_input_gives_byte_identical_output(tmp_path: Path) -> None:
    generate_export(tmp_path / "in.csv", 3000, seed=7, invalid_every=97)
    a = chunk(tmp_path / "in.csv", tmp_path / "a", max_rows=700)
    b = chunk(tmp_path / "in.csv", tmp_path / "b", max_rows=700)
    assert [f.sha256 for f in a.files] == [f.sha256 for f in b.files]
    for name in ("manifest.jsonl", "rejects.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_gzip_input_gives_the_same_batches(tmp_path: Path) -> None:
    generate_export(tmp_path / "in.csv", 500, seed=3)
    generate_export(tmp_path / "in.csv.gz", 500, seed=3, gzip=True)
    a = chunk(tmp_path / "in.csv", tmp_path / "a", max_rows=200)
    b = chunk(tmp_path / "in.csv.gz", tmp_path / "b", max_rows=200)
    assert [f.sha256 for f in a.files] == [f.sha256 for f in b.files]


def test_on_batch_skip_through_seq_and_stale_files(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", [[f"C{i}"] for i in range(10)])
    out = tmp_path / "out"
    first = chunk(src, out, max_rows=3)
    (out / "batches" / "batch-000009.txt").write_text("stale")
    for f in first.files[:2]:
        f.path.unlink()  # a resumed run must not write these again
    seen: list[BatchFile] = []
    again = chunk(src, out, max_rows=3, on_batch=seen.append, skip_through_seq=2)
    assert [b.seq for b in seen] == [3, 4]
    assert again.files == first.files
    assert manifest(out) == [
        json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()
    ]
    assert len(manifest(out)) == 4
    assert sorted(p.name for p in (out / "batches").iterdir()) == [
        "batch-000003.txt",
        "batch-000004.txt",
    ]


def test_stop_discards_the_unfinished_batch_and_keeps_accounting(tmp_path: Path) -> None:
    generate_export(tmp_path / "in.csv", 2000, seed=1)
    stop = threading.Event()
    seen: list[BatchFile] = []

    def on_batch(b: BatchFile) -> None:
        seen.append(b)
        stop.set()

    summary = chunk(
        tmp_path / "in.csv", tmp_path / "out", max_rows=100, on_batch=on_batch, stop=stop
    )
    assert summary.stopped
    assert 1 <= summary.batches == len(seen) < 20
    assert summary.rows_read == summary.rows_written + summary.rows_rejected
    assert summary.rows_written == 100 * summary.batches
    assert not list((tmp_path / "out" / "batches").glob("*.tmp"))


def test_read_batch_rows_and_header(tmp_path: Path) -> None:
    path = tmp_path / "b.txt"
    path.write_bytes(b"batch=thirdPartyId,a%20b\nC1,x+y%2B\nC2")
    assert list(read_batch_rows(path)) == [["thirdPartyId", "a b"], ["C1", "x y+"], ["C2"]]
    assert read_batch_header(path) == ["thirdPartyId", "a b"]
    (tmp_path / "bad.txt").write_bytes(b"nope")
    with pytest.raises(InputError, match="not a batch file"):
        list(read_batch_rows(tmp_path / "bad.txt"))


def test_run_split_prints_summary_and_exit_codes(tmp_path: Path) -> None:
    good = write_csv(tmp_path / "good.csv", [["C1", "x"]])
    out = io.StringIO()
    assert run_split(str(good), tmp_path / "o1", InputSettings(), BatchSettings(), stdout=out) == 0
    text = out.getvalue()
    assert re.search(r"rows read +1\n", text)
    assert re.search(r"rows rejected +0\n", text)
    assert str(tmp_path / "o1" / "rejects.csv") in text
    bad = write_csv(tmp_path / "bad.csv", [["C1"], ["C+2"]])
    out = io.StringIO()
    assert run_split(str(bad), tmp_path / "o2", InputSettings(), BatchSettings(), stdout=out) == 1
    assert re.search(r"rows rejected +1\n +invalid_id +1\n", out.getvalue())


async def test_an_interrupted_split_says_its_output_is_partial(tmp_path: Path) -> None:
    """Ctrl-C: exit 3 and a line saying so; no batch file of an earlier split is left among
    the new ones (an earlier split of 700 one-row batches, then one of 3,000 batches, large
    enough that a loaded machine still signals it before it ends)."""
    out = tmp_path / "out"
    small = write_csv(tmp_path / "small.csv", [[f"C{i}", "x", "1"] for i in range(700)])
    assert run_split(str(small), out, InputSettings(), BatchSettings(max_rows=1)) == 0
    generate_export(tmp_path / "big.csv", 300_000, seed=3)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "uploader", "split", "big.csv", "--out", "out",
        "--max-batch-rows", "100", cwd=tmp_path, stderr=asyncio.subprocess.PIPE,
        # a test run started in the background by a shell ignores SIGINT, and so would the split
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    first = out / "batches" / "batch-000001.txt"
    for _ in range(6000):  # until the new split wrote its first file (100 rows, not 1)
        if first.exists() and first.stat().st_size > 1000:
            break
        await asyncio.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    files = list((out / "batches").glob("batch-*.txt"))
    left = len(files)
    assert (proc.returncode, left < 3000) == (3, True)
    assert min(f.stat().st_size for f in files) > 1000  # none of the one-row batches
    assert err.decode().splitlines() == [
        f"uploader: interrupted: out holds only part of the split ({left} batch files so "
        "far); do not submit them: run the same command again (it starts over)"
    ]


def test_generated_export_rejects_are_where_gen_says(tmp_path: Path) -> None:
    info = generate_export(tmp_path / "in.csv", 3000, seed=5, invalid_every=50)
    summary = chunk(tmp_path / "in.csv", tmp_path / "out", max_rows=1000)
    got = {int(r[0]): r[2] for r in rejects(tmp_path / "out")[1:]}
    assert got == {line: reason.value for line, reason in info.rejects.items()}
    assert summary.rows_written == info.valid_rows == 3000 - 60


@pytest.mark.slow
def test_a_million_rows_add_up_in_the_manifest(tmp_path: Path) -> None:
    rows = 1_000_000
    info = generate_export(tmp_path / "in.csv", rows, seed=11, invalid_every=10_007)
    summary = chunk(tmp_path / "in.csv", tmp_path / "out", max_rows=25_000)
    entries = manifest(tmp_path / "out")
    assert sum(int(e["rows"]) for e in entries) == summary.rows_written == info.valid_rows  # type: ignore[call-overload]
    assert summary.rows_read == rows
    assert all(e["rows"] == 25_000 for e in entries[:-1])
    assert len(entries) == -(-info.valid_rows // 25_000)
    assert entries[0]["first_line"] == 2
    assert entries[-1]["last_line"] == info.lines
    got = {int(r[0]): r[2] for r in rejects(tmp_path / "out")[1:]}
    assert got == {line: reason.value for line, reason in info.rejects.items()}
