"""The emulator, end to end over HTTP, and its form-data decoder as properties.

HTTP tests talk to the real in-process emulator (``conftest.py``) with a plain
aiohttp ClientSession, so they do not depend on the project's client.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from zlib import crc32

import aiohttp
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import EmulatorFactory
from tests.helpers import run, write_csv
from uploader.emulator import (
    Emulator,
    EmulatorConfig,
    add_arguments,
    config_from_args,
    serve_forever,
)
from uploader.emulator import formdata as fd
from uploader.errors import ConfigError

CLIENT = "demo"
TRICKY = [
    "a,b",
    'say "hi"',
    "two\nlines",
    "crlf\r\nend",
    "100%",
    "%41 stays",
    "x&y=z",
    "1+1=2",
    "a=b",
    " padded ",
    "Zoë Ünïcødé",
    "日本語",
    "🎉🚀",
    "tab\there",
    "semi;colon/slash\\back",
]


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def body_of(rows: list[list[str]]) -> bytes:
    return fd.encode_body(rows)


async def post(
    http: aiohttp.ClientSession,
    emu: Emulator,
    body: bytes,
    *,
    api: str = "v2",
    client: str = CLIENT,
    headers: dict[str, str] | None = None,
) -> tuple[int, str, aiohttp.typedefs.LooseHeaders]:
    path = (
        f"/m2/{client}/v2/profile/batchUpdate"
        if api == "v2"
        else f"/m2/{client}/profile/batchUpdate"
    )
    data = io.BytesIO(body) if len(body) > 1 << 20 else body  # big bytes: aiohttp warns
    async with http.post(emu.base_url + path, data=data, headers=headers) as resp:
        return resp.status, await resp.text(), resp.headers


async def submit_ok(
    http: aiohttp.ClientSession, emu: Emulator, rows: list[list[str]], **kw: Any
) -> str:
    """Submit rows; assert acceptance; return the status URL."""
    status, text, _ = await post(http, emu, body_of(rows), **kw)
    assert status == 200, text
    doc = ET.fromstring(text)
    assert doc.findtext("success") == "true", text
    return doc.findtext("batchStatus") or ""


async def batch_status(http: aiohttp.ClientSession, url: str, details: bool = True) -> ET.Element:
    async with http.get(url + ("&showDetails=true" if details else "")) as resp:
        assert resp.status == 200
        return ET.fromstring(await resp.text())


async def fetch(
    http: aiohttp.ClientSession, emu: Emulator, pid: str, *, by: str = "thirdPartyId"
) -> tuple[int, Any]:
    quoted = urllib.parse.quote(pid, safe="")
    path = (
        f"/rest/v1/profiles/thirdPartyId/{quoted}"
        if by == "thirdPartyId"
        else f"/rest/v1/profiles/{quoted}"
    )
    async with http.get(emu.base_url + path, params={"client": CLIENT}) as resp:
        return resp.status, await resp.json()


def values(profile: dict[str, Any]) -> dict[str, str]:
    return {name: attr["value"] for name, attr in profile["profileAttributes"].items()}


# -- formdata: pure, property-tested ---------------------------------------------------

text_values = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)


@settings(max_examples=200, deadline=None)
@given(
    names=st.lists(text_values.filter(bool), min_size=1, max_size=4),
    data=st.data(),
)
def test_formdata_round_trip(names: list[str], data: st.DataObject) -> None:
    rows = data.draw(
        st.lists(
            st.tuples(text_values.filter(bool), st.lists(text_values, max_size=len(names))),
            min_size=1,
            max_size=5,
        )
    )
    table = [["thirdPartyId", *names]] + [[pid, *vals] for pid, vals in rows]
    scan = fd.scan_batch(body_of(table))
    assert scan.header == fd.BatchHeader("thirdPartyId", tuple(names))
    assert scan.rows == len(rows)
    decoded = [[fd.decode_field(f) for f in row] for row in fd.iter_rows(scan.value)]
    assert decoded == [[pid, *vals] for pid, vals in rows]


_PIECES = [
    b"a",
    b"\xc3\xa9",
    b",",
    b"\n",
    b"\r",
    b"+",
    b"%2C",
    b"%0A",
    b"%1F",
    b"\x1f",
    b"%1e",
    b"%E2%82%AC",
]


_UTF8_PIECES = [b"a", b"%41", b"%C3%A9", b"\xc3\xa9", b"%E2%82%AC", b"%C3", b"%80", b"\xff", b"%25"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_UTF8_PIECES), max_size=30), st.integers(3, 9))
def test_chunked_utf8_check_equals_decoding_the_whole_value(
    pieces: list[bytes], chunk: int
) -> None:
    """The submit check decodes a chunk at a time (no whole decoded copy), same verdict."""
    value = b"".join(pieces)
    try:
        fd._percent_decode(value).decode("utf-8")  # what the check did before
        whole = True
    except UnicodeDecodeError:
        whole = False
    try:
        fd._check_utf8(value, chunk)
        chunked = True
    except fd.BatchFormatError:
        chunked = False
    assert chunked == whole


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=40))
def test_window_decoder_equals_field_by_field(pieces: list[bytes]) -> None:
    value = b"".join(pieces)
    slow = [[fd.decode_field(f) for f in row] for row in fd.iter_rows(value)]
    assert list(fd.iter_decoded_rows(value)) == slow


def test_window_decoder_across_many_windows() -> None:
    rows = [["thirdPartyId", "a", "b"]] + [
        [f"C{i}", TRICKY[i % len(TRICKY)], "x" * (i % 50)] for i in range(30_000)
    ]
    value = fd.scan_batch(body_of(rows)).value
    assert len(value) > 3 * (1 << 18)  # several applier windows
    slow = [[fd.decode_field(f) for f in row] for row in fd.iter_rows(value)]
    assert list(fd.iter_decoded_rows(value)) == slow == rows[1:]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40).map(lambda b: bytes(b"ab\r\n,"[x % 5] for x in b)))
def test_count_rows_matches_iter_lines(value: bytes) -> None:
    assert fd.count_rows(value) == sum(1 for _ in fd.iter_lines(value))


@settings(max_examples=300, deadline=None)
@given(st.text(st.characters(exclude_categories=("Cs",)), max_size=30), st.booleans())
def test_decode_field_matches_unquote_plus(value: str, plus: bool) -> None:
    encoded = (
        urllib.parse.quote_plus(value, safe="") if plus else urllib.parse.quote(value, safe="")
    )
    if plus:  # lower-case hex digits are valid too
        encoded = re.sub("%[0-9A-F]{2}", lambda m: m.group().lower(), encoded)
    assert fd.decode_field(encoded.encode()) == urllib.parse.unquote_plus(encoded)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.one_of(st.integers(0, 255).map(lambda b: f"%{b:02X}".encode()), st.binary(max_size=3))
    )
)
def test_percent_decoding_equals_urllib_bytes(parts: list[bytes]) -> None:
    raw = b"".join(
        p.replace(b"%", b"%25") if not re.fullmatch(rb"%[0-9A-F]{2}", p) else p for p in parts
    )
    expected = urllib.parse.unquote_to_bytes(raw.replace(b"+", b" "))
    try:
        want: str | None = expected.decode("utf-8")
    except UnicodeDecodeError:
        want = None
    if want is None:
        with pytest.raises(fd.BatchFormatError, match="Unexpected error"):
            fd.decode_field(raw)
    else:
        assert fd.decode_field(raw) == want


@pytest.mark.parametrize(
    "body",
    [
        b"batch=thirdPartyId,a\nC1,%zz",
        b"batch=thirdPartyId,a\nC1,%4",
        b"batch=thirdPartyId,a\nC1,100%",
        b"batch=thirdPartyId,a\nC1,%FF",  # not UTF-8 once decoded
        b"batch=thirdPartyId,a\nC1,%C3",  # truncated UTF-8 sequence
        b"batch=thirdPartyId,a\nC1,\xff",  # raw invalid UTF-8
        b"batch=thirdPartyId,a\nC1,%C3,%A9",  # a sequence split by a raw comma
    ],
)
def test_formdata_unexpected_error(body: bytes) -> None:
    with pytest.raises(fd.BatchFormatError, match=r"^Unexpected error$"):
        fd.scan_batch(body)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"thirdPartyId,a\nC1,x", "must start with batch="),
        (b"batch=", "empty"),
        (b"batch=\n\n", "empty"),
        (b"batch=thirdPartyId,a\n", "no rows"),
        (b"batch=&thirdPartyId,a\nC1,x", "empty"),
        (b"batch=email,a\nC1,x", "pcId or thirdPartyId"),
        (b"batch=ThirdPartyId,a\nC1,x", "pcId or thirdPartyId"),
        (b"batch=thirdPartyId,,a\nC1,x", "Empty parameter name"),
    ],
)
def test_formdata_batch_refusals(body: bytes, message: str) -> None:
    with pytest.raises(fd.BatchFormatError, match=message):
        fd.scan_batch(body)


def test_formdata_row_limit() -> None:
    ok = fd.scan_batch(b"batch=thirdPartyId\n" + b"a\n" * fd.MAX_ROWS)
    assert ok.rows == fd.MAX_ROWS
    with pytest.raises(fd.BatchFormatError, match="more than 500000"):
        fd.scan_batch(b"batch=thirdPartyId\n" + b"a\n" * (fd.MAX_ROWS + 1))


def test_formdata_truncation_plus_and_crlf() -> None:
    scan = fd.scan_batch(b"batch=thirdPartyId,a\r\nC1,x+y\r\n\r\nC2,b&c\nC3,d")
    rows = [[fd.decode_field(f) for f in row] for row in fd.iter_rows(scan.value)]
    assert rows == [["C1", "x y"], ["C2", "b"]]
    assert scan.rows == 2


# -- HTTP: submit, status, fetch ------------------------------------------------------


async def test_submit_answer_is_target_shaped(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    status, text, headers = await post(
        http, emulator, body_of([["thirdPartyId", "a"], ["C1", "x"]])
    )
    assert status == 200
    assert headers["Content-Type"].startswith("application/xml")
    match = re.fullmatch(
        r"<response><success>true</success><batchStatus>http://127\.0\.0\.2:(\d+)/m2/demo/profile/"
        r"batchStatus\?batchId=(demo-\d{13}-\d+)</batchStatus>"
        r"<message>Batch submitted for processing</message></response>",
        text,
    )
    assert match is not None, text
    assert int(match.group(1)) == emulator.port
    assert emulator.base_url == f"http://127.0.0.1:{emulator.port}"


async def test_round_trip_of_tricky_values(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    names = [f"p{i}" for i in range(len(TRICKY))] + ["Näme,=&+%"]
    rows = [
        ["thirdPartyId", *names],
        ["C1", *TRICKY, "named"],
        ["id ü+/x".replace("+/", ""), "only"],
    ]
    url = await submit_ok(http, emulator, rows)
    await emulator.wait_applied()
    doc = await batch_status(http, url)
    assert (doc.findtext("status"), doc.findtext("successfulUpdates")) == ("complete", "2")
    status, profile = await fetch(http, emulator, "C1")
    assert status == 200
    assert values(profile) == dict(zip(names, [*TRICKY, "named"], strict=True))
    assert set(profile) == {"mboxPC", "client", "thirdPartyId", "modifiedAt", "profileAttributes"}
    assert (profile["client"], profile["thirdPartyId"]) == (CLIENT, "C1")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", profile["modifiedAt"])
    assert values((await fetch(http, emulator, "id üx"))[1]) == {"p0": "only"}
    assert emulator.profile(CLIENT, "thirdPartyId", "C1") == profile


async def test_raw_reserved_characters_are_read_as_form_data(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = b"batch=thirdPartyId,a,b\nC1,x+y,p=q\nC2,one,two,three\nC3,cut&C4,lost"
    status, text, _ = await post(http, emulator, body)
    assert "<success>true</success>" in text and status == 200
    await emulator.wait_applied()
    assert values((await fetch(http, emulator, "C1"))[1]) == {"a": "x y", "b": "p=q"}
    assert (await fetch(http, emulator, "C2"))[0] == 404  # a raw comma made a 4th field
    assert values((await fetch(http, emulator, "C3"))[1]) == {"a": "cut"}
    assert (await fetch(http, emulator, "C4"))[0] == 404
    assert emulator.stats()["rows_applied"] == 3  # C1, C2 (failed: 4 fields), C3


@pytest.mark.parametrize(
    "body", [b"batch=thirdPartyId,a\nC1,100%", b"batch=thirdPartyId,a\nC1,%zz"]
)
async def test_bad_escape_rejects_batch(
    emulator: Emulator, http: aiohttp.ClientSession, body: bytes
) -> None:
    status, text, _ = await post(http, emulator, body)
    assert (status, text) == (
        200,
        "<response><success>false</success><message>Unexpected error</message></response>",
    )
    assert emulator.stats()["batches_rejected"] == 1 and emulator.stats()["batches_accepted"] == 0


@pytest.mark.parametrize(
    "body",
    [
        b"batch=",
        b"batch=thirdPartyId,a",
        b"batch=customerId,a\nC1,x",
        b"batch=thirdPartyId\n" + b"a\n" * (fd.MAX_ROWS + 1),
    ],
)
async def test_refused_batches(
    emulator: Emulator, http: aiohttp.ClientSession, body: bytes
) -> None:
    status, text, _ = await post(http, emulator, body)
    doc = ET.fromstring(text)
    assert (status, doc.findtext("success"), doc.find("batchStatus")) == (200, "false", None)
    assert doc.findtext("message")


async def test_body_of_50_mb_gets_413(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    row = b"C," + b"x" * 1021 + b"\n"  # 1 KiB rows: 51,200 of them, under the row limit
    big = b"batch=thirdPartyId,a\n" + row * (fd.BODY_LIMIT // len(row) - 1)
    big += b"y" * (fd.BODY_LIMIT - len(big))  # exactly 50 MiB: one byte too many
    assert len(big) == fd.BODY_LIMIT
    status, text, _ = await post(http, emulator, big)
    assert status == 413 and "<success>false</success>" in text
    just_under = big[:-1]
    status, text, _ = await post(http, emulator, just_under)
    assert status == 200 and "<success>true</success>" in text


async def test_chunked_body_over_limit_is_not_buffered(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b"batch=thirdPartyId,a\n"
        for _ in range(60):  # 60 MiB without a Content-Length
            yield b"C,x\n" * (1 << 18)

    async with http.post(
        emulator.base_url + "/m2/demo/v2/profile/batchUpdate", data=chunks()
    ) as resp:
        assert resp.status == 413
    assert emulator.stats()["bytes_received"] == 0


async def test_status_moves_from_incomplete_to_complete(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emu = await emulator_factory(apply_rate=200.0)
    url = await submit_ok(http, emu, [["thirdPartyId", "a"]] + [[f"C{i}", "v"] for i in range(40)])
    first = await batch_status(http, url)
    assert (first.findtext("status"), first.findtext("batchSize")) == ("incomplete", "40")
    assert int(first.findtext("consumedCount") or -1) < 40
    with pytest.raises(TimeoutError):
        await emu.wait_applied(timeout=0.01)
    await emu.wait_applied(timeout=10)
    done = await batch_status(http, url)
    assert [done.findtext(k) for k in ("status", "consumedCount", "successfulUpdates")] == [
        "complete",
        "40",
        "40",
    ]
    short = await batch_status(http, url, details=False)
    assert [child.tag for child in short] == ["batchId", "status", "batchSize"]


async def test_batches_apply_in_fifo_order(emulator: Emulator, http: aiohttp.ClientSession) -> None:
    for value in ("first", "second", "third"):
        await submit_ok(http, emulator, [["thirdPartyId", "tier"], ["C1", value]])
    await emulator.wait_applied()
    assert values((await fetch(http, emulator, "C1"))[1]) == {"tier": "third"}


async def test_v1_counts_unknown_ids_as_not_found(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    await submit_ok(http, emulator, [["thirdPartyId", "a"], ["known", "1"]])
    await emulator.wait_applied()
    url = await submit_ok(
        http, emulator, [["thirdPartyId", "a"], ["known", "2"], ["new", "3"]], api="v1"
    )
    await emulator.wait_applied()
    doc = await batch_status(http, url)
    counts = [doc.findtext(k) for k in ("successfulUpdates", "profilesNotFound", "failedUpdates")]
    assert counts == ["1", "1", "0"]
    assert doc.find("profile") is None
    assert values((await fetch(http, emulator, "known"))[1]) == {"a": "2"}
    assert await fetch(http, emulator, "new") == (
        404,
        {"status": 404, "message": "No profile found for thirdPartyId new in client demo"},
    )


async def test_empty_values_never_clear_and_names_are_case_sensitive(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    await submit_ok(
        http, emulator, [["thirdPartyId", "tier", "Tier", "ltv"], ["C1", "gold", "Gold", "10"]]
    )
    await submit_ok(
        http,
        emulator,
        [["thirdPartyId", "tier", "Tier", "ltv"], ["C1", "", "", "20"], ["C1", "", ""]],
    )
    await submit_ok(
        http, emulator, [["thirdPartyId", "tier", "ltv"], ["C1"]]
    )  # missing trailing fields
    await emulator.wait_applied()
    assert values((await fetch(http, emulator, "C1"))[1]) == {
        "tier": "gold",
        "Tier": "Gold",
        "ltv": "20",
    }


async def test_per_row_failures_are_listed_in_v2_details(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    body = (
        body_of([["thirdPartyId", "a"], ["ok", "1"], ["a+b", "2"], ["a/b", "3"]])
        + b"\nwide,1,2\n,4"
    )
    _, text, _ = await post(http, emulator, body)
    url = ET.fromstring(text).findtext("batchStatus") or ""
    await emulator.wait_applied()
    doc = await batch_status(http, url)
    assert [doc.findtext(k) for k in ("batchSize", "successfulUpdates", "failedUpdates")] == [
        "5",
        "1",
        "4",
    ]
    failed = [(p.findtext("id"), p.findtext("status")) for p in doc.iter("profile")]
    assert failed == [("a+b", "error"), ("a/b", "error"), ("wide", "error"), ("", "error")]
    assert all(p.findtext("message") for p in doc.iter("profile"))
    assert (await fetch(http, emulator, "a+b"))[0] == 404


async def test_profile_over_64_kb_fails_its_row(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    url = await submit_ok(
        http,
        emulator,
        [["thirdPartyId", "a", "b"], ["big", "é" * 20_000, "x" * 30_000], ["ok", "1"]],
    )
    await emulator.wait_applied()
    doc = await batch_status(http, url)
    assert [doc.findtext(k) for k in ("successfulUpdates", "failedUpdates")] == ["1", "1"]
    assert [p.findtext("message") for p in doc.iter("profile")] == ["Profile exceeds 64 KB"]


async def test_pc_id_profiles_and_fetch_by_mbox_pc(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    await submit_ok(http, emulator, [["pcId", "a"], ["1701-abc.27_0", "pc"]])
    await submit_ok(http, emulator, [["thirdPartyId", "a"], ["T1", "tp"]])
    await emulator.wait_applied()
    status, by_pc = await fetch(http, emulator, "1701-abc.27_0", by="pcId")
    assert status == 200 and by_pc["mboxPC"] == "1701-abc.27_0" and "thirdPartyId" not in by_pc
    assert values(by_pc) == {"a": "pc"}
    _, third = await fetch(http, emulator, "T1")
    assert await fetch(http, emulator, third["mboxPC"], by="pcId") == (200, third)
    assert (await fetch(http, emulator, "nope", by="pcId"))[0] == 404


async def test_unknown_batch_and_wrong_client(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    url = await submit_ok(http, emulator, [["thirdPartyId", "a"], ["C1", "x"]])
    for bad in (url.replace("batchId=", "batchId=x"), url.replace("/m2/demo/", "/m2/other/")):
        async with http.get(bad) as resp:
            assert resp.status == 404
            assert "<success>false</success>" in await resp.text()


async def test_stats_endpoint_and_duplicates(
    emulator: Emulator, http: aiohttp.ClientSession
) -> None:
    rows = [["thirdPartyId", "a"], ["C1", "x"]]
    url = await submit_ok(http, emulator, rows)
    await submit_ok(http, emulator, rows)
    await post(http, emulator, b"batch=")
    await batch_status(http, url)
    await emulator.wait_applied()
    async with http.get(emulator.base_url + "/_emulator/stats") as resp:
        served = await resp.json()
    assert served == emulator.stats()
    expected = {
        "submits": 3,
        "batches_accepted": 2,
        "batches_rejected": 1,
        "rows_applied": 2,
        "duplicate_batches": 1,
        "throttled": 0,
        "errors_injected": 0,
        "dropped": 0,
        "stuck": 0,
        "status_calls": 1,
        "status_errors": 0,
        "peak_inflight": 1,
    }
    assert {k: served[k] for k in expected} == expected
    emulator.reset()
    assert (
        emulator.stats()["submits"] == 0 and emulator.profile(CLIENT, "thirdPartyId", "C1") is None
    )


# -- fault switches --------------------------------------------------------------------


async def test_error_rate_answers_503_and_accepts_nothing(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emu = await emulator_factory(error_rate=1.0)
    status, _, _ = await post(http, emu, body_of([["thirdPartyId", "a"], ["C1", "x"]]))
    assert status == 503
    stats = emu.stats()
    assert (stats["errors_injected"], stats["batches_accepted"]) == (1, 0)


async def test_drop_rate_accepts_then_disconnects(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emu = await emulator_factory(drop_rate=1.0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await post(http, emu, body_of([["thirdPartyId", "a"], ["C1", "x"]]))
    await emu.wait_applied()
    stats = emu.stats()
    assert (stats["dropped"], stats["batches_accepted"], stats["inflight"]) == (1, 1, 0)
    assert values(emu.profile(CLIENT, "thirdPartyId", "C1") or {}) == {"a": "x"}


async def test_stuck_rate_never_applies(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emu = await emulator_factory(stuck_rate=1.0)
    url = await submit_ok(http, emu, [["thirdPartyId", "a"], ["C1", "x"]])
    await emu.wait_applied()
    doc = await batch_status(http, url)
    assert (doc.findtext("status"), doc.findtext("consumedCount")) == ("stuck", "0")
    assert emu.profile(CLIENT, "thirdPartyId", "C1") is None
    assert emu.stats()["stuck"] == 1


async def test_status_error_rate(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emu = await emulator_factory(status_error_rate=1.0)
    url = await submit_ok(http, emu, [["thirdPartyId", "a"], ["C1", "x"]])
    async with http.get(url) as resp:
        assert resp.status == 500
    assert (emu.stats()["status_calls"], emu.stats()["status_errors"]) == (1, 1)


async def test_max_inflight_throttles_with_retry_after(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    # the latency keeps the first submit in flight while the second arrives
    emu = await emulator_factory(max_inflight=1, latency_ms=(300.0, 300.0), retry_after_s=2.5)
    body = body_of([["thirdPartyId", "a"], ["C1", "x"]])
    first = asyncio.create_task(post(http, emu, body))
    while emu.stats()["inflight"] == 0:  # noqa: ASYNC110 - the emulator exposes no event
        await asyncio.sleep(0.005)
    status, _, headers = await post(http, emu, body)
    assert (status, headers["Retry-After"]) == (429, "2.5")
    assert (await first)[0] == 200
    stats = emu.stats()
    assert (stats["throttled"], stats["batches_accepted"], stats["peak_inflight"]) == (1, 1, 2)


async def test_same_seed_gives_same_faults(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    body = body_of([["thirdPartyId", "a"], ["C1", "x"]])
    runs = []
    for _ in range(2):
        emu = await emulator_factory(error_rate=0.5, seed=7)
        runs.append([(await post(http, emu, body))[0] for _ in range(12)])
    assert runs[0] == runs[1]
    assert set(runs[0]) == {200, 503}


async def test_token_is_required_everywhere(
    emulator_factory: EmulatorFactory, http: aiohttp.ClientSession
) -> None:
    emu = await emulator_factory(token="s3cret")
    body = body_of([["thirdPartyId", "a"], ["C1", "x"]])
    assert (await post(http, emu, body))[0] == 401
    assert (await post(http, emu, body, headers={"Authorization": "Bearer wrong"}))[0] == 401
    auth = {"Authorization": "Bearer s3cret"}
    status, text, _ = await post(http, emu, body, headers=auth)
    assert status == 200
    url = ET.fromstring(text).findtext("batchStatus") or ""
    await emu.wait_applied()
    for target in (url, emu.base_url + "/rest/v1/profiles/thirdPartyId/C1?client=demo"):
        async with http.get(target) as resp:
            assert resp.status == 401
        async with http.get(target, headers=auth) as resp:
            assert resp.status == 200
    assert emu.stats()["unauthorized"] == 4


# -- configuration and serving ---------------------------------------------------------


@pytest.mark.parametrize(
    "bad",
    [
        {"apply_rate": 0},
        {"latency_ms": (5.0, 1.0)},
        {"max_inflight": 0},
        {"error_rate": 1.5},
        {"drop_rate": -0.1},
        {"token": ""},
        {"status_host": "127.0.0.2:80"},
    ],
)
def test_config_is_validated(bad: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        EmulatorConfig(**bad)


def test_flags_build_the_config() -> None:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    flags = "--latency-ms 5-20 --max-inflight 4 --error-rate 0.1 --drop-rate 0.2 --stuck-rate 0.3"
    flags += " --status-error-rate 0.4 --token T --seed 9 --apply-rate 100 --retry-after 3"
    ns = parser.parse_args(flags.split())
    assert config_from_args(ns) == EmulatorConfig(
        apply_rate=100.0,
        latency_ms=(5.0, 20.0),
        max_inflight=4,
        error_rate=0.1,
        drop_rate=0.2,
        stuck_rate=0.3,
        status_error_rate=0.4,
        token="T",
        seed=9,
        retry_after_s=3.0,
    )
    assert (ns.host, ns.port) == ("127.0.0.1", 0)


async def test_serve_forever_prints_and_stops_on_cancel(capsys: pytest.CaptureFixture[str]) -> None:
    task = asyncio.create_task(serve_forever(EmulatorConfig(), "127.0.0.1", 0))
    out = ""
    for _ in range(500):
        await asyncio.sleep(0.01)
        out += capsys.readouterr().out
        if out:
            break
    assert re.fullmatch(
        r"emulator listening on http://127\.0\.0\.1:\d+ \(status host 127\.0\.0\.2\)\n", out
    )
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_store_none_keeps_counts_and_a_digest(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    """--store none: the run sees the same answers; the emulator holds no profile."""
    rows = [[f"C{i:05d}", ("gold", "")[i % 2], f"{i}.5", "a,b & c=d"] for i in range(500)]
    src = write_csv(tmp_path / "e.csv", ["id", "tier", "ltv", "note"], rows)
    digests = []
    for store in ("none", "none", "full"):
        emu = await emulator_factory(store=store)
        outcome = await run(emu, src, tmp_path / store / str(len(digests)), batch__max_rows=100)
        assert outcome.exit_code == 0
        assert outcome.report["rows"]["successful"] == 500
        stats = emu.stats()
        assert stats["rows_applied"] == 500
        assert stats["profiles_stored"] == (500 if store == "full" else 0)
        digests.append(stats["rows_digest"])
    expected = sum(crc32("\x1f".join(r).encode()) for r in rows) % 2**64
    assert digests[:2] == [expected, expected]  # the same rows, whatever the order
    assert digests[2] == 0  # the full store keeps the rows themselves instead
    assert emu.profile("acme", "thirdPartyId", "C00001") is not None


def test_store_kind_is_checked() -> None:
    with pytest.raises(ConfigError, match="store must be one of full, none"):
        EmulatorConfig(store="disk")
