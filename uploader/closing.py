"""``with thing:`` closes the thing at the end: one mix-in for whatever has a ``close()``.

The journal, verify's store, the metrics server and every input source
hold something (a connection, a file, a thread) that must be released however
the block ends; they inherit ``__enter__``/``__exit__`` from here and write
only ``close()``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

__all__ = ["Closing"]


class Closing:
    """``with obj:`` returns ``obj`` and calls ``obj.close()`` on the way out."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
