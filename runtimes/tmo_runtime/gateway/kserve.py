"""KServe v1 (`/v1/models/NAME:predict`, `:explain`, readiness) over the same TorchServe calls.

`{"instances": [...], "parameters"?}` becomes the canonical payload with a list of inputs
(bodies.normalise_instances), so the answer is one prediction per instance:
`{"predictions": [...]}` (`{"explanations": [...]}` for `:explain`). Readiness,
`GET /v1/models/NAME`, is the OpenAI model card's route (openai_routes), which carries KServe's
`name` and `ready` and answers 503 until the model is ready.
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
            r = await gw.forward(route, json.dumps(payload).encode(), explain=explain)
            if r.status_code != 200:
                return upstream_response(r, gw.config.retry_after_s)
            results = r.json()
            results = results if isinstance(results, list) else [results]
            return JSONResponse({"explanations" if explain else "predictions": results})

        return await gw.serve(route, work)

    return [
        Route("/v1/models/{model}:predict", infer, methods=["POST"]),
        Route("/v1/models/{model}:explain", infer, methods=["POST"]),
    ]
