"""The emulated Target as an aiohttp application, and its lifecycle.

Request path (``/m2/...`` submit): auth, in-flight limit (429), injected 503,
a size-capped streaming read, the fast validation of ``formdata.scan_batch``,
then the batch is recorded and its body queued (in memory up to
``queue_memory_mb``, beyond it spilled to files: ``spool.py``); rows are
decoded and applied later by one background task at ``apply_rate`` rows per
second, in FIFO order (or interleaved at random, ``apply_order``) and in small
slices so the event loop stays responsive. Status and fetch calls only read
the ``Store``.

HTTP answers chosen where Adobe documents none: a body of 50 MB or more gets
HTTP 413 (with a ``success=false`` XML body); other batch refusals are HTTP
200 with ``success=false`` like Target; an unknown batch id is HTTP 404 XML; a
missing or wrong Bearer token is HTTP 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import itertools
import json
import logging
import signal
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from uploader.emulator import formdata, render
from uploader.emulator.config import EmulatorConfig
from uploader.emulator.faults import Faults, Stats
from uploader.emulator.spool import QueuedBody, Spool
from uploader.emulator.store import Batch, Store
from uploader.states import RemoteStatus

__all__ = ["Emulator", "serve_forever"]

log = logging.getLogger(__name__)

_XML = "application/xml"
_dumps = functools.partial(json.dumps, ensure_ascii=False)
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
_SLICE_SECONDS = 0.01  # target length of one applier slice at the configured rate
_MAX_SLICE_ROWS = 2000  # and a hard cap, so one slice never blocks the loop for long
_MAX_CREDIT_S = 0.1  # how far the applier may run behind its schedule before it is reset

_SHUTDOWN_S = 0.5
MB = 1_000_000  # queue_memory_mb is in MB of 10^6 bytes, like every figure of the project


@dataclass(frozen=True, slots=True)
class _Taken:
    """A submitted batch that passed the checks, its value in the spool."""

    header: formdata.BatchHeader
    rows: int
    body: QueuedBody
    digest: bytes  # sha256 of the whole body (duplicate_batches)


def _xml(body: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=body, status=status, content_type=_XML, headers=headers)


class Emulator:
    """An in-process emulated Target; use ``async with Emulator(config) as emu``.

    Binds ``host`` (default 127.0.0.1, port 0 = any free port) and also
    ``config.status_host`` on the same port, so the status URLs it returns
    name another host than the submit host, as Target's edge hosts do.
    """

    def __init__(
        self, config: EmulatorConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.config = config or EmulatorConfig()
        self._host = host
        self._want_port = port
        self.port = 0
        self.status_host = self.config.status_host
        self.app = self._make_app()
        self._runner: web.AppRunner | None = None
        self._applier: asyncio.Task[None] | None = None
        self._queue: deque[Batch] = deque()
        self._work = asyncio.Event()  # set when the queue has batches to apply
        self._idle = asyncio.Event()  # set when every queued batch is applied
        self._spool: Spool | None = None
        self.reset()

    # -- lifecycle -------------------------------------------------------------

    def reset(self) -> None:
        """Forget every batch, profile and counter (the fault generator restarts too)."""
        self.store = Store(keep_profiles=self.config.store == "full")
        self._stats = Stats()
        self._faults = Faults(self.config)
        self._digests: set[bytes] = set()
        self._queue.clear()
        if self._spool is not None:
            self._spool.close()
        self._spool = Spool(int(self.config.queue_memory_mb * MB), self.config.spill_dir)
        self._idle.set()
        self._batch_seq = itertools.count(1)

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self._host in _WILDCARD_HOSTS else self._host
        return f"http://{host}:{self.port}"

    async def __aenter__(self) -> Emulator:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def start(self) -> None:
        self._runner = self._make_runner()
        await self._runner.setup()
        for attempt in itertools.count(1):
            try:
                await self._bind()
                break
            except OSError:
                await self._runner.cleanup()
                if attempt >= 5 or self._want_port:
                    raise
                self.app = self._make_app()  # an aiohttp app serves one runner only
                self._runner = self._make_runner()
                await self._runner.setup()
        self._applier = asyncio.create_task(self._apply_forever(), name="emulator-applier")

    def _make_runner(self) -> web.AppRunner:
        # A short shutdown timeout: a connection still lingering after a 413 or
        # 429 (aiohttp drains the unread body for up to 10 s) must not hold up stop().
        return web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=_SHUTDOWN_S
        )

    async def _bind(self) -> None:
        assert self._runner is not None
        site = web.TCPSite(self._runner, self._host, self._want_port)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        if self._host in _WILDCARD_HOSTS or self.status_host == self._host:
            return
        try:
            await web.TCPSite(self._runner, self.status_host, self.port).start()
        except OSError as exc:
            if not self._want_port and exc.errno == 98:  # EADDRINUSE: retry on a new port
                raise
            # e.g. macOS has only 127.0.0.1 by default: status URLs then name the main host
            log.warning(
                "cannot bind status host %s (%s); using %s", self.status_host, exc, self._host
            )
            self.status_host = self._host

    async def stop(self) -> None:
        if self._applier is not None:
            self._applier.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._applier
            self._applier = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
            self.app = self._make_app()  # so that start() may serve again
        # bodies spilled to files go with the server (a batch still queued from one
        # would go stuck if it were started again); those in memory stay queued
        assert self._spool is not None
        self._spool.close()

    # -- inspection (tests, demo, bench) ----------------------------------------

    def stats(self) -> dict[str, int]:
        """The counters of ``GET /_emulator/stats``, with what the store holds."""
        stats = self._stats.as_dict()
        stats["profiles_stored"] = len(self.store)
        stats["rows_digest"] = self.store.rows_digest  # --store none: what was applied
        spool = self._spool
        assert spool is not None
        stats["queued_bytes_memory"] = spool.memory_bytes  # bodies waiting, in memory
        stats["queued_bytes_disk"] = spool.disk_bytes  # and in files (queue_memory_mb)
        stats["peak_queued_bytes_memory"] = spool.peak_memory_bytes
        stats["batches_spilled"] = spool.spilled
        return stats

    def profile(self, client: str, id_type: str, pid: str) -> dict[str, Any] | None:
        """A profile shaped as the fetch API returns it, or None."""
        found = self.store.find(client, id_type, pid)
        return None if found is None else self.store.to_json(found)

    # the contract (design.md) names the parameter: callers write wait_applied(timeout)
    async def wait_applied(self, timeout: float | None = 30.0) -> None:  # noqa: ASYNC109
        """Until every accepted, non-stuck batch is applied (TimeoutError after ``timeout``)."""
        await asyncio.wait_for(self._idle.wait(), timeout)

    # -- the applier -----------------------------------------------------------

    def _enqueue(self, batch: Batch) -> None:
        self._queue.append(batch)
        self._idle.clear()
        self._work.set()

    async def _apply_forever(self) -> None:
        """Apply queued batches at ``apply_rate`` rows per second.

        In FIFO order, or with ``apply_order = "random"`` a slice at a time
        from a batch picked at random: batches then interleave and finish in
        any order, while the rows of one batch stay in their order.
        """
        loop = asyncio.get_running_loop()
        rate = self.config.apply_rate
        slice_rows = max(1, min(_MAX_SLICE_ROWS, int(rate * _SLICE_SECONDS)))
        due = loop.time()
        while True:
            if not self._queue:
                self._idle.set()
                self._work.clear()
                await self._work.wait()
                due = loop.time()
                continue
            pick = self._faults.next_batch(len(self._queue))
            batch = self._queue[pick]
            done = self._apply_slice(batch, slice_rows)
            if batch.status is not RemoteStatus.INCOMPLETE:
                del self._queue[pick]
            due = max(due + done / rate, loop.time() - _MAX_CREDIT_S)
            await asyncio.sleep(max(0.0, due - loop.time()))

    def _apply_slice(self, batch: Batch, rows: int) -> int:
        lose = functools.partial(self._faults.lost, batch.digest) if self.config.lose_rate else None
        lost_before = batch.lost
        try:
            done = self.store.apply_rows(batch, rows, lose)
        except Exception:  # a bug must not stop the applier: the batch goes stuck
            log.exception("emulator: applying batch %s failed", batch.batch_id)
            batch.status, done = RemoteStatus.STUCK, 0
            batch.drop_body()
            self._stats.stuck += 1
        self._stats.rows_applied += done
        self._stats.rows_lost += batch.lost - lost_before
        if batch.status is RemoteStatus.COMPLETE:
            self._stats.batches_applied += 1
        return done

    # -- HTTP ------------------------------------------------------------------

    def _make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/m2/{client}/profile/batchUpdate", self._submit_v1)
        app.router.add_post("/m2/{client}/v2/profile/batchUpdate", self._submit_v2)
        app.router.add_get("/m2/{client}/profile/batchStatus", self._status)
        app.router.add_get("/rest/v1/profiles/thirdPartyId/{id}", self._fetch_third_party)
        app.router.add_get("/rest/v1/profiles/{id}", self._fetch_pc)
        app.router.add_get("/_emulator/stats", self._stats_handler)
        return app

    def _authorized(self, request: web.Request) -> bool:
        token = self.config.token
        if token is None:
            return True
        given = request.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return True
        self._stats.unauthorized += 1
        return False

    async def _submit_v1(self, request: web.Request) -> web.StreamResponse:
        return await self._submit(request, "v1")

    async def _submit_v2(self, request: web.Request) -> web.StreamResponse:
        return await self._submit(request, "v2")

    async def _submit(self, request: web.Request, api: str) -> web.StreamResponse:
        stats = self._stats
        stats.submits += 1
        stats.inflight += 1
        stats.peak_inflight = max(stats.peak_inflight, stats.inflight)
        try:
            return await self._submit_inner(request, api)
        finally:
            stats.inflight -= 1

    async def _submit_inner(self, request: web.Request, api: str) -> web.StreamResponse:
        stats, faults = self._stats, self._faults
        if not self._authorized(request):
            return _xml(render.error_xml("Unauthorized"), status=401)
        if faults.throttle(stats.inflight):
            stats.throttled += 1
            retry_after = f"{self.config.retry_after_s:g}"
            return _xml(render.error_xml("Too many requests"), 429, {"Retry-After": retry_after})
        if faults.server_error():
            stats.errors_injected += 1
            return _xml(render.error_xml("Service unavailable"), status=503)
        body = await _read_capped(request, formdata.BODY_LIMIT)
        delay = faults.latency_s()
        # Checked and spooled before the delay, so that a submit waiting out its latency
        # holds its body within the spool's budget rather than as one more copy.
        taken = self._take(body)
        del body
        accepted = False
        try:
            if delay:
                await asyncio.sleep(delay)
            if isinstance(taken, web.Response):
                return taken
            batch = self._accept(request.match_info["client"], api, taken)
            accepted = True
        finally:
            if not accepted and isinstance(taken, _Taken):  # e.g. cancelled in the delay
                taken.body.release()
        url = (
            f"http://{self.status_host}:{self.port}/m2/{quote(batch.client, safe='')}"
            f"/profile/batchStatus?batchId={quote(batch.batch_id, safe='')}"
        )
        if faults.drop():
            stats.dropped += 1
            _drop_connection(request)
        return _xml(render.submit_xml(url))

    def _take(self, body: bytearray | None) -> _Taken | web.Response:
        """Check a submitted body and spool its value, or the refusal to answer.

        The body becomes its value in place (``formdata.batch_value``): hashed first.
        """
        stats = self._stats
        if body is None:
            stats.batches_rejected += 1
            return _xml(render.error_xml("Batch size must be under 50 MB"), status=413)
        stats.bytes_received += len(body)
        digest = hashlib.sha256(body).digest()
        try:
            scan = formdata.scan_batch(body)
        except formdata.BatchFormatError as exc:
            stats.batches_rejected += 1
            return _xml(render.error_xml(exc.message))
        assert self._spool is not None
        try:
            queued = self._spool.hold(scan.value)
        except OSError as exc:  # the body could not be spilled (disk full, directory gone)
            log.error("emulator: cannot spill a batch body: %s", exc)
            stats.spill_errors += 1
            return _xml(render.error_xml("Service unavailable"), status=503)
        return _Taken(scan.header, scan.rows, queued, digest)

    def _accept(self, client: str, api: str, taken: _Taken) -> Batch:
        stats = self._stats
        if taken.digest in self._digests:
            stats.duplicate_batches += 1
        self._digests.add(taken.digest)
        batch_id = f"{client}-{int(time.time() * 1000)}-{next(self._batch_seq)}"
        batch = Batch(
            batch_id=batch_id,
            client=client,
            api=api,
            header=taken.header,
            body=taken.body,
            size=taken.rows,
            digest=taken.digest,
        )
        self.store.batches[batch_id] = batch
        stats.batches_accepted += 1
        stats.rows_accepted += taken.rows
        if self._faults.stuck():
            stats.stuck += 1
            batch.status = RemoteStatus.STUCK
            batch.drop_body()
        else:
            self._enqueue(batch)
        return batch

    async def _status(self, request: web.Request) -> web.StreamResponse:
        self._stats.status_calls += 1
        if not self._authorized(request):
            return _xml(render.error_xml("Unauthorized"), status=401)
        if self._faults.status_error():
            self._stats.status_errors += 1
            return _xml(render.error_xml("Internal server error"), status=500)
        batch = self.store.batches.get(request.query.get("batchId", ""))
        if batch is None or batch.client != request.match_info["client"]:
            return _xml(render.error_xml("Unknown batchId"), status=404)
        details = request.query.get("showDetails", "").lower() == "true"
        return _xml(render.status_xml(batch, details))

    async def _fetch_third_party(self, request: web.Request) -> web.StreamResponse:
        return await self._fetch_later(request, "thirdPartyId")

    async def _fetch_pc(self, request: web.Request) -> web.StreamResponse:
        return await self._fetch_later(request, "pcId")

    async def _fetch_later(self, request: web.Request, id_type: str) -> web.StreamResponse:
        delay = self._faults.fetch_latency_s()
        if delay:
            await asyncio.sleep(delay)
        return self._fetch(request, id_type)

    def _fetch(self, request: web.Request, id_type: str) -> web.StreamResponse:
        self._stats.fetch_calls += 1
        if not self._authorized(request):
            return web.json_response({"status": 401, "message": "Unauthorized"}, status=401)
        client, pid = request.query.get("client", ""), request.match_info["id"]
        if not client:
            return web.json_response({"status": 400, "message": "client is required"}, status=400)
        if id_type == "thirdPartyId":
            found = self.store.find(client, id_type, pid)
        else:
            found = self.store.find_pc(client, pid)
        if found is None:
            message = f"No profile found for {id_type} {pid} in client {client}"
            return web.json_response({"status": 404, "message": message}, status=404)
        return web.json_response(self.store.to_json(found), dumps=_dumps)

    async def _stats_handler(self, request: web.Request) -> web.StreamResponse:
        return web.json_response(self.stats())


async def _read_capped(request: web.Request, limit: int) -> bytearray | None:
    """The whole body, or None once it reaches ``limit`` bytes (never buffered past it).

    Read into one buffer, not a list of chunks joined into a second copy; of the
    declared length when there is one (aiohttp reads no byte past it).
    """
    declared = request.content_length
    if declared is not None and declared >= limit:
        return None
    body = bytearray(declared or 0)
    size = 0
    while chunk := await request.content.readany():
        if size + len(chunk) >= limit:
            return None
        if size + len(chunk) <= len(body):
            body[size : size + len(chunk)] = chunk
        else:
            del body[size:]
            body += chunk
        size += len(chunk)
    del body[size:]  # a body shorter than declared (aiohttp raises before this)
    return body


def _drop_connection(request: web.Request) -> None:
    """Close the connection without an answer: the client sees a server disconnect."""
    transport = request.transport
    if transport is not None:
        transport.abort()
    raise asyncio.CancelledError


async def serve_forever(config: EmulatorConfig, host: str, port: int) -> None:
    """Serve until cancelled or sent SIGTERM (the ``uploader emulator`` command).

    SIGTERM ends it like Ctrl-C, through ``stop()``, so the files of spilled
    bodies are removed rather than left in the temporary directory.
    """
    loop = asyncio.get_running_loop()
    terminated = asyncio.Event()
    handled = False
    with contextlib.suppress(NotImplementedError, RuntimeError):  # Windows; not main thread
        loop.add_signal_handler(signal.SIGTERM, terminated.set)
        handled = True
    try:
        async with Emulator(config, host=host, port=port) as emu:
            print(
                f"emulator listening on {emu.base_url} (status host {emu.status_host})", flush=True
            )
            await terminated.wait()
    finally:
        if handled:
            loop.remove_signal_handler(signal.SIGTERM)
