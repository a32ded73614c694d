"""KEDA and the Prometheus Operator are optional: without their CRDs a model still serves and its
conditions say why; once they are installed, the next reconcile adds the ScaledObject and the
monitoring objects by itself, with no change to the model.

This deletes cluster-wide CRDs, so it runs only against the local control plane.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.kube import Cluster, wait_for
from e2e.tmo_operator import REPO, OperatorProcess, install_crds, operator_kubeconfig


def third_party_crds() -> Path:
    """TMO_THIRD_PARTY_CRDS, else the pinned upstream CRDs in the cache (fetched if missing)."""
    if os.environ.get("TMO_THIRD_PARTY_CRDS"):
        return Path(os.environ["TMO_THIRD_PARTY_CRDS"])
    script = 'e2e/cluster/crds.sh >&2 && source e2e/cluster/versions.sh && echo "$THIRD_PARTY_CRDS"'
    out = subprocess.run(
        ["bash", "-c", script], cwd=REPO, check=True, capture_output=True, text=True
    )
    return Path(out.stdout.strip())


THIRD_PARTY = third_party_crds()
ADDONS = {
    "scaledobjects.keda.sh": THIRD_PARTY / "keda" / "keda.sh_scaledobjects.yaml",
    "prometheusrules.monitoring.coreos.com": THIRD_PARTY
    / "prometheus-operator"
    / "monitoring.coreos.com_prometheusrules.yaml",
    "servicemonitors.monitoring.coreos.com": THIRD_PARTY
    / "prometheus-operator"
    / "monitoring.coreos.com_servicemonitors.yaml",
}

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("E2E_KUBECONFIG")),
    reason="deletes the KEDA and Prometheus Operator CRDs: never on someone else's cluster",
)


def _install_addons(cluster: Cluster) -> None:
    cluster.kubectl("apply", "--server-side", *(a for f in ADDONS.values() for a in ("-f", str(f))))
    cluster.kubectl("wait", "--for", "condition=Established", *(f"crd/{c}" for c in ADDONS))


@pytest.fixture
def without_addons(cluster: Cluster) -> Iterator[None]:
    cluster.kubectl("delete", "crd", *ADDONS, "--wait=true", "--timeout=60s")
    try:
        yield
    finally:
        _install_addons(cluster)  # other tests need them back, whatever happened here


@pytest.fixture
def operator(cluster: Cluster, without_addons: None, tmp_path: Path) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    op = OperatorProcess(
        cluster,
        tmp_path,
        kubeconfig=operator_kubeconfig(cluster, tmp_path),
        args=["--resync-seconds", "3", "--addon-check-seconds", "2"],
    )
    op.start()
    yield op
    op.stop()


MODEL = {
    "apiVersion": "tmo.dev/v1alpha1",
    "kind": "TransformerModel",
    "metadata": {"name": "addons"},
    "spec": {
        "task": "text-classification",
        "model": {"uri": "https://models.example.com/tinybert.tar.gz", "format": "huggingface"},
        "scaling": {"minReplicas": 1, "maxReplicas": 3},
    },
}


def _conditions(cluster: Cluster, ns: str) -> dict[str, dict[str, str]]:
    status = cluster.get("tm", "addons", ns).get("status", {})
    return {c["type"]: c for c in status.get("conditions", [])}


def test_model_serves_without_keda_and_prometheus_operator_then_gains_them(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.apply(json.dumps(MODEL), "-n", namespace)

    def ready_without_addons() -> dict[str, dict[str, str]] | None:
        c = _conditions(cluster, namespace)
        return c if c.get("Ready", {}).get("status") == "True" else None

    conds = wait_for("Ready=True without KEDA", ready_without_addons, timeout=60)
    assert conds["AutoscalingReady"]["status"] == "False"
    assert conds["AutoscalingReady"]["reason"] == "KEDANotInstalled"
    assert "KEDA" in conds["AutoscalingReady"]["message"]
    assert conds["MonitoringReady"]["status"] == "False"
    assert conds["MonitoringReady"]["reason"] == "PrometheusOperatorNotInstalled"
    # The model itself is there: its Deployment and Service serve.
    assert cluster.get_all("deployments", namespace)
    assert cluster.get("service", "addons", namespace)

    _install_addons(cluster)

    def addons_applied() -> bool:
        c = _conditions(cluster, namespace)
        return all(
            c.get(t, {}).get("status") == "True" for t in ("AutoscalingReady", "MonitoringReady")
        )

    wait_for("the next reconcile to add KEDA and monitoring objects", addons_applied, timeout=60)
    so = cluster.get("scaledobject", "addons", namespace)
    assert so["spec"]["maxReplicaCount"] == 3
    assert cluster.get("prometheusrule", "addons", namespace)
    assert cluster.get("servicemonitor", "addons", namespace)
    assert _conditions(cluster, namespace)["Ready"]["status"] == "True"
