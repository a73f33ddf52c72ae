"""Status calls we cannot read never fail a batch Target accepted; odd answers never hang a run.

A small server of ours on 127.0.0.1 accepts every batch and answers status
calls the way a test asks: 401, an HTML maintenance page, counts too large
for any integer type, a status URL with user info. The run either stops at
once (401/403/404: exit 2, batches stay accepted) or keeps following until
``--status-timeout`` (exit 3), and a rerun against a healthy server finishes
without sending any accepted batch again.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from xml.sax.saxutils import escape

import pytest
from aiohttp import web

from tests.conftest import EmulatorFactory
from tests.helpers import make_settings, read_report, write_csv
from uploader.emulator import Emulator
from uploader.journal import Journal
from uploader.pipeline import run_pipeline
from uploader.states import BatchState

ROWS, BATCH_ROWS = 200, 20
PROMPT_S = 20


class Server:
    """Accepts every batch; ``status`` picks the answer to status calls."""

    def __init__(self) -> None:
        self.status = "complete"
        self.status_url = "http://127.0.0.1:{port}/m2/acme/profile/batchStatus?batchId={id}"
        self.rows: dict[str, int] = {}
        self.submits = 0
        self.port = 0

    async def submit(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.submits += 1
        batch_id = f"acme-{self.submits}"
        self.rows[batch_id] = body.count(b"\n")
        url = self.status_url.format(port=self.port, id=batch_id)
        return web.Response(
            text=f"<response><success>true</success><batchStatus>{escape(url)}</batchStatus>"
            "<message>Batch submitted for processing</message></response>",
            content_type="application/xml",
        )

    async def batch_status(self, request: web.Request) -> web.Response:
        batch_id = request.query["batchId"]
        if self.status == "401":
            return web.Response(status=401, text="<error>token expired</error>")
        if self.status == "html":
            return web.Response(text="<html><body>maintenance</body></html>")
        n = str(self.rows[batch_id])
        count = {"2**63": str(2**63), "5000 digits": "9" * 5000}.get(self.status, n)
        return web.Response(
            text=f"<response><batchId>{batch_id}</batchId><status>complete</status>"
            f"<batchSize>{count}</batchSize><consumedCount>{n}</consumedCount>"
            f"<successfulUpdates>{count}</successfulUpdates><profilesNotFound>0"
            "</profilesNotFound><failedUpdates>0</failedUpdates></response>",
            content_type="application/xml",
        )


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    srv = Server()
    app = web.Application()
    app.router.add_post("/m2/acme/v2/profile/batchUpdate", srv.submit)
    app.router.add_get("/m2/acme/profile/batchStatus", srv.batch_status)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    srv.port = runner.addresses[0][1]
    try:
        yield srv
    finally:
        await runner.cleanup()


async def _run(server: Server, tmp_path: Path, **overrides: object) -> int:
    src = tmp_path / "export.csv"
    if not src.exists():
        write_csv(src, ["id", "tier"], [[f"P{i:04d}", "gold"] for i in range(ROWS)])

    class _At:  # make_settings wants something with a base_url
        base_url = f"http://127.0.0.1:{server.port}"

    settings = make_settings(_At(), batch__max_rows=BATCH_ROWS, **overrides)  # type: ignore[arg-type]
    outcome = await asyncio.wait_for(
        run_pipeline(str(src), settings, tmp_path / "work", job_id="t", install_signals=False),
        PROMPT_S,
    )
    return outcome.exit_code


def _states(tmp_path: Path) -> dict[int, tuple[BatchState, int]]:
    with Journal(tmp_path / "work" / "journal.sqlite") as journal:
        return {b.seq: (b.state, b.submits) for b in journal.batches()}


async def test_status_401_stops_the_run_and_the_batches_stay_accepted(
    server: Server, tmp_path: Path
) -> None:
    server.status = "401"
    assert await _run(server, tmp_path) == 2
    report = read_report(tmp_path / "work")
    assert report["error"].startswith("credentials refused while following batches: ")
    assert report["error"].endswith(
        "; accepted batches stay accepted and the same command follows them again once this "
        "is fixed"
    )
    states = _states(tmp_path)
    assert {state for state, _ in states.values()} <= {BatchState.ACCEPTED, BatchState.WRITTEN}
    accepted = {seq for seq, (state, _) in states.items() if state is BatchState.ACCEPTED}
    assert accepted and report["rows"]["failed"] == 0

    server.status = "complete"
    sent = server.submits
    assert await _run(server, tmp_path) == 0
    states = _states(tmp_path)
    assert states == {seq: (BatchState.COMPLETE, 1) for seq in range(1, ROWS // BATCH_ROWS + 1)}
    assert server.submits == sent + ROWS // BATCH_ROWS - len(accepted)  # none sent twice


async def test_an_unreadable_status_keeps_the_batch_until_the_timeout(
    server: Server, tmp_path: Path
) -> None:
    server.status = "html"
    assert await _run(server, tmp_path, status__timeout_s=1.0) == 3
    report = read_report(tmp_path / "work")
    assert report["status"] == "incomplete"
    assert report["error"].startswith(
        f"the status of {ROWS // BATCH_ROWS} accepted batches could not be read until the "
        "status timeout (batch 000001: ProtocolError: "
    )
    assert report["error"].endswith("they stay accepted: run the same command again to follow them")
    assert report["rows"]["failed"] == 0
    assert report["rows"]["pending"] == ROWS
    assert {s for s, _ in _states(tmp_path).values()} == {BatchState.ACCEPTED}

    server.status = "complete"
    assert await _run(server, tmp_path) == 0
    assert server.submits == ROWS // BATCH_ROWS


@pytest.mark.parametrize("answer", ["2**63", "5000 digits"])
async def test_counts_no_integer_holds_end_the_run_promptly(
    server: Server, tmp_path: Path, answer: str
) -> None:
    server.status = answer
    code = await _run(server, tmp_path, status__timeout_s=2.0)
    report = read_report(tmp_path / "work")
    # an unreadable answer: the batches stay followed until the timeout (exit 3)
    assert (code, report["exit_code"], report["status"]) == (3, 3, "incomplete")
    assert report["error"].startswith(
        "the status of 10 accepted batches could not be read until the status timeout "
        "(batch 000001: ProtocolError: status response <batchSize> is out of range: "
    )
    assert report["rows"]["failed"] == 0
    assert report["rows"]["pending"] == ROWS


async def test_a_status_url_with_user_info_and_a_token_ends_the_run_promptly(
    server: Server, tmp_path: Path
) -> None:
    server.status_url = "http://user:pass@127.0.0.1:{port}/m2/acme/profile/batchStatus?batchId={id}"
    code = await _run(server, tmp_path, environ={"TARGET_PROFILE_TOKEN": "tok3n"})
    report = read_report(tmp_path / "work")
    assert code == 2
    assert report["error"].startswith(
        "cannot call a status URL while following batches: status URL "
        f"'http://[credentials]@127.0.0.1:{server.port}/m2/acme/profile/batchStatus?batchId="
    )
    assert report["error"].endswith(
        "refusing to call it; accepted batches stay accepted and the same command follows "
        "them again once this is fixed"
    )
    assert "tok3n" not in report["error"] and "pass" not in report["error"]
    assert report["rows"]["failed"] == 0


async def test_a_submit_reply_naming_a_broken_url_ends_the_run_promptly(
    server: Server, tmp_path: Path
) -> None:
    server.status_url = "http://[::1/m2/acme/profile/batchStatus?batchId={id}"
    code = await _run(server, tmp_path)
    report = read_report(tmp_path / "work")
    # success=true: accepted, and following it is refused (exit 2); every submit that
    # reached the server is counted, no row is failed
    assert (code, report["exit_code"]) == (2, 2)
    assert report["error"].startswith(
        "cannot call a status URL while following batches: status URL "
        "'http://[::1/m2/acme/profile/batchStatus?batchId=acme-"
    )
    assert report["requests"]["submits"] == server.submits
    accepted = {
        seq for seq, (state, _) in _states(tmp_path).items() if state is BatchState.ACCEPTED
    }
    assert len(accepted) == server.submits
    assert report["rows"]["failed"] == 0 and report["errors"] == []
    assert report["rows"]["pending"] == report["rows"]["submitted"] > 0


async def test_lost_connection_after_bodies_went_out_is_exit_3_not_2(
    emulator_factory: EmulatorFactory, tmp_path: Path
) -> None:
    emu: Emulator = await emulator_factory(drop_rate=1.0)  # accepted, then the line drops
    src = write_csv(tmp_path / "in.csv", ["id", "tier"], [[f"D{i}", "x"] for i in range(40)])
    settings = make_settings(emu, batch__max_rows=20, submit__max_attempts=2)
    outcome = await asyncio.wait_for(
        run_pipeline(str(src), settings, tmp_path / "work", job_id="t", install_signals=False),
        PROMPT_S,
    )
    assert outcome.exit_code == 3
    report = read_report(tmp_path / "work")
    assert report["status"] == "incomplete"
    assert report["error"].startswith(f"lost {emu.base_url} after batches went out: ")
    assert report["error"].endswith(
        "they may have been accepted: run the same command again to continue"
    )
    assert "nothing was sent" not in report["error"]
    assert emu.stats()["batches_accepted"] >= 1
