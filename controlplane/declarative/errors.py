"""Collecting every problem of a declarative document before failing once."""

from __future__ import annotations

import re

from controlplane.errors import InvalidArgument

# The " (name)" an entry's location carries after its index.
_LABEL = re.compile(r" \([^()]*\)")


class DeclarativeError(InvalidArgument):
    """A declarative document is invalid; ``problems`` lists each problem, in document order.

    Each problem names its entry, like ``routes[1] (chat): paths[0] must start with "/"``.
    """

    def __init__(self, problems: tuple[str, ...]) -> None:
        self.problems = problems
        if len(problems) == 1:
            message = problems[0]
        else:
            message = f"{len(problems)} problems in the declarative config:\n" + "\n".join(
                f"- {problem}" for problem in problems
            )
        super().__init__(message)


class Problems:
    """An append-only list of problems found while parsing one document, and of notes: fields
    accepted that Meterline does not enforce (``plugins[3].config.vectordb: accepted, not
    enforced: <reason>``), reported by apply beside its changes."""

    def __init__(self) -> None:
        self._messages: list[str] = []
        self.notes: list[str] = []

    def note(self, where: str, path: str, reason: str) -> None:
        # Entries are named by position only ("plugins[3]"), as decK reports paths.
        location = _LABEL.sub("", where)
        where_path = f"{location}.{path}" if location else path
        self.notes.append(f"{where_path}: accepted, not enforced: {reason}")

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, where: str, message: str) -> None:
        self._messages.append(f"{where}: {message}" if where else message)

    def raise_if_any(self) -> None:
        if self._messages:
            raise DeclarativeError(tuple(self._messages))
