"""Kong's route matching (its ``traditional_compat`` router), compiled once per snapshot.

A route matches a request when every criterion it sets matches: one of its ``paths`` (a plain
prefix, or a regex written ``~/...`` matched from the start of the path), one of its
``methods``, one of its ``hosts`` (``example.com``, ``*.example.com`` or ``example.*``, with
an optional ``:port``) and each of its ``headers`` (any of the values listed for it; a value
written ``~*...`` is a case-insensitive regex). Among the routes that match, the table picks
as Kong does, comparing (route, path) pairs by, in order:

1. the number of criteria the route sets (methods, hosts, headers, paths), most first;
2. a route whose hosts have no wildcard before one whose hosts have one;
3. the number of headers the route matches on, most first;
4. a regex path before a prefix path;
5. regex paths by ``regex_priority``, highest first; prefix paths by length, longest first;
6. the route listed first in the snapshot (Kong: the one created first).

A host with a port matches only that port: the Host header's, or the scheme's default (80
for http) when the header names none, as Kong's router reads it. Protocols are not a
matching criterion in Kong either: a route for https only still matches a plain http request,
which the gateway then answers with 426 (or the route's redirect).

Fast path: a table none of whose routes sets hosts, headers or a regex path (the common,
prefix-only case) is one scan of (prefix, methods) pairs, as before these criteria existed.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from dataplane.errors import CompileError

R = TypeVar("R")

REGEX_MARK = "~"
# Longest regex (path or header value) a route may carry: bounds what one request costs.
MAX_REGEX_LENGTH = 1024
_HEADER_REGEX_MARK = "~*"
# PCRE's named group (Kong's regexes) in Python's spelling; lookbehinds are left alone.
_PCRE_NAMED_GROUP = re.compile(r"\(\?<(?=[A-Za-z_])")
_HOST_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?$")

Headers = Sequence[tuple[bytes, bytes]]


def compile_regex(pattern: str) -> re.Pattern[str]:
    """A Kong regex (the text after ``~``) as a Python pattern; CompileError if it is not one."""
    if len(pattern) > MAX_REGEX_LENGTH:
        raise CompileError(f"regex is longer than {MAX_REGEX_LENGTH} characters")
    try:
        return re.compile(_PCRE_NAMED_GROUP.sub("(?P<", pattern))
    except re.error as exc:
        raise CompileError(f'regex "{pattern}" does not compile: {exc}') from None


@dataclass(frozen=True, slots=True)
class RouteCriteria:
    """What a route matches on, as the snapshot gives it."""

    paths: tuple[str, ...] = ()
    methods: frozenset[str] = frozenset()
    hosts: tuple[str, ...] = ()
    # (header name, values): any of the values; names in any case.
    headers: tuple[tuple[str, tuple[str, ...]], ...] = ()
    regex_priority: int = 0


@dataclass(frozen=True, slots=True)
class _Host:
    name: str
    # "exact", "suffix" (*.example.com: name is ".example.com") or "prefix" (example.*).
    kind: str
    port: int | None

    def matches(self, name: str, port: int) -> bool:
        if self.port is not None and port != self.port:
            return False
        if self.kind == "exact":
            return name == self.name
        if self.kind == "suffix":
            return name.endswith(self.name) and len(name) > len(self.name)
        return name.startswith(self.name) and len(name) > len(self.name)


def _parse_host(host: str) -> _Host:
    text = host.strip().lower()
    name, port = text, None
    if text.startswith("["):  # an IPv6 literal, [::1] or [::1]:8000
        close = text.find("]")
        if close < 0:
            raise CompileError(f'host "{host}" is not a host name')
        name, rest = text[: close + 1], text[close + 1 :]
        if rest:
            port = _port(host, rest.removeprefix(":") if rest.startswith(":") else "x")
        return _Host(name, "exact", port)
    if ":" in text:
        name, _, port_text = text.rpartition(":")
        port = _port(host, port_text)
    if not name:
        raise CompileError(f'host "{host}" is empty')
    labels = name.split(".")
    if name.count("*") > 1:
        raise CompileError(f'host "{host}": only one wildcard is allowed')
    if "*" in name:
        if labels[0] == "*" and len(labels) > 1:
            kind, name = "suffix", name[1:]
        elif labels[-1] == "*" and len(labels) > 1:
            kind, name = "prefix", name[:-1]
        else:
            raise CompileError(
                f'host "{host}": a wildcard must be the leftmost or the rightmost label'
            )
        labels = [label for label in labels if label != "*"]
    else:
        kind = "exact"
    if not all(_HOST_LABEL.match(label) for label in labels):
        raise CompileError(f'host "{host}" is not a host name')
    return _Host(name, kind, port)


def _port(host: str, text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise CompileError(f'host "{host}": port must be a number from 1 to 65535')
    return int(text)


@dataclass(frozen=True, slots=True)
class _Header:
    name: bytes
    # Lower-case values compared whole, and regexes searched (case-insensitive).
    values: frozenset[str]
    regexes: tuple[re.Pattern[str], ...]

    def matches(self, headers: Headers) -> bool:
        name = self.name
        for key, raw in headers:
            if key.lower() != name:
                continue
            value = raw.decode("latin-1").strip()
            if value.lower() in self.values or any(r.search(value) for r in self.regexes):
                return True
        return False


def _compile_header(name: str, values: Sequence[str]) -> _Header:
    lowered = name.strip().lower()
    if not lowered or not lowered.isascii() or any(c in lowered for c in " :\t\r\n"):
        raise CompileError(f'header name "{name}" is not an HTTP header name')
    if lowered == "host":
        raise CompileError('header "host" is matched with hosts, not headers')
    if not values:
        raise CompileError(f'header "{name}" has no values')
    plain: set[str] = set()
    regexes: list[re.Pattern[str]] = []
    for value in values:
        if value.startswith(_HEADER_REGEX_MARK):
            pattern = compile_regex(value[len(_HEADER_REGEX_MARK) :])
            regexes.append(re.compile(pattern.pattern, re.IGNORECASE))
        else:
            plain.add(value.lower())
    return _Header(lowered.encode("latin-1"), frozenset(plain), tuple(regexes))


@dataclass(frozen=True, slots=True)
class _Entry(Generic[R]):
    """One path of one route (or a route without paths), with its route's criteria."""

    route: R
    prefix: str
    regex: re.Pattern[str] | None
    methods: frozenset[str]
    hosts: tuple[_Host, ...]
    headers: tuple[_Header, ...]
    # len(prefix), computed once.
    length: int = 0


