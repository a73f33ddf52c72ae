"""Every submitted row lands in exactly one bucket, and the written files say so exactly."""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from uploader.journal import BatchRecord
from uploader.report import (
    FailedRows,
    RowCounts,
    account_rows,
    build_report,
    exit_code,
    render_summary,
    write_failed_csv,
    write_junit,
    write_report,
)
from uploader.states import BatchState

S = BatchState


def rec(seq: int, state: BatchState, rows: int = 10, **kw: Any) -> BatchRecord:
    values: dict[str, Any] = {
        "seq": seq,
        "file": f"/w/batches/batch-{seq:06d}.txt",
        "rows": rows,
        "bytes": 100 * rows,
        "first_line": 2 + 10 * (seq - 1),
        "last_line": 1 + 10 * seq,
        "sha256": "x",
        "state": state,
        "batch_id": None,
        "status_url": None,
        "attempts": 0,
        "submits": 0,
        "outcome_unknown": 0,
        "last_error": None,
        "remote_status": None,
        "batch_size": None,
        "consumed": None,
        "successful": None,
        "not_found": None,
        "failed": None,
        "submitted_at": None,
        "accepted_at": None,
        "final_at": None,
    }
    if state is S.COMPLETE:
        values.update(batch_id=f"b-{seq}", attempts=1, submits=1)
        values.update(submitted_at=100.0, accepted_at=101.0, final_at=102.5)
    values.update(kw)
    return BatchRecord(**values)


def counts(*batches: BatchRecord, rejected: int = 0) -> RowCounts:
    read = rejected + sum(b.rows for b in batches)
    return account_rows(batches, rows_read=read, rejected=rejected)


def buckets(c: RowCounts) -> tuple[int, int, int, int]:
    return (c.successful, c.failed, c.not_found, c.pending)


# -- accounting -------------------------------------------------------------------------


def test_complete_with_full_counts() -> None:
    c = counts(rec(1, S.COMPLETE, successful=7, failed=2, not_found=1))
    assert buckets(c) == (7, 2, 1, 0)
    assert (c.read, c.submitted, c.unaccounted, c.overcounted) == (10, 10, 0, 0)


def test_short_server_counts_count_the_rest_failed_and_note_it() -> None:
    c = counts(rec(1, S.COMPLETE, rows=1000, successful=990, failed=5, not_found=1))
    assert buckets(c) == (990, 9, 1, 0)
    assert c.unaccounted == 4


def test_missing_counts_mean_all_successful() -> None:
    assert buckets(counts(rec(1, S.COMPLETE))) == (10, 0, 0, 0)
    assert buckets(counts(rec(1, S.COMPLETE, failed=3))) == (7, 3, 0, 0)


def test_overcounted_duplicates_count_each_row_once() -> None:
    c = counts(rec(1, S.COMPLETE, successful=12, failed=1, not_found=0))
    assert buckets(c) == (9, 1, 0, 0)
    assert c.overcounted == 3
    absurd = counts(rec(1, S.COMPLETE, successful=0, failed=25, not_found=25))
    assert buckets(absurd) == (0, 10, 0, 0)


def test_failed_and_stuck_batches_are_all_failed_others_pending() -> None:
    c = counts(
        rec(1, S.FAILED, rows=7),
        rec(2, S.STUCK, rows=5),
        rec(3, S.WRITTEN, rows=4),
        rec(4, S.SUBMITTING, rows=3),
        rec(5, S.ACCEPTED, rows=2),
        rejected=6,
    )
    assert buckets(c) == (0, 12, 0, 9)
    assert (c.read, c.rejected, c.submitted) == (27, 6, 21)


