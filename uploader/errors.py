"""The one error tree of the project.

Everything that can go wrong is an ``UploaderError``. Third-party exceptions
(aiohttp, XML, csv, sqlite) are mapped into this tree where they enter, with
``raise ... from exc``. The split that matters to callers is *retryable*
(try the same request again later) versus *permanent* (trying again cannot
help). ``exit_code`` is what the command line returns when such an error ends
a command.
"""

from __future__ import annotations

import errno

__all__ = [
    "AuthError",
    "BatchRejectedError",
    "ConfigError",
    "ErrorStreakError",
    "InputError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PermanentError",
    "ProtocolError",
    "RetryableError",
    "ServerError",
    "StorageError",
    "ThrottledError",
    "TransportError",
    "UnreadableStatusError",
    "UnusableURLError",
    "UploaderError",
    "WrongBatchError",
    "storage_error",
    "storage_problem",
]


class UploaderError(Exception):
    """Root of every error the project raises on purpose."""

    exit_code = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class RetryableError(UploaderError):
    """The same request may succeed if sent again later."""


class TransportError(RetryableError):
    """Connection refused or reset, DNS failure, timeout: nothing usable came back.

    ``action`` (``submit``), ``host`` (``127.0.0.1:9``) and ``reason``, the
    failure in a few words (``cannot connect (Connection refused)``), are for
    the one warning line ``outages.py`` prints; empty when not known.
    """

    def __init__(self, message: str, *, action: str = "", host: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.action = action
        self.host = host
        self.reason = reason


class OutcomeUnknownError(TransportError):
    """The connection was lost after the request body was sent.

    The server may have accepted the batch; sending it again is correct under
    at-least-once delivery, and the resend is counted, never hidden.
    """


class ThrottledError(RetryableError):
    """HTTP 429 (or 503 with ``Retry-After``): the server asks us to slow down."""

    def __init__(
        self, message: str, *, status: int = 429, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


class ServerError(RetryableError):
    """HTTP 408, 500, 502, 503 or 504."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class ErrorStreakError(UploaderError):
    """``submit.stop_after_errors`` submit attempts in a row ended in an error.

    Not about one batch: the server keeps failing, so the run stops sending
    and keeps the batches not yet accepted for the next run (exit 3).
    """

    exit_code = 3


class PermanentError(UploaderError):
    """Sending the same request again cannot succeed."""


class BatchRejectedError(PermanentError):
    """The server refused the batch: ``success=false``, HTTP 400 or 413."""

    def __init__(self, message: str, *, status: int = 200) -> None:
        super().__init__(message)
        self.status = status


class AuthError(PermanentError):
    """HTTP 401 or 403: the token is missing, wrong or lacks rights."""

    def __init__(self, message: str, *, status: int = 401) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(PermanentError):
    """HTTP 404: wrong client code, wrong API path, or unknown batch id."""


class ProtocolError(PermanentError):
    """The server answered with something we cannot understand (bad XML, unknown status).

    ``problem`` is the message without the excerpt of the body (for a warning
    line); ``status`` the HTTP status of the answer, when one came.
    """

    def __init__(self, message: str, *, problem: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.problem = problem or message
        self.status = status


class WrongBatchError(ProtocolError):
    """A status answer named another batch than the one asked for."""


class UnreadableStatusError(PermanentError):
    """A batch's status answers stayed unreadable for ``status.max_unreadable`` calls in a row.

    Target accepted the batch; asking on until ``--status-timeout`` would only
    hide the problem (a redirect, a maintenance page, a proxy in the way), so
    the run stops and the batch stays accepted for a later ``status --refresh``.
    """


class UnusableURLError(ProtocolError):
    """A URL the server named that we refuse to call (credentials in it, plain http...).

    Asking again cannot help: every call of that URL meets the same refusal.
    """


class InputError(PermanentError):
    """The input as a whole cannot be used: nothing is sent."""

    exit_code = 2


class ConfigError(PermanentError):
    """Bad configuration file, flag or environment: nothing is sent."""

    exit_code = 2


class StorageError(UploaderError):
    """The work dir cannot be written: full, over a file-size limit, or read-only.

    Not a bug and not the input's fault: the message names the path and the
    problem. Exit 2 when it stops a run before anything was sent; a run that
    had sent batches ends with exit 3 (free space and run the same command).
    """

    exit_code = 2


def storage_error(exc: BaseException, path: object = None) -> StorageError | None:
    """``exc`` as a one-line StorageError naming the path, when it is about the disk."""
    problem = storage_problem(exc)
    if problem is None:
        return None
    where = getattr(exc, "filename", None) or path or "the work dir"
    return StorageError(
        f"cannot write {where}: {problem}; free space and run the same command again"
    )


def storage_problem(exc: BaseException) -> str | None:
    """What is wrong with the disk, when ``exc`` is an OSError about the disk itself."""
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        return _STORAGE_ERRNOS[exc.errno]
    return None


_STORAGE_ERRNOS = {
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "file too large (over the file-size limit, ulimit -f)",
    errno.EROFS: "read-only file system",
    errno.EDQUOT: "disk quota exceeded",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
