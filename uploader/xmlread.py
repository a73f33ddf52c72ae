"""Bounded, incremental reading of the XML a server answers (pure: no I/O).

``client.py`` feeds the bytes of an answer to an ``XmlReader`` as they come
off the socket, a chunk at a time, so neither the whole body nor a tree of it
is ever held: the reader keeps only the text of the few elements we use (the
direct children of the root named in ``fields``) and the ``<profile>``
entries of a status answer, up to ``max_profiles`` of them. Whatever a
hostile server sends within the byte cap costs bounded memory, and no single
``feed`` of a 64 KiB chunk can keep the event loop busy for long, because the
reader stops at the first of these limits:

- no DTD at all (so no entity expansion, no external entities);
- at most ``MAX_DEPTH`` levels of nesting (Target's answers use 4);
- at most ``max_elements`` elements;
- at most ``MAX_TEXT_CHARS`` characters of text in a field we keep.

Errors are ``ProtocolError`` with a short, redacted excerpt of the body's
beginning, in the words ``responses.py`` uses.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, NoReturn, overload
from xml.parsers import expat

from uploader.errors import ProtocolError
from uploader.redact import excerpt

__all__ = [
    "MAX_DEPTH",
    "MAX_TEXT_CHARS",
    "Document",
    "ListedProfiles",
    "ProfileStatus",
    "XmlReader",
]

# <response><profiles><profile><id> is 4 deep; a little room for wrappers.
MAX_DEPTH = 8
# An id, a URL, a count or a status word; a longer message is cut, not refused.
MAX_TEXT_CHARS = 8192
# Bytes of the body's start kept for error excerpts.
HEAD_BYTES = 1024

_PROFILE_FIELDS = frozenset({"id", "status", "message"})

Redact = Callable[[str], str]


class ProfileStatus(NamedTuple):
    """One ``<profile>`` element of a v2 status answer (often only failed rows)."""

    id: str
    status: str  # lower case; usually one of responses.PROFILE_STATUSES
    message: str | None = None


class ListedProfiles(Sequence[ProfileStatus]):
    """The ``<profile>`` entries kept of one answer: stored as plain tuples, read as
    ``ProfileStatus``.

    The garbage collector stops tracking an exact tuple of strings at its
    first collection, but never an instance of a tuple subclass such as a
    NamedTuple. 100,000 entries kept as ``ProfileStatus`` stayed tracked, so
    the full collections they set off while the answer was read each held
    the event loop 20-80 ms (``bench_hostile``, profile errors); plain, they
    cost a collection nothing. Each item read is made on access.
    """

    __slots__ = ("_rows",)

    def __init__(self, entries: Iterable[tuple[str, str, str | None]] = ()) -> None:
        self._rows: list[tuple[str, str, str | None]] = [
            (e[0], e[1], e[2])
            for e in entries  # a ProfileStatus given is stored plain
        ]

    def append(self, profile_id: str, status: str, message: str | None) -> None:
        self._rows.append((profile_id, status, message))

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> ProfileStatus: ...
    @overload
    def __getitem__(self, index: slice) -> tuple[ProfileStatus, ...]: ...
    def __getitem__(self, index: int | slice) -> ProfileStatus | tuple[ProfileStatus, ...]:
        if isinstance(index, slice):
            return tuple(ProfileStatus._make(row) for row in self._rows[index])
        return ProfileStatus._make(self._rows[index])

    def __iter__(self) -> Iterator[ProfileStatus]:
        return map(ProfileStatus._make, self._rows)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ListedProfiles):
            return self._rows == other._rows
        if isinstance(other, Sequence) and not isinstance(other, str):
            return len(other) == len(self._rows) and all(
                tuple(a) == b for a, b in zip(other, self._rows, strict=True)
            )
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ListedProfiles({len(self._rows)} entries)"


@dataclass
class Document:
    """What was kept of one answer."""

    root: str
    fields: dict[str, str]  # text of the first direct child of the root per wanted name
    profiles: ListedProfiles
    unlisted_profiles: int  # <profile> entries beyond ``max_profiles``: counted, not kept
    head: bytes  # the first bytes of the body, for error excerpts
    size: int  # bytes read


@dataclass
class _Open:
    name: str
    keep: str | None = None  # "field" | "profile" | "pfield" | None
    text: list[str] = field(default_factory=list)
    chars: int = 0


_SKIP = _Open("")


_HANDLERS = (
    "StartDoctypeDeclHandler",
    "EntityDeclHandler",
    "UnparsedEntityDeclHandler",
    "ExternalEntityRefHandler",
    "StartElementHandler",
    "EndElementHandler",
    "CharacterDataHandler",
)


class XmlReader:
    """``feed(chunk)`` repeatedly, then ``close()`` -> ``Document``; one answer per reader."""

    def __init__(
        self,
        what: str,
        fields: frozenset[str],
        *,
        max_elements: int,
        max_profiles: int = 0,
        redact: Redact | None = None,
    ) -> None:
        self.what = what
        self._fields = fields
        self._max_elements = max_elements
        self._max_profiles = max_profiles
        self._redact = redact
        self._stack: list[_Open] = []
        self._elements = 0
        self._profile: dict[str, str] | None = None
        self._doc = Document("", {}, ListedProfiles(), 0, b"", 0)
        self._head = bytearray()
        parser = expat.ParserCreate()
        parser.buffer_text = True
        parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        parser.StartDoctypeDeclHandler = self._forbidden
        parser.EntityDeclHandler = self._forbidden
        parser.UnparsedEntityDeclHandler = self._forbidden
        parser.ExternalEntityRefHandler = self._forbidden
        parser.StartElementHandler = self._start
        parser.EndElementHandler = self._end
        parser.CharacterDataHandler = self._chars
        self._parser = parser

    def feed(self, data: bytes) -> None:
        if len(self._head) < HEAD_BYTES:
            self._head += data[: HEAD_BYTES - len(self._head)]
        self._doc.size += len(data)
        self._parse(data, final=False)

    def close(self) -> Document:
        self._doc.head = bytes(self._head)
        if not self._head.strip():
            raise ProtocolError(f"{self.what} is empty")
        self._parse(b"", final=True)
        self._unhook()
        return self._doc

    def error(self, problem: str) -> ProtocolError:
        """A ``ProtocolError`` naming ``problem`` with an excerpt of the body's start."""
        shown = excerpt(bytes(self._head), redact=self._redact)
        return ProtocolError(f"{problem}; body starts: {shown!r}", problem=problem)

    # -- expat callbacks ------------------------------------------------------------

    def _parse(self, data: bytes, *, final: bool) -> None:
        try:
            self._parser.Parse(data, final)
        except expat.ExpatError as exc:
            self._unhook()
            raise self.error(
                f"{self.what} is not well-formed XML ({expat.ErrorString(exc.code)}: "
                f"line {exc.lineno}, column {exc.offset})"
            ) from None
        except BaseException:  # a bound crossed in a callback: this answer is done
            self._unhook()
            raise

    def _unhook(self) -> None:
        """Clear the parser's callbacks once the answer is read or refused.

        They are methods of this reader, so the parser and the reader hold
        each other: a cycle that only a full garbage collection frees, and
        with it the kept profiles (up to 100,000 per answer). Unhooked, both
        go as soon as the caller drops the reader.
        """
        for name in _HANDLERS:
            setattr(self._parser, name, None)

    def _forbidden(self, *args: Any) -> NoReturn:
        raise self.error(f"{self.what} uses forbidden XML features (DTD or entity declaration)")

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self._elements += 1
        stack = self._stack
        if self._elements > self._max_elements:
            raise self.error(f"{self.what} has more than {self._max_elements:,} elements")
        if len(stack) >= MAX_DEPTH:
            raise self.error(f"{self.what} is nested deeper than {MAX_DEPTH} levels")
        if not stack:
            self._doc.root = name
            stack.append(_SKIP)
            return
        depth = len(stack) + 1
        keep: str | None = None
        if name == "profile" and depth <= 3 and self._profile is None:
            keep = "profile"
            self._profile = {}
        elif stack[-1].keep == "profile" and name in _PROFILE_FIELDS:
            keep = "pfield"
        elif depth == 2 and name in self._fields and name not in self._doc.fields:
            keep = "field"
        # Elements we do not keep share one marker: a flood of them allocates nothing.
        stack.append(_SKIP if keep is None else _Open(name, keep))

    def _chars(self, data: str) -> None:
        top = self._stack[-1] if self._stack else _SKIP
        if top.keep not in ("field", "pfield"):
            return
        room = MAX_TEXT_CHARS - top.chars
        if len(data) > room and top.name != "message":
            raise self.error(
                f"{self.what} <{top.name}> is longer than {MAX_TEXT_CHARS:,} characters"
            )
        if room > 0:
            top.text.append(data[:room])
            top.chars += min(len(data), room)

    def _end(self, name: str) -> None:
        top = self._stack.pop()
        if top is _SKIP:
            return
        if top.keep == "field":
            self._doc.fields[top.name] = "".join(top.text).strip()
        elif top.keep == "pfield" and self._profile is not None:
            self._profile.setdefault(top.name, "".join(top.text).strip())
        elif top.keep == "profile" and self._profile is not None:
            entry, self._profile = self._profile, None
            if not entry.get("id") or not entry.get("status"):
                raise self.error(f"{self.what} has a <profile> without <id> or <status>")
            if len(self._doc.profiles) < self._max_profiles:
                self._doc.profiles.append(
                    entry["id"], sys.intern(entry["status"].lower()), entry.get("message") or None
                )
            else:
                self._doc.unlisted_profiles += 1
