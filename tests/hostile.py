"""A hostile (or just broken) Target server for tests, on 127.0.0.1.

It speaks the submit and status endpoints well enough for a whole run and
misbehaves in one way per ``mode``:

| mode | what it does |
|---|---|
| ``ok`` | behaves |
| ``flood`` | first status answer: 64 MiB of ``<a/>`` (16 million elements) |
| ``deep`` | first status answer: 100,000 nested elements |
| ``echo401`` | every submit: HTTP 401 echoing our ``Authorization`` header |
| ``echo413`` | every submit: HTTP 413 whose XML message quotes the token twice |
| ``echo_status`` | first status answer: HTTP 500 echoing the token |
| ``userinfo`` | status URLs with ``user:password@`` in them |
| ``bad_status_url`` | accepts every batch, naming a status URL that does not parse |
| ``no_status_url`` | accepts every batch, naming a batch id but no status URL |
| ``same_id`` | the same batch id for every batch |
| ``wrong_id`` | first status answer names another batch |
| ``overcount`` | ``successfulUpdates`` 5 above ``batchSize`` |
| ``overfailed`` | every row successful and 5 failed: the counts add up to 5 above ``batchSize`` |
| ``retry_after`` | status calls: 429 ``Retry-After: 999999999`` for the first ``hold_s`` |
| ``error500`` | every submit: HTTP 500 |
| ``echo_profile`` | behaves, but a fetched profile's values and dates echo our token |
| ``garbled`` | every submit: broken HTTP whose bad header line echoes our ``Authorization`` |
| ``listed_errors`` | complete; lists the even rows as errors echoing our token, and more ids |
| ``uncounted_errors`` | complete; lists the even rows as errors, counts every row successful |
| ``hangup`` | submits: the connection closed unanswered for the first ``hold_s`` |
| ``status_hangup`` | status calls: the connection closed unanswered for the first ``hold_s`` |
| ``stalled`` | every status: ``incomplete``, every row consumed, forever |
| ``status_redirect`` | every status call: HTTP 302 to another host |
| ``status_html`` | every status call: HTTP 200 with an HTML maintenance page |
| ``status_unknown`` | every status call: a ``<status>`` word no API version has |
| ``status_gone`` | every status call: HTTP 410 |
| ``html_twice`` | a batch's status calls 1, 2, 4, 5: HTML; 3: ``incomplete``; then behaves |

``status_port``: status URLs name that port of 127.0.0.1 (one where nothing
listens, from ``closed_port()``) instead of the server's own.

A fetched profile (``uploader verify``) holds ``tier = gold`` for any id.

Everything it saw is in ``seen`` for the test to check.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass, field

from aiohttp import web
from aiohttp.test_utils import TestServer

MODES = (
    "ok",
    "flood",
    "deep",
    "echo401",
    "echo413",
    "echo_status",
    "userinfo",
    "bad_status_url",
    "no_status_url",
    "same_id",
    "wrong_id",
    "overcount",
    "overfailed",
    "retry_after",
    "error500",
    "echo_profile",
    "garbled",
    "listed_errors",
    "uncounted_errors",
    "hangup",
    "status_hangup",
    "stalled",
    "status_redirect",
    "status_html",
    "status_unknown",
    "status_gone",
    "html_twice",
)
MAINTENANCE = "<html><body><h1>Down for maintenance</h1>back soon</body></html>"
PASSWORD = "hunter2-not-a-token"
FLOOD_BYTES = 64 * 1024 * 1024 - 64
EXTRA_ERRORS = 4_000  # listed errors of ids no batch holds (mode listed_errors)


@dataclass
class Seen:
    submits: int = 0
    status_calls: int = 0
    throttled: int = 0
    status_times: list[float] = field(default_factory=list)
    status_times_by_batch: dict[str, list[float]] = field(default_factory=dict)
    auth: set[str | None] = field(default_factory=set)


class HostileServer:
    """``await server.start()``; ``server.base_url``; ``await server.close()``."""

    def __init__(self, mode: str, *, hold_s: float = 1.0, status_port: int | None = None) -> None:
        assert mode in MODES, mode
        self.mode = mode
        self.hold_s = hold_s
        self.status_port = status_port
        self._first_submit: float | None = None
        self.seen = Seen()
        self._rows: dict[str, int] = {}  # status key -> rows of that batch
        self._ids: dict[str, list[str]] = {}  # status key -> ids of that batch, in order
        self._first_status: float | None = None
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/m2/{client}/v2/profile/batchUpdate", self._submit)
        app.router.add_get("/m2/{client}/profile/batchStatus", self._status)
        app.router.add_get("/rest/v1/profiles/thirdPartyId/{id}", self._profile)
        self._server = TestServer(app, host="127.0.0.1", port=0)

    async def start(self) -> None:
        await self._server.start_server()

    async def close(self) -> None:
        await self._server.close()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.port}"

    # -- submit ------------------------------------------------------------------------

    async def _submit(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.seen.submits += 1
        if self.mode == "hangup":
            self._first_submit = self._first_submit or time.monotonic()
            if time.monotonic() - self._first_submit < self.hold_s:
                return _hang_up(request)
        auth = request.headers.get("Authorization")
        self.seen.auth.add(auth)
        if self.mode == "echo401":
            return web.Response(status=401, text=f"denied; you sent Authorization: {auth}")
        if self.mode == "error500":
            return web.Response(status=500, text="internal server error")
        if self.mode == "garbled":  # the client's parser quotes the bad line in its error
            assert request.transport is not None
            request.transport.write(
                b"HTTP/1.1 200 OK\r\nX-Echo\x01: %s\r\n\r\n" % (auth or "").encode()
            )
            request.transport.close()
            return web.Response()
        if self.mode == "echo413":
            token = (auth or "").removeprefix("Bearer ")
            message = f"batch too large for {token[:150]} (header was {auth})"
            return _xml(f"<response><message>{message}</message></response>", status=413)
        lines = [line for line in body.split(b"\n")[1:] if line.strip()]
        rows = len(lines)
        n = self.seen.submits
        self._ids[str(n)] = [line.split(b",")[0].decode() for line in lines]
        batch_id = "H-SAME" if self.mode == "same_id" else f"H-{n}"
        self._rows[str(n)] = rows
        host = f"user:{PASSWORD}@127.0.0.1" if self.mode == "userinfo" else "127.0.0.1"
        port = self.status_port or self._server.port
        url = (
            f"http://{host}:{port}/m2/{request.match_info['client']}"
            f"/profile/batchStatus?batchId={batch_id}&amp;n={n}"
        )
        if self.mode == "bad_status_url":  # an IPv6 bracket never closed
            url = f"http://[::1:{self._server.port}/m2/acme/profile/batchStatus?batchId={batch_id}"
        status = "" if self.mode == "no_status_url" else f"<batchStatus>{url}</batchStatus>"
        return _xml(
            f"<response><success>true</success><batchId>{batch_id}</batchId>{status}"
            "<message>ok</message></response>"
        )

    # -- status ------------------------------------------------------------------------

    async def _status(self, request: web.Request) -> web.StreamResponse:
        now = time.monotonic()
        self.seen.status_calls += 1
        self.seen.status_times.append(now)
        self.seen.status_times_by_batch.setdefault(request.query.get("n", ""), []).append(now)
        first = self._first_status is None
        if first:
            self._first_status = now
        batch_id = request.query.get("batchId", "")
        rows = self._rows.get(request.query.get("n", ""), 0)
        if self.mode == "flood" and first:
            return await _stream(request, b"<response>", b"<a/>", FLOOD_BYTES)
        if self.mode == "deep" and first:
            return _xml("<a>" * 100_000)
        if self.mode == "echo_status" and first:
            auth = request.headers.get("Authorization")
            return web.Response(status=500, text=f"upstream said no to {auth} {auth}")
        if self.mode == "wrong_id" and first:
            batch_id = "H-someone-else"
        assert self._first_status is not None
        if self.mode == "status_hangup" and now - self._first_status < self.hold_s:
            return _hang_up(request)
        if self.mode == "retry_after" and now - self._first_status < self.hold_s:
            self.seen.throttled += 1
            return web.Response(status=429, headers={"Retry-After": "999999999"})
        call = len(self.seen.status_times_by_batch[request.query.get("n", "")])
        if self.mode == "status_redirect":
            raise web.HTTPFound("http://127.0.0.2:9/maintenance")
        if self.mode == "status_html" or (self.mode == "html_twice" and call in (1, 2, 4, 5)):
            return web.Response(text=MAINTENANCE, content_type="text/html")
        if self.mode == "html_twice" and call == 3:
            return _xml(
                f"<response><batchId>{batch_id}</batchId><status>incomplete</status>"
                f"<batchSize>{rows}</batchSize><consumedCount>0</consumedCount></response>"
            )
        if self.mode == "status_gone":
            return web.Response(status=410, text="gone")
        if self.mode == "listed_errors":
            ids = self._ids.get(request.query.get("n", ""), [])
            return _xml(_listed_errors(batch_id, ids, request.headers.get("Authorization")))
        if self.mode == "uncounted_errors":
            ids = self._ids.get(request.query.get("n", ""), [])
            return _xml(_uncounted_errors(batch_id, ids))
        if self.mode == "stalled":
            return _xml(
                f"<response><batchId>{batch_id}</batchId><status>incomplete</status>"
                f"<batchSize>{rows}</batchSize><consumedCount>{rows}</consumedCount></response>"
            )
        word = "frobnicated" if self.mode == "status_unknown" else "complete"
        successful = rows + 5 if self.mode == "overcount" else rows
        failed = 5 if self.mode == "overfailed" else 0
        return _xml(
            f"<response><batchId>{batch_id}</batchId><status>{word}</status>"
            f"<batchSize>{rows}</batchSize><consumedCount>{rows}</consumedCount>"
            f"<successfulUpdates>{successful}</successfulUpdates>"
            f"<profilesNotFound>0</profilesNotFound><failedUpdates>{failed}</failedUpdates>"
            "</response>"
        )

    # -- profile fetch -----------------------------------------------------------------

    async def _profile(self, request: web.Request) -> web.StreamResponse:
        value, when = "gold", "2026-01-01T00:00:00Z"
        if self.mode == "echo_profile":
            auth = request.headers.get("Authorization") or ""
            value, when = f"gold, said {auth}", auth.removeprefix("Bearer ")
        attrs = {"tier": {"value": value, "modifiedAt": when}}
        return web.json_response(
            {
                "thirdPartyId": request.match_info["id"],
                "modifiedAt": when,
                "profileAttributes": attrs,
            }
        )


def _listed_errors(batch_id: str, ids: list[str], auth: str | None) -> str:
    """A complete answer: the even rows failed (each message echoing our header), the odd
    ones succeeded, and more errors."""
    bad, good = ids[::2], ids[1::2]
    entries = [
        *(f"<profile><id>{i}</id><status>error</status><message>no {i}; you sent {auth}"
          "</message></profile>" for i in bad),
        *(f"<profile><id>{i}</id><status>success</status></profile>" for i in good),
        *(f"<profile><id>Z{k:05d}</id><status>error</status></profile>"
          for k in range(EXTRA_ERRORS)),
    ]  # fmt: skip
    return (
        f"<response><batchId>{batch_id}</batchId><status>complete</status>"
        f"<batchSize>{len(ids)}</batchSize><successfulUpdates>{len(good)}</successfulUpdates>"
        f"<failedUpdates>{len(bad)}</failedUpdates><profilesNotFound>0</profilesNotFound>"
        f"<profiles>{''.join(entries)}</profiles></response>"
    )


def _uncounted_errors(batch_id: str, ids: list[str]) -> str:
    """A complete answer whose counts say every row succeeded, listing the even rows as
    errors all the same."""
    entries = "".join(
        f"<profile><id>{i}</id><status>error</status><message>refused</message></profile>"
        for i in ids[::2]
    )
    return (
        f"<response><batchId>{batch_id}</batchId><status>complete</status>"
        f"<batchSize>{len(ids)}</batchSize><successfulUpdates>{len(ids)}</successfulUpdates>"
        "<failedUpdates>0</failedUpdates><profilesNotFound>0</profilesNotFound>"
        f"<profiles>{entries}</profiles></response>"
    )


def _hang_up(request: web.Request) -> web.Response:
    """Close the connection without a word (the response returned is never sent)."""
    assert request.transport is not None
    request.transport.close()
    return web.Response()


def closed_port() -> int:
    """A port of 127.0.0.1 where nothing listens (bound for a moment, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _xml(text: str, status: int = 200) -> web.Response:
    return web.Response(text=text, status=status, content_type="application/xml")


async def _stream(request: web.Request, head: bytes, unit: bytes, size: int) -> web.StreamResponse:
    """``head`` then ``unit`` repeated up to ``size`` bytes, sent in 64 KiB writes."""
    resp = web.StreamResponse(headers={"Content-Type": "application/xml"})
    resp.content_length = size
    await resp.prepare(request)
    chunk = unit * (64 * 1024 // len(unit))
    await resp.write(head)
    sent = len(head)
    try:
        while sent < size:
            part = chunk[: size - sent]
            await resp.write(part)
            sent += len(part)
    except (ConnectionResetError, RuntimeError):
        pass  # the client stopped reading: that is the point
    return resp
