"""Parse what the Target API answers into typed results (pure: no I/O, no aiohttp).

Sits between ``client.py`` (which reads at most a capped number of bytes off
the wire and feeds them to an ``XmlReader`` as they arrive) and everything
downstream, which only ever sees ``SubmitResult`` and ``BatchStatus``. Server
XML is untrusted: it is read incrementally within limits (``xmlread.py``: no
DTD, bounded depth, element count and text), elements we do not know are
ignored, and anything we cannot understand becomes a ``ProtocolError`` whose
message carries a short, printable, redacted excerpt of the body so an
operator can see what came back.

How big a status answer can be. Adobe documents the ``showDetails=true``
answer as seven elements (``batchId``, ``status``, ``batchSize``,
``consumedCount``, ``successfulUpdates``, ``profilesNotFound``,
``failedUpdates``): a few hundred bytes. v2 promises a "per row status", so
we also accept ``<profile>`` entries, at most one per row of a batch (500,000
rows): ``STATUS_MAX_ELEMENTS`` allows four elements for each of them, and
``STATUS_MAX_BYTES`` about 100 bytes each. Of those entries we keep the first
``MAX_LISTED_PROFILES`` (the rows we can name in ``failed.csv``); the
server's counts still account for every row beyond them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

from uploader.errors import BatchRejectedError, ProtocolError, WrongBatchError
from uploader.redact import excerpt
from uploader.settings import MAX_BATCH_ROWS
from uploader.states import RemoteStatus
from uploader.xmlread import Document, ProfileStatus, XmlReader

__all__ = [
    "PROFILE_STATUSES",
    "STATUS_MAX_BYTES",
    "SUBMIT_MAX_BYTES",
    "BatchStatus",
    "ProfileStatus",
    "SubmitResult",
    "batch_status",
    "excerpt",
    "parse_error_message",
    "parse_retry_after",
    "parse_status",
    "parse_submit",
    "status_reader",
    "submit_reader",
    "submit_result",
]

# A submit answer is a few hundred bytes; anything near this cap is not Target.
SUBMIT_MAX_BYTES = 1024 * 1024
SUBMIT_MAX_ELEMENTS = 1_000
# See the module docstring: one <profile> of ~100 bytes and 4 elements per row at most.
STATUS_MAX_BYTES = 64 * 1024 * 1024
STATUS_MAX_ELEMENTS = 4 * MAX_BATCH_ROWS + 1_000
MAX_LISTED_PROFILES = 100_000
# An error page is only read for its <message>.
ERROR_MAX_ELEMENTS = 10_000

Redact = Callable[[str], str]

_SUBMIT_FIELDS = frozenset({"success", "batchStatus", "batchId", "message"})
_STATUS_FIELDS = frozenset(
    {
        "batchId",
        "status",
        "batchSize",
        "consumedCount",
        "successfulUpdates",
        "profilesNotFound",
        "failedUpdates",
    }
)

# Per-profile ``<status>`` values documented for v2. Others are passed through
# as-is (the poller decides), because a new value there does not make the
# batch counts wrong.
PROFILE_STATUSES = frozenset({"success", "error", "pending"})


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """A batch the server accepted: follow ``status_url`` until it is final."""

    batch_id: str
    status_url: str
    message: str


@dataclass(frozen=True, slots=True)
class BatchStatus:
    """One status answer. Counts are ``None`` when the server did not send them."""

    batch_id: str
    status: RemoteStatus
    batch_size: int
    consumed: int | None = None
    successful: int | None = None
    not_found: int | None = None
    failed: int | None = None
    # kept as plain tuples (see ``ListedProfiles``); read as ProfileStatus
    profiles: Sequence[ProfileStatus] = ()
    unlisted_profiles: int = 0  # <profile> entries beyond MAX_LISTED_PROFILES, not kept


def submit_reader(redact: Redact | None = None) -> XmlReader:
    """A reader for one submit answer (feed it, then ``submit_result(reader.close())``)."""
    return XmlReader(
        "submit response", _SUBMIT_FIELDS, max_elements=SUBMIT_MAX_ELEMENTS, redact=redact
    )


def status_reader(redact: Redact | None = None) -> XmlReader:
    """A reader for one status answer (feed it, then ``batch_status(reader.close())``)."""
    return XmlReader(
        "status response",
        _STATUS_FIELDS,
        max_elements=STATUS_MAX_ELEMENTS,
        max_profiles=MAX_LISTED_PROFILES,
        redact=redact,
    )


def parse_submit(body: bytes, *, redact: Redact | None = None) -> SubmitResult:
    """Parse a whole submit answer (see ``submit_result``)."""
    return submit_result(_read(submit_reader(redact), body), redact=redact)


def parse_status(
    body: bytes, *, batch_id_hint: str | None = None, redact: Redact | None = None
) -> BatchStatus:
    """Parse a whole status answer (see ``batch_status``)."""
    doc = _read(status_reader(redact), body)
    return batch_status(doc, batch_id_hint=batch_id_hint, redact=redact)


def submit_result(doc: Document, *, redact: Redact | None = None) -> SubmitResult:
    """The accepted batch a submit answer names.

    ``success=false`` raises ``BatchRejectedError`` with the server's message;
    an answer that is neither (no ``<success>``, or another word) raises
    ``ProtocolError``. ``success=true`` is an accepted batch even when its
    ``<batchStatus>`` is missing or unusable (``status_url`` is then what the
    server sent, possibly empty) or it names no batch id (``batch_id`` empty).
    """
    fields = doc.fields
    success = fields.get("success")
    if success is None:
        raise _protocol("submit response has no <success> element", doc, redact)
    if success.lower() == "false":
        message = fields.get("message") or "no message"
        raise BatchRejectedError(f"batch rejected by the server: {excerpt(message, redact=redact)}")
    if success.lower() != "true":
        shown = excerpt(success, 40, redact=redact)
        raise _protocol(f"submit response has <success>{shown}</success>", doc, redact)
    # success=true: the server has the rows. A status URL we cannot use (missing,
    # unparsable, not http(s)) does not undo that: the batch is accepted, and
    # following it meets the refusal of ``trust.status_request_url``, which stops
    # the run with the batch still accepted, as any status URL we refuse to call.
    status_url = fields.get("batchStatus") or ""
    batch_id = fields.get("batchId") or _query_batch_id(status_url) or ""
    message = fields.get("message") or ""
    return SubmitResult(batch_id=batch_id, status_url=status_url, message=message)


def batch_status(
    doc: Document, *, batch_id_hint: str | None = None, redact: Redact | None = None
) -> BatchStatus:
    """The status a status answer reports.

    ``batch_id_hint`` is the id we asked for (from the URL): it fills a
    missing ``<batchId>``, and an answer naming another batch is a
    ``ProtocolError`` (it would put one batch's counts on another). An
    unknown ``<status>`` value is a ``ProtocolError`` too: guessing would risk
    reporting rows as applied when they are not.
    """
    fields = doc.fields
    named = fields.get("batchId")
    if named and batch_id_hint and named != batch_id_hint:
        raise WrongBatchError(
            f"status response names batch {excerpt(named, 80, redact=redact)!r}, "
            f"not the batch asked for ({excerpt(batch_id_hint, 80, redact=redact)!r}); "
            "its counts are ignored"
        )
    batch_id = named or batch_id_hint
    if not batch_id:
        raise _protocol("status response has no <batchId>", doc, redact)
    raw_status = fields.get("status")
    if raw_status is None:
        raise _protocol("status response has no <status>", doc, redact)
    try:
        status = RemoteStatus(raw_status.lower())
    except ValueError:
        known = ", ".join(s.value for s in RemoteStatus)
        shown = excerpt(raw_status, 40, redact=redact)
        raise _protocol(
            f"status response has unknown status {shown!r} (known: {known})", doc, redact
        ) from None
    batch_size = _count(doc, "batchSize", redact)
    if batch_size is None:
        raise _protocol("status response has no <batchSize>", doc, redact)
    return BatchStatus(
        batch_id=batch_id,
        status=status,
        batch_size=batch_size,
        consumed=_count(doc, "consumedCount", redact),
        successful=_count(doc, "successfulUpdates", redact),
        not_found=_count(doc, "profilesNotFound", redact),
        failed=_count(doc, "failedUpdates", redact),
        profiles=doc.profiles,
        unlisted_profiles=doc.unlisted_profiles,
    )


def parse_error_message(body: bytes, *, redact: Redact | None = None) -> str:
    """Best-effort human message of an error answer (XML ``<message>``, JSON, or text)."""
    stripped = body.strip()
    if stripped.startswith(b"<"):
        reader = XmlReader(
            "error response",
            frozenset({"message"}),
            max_elements=ERROR_MAX_ELEMENTS,
            redact=redact,
        )
        try:
            message = _read(reader, stripped).fields.get("message")
        except ProtocolError:
            return excerpt(body, redact=redact)
        if message:
            return excerpt(message, redact=redact)
    return excerpt(body, redact=redact)


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delay-seconds or HTTP-date).

    ``None`` when absent or unparseable: the retry policy then uses its own
    backoff. Dates in the past give 0.
    """
    if value is None or not value.strip():
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # RFC 9110 dates are GMT
        when = when.replace(tzinfo=UTC)
    now = now or datetime.now(UTC)
    return max(0.0, (when - now).total_seconds())


def _read(reader: XmlReader, body: bytes) -> Document:
    if not body.strip():
        raise ProtocolError(f"{reader.what} is empty")
    reader.feed(body)
    return reader.close()


# Counts in a status answer are rows of one batch (at most 500,000); twelve digits
# leave room for any honest server and stay far inside SQLite's 64-bit integers.
_COUNT_DIGITS = 12


def _count(doc: Document, tag: str, redact: Redact | None) -> int | None:
    text = doc.fields.get(tag)
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit():
        shown = excerpt(text, 40, redact=redact)
        raise _protocol(f"status response <{tag}> is not a count: {shown!r}", doc, redact)
    if len(text) > _COUNT_DIGITS:  # no batch holds that many rows: not a count we can trust
        shown = excerpt(text, 40, redact=redact)
        raise _protocol(f"status response <{tag}> is out of range: {shown!r}", doc, redact)
    return int(text)


def _query_batch_id(url: str) -> str | None:
    try:
        query = urlsplit(url).query
    except ValueError:  # e.g. an unclosed IPv6 bracket: "http://[::1/..."
        return None
    values = parse_qs(query).get("batchId")
    return values[0] if values else None


def _protocol(problem: str, doc: Document, redact: Redact | None) -> ProtocolError:
    shown = excerpt(doc.head, redact=redact)
    return ProtocolError(f"{problem}; body starts: {shown!r}", problem=problem)
