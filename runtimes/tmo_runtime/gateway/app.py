"""The gateway's HTTP surface: /predictions and /explanations (bodies normalised by
`bodies`), OIP v2, KServe v1 (`kserve`), auth, admission, metrics, streaming, readiness."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Route
from starlette.types import Receive, Scope, Send

from tmo_runtime.gateway import longdocs, oip
from tmo_runtime.gateway.bodies import (
    MEDIA_TASKS,
    ClientError,
    Invalid,
    decode_content_encoding,
    normalise,
    parse_json,
)
from tmo_runtime.gateway.metrics import GatewayMetrics, MemoryReader
from tmo_runtime.gateway.oip import OipError
from tmo_runtime.podshare import clear_drained, mark_drained
from tmo_runtime.torchserve import Keys, read_keys

if TYPE_CHECKING:
    from tmo_runtime.manifest import ServeSpec

log = logging.getLogger("tmo.gateway")


@dataclass(frozen=True)
class ModelRoute:
    name: str
    task: str
    revision: str
    version: str = "1.0"
    # The manifest's limits the gateway acts on (summarisation's long-document pieces).
    max_sequence_length: int = 512
    max_chunks: int = 64


def route_of(spec: ServeSpec, revision: str | None = None) -> ModelRoute:
    """The gateway's view of a manifest's model."""
    return ModelRoute(
        spec.name,
        spec.task,
        revision or spec.revision,
        max_sequence_length=spec.max_sequence_length,
        max_chunks=spec.max_chunks,
    )


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
        # Not None when no timeout is given: aiohttp reads timeout=None as "no timeout at all",
        # not "the session's" (request_timeout_s), and a hung TorchServe would hold the caller.
        client_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else self.client.timeout
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

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """One of the max_concurrency places at TorchServe (Overloaded when none comes)."""
        await self._admit()
        try:
            yield
        finally:
            self._slots.release()

    async def serve(self, route: ModelRoute, work: Callable[[], Awaitable[Response]]) -> Response:
        """Everything an inference route does once the caller is authorised and the model
        known: reading and checking the body, admission, the TorchServe call.

        In the in-flight gauge (KEDA's signal) while it runs, timed, and counted in
        tmo_requests_total by the status the client got. A client's mistake (ClientError) is its
        4xx; an unexpected exception anywhere is a JSON 500 that is counted like any other
        (the rollout's error gate must see it). A streamed answer (LiveStream) is counted when
        the stream ends, so its slot and duration cover the whole generation.
        """
        start = time.perf_counter()
        labels = (route.name, route.revision)
        gauge = self.metrics.inflight.labels(*labels)
        self.inflight += 1
        gauge.inc()
        finished = False

        def finish(code: int) -> None:
            nonlocal finished
            if finished:
                return
            finished = True
            self.inflight -= 1
            gauge.dec()
            self.metrics.duration.labels(*labels, str(code)).observe(time.perf_counter() - start)
            self.metrics.requests.labels(*labels, str(code)).inc()

        response: Response
        try:
            response = await work()
        except ClientError as e:
            response = _error(e.status, e.message)
        except Overloaded as e:
            response = self.overloaded(e)
        except TimeoutError:
            response = _error(504, "TorchServe did not answer in time")
        except aiohttp.ClientError as e:
            log.warning("TorchServe unreachable: %s", type(e).__name__)
            response = self.overloaded(Overloaded(503, "TorchServe unavailable"))
        except Exception:
            log.exception("gateway error on %s", route.name)
            response = _error(500, "internal gateway error")
        except BaseException:
            finish(CLIENT_CLOSED)  # cancelled: the client went away
            raise
        if isinstance(response, LiveStream):
            response.on_end = finish
        else:
            finish(response.status_code)
        return response

    async def run_inference(
        self, route: ModelRoute, call: Callable[[], Awaitable[Response]]
    ) -> Response:
        """Admission, in-flight gauge and duration histogram around one inference call."""

        async def admitted() -> Response:
            async with self.slot():
                return await call()

        return await self.serve(route, admitted)

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

    async def summarise(self, route: ModelRoute, payload: dict[str, Any]) -> Response:
        """Summarisation; a long document goes to TorchServe piece by piece (longdocs), so
        short requests are not held behind the whole document. One admission slot covers all
        the pieces: only one is at TorchServe at a time, and a drain lets the document finish."""
        limits = longdocs.Limits(route.max_sequence_length, route.max_chunks)
        try:
            plans = longdocs.plan(payload, limits)
        except longdocs.DocumentTooLong as e:
            raise ClientError(413, str(e)) from None
        if plans is None:
            r = await self.forward(route, json.dumps(payload).encode())
            return upstream_response(r, self.config.retry_after_s)

        async def send(body: bytes) -> longdocs.PieceAnswer:
            r = await self.predict(route.name, body, "application/json")
            try:
                doc = r.json()
            except ValueError:
                doc = {"error": r.text}
            return longdocs.PieceAnswer(r.status_code, doc)

        async with self.slot():
            answer = await longdocs.summarise_in_pieces(payload, plans, send)
        if answer.status != 200:
            body = answer.body if isinstance(answer.body, dict) else {"error": str(answer.body)}
            retry = answer.status in (429, 503)
            headers = {"Retry-After": str(self.config.retry_after_s)} if retry else None
            return JSONResponse(body, answer.status, headers=headers)
        return JSONResponse(answer.body, answer.status)

    async def forward(self, route: ModelRoute, body: bytes, *, explain: bool = False) -> Upstream:
        """A canonical body to TorchServe, a prediction or an explanation, in one slot."""
        async with self.slot():
            if explain:
                return await self.explain(route.name, body)
            return await self.predict(route.name, body, "application/json")

    async def explain(self, model: str, body: bytes) -> Upstream:
        """TorchServe's /explanations/{model}: the handler answers attention (text tasks)."""
        return await self._ts_call(
            "POST",
            f"{self.config.inference_url}/explanations/{model}",
            "inference",
            content=body,
            headers={"Content-Type": "application/json"},
        )

    async def predict_stream(self, model: str, body: bytes) -> AsyncIterator[bytes]:
        """A streamed prediction's NDJSON lines as TorchServe sends them (each ends in "\\n").

        A non-200 answer raises UpstreamError before the first line, with the whole answer:
        take the first line before committing to a streamed response. The read timeout is
        per chunk, not for the whole answer: a long generation keeps streaming."""
        url = f"{self.config.inference_url}/predictions/{model}"
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=5.0, sock_read=self.config.request_timeout_s
        )
        for attempt in (0, 1):
            headers = {"Content-Type": "application/json", **self._ts_headers(self._keys.inference)}
            async with self.client.post(url, data=body, headers=headers, timeout=timeout) as r:
                if r.status != 200:
                    up = Upstream(r.status, await r.read(), r.headers.get("Content-Type", ""))
                    rejected = up.status_code in (400, 401) and b"InvalidKeyException" in up.content
                    if rejected and not attempt:
                        self._reload_keys()
                        continue
                    raise UpstreamError(up)
                pending = b""
                async for chunk in r.content.iter_any():
                    pending += chunk
                    *lines, pending = pending.split(b"\n")
                    for line in lines:
                        if line.strip():
                            yield line + b"\n"
                if pending.strip():
                    yield pending + b"\n"
                return

    async def stream_inference(
        self,
        route: ModelRoute,
        body: bytes,
        transform: Callable[[AsyncIterator[bytes]], AsyncIterator[bytes]] | None = None,
        media_type: str = "application/x-ndjson",
        error_line: Callable[[str], bytes] | None = None,
    ) -> Response:
        """Run inside serve(): a streamed answer that holds its slot until the last line is
        sent. An error TorchServe answers before streaming is an ordinary JSON response with
        its status. `transform` rewrites the lines (e.g. into server-sent events)."""
        await self._admit()
        lines = self.predict_stream(route.name, body)
        try:
            first = await anext(lines)
        except UpstreamError as e:
            self._slots.release()
            return upstream_response(e.upstream, self.config.retry_after_s)
        except StopAsyncIteration:
            self._slots.release()
            return _error(502, "TorchServe ended the stream without an answer")
        except BaseException:
            self._slots.release()
            raise

        async def chained() -> AsyncIterator[bytes]:
            yield first
            async for line in lines:
                yield line

        out = chained() if transform is None else transform(chained())
        return LiveStream(out, lines, self._slots.release, media_type, error_line)


CLIENT_CLOSED = 499  # nginx's code for "the client closed the connection first"


class UpstreamError(Exception):
    """TorchServe answered a streamed request with an error status (the whole answer)."""

    def __init__(self, upstream: Upstream) -> None:
        super().__init__(upstream.status_code)
        self.upstream = upstream


class LiveStream(StreamingResponse):
    """NDJSON lines passed through as TorchServe sends them, not buffered.

    `release` frees the admission slot and `on_end(code)` records the request (Gateway.serve
    sets it) once the stream is over however it ends: completed (200), the client gone (499),
    or TorchServe failing mid-stream (500, and an {"error"} line, since the 200 was sent)."""

    def __init__(
        self,
        out: AsyncIterator[bytes],
        upstream: AsyncIterator[bytes],
        release: Callable[[], None],
        media_type: str = "application/x-ndjson",
        error_line: Callable[[str], bytes] | None = None,
    ) -> None:
        self._out = out
        # How the stream's format says "failed" after the 200 went out (NDJSON by default).
        self._error_line = error_line or (lambda m: json.dumps({"error": m}).encode() + b"\n")
        self._lines = upstream
        self._release: Callable[[], None] | None = release
        self._code = CLIENT_CLOSED  # until the last line went out
        self.on_end: Callable[[int], None] = lambda code: None
        super().__init__(self._body(), 200, media_type=media_type)

    async def _body(self) -> AsyncIterator[bytes]:
        try:
            async for line in self._out:
                yield line
        except Exception as e:  # the 200 is sent: say it in the stream, count it as a 500
            if isinstance(e, aiohttp.ClientError | TimeoutError):
                log.warning("TorchServe stream broke: %s", type(e).__name__)
            else:
                log.exception("gateway error while streaming")
            self._code = 500
            yield self._error_line("TorchServe stopped answering mid-stream")
            return
        self._code = 200

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.end()

    async def end(self) -> None:
        if self._release is None:
            return
        release, self._release = self._release, None
        try:
            for it in (self._out, self._lines):
                with contextlib.suppress(Exception):
                    await it.aclose()  # type: ignore[attr-defined]
        finally:
            release()
            self.on_end(self._code)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status)


