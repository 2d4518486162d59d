"""What a route matches on, checked at apply as data planes will compile it.

Kong's route fields a data plane matches on (``dataplane/config/routing.py``, which the
control plane does not import: the planes share only the contract): regex paths
(``~/...``, Kong's PCRE spelling of named groups accepted), hosts (one wildcard, leftmost or
rightmost label, optional port), headers (any of the values; ``~*`` marks a regex),
protocols (data planes serve http and https) and https_redirect_status_code. A value a data
plane would refuse is refused here, naming the entry.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from controlplane.declarative.entry import Entry, describe

REGEX_MARK = "~"
# The same bound as data planes': what one request's matching may cost.
MAX_REGEX_LENGTH = 1024
KONG_PROTOCOLS = frozenset(
    {"http", "https", "grpc", "grpcs", "tcp", "tls", "tls_passthrough", "udp", "ws", "wss"}
)
SERVED_PROTOCOLS = frozenset({"http", "https"})
REDIRECT_CODES = (426, 301, 302, 307, 308)
_PCRE_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


def regex_problem(pattern: str) -> str | None:
    """Why ``pattern`` (a path after ``~``, a header value after ``~*``) is not a usable
    regex, or None."""
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"is a regex longer than {MAX_REGEX_LENGTH} characters ({len(pattern)})"
    try:
        re.compile(_PCRE_NAMED_GROUP.sub("(?P<", pattern))
    except re.error as exc:
        return f'regex "{pattern}" does not compile: {exc}'
    return None


def host_problem(host: str) -> str | None:
    """Why ``host`` is not a Kong route host (``example.com``, ``*.example.com``,
    ``example.*``, each with an optional ``:port``), or None."""
    name = host.strip().lower()
    if name.startswith("["):  # an IPv6 literal
        close = name.find("]")
        rest = name[close + 1 :] if close > 0 else "?"
        if rest and not (rest.startswith(":") and _is_port(rest[1:])):
            return f'"{host}" is not a host'
        return None
    if ":" in name:
        name, _, port = name.rpartition(":")
        if not _is_port(port):
            return f'"{host}": the port must be a number from 1 to 65535'
    if name.count("*") > 1:
        return f'"{host}": only one wildcard is allowed'
    labels = name.split(".")
    if "*" in name:
        if len(labels) < 2 or (labels[0] != "*" and labels[-1] != "*"):
            return f'"{host}": a wildcard must be the leftmost or the rightmost label'
        labels = [label for label in labels if label != "*"]
    if not name or not all(_HOST_LABEL.match(label) for label in labels):
        return f'"{host}" is not a host name'
    return None


def _is_port(text: str) -> bool:
    return text.isdigit() and 0 < int(text) < 65536


def check_paths(entry: Entry, paths: tuple[str, ...]) -> None:
    """Regex paths: a valid regex of bounded length (prefix paths are checked by the caller)."""
    for index, path in enumerate(paths):
        if path.startswith(REGEX_MARK):
            problem = regex_problem(path[len(REGEX_MARK) :])
            if problem is not None:
                entry.fail_field(f"paths[{index}]", problem)


def check_matching(entry: Entry) -> None:
    """Check the route fields data planes match on (their types are checked already)."""
    hosts = entry.data.get("hosts")
    if isinstance(hosts, list):
        for index, host in enumerate(hosts):
            problem = (
                host_problem(host)
                if isinstance(host, str) and host
                else f"must be a host name, got {describe(host)}"
            )
            if problem is not None:
                entry.fail_field(f"hosts[{index}]", problem)
    headers = entry.data.get("headers")
    if isinstance(headers, Mapping):
        for name, values in headers.items():
            _check_header(entry, str(name), values)
    protocols = entry.data.get("protocols")
    if isinstance(protocols, list):
        for index, protocol in enumerate(protocols):
            if protocol not in KONG_PROTOCOLS:
                entry.fail_field(
                    f"protocols[{index}]",
                    f"must be one of {', '.join(sorted(KONG_PROTOCOLS))}, got {describe(protocol)}",
                )
                return
        if protocols and not SERVED_PROTOCOLS & set(protocols):
            entry.fail_field(
                "protocols",
                f"{', '.join(protocols)}: data planes serve only http and https routes",
            )
    code = entry.data.get("https_redirect_status_code")
    if isinstance(code, int) and not isinstance(code, bool) and code not in REDIRECT_CODES:
        entry.fail_field(
            "https_redirect_status_code",
            f"must be one of {', '.join(map(str, REDIRECT_CODES))}, got {code}",
        )


def _check_header(entry: Entry, name: str, values: object) -> None:
    key = f"headers.{name}"
    if not _HEADER_NAME.match(name):
        entry.fail_field(key, "is not an HTTP header name")
        return
    if name.lower() == "host":
        entry.fail_field(key, "cannot be matched as a header: use hosts")
        return
    listed = [values] if isinstance(values, str) else values
    if not isinstance(listed, list):
        entry.fail_field(key, f"must be a list of header values, got {describe(values)}")
        return
    if not listed:
        entry.fail_field(key, "must list at least one value")
        return
    for index, value in enumerate(listed):
        if not isinstance(value, str):
            entry.fail_field(f"{key}[{index}]", f"must be a string, got {describe(value)}")
        elif value.startswith("~*"):
            problem = regex_problem(value[2:])
            if problem is not None:
                entry.fail_field(f"{key}[{index}]", problem)
