"""Kong-style prefix matching: longest prefix first, then methods."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from dataplane.config.routing import RouteCriteria, RouteTable


@dataclass(frozen=True)
class FakeRoute:
    name: str
    methods: frozenset[str] = frozenset()


ROOT = FakeRoute("root")
CHAT = FakeRoute("chat")
CHAT_V2 = FakeRoute("chat-v2")
CHAT_V2_GET = FakeRoute("chat-v2-get", frozenset({"GET"}))
EMBED = FakeRoute("embed", frozenset({"POST"}))


def table(*routes: tuple[FakeRoute, list[str]]) -> RouteTable[FakeRoute]:
    """A table of prefix routes (their methods from the route)."""
    return RouteTable(
        (route, RouteCriteria(paths=tuple(paths), methods=route.methods)) for route, paths in routes
    )


TABLE = table(
    (ROOT, ["/"]),
    (CHAT, ["/chat"]),
    (CHAT_V2, ["/chat/v2"]),
    (CHAT_V2_GET, ["/chat/v2/models"]),
    (EMBED, ["/embed", "/embeddings"]),
)


@pytest.mark.parametrize(
    ("path", "method", "expected"),
    [
        pytest.param("/chat", "POST", CHAT, id="exact"),
        pytest.param("/chat/chat/completions", "POST", CHAT, id="prefix"),
        pytest.param("/chat/v2/chat/completions", "POST", CHAT_V2, id="longest-prefix-wins"),
        pytest.param("/chat/v2/models", "GET", CHAT_V2_GET, id="method-match"),
        pytest.param("/chat/v2/models", "POST", CHAT_V2, id="method-mismatch-falls-through"),
        pytest.param("/embeddings", "POST", EMBED, id="second-path"),
        pytest.param("/embed", "GET", ROOT, id="method-filter-then-root"),
        pytest.param("/other", "GET", ROOT, id="root-catches-all"),
        pytest.param("/chatty", "POST", CHAT, id="plain-string-prefix-as-kong"),
    ],
)
def test_match(path: str, method: str, expected: FakeRoute) -> None:
    assert TABLE.match(path, method) is expected


def test_no_match_without_root() -> None:
    assert table((CHAT, ["/chat"])).match("/nope", "POST") is None


def test_equal_prefixes_first_listed_wins() -> None:
    first, second = FakeRoute("first"), FakeRoute("second")
    both = table((first, ["/x"]), (second, ["/x"]))
    assert both.match("/x/y", "GET") is first
    assert len(both) == 2
    assert list(both) == [first, second]
