"""An add-on CRD deleted while the operator runs (KEDA or the Prometheus Operator uninstalled):
the model keeps serving without that child, its status names what is missing, the operator
neither crashes nor hot-loops, and the child comes back once the CRD is installed again.

This deletes cluster-wide CRDs, so it runs only against the local control plane.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from e2e.kube import Cluster, wait_for
from e2e.models import apply_model, condition, small_model, tm, wait_ready
from e2e.test_addons import ADDONS
from e2e.tmo_operator import OperatorProcess

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("E2E_KUBECONFIG")),
    reason="deletes the KEDA and Prometheus Operator CRDs: never on someone else's cluster",
)


@pytest.fixture
def removed_crds(cluster: Cluster) -> Iterator[list[str]]:
    """CRDs a test deletes: installed again afterwards, whatever happened (tests share them)."""
    removed: list[str] = []
    yield removed
    if removed:
        _install(cluster, *removed)


def _install(cluster: Cluster, *crds: str) -> None:
    cluster.kubectl("apply", "--server-side", *(a for c in crds for a in ("-f", str(ADDONS[c]))))
    cluster.kubectl("wait", "--for", "condition=Established", *(f"crd/{c}" for c in crds))


# The CRD, the condition that reports it, its reason while missing, and the child it removes.
CASES = {
    "keda": ("scaledobjects.keda.sh", "AutoscalingReady", "KEDANotInstalled", "scaledobject"),
    "servicemonitor": (
        "servicemonitors.monitoring.coreos.com",
        "MonitoringReady",
        "PrometheusOperatorNotInstalled",
        "servicemonitor",
    ),
}


@pytest.mark.parametrize("case", CASES)
def test_addon_crd_removed_while_running_then_reinstalled(
    cluster: Cluster,
    namespace: str,
    namespaced_operator: OperatorProcess,
    removed_crds: list[str],
    case: str,
) -> None:
    crd, condition_type, reason, kind = CASES[case]
    apply_model(cluster, namespace, small_model("addon"))
    revision = wait_ready(cluster, namespace, "addon")["status"]["revision"]
    deployment = cluster.get("deployment", f"addon-{revision}", namespace)
    assert cluster.get(kind, "addon", namespace)

    removed_crds.append(crd)
    cluster.kubectl("delete", "crd", crd, "--wait=true", "--timeout=60s")

    def reported() -> dict[str, str] | None:
        c = condition(tm(cluster, namespace, "addon"), condition_type)
        return c if c is not None and c["status"] == "False" else None

    c = wait_for(f"{condition_type}=False", reported, 30)
    assert c["reason"] == reason, c
    assert crd in c["message"], c  # the user learns which CRD to install
    # The model still serves, from the same revision and Deployment.
    obj = wait_ready(cluster, namespace, "addon", timeout=10)
    assert obj["status"]["revision"] == revision
    now = cluster.get("deployment", f"addon-{revision}", namespace)
    assert now["metadata"]["uid"] == deployment["metadata"]["uid"]
    assert now["status"]["readyReplicas"] >= 1

    # Settled: later resyncs (2 s) write nothing and fail nothing; the operator is alive.
    time.sleep(3)
    before = namespaced_operator.stats()
    time.sleep(5)
    after = namespaced_operator.stats()
    assert after["reconciles"] >= before["reconciles"] + 2, after  # it kept looking
    assert after["reconciles"] <= before["reconciles"] + 8, after  # at its resync pace
    assert after["writes"] == before["writes"], after
    assert after["failures"] == 0, namespaced_operator.log()
    assert "crashed" not in namespaced_operator.log()

    _install(cluster, crd)
    removed_crds.remove(crd)

    def back() -> bool:
        c = condition(tm(cluster, namespace, "addon"), condition_type)
        assert c is not None and c["status"] == "True", c
        return bool(cluster.get(kind, "addon", namespace))

    wait_for(f"the {kind} re-created and {condition_type}=True", back, 30)
    assert wait_ready(cluster, namespace, "addon", timeout=10)["status"]["revision"] == revision