def _request_host(headers: Headers, scheme: str) -> tuple[str, int]:
    """The Host header's name (lower case) and port (the scheme's default if it names none)."""
    default = 443 if scheme == "https" else 80
    for key, raw in headers:
        if key.lower() != b"host":
            continue
        value = raw.decode("latin-1").strip().lower()
        if value.startswith("["):
            close = value.find("]")
            name, rest = value[: close + 1], value[close + 1 :]
            port = rest[1:] if rest.startswith(":") else ""
        else:
            name, _, port = value.partition(":")
        return name.rstrip("."), int(port) if port.isdigit() else default
    return "", default


class RouteTable(Generic[R]):
    """Maps a request (path, method, Host, headers) to a route, by Kong's priorities.

    Built once per snapshot from (route, criteria) pairs in snapshot order; CompileError if a
    route's criteria cannot be compiled (compile them one by one with ``check`` first to find
    which route is at fault).
    """

    __slots__ = ("_entries", "_fast", "_routes")

    def __init__(self, routes: Iterable[tuple[R, RouteCriteria]]) -> None:
        keyed: list[tuple[tuple[int, ...], _Entry[R]]] = []
        routes_seen: list[R] = []
        for order, (route, criteria) in enumerate(routes):
            routes_seen.append(route)
            for key, entry in _entries(route, criteria):
                keyed.append(((*key, order), entry))
        # Sorted once per snapshot: a lookup is one scan that stops at the first hit.
        keyed.sort(key=lambda item: item[0])
        entries = tuple(entry for _, entry in keyed)
        self._routes = tuple(routes_seen)
        self._entries = entries
        if all(e.regex is None and not e.hosts and not e.headers for e in entries):
            self._fast: tuple[tuple[str, _Entry[R]], ...] | None = tuple(
                (e.prefix, e) for e in entries
            )
        else:
            self._fast = None

    @staticmethod
    def check(criteria: RouteCriteria) -> None:
        """Raise CompileError if ``criteria`` cannot be compiled."""
        _entries(None, criteria)

    def find(
        self, path: str, method: str, headers: Headers = (), scheme: str = "http"
    ) -> tuple[R, int] | None:
        """The route for the request, and how many characters of ``path`` its path matched
        (the part strip_path removes); None if no route matches."""
        fast = self._fast
        if fast is not None:
            for prefix, entry in fast:
                if path.startswith(prefix) and (not entry.methods or method in entry.methods):
                    return entry.route, entry.length
            return None
        return self._find_any(path, method, headers, scheme)

    def _find_any(
        self, path: str, method: str, headers: Headers, scheme: str
    ) -> tuple[R, int] | None:
        """``find`` over every criterion (the table sets more than prefixes and methods)."""
        host: tuple[str, int] | None = None
        for entry in self._entries:
            regex = entry.regex
            if regex is None:
                if not path.startswith(entry.prefix):
                    continue
                end = entry.length
            else:
                found = regex.match(path)
                if found is None:
                    continue
                end = found.end()
            if entry.methods and method not in entry.methods:
                continue
            if entry.hosts:
                if host is None:
                    host = _request_host(headers, scheme)
                name, port = host
                if not any(h.matches(name, port) for h in entry.hosts):
                    continue
            if entry.headers and not all(h.matches(headers) for h in entry.headers):
                continue
            return entry.route, end
        return None

    def match(
        self, path: str, method: str, headers: Headers = (), scheme: str = "http"
    ) -> R | None:
        """Return the route for the request, or None."""
        found = self.find(path, method, headers, scheme)
        return None if found is None else found[0]

    def match_prefix(
        self, path: str, method: str, headers: Headers = (), scheme: str = "http"
    ) -> tuple[R, str] | None:
        """Return the route for the request with the part of ``path`` its path matched."""
        found = self.find(path, method, headers, scheme)
        return None if found is None else (found[0], path[: found[1]])

    def __len__(self) -> int:
        return len(self._routes)

    def __iter__(self) -> Iterator[R]:
        return iter(self._routes)


