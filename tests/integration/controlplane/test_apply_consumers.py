"""Consumers through ApplyConfig: created, updated, keys added, a stolen key refused, in bulk."""

from __future__ import annotations

import grpc
import pytest

from meterline.admin.v1 import gateway_pb2


def document(*consumers: str) -> str:
    lines = ['_format_version: "3.0"', "consumers:"]
    lines += [f"  - {consumer}" for consumer in consumers]
    return "\n".join(lines) + "\n"


async def consumers(harness) -> dict[str, tuple[str, int]]:
    listed = await harness.gateway.ListConsumers(gateway_pb2.ListConsumersRequest(page_size=1000))
    return {c.username: (c.custom_id, c.key_count) for c in listed.consumers}


async def apply(harness, text: str) -> list[str]:
    response = await harness.gateway.ApplyConfig(gateway_pb2.ApplyConfigRequest(document=text))
    return list(response.changes)


async def test_consumers_are_created_updated_and_given_keys_once(harness) -> None:
    first = document(
        "{username: acme, custom_id: c-1, keyauth_credentials: [{key: k-acme}]}",
        "{username: beta, keyauth_credentials: [{key: k-beta-1}, {key: k-beta-2}]}",
    )
    assert await apply(harness, first) == [
        "created consumer acme",
        "added a key credential to consumer acme",
        "created consumer beta",
        "added a key credential to consumer beta",
        "added a key credential to consumer beta",
    ]
    assert await consumers(harness) == {"acme": ("c-1", 1), "beta": ("", 2)}
    # Applying the same file again changes nothing.
    assert await apply(harness, first) == []

    second = document(
        "{username: acme, custom_id: c-2, keyauth_credentials: [{key: k-acme}, {key: k-acme-2}]}",
        "{username: beta, keyauth_credentials: [{key: k-beta-1}, {key: k-beta-2}]}",
        "{username: gamma}",
    )
    assert await apply(harness, second) == [
        "updated consumer acme",
        "added a key credential to consumer acme",
        "created consumer gamma",
    ]
    assert await consumers(harness) == {"acme": ("c-2", 2), "beta": ("", 2), "gamma": ("", 0)}


async def test_a_key_of_another_consumer_is_refused_and_nothing_changes(harness) -> None:
    await apply(harness, document("{username: acme, keyauth_credentials: [{key: k-acme}]}"))
    before = await consumers(harness)

    stolen = document(
        "{username: acme, custom_id: changed}",
        "{username: mallory, keyauth_credentials: [{key: k-acme}]}",
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await apply(harness, stolen)

    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "that key already belongs to another consumer (acme)" in caught.value.details()
    assert await consumers(harness) == before


async def test_thousands_of_consumers_in_one_file(harness) -> None:
    many = document(
        *(f"{{username: u{i}, keyauth_credentials: [{{key: k{i}}}]}}" for i in range(3_000))
    )
    changes = await apply(harness, many)
    assert len(changes) == 6_000
    listed = await consumers(harness)
    assert len(listed) == 1000  # one page
    assert await apply(harness, many) == []