def test_rows_listed_as_errors_are_failed_whatever_the_counts_say() -> None:
    def listed(b: BatchRecord, n: int) -> RowCounts:
        return account_rows([b], rows_read=b.rows, rejected=0, listed_failed={b.seq: n})

    # The counts call every row successful, but the server listed 3 with status error.
    c = listed(rec(1, S.COMPLETE, successful=10, failed=0, not_found=0), 3)
    assert buckets(c) == (7, 3, 0, 0)
    assert (c.listed_beyond, c.unaccounted, c.overcounted) == (3, 0, 0)
    # Counts that agree with the list change nothing, nor does a list shorter than them.
    for n in (2, 1):
        c = listed(rec(1, S.COMPLETE, successful=8, failed=2, not_found=0), n)
        assert (buckets(c), c.listed_beyond) == ((8, 2, 0, 0), 0)
    # No counts at all: the listed rows are the failed ones.
    c = listed(rec(1, S.COMPLETE), 4)
    assert (buckets(c), c.listed_beyond) == ((6, 4, 0, 0), 4)
    # Short counts: the listed rows first, then the rest of the shortfall.
    c = listed(rec(1, S.COMPLETE, successful=6, failed=1, not_found=0), 2)
    assert buckets(c) == (6, 4, 0, 0)
    assert (c.listed_beyond, c.unaccounted) == (1, 2)
    report = build_report(
        job_id="j",
        batches=[rec(1, S.COMPLETE, successful=10, failed=0, not_found=0)],
        counters={},
        rows_read=10,
        rejected_by_reason={},
        chunking_done=True,
        elapsed_s=1.0,
        outputs={},
        interrupted=False,
        listed_failed={1: 3},
    )
    assert (report["rows"]["successful"], report["rows"]["failed"]) == (7, 3)
    assert "listed_beyond" not in report["rows"]
    assert report["warnings"] == [
        "3 rows listed by the server with status error beyond its failedUpdates: counted "
        "failed (they are in failed.csv)"
    ]
    assert report["status"] == "partial"


def test_v1_not_found_rows() -> None:
    c = counts(rec(1, S.COMPLETE, successful=4, failed=0, not_found=6))
    assert buckets(c) == (4, 0, 6, 0)


_counts = st.one_of(st.none(), st.integers(min_value=0, max_value=60))


@st.composite
def records(draw: st.DrawFn) -> list[BatchRecord]:
    n = draw(st.integers(min_value=0, max_value=8))
    return [
        rec(
            seq,
            draw(st.sampled_from(list(BatchState))),
            rows=draw(st.integers(min_value=1, max_value=50)),
            successful=draw(_counts),
            failed=draw(_counts),
            not_found=draw(_counts),
        )
        for seq in range(1, n + 1)
    ]


@given(records(), st.integers(min_value=0, max_value=100))
def test_every_row_is_in_exactly_one_bucket(batches: list[BatchRecord], rejected: int) -> None:
    c = counts(*batches, rejected=rejected)
    assert c.read == c.rejected + c.submitted
    assert c.submitted == c.successful + c.failed + c.not_found + c.pending
    assert min(c.successful, c.failed, c.not_found, c.pending, c.unaccounted) >= 0
    for b in batches:
        alone = counts(b)
        if b.state is S.COMPLETE and b.successful is not None:
            reported = b.successful + (b.failed or 0) + (b.not_found or 0)
            assert alone.unaccounted == max(b.rows - reported, 0)


# -- report and status ------------------------------------------------------------------


def report_for(batches: list[BatchRecord], **kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "job_id": "job-1",
        "batches": batches,
        "counters": {
            "submits": 3,
            "retries": 1,
            "status_polls": 9,
            "outcome_unknown": 1,
            "bytes_sent": 3200,
        },
        "rows_read": sum(b.rows for b in batches),
        "rejected_by_reason": {},
        "chunking_done": True,
        "elapsed_s": 4.0,
        "outputs": {"journal": "/w/journal.db"},
        "interrupted": False,
        "finished_at": 1_700_000_000.0,
    }
    args.update(kw)
    return build_report(**args)


