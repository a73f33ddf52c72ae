"""Unit tests of responses.py: parsing of submit/status XML, Retry-After, excerpts."""

from __future__ import annotations

import contextlib
import gc
import weakref
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uploader.errors import BatchRejectedError, ProtocolError
from uploader.responses import (
    BatchStatus,
    ProfileStatus,
    SubmitResult,
    excerpt,
    parse_error_message,
    parse_retry_after,
    parse_status,
    parse_submit,
)
from uploader.states import RemoteStatus
from uploader.xmlread import XmlReader

STATUS_URL = "http://mboxedge45.tt.omtrdc.net/m2/demo/profile/batchStatus?batchId=demo-1701-13"

SUBMIT_OK = f"""<response>
  <success>true</success>
  <batchStatus>{STATUS_URL}</batchStatus>
  <message>Batch submitted for processing</message>
</response>""".encode()


def test_submit_ok_takes_batch_id_from_status_url() -> None:
    assert parse_submit(SUBMIT_OK) == SubmitResult(
        batch_id="demo-1701-13",
        status_url=STATUS_URL,
        message="Batch submitted for processing",
    )


def test_submit_batch_id_element_wins_and_unknown_elements_are_ignored() -> None:
    body = (
        b"<?xml version='1.0' encoding='UTF-8'?><response><extra><x>1</x></extra>"
        b"<success>TRUE</success><batchId>B-9</batchId>"
        b"<batchStatus>https://edge.tt.omtrdc.net/status?batchId=OTHER</batchStatus></response>"
    )
    result = parse_submit(body)
    assert result.batch_id == "B-9"
    assert result.message == ""


def test_submit_success_false_is_rejected_with_server_message() -> None:
    body = b"<response><success>false</success><message>Unexpected error</message></response>"
    with pytest.raises(BatchRejectedError, match="Unexpected error") as info:
        parse_submit(body)
    assert info.value.status == 200


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"", "empty"),
        (b"<response><success>true</success>", "not well-formed"),
        (b"not xml at all", "not well-formed"),
        (b"<response><batchStatus>http://h/x?batchId=1</batchStatus></response>", "<success>"),
        (b"<response><success>maybe</success></response>", "<success>maybe"),
    ],
)
def test_submit_protocol_errors(body: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        parse_submit(body)


@pytest.mark.parametrize(
    ("status", "url", "batch_id"),
    [
        ("", "", ""),
        ("<batchStatus>ftp://h/x?batchId=1</batchStatus>", "ftp://h/x?batchId=1", "1"),
        ("<batchStatus>/relative?batchId=2</batchStatus>", "/relative?batchId=2", "2"),
        ("<batchStatus>http://[::1/x?batchId=3</batchStatus>", "http://[::1/x?batchId=3", ""),
        ("<batchStatus>http://h/x?id=1</batchStatus>", "http://h/x?id=1", ""),
    ],
)
def test_success_true_is_accepted_whatever_the_status_url(
    status: str, url: str, batch_id: str
) -> None:
    """The server has the rows; whether we can follow them is decided when we try."""
    result = parse_submit(f"<response><success>true</success>{status}</response>".encode())
    assert (result.status_url, result.batch_id) == (url, batch_id)


def test_entity_expansion_is_refused() -> None:
    bomb = (
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
        b'<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">]>'
        b"<response><success>true</success><message>&b;</message></response>"
    )
    with pytest.raises(ProtocolError, match="forbidden XML features"):
        parse_submit(bomb)


def test_error_excerpt_is_short_and_single_line() -> None:
    body = b"<html>\n<body>\x1b[31m" + b"x" * 5000 + b"</body></html>"
    with pytest.raises(ProtocolError) as info:
        parse_submit(body)
    message = str(info.value)
    assert "\n" not in message
    assert "\x1b" not in message
    assert len(message) < 400


STATUS_DETAILS = b"""<response>
  <batchId>demo-1701-13</batchId>
  <status>complete</status>
  <batchSize>5</batchSize>
  <consumedCount>5</consumedCount>
  <successfulUpdates>3</successfulUpdates>
  <profilesNotFound>1</profilesNotFound>
  <failedUpdates>1</failedUpdates>
  <somethingNew attr="x">ignored</somethingNew>
  <profiles>
    <profile><id>C1</id><status>error</status><message>too large</message></profile>
    <profile><id>C,2 \xc3\xa9</id><status>success</status></profile>
  </profiles>
</response>"""


def test_status_with_details_and_profiles() -> None:
    assert parse_status(STATUS_DETAILS) == BatchStatus(
        batch_id="demo-1701-13",
        status=RemoteStatus.COMPLETE,
        batch_size=5,
        consumed=5,
        successful=3,
        not_found=1,
        failed=1,
        profiles=(
            ProfileStatus("C1", "error", "too large"),
            ProfileStatus("C,2 é", "success", None),
        ),
    )


def test_status_without_details_and_profiles_directly_under_root() -> None:
    body = (
        b"<response><status>INCOMPLETE</status><batchSize>10</batchSize>"
        b"<profile><id>P</id><status>pending</status></profile></response>"
    )
    status = parse_status(body, batch_id_hint="from-url")
    assert status == BatchStatus(
        batch_id="from-url",
        status=RemoteStatus.INCOMPLETE,
        batch_size=10,
        profiles=(ProfileStatus("P", "pending"),),
    )


def test_profile_status_never_shadows_batch_status() -> None:
    body = (
        b"<response><batchId>B</batchId><batchSize>1</batchSize>"
        b"<profile><id>P</id><status>error</status></profile><status>stuck</status></response>"
    )
    assert parse_status(body).status is RemoteStatus.STUCK


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"<response><status>complete</status><batchSize>1</batchSize></response>", "batchId"),
        (b"<response><batchId>B</batchId><batchSize>1</batchSize></response>", "no <status>"),
        (b"<response><batchId>B</batchId><status>complete</status></response>", "batchSize"),
        (
            b"<response><batchId>B</batchId><status>exploded</status><batchSize>1</batchSize>"
            b"</response>",
            "unknown status 'exploded'",
        ),
        (
            b"<response><batchId>B</batchId><status>complete</status><batchSize>-1</batchSize>"
            b"</response>",
            "not a count",
        ),
        (
            b"<response><batchId>B</batchId><status>complete</status><batchSize>1</batchSize>"
            b"<failedUpdates>1.5</failedUpdates></response>",
            "not a count",
        ),
        (
            b"<response><batchId>B</batchId><status>complete</status><batchSize>1</batchSize>"
            b"<profile><status>error</status></profile></response>",
            "<profile>",
        ),
        (b"<response><batchId>B</batchId>", "not well-formed"),
    ],
)
def test_status_protocol_errors(body: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        parse_status(body)


@given(
    status=st.sampled_from(list(RemoteStatus)),
    counts=st.lists(st.integers(min_value=0, max_value=10**9), min_size=5, max_size=5),
)
def test_status_counts_round_trip(status: RemoteStatus, counts: list[int]) -> None:
    size, consumed, ok, missing, failed = counts
    body = (
        f"<response><batchId>X</batchId><status>{status.value}</status>"
        f"<batchSize>{size}</batchSize><consumedCount>{consumed}</consumedCount>"
        f"<successfulUpdates>{ok}</successfulUpdates><profilesNotFound>{missing}</profilesNotFound>"
        f"<failedUpdates>{failed}</failedUpdates></response>"
    ).encode()
    parsed = parse_status(body)
    assert (parsed.status, parsed.batch_size, parsed.consumed) == (status, size, consumed)
    assert (parsed.successful, parsed.not_found, parsed.failed) == (ok, missing, failed)


@given(st.binary(max_size=300))
def test_parsers_only_raise_project_errors(body: bytes) -> None:
    for parse in (parse_submit, parse_status):
        with contextlib.suppress(ProtocolError, BatchRejectedError):
            parse(body)


NOW = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("7", 7.0),
        (" 2.5 ", 2.5),
        ("-3", 0.0),
        ("nan", None),
        ("soon", None),
        ("Sat, 28 Nov 2026 12:00:30 GMT", 30.0),
        ("Sat, 28 Nov 2026 11:00:00 GMT", 0.0),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=NOW) == expected


