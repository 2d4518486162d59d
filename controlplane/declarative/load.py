"""Reading YAML or JSON text into plain data, strictly.

Stricter than ``yaml.safe_load`` in three ways that matter for config: a key repeated in one
mapping is an error (YAML would silently keep the last one), timestamps stay strings (the
parser decides what a timestamp means, and never gets a naive datetime by accident), and
aliases (``*name``, ``<<: *name`` merges) are bounded before anything is built: at most
MAX_ALIASES of them, adding at most MAX_ALIAS_EXPANSION characters to the document once
expanded, and never recursive. A "billion laughs" document (nine aliases of nine aliases...)
is refused in milliseconds instead of expanding to gigabytes.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import yaml

from controlplane.errors import InvalidArgument

_MERGE_TAG = "tag:yaml.org,2002:merge"
# Alias references in one document, and what expanding them may add (in characters of
# scalars, plus one per node): far above what a config's shared defaults need.
MAX_ALIASES = 10_000
MAX_ALIAS_EXPANSION = 4_000_000
_TIMESTAMP_TAG = "tag:yaml.org,2002:timestamp"


# libyaml's parser when PyYAML was built with it (the wheels are): ~10x faster on a file of
# 10,000 consumers than the pure-Python one, with the same safe constructor.
# (Type-checked as SafeLoader: CSafeLoader has its API, and may be missing at run time.)
if TYPE_CHECKING:
    _SafeLoader = yaml.SafeLoader
else:
    _SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_SafeLoader):
    """SafeLoader without implicit timestamps and with duplicate-key detection."""


_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _construct_mapping(loader: _StrictLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    if all(key_node.tag != _MERGE_TAG for key_node, _ in node.value):
        mapping: dict[Any, Any] = loader.construct_mapping(node, deep=True)
        if len(mapping) == len(node.value):
            return mapping  # as many keys as key nodes: none repeated (the common case)
    # Find the repeated key (before construct_mapping flattens "<<" merges into node.value).
    seen: set[object] = set()
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # keys merged in with "<<" may legitimately be overridden
        key = loader.construct_object(key_node, deep=True)
        try:
            repeated = key in seen
        except TypeError:
            continue  # unhashable key: construct_mapping reports it with its position
        if repeated:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                f"found duplicate key {key!r}",
                key_node.start_mark,
            )
        seen.add(key)
    merged: dict[Any, Any] = loader.construct_mapping(node, deep=True)
    return merged


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise InvalidArgument(f"invalid JSON: duplicate key {key!r}")
        result[key] = value
    return result


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _weight(node: yaml.Node) -> int:
    return 1 + (len(node.value) if isinstance(node, yaml.ScalarNode) else 0)


def _check_aliases(root: yaml.Node) -> None:
    """Refuse recursive aliases, more than MAX_ALIASES, or an expansion over the bound.

    The composed graph shares one node per anchor; its expanded weight is computed bottom-up
    once per distinct node (iteratively: deep nesting needs no recursion), and the walk stops
    as soon as a bound is passed.
    """
    done: dict[int, int] = {}  # id(node) -> expanded weight
    visiting: set[int] = set()
    referenced: set[int] = {id(root)}
    aliases = 0
    own = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, leaving = stack.pop()
        key = id(node)
        if leaving:
            visiting.discard(key)
            expanded = _weight(node) + sum(done[id(child)] for child in _children(node))
            done[key] = expanded
            if expanded - own > MAX_ALIAS_EXPANSION and aliases:
                raise InvalidArgument(
                    f"invalid YAML at line {node.start_mark.line + 1}: aliases expand the "
                    f"document by more than {MAX_ALIAS_EXPANSION:,} characters (a "
                    '"billion laughs" document?)'
                )
            continue
        if key in done:
            continue
        if key in visiting:
            raise InvalidArgument(
                f"invalid YAML at line {node.start_mark.line + 1}: a recursive alias "
                "(an anchor used inside itself)"
            )
        visiting.add(key)
        own += _weight(node)
        stack.append((node, True))
        for child in _children(node):
            if id(child) in referenced:
                aliases += 1
                if aliases > MAX_ALIASES:
                    raise InvalidArgument(
                        f"invalid YAML at line {child.start_mark.line + 1}: more than "
                        f"{MAX_ALIASES:,} aliases"
                    )
            else:
                referenced.add(id(child))
            stack.append((child, False))


def load_text(text: str) -> Any:
    """The data in ``text`` (YAML, or JSON); InvalidArgument with line and column if malformed."""
    if text.lstrip().startswith("{"):
        # JSON is YAML too, but YAML rejects tab indentation that JSON allows.
        try:
            return json.loads(text, object_pairs_hook=_json_object)
        except json.JSONDecodeError as exc:
            raise InvalidArgument(
                f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
    try:
        loader = _StrictLoader(text)  # a SafeLoader subclass: safe
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            if "&" in text:  # no anchor, no alias: nothing to bound (the common, fast case)
                _check_aliases(node)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise InvalidArgument(f"invalid YAML{where}: {problem or 'malformed document'}") from None
    except yaml.YAMLError as exc:
        raise InvalidArgument(f"invalid YAML: {exc}") from None
