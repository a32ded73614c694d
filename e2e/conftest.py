"""e2e fixtures: a real Kubernetes API server for every test.

By default the session brings up the local control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler built from the official Go modules, kwok nodes) through
`e2e/cluster/up.sh`. Set E2E_KUBECONFIG to run the same suite against any other cluster
(kind, k3s, EKS...): nothing is started or stopped then.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.kube import Cluster
from e2e.models import running_operator
from e2e.tmo_operator import OperatorProcess

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    external = os.environ.get("E2E_KUBECONFIG")
    if external:
        yield Cluster(Path(external))
        return
    # up.sh is idempotent: it returns at once when the control plane is already running
    # (a developer's `make cluster-up`), and then we leave it running afterwards too.
    kubeconfig = REPO / ".cluster" / "kubeconfig"
    was_up = (REPO / ".cluster" / "pids").is_dir() and _healthy(kubeconfig)
    subprocess.run([str(REPO / "e2e/cluster/up.sh")], check=True, cwd=REPO)
    try:
        yield Cluster(kubeconfig)
    finally:
        if not was_up and not os.environ.get("E2E_KEEP_CLUSTER"):
            subprocess.run([str(REPO / "e2e/cluster/down.sh")], check=False, cwd=REPO)


def _healthy(kubeconfig: Path) -> bool:
    if not kubeconfig.exists():
        return False
    r = subprocess.run(
        ["kubectl", "--kubeconfig", str(kubeconfig), "get", "--raw", "/readyz"],
        capture_output=True,
        text=True,
        env=Cluster.tool_env(),
    )
    return r.returncode == 0 and r.stdout.strip() == "ok"


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for finalizers)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture
def namespaced_operator(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> Iterator[OperatorProcess]:
    """`tmo operator --namespace NS` for this test's namespace alone: its counters (reconciles,
    writes) are this test's, whatever else runs on the cluster. Quick resyncs and retries."""
    with running_operator(
        cluster,
        tmp_path,
        "--namespace",
        namespace,
        "--resync-seconds",
        "2",
        "--retry-initial-seconds",
        "1",
        "--retry-max-seconds",
        "2",
        "--addon-check-seconds",
        "1",
    ) as op:
        yield op
