"""A small handle on a cluster for e2e tests: kubectl with the right kubeconfig, and waits."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE = Path(os.environ.get("TMO_CACHE", Path.home() / ".cache" / "tmo"))
BIN_DIR_FILE = Path(__file__).resolve().parent.parent / ".cluster" / "bindir"


@dataclass(frozen=True)
class Cluster:
    kubeconfig: Path

    @staticmethod
    def tool_env() -> dict[str, str]:
        """PATH with the control plane's own kubectl first (same version as the API server)."""
        env = dict(os.environ)
        if BIN_DIR_FILE.exists():
            env["PATH"] = BIN_DIR_FILE.read_text().strip() + os.pathsep + env.get("PATH", "")
        return env

    def env(self) -> dict[str, str]:
        env = self.tool_env()
        env["KUBECONFIG"] = str(self.kubeconfig)
        return env

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        r = subprocess.run(
            ["kubectl", *args],
            input=input,
            capture_output=True,
            text=True,
            env=self.env(),
            timeout=timeout,
        )
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
        return r

    def apply(
        self, manifest: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        return self.kubectl("apply", "-f", "-", *args, input=manifest, check=check)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        ns = ["-n", namespace] if namespace else []
        out = self.kubectl("get", kind, name, *ns, "-o", "json").stdout
        return dict(json.loads(out))

    def get_all(
        self, kind: str, namespace: str | None = None, *selector: str
    ) -> list[dict[str, Any]]:
        ns = ["-n", namespace] if namespace else ["-A"]
        out = self.kubectl("get", kind, *ns, *selector, "-o", "json").stdout
        return list(json.loads(out)["items"])


def wait_for(
    what: str, condition: Callable[[], Any], timeout: float = 60, interval: float = 0.5
) -> Any:
    """Poll `condition` until it returns something truthy; fail with `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = condition()
        except (AssertionError, subprocess.SubprocessError, KeyError) as e:
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}; last: {last!r}")


def kstatus(cluster: Cluster, obj: dict[str, Any]) -> str:
    """What Flux's own status reader (sigs.k8s.io/cli-utils kstatus, built into the cluster's
    bin dir) makes of `obj`: Current, InProgress or Failed."""
    r = subprocess.run(
        ["kstatus"],
        input=json.dumps(obj),
        capture_output=True,
        text=True,
        env=cluster.tool_env(),
        timeout=30,
        check=True,
    )
    return str(json.loads(r.stdout)["status"])
