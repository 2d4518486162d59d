"""One interceptor maps the domain error tree to gRPC status codes (AIP-193).

Domain errors carry messages meant for the caller. Anything else is a bug: the caller gets
INTERNAL with a generic message and the traceback goes to the log.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc

from controlplane.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    MeterlineError,
    NotFound,
)

log = logging.getLogger(__name__)

CODES: dict[type[MeterlineError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
}


async def _abort_for(exc: Exception, context: Any, method: str) -> None:
    if isinstance(exc, MeterlineError):
        code = next(
            (c for kind, c in CODES.items() if isinstance(exc, kind)), grpc.StatusCode.UNKNOWN
        )
        await context.abort(code, str(exc))
    log.exception("unexpected error in %s", method)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error; see the control plane log")


def _is_abort(exc: BaseException) -> bool:
    # context.abort() raises this; it must pass through untouched.
    return isinstance(exc, grpc.aio.AbortError) or type(exc).__name__ == "AbortError"


class DomainErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns MeterlineError subclasses into status codes on every RPC."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method
        if handler.unary_unary:
            inner_uu = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                try:
                    return await inner_uu(request, context)
                except Exception as exc:
                    if _is_abort(exc):
                        raise
                    await _abort_for(exc, context, method)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream:
            inner_ss = handler.stream_stream

            async def stream_stream(request_iterator: Any, context: Any) -> AsyncIterator[Any]:
                try:
                    async for response in inner_ss(request_iterator, context):
                        yield response
                except Exception as exc:
                    if _is_abort(exc):
                        raise
                    await _abort_for(exc, context, method)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
