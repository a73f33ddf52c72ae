"""The run journal: one SQLite file, the single source of truth for resume and report.

Every fact the pipeline learns (a batch file written, a submit begun, an
attempt made, a batch id accepted, a status seen, a counter bumped) is
committed the moment it is recorded, so a process killed with SIGKILL at any
instant loses nothing it had recorded. WAL mode with ``synchronous=NORMAL``
gives exactly that durability (a killed process, not a power cut) while keeping
each commit free of fsync, which is what lets the event loop thread write
directly: every write is one tiny statement.

The batch lifecycle itself lives in :mod:`uploader.states`; this module only
refuses any change that ``can_transition`` does not allow, so a batch recorded
``complete`` can never be submitted again, whatever the caller does.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol

from uploader.closing import Closing
from uploader.errors import ConfigError, StorageError, UploaderError, storage_problem
from uploader.redact import MIN_RUN, excerpt
from uploader.states import BatchState, RemoteStatus, can_transition

__all__ = [
    "COUNTERS",
    "PROFILE_ERRORS_PER_STEP",
    "SCHEMA_VERSION",
    "BatchFileLike",
    "BatchRecord",
    "BatchStatusLike",
    "Journal",
    "JournalError",
    "JournalStorageError",
    "ProfileStatusLike",
    "Sample",
]

SCHEMA_VERSION = 1

# Counters every report shows, zero until bumped; other names are accepted too.
COUNTERS = ("submits", "retries", "throttled", "status_polls", "resubmitted", "outcome_unknown")

# Fingerprint keys that identify *which* run a work dir belongs to. Anything
# else in the fingerprint (concurrency, timeouts, ...) may change between runs.
_IDENTITY_KEYS = ("input", "target")

# Listed profile errors per commit of ``record_status_steps``: a few ms of work
# each, redaction included (100,000 in one commit took about 240 ms of CPU).
PROFILE_ERRORS_PER_STEP = 1_000
# A listed profile error's message is kept as an excerpt this long.
_MESSAGE_CHARS = 200

# Moves that states.py does not list but the journal needs: a stuck batch is
# put back in the queue (WRITTEN) before it is sent again, so that a crash
# between "requeued" and "submit begun" resumes it like any unsent batch.

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY,
    file TEXT NOT NULL,
    rows INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    first_line INTEGER NOT NULL,
    last_line INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    state TEXT NOT NULL,
    batch_id TEXT,
    status_url TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    submits INTEGER NOT NULL DEFAULT 0,
    outcome_unknown INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    remote_status TEXT,
    batch_size INTEGER,
    consumed INTEGER,
    successful INTEGER,
    not_found INTEGER,
    failed INTEGER,
    submitted_at REAL,
    accepted_at REAL,
    final_at REAL,
    stuck_resends INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS batches_state ON batches (state);
CREATE TABLE IF NOT EXISTS profile_errors (
    seq INTEGER NOT NULL,
    id TEXT NOT NULL,
    status TEXT NOT NULL,
    message TEXT
);
CREATE INDEX IF NOT EXISTS profile_errors_seq ON profile_errors (seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS daily_rows (day TEXT PRIMARY KEY, n INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS samples (
    t REAL NOT NULL,
    rows_accepted INTEGER NOT NULL,
    in_flight INTEGER NOT NULL,
    lim INTEGER NOT NULL,
    throttles INTEGER NOT NULL,
    backlog_rows INTEGER NOT NULL,
    waiting TEXT
);
"""


class JournalError(UploaderError):
    """The journal cannot be used, or a caller asked for a change it must refuse."""

    exit_code = 2  # an unusable journal stops a command before it acts


class JournalStorageError(JournalError, StorageError):
    """The journal's disk refused a write (full, file-size limit, read-only).

    What was committed before stays committed: SQLite rolls the failed
    transaction back, so the journal is intact and a rerun resumes from it.
    """


# SQLite primary result codes that mean "the disk", not "the journal": PERM,
# READONLY, IOERR, FULL, CANTOPEN.
_STORAGE_CODES = {3, 8, 10, 13, 14}


def _journal_error(path: Path, exc: sqlite3.Error, what: str = "") -> JournalError:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF in _STORAGE_CODES:
        return JournalStorageError(
            f"cannot write the journal {path}: {exc}; free space (or fix the work dir's "
            "permissions) and run the same command again"
        )
    return JournalError(f"{what or f'journal {path}: '}{exc}")


