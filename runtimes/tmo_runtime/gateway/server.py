"""Run the gateway's two listeners (API and metrics) with a graceful drain on SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from pathlib import Path
from typing import Any

import uvicorn

from tmo_runtime.gateway.app import (
    Gateway,
    GatewayConfig,
    ModelRoute,
    build_api_app,
    build_metrics_app,
)

log = logging.getLogger("tmo.gateway")


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the drain decides when to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve_gateway(
    config: GatewayConfig,
    host: str,
    port: int,
    metrics_port: int,
    *,
    on_listening: Callable[[], None] | None = None,
    on_ready: Callable[[], None] | None = None,
    on_stop: Callable[[], Awaitable[None]] | None = None,
    backend_alive: Callable[[], bool] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT, then drain in-flight requests and return."""
    gw = Gateway(config)
    await gw.start()

    def server(app: object, p: int) -> _Server:
        return _Server(
            uvicorn.Config(
                app,  # type: ignore[arg-type]
                host=host,
                port=p,
                lifespan="off",
                log_level="warning",
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        )

    api = server(build_api_app(gw), port)
    metrics = server(build_metrics_app(gw), metrics_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def watch() -> None:
        await stop.wait()
        log.info(
            "signal received: not ready; refusing new requests in %.0fs, then draining "
            "(%d in flight)",
            gw.config.drain_delay_s,
            gw.inflight,
        )
        await gw.drain()
        api.should_exit = True
        metrics.should_exit = True

    async def announce() -> None:
        while not (api.started and metrics.started):
            if api.should_exit:
                return
            await asyncio.sleep(0.05)
        if on_listening is not None:
            on_listening()
        if on_ready is None:
            return
        while not gw.all_ready():
            if api.should_exit:
                return
            await asyncio.sleep(0.2)
        on_ready()

    async def guard() -> None:
        # If TorchServe dies there is nothing left to serve: stop rather than answer 503s.
        while backend_alive is not None:
            if not backend_alive():
                log.error("TorchServe exited: stopping the gateway")
                stop.set()
                return
            await asyncio.sleep(1.0)

    watcher = asyncio.create_task(watch())
    guardian = asyncio.create_task(guard())
    announcer = asyncio.create_task(announce())
    try:
        await asyncio.gather(api.serve(), metrics.serve())
    finally:
        for task in (watcher, announcer, guardian):
            task.cancel()
        await gw.close()
        if on_stop is not None:
            await on_stop()


def run_event_loop(main: Coroutine[Any, Any, None]) -> None:
    """uvloop when installed (the runtime image has it): the gateway's per-request CPU is
    taken from the model on a small pod."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


def parse_model(text: str) -> ModelRoute:
    """NAME=TASK[@REVISION]"""
    name, _, rest = text.partition("=")
    task, _, revision = rest.partition("@")
    if not name or not task:
        raise argparse.ArgumentTypeError(f"--model takes NAME=TASK[@REVISION]; got {text!r}")
    return ModelRoute(name=name, task=task, revision=revision or "local")


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m tmo_runtime.gateway`: the gateway container of a model pod."""
    p = argparse.ArgumentParser(prog="tmo-gateway")
    p.add_argument("--model", action="append", type=parse_model, required=True)
    p.add_argument("--inference-url", default="http://127.0.0.1:8080")
    p.add_argument("--management-url", default="http://127.0.0.1:8081")
    p.add_argument("--ts-key-file", type=Path)
    p.add_argument("--token-file", type=Path)
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--metrics-port", type=int, default=9090)
    p.add_argument("--max-concurrency", type=int, default=16)
    p.add_argument("--max-queue", type=int, default=64)
    p.add_argument("--drain-timeout", type=float, default=30.0)
    p.add_argument("--drain-delay", type=float, default=0.0)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx (the fetcher's client) logs every call at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = GatewayConfig(
        models={m.name: m for m in args.model},
        inference_url=args.inference_url,
        management_url=args.management_url,
        ts_key_file=args.ts_key_file,
        token_file=args.token_file,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        drain_timeout_s=args.drain_timeout,
        drain_delay_s=args.drain_delay,
    )
    run_event_loop(serve_gateway(config, args.host, args.port, args.metrics_port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
