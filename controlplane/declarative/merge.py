"""Several decK files (or a directory of them) read as one document, as decK merges them.

Entity lists (``services``, ``routes``, ``consumers``, ``plugins``...) are concatenated in
file order; ``_format_version``, ``_info`` and ``_workspace`` must agree where set (decK
refuses files with different select_tags); the ``billing:`` sections are merged the same way,
list by list. Duplicates across files are then reported by the parser like duplicates within
one file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from controlplane.declarative.errors import DeclarativeError
from controlplane.declarative.load import load_text
from controlplane.errors import InvalidArgument

# What a directory contributes: decK reads .yaml, .yml and .json files.
SUFFIXES = (".yaml", ".yml", ".json")
_SAME_EVERYWHERE = ("_format_version", "_info", "_workspace", "_transform", "_konnect")


def files_of(paths: Sequence[str]) -> list[Path]:
    """The files named, a directory standing for its .yaml/.yml/.json files (sorted, not
    recursive into hidden entries)."""
    found: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            found.extend(
                sorted(
                    p
                    for p in path.rglob("*")
                    if p.is_file()
                    and p.suffix in SUFFIXES
                    and not any(part.startswith(".") for part in p.relative_to(path).parts)
                )
            )
        else:
            found.append(path)
    return found


def merge_documents(documents: Sequence[tuple[str, Any]]) -> dict[str, Any]:
    """One document from ``(name, data)`` pairs; DeclarativeError naming what disagrees."""
    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    problems: list[str] = []
    for name, data in documents:
        if data is None:
            continue  # an empty file
        if not isinstance(data, Mapping):
            problems.append(f"{name}: the document must be a mapping with _format_version")
            continue
        for key, value in data.items():
            if key not in merged:
                merged[key] = _copy(value)
                origin[key] = name
            elif key in _SAME_EVERYWHERE:
                if merged[key] != value:
                    problems.append(
                        f"{name}: {key} differs from {origin[key]}'s: files applied together "
                        "must agree on it"
                    )
            elif key == "billing" and isinstance(value, Mapping):
                _merge_section(merged[key], value, name=name, origin=origin[key], problems=problems)
            elif isinstance(merged[key], list) and isinstance(value, list):
                merged[key].extend(value)
            else:
                problems.append(f"{name}: {key} is also set by {origin[key]}")
    if problems:
        raise DeclarativeError(tuple(problems))
    return merged


def _merge_section(
    into: Any, section: Mapping[str, Any], *, name: str, origin: str, problems: list[str]
) -> None:
    if not isinstance(into, dict):
        problems.append(f"{name}: billing is also set by {origin}")
        return
    for key, value in section.items():
        if key not in into:
            into[key] = _copy(value)
        elif isinstance(into[key], list) and isinstance(value, list):
            into[key].extend(value)
        elif into[key] != value:
            problems.append(f"{name}: billing.{key} is also set by {origin}")


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value


def read_files(paths: Sequence[str], *, stdin_text: str | None = None) -> dict[str, Any]:
    """Load and merge the files (``-`` is ``stdin_text``); InvalidArgument naming the file."""
    documents: list[tuple[str, Any]] = []
    for name in paths:
        if name == "-":
            documents.append(("<stdin>", load_text(stdin_text or "")))
            continue
        for file in files_of([name]):
            try:
                text = file.read_text()
            except OSError as exc:
                raise DeclarativeError((f"{file}: {exc.strerror or exc}",)) from None
            try:
                documents.append((str(file), load_text(text)))
            except InvalidArgument as exc:  # malformed YAML/JSON: say which file
                raise DeclarativeError((f"{file}: {exc}",)) from None
    if not documents:
        raise DeclarativeError((f"no .yaml, .yml or .json file in {', '.join(paths)}",))
    return merge_documents(documents)