def _entries(route: R, criteria: RouteCriteria) -> list[tuple[tuple[int, ...], _Entry[R]]]:
    """The (sort key, entry) pairs of one route: one per path (one if it has none)."""
    hosts = tuple(_parse_host(host) for host in criteria.hosts)
    names: set[str] = set()
    headers: list[_Header] = []
    for name, values in criteria.headers:
        header = _compile_header(name, values)
        if header.name.decode() in names:
            raise CompileError(f'header "{name}" is listed twice')
        names.add(header.name.decode())
        headers.append(header)
    for method in criteria.methods:
        if not method.isalpha() or method != method.upper():
            raise CompileError(f'method "{method}" is not an upper-case HTTP method')
    if not (criteria.paths or criteria.methods or hosts or headers):
        raise CompileError("has no paths, methods, hosts or headers to match on")
    weight = sum(1 for present in (criteria.paths, criteria.methods, hosts, headers) if present)
    plain_hosts = bool(hosts) and all(host.kind == "exact" for host in hosts)
    common = (-weight, -int(plain_hosts), -len(headers))
    found: list[tuple[tuple[int, ...], _Entry[R]]] = []
    for path in criteria.paths or ("",):
        regex = None
        if path.startswith(REGEX_MARK):
            regex = compile_regex(path[len(REGEX_MARK) :])
            key = (*common, 0, -criteria.regex_priority, 0)
            prefix = ""
        else:
            if criteria.paths and not path.startswith("/"):
                raise CompileError(f'path "{path}" does not start with "/"')
            key = (*common, 1, 0, -len(path))
            prefix = path
        entry = _Entry(route, prefix, regex, criteria.methods, hosts, tuple(headers), len(prefix))
        found.append((key, entry))
    return found
