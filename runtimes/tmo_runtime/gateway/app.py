"""The gateway's HTTP surface: TorchServe passthrough, OIP v2, auth, admission, readiness."""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tmo_runtime.gateway import oip
from tmo_runtime.gateway.metrics import GatewayMetrics, MemoryReader
from tmo_runtime.podshare import clear_drained, mark_drained
from tmo_runtime.torchserve import Keys, read_keys

log = logging.getLogger("tmo.gateway")


@dataclass(frozen=True)
class ModelRoute:
    name: str
    task: str
    revision: str
    version: str = "1.0"


@dataclass(frozen=True)
class GatewayConfig:
    models: dict[str, ModelRoute]
    inference_url: str
    management_url: str
    ts_key_file: Path | None = None  # TorchServe's key_file.json; None: its token auth is off
    token_file: Path | None = None  # the client bearer token; None: no client auth (local only)
    max_concurrency: int = 16  # requests at TorchServe at once
    max_queue: int = 64  # requests waiting in the gateway beyond that; then 429
    queue_timeout_s: float = 30.0  # waited this long for a slot: 503
    request_timeout_s: float = 130.0
    retry_after_s: int = 1
    drain_timeout_s: float = 30.0
    # After SIGTERM, keep answering (while /readyz says 503) this long before refusing new
    # requests: Kubernetes takes a few seconds to drop the pod from the Service's endpoints,
    # and requests routed there meanwhile would otherwise fail (and trip the error-rate gate).
    drain_delay_s: float = 0.0
    ready_poll_s: float = 1.0
    # Bodies are read whole before forwarding: cap them (TorchServe's own cap is 64 MiB too).
    max_body_bytes: int = 64 * 1024 * 1024
    cgroup_root: Path = field(default_factory=lambda: Path("/sys/fs/cgroup"))
    # The memory series' `container` label for this process's own cgroup.
    container: str = "gateway"
    # In a pod: the directory shared with the torchserve container (tmo_runtime.podshare).
    share_dir: Path | None = None
    # Overrides the cgroup reading for this process's own figure (tmo serve: its process tree).
    memory_reader: MemoryReader | None = None


@dataclass(frozen=True)
class Upstream:
    """What TorchServe answered, read in full (responses are small JSON documents)."""

    status_code: int
    content: bytes
    content_type: str

    def json(self) -> Any:
        return json.loads(self.content)

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")


