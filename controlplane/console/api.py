"""The console's only way to data: the admin API's servicers, called in process.

``ConsoleApi.call`` checks the principal's scope per call with the gRPC interceptor's rule
(read tokens call only Get/List/Preview/Query methods), then awaits the very servicer the gRPC
server registered. Answers are protobuf messages; ``to_json`` renders them as the API's JSON.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

from controlplane.console.auth import Principal


class Forbidden(Exception):
    """The principal may not call this method (HTTP 403)."""


@dataclass(frozen=True)
class Servicers:
    """The servicer instances the control plane registered on its gRPC server."""

    gateway: Any
    catalog: Any
    customers: Any
    billing: Any
    usage: Any
    dataplanes: Any
    entitlements: Any
    notifications: Any


class ConsoleApi:
    """The admin API as one principal may call it."""

    def __init__(self, servicers: Servicers, principal: Principal) -> None:
        self._servicers = servicers
        self.principal = principal

    async def call(self, service: str, method: str, request: Message) -> Any:
        if not self.principal.may_call(method):
            raise Forbidden(
                f"{self.principal.name!r} may not call {method}"
                + (" (scope read; changes need admin)" if self.principal.is_operator else "")
            )
        return await self.unchecked(service, method, request)

    async def unchecked(self, service: str, method: str, request: Message) -> Any:
        """For the portal, whose handlers build every request for their own customer."""
        servicer = getattr(self._servicers, service)
        # The servicers never use their context: errors are raised as domain errors.
        return await getattr(servicer, method)(request, None)


def to_json(message: Message) -> dict[str, Any]:
    """A message as the API's JSON (proto field names, every field present)."""
    return json_format.MessageToDict(
        message,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
