"""decK's env substitution and multi-file merge, as `meterline apply` runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from controlplane.declarative import DeclarativeError, parse_document
from controlplane.declarative.envsubst import resolve
from controlplane.declarative.load import load_text
from controlplane.declarative.merge import merge_documents, read_files

FILE = """\
_format_version: "3.0"
plugins:
  - name: ai-proxy
    config:
      auth:
        header_name: Authorization
        header_value: Bearer ${{ env "DECK_OPENAI_API_KEY" }}
      model:
        provider: openai
        options:
          upstream_url: ${{env "DECK_BASE"}}/v1/chat/completions
consumers:
  - username: acme
    keyauth_credentials: [{key: '${{ env "DECK_ACME_KEY" }}'}]
"""


def test_references_are_replaced_in_nested_values_and_lists() -> None:
    env = {"DECK_OPENAI_API_KEY": "sk-1", "DECK_BASE": "http://127.0.0.1:9", "DECK_ACME_KEY": "k"}
    data = resolve(load_text(FILE), env)
    config = data["plugins"][0]["config"]
    assert config["auth"]["header_value"] == "Bearer sk-1"
    assert config["model"]["options"]["upstream_url"] == "http://127.0.0.1:9/v1/chat/completions"
    assert data["consumers"][0]["keyauth_credentials"][0]["key"] == "k"


def test_a_missing_variable_names_itself_and_the_entry_never_a_value() -> None:
    env = {"DECK_OPENAI_API_KEY": "sk-secret-value"}
    with pytest.raises(DeclarativeError) as caught:
        resolve(load_text(FILE), env)
    assert caught.value.problems == (
        "plugins[0] (ai-proxy): config.model.options.upstream_url: environment variable "
        "DECK_BASE is not set",
        "consumers[0] (acme): keyauth_credentials[0].key: environment variable DECK_ACME_KEY "
        "is not set",
    )
    assert "sk-secret-value" not in str(caught.value)


def test_only_deck_prefixed_variables_are_read() -> None:
    text = '_format_version: "3.0"\nservices: [{name: s, url: "${{ env \\"HOME\\" }}"}]\n'
    with pytest.raises(DeclarativeError, match=r"only DECK_-prefixed environment variables"):
        resolve(load_text(text), {"HOME": "/root"})


def test_the_control_plane_refuses_an_unresolved_reference() -> None:
    # A document sent without the CLI's resolution: the literal must never become a key.
    with pytest.raises(DeclarativeError) as caught:
        parse_document(FILE)
    assert (
        'plugins[0] (ai-proxy): config.auth.header_value: ${{ env "DECK_OPENAI_API_KEY" }} is '
        "not resolved: meterline apply resolves it from the applying shell's environment"
    ) in caught.value.problems


def test_files_merge_by_concatenating_entity_lists(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        '_format_version: "3.0"\nservices: [{name: s, url: "http://127.0.0.1:9"}]\n'
    )
    (tmp_path / "b.yml").write_text(
        '_format_version: "3.0"\nroutes: [{name: r, service: s, paths: [/r]}]\n'
    )
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.json").write_text(
        '{"_format_version": "3.0", "services": [{"name": "t", "url": "http://127.0.0.1:9"}]}'
    )
    (tmp_path / "notes.txt").write_text("not a decK file")
    merged = read_files([str(tmp_path)])
    assert [s["name"] for s in merged["services"]] == ["s", "t"]
    config = parse_document(json.dumps(merged))
    assert [route.service for route in config.gateway.routes] == ["s"]


def test_files_that_disagree_on_select_tags_are_refused() -> None:
    with pytest.raises(DeclarativeError, match=r"_info differs from a\.yaml's"):
        merge_documents(
            [
                ("a.yaml", {"_format_version": "3.0", "_info": {"select_tags": ["x"]}}),
                ("b.yaml", {"_format_version": "3.0", "_info": {"select_tags": ["y"]}}),
            ]
        )


def test_an_entity_in_two_files_is_a_duplicate() -> None:
    merged = merge_documents(
        [
            ("a.yaml", {"_format_version": "3.0", "consumers": [{"username": "u"}]}),
            ("b.yaml", {"_format_version": "3.0", "consumers": [{"username": "u"}]}),
        ]
    )
    with pytest.raises(DeclarativeError, match='duplicate consumer username "u"'):
        parse_document(json.dumps(merged))


def test_a_kong_vault_reference_is_refused_naming_the_entry() -> None:
    text = (
        '_format_version: "3.0"\nplugins:\n  - name: ai-proxy\n    config:\n'
        "      auth: {header_name: Authorization, header_value: 'Bearer {vault://env/openai}'}\n"
        "      model: {provider: openai}\n"
    )
    with pytest.raises(DeclarativeError) as caught:
        parse_document(text)
    assert caught.value.problems == (
        "plugins[0] (ai-proxy): config.auth.header_value: {vault://env/openai}: vault "
        'references are not supported: use ${{ env "DECK_NAME" }}, resolved by meterline apply',
    )


def test_kong_entities_meterline_does_not_use_are_accepted_and_noted() -> None:
    text = (
        '_format_version: "3.0"\n_workspace: team-a\n'
        "vaults: [{name: env, prefix: my-env}]\ncertificates: [{cert: c, key: k}]\n"
    )
    assert [note.split(":")[0] for note in parse_document(text).notes] == [
        "vaults",
        "certificates",
        "_workspace",
    ]
    with pytest.raises(DeclarativeError, match=r'unknown top-level key "vault" \(did you mean'):
        parse_document('_format_version: "3.0"\nvault: []\n')