class BatchFileLike(Protocol):
    """What the journal needs from ``chunk.BatchFile`` (duck-typed: no import)."""

    @property
    def seq(self) -> int: ...
    @property
    def path(self) -> str | os.PathLike[str]: ...
    @property
    def rows(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    @property
    def first_line(self) -> int: ...
    @property
    def last_line(self) -> int: ...
    @property
    def sha256(self) -> str: ...


class ProfileStatusLike(Protocol):
    """One ``<profile>`` element of a status answer (``client.ProfileStatus``)."""

    @property
    def id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def message(self) -> str | None: ...


class BatchStatusLike(Protocol):
    """What the journal needs from ``client.BatchStatus`` (duck-typed: no import)."""

    @property
    def batch_id(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def batch_size(self) -> int | None: ...
    @property
    def consumed(self) -> int | None: ...
    @property
    def successful(self) -> int | None: ...
    @property
    def not_found(self) -> int | None: ...
    @property
    def failed(self) -> int | None: ...
    @property
    def profiles(self) -> Sequence[ProfileStatusLike]: ...


@dataclass(frozen=True)
class BatchRecord:
    """One row of the ``batches`` table: everything known about one batch file."""

    seq: int
    file: str
    rows: int
    bytes: int
    first_line: int
    last_line: int
    sha256: str
    state: BatchState
    batch_id: str | None
    status_url: str | None
    attempts: int  # submit attempts in total (every HTTP submit try)
    submits: int  # times the batch entered SUBMITTING (>1: resent)
    outcome_unknown: int  # attempts whose outcome was unknown: possible duplicates
    last_error: str | None
    remote_status: str | None
    batch_size: int | None
    consumed: int | None
    successful: int | None
    not_found: int | None
    failed: int | None
    submitted_at: float | None
    accepted_at: float | None
    final_at: float | None
    stuck_resends: int = 0  # times sent again because Target said `stuck` (not crash resends)

    @property
    def is_final(self) -> bool:
        """True once the batch is complete or failed: it will never be sent again."""
        return self.state in (BatchState.COMPLETE, BatchState.FAILED)


_COLUMNS = ", ".join(f.name for f in fields(BatchRecord))


@dataclass(frozen=True)
class Sample:
    """One point of a run's time series, for the HTML report.

    Counters (``rows_accepted``, ``throttles``) are totals of the run that
    recorded the sample; a resumed run starts them again from zero.
    """

    t: float  # epoch seconds
    rows_accepted: int
    in_flight: int
    limit: int
    throttles: int
    backlog_rows: int
    waiting: str | None = None


class Journal(Closing):
    """The SQLite journal of one run (one work dir).

    Each public write commits before returning, unless it runs inside
    :meth:`transaction`. Calls are serialised by a lock, so the chunker
    thread may record batches while the event loop records statuses; never
    ``await`` inside :meth:`transaction`, or other coroutines join it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        self._depth = 0
        try:
            _create_private(self.path)
        except OSError as exc:
            problem = storage_problem(exc) or exc.strerror or str(exc)
            raise JournalStorageError(f"cannot create the journal {self.path}: {problem}") from exc
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as exc:
            raise _journal_error(self.path, exc, f"cannot open journal {self.path}: ") from exc
        try:
            self._setup()
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise _journal_error(self.path, exc, f"{self.path} is not a usable journal: ") from exc
        except JournalError:
            self._db.close()
            raise

    def _setup(self) -> None:
        self._db.execute("PRAGMA busy_timeout = 5000")  # `uploader status` may read meanwhile
        mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise JournalError(f"{self.path}: cannot switch the journal to WAL mode ({mode})")
        self._db.execute("PRAGMA synchronous = NORMAL")
        # executescript commits any open transaction first, so it runs on its own.
        self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        columns = {r[1] for r in self._db.execute("PRAGMA table_info(batches)")}
        if "stuck_resends" not in columns:  # a journal written before the column existed
            self._db.execute(
                "ALTER TABLE batches ADD COLUMN stuck_resends INTEGER NOT NULL DEFAULT 0"
            )
        with self._write():
            row = self._db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._set_meta("schema", SCHEMA_VERSION)
            elif json.loads(row[0]) != SCHEMA_VERSION:
                raise JournalError(
                    f"{self.path} has journal schema {row[0]}, this version reads "
                    f"{SCHEMA_VERSION}; use --fresh or another --work-dir"
                )

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; everything recorded is already committed."""
        with self._read():
            self._db.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Group several writes in one commit (all or nothing); nests freely."""
        with self._write():
            yield

    @contextlib.contextmanager
    def _read(self) -> Iterator[None]:
        """Serialise access and map sqlite3 errors into the project's tree."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise _journal_error(self.path, exc) from exc
            except OverflowError as exc:  # an integer SQLite cannot store (over 2**63)
                raise JournalError(f"journal {self.path}: {exc}") from exc

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One committed transaction around the block (joined when already inside one)."""
        with self._read():
            outer = self._depth == 0
            if outer:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth += 1
            try:
                yield
            except BaseException:
                self._depth -= 1
                if outer and self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                raise
            self._depth -= 1
            if outer:
                self._db.execute("COMMIT")

    # -- run identity and metadata ----------------------------------------------------

    def start_run(self, fingerprint: Mapping[str, Any], *, fresh: bool) -> bool:
        """Bind the journal to a run; True when resuming the run already recorded.

        A work dir holds one run: resuming it with another input or target
        would mix two runs' batches, so that is refused unless ``fresh``.
        """
        new = json.loads(json.dumps(dict(fingerprint), sort_keys=True, default=str))
        with self._write():
            old = self.get_meta("fingerprint")
            if old is not None and not fresh:
                for key in _IDENTITY_KEYS:
                    if old.get(key) != new.get(key):
                        raise ConfigError(self._mismatch(key, old.get(key), new.get(key)))
                self._set_meta("fingerprint", new)
                return True
            if fresh:
                # daily_rows stays: rows sent today count against today's budget.
                for table in ("batches", "profile_errors", "counters", "samples"):
                    self._db.execute(f"DELETE FROM {table}")  # fixed table names
                self._db.execute("DELETE FROM meta WHERE key != 'schema'")
            self._set_meta("fingerprint", new)
            return False

    def _mismatch(self, key: str, old: Any, new: Any) -> str:
        """One line saying what differs, so the user knows which run the dir holds."""
        if isinstance(old, dict) and isinstance(new, dict):
            keys = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
            if "path" in keys:  # another file altogether: its size and content say nothing more
                keys = ["path"]
            if "size" in keys and "head_sha256" in keys:  # one change, said once
                keys.remove("head_sha256")
            changes = [_change(key, k, old.get(k), new.get(k), old) for k in keys]
        else:
            changes = [f"the {key} differs ({_short(old)} then, {_short(new)} now)"]
        return (
            f"work dir {self.path.parent} holds a run of {key} {_short(old)}, but "
            f"{', '.join(changes)}; use --fresh to start over with this {key} "
            "or another --work-dir"
        )

    def get_meta(self, key: str, default: Any = None) -> Any:
        """A JSON value stored with :meth:`set_meta`, or ``default``."""
        with self._read():
            row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON-serialisable value under ``key`` (committed)."""
        with self._write():
            self._set_meta(key, value)

    def _set_meta(self, key: str, value: Any) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, json.dumps(value, sort_keys=True)),
        )

    # -- batch lifecycle --------------------------------------------------------------

    def add_batch(self, b: BatchFileLike) -> None:
        """Record a batch file as WRITTEN; recording the same file again is a no-op."""
        with self._write():
            row = self._db.execute("SELECT sha256 FROM batches WHERE seq = ?", (b.seq,)).fetchone()
            if row is not None:
                if row[0] != b.sha256:
                    raise ConfigError(
                        f"batch {b.seq} ({os.fspath(b.path)}) differs from the one recorded in "
                        f"{self.path}: the input changed since the last run; use --fresh"
                    )
                return
            self._db.execute(
                "INSERT INTO batches (seq, file, rows, bytes, first_line, last_line, sha256, state)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    b.seq,
                    os.fspath(b.path),
                    b.rows,
                    b.bytes,
                    b.first_line,
                    b.last_line,
                    b.sha256,
                    BatchState.WRITTEN.value,
                ),
            )

    def begin_submit(self, seq: int) -> None:
        """The batch is about to be sent: a crash from now on means "maybe sent"."""
        self._move(
            seq,
            BatchState.SUBMITTING,
            "submits = submits + 1, submitted_at = COALESCE(submitted_at, ?)",
            (time.time(),),
        )

    def record_attempt(self, seq: int, error: str | None, *, outcome_unknown: bool = False) -> None:
        """Count one HTTP submit try; ``error`` None means it succeeded.

        A fact about the network, not a state change, so it is accepted in any
        state; the last error seen is kept even after a later success.
        """
        with self._write():
            self._require(seq)
            self._db.execute(
                "UPDATE batches SET attempts = attempts + 1,"
                " outcome_unknown = outcome_unknown + ?,"
                " last_error = COALESCE(?, last_error) WHERE seq = ?",
                (int(outcome_unknown), error, seq),
            )

    def record_accepted(self, seq: int, batch_id: str | None, status_url: str) -> None:
        """The server accepted the batch: from now on it is polled, never sent again.

        ``batch_id`` is None when the answer named none; ``status_url`` is kept
        as the server gave it (redacted), usable or not (see ``trust.py``).
        """
        self._move(
            seq,
            BatchState.ACCEPTED,
            "batch_id = ?, status_url = ?, accepted_at = ?",
            (batch_id, status_url, time.time()),
        )

    def record_status(
        self, seq: int, status: BatchStatusLike, *, redact: Callable[[str], str] | None = None
    ) -> None:
        """Record a status answer: complete and stuck move the batch, incomplete does not.

        Listed profile errors are server text: ``redact`` (the client's) takes
        the token out of their ids, statuses and messages, and a message is
        kept as an excerpt of at most 200 characters.
        """
        for _ in self.record_status_steps(seq, status, redact=redact):
            pass

    def record_status_steps(
        self,
        seq: int,
        status: BatchStatusLike,
        *,
        redact: Callable[[str], str] | None = None,
        per_step: int = PROFILE_ERRORS_PER_STEP,
    ) -> Iterator[None]:
        """``record_status`` in commits of at most ``per_step`` listed profile errors.

        A generator that yields between commits, so that a caller on the event
        loop lets other tasks run meanwhile (``poll.record_status``): 100,000
        listed errors in one commit would hold the loop for a fifth of a second.
        Safe under SIGKILL between any two commits: the errors are written
        while the batch is still accepted (``profile_errors`` reads only those
        of complete batches), the batch becomes complete with the last commit,
        and the next answer for a batch cut short starts by deleting what the
        cut-short one wrote.
        """
        remote = _value(status.status)
        target = {
            RemoteStatus.COMPLETE.value: BatchState.COMPLETE,
            RemoteStatus.STUCK.value: BatchState.STUCK,
            RemoteStatus.INCOMPLETE.value: BatchState.ACCEPTED,
        }.get(remote)
        if target is None:
            raise JournalError(f"batch {seq}: unknown remote status {remote!r}")
        if target is BatchState.COMPLETE:
            with self._write():
                self._check_move(seq, target)  # refused before anything is written
                self._db.execute("DELETE FROM profile_errors WHERE seq = ?", (seq,))
            errors = (p for p in status.profiles if _value(p.status) != "success")
            # Rows made before the yield: plain tuples the garbage collector soon stops
            # tracking, where a chunk of the entries would stay tracked across it.
            while rows := [
                _profile_error(seq, p, redact) for p in itertools.islice(errors, per_step)
            ]:
                yield
                with self._write():
                    self._db.executemany(
                        "INSERT INTO profile_errors (seq, id, status, message) VALUES (?, ?, ?, ?)",
                        rows,
                    )
            yield
        final_at = time.time() if target is BatchState.COMPLETE else None
        self._move(
            seq,
            target,
            "remote_status = ?, batch_size = ?, consumed = ?, successful = ?,"
            " not_found = ?, failed = ?, final_at = ?",
            (
                remote,
                status.batch_size,
                status.consumed,
                status.successful,
                status.not_found,
                status.failed,
                final_at,
            ),
        )

    def record_failed(self, seq: int, error: str) -> None:
        """Give up on the batch for good: its rows are failed (and go to failed.csv)."""
        self._move(seq, BatchState.FAILED, "last_error = ?, final_at = ?", (error, time.time()))

    def requeue(self, seq: int, *, sent: bool = True) -> None:
        """Put a stuck or interrupted batch back to WRITTEN, to be sent again.

        The previous batch id and remote counts describe a submit that no
        longer counts, so they are cleared; ``submits`` keeps the history and
        ``stuck_resends`` counts the requeues of a stuck batch (the budget of
        ``status.resubmit_stuck``), not those of a submit cut short by a crash.
        ``sent=False``: the server refused the submit or never got it, so it
        is taken back from ``submits`` and the next one is not a resend.
        """
        self._move(
            seq,
            BatchState.WRITTEN,
            # Right-hand sides see the row before the update: `state` is the old state.
            "stuck_resends = stuck_resends + (state = 'stuck'), batch_id = NULL,"
            " status_url = NULL, remote_status = NULL, batch_size = NULL,"
            " consumed = NULL, successful = NULL, not_found = NULL, failed = NULL,"
            " accepted_at = NULL" + ("" if sent else ", submits = MAX(submits - 1, 0)"),
            (),
            allowed_from=(BatchState.STUCK, BatchState.SUBMITTING),
        )

    def _move(
        self,
        seq: int,
        new: BatchState,
        assignments: str,
        params: tuple[Any, ...],
        *,
        allowed_from: tuple[BatchState, ...] | None = None,
    ) -> None:
        with self._write():
            self._check_move(seq, new, allowed_from)
            self._db.execute(
                f"UPDATE batches SET state = ?, {assignments} WHERE seq = ?",
                (new.value, *params, seq),
            )

    def _check_move(
        self, seq: int, new: BatchState, allowed_from: tuple[BatchState, ...] | None = None
    ) -> None:
        current = self._require(seq)
        legal = can_transition(current, new)
        if not legal or (allowed_from is not None and current not in allowed_from):
            raise JournalError(f"batch {seq}: refusing to move from {current} to {new}")

    def _require(self, seq: int) -> BatchState:
        row = self._db.execute("SELECT state FROM batches WHERE seq = ?", (seq,)).fetchone()
        if row is None:
            raise JournalError(f"batch {seq} is not in the journal {self.path}")
        return BatchState(row[0])

    # -- counters ---------------------------------------------------------------------

    def bump(self, name: str, n: int = 1) -> None:
        """Add ``n`` to a run-wide counter (kept across resumed runs)."""
        with self._write():
            self._db.execute(
                "INSERT INTO counters (name, n) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET n = n + excluded.n",
                (name, n),
            )

    def counters(self) -> dict[str, int]:
        """All counters: the standard ones (zero if never bumped) then any others."""
        with self._read():
            rows = self._db.execute("SELECT name, n FROM counters ORDER BY name").fetchall()
        result = dict.fromkeys(COUNTERS, 0)
        result.update({str(name): int(n) for name, n in rows})
        return result

    # -- pacing budget and time series -----------------------------------------------

    def rows_on(self, day: str) -> int:
        """Rows counted against the daily budget on ``day`` (ISO date), across runs."""
        with self._read():
            row = self._db.execute("SELECT n FROM daily_rows WHERE day = ?", (day,)).fetchone()
        return int(row[0]) if row else 0

    def add_rows(self, day: str, rows: int) -> None:
        with self._write():
            self._db.execute(
                "INSERT INTO daily_rows (day, n) VALUES (?, ?) "
                "ON CONFLICT (day) DO UPDATE SET n = n + excluded.n",
                (day, rows),
            )

    def add_sample(self, sample: Sample, *, keep: int) -> None:
        """Append one point of the run's time series; thin the oldest half past ``keep``.

        Thinning drops every other point of the older half, so a night-long
        run keeps its whole shape in at most about ``keep`` rows.
        """
        with self._write():
            self._db.execute(
                "INSERT INTO samples (t, rows_accepted, in_flight, lim, throttles,"
                " backlog_rows, waiting) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    sample.t,
                    sample.rows_accepted,
                    sample.in_flight,
                    sample.limit,
                    sample.throttles,
                    sample.backlog_rows,
                    sample.waiting,
                ),
            )
            (count,) = self._db.execute("SELECT COUNT(*) FROM samples").fetchone()
            if count > keep:
                rowids = [
                    r[0] for r in self._db.execute("SELECT rowid FROM samples ORDER BY rowid")
                ]
                older = rowids[: len(rowids) // 2]
                self._db.executemany(
                    "DELETE FROM samples WHERE rowid = ?", [(r,) for r in older[1::2]]
                )

    def samples(self) -> list[Sample]:
        """The recorded time series, oldest first."""
        with self._read():
            rows = self._db.execute(
                "SELECT t, rows_accepted, in_flight, lim, throttles, backlog_rows, waiting"
                " FROM samples ORDER BY rowid"
            ).fetchall()
        return [Sample(*r) for r in rows]

    # -- queries ----------------------------------------------------------------------

    def batches(self, *states: BatchState) -> list[BatchRecord]:
        """Batches ordered by seq, only those in ``states`` when given."""
        sql = f"SELECT {_COLUMNS} FROM batches"  # column names are ours
        params: tuple[str, ...] = ()
        if states:
            sql += f" WHERE state IN ({', '.join('?' * len(states))})"
            params = tuple(BatchState(s).value for s in states)
        with self._read():
            rows = self._db.execute(sql + " ORDER BY seq", params).fetchall()
        return [_record(r) for r in rows]

    def batch(self, seq: int) -> BatchRecord:
        """One batch; :class:`JournalError` when the journal does not know it."""
        with self._read():
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM batches WHERE seq = ?",
                (seq,),
            ).fetchone()
        if row is None:
            raise JournalError(f"batch {seq} is not in the journal {self.path}")
        return _record(row)

    def max_seq(self) -> int:
        """The highest batch seq recorded, 0 when none (the chunker resumes after it)."""
        with self._read():
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM batches").fetchone()
        return int(row[0])

    def profile_errors(self, seq: int | None = None) -> list[tuple[int, str, str, str | None]]:
        """Per-profile problems of complete batches: (seq, id, status, message).

        Only complete batches: the errors of an answer whose recording a kill
        cut short belong to a batch still accepted (see ``record_status_steps``).
        """
        sql = (
            "SELECT e.seq, e.id, e.status, e.message FROM profile_errors e"
            " JOIN batches b ON b.seq = e.seq WHERE b.state = ?"
        )
        params: tuple[Any, ...] = (BatchState.COMPLETE.value,)
        if seq is not None:
            sql += " AND e.seq = ?"
            params = (*params, seq)
        with self._read():
            rows = self._db.execute(sql + " ORDER BY e.seq, e.rowid", params).fetchall()
        return [(int(s), str(i), str(st), m) for s, i, st, m in rows]

    def error_ids(self, seq: int) -> set[str]:
        """Ids a complete batch's status answer listed with status ``error``."""
        sql = (
            "SELECT e.id FROM profile_errors e JOIN batches b ON b.seq = e.seq"
            " WHERE e.seq = ? AND b.state = ? AND e.status = 'error'"
        )
        with self._read():
            return {str(r[0]) for r in self._db.execute(sql, (seq, BatchState.COMPLETE.value))}


