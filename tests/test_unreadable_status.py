"""Status answers that can never be read stop the run (exit 2) instead of idling.

A hostile server of ours (``tests/hostile.py``) accepts every batch, then
answers every status call with a redirect, an HTML maintenance page, a status
word no API has, or HTTP 410. With ``status.max_unreadable = 3`` over
``status.unreadable_for_s = 0.3`` the run stops within seconds: at most one
warning line per batch, one error line, the batches still accepted (not
failed, not resent). A readable answer in between starts the count again.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from tests.hostile import HostileServer
from tests.test_cli_errors import ERROR, uploader
from tests.test_hostile import BATCHES, ROWS, TOKEN, assert_no_secret, clean_exit, run_against
from uploader.journal import Journal
from uploader.states import BatchState

FAST = "max_unreadable = 3\nunreadable_for_s = 0.3\n"
WARNING = re.compile(
    r"WARNING uploader\.poll: status of batch (\d{6}) unreadable: (.*); asking again "
    r"\(the run stops if 3 answers in a row over 0\.3 s are unreadable\)$"
)
STATUS_URL = "status 127.0.0.1/m2/acme/profile/batchStatus"
HINT = (
    "; accepted batches stay accepted (not resent, not failed): run `uploader status w "
    "--refresh` (or the same command) later to follow them, and check --base-url and any "
    "proxy between us and Target if it persists"
)


@pytest.mark.parametrize(
    ("mode", "what"),
    [
        ("status_html", "HTTP 200: status response has no <status>"),
        (
            "status_redirect",
            f"{STATUS_URL}: unexpected HTTP 302 redirect to 'http://127.0.0.2:9/maintenance'; "
            "redirects are not followed so the token never leaves the configured hosts",
        ),
        (
            "status_unknown",
            "HTTP 200: status response has unknown status 'frobnicated' "
            "(known: complete, incomplete, stuck)",
        ),
        ("status_gone", f"{STATUS_URL}: HTTP 410 refused: gone"),
    ],
)
async def test_status_answers_never_readable_stop_the_run_with_exit_2(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path, mode: str, what: str
) -> None:
    server = await hostile(mode)
    r = await run_against(server, tmp_path, config=FAST)
    report = clean_exit(r, 2, tmp_path)

    # One error line, naming the batch, how long, what was wrong and what to do.
    assert r.error_lines() == [f"{ERROR}{report['error']}"]
    match = re.fullmatch(
        r"status answers unreadable while following batches: the status answers of batch "
        r"(\d{6}) stayed unreadable for (\d+) calls in a row over (\d+\.\d) s \(last: (.*)\)"
        + re.escape(HINT),
        report["error"],
    )
    assert match, report["error"]
    seq, calls, span, last = match.groups()
    assert last == what
    assert int(calls) >= 3 and float(span) >= 0.3
    # (the server numbers batches in the order their submits arrived, not by seq)
    assert max(len(t) for t in server.seen.status_times_by_batch.values()) >= int(calls)

    # At most one warning per batch (the first unreadable answer), without the body.
    warned = [m.groups() for line in r.lines if (m := WARNING.search(line))]
    assert {w for _, w in warned} == {what}
    seqs = [s for s, _ in warned]
    assert len(seqs) == len(set(seqs)) and seq in seqs
    assert "maintenance</h1>" not in r.stderr and "<html>" not in r.stderr

    # Target accepted every batch: still accepted, nothing failed or resent.
    assert (report["status"], report["exit_code"], report["stopped_by"]) == (
        "error",
        2,
        "status_unreadable",
    )
    assert report["rows"]["pending"] == ROWS and report["rows"]["failed"] == 0
    assert report["errors"] == [] and report["outputs"]["failed_rows"] is None
    assert server.seen.submits == BATCHES
    with Journal(tmp_path / "w" / "journal.sqlite") as journal:
        assert {(b.state, b.submits) for b in journal.batches()} == {(BatchState.ACCEPTED, 1)}
    # Every answer that came back was unreadable; calls in flight at the stop are cut short.
    answered = sum(len(t) for t in server.seen.status_times_by_batch.values())
    assert 0 <= answered - report["requests"]["status_errors"] <= 4  # status.max_inflight
    assert report["requests"]["status_polls"] == 0

    # `uploader status` tells the same story from the work dir.
    shown = await uploader("status", "w", cwd=tmp_path)
    assert shown.code == 2, shown.stderr
    assert f"error: {report['error']}" in shown.stdout + shown.stderr
    as_json = await uploader("status", "w", "--json", cwd=tmp_path)
    again = json.loads(as_json.stdout)
    assert (again["stopped_by"], again["error"], again["exit_code"]) == (
        "status_unreadable",
        report["error"],
        2,
    )

    # Once the server answers again, the hint works: every batch completes, none is resent.
    server.mode = "ok"
    env = {"TARGET_PROFILE_TOKEN": TOKEN}
    refreshed = await uploader("status", "w", "--refresh", "--json", cwd=tmp_path, env=env)
    after = json.loads(refreshed.stdout)
    assert (refreshed.code, after["status"], after["stopped_by"], after["error"]) == (
        0,
        "complete",
        None,
        None,
    )
    assert after["rows"]["successful"] == ROWS and server.seen.submits == BATCHES
    assert_no_secret(r, tmp_path)


async def test_a_readable_answer_between_unreadable_ones_starts_the_count_again(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    # Calls 1, 2, 4 and 5 of each batch are an HTML page, call 3 is `incomplete`:
    # four unreadable answers, never three in a row, so no stop at a limit of 3.
    server = await hostile("html_twice")
    r = await run_against(server, tmp_path, config="max_unreadable = 3\nunreadable_for_s = 0\n")
    report = clean_exit(r, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS and report["stopped_by"] is None
    assert report["requests"]["status_errors"] == 4 * BATCHES
    assert {len(t) for t in server.seen.status_times_by_batch.values()} == {6}
    warned = [m.group(1) for line in r.lines if (m := WARNING.search(line.replace("0 s", "0.3 s")))]
    assert sorted(warned) == [f"{seq:06d}" for seq in range(1, BATCHES + 1)]
    assert r.error_lines() == []
    assert_no_secret(r, tmp_path)


async def test_unreadable_answers_shorter_than_the_time_bound_do_not_stop_the_run(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    # Four unreadable answers in a row, but over far less than an hour: followed on.
    server = await hostile("html_twice")
    r = await run_against(server, tmp_path, config="max_unreadable = 2\nunreadable_for_s = 3600\n")
    report = clean_exit(r, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS
    assert r.error_lines() == []


async def test_max_unreadable_0_follows_until_the_status_timeout(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("status_html")
    r = await run_against(server, tmp_path, "--status-timeout", "1", config="max_unreadable = 0\n")
    report = clean_exit(r, 3, tmp_path)
    assert report["status"] == "incomplete" and report["rows"]["pending"] == ROWS
    assert report["error"].startswith(
        f"the status of {BATCHES} accepted batches could not be read until the status timeout "
        "(batch 000001: ProtocolError: status response has no <status>; body starts: "
    )
    assert "until the status timeout (1 s)" in r.stderr


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("max_unreadable = -1", "status.max_unreadable must be 0 or more; got -1"),
        ("unreadable_for_s = -5.0", "status.unreadable_for_s must be 0 or more; got -5.0"),
    ],
)
async def test_bad_unreadable_settings_are_one_line_and_exit_2(
    tmp_path: Path, line: str, message: str
) -> None:
    (tmp_path / "export.csv").write_text("thirdPartyId,tier\nC1,gold\n")
    (tmp_path / "c.toml").write_text(f"[status]\n{line}\n")
    r = await uploader(
        "run", "export.csv", "--client", "acme", "--base-url", "http://127.0.0.1:9",
        "--config", "c.toml", "--work-dir", "w", cwd=tmp_path,
    )  # fmt: skip
    assert (r.code, r.lines) == (2, [f"{ERROR}c.toml: {message}"])
    assert not (tmp_path / "w").exists()
