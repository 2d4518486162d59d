"""A SERVER span per gRPC call of both listeners (controlplane.tracing holds the provider)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import propagate
from opentelemetry.trace import SpanKind, Status, StatusCode

from controlplane.tracing import enabled, span


class TracingInterceptor(grpc.aio.ServerInterceptor):
    """A SERVER span per RPC (``{service}/{method}``, rpc.* attributes, its status code),
    continuing the caller's ``traceparent`` metadata. Streams get one span for their life."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = await continuation(handler_call_details)
        if handler is None or not enabled():
            # No SDK provider installed: nothing to record, nothing to wrap.
            return handler
        full = handler_call_details.method
        service, _, method = full.lstrip("/").partition("/")
        metadata = {
            key: value
            for key, value in (handler_call_details.invocation_metadata or ())
            if isinstance(value, str)
        }

        def rpc_span() -> Any:
            return span(
                f"{service}/{method}",
                context=propagate.extract(metadata),
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": method},
                record_exception=False,
                set_status_on_exception=False,
            )

        def finish(current: Any, context: Any, exc: BaseException | None) -> None:
            code = _code(context, exc)
            current.set_attribute("rpc.grpc.status_code", code.value[0])
            if code is not grpc.StatusCode.OK:
                current.set_status(Status(StatusCode.ERROR, code.name))

        if handler.unary_unary:
            inner = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                with rpc_span() as current:
                    try:
                        response = await inner(request, context)
                    except BaseException as exc:
                        finish(current, context, exc)
                        raise
                    finish(current, context, None)
                    return response

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_stream and _is_async_gen(handler.stream_stream):
            inner_ss = handler.stream_stream

            async def stream_stream(requests: Any, context: Any) -> Any:
                with rpc_span() as current:
                    try:
                        async for response in inner_ss(requests, context):
                            yield response
                    except BaseException as exc:
                        finish(current, context, exc)
                        raise
                    finish(current, context, None)

            return grpc.stream_stream_rpc_method_handler(
                stream_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler


def _is_async_gen(function: Any) -> bool:
    return inspect.isasyncgenfunction(function)


def _code(context: Any, exc: BaseException | None) -> grpc.StatusCode:
    if isinstance(exc, grpc.aio.AbortError | grpc.RpcError) or exc is None:
        code = context.code() if hasattr(context, "code") else None
        if isinstance(code, grpc.StatusCode):
            return code
        return grpc.StatusCode.OK if exc is None else grpc.StatusCode.UNKNOWN
    return grpc.StatusCode.UNKNOWN
