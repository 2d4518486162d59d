"""Parsing a whole declarative document (decK ``_format_version: "3.0"`` plus ``billing:``)."""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.declarative.billing import parse_billing
from controlplane.declarative.entry import Entry, describe, quoted
from controlplane.declarative.errors import DeclarativeError, Problems
from controlplane.declarative.gateway import parse_gateway
from controlplane.declarative.load import load_text
from controlplane.declarative.types import BillingConfig, DeclarativeConfig

FORMAT_VERSION = "3.0"
_ENTITY_KEYS = ("services", "routes", "consumers", "plugins")
# decK metadata with no meaning here: ``_info`` (select tags, defaults) and ``_workspace``.
_IGNORED_KEYS = ("_info", "_workspace")
_TOP_LEVEL_KEYS = ("_format_version", *_IGNORED_KEYS, *_ENTITY_KEYS, "billing")


def parse_document(text: str) -> DeclarativeConfig:
    """Parse and validate a declarative YAML or JSON document.

    Raises InvalidArgument (a :class:`DeclarativeError` listing every problem, each naming
    its entry) if the text is malformed or describes an invalid configuration.
    """
    data = load_text(text)
    if not isinstance(data, Mapping):
        raise DeclarativeError(
            (f"the document must be a mapping with _format_version, got {describe(data)}",)
        )
    problems = Problems()
    document = Entry("", data, problems)
    _check_format_version(document)
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            document.fail(
                f'unknown top-level key "{key}" (expected one of: {quoted(_TOP_LEVEL_KEYS)})'
            )
    gateway = parse_gateway(document)
    billing = BillingConfig()
    if data.get("billing") is not None:
        section = document.sub("billing")
        if section is not None:
            billing = parse_billing(Entry("billing", section.data, problems))
    problems.raise_if_any()
    return DeclarativeConfig(gateway=gateway, billing=billing)


def _check_format_version(document: Entry) -> None:
    version = document.data.get("_format_version")
    if version is None:
        document.fail(f'_format_version is required: add _format_version: "{FORMAT_VERSION}"')
    # An unquoted 3.0 reads as a YAML float; it still means the same version.
    elif version != FORMAT_VERSION and not (isinstance(version, float) and version == 3.0):
        document.fail(f'_format_version must be "{FORMAT_VERSION}", got {version!r}')
