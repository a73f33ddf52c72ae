"""A host that cannot be reached is one warning line (and one when it answers again).

Runs of the real command line without ``-v`` against a closed port of
127.0.0.1 and against the hostile server hanging up, checking stderr line by
line: the first transport failure of submits or status calls names the host,
the error and the plan, the attempts after it print nothing, and the first
answer after it says so. Unit tests of ``OutageNotices`` drive its clock.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from tests.hostile import HostileServer, closed_port
from tests.test_cli_errors import Result, uploader
from uploader.errors import TransportError
from uploader.outages import OutageNotices

TOKEN = "tok-" + "q7" * 20
STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
FAST = """
[status]
poll_initial_s = 0.05
poll_max_s = 0.2
[submit]
backoff_initial_s = 0.05
backoff_max_s = 0.1
max_attempts = {attempts}
"""


async def _run(tmp_path: Path, base_url: str, *flags: str, attempts: int = 4) -> Result:
    (tmp_path / "export.csv").write_text("thirdPartyId,tier\nC1,gold\nC2,silver\n")
    (tmp_path / "fast.toml").write_text(FAST.format(attempts=attempts))
    r = await uploader(
        "run", "export.csv", "--client", "acme", "--base-url", base_url,
        "--config", "fast.toml", "--work-dir", "w", "--progress", "none", *flags,
        cwd=tmp_path, env={"TARGET_PROFILE_TOKEN": TOKEN},
    )  # fmt: skip
    assert "Traceback" not in r.stderr and TOKEN[4:12] not in r.stderr, r.stderr
    return r


def _lines(r: Result) -> list[str]:
    """stderr without the time stamps of log lines."""
    return [STAMP.sub("", line) for line in r.stderr.splitlines()]


def _warnings(r: Result) -> list[str]:
    """The log lines of stderr (the run's summary follows them)."""
    return [line for line in _lines(r) if line.startswith(("WARNING ", "ERROR ", "INFO "))]


async def test_a_closed_port_is_one_warning_naming_the_host_and_the_error(
    tmp_path: Path,
) -> None:
    port = closed_port()
    r = await _run(tmp_path, f"http://127.0.0.1:{port}", attempts=4)
    assert r.code == 2, r.stderr
    lines = _lines(r)
    assert lines[0] == (
        f"WARNING uploader.submit: submit 127.0.0.1:{port}: cannot connect (Connection refused); "
        "retrying each batch up to 4 attempts (backoff waits at most 0.25 s in all), then the "
        "run stops and keeps the batch for the next run; -v logs each attempt"
    )
    assert len(lines) == 2  # nothing per attempt; then the error that ends the run
    assert lines[1].startswith(
        f"uploader: error: cannot reach http://127.0.0.1:{port}: submit 127.0.0.1:{port}: "
        "cannot connect: "
    )


async def test_json_log_lines_carry_the_host_and_the_error(tmp_path: Path) -> None:
    port = closed_port()
    r = await _run(tmp_path, f"http://127.0.0.1:{port}", "--log-format", "json", attempts=2)
    assert r.code == 2, r.stderr
    first = json.loads(r.stderr.splitlines()[0])
    assert (first["level"], first["event"], first["logger"]) == (
        "warning",
        "unreachable",
        "uploader.submit",
    )
    assert (first["host"], first["error"]) == (
        f"127.0.0.1:{port}",
        "cannot connect (Connection refused)",
    )
    assert first["message"].startswith(f"submit 127.0.0.1:{port}: cannot connect (Connection")


async def test_status_calls_to_a_closed_port_warn_once(tmp_path: Path) -> None:
    port = closed_port()
    server = HostileServer("ok", status_port=port)
    await server.start()
    try:
        r = await _run(tmp_path, server.base_url, "--status-timeout", "1.5")
    finally:
        await server.close()
    assert r.code == 3, r.stderr
    assert server.seen.submits == 1
    assert _warnings(r) == [
        f"WARNING uploader.poll: status 127.0.0.1:{port}: cannot connect (Connection refused); "
        "asking again every 0.05-0.2 s until the batch is final or the status timeout (1.5 s) "
        "ends the run; -v logs each attempt"
    ]
    assert _lines(r)[-1].startswith(
        "uploader: error: the status of 1 accepted batches could not be read until the status "
        f"timeout (batch 000001: TransportError: status 127.0.0.1:{port}: cannot connect: "
    )


async def test_submits_hung_up_on_warn_once_and_say_when_they_get_through(
    tmp_path: Path,
) -> None:
    server = HostileServer("hangup", hold_s=1.0)
    await server.start()
    where = f"submit 127.0.0.1:{server.base_url.rsplit(':', 1)[1]}"
    try:
        r = await _run(tmp_path, server.base_url, attempts=60)
    finally:
        await server.close()
    assert r.code == 0, r.stderr
    lines = _warnings(r)
    assert lines[0] == (
        f"WARNING uploader.submit: {where}: no complete answer (server disconnected); retrying "
        "each batch up to 60 attempts (backoff waits at most 5.85 s in all), then the run stops "
        "and keeps the batch for the next run; -v logs each attempt"
    )
    failed = server.seen.submits - 1
    assert failed >= 2
    assert len(lines) == 2, lines
    assert re.fullmatch(
        rf"WARNING uploader\.submit: {where}: answering again after \d+ s \(failed attempts: "
        rf"{failed}, no complete answer \(server disconnected\)\)",
        lines[1],
    ), lines[1]


async def test_status_calls_hung_up_on_warn_once_and_say_when_they_get_through(
    tmp_path: Path,
) -> None:
    server = HostileServer("status_hangup", hold_s=0.6)
    await server.start()
    where = f"status 127.0.0.1:{server.base_url.rsplit(':', 1)[1]}"
    try:
        r = await _run(tmp_path, server.base_url)
    finally:
        await server.close()
    assert r.code == 0, r.stderr
    lines = _warnings(r)
    assert len(lines) == 2, lines
    assert lines[0] == (
        f"WARNING uploader.poll: {where}: no complete answer (server disconnected); asking "
        "again every 0.05-0.2 s until the batch is final or the status timeout (86400 s) ends "
        "the run; -v logs each attempt"
    )
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    failed = report["requests"]["status_errors"]  # aiohttp may itself resend a GET hung up on
    assert failed >= 2
    assert re.fullmatch(
        rf"WARNING uploader\.poll: {where}: answering again after \d+ s \(failed attempts: "
        rf"{failed}, no complete answer \(server disconnected\)\)",
        lines[1],
    ), lines[1]


# -- OutageNotices, on a clock of our own ----------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _error(reason: str) -> TransportError:
    return TransportError("x", action="submit", host="h:1", reason=reason)


def test_one_line_a_minute_per_kind_of_failure(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    notices = OutageNotices(logging.getLogger("t"), "the plan", clock=clock)
    caplog.set_level(logging.WARNING, "t")
    refused = _error("cannot connect (Connection refused)")
    for _ in range(30):  # 30 attempts in 59 s
        notices.failed("k", refused)
        clock.now += 59 / 30
    clock.now += 2
    notices.failed("k", refused)  # 61 s after the first line: a reminder
    notices.failed("k", _error("cannot connect (timed out)"))  # another kind: a new first line
    notices.succeeded("k")
    notices.succeeded("k")  # nothing more to say
    assert [r.getMessage() for r in caplog.records] == [
        "submit h:1: cannot connect (Connection refused); the plan",
        "submit h:1: still cannot connect (Connection refused) after 61 s (failed attempts: 31)",
        "submit h:1: cannot connect (timed out); the plan",
        "submit h:1: answering again after 0 s (failed attempts: 1, cannot connect (timed out))",
    ]
    assert [r.levelname for r in caplog.records] == ["WARNING"] * 4


def test_a_flaky_host_costs_two_lines_a_minute(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    notices = OutageNotices(logging.getLogger("t"), "the plan", clock=clock)
    caplog.set_level(logging.WARNING, "t")
    dropped = _error("no complete answer (server disconnected)")
    for _ in range(12):  # one call in two dropped, every 10 s, for two minutes
        notices.failed("k", dropped)
        notices.succeeded("k")
        clock.now += 10
    assert [r.getMessage() for r in caplog.records] == [
        "submit h:1: no complete answer (server disconnected); the plan",
        "submit h:1: answering again after 0 s (failed attempts: 1, no complete answer (server "
        "disconnected))",
    ] * 2
