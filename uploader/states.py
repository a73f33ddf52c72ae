"""Statuses of batches and rows, and which batch state may follow which.

Pure data: no I/O. Every enum is a ``str`` enum stored by value in the
journal and the report, so the values below are part of the on-disk format.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "FINAL_STATES",
    "BatchState",
    "RejectReason",
    "RemoteStatus",
    "RowOutcome",
    "can_transition",
]


class BatchState(StrEnum):
    """Where one batch file stands in its lifecycle (our side, journaled)."""

    WRITTEN = "written"  # the batch file is on disk, not yet sent
    SUBMITTING = "submitting"  # a submit is in flight; outcome not yet known
    ACCEPTED = "accepted"  # the server returned a batch id; status is being followed
    COMPLETE = "complete"  # the server reported `complete`; counts recorded
    STUCK = "stuck"  # the server reported `stuck`; will be resubmitted or failed
    FAILED = "failed"  # gave up: permanent error, attempts exhausted, or stuck too often


class RemoteStatus(StrEnum):
    """The ``<status>`` values of the batch status call."""

    COMPLETE = "complete"  # processed
    INCOMPLETE = "incomplete"  # still being processed
    STUCK = "stuck"  # could not complete; its rows were not applied


class RowOutcome(StrEnum):
    """The one final place every input row ends in (SPEC section 2)."""

    SUCCESSFUL = "successful"  # applied by the server
    FAILED = "failed"  # in a failed or stuck batch, or listed as a per-profile error
    NOT_FOUND = "not_found"  # v1 only: the id does not exist in Target
    REJECTED = "rejected"  # invalid input, never sent (rejects.csv)
    PENDING = "pending"  # not final yet: re-run to continue


class RejectReason(StrEnum):
    """Why an input row was not sent (a column of rejects.csv)."""

    MISSING_ID = "missing_id"  # the id field is empty or only whitespace
    INVALID_ID = "invalid_id"  # `+` or `/` in a thirdPartyId, control characters, outer spaces
    TOO_MANY_FIELDS = "too_many_fields"  # more fields than the header has columns
    TOO_FEW_FIELDS = "too_few_fields"  # fewer fields than the header (input.short_rows = reject)
    PROFILE_TOO_LARGE = "profile_too_large"  # id and values over 64 KB (decoded UTF-8 bytes)
    MALFORMED_RECORD = "malformed_record"  # CSV syntax error, e.g. an unterminated quote
    BAD_ENCODING = "bad_encoding"  # bytes that do not decode in the input encoding
    HEADER_ROW = "header_row"  # a copy of the header line: exports concatenated with headers


FINAL_STATES = frozenset({BatchState.COMPLETE, BatchState.FAILED})

_NEXT: dict[BatchState, frozenset[BatchState]] = {
    BatchState.WRITTEN: frozenset({BatchState.SUBMITTING, BatchState.FAILED}),
    BatchState.SUBMITTING: frozenset(
        {BatchState.SUBMITTING, BatchState.ACCEPTED, BatchState.FAILED, BatchState.WRITTEN}
    ),
    BatchState.ACCEPTED: frozenset(
        {BatchState.ACCEPTED, BatchState.COMPLETE, BatchState.STUCK, BatchState.FAILED}
    ),
    # stuck -> written: the batch is queued to be sent again (status.resubmit_stuck)
    BatchState.STUCK: frozenset({BatchState.WRITTEN, BatchState.FAILED}),
    BatchState.COMPLETE: frozenset(),
    BatchState.FAILED: frozenset(),
}


def can_transition(current: BatchState, new: BatchState) -> bool:
    """True when a batch in ``current`` may move to ``new``.

    Final states never change: a batch recorded ``complete`` is never sent again.
    """
    return new in _NEXT[current]
