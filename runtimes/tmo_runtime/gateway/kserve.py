"""KServe v1 (`/v1/models/NAME:predict`, `:explain`, readiness) over the same TorchServe calls.

`{"instances": [...], "parameters"?}` becomes the canonical payload with a list of inputs
(bodies.normalise_instances), so the answer is one prediction per instance:
`{"predictions": [...]}` (`{"explanations": [...]}` for `:explain`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tmo_runtime.gateway.bodies import normalise_instances

if TYPE_CHECKING:
    from tmo_runtime.gateway.app import Gateway, ModelRoute


def routes(
    gw: Gateway, authorized_route: Callable[[Request], ModelRoute | Response]
) -> list[Route]:
    from tmo_runtime.gateway.app import (
        check_explainable,
        no_stream,
        read_client_body,
        upstream_response,
    )

    async def infer(request: Request) -> Response:
        route = authorized_route(request)
        if isinstance(route, Response):
            return route
        explain = request.url.path.endswith(":explain")

        async def work() -> Response:
            body = await read_client_body(request, gw.config.max_body_bytes)
            url = str(request.url.replace(query=""))
            payload = normalise_instances(route.task, body, url=url)
            no_stream(payload, "/predictions/" + route.name)
            if explain:
                check_explainable(route)
            canonical = json.dumps(payload).encode()
            async with gw.slot():
                if explain:
                    r = await gw.explain(route.name, canonical)
                else:
                    r = await gw.predict(route.name, canonical, "application/json")
            if r.status_code != 200:
                return upstream_response(r, gw.config.retry_after_s)
            results = r.json()
            results = results if isinstance(results, list) else [results]
            return JSONResponse({"explanations" if explain else "predictions": results})

        return await gw.serve(route, work)

    async def ready(request: Request) -> Response:
        route = authorized_route(request)
        if isinstance(route, Response):
            return route
        ok = gw.ready[route.name] and not gw.stopping
        return JSONResponse({"name": route.name, "ready": ok}, 200 if ok else 503)

    return [
        Route("/v1/models/{model}:predict", infer, methods=["POST"]),
        Route("/v1/models/{model}:explain", infer, methods=["POST"]),
        Route("/v1/models/{model}", ready, methods=["GET"]),
    ]
