"""`tmo operator` as a real process for e2e tests and benchmarks: start, restart, counters."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from e2e.kube import Cluster, wait_for

REPO = Path(__file__).resolve().parent.parent
TMO = [sys.executable, "-m", "tmo.cli"]


@dataclass
class OperatorProcess:
    cluster: Cluster
    workdir: Path
    args: list[str] = field(default_factory=list)
    # None: the cluster's admin kubeconfig. Tests pass the operator ServiceAccount's.
    kubeconfig: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def stats_file(self) -> Path:
        return self.workdir / "stats.json"

    @property
    def log_file(self) -> Path:
        return self.workdir / f"operator-{self.starts}.log"

    def start(self, wait: bool = True) -> None:
        """Start the process; with `wait`, until its reconciler runs (a leader-election
        standby never gets there until it leads)."""
        self.starts += 1
        self.stats_file.unlink(missing_ok=True)
        env = self.cluster.env()
        log = open(self.log_file, "wb")  # noqa: SIM115 - the process owns it until stop()
        self.proc = subprocess.Popen(
            [
                *TMO,
                "operator",
                "--kubeconfig",
                str(self.kubeconfig or self.cluster.kubeconfig),
                "--stats-file",
                str(self.stats_file),
                *self.args,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=REPO,
        )
        if wait:
            self.wait_started()

    def wait_started(self, timeout: float = 60) -> None:
        wait_for(
            "the operator to start", lambda: self._alive() and self.stats_file.exists(), timeout
        )

    def _alive(self) -> bool:
        if self.proc is None or self.proc.poll() is not None:
            raise AssertionError(f"operator exited; log:\n{self.log()}")
        return True

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def stats(self) -> dict[str, Any]:
        self._alive()
        return dict(json.loads(self.stats_file.read_text()))

    def peak_rss_kib(self) -> int:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def log(self) -> str:
        try:
            return self.log_file.read_text()[-6000:]
        except OSError:
            return ""


def install_crds(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(REPO / "crds"))
    cluster.kubectl(
        "wait", "--for", "condition=Established", "crd/transformermodels.tmo.dev", "--timeout=60s"
    )


OPERATOR_NAMESPACE = "tmo-system"
CHART = REPO / "charts" / "tmo"


def chart_rbac(namespace: str = OPERATOR_NAMESPACE) -> str:
    """The chart's ServiceAccount and RBAC (the ClusterRole for models, the Role for the leader
    election Lease), with the only template value they use filled in."""
    docs = [
        (CHART / "templates" / f).read_text().replace("{{ .Release.Namespace }}", namespace)
        for f in ("serviceaccount.yaml", "rbac.yaml")
    ]
    return "\n---\n".join(docs)


def install_rbac(cluster: Cluster, namespace: str = OPERATOR_NAMESPACE) -> None:
    cluster.apply(
        json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})
    )
    cluster.apply(chart_rbac(namespace))


def operator_kubeconfig(cluster: Cluster, workdir: Path) -> Path:
    """A kubeconfig with the operator ServiceAccount's token: the operator runs with exactly the
    RBAC the chart ships, so a missing permission fails the e2e tests."""
    install_rbac(cluster)
    token = cluster.kubectl(
        "create", "token", "tmo-operator", "-n", OPERATOR_NAMESPACE, "--duration=2h"
    ).stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": "tmo-operator", "user": {"token": token}}],
        "contexts": [
            {
                "name": "tmo-operator",
                "context": {"cluster": admin["clusters"][0]["name"], "user": "tmo-operator"},
            }
        ],
        "current-context": "tmo-operator",
    }
    path = workdir / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