def test_report_has_spec_keys_with_exact_values() -> None:
    batches = [
        rec(1, S.COMPLETE, successful=10, failed=0, not_found=0, attempts=2, outcome_unknown=1),
        rec(2, S.COMPLETE, rows=6, successful=6, submits=2, attempts=2),
    ]
    r = report_for(
        batches,
        rows_read=18,
        rejected_by_reason={"missing_id": 2},
        settings_summary={"client": "demo", "api": "v2", "target": {"token": "secret"}},
        outputs={"journal": "/w/journal.db", "rejects": "/w/rejects.csv"},
    )
    assert r["job_id"] == "job-1"
    assert r["status"] == "partial"
    assert r["rows"] == {
        "read": 18,
        "rejected": 2,
        "folded": 0,
        "submitted": 16,
        "successful": 16,
        "failed": 0,
        "not_found": 0,
        "pending": 0,
    }
    assert r["batches"] == {
        "total": 2,
        "complete": 2,
        "incomplete": 0,
        "stuck": 0,
        "failed": 0,
        "resubmitted": 1,
    }
    assert r["requests"] == {
        "submits": 3,
        "retries": 1,
        "throttled": 0,
        "status_polls": 9,
        "outcome_unknown": 1,
    }
    assert r["bytes_submitted"] == 1000 * 2 + 600 * 2
    assert (r["elapsed_s"], r["rows_per_s"]) == (4.0, 4.0)
    assert r["outputs"] == {
        "rejects": "/w/rejects.csv",
        "failed_rows": None,
        "journal": "/w/journal.db",
    }
    assert r["duplicates"] == {
        "resent_batches": 2,
        "outcome_unknown_attempts": 1,
        "possible_duplicate_rows": 16,
        "server_overcounted_rows": 0,
        "server_unaccounted_rows": 0,
    }
    assert r["rejected_by_reason"] == {"missing_id": 2}
    assert (r["started_at"], r["finished_at"]) == (
        "2023-11-14T22:13:16+00:00",
        "2023-11-14T22:13:20+00:00",
    )
    assert (r["client"], r["api"], r["settings"]["target"]) == ("demo", "v2", {})
    assert "secret" not in json.dumps(r)
    assert r["warnings"] == []


def test_failed_batches_are_listed_as_errors() -> None:
    r = report_for(
        [rec(1, S.FAILED, last_error="BatchRejectedError: Unexpected error"), rec(2, S.STUCK)]
    )
    assert [(e["seq"], e["file"], e["error"]) for e in r["errors"]] == [
        (1, "/w/batches/batch-000001.txt", "BatchRejectedError: Unexpected error"),
        (2, "/w/batches/batch-000002.txt", "stuck on the server"),
    ]
    assert (r["batches"]["failed"], r["batches"]["stuck"], r["batches"]["incomplete"]) == (1, 1, 1)


@pytest.mark.parametrize(
    ("batches", "kw", "status", "code"),
    [
        ([rec(1, S.COMPLETE, successful=10)], {}, "complete", 0),
        ([], {}, "complete", 0),
        ([rec(1, S.COMPLETE, successful=4, not_found=6)], {}, "complete", 0),
        ([rec(1, S.COMPLETE)], {"rejected_by_reason": {"invalid_id": 1}}, "partial", 1),
        ([rec(1, S.COMPLETE, successful=9, failed=1)], {}, "partial", 1),
        ([rec(1, S.COMPLETE, successful=9, failed=0)], {}, "partial", 1),  # short count
        ([rec(1, S.FAILED)], {}, "partial", 1),
        ([rec(1, S.STUCK)], {}, "partial", 1),
        ([rec(1, S.COMPLETE), rec(2, S.ACCEPTED)], {}, "incomplete", 3),
        ([rec(1, S.COMPLETE)], {"chunking_done": False}, "incomplete", 3),
        ([rec(1, S.COMPLETE)], {"interrupted": True}, "incomplete", 3),
        ([rec(1, S.FAILED)], {"interrupted": True}, "incomplete", 3),
        ([rec(1, S.COMPLETE)], {"error": "ConfigError: bad"}, "error", 2),
    ],
)
def test_status_and_exit_code(
    batches: list[BatchRecord], kw: dict[str, Any], status: str, code: int
) -> None:
    r = report_for(batches, **kw)
    assert (r["status"], exit_code(r), r["exit_code"]) == (status, code, code)