def _unauthorized() -> JSONResponse:
    return JSONResponse(
        {"error": "missing or invalid bearer token"},
        401,
        headers={"WWW-Authenticate": 'Bearer realm="tmo"'},
    )


def upstream_error(r: Upstream) -> dict[str, Any]:
    """TorchServe's or the handler's error answer as {"error": ...}: the handler's JSON as it
    is, TorchServe's {"code", "type", "message"} with "error" added, anything else wrapped."""
    try:
        doc = r.json()
    except ValueError:
        doc = None
    if isinstance(doc, dict) and "error" in doc:
        return doc
    if isinstance(doc, dict) and "message" in doc:
        return {"error": str(doc["message"]), **doc}
    text = r.text.strip()[:2000]
    return {"error": text or f"TorchServe answered {r.status_code} with no body"}


def upstream_response(r: Upstream, retry_after: int) -> Response:
    """TorchServe's answer with its status: a 200's body as it is, errors as JSON."""
    if r.status_code == 200:
        return Response(r.content, 200, media_type=r.content_type or "application/json")
    headers = {}
    if r.status_code == 503:
        # TorchServe's own job queue is full: tell the caller when to come back.
        headers["Retry-After"] = str(retry_after)
    return JSONResponse(upstream_error(r), r.status_code, headers=headers)


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


