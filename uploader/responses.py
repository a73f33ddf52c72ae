"""Parse what the Target API answers into typed results (pure: no I/O, no aiohttp).

Sits between ``client.py`` (which reads at most a capped number of bytes off
the wire) and everything downstream, which only ever sees ``SubmitResult`` and
``BatchStatus``. Server XML is untrusted: it is parsed with ``defusedxml``
(no entity expansion, no DTD), elements we do not know are ignored, and
anything we cannot understand becomes a ``ProtocolError`` whose message
carries a short, printable excerpt of the body so an operator can see what
came back.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import parse_qs, urlsplit

import defusedxml
import defusedxml.ElementTree as SafeET

from uploader.errors import BatchRejectedError, ProtocolError
from uploader.states import RemoteStatus

__all__ = [
    "PROFILE_STATUSES",
    "STATUS_MAX_BYTES",
    "SUBMIT_MAX_BYTES",
    "BatchStatus",
    "ProfileStatus",
    "SubmitResult",
    "excerpt",
    "parse_error_message",
    "parse_retry_after",
    "parse_status",
    "parse_submit",
]

# A submit answer is a few hundred bytes; anything near this cap is not Target.
SUBMIT_MAX_BYTES = 1024 * 1024
# With showDetails and per-profile elements a 500,000-row batch can list every
# row (~100 bytes each); 64 MiB leaves room without letting a server exhaust memory.
STATUS_MAX_BYTES = 64 * 1024 * 1024

# Per-profile ``<status>`` values documented for v2. Others are passed through
# as-is (the poller decides), because a new value there does not make the
# batch counts wrong.
PROFILE_STATUSES = frozenset({"success", "error", "pending"})

_EXCERPT_CHARS = 200


@dataclass(frozen=True, slots=True)
class SubmitResult:
    """A batch the server accepted: follow ``status_url`` until it is final."""

    batch_id: str
    status_url: str
    message: str


@dataclass(frozen=True, slots=True)
class ProfileStatus:
    """One ``<profile>`` element of a v2 status answer (often only failed rows)."""

    id: str
    status: str  # usually one of PROFILE_STATUSES
    message: str | None = None


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
    profiles: tuple[ProfileStatus, ...] = ()


def excerpt(body: bytes | str, limit: int = _EXCERPT_CHARS) -> str:
    """A short, single-line, printable rendering of ``body`` for error messages.

    Control characters are replaced so a hostile body cannot forge log lines.
    """
    text = body if isinstance(body, str) else body[: limit * 4].decode("utf-8", "replace")
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def parse_submit(body: bytes) -> SubmitResult:
    """Parse a submit answer.

    ``success=false`` raises ``BatchRejectedError`` with the server's message;
    a missing or unusable ``<batchStatus>`` raises ``ProtocolError``.
    """
    root = _parse_xml(body, "submit response")
    success = _text(root, "success")
    if success is None:
        raise _protocol("submit response has no <success> element", body)
    if success.lower() == "false":
        message = _text(root, "message") or "no message"
        raise BatchRejectedError(f"batch rejected by the server: {excerpt(message)}")
    if success.lower() != "true":
        raise _protocol(f"submit response has <success>{excerpt(success, 40)}</success>", body)
    status_url = _text(root, "batchStatus")
    if not status_url:
        raise _protocol("submit response has no <batchStatus> URL", body)
    parts = urlsplit(status_url)
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise _protocol("submit response <batchStatus> is not an absolute http(s) URL", body)
    batch_id = _text(root, "batchId") or _query_batch_id(parts.query)
    if not batch_id:
        raise _protocol("submit response names no batch id (no batchId in <batchStatus>)", body)
    message = _text(root, "message") or ""
    return SubmitResult(batch_id=batch_id, status_url=status_url, message=message)


def parse_status(body: bytes, *, batch_id_hint: str | None = None) -> BatchStatus:
    """Parse a status answer; ``batch_id_hint`` (from the URL) fills a missing ``<batchId>``.

    An unknown ``<status>`` value is a ``ProtocolError``: guessing would risk
    reporting rows as applied when they are not.
    """
    root = _parse_xml(body, "status response")
    batch_id = _text(root, "batchId") or batch_id_hint
    if not batch_id:
        raise _protocol("status response has no <batchId>", body)
    raw_status = _text(root, "status")
    if raw_status is None:
        raise _protocol("status response has no <status>", body)
    try:
        status = RemoteStatus(raw_status.lower())
    except ValueError:
        known = ", ".join(s.value for s in RemoteStatus)
        raise _protocol(
            f"status response has unknown status {excerpt(raw_status, 40)!r} (known: {known})",
            body,
        ) from None
    batch_size = _count(root, "batchSize", body)
    if batch_size is None:
        raise _protocol("status response has no <batchSize>", body)
    return BatchStatus(
        batch_id=batch_id,
        status=status,
        batch_size=batch_size,
        consumed=_count(root, "consumedCount", body),
        successful=_count(root, "successfulUpdates", body),
        not_found=_count(root, "profilesNotFound", body),
        failed=_count(root, "failedUpdates", body),
        profiles=_profiles(root, body),
    )


def parse_error_message(body: bytes) -> str:
    """Best-effort human message of an error answer (XML ``<message>``, JSON, or text)."""
    stripped = body.strip()
    if stripped.startswith(b"<"):
        try:
            root = _parse_xml(stripped, "error response")
        except ProtocolError:
            return excerpt(body)
        message = _text(root, "message")
        if message:
            return excerpt(message)
    return excerpt(body)


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


def _parse_xml(body: bytes, what: str) -> ET.Element:
    if not body.strip():
        raise ProtocolError(f"{what} is empty")
    try:
        root: ET.Element = SafeET.fromstring(body, forbid_dtd=True)
    except ET.ParseError as exc:
        raise _protocol(f"{what} is not well-formed XML ({exc})", body) from exc
    except defusedxml.DefusedXmlException as exc:
        raise _protocol(f"{what} uses forbidden XML features ({type(exc).__name__})", body) from exc
    return root


def _text(root: ET.Element, tag: str) -> str | None:
    """Stripped text of a direct child of ``root``, ``""`` if empty, ``None`` if absent.

    Only direct children are searched so that ``<profile><status>`` never
    shadows the batch's own ``<status>``.
    """
    element = root.find(tag)
    if element is None:
        return None
    return (element.text or "").strip()


def _count(root: ET.Element, tag: str, body: bytes) -> int | None:
    text = _text(root, tag)
    if text is None or text == "":
        return None
    if not text.isascii() or not text.isdigit():
        raise _protocol(f"status response <{tag}> is not a count: {excerpt(text, 40)!r}", body)
    return int(text)


def _profiles(root: ET.Element, body: bytes) -> tuple[ProfileStatus, ...]:
    # v2 lists profiles either directly under the root or inside a wrapper
    # element (<profiles>); both are accepted, and nothing deeper.
    found = list(root.findall("profile")) + list(root.findall("*/profile"))
    profiles = []
    for element in found:
        profile_id = _text(element, "id")
        status = _text(element, "status")
        if not profile_id or not status:
            raise _protocol("status response has a <profile> without <id> or <status>", body)
        message = _text(element, "message")
        profiles.append(ProfileStatus(profile_id, status.lower(), message or None))
    return tuple(profiles)


def _query_batch_id(query: str) -> str | None:
    values = parse_qs(query).get("batchId")
    return values[0] if values else None


def _protocol(problem: str, body: bytes) -> ProtocolError:
    return ProtocolError(f"{problem}; body starts: {excerpt(body)!r}")
