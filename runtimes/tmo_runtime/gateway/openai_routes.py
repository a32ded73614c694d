"""The OpenAI-compatible routes: read, translate (openai_api), call TorchServe, answer."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from tmo_runtime.gateway.bodies import ClientError
from tmo_runtime.gateway.openai_api import (
    GENERATION_TASK,
    Call,
    OpenAIError,
    chat_call,
    chat_response,
    completion_call,
    completion_response,
    error_body,
    error_type,
    model_card,
    new_id,
    sse,
    sse_events,
)

if TYPE_CHECKING:
    from tmo_runtime.gateway.app import Gateway, ModelRoute


def _error(e: OpenAIError) -> JSONResponse:
    headers = {"WWW-Authenticate": 'Bearer realm="tmo"'} if e.status == 401 else None
    return JSONResponse(e.body(), e.status, headers=headers)


def openai_shaped(response: Response) -> Response:
    """Any JSON error the gateway or the handler answered ({"error": "text"}), in OpenAI's
    error object, status and headers kept: SDKs read error.message."""
    if response.status_code < 400 or not isinstance(response, JSONResponse):
        return response
    try:
        doc = json.loads(bytes(response.body))
    except ValueError:
        return response
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str):
        return response
    status = response.status_code
    body = error_body(doc["error"], error_type(status))
    headers = {k: v for k, v in response.headers.items() if k.lower() == "retry-after"}
    return JSONResponse(body, status, headers=headers)


def openai_routes(gw: Gateway) -> list[Route]:
    from tmo_runtime.gateway.app import read_client_body  # app builds on this module

    def generation_route(call: Call) -> ModelRoute:
        route = gw.config.models.get(call.model)
        if route is None:
            served = ", ".join(sorted(gw.config.models)) or "none"
            raise OpenAIError(
                404,
                f"model {call.model!r} is not served here; served: {served}",
                "model",
                "model_not_found",
            )
        if route.task != GENERATION_TASK:
            raise OpenAIError(
                400,
                f"model {call.model!r} serves {route.task}; this API needs a text-generation "
                f"model (use /predictions/{call.model} or /v2/models/{call.model}/infer)",
                "model",
            )
        return route

    async def handle(request: Request, translate: Callable[[Any], Call], chat: bool) -> Response:
        if not gw.authorized(request):
            return _error(OpenAIError(401, "missing or invalid API key (bearer token)", None))
        try:
            try:
                raw = await read_client_body(request, gw.config.max_body_bytes)
            except ClientError as e:
                raise OpenAIError(e.status, e.message) from None
            try:
                doc = json.loads(raw) if raw.strip() else None
            except ValueError as e:
                raise OpenAIError(400, f"the body is not valid JSON: {e}") from None
            call = translate(doc)
            route = generation_route(call)
        except OpenAIError as e:
            return _error(e)
        body = json.dumps(call.payload).encode()

        def to_sse(lines: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
            return sse_events(_decoded(lines), call, chat)

        async def work() -> Response:
            if call.stream:
                return await gw.stream_inference(
                    route,
                    body,
                    transform=to_sse,
                    media_type="text/event-stream",
                    error_line=lambda m: sse(error_body(m, "server_error")) + sse("[DONE]"),
                )
            async with gw.slot():
                r = await gw.predict(route.name, body, "application/json")
            if r.status_code != 200:
                return _upstream_error(r.status_code, r.content, gw.config.retry_after_s)
            result = r.json()
            created, rid = int(time.time()), new_id("chatcmpl" if chat else "cmpl")
            if chat:
                return JSONResponse(chat_response(call.model, result, rid, created))
            results = result if isinstance(result, list) else [result]
            return JSONResponse(completion_response(call.model, results, rid, created))

        response = openai_shaped(await gw.serve(route, work))
        if isinstance(response, StreamingResponse):
            response.headers["Cache-Control"] = "no-cache"
            response.headers["X-Accel-Buffering"] = "no"  # proxies: do not hold the events
        return response

    async def chat_completions(request: Request) -> Response:
        return await handle(request, chat_call, chat=True)

    async def completions(request: Request) -> Response:
        return await handle(request, completion_call, chat=False)

    async def models(request: Request) -> Response:
        if not gw.authorized(request):
            return _error(OpenAIError(401, "missing or invalid API key (bearer token)"))
        data = [
            model_card(m.name, m.task, gw.ready.get(m.name, False))
            for m in gw.config.models.values()
        ]
        return JSONResponse({"object": "list", "data": data})

    async def model(request: Request) -> Response:
        """OpenAI's model card; also KServe v1's readiness (same path): 503 until ready."""
        if not gw.authorized(request):
            return _error(OpenAIError(401, "missing or invalid API key (bearer token)"))
        name = request.path_params["model"]
        route = gw.config.models.get(name)
        if route is None:
            served = ", ".join(sorted(gw.config.models)) or "none"
            message = f"model {name!r} is not served here; served: {served}"
            return _error(OpenAIError(404, message, "model", "model_not_found"))
        ready = gw.ready.get(name, False) and not gw.stopping
        return JSONResponse(model_card(name, route.task, ready), 200 if ready else 503)

    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model}", model, methods=["GET"]),
    ]


def _upstream_error(status: int, content: bytes, retry_after: int) -> JSONResponse:
    """The handler's {"error": ...} (or TorchServe's own {"message": ...}) as OpenAI's error."""
    message = content.decode("utf-8", "replace")
    try:
        doc = json.loads(content)
        if isinstance(doc, dict):
            message = str(doc.get("error") or doc.get("message") or message)
    except ValueError:
        pass
    headers = {"Retry-After": str(retry_after)} if status in (429, 503) else None
    return JSONResponse(error_body(message, error_type(status)), status, headers=headers)


async def _decoded(lines: AsyncIterator[bytes]) -> AsyncIterator[Mapping[str, Any]]:
    async for line in lines:
        yield json.loads(line)
