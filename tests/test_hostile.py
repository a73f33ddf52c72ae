"""Whole runs against a hostile server (``tests/hostile.py``), one mode per case.

Each test runs the real command line in a subprocess with fast settings and
a 300-character token, then checks: the exit code, no traceback, the exact
accounting of report.json, the warnings, and that no 8-character piece of
the token is in stdout, stderr or any file the run wrote (journal included).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from tests.hostile import EXTRA_ERRORS, PASSWORD, HostileServer
from tests.test_cli_errors import Result, assert_one_error_line, uploader
from uploader.journal import PROFILE_ERRORS_PER_STEP, Journal
from uploader.states import BatchState

TOKEN = "".join(f"{i:03d}-secret-" for i in range(30))[:300]
ROWS, PER_BATCH = 30, 10
BATCHES = ROWS // PER_BATCH

CONFIG = """
[status]
poll_initial_s = 0.02
poll_max_s = 0.4
[submit]
backoff_initial_s = 0.005
backoff_max_s = 0.05
max_attempts = 2
request_timeout_s = 30
"""


async def run_against(
    server: HostileServer,
    tmp_path: Path,
    *extra: str,
    env: dict[str, str] | None = None,
    config: str = "",
) -> Result:
    with (tmp_path / "export.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["thirdPartyId", "tier"])
        writer.writerows([f"C{i:03d}", "gold"] for i in range(ROWS))
    (tmp_path / "fast.toml").write_text(CONFIG.replace("[status]\n", f"[status]\n{config}"))
    return await uploader(
        "-v",
        "run",
        "export.csv",
        "--client",
        "acme",
        "--base-url",
        server.base_url,
        "--config",
        "fast.toml",
        "--max-batch-rows",
        str(PER_BATCH),
        "--work-dir",
        "w",
        "--junit",
        "w/junit.xml",
        "--progress",
        "log",
        *extra,
        cwd=tmp_path,
        env={"TARGET_PROFILE_TOKEN": TOKEN, **(env or {})},
    )


def assert_no_secret(r: Result, root: Path, secret: str = TOKEN) -> None:
    """No 8-character window of ``secret`` in the outputs or in any file under ``root``."""
    texts = {"stdout": r.stdout, "stderr": r.stderr}
    for path in root.rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("latin-1")
    windows = {secret[i : i + 8] for i in range(len(secret) - 7)}
    for name, text in texts.items():
        leaked = [w for w in windows if w in text]
        assert not leaked, f"{name} holds a piece of the secret: {leaked[:3]}"


def clean_exit(r: Result, code: int, tmp_path: Path) -> dict[str, Any]:
    assert "Traceback" not in r.stderr, r.stderr
    assert r.code == code, r.stderr
    report: dict[str, Any] = json.loads((tmp_path / "w" / "report.json").read_text())
    rows = report["rows"]
    assert rows["read"] == ROWS and rows["rejected"] == 0 and rows["submitted"] == ROWS
    assert rows["successful"] + rows["failed"] + rows["not_found"] + rows["pending"] == ROWS
    return report


async def test_element_flood_is_refused_and_the_run_completes(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("flood")
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS
    assert report["requests"]["status_errors"] == 1
    assert "more than 2,001,000 elements" in r.stderr
    assert_no_secret(r, tmp_path)


async def test_deep_nesting_is_refused_and_the_run_completes(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("deep")
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS
    assert "nested deeper than 8 levels" in r.stderr
    assert_no_secret(r, tmp_path)


async def test_401_echoing_the_token_leaves_no_piece_of_it(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("echo401")
    r = await run_against(server, tmp_path)
    assert "Traceback" not in r.stderr
    assert r.code == 2
    assert server.seen.auth == {f"Bearer {TOKEN}"}
    errors = [line for line in r.stderr.splitlines() if line.startswith("uploader: error:")]
    assert (
        len(errors) == 1
        and "HTTP 401" in errors[0]
        and "Authorization: Bearer [token]" in errors[0]
    )
    assert "check the Bearer token in environment variable TARGET_PROFILE_TOKEN" in errors[0]
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["status"] == "error" and "[token]" in report["error"]
    assert_no_secret(r, tmp_path)


async def test_413_quoting_the_token_leaves_no_piece_of_it(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("echo413")
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 1, tmp_path)
    assert report["rows"]["failed"] == ROWS
    assert len(report["errors"]) == BATCHES
    assert all("HTTP 413" in e["error"] and "[token]" in e["error"] for e in report["errors"])
    assert_no_secret(r, tmp_path)


async def test_status_error_echoing_the_token_leaves_no_piece_of_it(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("echo_status")
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS
    assert "HTTP 500 server error: upstream said no to Bearer [token]" in r.stderr
    assert_no_secret(r, tmp_path)


async def test_status_url_with_credentials_is_never_called(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("userinfo")
    r = await run_against(server, tmp_path, "--status-timeout", "3")
    assert r.code == 2  # every call would be refused: the run stops at once, batches accepted
    assert "Traceback" not in r.stderr
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["rows"]["failed"] == 0
    assert report["error"].startswith("cannot call a status URL while following batches: ")
    assert 1 <= server.seen.submits <= BATCHES
    assert server.seen.status_calls == 0
    assert report["rows"]["successful"] == 0
    assert "carries credentials" in r.stderr
    assert_no_secret(r, tmp_path)
    assert_no_secret(r, tmp_path, PASSWORD)


@pytest.mark.parametrize(
    ("mode", "why"),
    [
        ("bad_status_url", "status URL 'http://[::1:"),
        ("no_status_url", "the submit answer named no status URL (no <batchStatus>)"),
    ],
)
async def test_accepted_batch_with_an_unusable_status_url_stays_accepted(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path, mode: str, why: str
) -> None:
    """success=true is accepted, whatever the status URL: never failed, never resent."""
    server = await hostile(mode)
    r = await run_against(server, tmp_path)
    assert "Traceback" not in r.stderr
    assert r.code == 2, r.stderr
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    accepted = _accepted(tmp_path)
    assert len(accepted) == server.seen.submits and 1 <= len(accepted) <= BATCHES
    assert report["error"].startswith(f"cannot call a status URL while following batches: {why}")
    assert report["error"].endswith(
        "; accepted batches stay accepted and the same command follows them again once this "
        "is fixed"
    )
    rows = report["rows"]
    assert (rows["successful"], rows["failed"], rows["not_found"]) == (0, 0, 0)
    assert rows["pending"] == rows["submitted"] >= PER_BATCH * len(accepted)
    assert report["batches"]["failed"] == 0 and report["errors"] == []
    assert report["batches"]["incomplete"] == report["batches"]["total"]
    assert report["outputs"]["failed_rows"] is None
    assert not (tmp_path / "w" / "failed.csv").exists()
    assert server.seen.status_calls == 0
    assert "status_errors" not in report["requests"]  # never called, so no failed call

    # `status` tells the same story: the same rows, the same error, the same exit code.
    s = await uploader("status", "w", "--json", cwd=tmp_path)
    shown = json.loads(s.stdout)
    assert s.code == 2 and shown["exit_code"] == 2
    assert (shown["rows"], shown["error"]) == (rows, report["error"])

    # A rerun never sends an accepted batch again: it stops on the same URL.
    r = await run_against(server, tmp_path)
    assert r.code == 2 and "Traceback" not in r.stderr
    assert _accepted(tmp_path) >= accepted
    assert server.seen.submits == len(_accepted(tmp_path))
    assert_no_secret(r, tmp_path)


async def test_verify_redacts_a_token_echoed_in_profile_values(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("echo_profile")
    r = await run_against(server, tmp_path)
    clean_exit(r, 0, tmp_path)
    v = await uploader(
        "verify",
        "w",
        "--all",
        "--settle",
        "0",
        "--progress",
        "log",
        cwd=tmp_path,
        env={"TARGET_PROFILE_TOKEN": TOKEN},
    )
    assert "Traceback" not in v.stderr
    assert v.code == 1, v.stderr  # every profile holds another value than the export's
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert (report["verify"]["checked"], report["verify"]["wrong"]) == (ROWS, ROWS)
    with (tmp_path / "w" / "verify.csv").open(newline="") as fh:
        lines = list(csv.reader(fh))
    assert lines[0] == ["id", "attribute", "expected", "found", "modifiedAt", "outcome"]
    assert lines[1:] == [
        [f"C{i:03d}", "tier", "gold", "gold, said Bearer [token]", "[token]", "wrong"]
        for i in range(ROWS)
    ]
    assert_no_secret(v, tmp_path)


# Loaded by the uploader subprocess at startup: a journal write that fails while the
# submit worker handles an error, so the run ends with an internal error whose
# traceback chains the client's error and, under it, aiohttp's own.
CRASH_WHILE_HANDLING = """
from uploader.journal import PROFILE_ERRORS_PER_STEP, Journal

