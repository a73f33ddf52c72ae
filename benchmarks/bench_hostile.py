"""Hostile status answers: peak RSS of a whole run, and how long the event loop stalls.

A small server (in a thread of this process, on 127.0.0.1) accepts every
batch and answers the first status calls with one hostile body, then with
``complete``:

- ``element flood``: 64 MiB of ``<a/>``, 16 million elements (the case that
  once took 1.75 GB and blocked the loop 12 s);
- ``deep nesting``: 64 MiB of ``<a>``;
- ``profile flood``: 500,000 well-formed ``<profile>`` entries, one per row
  of the largest batch (a legal answer; the client keeps 100,000);
- ``profile errors``: the same, but ``complete``, every entry an error: the
  100,000 kept are written to the journal (``failed.csv`` names those rows).

For each, ``uploader run`` runs as a child process (peak RSS from its
``VmHWM``, see ``bench_memory.run_child``), and the same answer is read once
in this process by ``TargetClient.status`` while a 1 ms ticker measures the
longest stall of the event loop, in wall-clock time and in CPU time of this
thread (on a shared machine the wall clock also counts time the process was
not scheduled; the server runs in its own process for that measurement).
For ``profile errors``, the ticker then also watches the poller's journal
write of that answer (``poll.record_status``, into a fresh journal).
Goals: peak RSS under 200 MB, stalls under 50 ms of CPU.

    python -m benchmarks.bench_hostile [--quick]

``--quick`` uses 4 MiB bodies and writes its JSON to a temporary directory
unless ``--out`` is given, so it never replaces the committed results.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import multiprocessing
import multiprocessing.process
import multiprocessing.queues
import os
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web

from benchmarks.bench_memory import run_child
from benchmarks.common import Result, command_line, finish, out_dir, parser
from uploader.client import TargetClient
from uploader.errors import UploaderError
from uploader.journal import Journal
from uploader.poll import record_status
from uploader.redact import Redactor
from uploader.settings import TargetSettings

ROWS, BATCHES = 3_000, 3
FLOOD_CALLS = 3  # status calls answered with the hostile body before `complete`
TOKEN = "".join(f"{i:03d}-bench-token-" for i in range(25))[:300]


def element_flood(size: int) -> Callable[[web.StreamResponse], Awaitable[None]]:
    return _repeat(b"<response>", b"<a/>", size)


def deep_nesting(size: int) -> Callable[[web.StreamResponse], Awaitable[None]]:
    return _repeat(b"", b"<a>", size)


def profile_flood(
    size: int, status: bytes = b"incomplete"
) -> Callable[[web.StreamResponse], Awaitable[None]]:
    async def write(resp: web.StreamResponse) -> None:
        # No <batchId>: it is the one asked for (from the URL).
        await resp.write(b"<response><status>%s</status>" % status)
        await resp.write(b"<batchSize>500000</batchSize><profiles>")
        entry = b"<profile><id>C%06d</id><status>error</status></profile>"
        count = min(500_000, size // len(entry % 0))
        for start in range(0, count, 1000):
            await resp.write(b"".join(entry % i for i in range(start, min(count, start + 1000))))
        await resp.write(b"</profiles></response>")

    return write


def profile_errors(size: int) -> Callable[[web.StreamResponse], Awaitable[None]]:
    return profile_flood(size, b"complete")


def _repeat(head: bytes, unit: bytes, size: int) -> Callable[[web.StreamResponse], Awaitable[None]]:
    async def write(resp: web.StreamResponse) -> None:
        chunk = unit * (64 * 1024 // len(unit))
        await resp.write(head)
        sent = len(head)
        while sent < size:
            part = chunk[: size - sent]
            await resp.write(part)
            sent += len(part)

    return write


class Server:
    """The hostile server, in its own thread and event loop."""

    def __init__(self, body: Callable[[web.StreamResponse], Awaitable[None]]) -> None:
        self.body = body
        self.calls: dict[str, int] = {}
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _main(self) -> None:
        asyncio.run(self._serve())

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/m2/{client}/v2/profile/batchUpdate", self._submit)
        app.router.add_get("/m2/{client}/profile/batchStatus", self._status)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    async def _submit(self, request: web.Request) -> web.Response:
        body = await request.read()
        rows = sum(1 for line in body.split(b"\n")[1:] if line.strip())
        batch_id = f"H-{len(self.calls) + 1}-{rows}"
        self.calls[batch_id] = 0
        url = f"{self.base_url}/m2/bench/profile/batchStatus?batchId={batch_id}"
        return _xml(f"<response><success>true</success><batchStatus>{url}</batchStatus></response>")

    async def _status(self, request: web.Request) -> web.StreamResponse:
        batch_id = request.query.get("batchId", "H-0-0")
        self.calls[batch_id] = self.calls.get(batch_id, 0) + 1
        if self.calls[batch_id] <= FLOOD_CALLS:
            resp = web.StreamResponse(headers={"Content-Type": "application/xml"})
            await resp.prepare(request)
            # The client may stop reading (the point of a cap): that ends the answer.
            with contextlib.suppress(ConnectionError, RuntimeError):
                await self.body(resp)
            return resp
        rows = batch_id.rsplit("-", 1)[1]
        return _xml(
            f"<response><batchId>{batch_id}</batchId><status>complete</status>"
            f"<batchSize>{rows}</batchSize><successfulUpdates>{rows}</successfulUpdates>"
            "</response>"
        )


class ServerProcess:
    """The same server in a forked process, so that it does not share our GIL."""

    def __init__(self, body: Callable[[web.StreamResponse], Awaitable[None]]) -> None:
        self.body = body
        self.port = 0
        self._ctx = multiprocessing.get_context("fork")
        self._proc: multiprocessing.process.BaseProcess | None = None

    def __enter__(self) -> ServerProcess:
        ports: multiprocessing.queues.Queue[int] = self._ctx.Queue()
        self._proc = self._ctx.Process(target=_serve_forever, args=(self.body, ports), daemon=True)
        self._proc.start()
        self.port = ports.get(timeout=30)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.join(10)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _serve_forever(
    body: Callable[[web.StreamResponse], Awaitable[None]],
    ports: multiprocessing.queues.Queue[int],
) -> None:
    with Server(body) as server:
        ports.put(server.port)
        threading.Event().wait()


def _xml(text: str) -> web.Response:
    return web.Response(text=text, content_type="application/xml")


class StallWatch:
    """A 1 ms ticker on the running loop while the block runs.

    ``stall_ms``: the longest the loop did not run it, in wall-clock time;
    ``busy_ms``: the CPU time this thread used during its longest busy stretch.
    On a shared machine the wall-clock stall also counts time the process was
    not scheduled at all; the CPU figure is the part our code can cause.
    """

    def __init__(self) -> None:
        self.stall_ms = self.busy_ms = self.seconds = 0.0
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._started = 0.0

    async def __aenter__(self) -> StallWatch:
        self._task = asyncio.create_task(self._tick())
        await asyncio.sleep(0)
        self._started = time.perf_counter()
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._started
        self._done.set()
        if self._task is not None:
            await self._task

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._done.is_set():
            before, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(0.001)
            self.stall_ms = max(self.stall_ms, (loop.time() - before - 0.001) * 1000)
            self.busy_ms = max(self.busy_ms, (time.thread_time() - cpu) * 1000)


@dataclass(frozen=True)
class _BatchFile:
    """The one batch of the journal the ``profile errors`` answer is written to."""

    seq: int = 1
    path: str = "batch-000001.txt"
    rows: int = 500_000
    bytes: int = 0
    first_line: int = 2
    last_line: int = 500_001
    sha256: str = "0" * 64


async def loop_stall(base_url: str, journal_dir: Path | None = None) -> dict[str, Any]:
    """One status call in this process, then (with ``journal_dir``) its journal write.

    Each is watched by its own ``StallWatch``; the write is the poller's own
    (``poll.record_status``, redacting with a 300-character token as a run
    with one does) into a fresh journal holding one accepted batch.
    """
    settings = TargetSettings(client="bench", base_url=base_url)
    out: dict[str, Any] = {}
    status = None
    async with StallWatch() as read, TargetClient(settings) as client:
        try:
            status = await client.status(f"{base_url}/m2/bench/profile/batchStatus?batchId=P-0-0")
            out["outcome"] = f"parsed: {status.status.value}, {len(status.profiles)} profiles kept"
        except UploaderError as exc:
            out["outcome"] = f"{type(exc).__name__}: {str(exc)[:80]}"
    out.update(read_stall_ms=read.stall_ms, read_busy_ms=read.busy_ms, read_s=read.seconds)
    if journal_dir is None or status is None:
        return out
    with Journal(journal_dir / "journal.sqlite") as journal:
        journal.add_batch(_BatchFile())
        journal.begin_submit(1)
        journal.record_accepted(1, "P-0-0", "http://127.0.0.1/")
        async with StallWatch() as write:
            await record_status(journal, 1, status, redact=Redactor(TOKEN))
        out["errors_written"] = len(journal.profile_errors(1))
    out.update(write_stall_ms=write.stall_ms, write_busy_ms=write.busy_ms, write_s=write.seconds)
    return out


def run_upload(base_url: str, tmp: Path, name: str) -> tuple[int, float, float]:
    export = tmp / f"{name}.csv"
    with export.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["thirdPartyId", "tier"])
        writer.writerows([f"C{i:06d}", "gold"] for i in range(ROWS))
    config = tmp / "fast.toml"
    config.write_text("[status]\npoll_initial_s = 0.05\npoll_max_s = 0.5\n")
    args = [
        sys.executable, "-m", "uploader", "run", str(export),
        "--client", "bench", "--base-url", base_url, "--config", str(config),
        "--max-batch-rows", str(ROWS // BATCHES), "--work-dir", str(tmp / f"run-{name}"),
        "--progress", "none", "--fresh",
    ]  # fmt: skip
    return run_child(args)


def main(argv: Sequence[str] | None = None) -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--no-runs", action="store_true", help="only the in-process stall figures")
    ns = p.parse_args(argv)
    size = 4 * 1024 * 1024 if ns.quick else 64 * 1024 * 1024 - 64
    out = out_dir(ns)
    result = Result(
        "hostile",
        f"Hostile status answers ({size / 2**20:.0f} MiB bodies, {FLOOD_CALLS} per batch)",
        command_line("benchmarks.bench_hostile", argv),
        params={"body_bytes": size, "rows": ROWS, "batches": BATCHES, "flood_calls": FLOOD_CALLS},
    )
    started = time.perf_counter()
    cases = {
        "element flood": element_flood(size),
        "deep nesting": deep_nesting(size),
        "profile flood": profile_flood(size),
        "profile errors": profile_errors(size),
    }
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        for name, body in cases.items():
            slug = name.replace(" ", "-")
            code, rss, seconds, status_calls = 0, 0.0, 0.0, 0
            if not ns.no_runs:
                with Server(body) as server:
                    code, rss, seconds = run_upload(server.base_url, Path(tmp), slug)
                    status_calls = sum(server.calls.values())
            journal_dir = Path(tmp) / f"journal-{slug}" if name == "profile errors" else None
            if journal_dir is not None:
                journal_dir.mkdir()
            with ServerProcess(body) as server:
                seen = asyncio.run(loop_stall(server.base_url, journal_dir))
            result.cases.append(
                {
                    "case": name,
                    "run_peak_rss_mb": rss,
                    "run_seconds": seconds,
                    "run_exit_code": code,
                    "run_status_calls": status_calls,
                    "one_answer_seconds": seen["read_s"],
                    "max_loop_stall_ms": seen["read_stall_ms"],
                    "max_loop_busy_cpu_ms": seen["read_busy_ms"],
                    "one_answer_outcome": seen["outcome"],
                    **{k: seen[k] for k in ("errors_written", "write_s") if k in seen},
                }
            )
            if not ns.no_runs:
                # The profile-errors answer lists rows as errors: finishing with exit 1 is
                # as good as 0 (its counts are absent, so the rows are counted successful).
                expected = 1 if name == "profile errors" else 0
                result.add(f"{name}: peak RSS of uploader run", rss, "MB", "<", 200.0)
                result.add(f"{name}: uploader run exit code", code, "", "<=", expected)
            busy, stall = seen["read_busy_ms"], seen["read_stall_ms"]
            result.add(f"{name}: longest event-loop stall, CPU time", busy, "ms", "<", 50.0)
            result.add(f"{name}: longest event-loop stall, wall clock", stall, "ms")
            if "write_busy_ms" in seen:
                what = f"{name}: journal write of {seen['errors_written']:,} listed errors"
                busy, stall = seen["write_busy_ms"], seen["write_stall_ms"]
                result.add(f"{what}, longest loop stall, CPU time", busy, "ms", "<", 50.0)
                result.add(f"{what}, longest loop stall, wall clock", stall, "ms")
                result.add(f"{what}, seconds", seen["write_s"], "s")
    result.elapsed_s = time.perf_counter() - started
    load = os.getloadavg()[0]
    result.notes.append(
        f"load average {load:.1f} on {os.cpu_count()} CPUs at the end (a shared machine): the "
        "wall-clock stalls include time the process was not scheduled; the CPU-time stalls "
        "are what our code holds the loop for"
    )
    finish(result, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
