"""Tests of client.py: pure URL/token decisions, status mapping, and real HTTP.

HTTP tests run against real in-process servers on 127.x (never mocks of
aiohttp): tiny ``aiohttp.web`` apps that record what they receive or answer
something broken, and the project's emulator (see the end of the file).
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from uploader.client import (
    BatchStatus,
    ProfileStatus,
    TargetClient,
    _raise_for_status,
    _Reply,
    profile_url,
    status_request_url,
    submit_url,
    token_allowed,
)
from uploader.emulator import Emulator
from uploader.errors import (
    AuthError,
    BatchRejectedError,
    InputError,
    NotFoundError,
    OutcomeUnknownError,
    ProtocolError,
    ServerError,
    ThrottledError,
    TransportError,
)
from uploader.settings import TargetSettings
from uploader.states import RemoteStatus

TOKEN = "s3cr3t-T0KEN"


def target(
    base_url: str = "", *, token: str | None = None, api: str = "v2", **kw: Any
) -> TargetSettings:
    return TargetSettings(client="demo", base_url=base_url, api=api, token=token, **kw)


# --- pure decisions -------------------------------------------------------------


def test_submit_urls_per_api_version() -> None:
    assert str(submit_url(target())) == "https://demo.tt.omtrdc.net/m2/demo/v2/profile/batchUpdate"
    assert str(submit_url(target(api="v1"))) == (
        "https://demo.tt.omtrdc.net/m2/demo/profile/batchUpdate"
    )
    assert str(submit_url(target("http://127.0.0.1:8080/"))) == (
        "http://127.0.0.1:8080/m2/demo/v2/profile/batchUpdate"
    )


def test_profile_urls_encode_the_id_as_one_segment() -> None:
    settings = target("http://127.0.0.1:1")
    assert str(profile_url(settings, "a/b?c%d é")) == (
        "http://127.0.0.1:1/rest/v1/profiles/thirdPartyId/a%2Fb%3Fc%25d%20%C3%A9?client=demo"
    )
    assert str(profile_url(settings, "PC1", "pcId")) == (
        "http://127.0.0.1:1/rest/v1/profiles/PC1?client=demo"
    )
    with pytest.raises(ValueError, match="id_type"):
        profile_url(settings, "x", "email")
    with pytest.raises(ValueError, match="empty"):
        profile_url(settings, "")


def test_status_url_gets_show_details_and_keeps_other_params() -> None:
    settings = target()
    url = "https://edge45.tt.omtrdc.net/m2/demo/profile/batchStatus?batchId=demo-1-2&x=y"
    detailed = status_request_url(settings, url)
    assert detailed.query == {"batchId": "demo-1-2", "x": "y", "showDetails": "true"}
    assert detailed.path == "/m2/demo/profile/batchStatus"
    assert status_request_url(settings, url, details=False) == URL(url)


@pytest.mark.parametrize(
    ("url", "allow_http", "ok"),
    [
        ("https://edge.tt.omtrdc.net/s?batchId=1", False, True),
        # an https base keeps status calls on https, loopback or not
        ("http://127.0.0.2:9/s?batchId=1", False, False),
        ("http://localhost/s?batchId=1", False, False),
        ("http://127.0.0.2:9/s?batchId=1", True, True),
        ("http://edge.tt.omtrdc.net/s?batchId=1", False, False),
        ("http://edge.tt.omtrdc.net/s?batchId=1", True, True),
        ("ftp://edge.tt.omtrdc.net/s?batchId=1", True, False),
        ("file:///etc/passwd", True, False),
        ("/relative?batchId=1", True, False),
    ],
)
def test_status_url_scheme_policy(url: str, allow_http: bool, ok: bool) -> None:
    settings = target(allow_http=allow_http)
    if ok:
        assert status_request_url(settings, url).host
    else:
        with pytest.raises(ProtocolError, match="status URL"):
            status_request_url(settings, url)


@pytest.mark.parametrize(
    ("base", "token_hosts", "url", "allowed"),
    [
        # the submit host itself, any port, case and trailing dot ignored
        ("", (), "https://demo.tt.omtrdc.net/x", True),
        ("", (), "https://DEMO.tt.omtrdc.net.:8443/x", True),
        # siblings under the same tt.omtrdc.net parent (the status "edge")
        ("", (), "http://mboxedge45.tt.omtrdc.net/m2/demo/profile/batchStatus", True),
        ("", (), "https://a.b.tt.omtrdc.net/x", True),
        # never the parent itself, look-alikes, or anything else
        ("", (), "https://tt.omtrdc.net/x", False),
        ("", (), "https://eviltt.omtrdc.net/x", False),
        ("", (), "https://tt.omtrdc.net.evil.example/x", False),
        ("", (), "https://evil.example/x", False),
        ("", (), "http://127.0.0.1/x", False),
        # a two-label parent (example.com, co.uk) is too broad to trust
        ("https://target.example.com", (), "https://other.example.com/x", False),
        ("https://target.example.com", (), "https://target.example.com/x", True),
        ("https://shop.co.uk", (), "https://evil.co.uk/x", False),
        # no automatic parent-domain trust: public suffixes, shared hosting
        ("https://a.b.co.uk", (), "https://c.b.co.uk/x", False),
        (
            "https://acme.eu-west-1.elb.amazonaws.com",
            (),
            "https://x.eu-west-1.elb.amazonaws.com/",
            False,
        ),
        ("https://acme.shop.example.co.uk", (), "https://evil.shop.example.co.uk/", False),
        # ...unless listed
        ("https://a.b.co.uk", ("c.b.co.uk",), "https://c.b.co.uk/x", True),
        # Target's edge domain is trusted only for a Target base URL
        ("https://target.example.com", (), "https://mboxedge45.tt.omtrdc.net/x", False),
        ("https://target.example.com", ("*.tt.omtrdc.net",), "https://e1.tt.omtrdc.net/x", True),
        # explicit allow-list: exact, or *.domain
        (
            "https://target.example.com",
            ("status.example.net",),
            "https://status.example.net/",
            True,
        ),
        ("https://target.example.com", ("status.example.net",), "https://x.example.net/", False),
        ("https://target.example.com", ("*.example.net",), "https://x.y.example.net/", True),
        ("https://target.example.com", ("*.example.net",), "https://example.net/", False),
        # loopback base (the emulator): any loopback host, nothing else
        ("http://127.0.0.1:8080", (), "http://127.0.0.2:8080/s", True),
        ("http://127.0.0.1:8080", (), "http://localhost:1/s", True),
        ("http://127.0.0.1:8080", (), "http://[::1]:1/s", True),
        ("http://localhost:8080", (), "http://127.0.0.3:1/s", True),
        ("http://127.0.0.1:8080", (), "http://10.0.0.1/s", False),
        ("http://127.0.0.1:8080", (), "https://demo.tt.omtrdc.net/s", False),
        # IP address bases have no parent domain
        ("https://10.1.2.3", (), "https://10.1.2.4/x", False),
    ],
)
def test_token_allowed(base: str, token_hosts: tuple[str, ...], url: str, allowed: bool) -> None:
    settings = target(base, token_hosts=token_hosts)
    assert token_allowed(settings, url) is allowed
    assert token_allowed(settings, URL(url)) is allowed


def _reply(status: int, body: bytes = b"", **headers: str) -> _Reply:
    return _Reply(status, CIMultiDictProxy(CIMultiDict(headers)), body)


def _raised(status: int, body: bytes = b"", **headers: str) -> Exception:
    settings = target(token=TOKEN)
    url = URL("https://demo.tt.omtrdc.net/m2/demo/v2/profile/batchUpdate")
    with pytest.raises(Exception) as info:
        _raise_for_status(settings, "submit", url, _reply(status, body, **headers))
    return info.value


def test_status_mapping_success_does_not_raise() -> None:
    for status in (200, 201, 202):
        _raise_for_status(target(), "submit", URL("https://h/x"), _reply(status))


@pytest.mark.parametrize(
    ("status", "error", "code"),
    [
        (408, ServerError, 408),
        (500, ServerError, 500),
        (502, ServerError, 502),
        (503, ServerError, 503),
        (504, ServerError, 504),
        (507, ServerError, 507),
        (400, BatchRejectedError, 400),
        (413, BatchRejectedError, 413),
        (422, BatchRejectedError, 422),
        (401, AuthError, 401),
        (403, AuthError, 403),
    ],
)
def test_status_mapping(status: int, error: type[Exception], code: int) -> None:
    exc = _raised(status, b"<response><message>nope</message></response>")
    assert type(exc) is error
    assert exc.status == code  # type: ignore[attr-defined]
    assert "nope" in str(exc)


def test_throttled_with_retry_after_seconds_and_date() -> None:
    exc = _raised(429, **{"Retry-After": "7"})
    assert isinstance(exc, ThrottledError)
    assert (exc.status, exc.retry_after) == (429, 7.0)
    exc = _raised(429)
    assert isinstance(exc, ThrottledError)
    assert exc.retry_after is None
    exc = _raised(429, **{"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"})
    assert isinstance(exc, ThrottledError)
    assert exc.retry_after == 0.0


def test_503_with_retry_after_is_throttling() -> None:
    exc = _raised(503, **{"Retry-After": "2"})
    assert isinstance(exc, ThrottledError)
    assert (exc.status, exc.retry_after) == (503, 2.0)


def test_auth_error_names_the_env_var_never_the_token() -> None:
    exc = _raised(401, b"bad token")
    assert "TARGET_PROFILE_TOKEN" in str(exc)
    assert TOKEN not in str(exc)


def test_not_found_hints_at_client_code_and_api() -> None:
    exc = _raised(404)
    assert isinstance(exc, NotFoundError)
    assert "'demo'" in str(exc)
    assert "v2" in str(exc)


def test_redirect_is_a_protocol_error() -> None:
    exc = _raised(302, Location="https://evil.example/steal")
    assert isinstance(exc, ProtocolError)
    assert "evil.example" in str(exc)


def test_client_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="connections"):
        TargetClient(target(), connections=0)
    with pytest.raises(ValueError, match="timeout_s"):
        TargetClient(target(), timeout_s=0)


# --- tiny real servers ------------------------------------------------------------


@dataclass
class Seen:
    """What a recording server received."""

    host: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body_len: int


@dataclass
class Recorder:
    """An aiohttp.web server that records requests and answers via ``respond``."""

    respond: Callable[[web.Request], Awaitable[web.StreamResponse]]
    seen: list[Seen] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        size = 0
        async for chunk in request.content.iter_any():  # streamed, never kept
            size += len(chunk)
        self.seen.append(
            Seen(
                request.host,
                request.path,
                dict(request.query),
                dict(request.headers),
                size,
            )
        )
        return await self.respond(request)


@pytest.fixture
async def serve() -> AsyncIterator[Callable[..., Awaitable[tuple[Recorder, int]]]]:
    """Start recording servers: ``recorder, port = await serve(respond, host=...)``."""
    servers: list[TestServer] = []

    async def start(
        respond: Callable[[web.Request], Awaitable[web.StreamResponse]],
        host: str = "127.0.0.1",
    ) -> tuple[Recorder, int]:
        recorder = Recorder(respond)
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", recorder.handle)
        server = TestServer(app, host=host, port=0)
        await server.start_server()
        servers.append(server)
        assert server.port is not None
        return recorder, server.port

    yield start
    for server in servers:
        await server.close()


def xml(body: str | bytes, status: int = 200, **headers: str) -> Callable[..., Any]:
    data = body.encode() if isinstance(body, str) else body

    async def respond(request: web.Request) -> web.StreamResponse:
        return web.Response(
            body=data, status=status, content_type="application/xml", headers=headers
        )

    return respond


def submit_ok(status_url: str) -> str:
    return (
        f"<response><success>true</success><batchStatus>{status_url}</batchStatus>"
        "<message>Batch submitted for processing</message></response>"
    )


STATUS_XML = (
    "<response><batchId>B1</batchId><status>complete</status><batchSize>2</batchSize>"
    "<consumedCount>2</consumedCount><successfulUpdates>2</successfulUpdates>"
    "<profilesNotFound>0</profilesNotFound><failedUpdates>0</failedUpdates></response>"
)


@pytest.fixture
def batch_file(tmp_path: Path) -> Path:
    path = tmp_path / "batch-000001.txt"
    path.write_bytes(b"batch=thirdPartyId,tier\nC1,gold\nC2,silver\n")
    return path


async def test_submit_streams_with_content_length_and_no_chunking(
    serve: Any, tmp_path: Path
) -> None:
    recorder, port = await serve(xml(submit_ok("http://127.0.0.1/s?batchId=B1")))
    path = tmp_path / "big.txt"
    size = 8 * 1024 * 1024
    path.write_bytes(b"batch=thirdPartyId\n" + b"C" * (size - 19))
    async with TargetClient(target(f"http://127.0.0.1:{port}")) as client:
        tracemalloc.start()
        try:
            result = await client.submit(path)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert result.batch_id == "B1"
    [seen] = recorder.seen
    assert seen.path == "/m2/demo/v2/profile/batchUpdate"
    assert seen.headers["Content-Length"] == str(size)
    assert "Transfer-Encoding" not in seen.headers
    assert seen.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Content-Disposition" not in seen.headers
    assert seen.body_len == size
    # The file is streamed in chunks: the process never held it whole.
    assert peak < size // 2


async def test_submit_missing_file_is_input_error(tmp_path: Path) -> None:
    async with TargetClient(target("http://127.0.0.1:9")) as client:
        with pytest.raises(InputError, match="cannot read batch file"):
            await client.submit(tmp_path / "nope.txt")


class MapResolver(AbstractResolver):
    """Resolves a fixed set of names to 127.x addresses; everything else fails."""

    def __init__(self, names: dict[str, str]) -> None:
        self.names = names

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.names:
            raise OSError(f"test resolver: unknown host {host}")
        return [
            ResolveResult(
                hostname=host,
                host=self.names[host],
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]

    async def close(self) -> None:
        pass


@pytest.mark.parametrize("listed", [False, True])
async def test_token_goes_to_sibling_hosts_but_not_foreign_ones(
    serve: Any, batch_file: Path, listed: bool
) -> None:
    """Real DNS-style names (mapped to 127.x) so the rule is not the loopback one."""
    foreign, foreign_port = await serve(xml(STATUS_XML), host="127.0.0.3")
    edge_url = "http://edge45.tt.omtrdc.net:{port}/m2/demo/profile/batchStatus?batchId=B1"
    home, port = await serve(xml(b""))  # answer set below, once the port is known
    resolver = MapResolver(
        {
            "demo.tt.omtrdc.net": "127.0.0.1",
            "edge45.tt.omtrdc.net": "127.0.0.1",
            "evil.example": "127.0.0.3",
        }
    )
    settings = target(
        f"http://demo.tt.omtrdc.net:{port}",
        token=TOKEN,
        allow_http=True,
        token_hosts=("evil.example",) if listed else (),
    )
    home.respond = xml(submit_ok(edge_url.format(port=port)))
    async with TargetClient(settings, resolver=resolver) as client:
        submitted = await client.submit(batch_file)
        # the status "edge" is a sibling under tt.omtrdc.net: it gets the token
        home.respond = xml(STATUS_XML)
        status = await client.status(submitted.status_url)
        # a host the server names that is not ours does not (unless listed)
        await client.status(f"http://evil.example:{foreign_port}/s?batchId=B1")
    assert status.status is RemoteStatus.COMPLETE
    assert [s.headers.get("Authorization") for s in home.seen] == [f"Bearer {TOKEN}"] * 2
    assert [s.host for s in home.seen] == [
        f"demo.tt.omtrdc.net:{port}",
        f"edge45.tt.omtrdc.net:{port}",
    ]
    expected = f"Bearer {TOKEN}" if listed else None
    assert [s.headers.get("Authorization") for s in foreign.seen] == [expected]


async def test_a_foreign_hosts_answer_is_never_quoted(serve: Any) -> None:
    """A status URL naming a host outside the target: its words stay out of our messages."""
    page = b"<html>SECRET-PAGE of someone else</html>"
    foreign, foreign_port = await serve(xml(page, status=500), host="127.0.0.3")
    _, port = await serve(xml(STATUS_XML))
    resolver = MapResolver({"demo.tt.omtrdc.net": "127.0.0.1", "evil.example": "127.0.0.3"})
    settings = target(f"http://demo.tt.omtrdc.net:{port}", token=TOKEN, allow_http=True)
    url = f"http://evil.example:{foreign_port}/s?batchId=B1"
    async with TargetClient(settings, resolver=resolver) as client:
        with pytest.raises(ServerError) as server_error:
            await client.status(url)
        foreign.respond = xml(b"not xml: SECRET-PAGE")
        with pytest.raises(ProtocolError) as protocol_error:
            await client.status(url)
        # the target's own hosts are quoted (redacted)
        assert (await client.status(f"http://demo.tt.omtrdc.net:{port}/s?batchId=B1")).batch_id
    for exc in (server_error.value, protocol_error.value):
        assert "SECRET-PAGE" not in str(exc)
        assert "[answer of a host outside the target, not shown]" in str(exc)
    assert [s.headers.get("Authorization") for s in foreign.seen] == [None, None]


async def test_no_authorization_header_without_token(serve: Any, batch_file: Path) -> None:
    recorder, port = await serve(xml(submit_ok("http://127.0.0.1/s?batchId=B1")))
    async with TargetClient(target(f"http://127.0.0.1:{port}")) as client:
        await client.submit(batch_file)
    assert "Authorization" not in recorder.seen[0].headers


async def test_redirects_are_not_followed(serve: Any) -> None:
    evil, evil_port = await serve(xml(STATUS_XML), host="127.0.0.3")
    location = f"http://127.0.0.3:{evil_port}/s?batchId=B1"
    home, port = await serve(xml(b"", status=307, Location=location))
    async with TargetClient(target(f"http://127.0.0.1:{port}", token=TOKEN)) as client:
        with pytest.raises(ProtocolError, match="redirect"):
            await client.status(f"http://127.0.0.1:{port}/s?batchId=B1")
    assert len(home.seen) == 1
    assert evil.seen == []


async def test_token_is_scrubbed_from_error_messages(serve: Any) -> None:
    async def echo(request: web.Request) -> web.StreamResponse:
        return web.Response(status=400, text=f"bad header {request.headers['Authorization']}")

    _, port = await serve(echo)
    async with TargetClient(target(f"http://127.0.0.1:{port}", token=TOKEN)) as client:
        with pytest.raises(BatchRejectedError) as info:
            await client.status(f"http://127.0.0.1:{port}/s?batchId=B1")
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(info.value.args)
    assert "bad header Bearer [token]" in str(info.value)


async def test_oversize_submit_answer_is_protocol_error(serve: Any, batch_file: Path) -> None:
    _, port = await serve(xml(b"<response>" + b" " * (1024 * 1024) + b"</response>"))
    async with TargetClient(target(f"http://127.0.0.1:{port}")) as client:
        with pytest.raises(ProtocolError, match="larger than 1048576 bytes"):
            await client.submit(batch_file)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        ("<response><batchId>B1</batchId>", "not well-formed XML"),
        ("<html>gateway says hi</html>", "no <status>"),
        (STATUS_XML.replace("complete", "exploded", 1), "unknown status 'exploded'"),
    ],
)
async def test_bad_status_answers_are_protocol_errors(serve: Any, body: str, match: str) -> None:
    _, port = await serve(xml(body))
    async with TargetClient(target(f"http://127.0.0.1:{port}")) as client:
        with pytest.raises(ProtocolError, match=match):
            await client.status(f"http://127.0.0.1:{port}/s?batchId=B1")


async def test_status_batch_id_falls_back_to_the_url(serve: Any) -> None:
    _, port = await serve(xml(STATUS_XML.replace("<batchId>B1</batchId>", "")))
    async with TargetClient(target(f"http://127.0.0.1:{port}")) as client:
        status = await client.status(f"http://127.0.0.1:{port}/s?batchId=FROM-URL")
    assert status.batch_id == "FROM-URL"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def test_connection_refused_is_transport_error(batch_file: Path) -> None:
    port = _free_port()
    async with TargetClient(target(f"http://127.0.0.1:{port}")) as client:
        with pytest.raises(TransportError) as info:
            await client.submit(batch_file)
    assert type(info.value) is TransportError
    assert "cannot connect" in str(info.value)
    assert isinstance(info.value.__cause__, OSError)


async def _hang(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(30)  # cancelled when the client gives up
    return web.Response()


async def test_timeout_after_sending_a_submit_is_outcome_unknown(
    serve: Any, batch_file: Path
) -> None:
    _, port = await serve(_hang)
    async with TargetClient(target(f"http://127.0.0.1:{port}"), timeout_s=0.2) as client:
        with pytest.raises(OutcomeUnknownError, match="may have been accepted"):
            await client.submit(batch_file)


async def test_timeout_of_a_status_call_is_transport_error(serve: Any) -> None:
    _, port = await serve(_hang)
    async with TargetClient(target(f"http://127.0.0.1:{port}"), timeout_s=0.2) as client:
        with pytest.raises(TransportError) as info:
            await client.status(f"http://127.0.0.1:{port}/s?batchId=B1")
    assert type(info.value) is TransportError


async def _drop(request: web.Request) -> web.StreamResponse:
    assert request.transport is not None
    request.transport.close()  # connection lost with no answer at all
    await asyncio.sleep(30)
    return web.Response()


async def test_dropped_submit_is_outcome_unknown(serve: Any, batch_file: Path) -> None:
    _, port = await serve(_drop)
    async with TargetClient(target(f"http://127.0.0.1:{port}")) as client:
        with pytest.raises(OutcomeUnknownError):
            await client.submit(batch_file)


async def test_dropped_status_call_is_plain_transport_error(serve: Any) -> None:
    _, port = await serve(_drop)
    async with TargetClient(target(f"http://127.0.0.1:{port}")) as client:
        with pytest.raises(TransportError) as info:
            await client.status(f"http://127.0.0.1:{port}/s?batchId=B1")
    assert type(info.value) is TransportError


async def test_fetch_profile_404_is_none_and_bad_json_is_protocol_error(serve: Any) -> None:
    async def respond(request: web.Request) -> web.StreamResponse:
        if request.match_info["tail"].endswith("missing"):
            return web.json_response({"status": 404, "message": "No profile found"}, status=404)
        if request.match_info["tail"].endswith("list"):
            return web.json_response([1, 2])
        return web.Response(text="{not json")

    recorder, port = await serve(respond)
    async with TargetClient(target(f"http://127.0.0.1:{port}")) as client:
        assert await client.fetch_profile("missing") is None
        with pytest.raises(ProtocolError, match="not a JSON object"):
            await client.fetch_profile("list")
        with pytest.raises(ProtocolError, match="not JSON"):
            await client.fetch_profile("x")
    assert recorder.seen[0].path == "/rest/v1/profiles/thirdPartyId/missing"
    assert recorder.seen[0].query == {"client": "demo"}


async def test_close_is_idempotent_and_client_reopens() -> None:
    client = TargetClient(target("http://127.0.0.1:9"))
    await client.close()
    async with client:
        pass
    await client.close()


# --- against the emulator -----------------------------------------------------------

Factory = Callable[..., Awaitable[Emulator]]


def body_of(header: list[str], rows: list[list[str]]) -> bytes:
    """A batch body with every name and value percent-encoded (SPEC section 1)."""
    lines = [",".join(quote(v, safe="") for v in line) for line in [header, *rows]]
    return ("batch=" + "\n".join(lines) + "\n").encode()


def write_batch(tmp_path: Path, header: list[str], rows: list[list[str]], name: str) -> Path:
    path = tmp_path / name
    path.write_bytes(body_of(header, rows))
    return path


async def test_round_trip_to_complete_with_exact_counts(emulator: Emulator, tmp_path: Path) -> None:
    rows = [["C1", "gold", "1200.50"], ["C2", "", "87.10"], ["C3", "silver"]]
    path = write_batch(tmp_path, ["thirdPartyId", "loyaltyTier", "lifetimeValue"], rows, "b1")
    async with TargetClient(target(emulator.base_url)) as client:
        submitted = await client.submit(path)
        await emulator.wait_applied()
        status = await client.status(submitted.status_url)
        brief = await client.status(submitted.status_url, details=False)
    assert submitted.message == "Batch submitted for processing"
    assert URL(submitted.status_url).host == "127.0.0.2"
    assert URL(submitted.status_url).query["batchId"] == submitted.batch_id
    assert status == BatchStatus(
        batch_id=submitted.batch_id,
        status=RemoteStatus.COMPLETE,
        batch_size=3,
        consumed=3,
        successful=3,
        not_found=0,
        failed=0,
        profiles=(),
    )
    assert brief == BatchStatus(submitted.batch_id, RemoteStatus.COMPLETE, 3)
    assert emulator.stats()["batches_accepted"] == 1
    assert emulator.stats()["status_calls"] == 2


async def test_v2_lists_failed_rows_per_profile(emulator: Emulator, tmp_path: Path) -> None:
    rows = [["C1", "a"], ["bad+id", "b"], ["C3", "c"]]
    path = write_batch(tmp_path, ["thirdPartyId", "tier"], rows, "b1")
    async with TargetClient(target(emulator.base_url)) as client:
        submitted = await client.submit(path)
        await emulator.wait_applied()
        status = await client.status(submitted.status_url)
    assert (status.successful, status.failed) == (2, 1)
    assert status.profiles == (
        ProfileStatus("bad+id", "error", "thirdPartyId must not contain + or /"),
    )


async def test_v1_does_not_create_profiles(emulator_factory: Factory, tmp_path: Path) -> None:
    emulator = await emulator_factory()
    header = ["thirdPartyId", "tier"]
    first = write_batch(tmp_path, header, [["C1", "gold"]], "v2")
    second = write_batch(tmp_path, header, [["C1", "silver"], ["C9", "bronze"]], "v1")
    async with TargetClient(target(emulator.base_url, api="v2")) as v2:
        await v2.submit(first)
    await emulator.wait_applied()
    async with TargetClient(target(emulator.base_url, api="v1")) as v1:
        submitted = await v1.submit(second)
        await emulator.wait_applied()
        status = await v1.status(submitted.status_url)
        assert await v1.fetch_profile("C9") is None
        profile = await v1.fetch_profile("C1")
    assert emulator.store.batches[submitted.batch_id].api == "v1"
    assert (status.batch_size, status.successful, status.not_found, status.failed) == (2, 1, 1, 0)
    assert profile is not None
    assert profile["profileAttributes"]["tier"]["value"] == "silver"


HARD_VALUES = [
    "a,b",
    'say "hi"',
    "line1\nline2\r\nline3",
    "100% & more",
    "a+b=c",
    "Zoë Ünïcødé 日本",
    "🎉🚀",
    "  spaced  ",
    "semi;colon/slash?q#frag",
]


async def test_fetch_profile_exact_values_after_round_trip(
    emulator: Emulator, tmp_path: Path
) -> None:
    names = [f"attr{i}" for i in range(len(HARD_VALUES))]
    path = write_batch(tmp_path, ["thirdPartyId", *names], [["Cé 1", *HARD_VALUES]], "b1")
    async with TargetClient(target(emulator.base_url)) as client:
        await client.submit(path)
        await emulator.wait_applied()
        profile = await client.fetch_profile("Cé 1")
        assert profile is not None
        by_pc = await client.fetch_profile(profile["mboxPC"], id_type="pcId")
    assert profile["thirdPartyId"] == "Cé 1"
    assert profile["client"] == "demo"
    values = {name: attr["value"] for name, attr in profile["profileAttributes"].items()}
    assert values == dict(zip(names, HARD_VALUES, strict=True))
    assert by_pc == profile
    assert profile == emulator.profile("demo", "thirdPartyId", "Cé 1")


async def test_rejected_batch_is_batch_rejected_error(emulator: Emulator, tmp_path: Path) -> None:
    path = tmp_path / "raw-percent"
    path.write_bytes(b"batch=thirdPartyId,tier\nC1,100%\n")  # a raw % rejects the batch
    async with TargetClient(target(emulator.base_url)) as client:
        with pytest.raises(BatchRejectedError, match="Unexpected error") as info:
            await client.submit(path)
    assert info.value.status == 200
    assert emulator.stats()["batches_rejected"] == 1


async def test_unknown_batch_id_is_not_found(emulator: Emulator) -> None:
    url = f"http://127.0.0.2:{emulator.port}/m2/demo/profile/batchStatus?batchId=nope"
    async with TargetClient(target(emulator.base_url)) as client:
        with pytest.raises(NotFoundError, match="HTTP 404"):
            await client.status(url)


async def test_max_inflight_gives_throttled_with_retry_after(
    emulator_factory: Factory, batch_file: Path
) -> None:
    emulator = await emulator_factory(max_inflight=1, latency_ms=(300, 300), retry_after_s=2.5)
    async with TargetClient(target(emulator.base_url)) as client:
        results = await asyncio.gather(
            client.submit(batch_file), client.submit(batch_file), return_exceptions=True
        )
    errors = [r for r in results if isinstance(r, BaseException)]
    assert len(errors) == 1
    [error] = errors
    assert isinstance(error, ThrottledError)
    assert (error.status, error.retry_after) == (429, 2.5)
    assert emulator.stats()["throttled"] == 1


async def test_error_rate_gives_server_error_503(
    emulator_factory: Factory, batch_file: Path
) -> None:
    # The emulator answers its injected 503 without Retry-After: a plain ServerError.
    emulator = await emulator_factory(error_rate=1.0)
    async with TargetClient(target(emulator.base_url)) as client:
        with pytest.raises(ServerError) as info:
            await client.submit(batch_file)
    assert type(info.value) is ServerError
    assert info.value.status == 503
    assert emulator.stats()["batches_accepted"] == 0


async def test_drop_rate_gives_outcome_unknown(emulator_factory: Factory, batch_file: Path) -> None:
    emulator = await emulator_factory(drop_rate=1.0)
    async with TargetClient(target(emulator.base_url)) as client:
        with pytest.raises(OutcomeUnknownError, match="may have been accepted"):
            await client.submit(batch_file)
    stats = emulator.stats()
    assert (stats["batches_accepted"], stats["dropped"]) == (1, 1)


async def test_status_error_rate_gives_server_error_500(
    emulator_factory: Factory, batch_file: Path
) -> None:
    emulator = await emulator_factory(status_error_rate=1.0)
    async with TargetClient(target(emulator.base_url)) as client:
        submitted = await client.submit(batch_file)
        with pytest.raises(ServerError) as info:
            await client.status(submitted.status_url)
    assert info.value.status == 500


async def test_stuck_batch_reports_stuck(emulator_factory: Factory, batch_file: Path) -> None:
    emulator = await emulator_factory(stuck_rate=1.0)
    async with TargetClient(target(emulator.base_url)) as client:
        submitted = await client.submit(batch_file)
        status = await client.status(submitted.status_url)
    assert status.status is RemoteStatus.STUCK
    assert (status.batch_size, status.consumed, status.successful) == (2, 0, 0)


async def test_token_required(emulator_factory: Factory, batch_file: Path) -> None:
    emulator = await emulator_factory(token=TOKEN)
    async with TargetClient(target(emulator.base_url)) as anonymous:
        with pytest.raises(AuthError) as info:
            await anonymous.submit(batch_file)
    assert info.value.status == 401
    assert "TARGET_PROFILE_TOKEN" in str(info.value)
    async with TargetClient(target(emulator.base_url, token="wrong-token")) as wrong:
        with pytest.raises(AuthError) as info:
            await wrong.submit(batch_file)
    assert "wrong-token" not in str(info.value)
    # With the token, status (on 127.0.0.2) and fetch work too: the token went there.
    async with TargetClient(target(emulator.base_url, token=TOKEN)) as client:
        submitted = await client.submit(batch_file)
        await emulator.wait_applied()
        status = await client.status(submitted.status_url)
        profile = await client.fetch_profile("C1")
    assert URL(submitted.status_url).host == "127.0.0.2"
    assert status.status is RemoteStatus.COMPLETE
    assert profile is not None
    assert emulator.stats()["unauthorized"] == 2