_real = Journal.record_attempt


def record_attempt(self, seq, error, **kwargs):
    if error is not None:
        raise RuntimeError("injected: the journal write failed")
    return _real(self, seq, error, **kwargs)


Journal.record_attempt = record_attempt
"""


@pytest.mark.parametrize("log_format", ["text", "json"])
async def test_debug_tracebacks_leave_no_piece_of_the_token(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path, log_format: str
) -> None:
    """aiohttp's error quotes the bad header line, which echoes our Authorization header."""
    server = await hostile("garbled")
    inject = tmp_path / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(CRASH_WHILE_HANDLING)
    path = os.pathsep.join(p for p in (str(inject), os.environ.get("PYTHONPATH")) if p)
    r = await run_against(
        server, tmp_path, "--debug", "--log-format", log_format, env={"PYTHONPATH": path}
    )
    assert r.code == 4, r.stderr
    assert server.seen.auth == {f"Bearer {TOKEN}"}
    # The whole chain is printed: our error, the cause aiohttp raised, the failure on top.
    for part in ("Traceback", "ClientResponseError", "OutcomeUnknownError", "injected"):
        assert part in r.stderr, part
    assert "Bearer [token]" in r.stderr
    assert_no_secret(r, tmp_path)


async def test_listed_profile_errors_are_journaled_whole_and_once(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    """Thousands of listed errors per answer go to the journal in several commits."""
    server = await hostile("listed_errors")
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 1, tmp_path)
    assert (report["rows"]["successful"], report["rows"]["failed"]) == (ROWS // 2, ROWS // 2)
    with Journal(tmp_path / "w" / "journal.sqlite") as journal:
        for seq in range(1, BATCHES + 1):
            errors = journal.profile_errors(seq)
            assert len(errors) == PER_BATCH // 2 + EXTRA_ERRORS > PROFILE_ERRORS_PER_STEP
            assert len({pid for _, pid, _, _ in errors}) == len(errors)  # each once
            first = PER_BATCH * (seq - 1)
            assert errors[0] == (
                seq,
                f"C{first:03d}",
                "error",
                f"no C{first:03d}; you sent Bearer [token]",
            )
    with (tmp_path / "w" / "failed.csv").open(newline="") as fh:
        assert list(csv.reader(fh)) == [
            ["thirdPartyId", "tier"],
            *([f"C{i:03d}", "gold"] for i in range(0, ROWS, 2)),
        ]
    assert_no_secret(r, tmp_path)


async def test_rows_listed_as_errors_are_failed_though_the_counts_say_successful(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    """report.json, status and failed.csv agree on rows the counts forgot."""
    server = await hostile("uncounted_errors")
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 1, tmp_path)
    assert report["status"] == "partial"
    assert (report["rows"]["successful"], report["rows"]["failed"]) == (ROWS // 2, ROWS // 2)
    assert report["warnings"] == [
        f"{ROWS // 2} rows listed by the server with status error beyond its failedUpdates: "
        "counted failed (they are in failed.csv)"
    ]
    with (tmp_path / "w" / "failed.csv").open(newline="") as fh:
        assert list(csv.reader(fh)) == [
            ["thirdPartyId", "tier"],
            *([f"C{i:03d}", "gold"] for i in range(0, ROWS, 2)),
        ]
    status = await uploader("status", "w", "--json", cwd=tmp_path)
    shown = json.loads(status.stdout)
    assert (status.code, shown["rows"], shown["warnings"]) == (
        1,
        report["rows"],
        report["warnings"],
    )


async def test_an_id_on_two_rows_listed_as_error_fails_both_rows(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    """With --unique-ids a repeated id stays on two rows of one batch, and Target lists
    the id once: which row failed cannot be told, so both are in failed.csv and both
    count failed, in report.json and in status alike."""
    server = await hostile("uncounted_errors")
    rows = [["C000", "gold"], ["C000", "silver"], *([f"C{i:03d}", "gold"] for i in range(2, 10))]
    with (tmp_path / "export.csv").open("w", newline="") as fh:
        csv.writer(fh).writerows([["thirdPartyId", "tier"], *rows])
    (tmp_path / "fast.toml").write_text(CONFIG)
    r = await uploader(
        "run", "export.csv", "--client", "acme", "--base-url", server.base_url,
        "--config", "fast.toml", "--unique-ids", "--work-dir", "w", "--progress", "none",
        cwd=tmp_path, env={"TARGET_PROFILE_TOKEN": TOKEN},
    )  # fmt: skip
    assert r.code == 1, r.stderr
    # The server lists the ids at positions 0, 2, 4, 6 and 8: C000 (on rows 0 and 1) once.
    with (tmp_path / "w" / "failed.csv").open(newline="") as fh:
        assert list(csv.reader(fh)) == [
            ["thirdPartyId", "tier"],
            ["C000", "gold"],
            ["C000", "silver"],
            *([f"C{i:03d}", "gold"] for i in (2, 4, 6, 8)),
        ]
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    rows_ = report["rows"]
    assert (rows_["submitted"], rows_["successful"], rows_["failed"]) == (10, 4, 6)
    assert report["warnings"][-1] == (
        "6 rows listed by the server with status error beyond its failedUpdates: "
        "counted failed (they are in failed.csv)"
    )
    status = await uploader("status", "w", "--json", cwd=tmp_path)
    assert (status.code, json.loads(status.stdout)["rows"]) == (1, rows_)


def _accepted(tmp_path: Path) -> set[int]:
    with Journal(tmp_path / "w" / "journal.sqlite") as journal:
        batches = journal.batches()
    assert {b.state for b in batches} <= {BatchState.ACCEPTED, BatchState.WRITTEN}
    return {b.seq for b in batches if b.state is BatchState.ACCEPTED}


async def test_same_batch_id_for_two_batches_is_a_warning(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("same_id")
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS
    assert report["warnings"] == [
        "server returned the same batch id 'H-SAME' for 3 different batches (1, 2, 3): "
        "their statuses cannot be told apart"
    ]
    assert "warning   server returned the same batch id 'H-SAME'" in r.stderr
    assert_no_secret(r, tmp_path)


async def test_status_naming_another_batch_is_ignored_and_flagged(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("wrong_id")
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS
    assert report["requests"]["status_wrong_batch"] == 1
    assert report["warnings"] == [
        "1 status answers named another batch than the one asked for: they were ignored"
    ]
    assert "warning   1 status answers named another batch" in r.stderr
    assert_no_secret(r, tmp_path)


async def test_more_successful_updates_than_rows_is_a_warning(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("overcount")
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS
    assert report["duplicates"]["server_overcounted_rows"] == 5 * BATCHES
    assert report["warnings"] == [
        f"batch {seq}: server reported 15 successful updates for a batch of 10 rows"
        for seq in range(1, BATCHES + 1)
    ]
    assert_no_secret(r, tmp_path)


async def test_counts_that_add_up_to_more_than_the_batch_are_a_warning(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("overfailed")  # 10 successful and 5 failed, of 10 rows
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 1, tmp_path)
    assert report["rows"]["successful"] == 5 * BATCHES
    assert report["rows"]["failed"] == 5 * BATCHES
    warnings = [
        f"batch {seq}: server counts add up to 15 (10 successful, 5 failed, 0 not found) for "
        "a batch of 10 rows: its failed and not found counts were taken"
        for seq in range(1, BATCHES + 1)
    ]
    assert report["warnings"] == warnings
    assert f"warning   {warnings[0]}" in r.stderr.splitlines()
    assert_no_secret(r, tmp_path)


async def test_retry_after_on_status_holds_back_every_call_to_that_host(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("retry_after", hold_s=1.0)
    r = await run_against(server, tmp_path)
    report = clean_exit(r, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS
    assert report["requests"]["status_throttled"] == server.seen.throttled
    # Retry-After is capped at status.poll_max_s (0.4 s): the server's 1 s hold sees a
    # few rounds of at most one call per batch, not a call every 20 ms per batch.
    assert 1 <= server.seen.throttled <= 4 * BATCHES
    times = server.seen.status_times
    gaps = [b - a for a, b in itertools.pairwise(times) if b - a > 0.2]
    assert len(gaps) >= 2  # at least two held-back pauses of ~0.4 s
    assert_no_secret(r, tmp_path)


async def test_a_batch_that_never_moves_on_is_asked_less_and_less_often(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    """Every row consumed, status incomplete forever: no progress to estimate an end
    from, so the calls back off with the batch's age up to status.poll_max_s (0.4 s),
    not every poll_initial_s (20 ms) until the status timeout."""
    server = await hostile("stalled")
    r = await run_against(server, tmp_path, "--status-timeout", "3")
    report = clean_exit(r, 3, tmp_path)
    assert report["rows"]["pending"] == ROWS
    assert report["stopped_by"] == "status_timeout"
    assert sorted(server.seen.status_times_by_batch) == [str(n) for n in range(1, BATCHES + 1)]
    for times in server.seen.status_times_by_batch.values():
        # Followed for 2 s, a batch is asked every 0.4 s +-20 %, never sooner.
        late = [b - a for a, b in itertools.pairwise(times) if a - times[0] >= 2.0]
        assert late and min(late) >= 0.4 * 0.8 - 0.01, late
        assert len(times) <= 40, len(times)
    assert_no_secret(r, tmp_path)


async def test_base_url_with_credentials_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "export.csv").write_text("thirdPartyId,tier\nC1,gold\n")
    r = await uploader(
        "run",
        "export.csv",
        "--client",
        "acme",
        "--base-url",
        f"http://bob:{PASSWORD}@127.0.0.1:9",
        "--work-dir",
        "w",
        cwd=tmp_path,
    )
    assert_one_error_line(r, 2, "target.base_url must not hold credentials")
    assert_no_secret(r, tmp_path, PASSWORD)


async def test_a_run_of_server_errors_stops_the_run_and_keeps_the_batches(
    hostile: Callable[..., Awaitable[HostileServer]], tmp_path: Path
) -> None:
    server = await hostile("error500")
    r = await run_against(server, tmp_path, "--stop-after-errors", "3", "--max-attempts", "8")
    assert "Traceback" not in r.stderr and r.code == 3, r.stderr
    report = json.loads((tmp_path / "w" / "report.json").read_text())
    assert report["status"] == "incomplete"
    # The run stopped before it read everything; nothing it read was lost or failed.
    rows = report["rows"]
    assert rows["pending"] == rows["read"] - rows["rejected"] and rows["failed"] == 0
    assert rows["successful"] == rows["not_found"] == 0
    assert report["error"].startswith(
        "stopped: 3 submit attempts in a row failed (submit.stop_after_errors = 3; the last: "
        "ServerError: submit 127.0.0.1/m2/"
    )
    assert "HTTP 500" in report["error"], report["error"]
    assert report["error"].endswith(
        "the batches not accepted stay to be sent: run the same command again to continue"
    )
    assert report["requests"]["submits"] == server.seen.submits

    failed_submits = server.seen.submits
    server.mode = "ok"  # the server is back: the same command continues
    again = await run_against(server, tmp_path)
    report = clean_exit(again, 0, tmp_path)
    assert report["rows"]["successful"] == ROWS
    assert server.seen.submits - failed_submits == BATCHES
    assert_no_secret(again, tmp_path)
