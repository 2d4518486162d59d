"""The data plane's edge limits as flags: defaults, values carried through, bad values refused."""

from __future__ import annotations

import argparse

import pytest

from dataplane import cli
from dataplane.config.cluster import ClusterConfigError
from dataplane.http.client import DEFAULT_MAX_RESPONSE_BYTES
from dataplane.http.server import DEFAULT_LIMITS, ServerLimits


def parse(*flags: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(["--cp", "127.0.0.1:1", *flags])


def test_defaults_are_the_servers_defaults() -> None:
    args = parse()
    assert cli._limits_from_args(args) == DEFAULT_LIMITS
    assert args.max_upstream_response_bytes == DEFAULT_MAX_RESPONSE_BYTES
    assert DEFAULT_LIMITS.header_timeout_s == 10.0 and DEFAULT_LIMITS.keep_alive_s == 5.0


def test_every_limit_flag_reaches_the_server_limits() -> None:
    args = parse(
        "--header-timeout=3",
        "--body-timeout=20",
        "--keep-alive-timeout=2.5",
        "--max-requests-per-connection=100",
        "--max-connections=500",
        "--max-connections-per-client=50",
    )
    assert cli._limits_from_args(args) == ServerLimits(
        header_timeout_s=3.0,
        body_timeout_s=20.0,
        keep_alive_s=2.5,
        max_requests_per_connection=100,
        max_connections=500,
        max_connections_per_client=50,
    )


@pytest.mark.parametrize(
    ("flag", "message"),
    [
        pytest.param("--header-timeout=0", "header_timeout_s must be positive", id="timeout"),
        pytest.param("--max-connections=0", "max_connections must be at least 1", id="cap"),
        pytest.param("--max-body-bytes=0", "--max-body-bytes must be at least 1", id="body"),
        pytest.param(
            "--max-upstream-response-bytes=-1",
            "--max-upstream-response-bytes must be at least 1",
            id="response",
        ),
    ],
)
def test_a_bad_limit_is_refused_with_its_name(flag: str, message: str) -> None:
    with pytest.raises(ClusterConfigError, match=message):
        cli._limits_from_args(parse(flag))