async def read_client_body(request: Request, limit: int) -> bytes:
    """The body, decompressed (Content-Encoding), or ClientError 413/415/400."""
    try:
        raw = await read_body(request, limit)
    except BodyTooLarge:
        raise ClientError(413, f"request body larger than {limit} bytes") from None
    return decode_content_encoding(request.headers.get("content-encoding"), raw, limit)


def version_error(route: ModelRoute, version: str | None) -> ClientError | None:
    """A 404 for a version this gateway does not serve: only TorchServe's version of the model
    and its revision (the operator's name for what runs) are served here."""
    if version is None or version in (route.version, route.revision):
        return None
    return ClientError(
        404,
        f"model {route.name!r} has no version {version!r} here; served: {route.version!r} "
        f"(also addressed by its revision {route.revision!r}). Leave the version out to use it",
    )


def _url(request: Request) -> str:
    return str(request.url.replace(query=""))


def build_api_app(gw: Gateway, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The API port's routes. `extra_routes` (e.g. the OpenAI API) are matched first.

    Counting: a request naming a known model, once authorised, is counted in tmo_requests_total
    with the status it got, 4xx included. A 401, or a 404 for a model not served here, is not
    counted: it has no model to label it with (or none it may see)."""
    from tmo_runtime.gateway import kserve  # it builds on this module
    from tmo_runtime.gateway.openai_routes import openai_routes

    models = gw.config.models

    def authorized_route(request: Request) -> ModelRoute | Response:
        """The model a per-model endpoint names, or the 401/404 to answer instead."""
        if not gw.authorized(request):
            return _unauthorized()
        route = models.get(request.path_params["model"])
        if route is None:
            served = ", ".join(sorted(models)) or "none"
            return _error(
                404, f"model {request.path_params['model']!r} is not served here; served: {served}"
            )
        return route

    async def predictions(request: Request) -> Response:
        route = authorized_route(request)
        if isinstance(route, Response):
            return route
        explain = request.url.path.startswith("/explanations/")

        async def work() -> Response:
            if (bad := version_error(route, request.path_params.get("version"))) is not None:
                raise bad
            body = await read_client_body(request, gw.config.max_body_bytes)
            payload = normalise(
                route.task, request.headers.get("content-type"), body, url=_url(request)
            )
            if explain:
                check_explainable(route)
            canonical = json.dumps(payload).encode()
            if not explain and payload.get("parameters", {}).get("stream") is True:
                return await gw.stream_inference(route, canonical)
            if not explain and route.task == "summarization":
                return await gw.summarise(route, payload)
            r = await gw.forward(route, canonical, explain=explain)
            return upstream_response(r, gw.config.retry_after_s)

        return await gw.serve(route, work)

    async def v2_server(request: Request) -> Response:
        if not gw.authorized(request):
            return _unauthorized()
        return JSONResponse({"name": "tmo", "version": "0.1.0", "extensions": []})

    async def v2_live(request: Request) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(request: Request) -> Response:
        ready = gw.all_ready()
        return JSONResponse({"ready": ready}, 200 if ready else 400)

    def versioned_route(request: Request) -> ModelRoute | Response:
        route = authorized_route(request)
        if isinstance(route, Response):
            return route
        bad = version_error(route, request.path_params.get("version"))
        return route if bad is None else _error(bad.status, bad.message)

    async def v2_model(request: Request) -> Response:
        route = versioned_route(request)
        if isinstance(route, Response):
            return route
        return JSONResponse(oip.model_metadata(route.name, route.task, route.revision))

    async def v2_model_ready(request: Request) -> Response:
        route = versioned_route(request)
        if isinstance(route, Response):
            return route
        ready = gw.ready[route.name] and not gw.stopping
        return JSONResponse({"name": route.name, "ready": ready}, 200 if ready else 400)

    async def v2_infer(request: Request) -> Response:
        route = authorized_route(request)
        if isinstance(route, Response):
            return route

        async def work() -> Response:
            if (bad := version_error(route, request.path_params.get("version"))) is not None:
                raise bad
            if "inference-header-content-length" in request.headers:
                raise ClientError(
                    400,
                    "the binary tensor data extension is not supported here: send JSON tensors "
                    "(tritonclient: binary_data=False in set_data_from_numpy and in "
                    "InferRequestedOutput)",
                )
            body = await read_client_body(request, gw.config.max_body_bytes)
            example = oip.example(route.task, _url(request))
            try:
                if not body.strip():
                    raise OipError("the body is empty")
                doc = parse_json(body)
                payload = oip.to_handler_payload(route.task, doc)
            except (Invalid, OipError) as e:
                raise ClientError(400, f"{e}. Example: {example}") from None
            explain = oip.explain_requested(doc)
            no_stream(payload, "/predictions/" + route.name)
            if explain:
                check_explainable(route)
            r = await gw.forward(route, json.dumps(payload).encode(), explain=explain)
            if r.status_code != 200:
                return upstream_response(r, gw.config.retry_after_s)
            results = r.json()
            if explain:
                outputs = oip.explain_outputs(results)
            else:
                results = results if isinstance(results, list) else [results]
                outputs = oip.to_outputs(route.task, results)
            return JSONResponse(
                oip.infer_response(route.name, route.revision, doc.get("id"), outputs)
            )

        return await gw.serve(route, work)

    return Starlette(
        routes=[
            *extra_routes,
            # Before KServe's: GET /v1/models/{m} is both, and the OpenAI card carries
            # KServe's name/ready too.
            *openai_routes(gw),
            Route("/predictions/{model}", predictions, methods=["POST", "PUT"]),
            Route("/predictions/{model}/{version}", predictions, methods=["POST", "PUT"]),
            Route("/explanations/{model}", predictions, methods=["POST", "PUT"]),
            Route("/explanations/{model}/{version}", predictions, methods=["POST", "PUT"]),
            Route("/v2", v2_server, methods=["GET"]),
            Route("/v2/health/live", v2_live, methods=["GET"]),
            Route("/v2/health/ready", v2_ready, methods=["GET"]),
            Route("/v2/models/{model}", v2_model, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}", v2_model, methods=["GET"]),
            Route("/v2/models/{model}/ready", v2_model_ready, methods=["GET"]),
            Route("/v2/models/{model}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
            Route("/v2/models/{model}/infer", v2_infer, methods=["POST"]),
            Route("/v2/models/{model}/versions/{version}/infer", v2_infer, methods=["POST"]),
            *kserve.routes(gw, authorized_route),
            *probe_routes(gw),
        ]
    )


def no_stream(payload: dict[str, Any], where: str) -> None:
    """Streaming is answered on /predictions only (NDJSON lines); these APIs answer once."""
    params = payload.get("parameters")
    if isinstance(params, dict) and params.get("stream") is True:
        raise ClientError(
            400,
            f"parameters.stream: streamed answers come from {where} (NDJSON lines); "
            "leave stream out here",
        )


def check_explainable(route: ModelRoute) -> None:
    if route.task in MEDIA_TASKS:
        raise ClientError(
            400,
            f"explanations are for text tasks; {route.name!r} is {route.task}. Send the same "
            f"body to /predictions/{route.name} for its answer",
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
