"""Entry points of the model pod's containers (`python -m tmo_runtime fetch|torchserve|gateway`).

The operator renders (tmo.render.deployment): an init container `fetch --manifest M
--model-store S`, `torchserve` (TorchServe on loopback under tmo_runtime.supervisor) and
`gateway --manifest M`. Ports, URLs, revision and token come from the TMO_* environment the
operator sets; the two containers share TMO_SHARE_DIR (tmo_runtime.podshare).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import re
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path

import httpx

from tmo_runtime.fetcher import FetchError, IntegrityError, fetch
from tmo_runtime.manifest import ManifestError, ServeSpec, load_manifests
from tmo_runtime.podshare import SHARE_DIR_ENV

log = logging.getLogger("tmo.pod")

# Where the fetch container leaves its one-line verdict for kubelet: the rendered
# terminationMessagePath (kubelet mounts that file writable under a read-only root filesystem),
# read back by the operator from the pod's status (lastState.terminated.message).
TERMINATION_MESSAGE_ENV = "TMO_TERMINATION_MESSAGE_PATH"
# What a fetch meets that is no bug in TMO: a source that is missing, denies access, cannot be
# reached or times out (OSError covers fsspec's FileNotFoundError/PermissionError), an artifact
# that does not match its digest, a manifest that does not parse.
EXPECTED_FETCH_ERRORS = (FetchError, IntegrityError, ManifestError, OSError, httpx.HTTPError)
# kubelet keeps at most 4096 bytes of a termination message; one line is plenty.
_LINE_LIMIT = 1024
_USERINFO = re.compile(r"(?i)\b(https?://)[^/\s@]+@")
_QUERY = re.compile(r"(?i)\b(https?://[^\s?#]+)\?[^\s]*")


def _spec(path: Path) -> ServeSpec:
    specs = load_manifests(path)
    if len(specs) != 1:
        raise ManifestError(f"{path}: a pod serves exactly one TransformerModel")
    return specs[0]


def run_fetch(manifest: Path, model_store: Path) -> int:
    """Fetch, verify and package as `<name>.mar`: the store is then mounted read-only."""
    return _fetch_spec(_spec(manifest), manifest, model_store)


def redact(text: str) -> str:
    """A URI's credentials never reach a log or a pod's status: user:password@ and query
    strings (a presigned URL's signature) are blanked."""
    return _QUERY.sub(r"\1?<redacted>", _USERINFO.sub(r"\1<redacted>@", text))


def fetch_failure_line(uri: str, error: BaseException, expected: bool = True) -> str:
    """`fetch failed: URI: cause` on one line, the URI named once."""
    cause = " ".join(str(error).split())
    if not expected or not isinstance(error, (FetchError, IntegrityError, ManifestError)):
        # httpx and OSError messages alone ("timed out", "[Errno 13] ...") need their kind.
        cause = f"{type(error).__name__}: {cause}" if cause else type(error).__name__
    if not expected:
        cause = f"unexpected {cause} (a bug in tmo_runtime: the traceback is above)"
    line = f"fetch failed: {cause}" if uri and uri in cause else f"fetch failed: {uri}: {cause}"
    line = redact(line)
    return line if len(line) <= _LINE_LIMIT else line[: _LINE_LIMIT - 1] + "…"


def fetch_command(manifest: Path, model_store: Path) -> int:
    """The init container: on failure one line names the URI and the cause, on stderr and in
    the termination message, and the exit status is 1 (kubelet shows Init:Error, then
    Init:CrashLoopBackOff, and the operator turns that line into the model's Stalled message).
    Only a bug shows a traceback, still followed by that one line."""
    uri = str(manifest)
    try:
        spec = _spec(manifest)
        uri = spec.model_uri
        return _fetch_spec(spec, manifest, model_store)
    except EXPECTED_FETCH_ERRORS as e:
        line = fetch_failure_line(uri, e)
    except Exception as e:
        traceback.print_exc()
        line = fetch_failure_line(uri, e, expected=False)
    print(line, file=sys.stderr, flush=True)
    _write_termination_message(line)
    return 1


def _write_termination_message(line: str) -> None:
    path = os.environ.get(TERMINATION_MESSAGE_ENV)
    if not path:
        return
    # When it cannot be written, kubelet falls back to the log's tail: it ends with this line.
    with contextlib.suppress(OSError):
        Path(path).write_text(line + "\n", encoding="utf-8")


def _fetch_spec(spec: ServeSpec, manifest: Path, model_store: Path) -> int:
    from tmo_runtime.packaging import package_huggingface

    entry = spec.model_entry()
    with tempfile.TemporaryDirectory(prefix="fetch-") as tmp:
        path = fetch(spec.model_uri, Path(tmp), base_dir=manifest.parent, sha256=spec.model_sha256)
        if spec.model_format == "mar":
            target = model_store / f"{spec.name}.mar"
            model_store.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())  # a copy: the temp dir goes away
        elif spec.model_format == "huggingface":
            package_huggingface(path, model_store, entry, spec.handler_settings(), archive=True)
        else:
            raise FetchError(f"model.format {spec.model_format} is not served yet")
    log.info("%s: fetched %s into %s", spec.name, spec.model_uri, model_store)
    return 0