def test_parse_error_message_prefers_xml_message() -> None:
    body = b"<response><success>false</success><message>Bad client</message></response>"
    assert parse_error_message(body) == "Bad client"
    assert parse_error_message(b'{"status": 404}') == '{"status": 404}'
    assert parse_error_message(b"<broken") == "<broken"


def test_excerpt_truncates() -> None:
    assert excerpt("a" * 10, limit=5) == "aaaa…"
    assert excerpt(b"a\r\nb\tc") == "a b c"


def test_listed_profiles_are_not_tracked_by_the_garbage_collector() -> None:
    """20,000 kept entries must not each stay tracked: every full collection while a
    large answer is read would walk them, holding the event loop."""
    n = 20_000
    entry = b"<profile><id>C%05d</id><status>Error</status><message>no</message></profile>"
    body = (
        b"<response><batchId>B</batchId><status>complete</status><batchSize>%d</batchSize>"
        b"<profiles>%s</profiles></response>" % (n, b"".join(entry % i for i in range(n)))
    )
    gc.collect()
    before = len(gc.get_objects())
    status = parse_status(body)
    gc.collect()
    assert len(gc.get_objects()) - before < 1_000
    assert len(status.profiles) == n
    assert status.profiles[0] == ProfileStatus("C00000", "error", "no")
    assert status.profiles[-1].id == "C19999"
    assert status.profiles[1:3] == (
        ProfileStatus("C00001", "error", "no"),
        ProfileStatus("C00002", "error", "no"),
    )
    assert [p.id for p in status.profiles][:2] == ["C00000", "C00001"]
    assert sum(p.status == "error" for p in status.profiles) == n


@pytest.mark.parametrize(
    "body",
    [
        b"<response><status>complete</status><profiles>"
        + b"<profile><id>C1</id><status>error</status></profile>" * 3
        + b"</profiles></response>",
        b"<response><status>complete",  # not well-formed: refused
        b"<a>" + b"<b/>" * 50 + b"</a>",  # over max_elements, refused from a callback
    ],
)
def test_a_reader_is_freed_as_soon_as_it_is_dropped(body: bytes) -> None:
    """The parser's callbacks are the reader's methods: unhooked once the answer is read
    or refused, so the kept profiles go without waiting for a full garbage collection."""
    gc.disable()
    try:
        reader = XmlReader("status", frozenset({"status"}), max_elements=20, max_profiles=10)
        with contextlib.suppress(ProtocolError):
            reader.feed(body)
            reader.close()
        gone = weakref.ref(reader)
        del reader
        assert gone() is None
    finally:
        gc.enable()
