"""A TransformerModel the current CRD would refuse but that is stored anyway: admitted by an
older CRD, before an upgrade added a validation rule (the API server never re-validates stored
objects). The operator says what is wrong (Stalled, reason InvalidSpec, the field named), keeps
the serving revision as it is, does not hot-loop, and picks the fixed spec up at once.

This replaces the TransformerModel CRD for a moment, so it runs only against the local control
plane.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterator

import pytest

from e2e.kube import Cluster, kstatus, wait_for
from e2e.models import apply_model, condition, small_model, wait_ready, wait_stalled
from e2e.tmo_operator import OperatorProcess, install_crds

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("E2E_KUBECONFIG")),
    reason="replaces the TransformerModel CRD: never on someone else's cluster",
)

CRD = "transformermodels.tmo.dev"
# The rule an upgrade added, as far as this test is concerned: minReplicas <= maxReplicas.
SCALING_RULE = (
    "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/scaling"
    "/x-kubernetes-validations"
)
CHILDREN = ("configmap", "service", "networkpolicy", "scaledobject", "servicemonitor")


@pytest.fixture
def under_older_crd(cluster: Cluster) -> Iterator[Callable[[str], None]]:
    """Apply a manifest under the TransformerModel CRD as an older release shipped it (without
    the scaling rule); the current CRD is installed again afterwards, whatever happened."""

    def apply(manifest: str) -> bool:
        # Patched on each try: a concurrent `install_crds` may have put the rule back.
        cluster.kubectl(
            "patch", "crd", CRD, "--type=json",
            "-p", json.dumps([{"op": "remove", "path": SCALING_RULE}]),
            check=False,
        )  # fmt: skip
        return cluster.apply(manifest, check=False).returncode == 0

    rules = cluster.get("crd", CRD)["spec"]["versions"][0]["schema"]["openAPIV3Schema"][
        "properties"
    ]["spec"]["properties"]["scaling"]["x-kubernetes-validations"]
    assert any("maxReplicas" in r["rule"] for r in rules), rules
    try:
        yield lambda manifest: wait_for(
            "the older CRD to admit it (the schema change takes a moment)",
            lambda: apply(manifest),
            20,
        )
    finally:
        install_crds(cluster)


def _versions(cluster: Cluster, ns: str) -> dict[str, str]:
    return {
        f"{kind}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
        for kind in CHILDREN
        for o in cluster.get_all(kind, ns, "-l", "tmo.dev/model=legacy")
    }


def test_stored_spec_the_current_crd_refuses_is_stalled_invalid_spec(
    cluster: Cluster,
    namespace: str,
    namespaced_operator: OperatorProcess,
    under_older_crd: Callable[[str], None],
) -> None:
    op = namespaced_operator
    model = small_model("legacy", scaling={"minReplicas": 1, "maxReplicas": 3})
    apply_model(cluster, namespace, model)
    revision = wait_ready(cluster, namespace, "legacy")["status"]["revision"]
    deployment = cluster.get("deployment", f"legacy-{revision}", namespace)
    children = _versions(cluster, namespace)

    # Under the older CRD the API server takes minReplicas > maxReplicas...
    model["spec"]["scaling"] = {"minReplicas": 3, "maxReplicas": 2}
    under_older_crd(json.dumps(model | {"metadata": {"name": "legacy", "namespace": namespace}}))
    # ...which the current CRD refuses: a new model with that spec is turned away at admission,
    # while the stored one stays as it is (the API server never re-validates it).
    install_crds(cluster)
    fresh = json.dumps(model | {"metadata": {"name": "fresh", "namespace": namespace}})
    wait_for(
        "the current CRD to refuse the spec",
        lambda: (
            "minReplicas must be less than or equal to maxReplicas"
            in cluster.apply(fresh, "--dry-run=server", check=False).stderr
        ),
        20,
    )

    obj = wait_stalled(cluster, namespace, "legacy", "InvalidSpec")
    stalled = condition(obj, "Stalled")
    ready = condition(obj, "Ready")
    assert stalled is not None and ready is not None
    assert ready["status"] == "False" and ready["reason"] == "InvalidSpec", ready
    assert "spec.scaling" in stalled["message"], stalled
    assert "minReplicas must be less than or equal to maxReplicas" in stalled["message"], stalled
    assert kstatus(cluster, obj) == "Failed"
    # The revision that runs still counts in status (`kubectl get tm` shows it serving).
    assert obj["status"]["readyReplicas"] >= 1, obj["status"]

    def warnings() -> list[str]:
        return [
            e["message"]
            for e in cluster.get_all("events", namespace)
            if e["reason"] == "InvalidSpec" and e["involvedObject"]["name"] == "legacy"
        ]

    said = warnings()
    assert said and all("spec.scaling" in m for m in said), said

    # Nothing was applied from the invalid spec: the serving revision runs on untouched.
    time.sleep(1)
    before = op.stats()
    time.sleep(6)  # three resyncs (2 s)
    after = op.stats()
    assert after["reconciles"] >= before["reconciles"] + 2, after  # it kept looking
    assert after["reconciles"] <= before["reconciles"] + 6, after  # no retry loop on top
    assert after["writes"] == before["writes"], after
    assert after["failures"] == 0 and "crashed" not in op.log(), op.log()
    assert warnings() == said  # one Warning per transition, not one per pass
    deployments = cluster.get_all("deployment", namespace, "-l", "tmo.dev/model=legacy")
    assert [d["metadata"]["name"] for d in deployments] == [f"legacy-{revision}"]
    now = deployments[0]
    assert now["metadata"]["uid"] == deployment["metadata"]["uid"]
    assert now["spec"] == deployment["spec"]
    assert now["status"]["readyReplicas"] >= 1
    assert _versions(cluster, namespace) == children
    assert cluster.get("scaledobject", "legacy", namespace)["spec"]["maxReplicaCount"] == 3

    # Fixed under the current CRD: reconciled at once.
    model["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 2}
    apply_model(cluster, namespace, model)
    obj = wait_ready(cluster, namespace, "legacy", timeout=20)
    assert condition(obj, "Stalled") is None
    assert cluster.get("scaledobject", "legacy", namespace)["spec"]["maxReplicaCount"] == 2
