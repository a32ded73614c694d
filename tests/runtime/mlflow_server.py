"""A real MLflow tracking server for the mlflow:// source tests, and a registry client that
registers model versions through the server's REST API (what `mlflow.register_model` does,
without the mlflow package in the project's venv).

The server comes from its own venv, built by e2e/tools/mlflow.sh (pinned in
e2e/tools/mlflow-requirements.txt): SQLite backend, artifacts proxied by the server
(`--serve-artifacts`) into a local folder.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
from tmo_runtime.torchserve import free_port

from tests.runtime.helpers import REPO

MLFLOW_SH = REPO / "e2e" / "tools" / "mlflow.sh"


def mlflow_bin() -> Path:
    """The pinned MLflow venv's bin folder (installed on first use: minutes, once)."""
    out = subprocess.run(
        ["bash", str(MLFLOW_SH)], check=True, stdout=subprocess.PIPE, text=True, timeout=1200
    )
    return Path(out.stdout.strip().splitlines()[-1])


@dataclass
class MlflowServer:
    process: subprocess.Popen[bytes]
    url: str
    root: Path
    log: Path

    def stop(self, timeout: float = 20.0) -> None:
        if self.process.poll() is None:
            # Its own process group: gunicorn/uvicorn workers go with it.
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def start_mlflow_server(
    root: Path,
    bin_dir: Path | None = None,
    timeout: float = 120,
    admin: tuple[str, str] | None = None,
) -> MlflowServer:
    """`admin`: run MLflow's basic-auth app (`--app-name basic-auth`) with this admin user."""
    bin_dir = bin_dir or mlflow_bin()
    root.mkdir(parents=True, exist_ok=True)
    (root / "artifacts").mkdir(exist_ok=True)
    port = free_port()
    log = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    auth_args: list[str] = []
    if admin is not None:
        ini = root / "basic_auth.ini"
        ini.write_text(
            "[mlflow]\n"
            "default_permission = READ\n"
            f"database_uri = sqlite:///{root / 'auth.db'}\n"
            f"admin_username = {admin[0]}\n"
            f"admin_password = {admin[1]}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
            # Without it every request pays a PBKDF2 check (seconds on a loaded CI machine).
            "auth_cache_ttl_seconds = 600\n"
        )
        env |= {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "tmo-test"}
        auth_args = ["--app-name", "basic-auth"]
    argv = [
        str(bin_dir / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--serve-artifacts",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        *auth_args,
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = MlflowServer(proc, f"http://127.0.0.1:{port}", root, log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"mlflow server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{server.url}/health", timeout=2).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    server.stop()
    raise RuntimeError(f"mlflow server not healthy in {timeout}s:\n{log.read_text()[-3000:]}")


@dataclass
class RegistryClient:
    """Just enough of MLflow's REST API to register model versions the way its client does."""

    url: str
    auth: tuple[str, str] | None = None
    client: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.client = httpx.Client(base_url=self.url, timeout=60, auth=self.auth)

    def call(self, method: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        if method == "GET":
            r = self.client.get(f"/api/2.0/mlflow/{path}", params=body)
        else:
            r = self.client.request(method, f"/api/2.0/mlflow/{path}", json=body)
        assert r.status_code == 200, f"{method} {path}: {r.status_code} {r.text}"
        return dict(r.json())

    def upload(self, artifact_uri: str, local: Path) -> None:
        """PUT every file under `local` (or `local` itself) below an mlflow-artifacts: URI."""
        assert artifact_uri.startswith("mlflow-artifacts:"), artifact_uri
        base = artifact_uri.split(":", 1)[1].lstrip("/")
        files = [local] if local.is_file() else sorted(p for p in local.rglob("*") if p.is_file())
        for path in files:
            rel = path.name if local.is_file() else path.relative_to(local).as_posix()
            r = self.client.put(
                f"/api/2.0/mlflow-artifacts/artifacts/{quote(f'{base}/{rel}')}",
                content=path.read_bytes(),
            )
            assert r.status_code == 200, f"PUT {rel}: {r.status_code} {r.text}"

    def experiment(self, name: str) -> str:
        return str(self.call("POST", "experiments/create", {"name": name})["experiment_id"])

    def run_with_artifacts(self, experiment_id: str, subdir: str, local: Path) -> str:
        """A finished run holding `local` under its artifacts' `subdir`; returns the run id."""
        run = self.call("POST", "runs/create", {"experiment_id": experiment_id})["run"]["info"]
        self.upload(f"{run['artifact_uri']}/{subdir}", local)
        self.call("POST", "runs/update", {"run_id": run["run_id"], "status": "FINISHED"})
        return str(run["run_id"])

    def logged_model(self, experiment_id: str, name: str, local: Path) -> str:
        """An MLflow 3 logged model holding the files under `local`; returns its model id."""
        model = self.call("POST", "logged-models", {"experiment_id": experiment_id, "name": name})
        info = model["model"]["info"]
        self.upload(info["artifact_uri"], local)
        self.call(
            "PATCH",
            f"logged-models/{info['model_id']}",
            {"model_id": info["model_id"], "status": "LOGGED_MODEL_READY"},
        )
        return str(info["model_id"])

    def register(self, name: str, source: str, **extra: str) -> str:
        """A new version of registered model `name` (created when new); returns the version."""
        r = self.client.get("/api/2.0/mlflow/registered-models/get", params={"name": name})
        if r.status_code != 200:
            self.call("POST", "registered-models/create", {"name": name})
        mv = self.call("POST", "model-versions/create", {"name": name, "source": source, **extra})
        version = str(mv["model_version"]["version"])
        deadline = time.monotonic() + 30
        while mv["model_version"].get("status", "READY") != "READY":
            assert time.monotonic() < deadline, mv
            time.sleep(0.2)
            mv = self.call("GET", "model-versions/get", {"name": name, "version": version})
        return version

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.call(
            "POST", "registered-models/alias", {"name": name, "alias": alias, "version": version}
        )

    def close(self) -> None:
        self.client.close()
