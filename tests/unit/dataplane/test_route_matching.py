"""Kong's route matching: prefixes, methods, hosts, headers, regex paths and priorities."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from dataplane.config.routing import RouteCriteria, RouteTable
from dataplane.errors import CompileError


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


# -- Kong's further criteria and priorities ------------------------------------------------------


def _headers(**values: str) -> list[tuple[bytes, bytes]]:
    return [(name.replace("_", "-").encode(), value.encode()) for name, value in values.items()]


def _one(criteria: RouteCriteria) -> RouteTable[FakeRoute]:
    return RouteTable([(CHAT, criteria)])


@pytest.mark.parametrize(
    ("hosts", "host", "scheme", "matched"),
    [
        pytest.param(("api.example.com",), "api.example.com", "http", True, id="exact"),
        pytest.param(("api.example.com",), "API.Example.com", "http", True, id="case-insensitive"),
        pytest.param(("api.example.com",), "api.example.com:8000", "http", True, id="any-port"),
        pytest.param(("api.example.com",), "other.example.com", "http", False, id="other-host"),
        pytest.param(("*.example.com",), "a.example.com", "http", True, id="leftmost-wildcard"),
        pytest.param(("*.example.com",), "x.y.example.com", "http", True, id="deeper-subdomain"),
        pytest.param(("*.example.com",), "example.com", "http", False, id="bare-domain"),
        pytest.param(("example.*",), "example.org", "http", True, id="rightmost-wildcard"),
        pytest.param(("example.*",), "examples.org", "http", False, id="rightmost-other"),
        pytest.param(("a.com:8000",), "a.com:8000", "http", True, id="port-given"),
        pytest.param(("a.com:8000",), "a.com:9000", "http", False, id="port-other"),
        pytest.param(("a.com:80",), "a.com", "http", True, id="port-default-http"),
        pytest.param(("a.com:443",), "a.com", "https", True, id="port-default-https"),
        pytest.param(("a.com:443",), "a.com", "http", False, id="port-default-mismatch"),
        pytest.param(("*.a.com:8000",), "x.a.com:8000", "http", True, id="wildcard-and-port"),
        pytest.param(("a.com", "b.com"), "b.com", "http", True, id="any-of-the-hosts"),
        pytest.param(("[::1]:8000",), "[::1]:8000", "http", True, id="ipv6-literal"),
    ],
)
def test_hosts(hosts: tuple[str, ...], host: str, scheme: str, matched: bool) -> None:
    routes = _one(RouteCriteria(paths=("/chat",), hosts=hosts))
    found = routes.match("/chat", "POST", _headers(host=host), scheme)
    assert (found is CHAT) is matched


def test_a_host_route_needs_a_host_header() -> None:
    assert _one(RouteCriteria(paths=("/",), hosts=("a.com",))).match("/", "GET") is None


@pytest.mark.parametrize(
    ("sent", "matched"),
    [
        pytest.param({"x_team": "blue"}, True, id="one-of-the-values"),
        pytest.param({"X_Team": "GREEN"}, True, id="names-and-values-any-case"),
        pytest.param({"x_team": "red"}, False, id="other-value"),
        pytest.param({}, False, id="header-missing"),
        pytest.param({"x_team": "blue", "x_other": "1"}, True, id="other-headers-ignored"),
    ],
)
def test_headers(sent: dict[str, str], matched: bool) -> None:
    routes = _one(RouteCriteria(paths=("/chat",), headers=(("X-Team", ("blue", "green")),)))
    assert (routes.match("/chat", "POST", _headers(**sent)) is CHAT) is matched


def test_every_header_must_match_and_a_repeated_header_matches_by_any_value() -> None:
    routes = _one(RouteCriteria(headers=(("x-a", ("1",)), ("x-b", ("2",)))))
    assert routes.match("/", "GET", _headers(x_a="1")) is None
    assert routes.match("/", "GET", [(b"x-a", b"0"), (b"x-a", b"1"), (b"x-b", b"2")]) is CHAT


def test_header_regex_values() -> None:
    routes = _one(RouteCriteria(headers=(("x-model", ("~*^gpt-4", "claude")),)))
    assert routes.match("/any", "GET", _headers(x_model="GPT-4o")) is CHAT
    assert routes.match("/any", "GET", _headers(x_model="claude")) is CHAT
    assert routes.match("/any", "GET", _headers(x_model="llama")) is None


def test_regex_paths_match_from_the_start_and_report_what_they_matched() -> None:
    routes = _one(RouteCriteria(paths=(r"~/v\d+/chat$",)))
    assert routes.find("/v1/chat", "POST") == (CHAT, len("/v1/chat"))
    assert routes.match("/v1/chat/x", "POST") is None  # $ anchors the end
    assert routes.match("/x/v1/chat", "POST") is None  # anchored at the start
    open_ended = _one(RouteCriteria(paths=(r"~/v\d+",)))
    assert open_ended.find("/v12/chat/completions", "POST") == (CHAT, len("/v12"))


def test_kong_named_groups_compile() -> None:
    routes = _one(RouteCriteria(paths=(r"~/version/(?<version>\d+)/chat",)))
    assert routes.match("/version/3/chat", "POST") is CHAT


def test_regex_paths_come_before_prefix_paths_then_by_regex_priority() -> None:
    prefix, low, high = FakeRoute("prefix"), FakeRoute("low"), FakeRoute("high")
    routes = RouteTable(
        [
            (prefix, RouteCriteria(paths=("/api/account",))),
            (low, RouteCriteria(paths=("~/api/.*",))),
            (high, RouteCriteria(paths=("~/api/acc",), regex_priority=5)),
        ]
    )
    # Kong's traditional_compat: regex before prefix, then the higher regex_priority.
    assert routes.match("/api/account/all", "GET") is high
    assert routes.match("/api/other", "GET") is low
    # Equal regex_priority: the route listed first.
    first, second = FakeRoute("first"), FakeRoute("second")
    tie = RouteTable(
        [(first, RouteCriteria(paths=("~/a",))), (second, RouteCriteria(paths=("~/a",)))]
    )
    assert tie.match("/a", "GET") is first


def test_more_criteria_win_over_a_longer_prefix() -> None:
    long_prefix = FakeRoute("long")
    with_method = FakeRoute("method")
    with_host = FakeRoute("host", frozenset({"POST"}))
    routes = RouteTable(
        [
            (long_prefix, RouteCriteria(paths=("/chat/v2/completions",))),
            (with_method, RouteCriteria(paths=("/chat",), methods=frozenset({"POST"}))),
            (
                with_host,
                RouteCriteria(paths=("/",), methods=frozenset({"POST"}), hosts=("a.com",)),
            ),
        ]
    )
    assert routes.match("/chat/v2/completions", "POST") is with_method
    assert routes.match("/chat/v2/completions", "POST", _headers(host="a.com")) is with_host
    assert routes.match("/chat/v2/completions", "GET") is long_prefix


def test_plain_hosts_before_wildcards_then_more_headers() -> None:
    wild, plain = FakeRoute("wild"), FakeRoute("plain")
    one, two = FakeRoute("one"), FakeRoute("two")
    hosts = RouteTable(
        [
            (wild, RouteCriteria(paths=("/",), hosts=("*.a.com",))),
            (plain, RouteCriteria(paths=("/",), hosts=("x.a.com",))),
        ]
    )
    assert hosts.match("/", "GET", _headers(host="x.a.com")) is plain
    assert hosts.match("/", "GET", _headers(host="y.a.com")) is wild
    headers = RouteTable(
        [
            (one, RouteCriteria(paths=("/",), headers=(("x-a", ("1",)),))),
            (two, RouteCriteria(paths=("/",), headers=(("x-a", ("1",)), ("x-b", ("2",))))),
        ]
    )
    assert headers.match("/", "GET", _headers(x_a="1", x_b="2")) is two
    assert headers.match("/", "GET", _headers(x_a="1")) is one


def test_a_route_without_paths_matches_every_path() -> None:
    routes = RouteTable(
        [
            (CHAT, RouteCriteria(paths=("/chat",))),
            (ROOT, RouteCriteria(hosts=("a.com",))),
        ]
    )
    # One criterion each: the route with a plain host comes first, the prefix catches the rest.
    assert routes.find("/chat/x", "POST", _headers(host="b.com")) == (CHAT, len("/chat"))
    assert routes.find("/chat/x", "POST", _headers(host="a.com")) == (ROOT, 0)


@pytest.mark.parametrize(
    ("criteria", "message"),
    [
        pytest.param(RouteCriteria(paths=("~/v1/(chat",)), "does not compile", id="bad-regex"),
        pytest.param(
            RouteCriteria(paths=("~/" + "a" * 2000,)), "longer than 1024", id="huge-regex"
        ),
        pytest.param(RouteCriteria(paths=("chat",)), 'does not start with "/"', id="no-slash"),
        pytest.param(RouteCriteria(hosts=("*.a.*",)), "only one wildcard", id="two-wildcards"),
        pytest.param(RouteCriteria(hosts=("a.*.com",)), "leftmost or the rightmost", id="mid"),
        pytest.param(RouteCriteria(hosts=("a.com:0",)), "port must be", id="port-zero"),
        pytest.param(RouteCriteria(hosts=("a b.com",)), "is not a host name", id="space"),
        pytest.param(
            RouteCriteria(headers=(("host", ("a.com",)),)), "matched with hosts", id="host-header"
        ),
        pytest.param(
            RouteCriteria(headers=(("x-a", ("~*(",)),)), "does not compile", id="header-regex"
        ),
        pytest.param(RouteCriteria(), "has no paths, methods, hosts or headers", id="empty"),
    ],
)
def test_criteria_that_do_not_compile(criteria: RouteCriteria, message: str) -> None:
    with pytest.raises(CompileError, match=re.escape(message)):
        RouteTable.check(criteria)


def test_prefix_only_tables_take_the_fast_path() -> None:
    assert TABLE._fast is not None
    assert _one(RouteCriteria(paths=("~/x",)))._fast is None
    assert _one(RouteCriteria(paths=("/x",), hosts=("a.com",)))._fast is None
