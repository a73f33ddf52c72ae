"""The journal keeps every recorded fact across a killed process and refuses illegal moves."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from uploader.errors import ConfigError
from uploader.journal import COUNTERS, PROFILE_ERRORS_PER_STEP, Journal, JournalError
from uploader.poll import record_status
from uploader.states import BatchState, RemoteStatus


@dataclass(frozen=True)
class FakeBatch:
    seq: int
    path: Path
    rows: int = 10
    bytes: int = 1000
    first_line: int = 2
    last_line: int = 11
    sha256: str = "aa"


@dataclass(frozen=True)
class FakeProfile:
    id: str
    status: str
    message: str | None = None


@dataclass(frozen=True)
class FakeStatus:
    status: RemoteStatus
    batch_id: str = "b-1"
    batch_size: int | None = 10
    consumed: int | None = 10
    successful: int | None = 8
    not_found: int | None = 0
    failed: int | None = 2
    profiles: tuple[FakeProfile, ...] = ()


FP = {"input": {"path": "/data/in.csv", "size": 100}, "target": {"client": "demo"}, "x": 1}


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    with Journal(tmp_path / "journal.db") as j:
        j.start_run(FP, fresh=False)
        yield j


def add(j: Journal, seq: int, sha: str = "aa") -> None:
    j.add_batch(FakeBatch(seq, Path(f"/w/batches/batch-{seq:06d}.txt"), sha256=sha))


def test_new_batch_is_written_with_zeroed_counts(journal: Journal) -> None:
    add(journal, 1)
    b = journal.batch(1)
    assert (b.seq, b.file, b.rows, b.bytes, b.first_line, b.last_line, b.sha256) == (
        1,
        "/w/batches/batch-000001.txt",
        10,
        1000,
        2,
        11,
        "aa",
    )
    assert (b.state, b.attempts, b.submits, b.outcome_unknown) == (BatchState.WRITTEN, 0, 0, 0)
    assert b.batch_id is None and b.submitted_at is None and not b.is_final


def test_add_batch_same_file_is_noop_other_file_is_config_error(journal: Journal) -> None:
    add(journal, 1)
    journal.begin_submit(1)
    add(journal, 1)
    assert journal.batch(1).state is BatchState.SUBMITTING
    with pytest.raises(ConfigError, match=r"batch 1 .*input changed"):
        add(journal, 1, sha="bb")


def test_full_lifecycle_records_every_field(journal: Journal) -> None:
    add(journal, 1)
    journal.begin_submit(1)
    journal.record_attempt(1, "TransportError: reset", outcome_unknown=True)
    journal.record_attempt(1, None)
    journal.record_accepted(1, "b-1", "http://127.0.0.2/s?batchId=b-1")
    journal.record_status(1, FakeStatus(RemoteStatus.INCOMPLETE, successful=None, failed=None))
    mid = journal.batch(1)
    assert (mid.state, mid.remote_status, mid.final_at) == (
        BatchState.ACCEPTED,
        "incomplete",
        None,
    )
    profiles = (FakeProfile("C1", "success"), FakeProfile("C2", "error", "too big"))
    journal.record_status(1, FakeStatus(RemoteStatus.COMPLETE, profiles=profiles))
    b = journal.batch(1)
    assert b.state is BatchState.COMPLETE and b.is_final
    assert (b.attempts, b.submits, b.outcome_unknown) == (2, 1, 1)
    assert b.last_error == "TransportError: reset"
    assert (b.batch_id, b.status_url) == ("b-1", "http://127.0.0.2/s?batchId=b-1")
    assert (b.batch_size, b.consumed, b.successful, b.not_found, b.failed) == (10, 10, 8, 0, 2)
    assert b.submitted_at is not None and b.accepted_at is not None and b.final_at is not None
    assert b.submitted_at <= b.accepted_at <= b.final_at
    assert journal.profile_errors() == [(1, "C2", "error", "too big")]
    assert journal.profile_errors(2) == []


def test_complete_batch_can_never_be_submitted_again(journal: Journal) -> None:
    add(journal, 1)
    journal.begin_submit(1)
    journal.record_accepted(1, "b-1", "u")
    journal.record_status(1, FakeStatus(RemoteStatus.COMPLETE))
    for move in (
        lambda: journal.begin_submit(1),
        lambda: journal.requeue(1),
        lambda: journal.record_failed(1, "late"),
        lambda: journal.record_accepted(1, "b-2", "u"),
    ):
        with pytest.raises(JournalError, match="refusing to move from complete"):
            move()
    assert journal.batch(1).state is BatchState.COMPLETE
    assert journal.batch(1).submits == 1


def test_illegal_moves_are_refused(journal: Journal) -> None:
    add(journal, 1)
    with pytest.raises(JournalError, match="from written to accepted"):
        journal.record_accepted(1, "b", "u")
    with pytest.raises(JournalError, match="from written to written"):
        journal.requeue(1)
    journal.record_failed(1, "BatchRejectedError: bad")
    with pytest.raises(JournalError, match="from failed to submitting"):
        journal.begin_submit(1)
    with pytest.raises(JournalError, match="batch 9 is not in the journal"):
        journal.begin_submit(9)
    with pytest.raises(JournalError, match="batch 9 is not in the journal"):
        journal.batch(9)


def test_stuck_batch_is_requeued_and_resent(journal: Journal) -> None:
    add(journal, 1)
    journal.begin_submit(1)
    journal.record_accepted(1, "b-1", "u1")
    journal.record_status(1, FakeStatus(RemoteStatus.STUCK))
    assert journal.batch(1).state is BatchState.STUCK
    journal.requeue(1)
    b = journal.batch(1)
    assert (b.state, b.batch_id, b.status_url, b.remote_status) == (
        BatchState.WRITTEN,
        None,
        None,
        None,
    )
    journal.begin_submit(1)
    journal.record_accepted(1, "b-2", "u2")
    assert (journal.batch(1).submits, journal.batch(1).batch_id) == (2, "b-2")


def test_in_flight_submit_is_requeued_on_resume(journal: Journal) -> None:
    add(journal, 1)
    journal.begin_submit(1)
    journal.requeue(1)
    assert journal.batch(1).state is BatchState.WRITTEN


def test_unknown_remote_status_is_an_error_not_a_move(journal: Journal) -> None:
    add(journal, 1)
    journal.begin_submit(1)
    journal.record_accepted(1, "b", "u")
    with pytest.raises(JournalError, match="unknown remote status 'weird'"):
        journal.record_status(1, FakeStatus("weird"))  # type: ignore[arg-type]
    assert journal.batch(1).state is BatchState.ACCEPTED


def test_batches_filter_and_order(journal: Journal) -> None:
    for seq in (3, 1, 2):
        add(journal, seq)
    journal.begin_submit(2)
    assert [b.seq for b in journal.batches()] == [1, 2, 3]
    assert [b.seq for b in journal.batches(BatchState.WRITTEN)] == [1, 3]
    assert [b.seq for b in journal.batches(BatchState.SUBMITTING, BatchState.FAILED)] == [2]
    assert journal.max_seq() == 3


def test_counters_start_at_zero_and_accumulate(journal: Journal) -> None:
    assert journal.counters() == dict.fromkeys(COUNTERS, 0)
    journal.bump("retries")
    journal.bump("retries", 4)
    journal.bump("status_errors")
    c = journal.counters()
    assert (c["retries"], c["status_errors"], c["submits"]) == (5, 1, 0)


def test_meta_round_trips_json(journal: Journal) -> None:
    journal.set_meta("chunking", {"done": True, "rows_read": 12})
    assert journal.get_meta("chunking") == {"done": True, "rows_read": 12}
    assert journal.get_meta("absent", 7) == 7
    assert journal.get_meta("schema") == 1


def test_transaction_rolls_back_as_a_whole(journal: Journal) -> None:
    add(journal, 1)
    with pytest.raises(RuntimeError), journal.transaction():
        journal.begin_submit(1)
        journal.bump("submits")
        raise RuntimeError("boom")
    assert journal.batch(1).state is BatchState.WRITTEN
    assert journal.counters()["submits"] == 0
    with journal.transaction():
        journal.begin_submit(1)
        journal.bump("submits")
    assert (journal.batch(1).state, journal.counters()["submits"]) == (BatchState.SUBMITTING, 1)


def test_resume_same_run_returns_true(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        assert j.start_run(FP, fresh=False) is False
        add(j, 1)
    with Journal(path) as j:
        assert j.start_run({**FP, "x": 2}, fresh=False) is True
        assert j.get_meta("fingerprint")["x"] == 2  # non-identity keys may change
        assert j.max_seq() == 1


def test_other_input_is_refused_with_a_message_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        j.start_run(FP, fresh=False)
    other = {**FP, "input": {"path": "/data/other.csv", "size": 100}}
    with Journal(path) as j, pytest.raises(ConfigError) as err:
        j.start_run(other, fresh=False)
    assert str(err.value) == (
        f"work dir {tmp_path} holds a run of input '/data/in.csv', but this is another "
        "input ('/data/other.csv'); use --fresh to start over with this input or another --work-dir"
    )
    with (
        Journal(path) as j,
        pytest.raises(
            ConfigError, match=r"run of target 'demo', but target\.client is 'x' now, 'demo' then"
        ),
    ):
        j.start_run({**FP, "target": {"client": "x"}}, fresh=False)


def test_changed_batch_limit_is_named_by_its_setting(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        j.start_run({**FP, "input": {**FP["input"], "max_rows": 5000}}, fresh=False)
    with Journal(path) as j, pytest.raises(ConfigError) as err:
        j.start_run({**FP, "input": {**FP["input"], "max_rows": 500000}}, fresh=False)
    assert str(err.value) == (
        f"work dir {tmp_path} holds a run of input '/data/in.csv', but batch.max_rows "
        "(--max-batch-rows) is 500000 now, 5000 then; use --fresh to start over with this "
        "input or another --work-dir"
    )


def test_fresh_wipes_everything(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with Journal(path) as j:
        j.start_run(FP, fresh=False)
        add(j, 1)
        j.begin_submit(1)
        j.record_accepted(1, "b", "u")
        j.record_status(1, FakeStatus(RemoteStatus.COMPLETE, profiles=(FakeProfile("C", "error"),)))
        j.bump("submits")
        j.set_meta("chunking", {"done": True})
    other = {**FP, "input": "elsewhere"}
    with Journal(path) as j:
        assert j.start_run(other, fresh=True) is False
        assert (j.batches(), j.profile_errors(), j.max_seq()) == ([], [], 0)
        assert j.counters()["submits"] == 0
        assert j.get_meta("chunking") is None
        assert j.get_meta("fingerprint")["input"] == "elsewhere"


def test_files_are_owner_only(tmp_path: Path) -> None:
    with Journal(tmp_path / "run" / "journal.db") as j:
        add(j, 1)
        names = sorted(os.listdir(tmp_path / "run"))
        assert names == ["journal.db", "journal.db-shm", "journal.db-wal"]
        for name in names:
            assert os.stat(tmp_path / "run" / name).st_mode & 0o777 == 0o600


def test_wal_mode_and_schema_version(tmp_path: Path) -> None:
    with Journal(tmp_path / "j.db"):
        db = sqlite3.connect(tmp_path / "j.db")
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
        db.commit()
        db.close()
    with pytest.raises(JournalError, match="schema 99"):
        Journal(tmp_path / "j.db")


def test_not_a_database_is_a_journal_error(tmp_path: Path) -> None:
    (tmp_path / "j.db").write_bytes(b"this is not sqlite at all" * 100)
    with pytest.raises(JournalError, match="not a usable journal"):
        Journal(tmp_path / "j.db")


_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from dataclasses import dataclass
    from pathlib import Path
    from uploader.journal import Journal

    @dataclass(frozen=True)
    class B:
        seq: int
        path: str
        rows: int = 5
        bytes: int = 50
        first_line: int = 2
        last_line: int = 6
        sha256: str = "s"

    j = Journal(Path(sys.argv[1]))
    j.start_run({"input": "in.csv", "target": "demo"}, fresh=False)
    for seq in range(1, 51):
        j.add_batch(B(seq, f"batch-{seq:06d}.txt"))
        j.begin_submit(seq)
        j.record_attempt(seq, None)
        j.record_accepted(seq, f"b-{seq}", f"u-{seq}")
        j.bump("submits")
    # nothing is closed or flushed: the process dies right here
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_sigkill_loses_nothing_recorded(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    proc = subprocess.run(
        [sys.executable, "-c", _WRITER, str(path)], capture_output=True, timeout=60
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    with Journal(path) as j:
        assert j.start_run({"input": "in.csv", "target": "demo"}, fresh=False) is True
        batches = j.batches()
        assert [b.seq for b in batches] == list(range(1, 51))
        assert {(b.state, b.attempts, b.submits) for b in batches} == {(BatchState.ACCEPTED, 1, 1)}
        assert batches[-1].batch_id == "b-50"
        assert j.counters()["submits"] == 50


def test_second_connection_sees_each_write_immediately(tmp_path: Path) -> None:
    path = tmp_path / "journal.db"
    with Journal(path) as writer, Journal(path) as reader:
        add(writer, 1)
        assert reader.batch(1).state is BatchState.WRITTEN
        writer.begin_submit(1)
        assert reader.batch(1).state is BatchState.SUBMITTING
        writer.bump("retries")
        assert reader.counters()["retries"] == 1


def _accepted_with_errors(j: Journal, n: int) -> FakeStatus:
    add(j, 1)
    j.begin_submit(1)
    j.record_accepted(1, "b-1", "u-1")
    profiles = tuple(FakeProfile(f"P{i:05d}", "error", f"bad {i}") for i in range(n))
    ok = (FakeProfile("OK", "success"),)
    return FakeStatus(RemoteStatus.COMPLETE, profiles=profiles[:2] + ok + profiles[2:])


def test_listed_errors_are_written_in_steps_and_count_once_complete(journal: Journal) -> None:
    status = _accepted_with_errors(journal, 10)
    steps = journal.record_status_steps(1, status, per_step=3)
    seen = []
    for _ in steps:  # between commits: the batch is still accepted, no error counts yet
        seen.append(journal.profile_errors())
        assert journal.batch(1).state is BatchState.ACCEPTED
    assert seen == [[]] * 5  # 4 commits of at most 3 errors, then the move
    assert journal.batch(1).state is BatchState.COMPLETE
    assert journal.profile_errors() == [(1, f"P{i:05d}", "error", f"bad {i}") for i in range(10)]


def test_a_recorded_batch_refuses_a_second_answer_before_writing(journal: Journal) -> None:
    status = _accepted_with_errors(journal, 4)
    journal.record_status(1, status)
    with pytest.raises(JournalError, match="refusing to move from complete to complete"):
        journal.record_status(1, FakeStatus(RemoteStatus.COMPLETE, profiles=status.profiles))
    assert len(journal.profile_errors()) == 4


_STEP_WRITER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from tests.test_journal import FP, _accepted_with_errors
    from uploader.journal import Journal

    j = Journal(Path(sys.argv[1]))
    j.start_run(FP, fresh=False)
    status = _accepted_with_errors(j, 10_000)
    for done, _ in enumerate(j.record_status_steps(1, status, per_step=1_000)):
        if done == int(sys.argv[2]):
            os.kill(os.getpid(), signal.SIGKILL)
    """
)


