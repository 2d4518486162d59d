"""Collecting every problem of a declarative document before failing once."""

from __future__ import annotations

from controlplane.errors import InvalidArgument


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
    """An append-only list of problems found while parsing one document."""

    def __init__(self) -> None:
        self._messages: list[str] = []

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, where: str, message: str) -> None:
        self._messages.append(f"{where}: {message}" if where else message)

    def raise_if_any(self) -> None:
        if self._messages:
            raise DeclarativeError(tuple(self._messages))
