"""redact.py, trust.py and xmlread.py: secrets out of messages, hosts, bounded XML."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uploader import logs
from uploader.errors import ConfigError, ProtocolError
from uploader.redact import MARK, Redactor, excerpt
from uploader.responses import parse_status, status_reader
from uploader.settings import TargetSettings, load_settings
from uploader.trust import status_request_url, storable_status_url
from uploader.xmlread import MAX_DEPTH, XmlReader

TOKEN = "".join(f"{i:03d}-abcdefghij-" for i in range(25))[:300]


def windows(secret: str) -> set[str]:
    return {secret[i : i + 8] for i in range(len(secret) - 7)}


def assert_clean(text: str, secret: str = TOKEN) -> None:
    assert not [w for w in windows(secret) if w in text], text


# -- redact ---------------------------------------------------------------------------


def test_bearer_credentials_and_authorization_values_are_removed() -> None:
    redact = Redactor(None)  # even without a token of ours: anyone's credential
    assert redact("got Authorization: Bearer abc.DEF-123_xyz=") == (
        "got Authorization: Bearer [token]"
    )
    assert redact("header authorization=Basic") == "header authorization=Basic"
    assert redact("authorization: dXNlcjpwYXNzd29yZA==") == "authorization: [token]"
    assert redact("bearer%20abcdefgh12345") == "bearer [token]"
    # words of a sentence are not credentials
    assert redact("check the Bearer token in TARGET_PROFILE_TOKEN") == (
        "check the Bearer token in TARGET_PROFILE_TOKEN"
    )


def test_every_run_of_8_characters_of_the_token_is_removed() -> None:
    redact = Redactor(TOKEN)
    text = f"Z{TOKEN[5:13]}Z {TOKEN[100:107]} Z{TOKEN[:150]}Z {TOKEN[-9:]}"
    assert redact(text) == f"Z{MARK}Z {TOKEN[100:107]} Z{MARK}Z {MARK}"
    assert redact.contains_secret(TOKEN[40:48])
    assert not redact.contains_secret(TOKEN[40:47])


def test_short_token_is_replaced_whole() -> None:
    assert Redactor("abc12")("x abc12 y") == f"x {MARK} y"


def test_excerpt_redacts_before_cutting() -> None:
    body = ("x" * 150 + TOKEN).encode()  # the cut at 200 falls inside the token
    shown = excerpt(body, redact=Redactor(TOKEN))
    assert shown == "x" * 150 + MARK
    assert_clean(shown)


@given(
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    start=st.integers(0, 299),
    length=st.integers(8, 300),
)
def test_no_window_survives(before: str, after: str, start: int, length: int) -> None:
    piece = TOKEN[start : start + length]
    text = before + piece + after
    assert_clean(Redactor(TOKEN)(text) if len(piece) >= 8 else before + after)


# -- trust ----------------------------------------------------------------------------


def settings(base_url: str = "", **kw: object) -> TargetSettings:
    return TargetSettings(client="demo", base_url=base_url, token=TOKEN, **kw)  # type: ignore[arg-type]


def test_base_url_with_credentials_is_refused_without_echoing_them() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(None, {"target.client": "demo", "target.base_url": "http://u:pw9@host"}, {})
    assert "pw9" not in str(info.value)
    assert "must not hold credentials" in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://user:secret-pw@edge.tt.omtrdc.net/s?batchId=1",
        "https://user@edge.tt.omtrdc.net/s?batchId=1",
    ],
)
def test_status_url_with_credentials_is_refused(url: str) -> None:
    with pytest.raises(ProtocolError, match="credentials") as info:
        status_request_url(settings(), url)
    assert "secret-pw" not in str(info.value)


def test_status_url_holding_the_token_is_refused() -> None:
    url = f"https://edge.tt.omtrdc.net/s?batchId=1&t={TOKEN[:20]}"
    with pytest.raises(ProtocolError, match="holds the token") as info:
        status_request_url(settings(), url)
    assert_clean(str(info.value))


def test_storable_status_url_drops_secrets_and_stays_refused() -> None:
    s = settings()
    url = "https://bob:pw@edge.tt.omtrdc.net/s?batchId=1&t=" + TOKEN[:30]
    stored = storable_status_url(s, url)
    assert stored == f"https://[credentials]@edge.tt.omtrdc.net/s?batchId=1&t={MARK}"
    with pytest.raises(ProtocolError, match="carries credentials or the token"):
        status_request_url(s, stored)
    plain = "https://edge.tt.omtrdc.net/s?batchId=1"
    assert storable_status_url(s, plain) == plain


@pytest.mark.parametrize(
    ("base", "allow_http", "url", "ok"),
    [
        ("", False, "https://edge.tt.omtrdc.net/s", True),
        ("", False, "http://edge.tt.omtrdc.net/s", False),
        ("", False, "http://127.0.0.1:8080/s", False),  # https base: no http, even loopback
        ("", True, "http://127.0.0.1:8080/s", True),
        ("http://127.0.0.1:1", False, "http://127.0.0.2:8080/s", True),  # the emulator
        ("http://127.0.0.1:1", False, "http://10.0.0.1/s", False),
    ],
)
def test_status_url_keeps_the_base_scheme(base: str, allow_http: bool, url: str, ok: bool) -> None:
    s = settings(base, allow_http=allow_http)
    if ok:
        assert status_request_url(s, url).scheme == url.split(":")[0]
    else:
        with pytest.raises(ProtocolError, match="plain http"):
            status_request_url(s, url)


# -- bounded XML ----------------------------------------------------------------------


def reader(max_elements: int = 100, max_profiles: int = 10) -> XmlReader:
    return XmlReader(
        "status response",
        frozenset({"batchId", "status"}),
        max_elements=max_elements,
        max_profiles=max_profiles,
    )


def test_element_count_is_bounded() -> None:
    r = reader(max_elements=100)
    r.feed(b"<response>" + b"<a/>" * 99)
    with pytest.raises(ProtocolError, match="more than 100 elements"):
        r.feed(b"<a/>")


def test_depth_is_bounded() -> None:
    r = reader()
    with pytest.raises(ProtocolError, match=f"nested deeper than {MAX_DEPTH} levels"):
        r.feed(b"<a>" * (MAX_DEPTH + 1))


def test_dtd_is_refused_even_without_entities() -> None:
    r = reader()
    with pytest.raises(ProtocolError, match="forbidden XML features"):
        r.feed(b"<!DOCTYPE response><response/>")


def test_long_field_text_is_refused_and_long_messages_are_cut() -> None:
    r = reader()
    with pytest.raises(ProtocolError, match="<batchId> is longer than"):
        r.feed(b"<response><batchId>" + b"x" * 10_000 + b"</batchId></response>")
    r = XmlReader("error response", frozenset({"message"}), max_elements=10)
    r.feed(b"<response><message>" + b"m" * 10_000 + b"</message></response>")
    assert r.close().fields["message"] == "m" * 8192


def test_profiles_beyond_the_cap_are_counted_not_kept() -> None:
    r = reader(max_profiles=2)
    r.feed(b"<response><profiles>")
    r.feed(b"<profile><id>P</id><status>error</status></profile>" * 5)
    r.feed(b"</profiles></response>")
    doc = r.close()
    assert [p.id for p in doc.profiles] == ["P", "P"]
    assert doc.unlisted_profiles == 3


BODY = (
    b"<response><batchId>B-1</batchId><status>complete</status><batchSize>3</batchSize>"
    b"<x><y>unknown</y></x><successfulUpdates>2</successfulUpdates>"
    b"<profiles><profile><id>C\xc3\xa9</id><status>error</status><message>no</message>"
    b"</profile></profiles></response>"
)


@given(st.lists(st.integers(1, len(BODY) - 1), max_size=8))
def test_fed_in_pieces_equals_fed_whole(cuts: list[int]) -> None:
    r = status_reader()
    edges = [0, *sorted(set(cuts)), len(BODY)]
    for a, b in itertools.pairwise(edges):
        r.feed(BODY[a:b])
    from uploader.responses import batch_status

    assert batch_status(r.close()) == parse_status(BODY)


def test_every_traceback_we_print_is_redacted(capsys: pytest.CaptureFixture[str]) -> None:
    """Chained exceptions (aiohttp's may quote a header) lose the token like any line."""
    token = "tok-" + "x1y2z3w4" * 10
    load_settings(None, {"target.client": "acme"}, environ={"TARGET_PROFILE_TOKEN": token})
    try:
        try:
            raise ValueError(f"bad header: Authorization: Bearer {token}; url=/q?t={token[5:40]}")
        except ValueError as exc:
            raise ProtocolError("invalid HTTP response") from exc
    except ProtocolError as exc:
        logs.print_exception(exc)
        text = logs.format_exception(exc)
    err = capsys.readouterr().err
    assert err == text
    assert "ValueError: bad header: Authorization: Bearer [token]; url=/q?t=[token]" in err
    assert "direct cause" in err and "ProtocolError: invalid HTTP response" in err
    windows = {token[i : i + 8] for i in range(len(token) - 7)}
    assert not [w for w in windows if w in err]