@pytest.mark.parametrize("steps_done", [0, 1, 6, 10])
def test_sigkill_while_listed_errors_are_written(tmp_path: Path, steps_done: int) -> None:
    """Killed between any two commits: intact, the batch still accepted, then recorded once."""
    path = tmp_path / "journal.db"
    proc = subprocess.run(
        [sys.executable, "-c", _STEP_WRITER, str(path), str(steps_done)],
        capture_output=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    written = db.execute("SELECT count(*) FROM profile_errors").fetchone()[0]
    db.close()
    assert written == 1_000 * steps_done  # the commits made before the kill, no more
    with Journal(path) as j:
        assert j.batch(1).state is BatchState.ACCEPTED
        assert j.profile_errors() == []  # a batch still accepted has no errors to count
        status = FakeStatus(
            RemoteStatus.COMPLETE,
            profiles=tuple(FakeProfile(f"P{i:05d}", "error", f"bad {i}") for i in range(10_000)),
        )
        j.record_status(1, status)  # the next answer, as the resumed run records it
        assert [pid for _, pid, _, _ in j.profile_errors()] == [f"P{i:05d}" for i in range(10_000)]


async def test_the_poller_write_lets_the_loop_run_between_commits(journal: Journal) -> None:
    """100,000 listed errors in one go would hold the event loop for a fifth of a second."""
    status = _accepted_with_errors(journal, 10 * PROFILE_ERRORS_PER_STEP)
    ticks = 0
    done = asyncio.Event()

    async def ticker() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    before = ticks
    await record_status(journal, 1, status)
    during = ticks - before
    done.set()
    await task
    assert during >= 10  # the ticker ran between every two commits
    assert len(journal.profile_errors()) == 10 * PROFILE_ERRORS_PER_STEP


def test_error_ids_are_those_listed_as_errors_of_a_complete_batch(journal: Journal) -> None:
    status = _accepted_with_errors(journal, 3)
    pending = FakeStatus(
        RemoteStatus.COMPLETE, profiles=(*status.profiles, FakeProfile("W", "pending"))
    )
    steps = journal.record_status_steps(1, pending, per_step=2)
    next(steps)
    next(steps)  # two errors written, the batch still accepted: none count yet
    assert journal.error_ids(1) == set()
    for _ in steps:
        pass
    assert journal.error_ids(1) == {"P00000", "P00001", "P00002"}
    assert journal.error_ids(2) == set()
