"""decK's environment substitution: ``${{ env "DECK_NAME" }}`` in any string value.

Resolved by ``meterline apply`` (and diff, sync) from the environment of the shell that runs
it, before the document leaves for the control plane, as decK resolves it before talking to
Kong: the control plane never sees the operator's environment, and refuses a document that
still holds a reference (so a literal ``${{ env ... }}`` is never stored as a credential).
Only ``DECK_``-prefixed names are read, as decK does. Resolved values are never printed.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from controlplane.declarative.errors import DeclarativeError

PREFIX = "DECK_"
REFERENCE = re.compile(r"""\$\{\{\s*env\s+"([^"]*)"\s*\}\}""")


def _walk(value: Any, where: str, label: str) -> Iterator[tuple[str, str, str]]:
    """(entry, field path, string) of every string value in ``value``."""
    if isinstance(value, str):
        yield label, where, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _walk(item, f"{where}.{key}" if where else str(key), label)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            name = item.get("name") or item.get("username") if isinstance(item, Mapping) else None
            if isinstance(item, Mapping) and isinstance(name, str) and name:
                # A named entity: it becomes the entry the problem is reported against.
                entry = f"{label}.{where}[{index}]" if label else f"{where}[{index}]"
                yield from _walk(item, "", f"{entry} ({name})")
            else:
                yield from _walk(item, f"{where}[{index}]", label)


def _location(label: str, path: str) -> str:
    return f"{label}: {path}" if label else path


def resolve(data: Any, environ: Mapping[str, str]) -> Any:
    """``data`` with every reference replaced by its variable's value.

    Raises DeclarativeError naming each missing (or non-``DECK_``) variable and the entry
    and field that refer to it; the values themselves never appear in a message.
    """
    problems: list[str] = []
    for label, path, text in _walk(data, "", ""):
        for match in REFERENCE.finditer(text):
            name = match.group(1)
            if not name.startswith(PREFIX):
                problems.append(
                    f'{_location(label, path)}: ${{{{ env "{name}" }}}}: only {PREFIX}-prefixed '
                    "environment variables are read"
                )
            elif name not in environ:
                problems.append(f"{_location(label, path)}: environment variable {name} is not set")
    if problems:
        raise DeclarativeError(tuple(problems))
    return _replace(data, environ)


def _replace(value: Any, environ: Mapping[str, str]) -> Any:
    if isinstance(value, str):
        return REFERENCE.sub(lambda m: environ[m.group(1)], value) if "${{" in value else value
    if isinstance(value, Mapping):
        return {key: _replace(item, environ) for key, item in value.items()}
    if isinstance(value, list):
        return [_replace(item, environ) for item in value]
    return value


# Kong's secret references, resolved by each Kong node at run time; Meterline has no vaults.
VAULT_REFERENCE = re.compile(r"\{vault://[^}]*\}")


def unresolved_references(data: Any) -> list[str]:
    """A problem per string of ``data`` that still holds a reference (control plane side):
    a decK ``${{ env ... }}`` the CLI did not resolve, or a Kong ``{vault://...}``."""
    problems: list[str] = []
    for label, path, text in _walk(data, "", ""):
        if "${{" in text:
            problems.extend(
                f'{_location(label, path)}: ${{{{ env "{match.group(1)}" }}}} is not resolved: '
                "meterline apply resolves it from the applying shell's environment"
                for match in REFERENCE.finditer(text)
            )
        if "{vault://" in text:
            problems.extend(
                f"{_location(label, path)}: {match.group(0)}: vault references are not "
                'supported: use ${{ env "DECK_NAME" }}, resolved by meterline apply'
                for match in VAULT_REFERENCE.finditer(text)
            )
    return problems


def referenced(data: Any, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables ``data`` refers to that are set, by name (to redact their values)."""
    names = {
        match.group(1)
        for _, _, text in _walk(data, "", "")
        if "${{" in text
        for match in REFERENCE.finditer(text)
    }
    return {name: environ[name] for name in names if name.startswith(PREFIX) and name in environ}


def redact(text: str, values: Mapping[str, str]) -> str:
    """``text`` with every resolved value replaced by its variable's name."""
    for name, value in sorted(values.items(), key=lambda item: -len(item[1])):
        if value:
            text = text.replace(value, f"<{name}>")
    return text
