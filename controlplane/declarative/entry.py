"""Typed reading of one mapping of a declarative document, reporting problems by location."""

from __future__ import annotations

import difflib
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from controlplane.declarative.errors import Problems

# Fields decK writes on every entity that carry no meaning for Meterline; accepted and ignored.
IGNORED_FIELDS = frozenset({"tags"})


def describe(value: object) -> str:
    """A short type name for error messages, in YAML's words."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return type(value).__name__


def _short_float(value: float) -> bool:
    """Whether ``repr(value)`` is what was written: finite, at most 15 significant digits
    (every such decimal survives the round trip through a binary float)."""
    if value != value or value in (float("inf"), float("-inf")):
        return False
    digits = Decimal(repr(value)).as_tuple().digits
    return len(digits) <= 15


def quoted(values: Collection[str]) -> str:
    return ", ".join(f'"{value}"' for value in values)


def closest(value: str, choices: Collection[str]) -> str | None:
    """The documented name a misspelt ``value`` most likely meant, if any is close."""
    close = difflib.get_close_matches(value, [str(choice) for choice in choices], n=1, cutoff=0.6)
    return close[0] if close else None


def suggestion(value: str, choices: Collection[str]) -> str:
    """`` (did you mean "x"?)`` for the closest choice (or one ending in ``/value``), else ""."""
    close = closest(value, choices)
    close = close or next((str(c) for c in choices if str(c).endswith(f"/{value}")), None)
    return f' (did you mean "{close}"?)' if close else ""


def known(kind: str, names: Collection[str], section: str) -> str:
    """What a reference to an undefined ``kind`` may name instead, for an error's hint."""
    if not names:
        return f": declare it under {section} (the file defines no {kind})"
    listed = sorted(names)
    more = f" and {len(listed) - 5} more" if len(listed) > 5 else ""
    return f" (defined: {quoted(listed[:5])}{more})"


