"""`tmo serve -f FILE`: fetch -> TorchServe -> gateway, as local processes (the pod's contents)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tmo_runtime.fetcher import FetchError, IntegrityError, fetch
from tmo_runtime.manifest import ManifestError, ServeSpec, load_manifests

if TYPE_CHECKING:
    from tmo_runtime.torchserve import TorchServe

log = logging.getLogger("tmo.serve")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--file",
        action="append",
        required=True,
        type=Path,
        help="TransformerModel manifest (repeatable; multi-document YAML is fine)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="gateway bind address")
    parser.add_argument("--port", type=int, default=8080, help="gateway port")
    parser.add_argument("--metrics-port", type=int, default=9090, help="/metrics port")
    parser.add_argument(
        "--token-file",
        type=Path,
        help="file holding the bearer token clients must send (also the OpenAI API key)",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        help="state directory, kept after exit (default: a new temp dir, removed on exit)",
    )
    parser.add_argument("--archive", action="store_true", help="package as .mar, not a directory")
    parser.add_argument("--max-concurrency", type=int, default=16)
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--max-body-bytes", type=int, default=64 * 1024 * 1024)
    parser.add_argument("--job-queue-size", type=int, default=100, help="TorchServe's queue")
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="on SIGTERM/Ctrl-C, wait this long for admitted requests to finish (default 30)",
    )
    parser.add_argument(
        "--drain-delay",
        type=float,
        default=0.0,
        help="on SIGTERM, keep answering this long while /readyz says 503, before refusing new "
        "requests (behind a load balancer: its time to stop routing here; default 0)",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        help="seconds the gateway waits for TorchServe's answer before a 504 (default: the "
        "longest spec.runtime.responseTimeoutSeconds of the manifests, plus 10)",
    )
    parser.add_argument("--ready-timeout", type=float, default=300.0)


def _local_memory(ts: TorchServe) -> tuple[float, float]:
    from tmo_runtime.cgroup import process_group_rss, read_cgroup_memory

    groups = {ts.process.pid} if ts.process is not None else set()
    usage = process_group_rss(groups, {os.getpid()})
    cgroup = read_cgroup_memory()
    return usage, cgroup[1] if cgroup is not None else math.inf


def _fail(message: str, code: int) -> int:
    print(f"tmo serve: {message}", file=sys.stderr)
    return code


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # httpx (the fetcher's client) logs every call at INFO.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        specs: list[ServeSpec] = [s for f in args.file for s in load_manifests(f)]
    except (ManifestError, OSError) as e:
        return _fail(str(e), 2)
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        return _fail(f"model names must be unique; got {names}", 2)
    needs_auth = [s.name for s in specs if s.auth_required]
    if needs_auth and args.token_file is None:
        return _fail(f"{', '.join(needs_auth)} set spec.auth: pass --token-file", 2)
    if args.token_file is not None:
        if not args.token_file.is_file():
            return _fail(f"--token-file {args.token_file} does not exist", 2)
        if not args.token_file.read_text().strip():
            # An empty token would start a gateway that refuses every request.
            return _fail(
                f"--token-file {args.token_file} is empty: write the token clients must send "
                f"into it, e.g. `openssl rand -hex 24 > {args.token_file}`",
                2,
            )
    if args.token_file is None:
        log.warning("no --token-file: the gateway accepts requests without a bearer token")

    # Short path on purpose: TorchServe's workers put AF_UNIX sockets under it.
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tmo-", dir="/tmp"))
    workdir.mkdir(parents=True, exist_ok=True)
    code = 1
    try:
        code = _serve(args, specs, workdir)
        return code
    finally:
        if args.workdir is None and code != 1:
            # Our own temp dir (model copies, TorchServe logs and keys): leave nothing behind,
            # unless TorchServe died (exit 1): then its log is what the user needs.
            shutil.rmtree(workdir, ignore_errors=True)


def _serve(args: argparse.Namespace, specs: list[ServeSpec], workdir: Path) -> int:
    from tmo_runtime.gateway.app import GatewayConfig, route_of
    from tmo_runtime.gateway.server import run_event_loop, serve_gateway
    from tmo_runtime.packaging import package_huggingface, place_mar
    from tmo_runtime.torchserve import TorchServe, free_port
    from tmo_runtime.ts_config import TorchServeSettings, request_limit_for

    store = workdir / "store"
    entries = []
    for spec in specs:
        try:
            path = fetch(
                spec.model_uri,
                workdir / "fetch" / spec.name,
                base_dir=spec.base_dir,
                sha256=spec.model_sha256,
            )
        except IntegrityError as e:
            return _fail(str(e), 3)
        except FetchError as e:
            return _fail(str(e), 2)
        entry = spec.model_entry()
        if spec.model_format == "mar":
            entries.append(place_mar(path, store, entry))
        elif spec.model_format == "huggingface":
            handler = spec.handler_settings()
            entries.append(package_huggingface(path, store, entry, handler, archive=args.archive))
        else:
            return _fail(f"{spec.name}: model.format {spec.model_format} is not served yet", 2)

    settings = TorchServeSettings(
        model_store=str(store),
        models=entries,
        inference_port=free_port(),
        management_port=free_port(),
        metrics_port=free_port(),
        grpc_inference_port=free_port(),
        grpc_management_port=free_port(),
        job_queue_size=args.job_queue_size,
        max_request_size=request_limit_for(args.max_body_bytes),
    )
    ts = TorchServe(settings, workdir)
    config = GatewayConfig(
        models={s.name: route_of(s) for s in specs},
        inference_url=ts.inference_url,
        management_url=ts.management_url,
        ts_key_file=ts.key_file,
        token_file=args.token_file,
        max_concurrency=args.max_concurrency,
        max_queue=args.max_queue,
        max_body_bytes=args.max_body_bytes,
        drain_timeout_s=args.drain_timeout,
        drain_delay_s=args.drain_delay,
        request_timeout_s=args.request_timeout or max(s.response_timeout_s for s in specs) + 10.0,
        # Locally the cgroup is the whole session or CI job: report what this process and
        # TorchServe's process group hold, against the cgroup's limit, as one figure.
        container="tmo-serve",
        memory_reader=lambda: _local_memory(ts),
    )
    state: dict[str, Any] = {
        "workdir": str(workdir),
        "gateway": f"http://{args.host}:{args.port}",
        "metrics": f"http://{args.host}:{args.metrics_port}/metrics",
        "torchserve": {
            "inference": ts.inference_url,
            "management": ts.management_url,
            "metrics": ts.metrics_url,
            "key_file": str(ts.key_file),
            "log": str(ts.log_path),
        },
        "models": {s.name: {"task": s.task, "revision": s.revision} for s in specs},
    }

    started = time.monotonic()
    ts.start()
    assert ts.process is not None
    # Where everything is, for scripts and benchmarks (never the tokens themselves).
    state["torchserve_pid"] = ts.process.pid
    (workdir / "serve.json").write_text(json.dumps(state, indent=2))

    def listening() -> None:
        print(f"gateway   {state['gateway']}  (predictions: /predictions/NAME, OIP v2: /v2)")
        print(f"metrics   {state['metrics']}  (readiness: /readyz)")
        for s in specs:
            print(f"model     {s.name}  task={s.task}  revision={s.revision}  from {s.model_uri}")
        kept = "kept on exit" if args.workdir else "removed on exit"
        print(f"state     {workdir}  ({kept}; TorchServe log: {ts.log_path})", flush=True)

    def ready() -> None:
        print(f"ready     try: {example_curl(specs[0], state['gateway'], args.token_file)}")
        sys.stdout.flush()

    died = False  # TorchServe exited by itself (crash, OOM kill), not stopped by us

    async def stop_ts() -> None:
        nonlocal died
        died = not ts.alive()
        await asyncio.to_thread(ts.stop)

    try:
        run_event_loop(
            serve_gateway(
                config,
                args.host,
                args.port,
                args.metrics_port,
                on_listening=listening,
                on_ready=ready,
                on_stop=stop_ts,
                backend_alive=ts.alive,
            )
        )
    finally:
        ts.stop()
    log.info("stopped after %.0fs", time.monotonic() - started)
    if died:
        # Non-zero, so a supervisor restarts it and a script notices; the state dir is kept.
        return _fail(f"TorchServe exited unexpectedly; its log: {ts.log_path}", 1)
    return 0


# One request a user can paste, per task: what `tmo serve` prints once the models are ready.
_EXAMPLE_BODIES = {
    "text-classification": '{"inputs": "the refund is late"}',
    "token-classification": '{"inputs": "Ada Lovelace lived in London"}',
    "feature-extraction": '{"inputs": "the refund is late"}',
    "summarization": '{"inputs": "a long document ...", "parameters": {"max_new_tokens": 32}}',
    "text-generation": (
        '{"messages": [{"role": "user", "content": "hello"}], "parameters": {"max_new_tokens": 16}}'
    ),
}


def example_curl(spec: ServeSpec, gateway: str, token_file: Path | None) -> str:
    """A curl command for the model; the token is read from its file, never printed."""
    parts = ["curl", "-s", f"{gateway}/predictions/{spec.name}"]
    auth = ""
    if token_file is not None:
        # Left unquoted by shlex on purpose: the shell must expand $(cat FILE).
        auth = f' -H "Authorization: Bearer $(cat {shlex.quote(str(token_file))})"'
    body = _EXAMPLE_BODIES.get(spec.task)
    if body is None:  # image and speech models take the file as it is
        sample = "cat.jpg" if spec.task == "image-classification" else "clip.wav"
        return shlex.join(parts) + auth + f" --data-binary @{sample}"
    headers = ["-H", "Content-Type: application/json", "-d", body]
    return shlex.join(parts) + auth + " " + shlex.join(headers)