def _share_dir() -> Path | None:
    value = os.environ.get(SHARE_DIR_ENV)
    return Path(value) if value else None


def _drain_timeout() -> float:
    return float(os.environ.get("TMO_GATEWAY_DRAIN_TIMEOUT", "25"))


def _drain_delay() -> float:
    return float(os.environ.get("TMO_GATEWAY_DRAIN_DELAY", "5"))


def run_torchserve(config: Path, log4j: Path, model_store: Path) -> int:
    from tmo_runtime.supervisor import SupervisorConfig
    from tmo_runtime.supervisor import run as supervise

    for path, what in ((config, "--config"), (log4j, "--log4j")):
        if not path.is_file():
            raise FileNotFoundError(f"{what} {path} does not exist")
    return supervise(
        SupervisorConfig(
            config_properties=config,
            log4j=log4j,
            model_store=model_store,
            work_dir=Path(os.environ.get("TMPDIR", "/tmp")),
            share_dir=_share_dir(),
            cgroup_root=Path(os.environ.get("TMO_CGROUP_ROOT", "/sys/fs/cgroup")),
            drain_wait_s=_drain_delay() + _drain_timeout() + 2.0,
        )
    )


def run_gateway(manifest: Path, token_file: Path | None) -> int:
    from tmo_runtime.gateway.app import GatewayConfig, route_of
    from tmo_runtime.gateway.server import run_event_loop, serve_gateway

    spec = _spec(manifest)
    env = os.environ
    token_path = token_file
    if token_path is None and env.get("TMO_AUTH_TOKEN"):
        # The Secret arrives as an environment variable: keep it in a private file so the
        # gateway has one code path (and a mounted file, when used instead, rotates in place).
        fd, name = tempfile.mkstemp(prefix="token-")
        with os.fdopen(fd, "w") as f:
            f.write(env["TMO_AUTH_TOKEN"])
        token_path = Path(name)
    if spec.auth_required and token_path is None:
        raise ManifestError(f"{spec.name} sets spec.auth but no token reached the gateway")
    revision = env.get("TMO_REVISION", spec.revision)
    config = GatewayConfig(
        models={spec.name: route_of(spec, revision)},
        inference_url=env.get("TMO_TORCHSERVE_URL", "http://127.0.0.1:8080"),
        management_url=env.get("TMO_TORCHSERVE_MANAGEMENT_URL", "http://127.0.0.1:8081"),
        # TorchServe's own key file, when its token auth is on and the file is shared.
        ts_key_file=Path(env["TMO_TORCHSERVE_KEY_FILE"])
        if env.get("TMO_TORCHSERVE_KEY_FILE")
        else None,
        token_file=token_path,
        max_concurrency=int(env.get("TMO_GATEWAY_MAX_CONCURRENCY", "16")),
        max_queue=int(env.get("TMO_GATEWAY_MAX_QUEUE", "64")),
        drain_timeout_s=_drain_timeout(),
        # TorchServe answers within spec.runtime.responseTimeoutSeconds (or fails the worker):
        # wait that long and a little, then 504.
        request_timeout_s=spec.response_timeout_s + 10.0,
        drain_delay_s=_drain_delay(),
        cgroup_root=Path(env.get("TMO_CGROUP_ROOT", "/sys/fs/cgroup")),
        share_dir=_share_dir(),
    )
    port = int(env.get("TMO_GATEWAY_PORT", "8080"))
    metrics_port = int(env.get("TMO_GATEWAY_METRICS_PORT", "9090"))
    run_event_loop(serve_gateway(config, "0.0.0.0", port, metrics_port))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tmo_runtime")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("fetch", help="fetch, verify and package the model (init container)")
    f.add_argument("--manifest", type=Path, default=Path(os.environ.get("TMO_MANIFEST", "")))
    f.add_argument(
        "--model-store", type=Path, default=Path(os.environ.get("TMO_MODEL_STORE", "/models"))
    )
    t = sub.add_parser("torchserve", help="run TorchServe under its supervisor (model container)")
    t.add_argument("--config", type=Path, default=Path(os.environ.get("TMO_TORCHSERVE_CONFIG", "")))
    t.add_argument("--log4j", type=Path, required=True)
    t.add_argument(
        "--model-store", type=Path, default=Path(os.environ.get("TMO_MODEL_STORE", "/models"))
    )
    g = sub.add_parser("gateway", help="run the gateway in front of TorchServe")
    g.add_argument("--manifest", type=Path, default=Path(os.environ.get("TMO_MANIFEST", "")))
    g.add_argument("--token-file", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        if args.command == "fetch":
            return fetch_command(args.manifest, args.model_store)
        if args.command == "torchserve":
            return run_torchserve(args.config, args.log4j, args.model_store)
        return run_gateway(args.manifest, args.token_file)
    except IntegrityError as e:
        print(f"tmo fetch: {e}", file=sys.stderr)
        return 3
    except (FetchError, ManifestError, OSError) as e:
        print(f"tmo {args.command}: {e}", file=sys.stderr)
        return 2