def test_exit_code_of_unknown_status_is_an_error() -> None:
    assert exit_code({"status": "weird"}) == 2


def test_accounting_mismatch_and_server_size_are_warned() -> None:
    r = report_for([rec(1, S.COMPLETE, batch_size=9)], rows_read=12)
    assert r["warnings"] == [
        "rows read (12) != rejected (0) + folded (0) + submitted (10): "
        "the journal and the input disagree",
        "batch 1: server counted 9 rows, we sent 10",
    ]


# -- writers ----------------------------------------------------------------------------


def mode(path: Path) -> int:
    return os.stat(path).st_mode & 0o777


def test_write_report_is_atomic_owner_only_json(tmp_path: Path) -> None:
    r = report_for([rec(1, S.COMPLETE)])
    path = tmp_path / "out" / "report.json"
    write_report(path, r)
    write_report(path, r)  # replacing an existing report
    assert json.loads(path.read_text()) == r
    assert mode(path) == 0o600
    assert os.listdir(path.parent) == ["report.json"]


def test_junit_parses_back_with_the_right_counts(tmp_path: Path) -> None:
    batches = [
        rec(1, S.COMPLETE, successful=10),
        rec(2, S.COMPLETE, successful=8, failed=2),
        rec(3, S.FAILED, last_error="AuthError: 401", submitted_at=10.0, final_at=11.0),
        rec(4, S.ACCEPTED),
        rec(5, S.STUCK, batch_id="b-5"),
    ]
    path = tmp_path / "junit.xml"
    write_junit(path, batches, report_for(batches))  # nothing rejected: validation passes
    assert mode(path) == 0o600
    suite = ET.parse(path).getroot().find("testsuite")
    assert suite is not None
    assert {
        k: suite.get(k) for k in ("name", "tests", "failures", "errors", "skipped", "time")
    } == {
        "name": "uploader",
        "tests": "6",
        "failures": "3",
        "errors": "0",
        "skipped": "1",
        "time": "4.000",  # the run's elapsed_s, not the sum of the batches' (6.000)
    }
    cases = suite.findall("testcase")
    assert [(c.get("name"), c.get("classname"), c.get("time")) for c in cases] == [
        ("input validation", "job-1", "0.000"),
        ("batch-000001.txt", "job-1", "2.500"),
        ("batch-000002.txt", "job-1", "2.500"),
        ("batch-000003.txt", "job-1", "1.000"),
        ("batch-000004.txt", "job-1", "0.000"),
        ("batch-000005.txt", "job-1", "0.000"),
    ]
    outcome = [
        [(child.tag, child.get("message")) for child in c if child.tag != "system-out"]
        for c in cases
    ]
    assert outcome == [
        [],
        [],
        [("failure", "2 of 10 rows failed")],
        [("failure", "AuthError: 401")],
        [("skipped", "not final yet (accepted)")],
        [("failure", "stuck on the server (batch id b-5)")],
    ]


def fake_files(tmp: Path) -> dict[str, list[list[str]]]:
    return {
        "/w/batches/batch-000001.txt": [["thirdPartyId", "tier", "ltv"], ["C1", "gold", "1"]],
        "/w/batches/batch-000002.txt": [
            ["thirdPartyId", "tier", "ltv"],
            ["C2", "a,b", "2"],
            ["C3"],
            ["C4", 'say "hi"', "4"],
        ],
        "/w/batches/batch-000003.txt": [["thirdPartyId", "tier", "ltv"], ["C5", "x", "5"]],
    }