def _create_private(path: Path) -> None:
    """Create the journal file owner-only before SQLite opens it.

    SQLite gives the -wal and -shm files the mode of the database file, so
    this one call keeps all three private.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)


def _record(row: Sequence[Any]) -> BatchRecord:
    values = list(row)
    values[7] = BatchState(values[7])
    return BatchRecord(*values)


def _profile_error(
    seq: int, p: ProfileStatusLike, redact: Callable[[str], str] | None
) -> tuple[int, str, str, str | None]:
    """A listed profile error as it is stored: server text, redacted; the message cut."""
    clean = redact or str
    message = p.message
    if message is not None:  # cut before redacting (bounded work), with room for a run
        message = excerpt(message[: _MESSAGE_CHARS + MIN_RUN], _MESSAGE_CHARS, redact=clean)
    return (seq, clean(p.id), clean(_value(p.status)), message)


def _value(x: object) -> str:
    """The plain string of a str enum or a str (``str()`` of a plain Enum is not it)."""
    return str(getattr(x, "value", x))


# The input's identity records the batch limits too: name them as the user sets them.
_SETTING_OF = {
    ("input", "max_rows"): "batch.max_rows (--max-batch-rows)",
    ("input", "max_bytes"): "batch.max_bytes (--max-batch-bytes)",
}


def _change(key: str, name: str, old: Any, new: Any, before: Mapping[str, Any]) -> str:
    """How one identity field changed, in words."""
    if key == "input" and name == "size" and before.get("path") == "-":
        return f"standard input is {new} bytes now, {old} then"
    if key == "input" and name == "size":
        return f"the file changed: {new} bytes now, {old} then"
    if key == "input" and name == "head_sha256":
        return "the content of its first MiB changed"
    if key == "input" and name == "sha256":
        return (
            f"standard input has other content (sha256 {str(new)[:12]} now, {str(old)[:12]} then)"
        )
    if key == "input" and name == "path":
        return f"this is another input ({new!r})"
    setting = _SETTING_OF.get((key, name), f"{key}.{name}")
    return f"{setting} is {new!r} now, {old!r} then"


def _short(value: Any) -> str:
    if isinstance(value, dict) and value.get("path") == "-":
        return "standard input"
    if isinstance(value, dict):
        for key in ("path", "name", "base_url", "client"):
            if key in value:
                return repr(value[key])
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 80 else text[:77] + "..."
