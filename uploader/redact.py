"""Keep the token, and every piece of it, out of what we print and store.

A server may echo our ``Authorization`` header back (a proxy's 401 page, a
debugging 413 body), and any text that came from a server can end up on
stderr, in ``report.json`` and in the journal. ``Redactor`` is applied to
such text *before* it is cut to an excerpt, so a cut can never leave a long
piece of the token behind. It removes:

- any ``Bearer <credential>`` (whatever the credential is: also someone
  else's token), and the value of an ``Authorization:`` header;
- every run of ``MIN_RUN`` (8) or more characters that also occurs in our
  token, wherever it stands.

Pure and cheap. A text shares a run of 8 characters with the token only if
one of its 4-character pieces at a position divisible by 4 is a piece of the
token (such a position falls inside any run of 8), so a quarter-length pass
over the text clears it; only a text that fails it is scanned in full with
the set of the token's 8-character windows.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["MARK", "MIN_RUN", "Redactor", "excerpt"]

MARK = "[token]"
# A run this long that also occurs in the token is treated as part of it.
MIN_RUN = 8
# Every run of MIN_RUN holds a piece this long starting at a multiple of it.
_PIECE = MIN_RUN // 2

_EXCERPT_CHARS = 200

# A credential: 8 or more token characters (RFC 6750 b64token), so that the
# words of a sentence ("the Bearer token in ...") are left alone.
_CREDENTIAL = r"[A-Za-z0-9\-._~+/]{8,}=*"
_BEARER = re.compile(r"(?i)\b(bearer)(\s+|%20|\+)" + _CREDENTIAL)
_AUTH_HEADER = re.compile(r"(?i)\b(authorization)(\s*[:=]\s*)(?!bearer\b)" + _CREDENTIAL)


class Redactor:
    """``redact(text)`` -> ``text`` without the token or any credential in it."""

    __slots__ = ("_pieces", "_token", "_windows")

    def __init__(self, token: str | None) -> None:
        self._token = token or ""
        self._windows = frozenset(
            self._token[i : i + MIN_RUN] for i in range(len(self._token) - MIN_RUN + 1)
        )
        self._pieces = frozenset(
            self._token[i : i + _PIECE] for i in range(len(self._token) - _PIECE + 1)
        )

    def __call__(self, text: str) -> str:
        # The patterns need their keyword: ASCII text without it is skipped (cheaply,
        # as most text is); other text may spell it with letters re folds to ASCII.
        lower = text.lower()
        if not text.isascii() or "bearer" in lower:
            text = _BEARER.sub(lambda m: f"{m.group(1)} {MARK}", text)
        if not text.isascii() or "authorization" in lower:
            text = _AUTH_HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MARK}", text)
        if not self._token:
            return text
        if len(self._token) < MIN_RUN:  # too short for windows: only the whole token
            return text.replace(self._token, MARK)
        return self._cut_runs(text)

    def contains_secret(self, text: str) -> bool:
        """True when ``text`` holds a credential or a piece of the token."""
        return self(text) != text

    def _cut_runs(self, text: str) -> str:
        pieces = self._pieces
        if not any(text[i : i + _PIECE] in pieces for i in range(0, len(text) - 3, _PIECE)):
            return text  # no run of 8 in common with the token
        windows = self._windows
        spans: list[list[int]] = []
        for i in range(len(text) - MIN_RUN + 1):
            if text[i : i + MIN_RUN] in windows:
                if spans and spans[-1][1] >= i:
                    spans[-1][1] = i + MIN_RUN
                else:
                    spans.append([i, i + MIN_RUN])
        if not spans:
            return text
        out, last = [], 0
        for start, end in spans:
            out.append(text[last:start])
            out.append(MARK)
            last = end
        out.append(text[last:])
        return "".join(out)


def excerpt(
    body: bytes | str, limit: int = _EXCERPT_CHARS, *, redact: Callable[[str], str] | None = None
) -> str:
    """A short, single-line, printable rendering of ``body`` for error messages.

    ``redact`` runs on the text *before* it is cut, so a cut cannot leave a
    long piece of a secret behind. Control characters are replaced so a
    hostile body cannot forge log lines.
    """
    text = body if isinstance(body, str) else body[: limit * 4].decode("utf-8", "replace")
    if redact is not None:
        text = redact(text)
    text = " ".join(text.split())
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