def test_failed_csv_holds_failed_batches_and_per_profile_errors(tmp_path: Path) -> None:
    files = fake_files(tmp_path)
    opened: list[str] = []

    def read_rows(name: str) -> Iterator[list[str]]:
        opened.append(name)
        yield from (list(r) for r in files[name])

    batches = [
        rec(1, S.COMPLETE, successful=1),  # no profile errors: not even opened
        rec(2, S.COMPLETE, rows=3, successful=1, failed=2),
        rec(3, S.FAILED, rows=1),
    ]
    asked: list[int] = []

    def error_ids(seq: int) -> set[str]:
        asked.append(seq)
        return {"C3", "C4"} if seq == 2 else set()

    path = tmp_path / "failed.csv"
    n = write_failed_csv(path, batches, error_ids, read_rows, ["customer_id", "Tier", "LTV"])
    assert asked == [1, 2]  # complete batches only, one at a time
    assert n == FailedRows(3, {2: 2})
    assert opened == ["/w/batches/batch-000002.txt", "/w/batches/batch-000003.txt"]
    assert path.read_bytes() == (b'customer_id,Tier,LTV\r\nC3,,\r\nC4,"say ""hi""",4\r\nC5,x,5\r\n')
    assert mode(path) == 0o600


def test_failed_csv_absent_when_nothing_failed_and_stale_one_removed(tmp_path: Path) -> None:
    path = tmp_path / "failed.csv"
    path.write_text("stale\n")

    def read_rows(name: str) -> Iterator[list[str]]:
        raise AssertionError("no batch needs reading")

    n = write_failed_csv(
        path, [rec(1, S.COMPLETE), rec(2, S.ACCEPTED)], lambda _: set(), read_rows, ["id"]
    )
    assert n == FailedRows(0, {})
    assert os.listdir(tmp_path) == []


def test_failed_csv_uses_the_input_delimiter(tmp_path: Path) -> None:
    def read_rows(name: str) -> Iterator[list[str]]:
        yield from [["thirdPartyId", "a"], ["C1", "x;y"]]

    path = tmp_path / "failed.csv"
    n = write_failed_csv(
        path, [rec(1, S.STUCK, rows=1)], lambda _: set(), read_rows, ["id", "a"], delimiter=";"
    )
    assert n == FailedRows(1, {})
    assert path.read_bytes() == b'id;a\r\nC1;"x;y"\r\n'


# -- summary ----------------------------------------------------------------------------


def test_summary_of_a_partial_run(tmp_path: Path) -> None:
    r = report_for(
        [rec(1, S.COMPLETE, successful=10, attempts=1), rec(2, S.FAILED, rows=2000, attempts=3)],
        rows_read=2011,
        rejected_by_reason={"missing_id": 1},
        counters={"submits": 3, "retries": 1, "status_polls": 9, "bytes_sent": 601_000},
        elapsed_s=125.0,
        outputs={
            "journal": "/w/journal.db",
            "rejects": "/w/rejects.csv",
            "failed_rows": "/w/f.csv",
        },
    )
    assert render_summary(r).splitlines() == [
        "uploader job job-1: PARTIAL (exit 1)",
        "rows      read 2,011  rejected 1  submitted 2,010",
        "          successful 10  failed 2,000  not found 0  pending 0",
        "batches   total 2  complete 1  incomplete 0  stuck 0  failed 1  resubmitted 0",
        "requests  submits 3  retries 1  throttled 0  status polls 9",
        "sent      601.0 kB in 2m 05s, - rows/s",  # one batch accepted: no rate
        "outputs   rejects      /w/rejects.csv",
        "          failed_rows  /w/f.csv",
        "          journal      /w/journal.db",
        "hint      fix the rows in /w/rejects.csv; feed /w/f.csv back with `uploader run`",
    ]


def test_summary_hints_for_incomplete_and_error() -> None:
    assert render_summary(report_for([rec(1, S.ACCEPTED)], interrupted=True)).endswith(
        "hint      not finished: re-run the same command to continue"
    )
    # --no-wait: everything accepted, nothing interrupted; the same command would not finish it
    assert render_summary(report_for([rec(1, S.ACCEPTED)])).endswith(
        "hint      not final yet (--no-wait): run it again with --wait to follow the batches "
        "to the end"
    )
    assert render_summary(report_for([], error="InputError: in.csv:1: no header")).endswith(
        "hint      error: InputError: in.csv:1: no header"
    )
    assert "hint" not in render_summary(report_for([rec(1, S.COMPLETE)]))
