"""Reconciler paths a user meets after day one, against the local control plane.

The autoscaler's replica count is left alone (and carried into a new revision), children
deleted by hand come back, dropping spec.route drops the HTTPRoute, and a new revision whose
Secret is missing never takes the serving one down.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.kube import Cluster, wait_for
from e2e.models import (
    apply_model,
    condition,
    resyncs,
    running_operator,
    small_model,
    tm,
    wait_ready,
)
from e2e.tmo_operator import OperatorProcess


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    with running_operator(
        cluster,
        tmp_path_factory.mktemp("operator-paths"),
        "--resync-seconds",
        "3",
        "--retry-initial-seconds",
        "1",
        "--retry-max-seconds",
        "2",
        "--addon-check-seconds",
        "2",
    ) as op:
        yield op


def _deployments(cluster: Cluster, ns: str, name: str) -> dict[str, dict[str, Any]]:
    found = cluster.get_all("deployment", ns, "-l", f"tmo.dev/model={name}")
    return {d["metadata"]["name"]: d for d in found}


def _deployment(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    """A Deployment with its managedFields (kubectl leaves them out unless asked)."""
    out = cluster.kubectl(
        "get", "deployment", name, "-n", ns, "-o", "json", "--show-managed-fields"
    ).stdout
    return dict(json.loads(out))


def _replica_managers(deployment: dict[str, Any]) -> set[str]:
    """The field managers that own spec.replicas."""
    return {
        m["manager"]
        for m in deployment["metadata"]["managedFields"]
        if "f:replicas" in ((m.get("fieldsV1") or {}).get("f:spec") or {})
    }


# --- tests -------------------------------------------------------------------------------------


def test_autoscaled_replicas_are_kept_and_carried_into_a_new_revision(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    model = small_model("scaled")
    apply_model(cluster, namespace, model)
    first = wait_ready(cluster, namespace, "scaled")["status"]["revision"]
    deployment = f"scaled-{first}"

    # What KEDA's HPA does under load: the scale subresource, as another field manager.
    cluster.kubectl("scale", "deployment", deployment, "--replicas=3", "-n", namespace)
    # A resync and a change of the model that is no new spec both pass over it.
    cluster.kubectl("annotate", "tm", "scaled", "team/touched=1", "-n", namespace)
    resyncs(operator, 3)

    def counted() -> bool:
        d = _deployment(cluster, namespace, deployment)
        st = tm(cluster, namespace, "scaled")["status"]
        assert d["spec"]["replicas"] == 3, (d["spec"]["replicas"], _replica_managers(d))
        assert st["readyReplicas"] == 3, st
        return True

    wait_for("the model to count the autoscaler's 3 replicas", counted, 30)
    resyncs(operator, 2)
    d = _deployment(cluster, namespace, deployment)
    assert d["spec"]["replicas"] == 3
    # The scaler owns the field, and TMO did not take it back.
    assert _replica_managers(d) == {"kubectl"}, d["metadata"]["managedFields"]
    assert condition(tm(cluster, namespace, "scaled"), "Ready")["status"] == "True"  # type: ignore[index]

    # A new revision starts as large as the serving one is now, not at minReplicas.
    model["spec"]["runtime"] = {"batchSize": 16}
    apply_model(cluster, namespace, model)
    second = wait_for(
        "a new revision",
        lambda: (r := tm(cluster, namespace, "scaled")["status"]["revision"]) != first and r,
        30,
    )
    obj = wait_ready(cluster, namespace, "scaled")
    wait_for(
        "the old revision retired",
        lambda: list(_deployments(cluster, namespace, "scaled")) == [f"scaled-{second}"],
        30,
    )
    new = cluster.get("deployment", f"scaled-{second}", namespace)
    assert new["spec"]["replicas"] == 3
    assert new["status"].get("readyReplicas") == 3
    assert obj["status"]["revision"] == second


def test_deleted_children_are_recreated(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    apply_model(cluster, namespace, small_model("fragile"))
    wait_ready(cluster, namespace, "fragile")
    before = {
        kind: cluster.get(kind, "fragile", namespace)["metadata"]["uid"]
        for kind in ("service", "networkpolicy", "scaledobject")
    }
    for kind in before:
        cluster.kubectl("delete", kind, "fragile", "-n", namespace)

    def recreated() -> bool:
        for kind, uid in before.items():
            assert cluster.get(kind, "fragile", namespace)["metadata"]["uid"] != uid, kind
        return True

    # Only Deployments are watched: the others come back at the next resync (3 s).
    wait_for("the Service, NetworkPolicy and ScaledObject re-created", recreated, 20)
    svc = cluster.get("service", "fragile", namespace)
    assert svc["metadata"]["ownerReferences"][0]["name"] == "fragile"
    assert svc["spec"]["selector"]
    assert condition(tm(cluster, namespace, "fragile"), "Ready")["status"] == "True"  # type: ignore[index]


def test_removing_the_route_deletes_the_httproute(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    model = small_model("routed", route={"parentRefs": [{"name": "gw"}]})
    apply_model(cluster, namespace, model)
    revision = wait_ready(cluster, namespace, "routed")["status"]["revision"]
    assert cluster.get("httproute", "routed", namespace)

    del model["spec"]["route"]
    apply_model(cluster, namespace, model)
    wait_for(
        "the HTTPRoute deleted",
        lambda: not cluster.get_all("httproute", namespace),
        20,
    )
    obj = wait_ready(cluster, namespace, "routed")
    # The route is no part of the pods: the same revision keeps serving through its Service.
    assert obj["status"]["revision"] == revision
    assert list(_deployments(cluster, namespace, "routed")) == [f"routed-{revision}"]
    assert cluster.get("service", "routed", namespace)


def test_new_revision_with_a_missing_secret_keeps_the_old_one_serving(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    cluster.kubectl(
        "create", "secret", "generic", "token-v1", "-n", namespace, "--from-literal=token=t0k3n"
    )
    model = small_model("guarded", auth={"tokenSecretRef": {"name": "token-v1"}})
    apply_model(cluster, namespace, model)
    first = wait_ready(cluster, namespace, "guarded")["status"]["revision"]
    serving = f"guarded-{first}"
    uid = cluster.get("deployment", serving, namespace)["metadata"]["uid"]

    # The token moves to a Secret nobody has created yet: a new revision that cannot start.
    model["spec"]["auth"] = {"tokenSecretRef": {"name": "token-v2"}}
    apply_model(cluster, namespace, model)

    def stalled() -> dict[str, Any] | bool:
        obj = tm(cluster, namespace, "guarded")
        c = condition(obj, "Stalled")
        fresh = obj["status"].get("observedGeneration") == obj["metadata"]["generation"]
        return obj if fresh and c and c["status"] == "True" else False

    obj = dict(wait_for("Stalled", stalled, 30))
    c = condition(obj, "Stalled")
    assert c is not None and c["reason"] == "SecretNotFound", c
    assert "token-v2" in c["message"] and "auth.tokenSecretRef" in c["message"], c
    assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
    # Retried, not hot-looped, and nothing is torn down meanwhile.
    resyncs(operator, 3)
    deployments = _deployments(cluster, namespace, "guarded")
    assert list(deployments) == [serving], list(deployments)
    old = deployments[serving]
    assert old["metadata"]["uid"] == uid
    available = next(c for c in old["status"]["conditions"] if c["type"] == "Available")
    assert available["status"] == "True"
    assert old["status"]["readyReplicas"] >= 1
    obj = tm(cluster, namespace, "guarded")
    assert obj["status"]["readyReplicas"] >= 1  # the model says its old pods still serve
    assert cluster.get("service", "guarded", namespace)
    warnings = [
        e
        for e in cluster.get_all("events", namespace)
        if e["reason"] == "SecretNotFound" and e["involvedObject"]["name"] == "guarded"
    ]
    assert warnings and warnings[0]["type"] == "Warning"
    assert "crashed" not in operator.log()

    # Once the Secret exists the new revision rolls out and replaces the old one.
    cluster.kubectl(
        "create", "secret", "generic", "token-v2", "-n", namespace, "--from-literal=token=n3w"
    )
    obj = wait_ready(cluster, namespace, "guarded")
    second = obj["status"]["revision"]
    assert second != first
    wait_for(
        "the old revision retired",
        lambda: list(_deployments(cluster, namespace, "guarded")) == [f"guarded-{second}"],
        30,
    )
