"""The one error tree of the project.

Everything that can go wrong is an ``UploaderError``. Third-party exceptions
(aiohttp, XML, csv, sqlite) are mapped into this tree where they enter, with
``raise ... from exc``. The split that matters to callers is *retryable*
(try the same request again later) versus *permanent* (trying again cannot
help). ``exit_code`` is what the command line returns when such an error ends
a command.
"""

from __future__ import annotations

__all__ = [
    "AuthError",
    "BatchRejectedError",
    "ConfigError",
    "InputError",
    "NotFoundError",
    "OutcomeUnknownError",
    "PermanentError",
    "ProtocolError",
    "RetryableError",
    "ServerError",
    "ThrottledError",
    "TransportError",
    "UploaderError",
    "WrongBatchError",
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
    """Connection refused or reset, DNS failure, timeout: nothing usable came back."""


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
    """The server answered with something we cannot understand (bad XML, unknown status)."""


class WrongBatchError(ProtocolError):
    """A status answer named another batch than the one asked for."""


class InputError(PermanentError):
    """The input as a whole cannot be used: nothing is sent."""

    exit_code = 2


class ConfigError(PermanentError):
    """Bad configuration file, flag or environment: nothing is sent."""

    exit_code = 2
