"""Verify's tables in the run's journal: expected values per id, and what each check found.

``verify_expected`` holds, per id that ended successful, the values the
export should have left in Target: rows are folded in input order with the
repeated-id rule (per attribute, the last non-empty value wins), which
SQLite's ``json_patch`` applies on insert, so memory stays flat however
large the export. ``verify_checks`` keeps one result per checked id,
committed within a tenth of a second, so a verify killed at any moment
continues where it stopped. A rerun keeps the ids found exact and checks the others again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from uploader.closing import Closing
from uploader.journal import JournalError
from uploader.verify.compare import KEPT, CheckOutcome, Mismatch

__all__ = ["FLUSH_ROWS", "FLUSH_S", "Expected", "VerifyStore", "sample_rank"]

FLUSH_ROWS = 64  # results committed together at most...
FLUSH_S = 0.1  # ...and at least this often while results arrive

_SCHEMA = """
CREATE TABLE IF NOT EXISTS verify_expected (
    id TEXT PRIMARY KEY,
    attrs TEXT NOT NULL,
    final_at REAL,
    rank INTEGER NOT NULL,
    picked INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS verify_expected_pick ON verify_expected (picked, rank, id);
CREATE TABLE IF NOT EXISTS verify_checks (
    id TEXT PRIMARY KEY,
    outcome TEXT NOT NULL,
    mismatches TEXT NOT NULL,
    checked_at REAL NOT NULL
);
"""
_RECHECK = tuple(o.value for o in CheckOutcome if o not in KEPT)


@dataclass(frozen=True)
class Expected:
    """One id to check: the attributes it should hold, and when its last batch completed."""

    id: str
    attrs: dict[str, str]
    final_at: float | None


def sample_rank(seed: int, pid: str) -> int:
    """A keyed hash of the id: the N smallest ranks are a uniform sample without replacement."""
    key = seed.to_bytes(8, "big", signed=True)
    digest = hashlib.blake2b(pid.encode("utf-8", "surrogatepass"), key=key, digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


class VerifyStore(Closing):
    """A second connection to ``journal.sqlite`` for verify's own tables."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._pending: list[tuple[str, str, str, float]] = []
        self._flushed = time.monotonic()
        try:
            self._db = sqlite3.connect(path, isolation_level=None)
            self._db.execute("PRAGMA busy_timeout = 5000")
            self._db.execute("PRAGMA synchronous = NORMAL")
            self._db.executescript(f"BEGIN IMMEDIATE; {_SCHEMA} COMMIT;")
        except sqlite3.Error as exc:
            raise JournalError(f"journal {path}: {exc}") from exc

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._db.close()

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            raise JournalError(f"journal {self.path}: {exc}") from exc

    # -- building the expected values ------------------------------------------------

    def reset(self) -> None:
        """Forget every expected value and result (a new selection starts over)."""
        with self._tx() as db:
            db.execute("DELETE FROM verify_expected")
            db.execute("DELETE FROM verify_checks")

    def add_rows(self, seed: int, rows: Iterable[tuple[str, dict[str, str], float | None]]) -> None:
        """Fold sent rows, in input order, into the expected values (one transaction).

        Each row contributes only its non-empty values; ``json_patch`` lets a
        later one replace an earlier one per attribute and keeps the rest.
        """
        params = [
            (pid, json.dumps(attrs, ensure_ascii=False), final_at, sample_rank(seed, pid))
            for pid, attrs, final_at in rows
        ]
        with self._tx() as db:
            db.executemany(
                "INSERT INTO verify_expected (id, attrs, final_at, rank) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (id) DO UPDATE SET attrs = json_patch(attrs, excluded.attrs), "
                "final_at = max(coalesce(final_at, 0), coalesce(excluded.final_at, 0))",
                params,
            )

    def drop_empty(self) -> int:
        """Remove ids with no non-empty value: nothing to compare; returns how many."""
        with self._tx() as db:
            return db.execute("DELETE FROM verify_expected WHERE attrs = '{}'").rowcount

    def pick_all(self) -> None:
        with self._tx() as db:
            db.execute("UPDATE verify_expected SET picked = 1")

    def pick_sample(self, n: int) -> None:
        """Pick the ``n`` ids of smallest rank: a uniform random sample (seeded)."""
        with self._tx() as db:
            db.execute(
                "UPDATE verify_expected SET picked = 1 WHERE id IN "
                "(SELECT id FROM verify_expected ORDER BY rank, id LIMIT ?)",
                (n,),
            )

    def pick_ids(self, ids: Iterable[str]) -> int:
        """Pick the listed ids that are in the load; returns how many listed ids are not."""
        absent = 0
        with self._tx() as db:
            for pid in ids:
                cur = db.execute("UPDATE verify_expected SET picked = 1 WHERE id = ?", (pid,))
                absent += cur.rowcount == 0
        return absent

    def population(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM verify_expected").fetchone()[0])

    def picked(self) -> int:
        sql = "SELECT count(*) FROM verify_expected WHERE picked = 1"
        return int(self._db.execute(sql).fetchone()[0])

    # -- checking ---------------------------------------------------------------------

    def to_check(self, page: int = 500) -> Iterator[Expected]:
        """Picked ids to check (no result, or one a rerun checks again), in rank order.

        Keyset pagination: no cursor stays open while results are written.
        """
        base = (
            "SELECT e.id, e.attrs, e.final_at, e.rank FROM verify_expected e "
            "LEFT JOIN verify_checks c ON c.id = e.id "
            f"WHERE e.picked = 1 AND (c.id IS NULL OR c.outcome IN ({_marks(_RECHECK)})) "
        )
        after: tuple[int, str] | None = None
        while True:
            sql, params = base, list[object](_RECHECK)
            if after is not None:
                sql, params = base + "AND (e.rank, e.id) > (?, ?) ", [*_RECHECK, *after]
            rows = self._db.execute(sql + "ORDER BY e.rank, e.id LIMIT ?", (*params, page))
            page_rows = rows.fetchall()
            for pid, attrs, final_at, _ in page_rows:
                yield Expected(pid, json.loads(attrs), final_at)
            if len(page_rows) < page:
                return
            after = (page_rows[-1][3], page_rows[-1][0])

    def remaining(self) -> int:
        self.flush()
        sql = (
            "SELECT count(*) FROM verify_expected e LEFT JOIN verify_checks c ON c.id = e.id "
            f"WHERE e.picked = 1 AND (c.id IS NULL OR c.outcome IN ({_marks(_RECHECK)}))"
        )
        return int(self._db.execute(sql, _RECHECK).fetchone()[0])

    def unchecked(self) -> int:
        """Picked ids with no result at all (the verify stopped before them)."""
        self.flush()
        sql = (
            "SELECT count(*) FROM verify_expected e LEFT JOIN verify_checks c ON c.id = e.id "
            "WHERE e.picked = 1 AND c.id IS NULL"
        )
        return int(self._db.execute(sql).fetchone()[0])

    def record(self, pid: str, outcome: CheckOutcome, mismatches: list[Mismatch]) -> None:
        """Keep one result; results are committed in small groups (see ``flush``).

        A commit per result would cost more than the fetch itself; a SIGKILL
        loses at most the last ``FLUSH_ROWS`` results or ``FLUSH_S`` seconds
        of them, which the next run checks again.
        """
        data = json.dumps(
            [[m.attribute, m.expected, m.found, m.modified_at] for m in mismatches],
            ensure_ascii=False,
        )
        self._pending.append((pid, outcome.value, data, time.time()))
        now = time.monotonic()
        if len(self._pending) >= FLUSH_ROWS or now - self._flushed >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        """Commit every result kept so far."""
        self._flushed = time.monotonic()
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        with self._tx() as db:
            db.executemany(
                "INSERT INTO verify_checks (id, outcome, mismatches, checked_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET outcome = excluded.outcome, "
                "mismatches = excluded.mismatches, checked_at = excluded.checked_at",
                pending,
            )

    # -- reading results --------------------------------------------------------------

    def outcome_counts(self) -> dict[str, int]:
        self.flush()
        sql = (
            "SELECT c.outcome, count(*) FROM verify_checks c JOIN verify_expected e "
            "ON e.id = c.id WHERE e.picked = 1 GROUP BY c.outcome"
        )
        counts = dict.fromkeys((o.value for o in CheckOutcome), 0)
        counts.update({str(k): int(n) for k, n in self._db.execute(sql)})
        return counts

    def mismatches(
        self, outcomes: Iterable[CheckOutcome]
    ) -> Iterator[tuple[str, CheckOutcome, dict[str, str], list[Mismatch]]]:
        """(id, outcome, expected attrs, mismatches) of results with these outcomes, by id."""
        self.flush()
        wanted = tuple(o.value for o in outcomes)
        sql = (
            "SELECT c.id, c.outcome, e.attrs, c.mismatches FROM verify_checks c "
            "JOIN verify_expected e ON e.id = c.id "
            f"WHERE e.picked = 1 AND c.outcome IN ({_marks(wanted)}) ORDER BY c.id"
        )
        for pid, outcome, attrs, data in self._db.execute(sql, wanted):
            found = [Mismatch(*m) for m in json.loads(data)]
            yield pid, CheckOutcome(outcome), json.loads(attrs), found

    def latest_final_at(self, outcome: CheckOutcome) -> float | None:
        """The latest batch completion among ids with ``outcome`` (for "verify again after")."""
        self.flush()
        sql = (
            "SELECT max(e.final_at) FROM verify_checks c JOIN verify_expected e ON e.id = c.id "
            "WHERE e.picked = 1 AND c.outcome = ?"
        )
        value = self._db.execute(sql, (outcome.value,)).fetchone()[0]
        return None if value is None else float(value)


def _marks(values: tuple[str, ...] | Mapping[str, object]) -> str:
    return ", ".join("?" * len(values))
