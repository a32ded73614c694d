"""The model pod as the operator renders it, run as local processes: its command lines, env and
volume mounts come from `tmo.render`, with the pod's paths mapped under one local directory.

Secrets are given as kubelet would give them: a credentials Secret's keys become both the fetch
container's environment (envFrom) and files in its credentials mount.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from tmo.render import render_children
from tmo.render.configmap import MODEL_STORE, MOUNT_PATH
from tmo.render.deployment import CREDENTIALS_DIR, HF_CACHE_DIR, PVC_ROOT

from tests.runtime.helpers import REPO


def rendered_containers(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    objects = render_children(doc).objects
    pod = next(o for o in objects if o["kind"] == "Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in [*pod["initContainers"], *pod["containers"]]}


class PodPaths:
    """The pod's mount points, mapped under one short local directory."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix="tmo-p", dir="/tmp"))
        self.mapping = {
            MOUNT_PATH: self.root / "config",
            MODEL_STORE: self.root / "store",
            "/tmp": self.root / "tmp",  # the emptyDir both containers mount
            PVC_ROOT: self.root / "pvc",
            CREDENTIALS_DIR: self.root / "credentials",
            HF_CACHE_DIR: self.root / "hf-cache",
        }
        for path in self.mapping.values():
            path.mkdir(parents=True, exist_ok=True)

    def local(self, value: str) -> str:
        for pod_path, here in self.mapping.items():
            if value == pod_path or value.startswith(pod_path + "/"):
                return str(here) + value[len(pod_path) :]
        return value

    def argv(self, container: dict[str, Any]) -> list[str]:
        argv = [self.local(a) for a in [*container["command"], *container.get("args", [])]]
        assert argv[0] == "python"
        return [sys.executable, *argv[1:]]

    def env(self, container: dict[str, Any], **overrides: str) -> dict[str, str]:
        # Literal values only: Secret references are given as overrides, as kubelet would.
        rendered = {e["name"]: self.local(e["value"]) for e in container["env"] if "value" in e}
        return {**os.environ, **rendered, **overrides}


def run_rendered_fetch(
    doc: dict[str, Any],
    *,
    secret: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
    paths: PodPaths | None = None,
    timeout: float = 180,
) -> tuple[subprocess.CompletedProcess[str], PodPaths]:
    """Run the rendered fetch init container for `doc`. `secret` is the content of
    spec.model.credentialsSecretRef's Secret; `env` adds what the test environment needs (an
    emulator's address), never what the pod would not have."""
    fetch = rendered_containers(doc)["fetch"]
    paths = paths or PodPaths()
    (paths.mapping[MOUNT_PATH] / "model.yaml").write_text(yaml.safe_dump(doc))
    secret_env: dict[str, str] = {}
    if secret is not None:
        assert fetch.get("envFrom"), "the rendered fetch container takes no credentials Secret"
        mount = next(m for m in fetch["volumeMounts"] if m["name"] == "model-credentials")
        files = Path(paths.local(mount["mountPath"]))
        files.mkdir(parents=True, exist_ok=True)
        for key, value in secret.items():
            (files / key).write_text(value)
            (files / key).chmod(0o440)
        secret_env = dict(secret)
    # A clean slate: nothing from the developer's own cloud, Hub or MLflow set-up leaks in.
    leaks = ("AWS_", "HF_", "GOOGLE_", "MLFLOW_", "STORAGE_EMULATOR_HOST")
    base = {k: v for k, v in os.environ.items() if not k.startswith(leaks)}
    rendered = {e["name"]: paths.local(e["value"]) for e in fetch["env"] if "value" in e}
    proc_env = base | rendered | secret_env | (env or {})
    proc = subprocess.run(
        paths.argv(fetch),
        cwd=REPO,
        env=proc_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc, paths