class Overloaded(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class _CachedFile:
    """A mounted Secret is updated in place on rotation: re-read when its mtime changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mtime: float | None = None
        self._value = ""

    def read(self) -> str:
        try:
            mtime = self.path.stat().st_mtime
        except OSError:
            return ""
        if mtime != self._mtime:
            self._value = self.path.read_text().strip()
            self._mtime = mtime
        return self._value


class Gateway:
    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.metrics = GatewayMetrics(
            [(m.name, m.revision) for m in config.models.values()],
            config.cgroup_root,
            config.container,
            config.share_dir,
            config.memory_reader,
        )
        self.metrics.queue_limit.set(config.max_concurrency + config.max_queue)
        self.ready: dict[str, bool] = dict.fromkeys(config.models, False)
        self.stopping = False  # SIGTERM seen: not ready, still answering for drain_delay_s
        self.draining = False  # refusing new requests, finishing admitted ones
        self.inflight = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._token = _CachedFile(config.token_file) if config.token_file else None
        self._keys = Keys(None, None, None)
        self._client: aiohttp.ClientSession | None = None
        self._poller: asyncio.Task[None] | None = None
        for m in config.models.values():
            self.metrics.inflight.labels(m.name, m.revision).set(0)
            self.metrics.ready.labels(m.name, m.revision).set(0)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        # aiohttp rather than httpx here: its per-request cost is what the gateway adds.
        connector = aiohttp.TCPConnector(limit=self.config.max_concurrency + 8)
        self._client = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=self.config.request_timeout_s, connect=5.0),
            auto_decompress=False,
        )
        self._reload_keys()
        if self.config.share_dir is not None:
            clear_drained(self.config.share_dir)
        self._poller = asyncio.create_task(self._poll_ready())

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
        if self._client is not None:
            await self._client.close()

    async def drain(self) -> None:
        """Report not ready, keep serving for the drain delay, then stop taking work and wait
        for what is in flight (bounded)."""
        self.stopping = True
        if self.config.drain_delay_s > 0:
            await asyncio.sleep(self.config.drain_delay_s)
        self.draining = True
        deadline = time.monotonic() + self.config.drain_timeout_s
        while self.inflight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.config.share_dir is not None:
            # TorchServe's supervisor waits for this before it stops the model server.
            mark_drained(self.config.share_dir)

    @property
    def client(self) -> aiohttp.ClientSession:
        assert self._client is not None, "Gateway.start() first"
        return self._client

    # -- TorchServe ------------------------------------------------------------------------

    def _reload_keys(self) -> None:
        if self.config.ts_key_file is not None:
            self._keys = read_keys(self.config.ts_key_file)

    def _ts_headers(self, key: str | None) -> dict[str, str]:
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _ts_call(
        self,
        method: str,
        url: str,
        kind: str,
        *,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Upstream:
        """Call TorchServe with its own token; re-read the key file once if it was rejected."""
        client_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else None
        for attempt in (0, 1):
            key = self._keys.inference if kind == "inference" else self._keys.management
            all_headers = {**(headers or {}), **self._ts_headers(key)}
            async with self.client.request(
                method, url, data=content, headers=all_headers, timeout=client_timeout
            ) as r:
                up = Upstream(r.status, await r.read(), r.headers.get("Content-Type", ""))
            rejected = up.status_code in (400, 401) and b"InvalidKeyException" in up.content
            if not rejected or attempt:
                return up
            self._reload_keys()
        raise AssertionError("unreachable")

    async def _poll_ready(self) -> None:
        while True:
            for m in self.config.models.values():
                ok = False
                try:
                    r = await self._ts_call(
                        "GET",
                        f"{self.config.management_url}/models/{m.name}",
                        "management",
                        timeout=5.0,
                    )
                    if r.status_code == 200:
                        workers = r.json()[0].get("workers", [])
                        ok = bool(workers) and all(w.get("status") == "READY" for w in workers)
                except (aiohttp.ClientError, TimeoutError, ValueError, IndexError, KeyError):
                    ok = False
                if ok != self.ready[m.name]:
                    log.info("model %s ready=%s", m.name, ok)
                self.ready[m.name] = ok
                self.metrics.ready.labels(m.name, m.revision).set(1 if ok else 0)
            await asyncio.sleep(self.config.ready_poll_s)

    def all_ready(self) -> bool:
        return not self.stopping and all(self.ready.values())

    # -- auth and admission ----------------------------------------------------------------

    def authorized(self, request: Request) -> bool:
        if self._token is None:
            return True
        expected = self._token.read()
        given = request.headers.get("authorization", "")
        scheme, _, value = given.partition(" ")
        if not expected or scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(value.strip().encode(), expected.encode())

    async def _admit(self) -> None:
        if self.draining:
            raise Overloaded(503, "draining: this replica is shutting down")
        if self._slots.locked() and self.waiting >= self.config.max_queue:
            raise Overloaded(429, "too many requests: the queue is full")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.config.queue_timeout_s)
        except TimeoutError:
            raise Overloaded(503, "timed out waiting for a free slot") from None
        finally:
            self.waiting -= 1

    async def run_inference(
        self, route: ModelRoute, call: Callable[[], Awaitable[Response]]
    ) -> Response:
        """Admission, in-flight gauge and duration histogram around one inference call."""
        start = time.perf_counter()
        labels = (route.name, route.revision)
        gauge = self.metrics.inflight.labels(*labels)
        self.inflight += 1
        gauge.inc()
        response: Response
        try:
            try:
                await self._admit()
            except Overloaded as e:
                response = self.overloaded(e)
            else:
                try:
                    response = await call()
                except TimeoutError:
                    response = JSONResponse({"error": "TorchServe timed out"}, 504)
                except aiohttp.ClientError as e:
                    log.warning("TorchServe unreachable: %s", type(e).__name__)
                    response = self.overloaded(Overloaded(503, "TorchServe unavailable"))
                except Exception:
                    # Still counted and timed: an unexpected answer must show in the error rate.
                    log.exception("gateway error on %s", route.name)
                    response = JSONResponse({"error": "internal gateway error"}, 500)
                finally:
                    self._slots.release()
        finally:
            self.inflight -= 1
            gauge.dec()
        code = str(response.status_code)
        self.metrics.duration.labels(*labels, code).observe(time.perf_counter() - start)
        self.metrics.requests.labels(*labels, code).inc()
        return response

    def overloaded(self, e: Overloaded) -> Response:
        return JSONResponse(
            {"error": e.reason},
            e.status,
            headers={"Retry-After": str(self.config.retry_after_s)},
        )

    async def predict(self, model: str, body: bytes, content_type: str | None) -> Upstream:
        headers = {"Content-Type": content_type} if content_type else {}
        return await self._ts_call(
            "POST",
            f"{self.config.inference_url}/predictions/{model}",
            "inference",
            content=body,
            headers=headers,
        )


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": "missing or invalid bearer token"},
        401,
        headers={"WWW-Authenticate": 'Bearer realm="tmo"'},
    )


def _passthrough(r: Upstream, retry_after: int) -> Response:
    headers = {}
    if r.status_code == 503:
        # TorchServe's own job queue is full: tell the caller when to come back.
        headers["Retry-After"] = str(retry_after)
    return Response(
        r.content,
        r.status_code,
        headers=headers,
        media_type=r.content_type or "application/json",
    )


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing more than `limit` bytes without buffering them first."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> JSONResponse:
    return _error(413, f"request body larger than {limit} bytes")


def build_api_app(gw: Gateway) -> Starlette:
    models = gw.config.models

    def authorized_route(request: Request) -> ModelRoute | Response:
        """The model a per-model endpoint names, or the 401/404 to answer instead."""
        if not gw.authorized(request):
            return _unauthorized()
        route = models.get(request.path_params["model"])
        if route is None:
            return _error(404, f"model {request.path_params['model']!r} is not served here")
        return route

    async def predictions(request: Request) -> Response:
        route = authorized_route(request)
        if isinstance(route, Response):
            return route
        try:
            body = await read_body(request, gw.config.max_body_bytes)
        except BodyTooLarge:
            return _too_large(gw.config.max_body_bytes)
        ctype = request.headers.get("content-type")

        async def call() -> Response:
            r = await gw.predict(route.name, body, ctype)
            return _passthrough(r, gw.config.retry_after_s)

        return await gw.run_inference(route, call)

    async def v2_server(request: Request) -> Response:
        if not gw.authorized(request):
            return _unauthorized()
        return JSONResponse({"name": "tmo", "version": "0.1.0", "extensions": []})

    async def v2_live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(request: Request) -> Response:
        ready = gw.all_ready()
        return JSONResponse({"ready": ready}, 200 if ready else 400)

    async def v2_model(request: Request) -> Response:
        route = authorized_route(request)
        if isinstance(route, Response):
            return route
        return JSONResponse(oip.model_metadata(route.name, route.task, route.revision))

    async def v2_model_ready(request: Request) -> Response:
        route = authorized_route(request)
        if isinstance(route, Response):
            return route
        ready = gw.ready[route.name] and not gw.stopping
        return JSONResponse({"name": route.name, "ready": ready}, 200 if ready else 400)

    async def v2_infer(request: Request) -> Response:
        route = authorized_route(request)
        if isinstance(route, Response):
            return route
        try:
            doc = json.loads(await read_body(request, gw.config.max_body_bytes))
            payload = oip.to_handler_payload(route.task, doc)
        except BodyTooLarge:
            return _too_large(gw.config.max_body_bytes)
        except ValueError as e:  # OipError is a ValueError, and so is bad JSON
            return _error(400, str(e))
        body = json.dumps(payload).encode()

        async def call() -> Response:
            r = await gw.predict(route.name, body, "application/json")
            if r.status_code != 200:
                try:
                    message = str(r.json().get("message") or r.json().get("error") or r.text)
                except ValueError:
                    message = r.text
                resp = _error(r.status_code, message)
                if r.status_code == 503:
                    resp.headers["Retry-After"] = str(gw.config.retry_after_s)
                return resp
            results = r.json()
            results = results if isinstance(results, list) else [results]
            outputs = oip.to_outputs(route.task, results)
            return JSONResponse(
                oip.infer_response(route.name, route.revision, doc.get("id"), outputs)
            )

        return await gw.run_inference(route, call)

    return Starlette(
        routes=[
            Route("/predictions/{model}", predictions, methods=["POST", "PUT"]),
            Route("/predictions/{model}/{version}", predictions, methods=["POST", "PUT"]),
            Route("/v2", v2_server, methods=["GET"]),
            Route("/v2/health/live", v2_live, methods=["GET"]),
            Route("/v2/health/ready", v2_ready, methods=["GET"]),
            Route("/v2/models/{model}", v2_model, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}", v2_model, methods=["GET"]),
            Route("/v2/models/{model}/ready", v2_model_ready, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
            Route("/v2/models/{model}/infer", v2_infer, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", v2_infer, methods=["POST"]),
            *probe_routes(gw),
        ]
    )


def probe_routes(gw: Gateway) -> list[Route]:
    async def livez(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def readyz(request: Request) -> Response:
        ready = gw.all_ready()
        return JSONResponse(
            {"ready": ready, "models": gw.ready, "draining": gw.stopping}, 200 if ready else 503
        )

    return [Route("/livez", livez), Route("/readyz", readyz)]


def build_metrics_app(gw: Gateway) -> Starlette:
    async def metrics(request: Request) -> Response:
        return Response(generate_latest(gw.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(routes=[Route("/metrics", metrics), *probe_routes(gw)])
