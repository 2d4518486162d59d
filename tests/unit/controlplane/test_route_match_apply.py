"""Apply takes Kong's route matching fields (regex paths, hosts, headers, protocols) as data
planes serve them, and refuses a value they would refuse, naming the entry."""

from __future__ import annotations

import pytest

from controlplane.configsync.snapshot import build_snapshot
from controlplane.declarative import DeclarativeError, parse_document
from dataplane.proxy.compiler import compile_snapshot

from .test_declarative_validation import patched

ROUTE = "routes[0] (chat)"


def test_a_regex_route_with_every_matching_field_applies_and_compiles() -> None:
    document = parse_document(
        patched(
            {
                "routes[0].paths": ["~/v(?<version>\\d+)/chat$", "/chat"],
                "routes[0].regex_priority": 7,
                "routes[0].hosts": ["api.example.com", "*.example.org:8443"],
                "routes[0].headers": {"x-tier": ["gold", "~*^plat"]},
                "routes[0].protocols": ["https"],
                "routes[0].https_redirect_status_code": 301,
                "routes[0].preserve_host": True,
            }
        )
    )
    # Nothing of it is reported as not enforced.
    assert not [note for note in document.notes if "routes[0]" in note]
    (route,) = build_snapshot(document.gateway).snapshot.routes
    assert list(route.paths) == ["~/v(?<version>\\d+)/chat$", "/chat"]
    assert route.regex_priority == 7
    # The data plane's compiler takes what apply took.
    compiled = compile_snapshot(build_snapshot(document.gateway).snapshot, version="v1")
    served = compiled.routes.match(
        "/v2/chat", "POST", [(b"host", b"x.example.org:8443"), (b"x-tier", b"Platinum")]
    )
    assert served is not None and served.name == "chat"
    assert (served.https_redirect, served.preserve_host) == (301, True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        pytest.param(
            {"routes[0].paths": ["~/v1/(chat"]},
            f'{ROUTE}: paths[0] regex "/v1/(chat" does not compile: missing ), unterminated '
            "subpattern at position 4",
            id="invalid-regex",
        ),
        pytest.param(
            {"routes[0].paths": ["/chat", "~/" + "a" * 1100]},
            f"{ROUTE}: paths[1] is a regex longer than 1024 characters (1101)",
            id="huge-regex",
        ),
        pytest.param(
            {"routes[0].hosts": ["a.*.example.com"]},
            f'{ROUTE}: hosts[0] "a.*.example.com": a wildcard must be the leftmost or the '
            "rightmost label",
            id="host-wildcard-in-the-middle",
        ),
        pytest.param(
            {"routes[0].hosts": ["*.example.*"]},
            f'{ROUTE}: hosts[0] "*.example.*": only one wildcard is allowed',
            id="host-two-wildcards",
        ),
        pytest.param(
            {"routes[0].hosts": ["api.example.com:99999"]},
            f'{ROUTE}: hosts[0] "api.example.com:99999": the port must be a number from 1 to 65535',
            id="host-bad-port",
        ),
        pytest.param(
            {"routes[0].headers": {"host": ["a.com"]}},
            f"{ROUTE}: headers.host cannot be matched as a header: use hosts",
            id="header-host",
        ),
        pytest.param(
            {"routes[0].headers": {"x-tier": ["~*(gold"]}},
            f'{ROUTE}: headers.x-tier[0] regex "(gold" does not compile',
            id="header-bad-regex",
        ),
        pytest.param(
            {"routes[0].headers": {"x-tier": []}},
            f"{ROUTE}: headers.x-tier must list at least one value",
            id="header-no-values",
        ),
        pytest.param(
            {"routes[0].protocols": ["grpc"]},
            f"{ROUTE}: protocols grpc: data planes serve only http and https routes",
            id="protocols-not-served",
        ),
        pytest.param(
            {"routes[0].protocols": ["http", "htps"]},
            f"{ROUTE}: protocols[1] must be one of",
            id="protocol-unknown",
        ),
        pytest.param(
            {"routes[0].https_redirect_status_code": 303},
            f"{ROUTE}: https_redirect_status_code must be one of 426, 301, 302, 307, 308, got 303",
            id="redirect-code",
        ),
    ],
)
def test_a_matching_field_data_planes_would_refuse_is_refused(
    changes: dict[str, object], message: str
) -> None:
    with pytest.raises(DeclarativeError) as raised:
        parse_document(patched(changes))
    assert any(message in problem for problem in raised.value.problems), raised.value.problems
    assert len(raised.value.problems) == 1, raised.value.problems
