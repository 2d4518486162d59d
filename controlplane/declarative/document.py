"""Parsing a whole declarative document (decK ``_format_version: "3.0"`` plus ``billing:``)."""

from __future__ import annotations

from collections.abc import Mapping

from controlplane.declarative.billing import parse_billing
from controlplane.declarative.entry import Entry, closest, describe, quoted
from controlplane.declarative.envsubst import unresolved_references
from controlplane.declarative.errors import DeclarativeError, Problems
from controlplane.declarative.gateway import parse_gateway
from controlplane.declarative.load import load_text
from controlplane.declarative.types import BillingConfig, DeclarativeConfig

FORMAT_VERSION = "3.0"
_ENTITY_KEYS = ("services", "routes", "consumers", "plugins", "consumer_groups", "upstreams")
# decK metadata: ``_info`` (select_tags honoured; defaults reported) and ``_workspace``
# (Meterline has one workspace), ``_transform`` (decK's; names are names here).
_META_KEYS = ("_info", "_workspace", "_transform", "_konnect")
# Kong entities Meterline has no use for: accepted (a whole Kong file applies) and noted.
_UNUSED_ENTITIES = {
    "vaults": 'vault references are not supported: use ${{ env "DECK_..." }}',
    "partials": "partials are not supported: set each plugin's own config",
    "certificates": "TLS is terminated in front of the data planes",
    "ca_certificates": "the system trust store is used",
    "snis": "TLS is terminated in front of the data planes",
    "key_sets": "key sets are not used",
    "keys": "key sets are not used",
    "filter_chains": "Wasm filter chains are not supported",
}
_TOP_LEVEL_KEYS = ("_format_version", *_META_KEYS, *_ENTITY_KEYS, *_UNUSED_ENTITIES, "billing")


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
            close = closest(str(key), _TOP_LEVEL_KEYS)
            hint = (
                f'did you mean "{close}"?'
                if close
                else f"expected one of: {quoted(_TOP_LEVEL_KEYS)}"
            )
            document.fail(f'unknown top-level key "{key}" ({hint})')
    if "${{" in text or "{vault://" in text:  # (JSON escapes neither)
        for where in unresolved_references(data):
            problems.add("", where)
    for key, reason in _UNUSED_ENTITIES.items():
        value = data.get(key)
        if value is not None and not isinstance(value, list):
            document.fail_field(key, f"must be a list, got {describe(value)}")
        elif value:
            document.note(key, reason)
    workspace = data.get("_workspace")
    if workspace not in (None, "default"):
        document.note("_workspace", "Meterline has one workspace")
    if data.get("_konnect") is not None:
        document.note("_konnect", "Konnect control plane settings have no meaning here")
    select_tags = _select_tags(document)
    gateway = parse_gateway(document, select_tags=select_tags)
    billing = BillingConfig()
    if data.get("billing") is not None:
        section = document.sub("billing")
        if section is not None:
            billing = parse_billing(Entry("billing", section.data, problems))
    problems.raise_if_any()
    return DeclarativeConfig(
        gateway=gateway,
        billing=billing,
        notes=tuple(problems.notes),
        select_tags=select_tags,
    )


def _select_tags(document: Entry) -> tuple[str, ...]:
    info = document.sub("_info")
    if info is None:
        return ()
    info.check_keys(("select_tags", "defaults", "default_lookup_tags"))
    if info.has("defaults"):
        info.note("defaults", "entity defaults are not applied: write the fields on each entity")
    if info.has("default_lookup_tags"):
        info.note("default_lookup_tags", "entities are looked up by name")
    return info.string_list("select_tags") or ()


def _check_format_version(document: Entry) -> None:
    version = document.data.get("_format_version")
    if version is None:
        document.fail(f'_format_version is required: add _format_version: "{FORMAT_VERSION}"')
    # An unquoted 3.0 reads as a YAML float; it still means the same version.
    elif version != FORMAT_VERSION and not (isinstance(version, float) and version == 3.0):
        document.fail(f'_format_version must be "{FORMAT_VERSION}", got {version!r}')
