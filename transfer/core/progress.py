"""How the library tells the caller what it is doing, without printing.

Long operations take a `Reporter`. The default one is silent; the CLI passes one that draws rich
progress bars and messages. Keras' own progress bars are controlled separately through `verbose`.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Protocol


class Progress(Protocol):
    def advance(self, amount: int = 1) -> None: ...


class Reporter:
    """Silent reporter; subclass and override to show messages and progress."""

    def message(self, text: str) -> None:
        """A line of information for the user (counts, decisions, warnings)."""

    def warning(self, text: str) -> None:
        """Something the user should know about that does not stop the work."""
        self.message(text)

    @contextmanager
    def progress(self, description: str, total: int) -> Iterator[Progress]:
        """A unit of work of `total` steps; call `advance()` as steps finish."""
        yield _NoProgress()


class _NoProgress:
    def advance(self, amount: int = 1) -> None:
        pass


SILENT = Reporter()
