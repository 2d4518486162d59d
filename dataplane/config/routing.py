"""Kong-style route matching: path prefixes, longest first, then the method filter."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Generic, Protocol, TypeVar


class Routable(Protocol):
    """What the table needs from a route."""

    @property
    def methods(self) -> frozenset[str]: ...


R = TypeVar("R", bound=Routable)


class RouteTable(Generic[R]):
    """Maps a request path and method to a route.

    Every path of every route is a candidate prefix; the longest matching prefix wins, as in
    Kong. Among equal prefixes the route listed first wins, so matching is deterministic. A
    route with methods only matches those methods, and a mismatch falls through to the next
    shorter prefix.
    """

    __slots__ = ("_entries", "_routes")

    def __init__(self, routes: Iterable[tuple[R, Iterable[str]]]) -> None:
        entries: list[tuple[str, int, R]] = []
        routes_seen: list[R] = []
        for order, (route, paths) in enumerate(routes):
            routes_seen.append(route)
            entries.extend((path, order, route) for path in paths)
        # Sort once per snapshot so a lookup is a single scan that stops at the first hit.
        entries.sort(key=lambda entry: (-len(entry[0]), entry[1]))
        self._entries = tuple((path, route) for path, _, route in entries)
        self._routes = tuple(routes_seen)

    def match(self, path: str, method: str) -> R | None:
        """Return the route for ``path`` and ``method``, or None."""
        for prefix, route in self._entries:
            if path.startswith(prefix) and (not route.methods or method in route.methods):
                return route
        return None

    def match_prefix(self, path: str, method: str) -> tuple[R, str] | None:
        """Return the route for ``path`` and ``method`` with the path prefix that matched."""
        for prefix, route in self._entries:
            if path.startswith(prefix) and (not route.methods or method in route.methods):
                return route, prefix
        return None

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[R]:
        return iter(self._routes)