@dataclass(frozen=True)
class Entry:
    """A mapping read from the document, with where it is for error messages.

    ``where`` names the entry (``routes[1] (chat)``); ``prefix`` is prepended to field names for
    nested mappings that are not entries of their own (``config.model.``).
    """

    where: str
    data: Mapping[str, Any]
    problems: Problems
    prefix: str = ""

    # -- reporting ---------------------------------------------------------------------------

    def fail(self, message: str) -> None:
        self.problems.add(self.where, message)

    def fail_field(self, key: str, message: str) -> None:
        self.problems.add(self.where, f"{self.prefix}{key} {message}")

    def note(self, key: str, reason: str) -> None:
        """Report ``key`` as accepted and not enforced, saying why."""
        self.problems.note(self.where, f"{self.prefix}{key}", reason)

    def check_keys(self, allowed: Collection[str]) -> None:
        """Report every key that is neither allowed nor one of the ignored decK fields."""
        for key in self.data:
            if key in allowed or (not self.prefix and key in IGNORED_FIELDS):
                continue
            close = closest(str(key), allowed)
            hint = (
                f'did you mean "{close}"?'
                if close
                else f"expected one of: {quoted(sorted(allowed))}"
            )
            self.fail(f'unknown field "{self.prefix}{key}" ({hint})')

    def has(self, key: str) -> bool:
        return self.data.get(key) is not None

    # -- scalars -----------------------------------------------------------------------------

    def string(self, key: str, *, required: bool = False, default: str = "") -> str | None:
        """The non-empty string at ``key``; ``default`` when absent, None after a problem."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail_field(key, "is required")
                return None
            return default
        if not isinstance(value, str):
            self.fail_field(key, f"must be a string, got {describe(value)}")
            return None
        if not value.strip():
            self.fail_field(key, "must not be empty")
            return None
        return value

    def choice(
        self, key: str, choices: Collection[str], *, default: str | None = None
    ) -> str | None:
        """A string at ``key`` that must be one of ``choices``."""
        value = self.string(key, required=default is None, default=default or "")
        if value is not None and value not in choices:
            hint = suggestion(value, choices)
            self.fail_field(key, f'must be one of {quoted(choices)}, got "{value}"{hint}')
            return None
        return value

    def boolean(self, key: str, *, default: bool) -> bool | None:
        value = self.data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail_field(key, f"must be true or false, got {describe(value)}")
            return None
        return value

    def integer(self, key: str, *, minimum: int) -> int | None:
        value = self.data.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail_field(key, f"must be an integer, got {describe(value)}")
            return None
        if value < minimum:
            self.fail_field(key, f"must be at least {minimum}, got {value}")
            return None
        return value

    def decimal(
        self, key: str, *, required: bool = False, kong_number: bool = False
    ) -> Decimal | None:
        """A non-negative exact amount, given as a string or an integer, never as a float.

        ``kong_number``: a field Kong types as a number (ai-proxy costs, cost limits), where
        Kong's own files write YAML floats: a float whose shortest text has at most 15
        significant digits is taken as that text (``0.15`` is 0.15 exactly, as written).
        """
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail_field(key, "is required")
            return None
        if kong_number and isinstance(value, float) and _short_float(value):
            value = repr(value)
        if isinstance(value, float):
            # YAML reads 0.1 as a binary float, which cannot hold most decimal prices exactly.
            self.fail_field(
                key,
                f"must be a quoted decimal string, not the float {value!r}: "
                f'write {key}: "{value!r}" to keep the amount exact',
            )
            return None
        if isinstance(value, bool) or not isinstance(value, int | str):
            self.fail_field(key, f'must be a decimal string like "0.5", got {describe(value)}')
            return None
        try:
            amount = Decimal(value.strip() if isinstance(value, str) else value)
        except InvalidOperation:
            self.fail_field(key, f'must be a decimal number like "0.5", got "{value}"')
            return None
        if not amount.is_finite():
            self.fail_field(key, f'must be a finite decimal number, got "{value}"')
            return None
        if amount < 0:
            self.fail_field(key, f'must not be negative, got "{value}"')
            return None
        return amount

    def string_list(self, key: str, *, required: bool = False) -> tuple[str, ...] | None:
        """A list of non-empty strings without duplicates; ``()`` when absent and optional."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail_field(key, "is required")
                return None
            return ()
        if not isinstance(value, list):
            self.fail_field(key, f"must be a list of strings, got {describe(value)}")
            return None
        if required and not value:
            self.fail_field(key, "must not be empty")
            return None
        items: list[str] = []
        ok = True
        for index, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                self.fail_field(
                    f"{key}[{index}]", f"must be a non-empty string, got {describe(item)}"
                )
                ok = False
            elif item in items:
                self.fail_field(f"{key}[{index}]", f'repeats "{item}"')
                ok = False
            else:
                items.append(item)
        return tuple(items) if ok else None

    # -- structure ---------------------------------------------------------------------------

    def sub(self, key: str, *, required: bool = False) -> Entry | None:
        """The mapping at ``key`` read in place (its fields are reported as ``key.field``)."""
        value = self.data.get(key)
        if value is None:
            if required:
                self.fail_field(key, "is required")
            return None
        if not isinstance(value, Mapping):
            self.fail_field(key, f"must be a mapping, got {describe(value)}")
            return None
        return Entry(self.where, value, self.problems, prefix=f"{self.prefix}{key}.")

    def entries(self, key: str, *, label: str) -> Iterator[Entry]:
        """Each mapping of the list at ``key``, as an entry named ``key[i] (label)``."""
        yield from entries_of(
            self.data.get(key),
            where=f"{self.where}.{self.prefix}{key}" if self.where else f"{self.prefix}{key}",
            label=label,
            problems=self.problems,
        )


def entries_of(value: object, *, where: str, label: str, problems: Problems) -> Iterator[Entry]:
    """Each mapping of the list ``value`` found at ``where``, named by its ``label`` field."""
    if value is None:
        return
    if not isinstance(value, list):
        problems.add(where, f"must be a list, got {describe(value)}")
        return
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            problems.add(f"{where}[{index}]", f"must be a mapping, got {describe(item)}")
            continue
        name = item.get(label)
        suffix = f" ({name})" if isinstance(name, str) and name else ""
        yield Entry(f"{where}[{index}]{suffix}", item, problems)
