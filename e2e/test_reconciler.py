"""The TransformerModel reconciler against the local control plane, `tmo operator` as a process.

kwok plays the kubelet: pods of the rendered Deployments turn Ready without running containers, so
these tests cover the control plane side (children, status, rollouts of revisions, GC, recovery),
not TorchServe itself.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.argocd import health
from e2e.kube import Cluster, kstatus, wait_for
from e2e.models import apply_model, condition, running_operator, small_model, tm, wait_ready
from e2e.tmo_operator import REPO, OperatorProcess

EXAMPLES = REPO / "examples"
GPU = "nvidia.com/gpu"
GPU_NODE = "kwok-node-2"  # e2e/cluster/up.sh: the one kwok node with GPUs
KINDS = (
    "configmap",
    "deployment",
    "service",
    "networkpolicy",
    "scaledobject",
    "servicemonitor",
    "prometheusrule",
)


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    with running_operator(
        cluster,
        tmp_path_factory.mktemp("operator"),
        "--resync-seconds",
        "4",
        "--retry-initial-seconds",
        "1",
        "--retry-max-seconds",
        "3",
        "--addon-check-seconds",
        "2",
        "--progress-deadline-seconds",
        "15",
    ) as op:
        yield op


def _models(path: Path) -> list[dict[str, Any]]:
    docs = yaml.safe_load_all(path.read_text())
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == "TransformerModel"]


def _gpus(model: dict[str, Any]) -> int:
    resources = model["spec"].get("resources") or {}
    return max(int((resources.get(k) or {}).get(GPU, 0)) for k in ("requests", "limits"))


def _claim(model: dict[str, Any]) -> str | None:
    uri = str(model["spec"]["model"]["uri"])
    return uri[len("pvc://") :].split("/")[0] if uri.startswith("pvc://") else None


@pytest.fixture
def volumes(cluster: Cluster) -> Iterator[list[str]]:
    """PersistentVolumes a test creates: cluster-scoped, so deleted with the test, not its
    namespace."""
    created: list[str] = []
    yield created
    for pv in created:
        cluster.kubectl("delete", "pv", pv, "--wait=false", check=False)


def _bound_claim(cluster: Cluster, ns: str, claim: str, volumes: list[str]) -> None:
    """The claim a pvc:// model reads, bound to a volume of its own, as an admin provisions it."""
    pv = f"{ns}-{claim}"
    volumes.append(pv)
    spec = {"accessModes": ["ReadOnlyMany"], "storageClassName": ""}
    cluster.apply(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "List",
                "items": [
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolume",
                        "metadata": {"name": pv},
                        "spec": spec
                        | {
                            "capacity": {"storage": "20Gi"},
                            "hostPath": {"path": f"/srv/{claim}"},
                            "claimRef": {"namespace": ns, "name": claim},
                        },
                    },
                    {
                        "apiVersion": "v1",
                        "kind": "PersistentVolumeClaim",
                        "metadata": {"name": claim, "namespace": ns},
                        "spec": spec
                        | {"volumeName": pv, "resources": {"requests": {"storage": "20Gi"}}},
                    },
                ],
            }
        )
    )


def _secrets(model: dict[str, Any]) -> list[str]:
    spec = model["spec"]
    refs = [
        (spec.get("model") or {}).get("credentialsSecretRef"),
        (spec.get("auth") or {}).get("tokenSecretRef"),
    ]
    return [r["name"] for r in refs if r]


def _create_secret(cluster: Cluster, ns: str, name: str) -> None:
    cluster.kubectl("create", "secret", "generic", name, "-n", ns, "--from-literal=token=t0k3n")


def _wait_ready(cluster: Cluster, ns: str, name: str, timeout: float = 180) -> dict[str, Any]:
    return wait_ready(cluster, ns, name, timeout)


# Flux (kstatus) and Argo CD (health.lua) must read each state alike.
ARGO_FOR_FLUX = {"Current": "Healthy", "InProgress": "Progressing", "Failed": "Degraded"}


def _kstatus(cluster: Cluster, obj: dict[str, Any]) -> str:
    """Flux's verdict on `obj`, checked against Argo CD's on the same object."""
    flux = kstatus(cluster, obj)
    assert health(obj)[0] == ARGO_FOR_FLUX[flux], (flux, health(obj))
    return flux


def _small_model(name: str, **spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "resources": {
            "requests": {"cpu": "100m", "memory": "256Mi"},
            "limits": {"memory": "256Mi"},
        },
        "scaling": {"minReplicas": 1, "maxReplicas": 3},
    }
    return small_model(name, **(base | spec))


# --- tests -------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_example_becomes_ready_with_valid_children(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    volumes: list[str],
    example: Path,
) -> None:
    models = _models(example)
    for m in models:
        for secret in _secrets(m):
            _create_secret(cluster, namespace, secret)
        if claim := _claim(m):
            _bound_claim(cluster, namespace, claim, volumes)
        apply_model(cluster, namespace, m)
    for m in models:
        name = m["metadata"]["name"]
        obj = _wait_ready(cluster, namespace, name)
        st = obj["status"]
        revision = st["revision"]
        assert isinstance(st["observedGeneration"], int)
        assert st["url"] == f"http://{name}.{namespace}.svc:8080"
        # Every child exists (the API server validated each against its real schema on apply)
        # and is owned by the model.
        for kind in KINDS:
            children = cluster.get_all(kind, namespace, "-l", f"tmo.dev/model={name}")
            assert children, f"no {kind} for {name}"
            for child in children:
                owner = child["metadata"]["ownerReferences"][0]
                assert (owner["kind"], owner["name"], owner["controller"]) == (
                    "TransformerModel",
                    name,
                    True,
                )
        if m["spec"].get("route"):
            assert cluster.get("httproute", name, namespace)
        d = cluster.get("deployment", f"{name}-{revision}", namespace)
        assert st["readyReplicas"] == d["status"].get("readyReplicas", 0) >= 1
        scaling = m["spec"].get("scaling") or {}
        # KEDA's CRDs are installed: the revision starts at minReplicas (>= 1), then KEDA scales.
        assert d["spec"]["replicas"] == max(1, scaling.get("minReplicas", 1))
        pods = cluster.get_all("pods", namespace, "-l", f"tmo.dev/revision={revision}")
        for pod in pods:
            assert pod["spec"]["nodeName"].startswith("kwok-node-")
        if gpus := _gpus(m):
            # The model server asks the scheduler for the GPUs (request = limit), and its pods
            # run on the one node that has them.
            server = next(
                c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "torchserve"
            )
            assert server["resources"]["requests"][GPU] == str(gpus), server["resources"]
            assert server["resources"]["limits"][GPU] == str(gpus), server["resources"]
            assert pods and {p["spec"]["nodeName"] for p in pods} == {GPU_NODE}, pods
        conditions = {c["type"]: c["status"] for c in st["conditions"]}
        assert conditions == {
            "Ready": "True",
            "RuntimeReady": "True",
            "AutoscalingReady": "True",
            "MonitoringReady": "True",
        }
        # Printer columns: `kubectl get tm` shows Ready, revision, replicas and URL.
        row = cluster.kubectl("get", "tm", name, "-n", namespace, "--no-headers").stdout.split()
        assert row[1:5] == ["True", revision, str(st["replicas"]), st["url"]], row
        assert _kstatus(cluster, obj) == "Current"


def test_uri_change_rolls_a_new_revision_max_replicas_does_not(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    model = _small_model("roll")
    apply_model(cluster, namespace, model)
    first = _wait_ready(cluster, namespace, "roll")["status"]["revision"]

    model["spec"]["scaling"]["maxReplicas"] = 7
    apply_model(cluster, namespace, model)
    obj = _wait_ready(cluster, namespace, "roll")
    assert obj["status"]["revision"] == first
    assert cluster.get("scaledobject", "roll", namespace)["spec"]["maxReplicaCount"] == 7
    assert [d["metadata"]["name"] for d in cluster.get_all("deployment", namespace)] == [
        f"roll-{first}"
    ]

    model["spec"]["model"]["uri"] = "s3://models/tiny/v2/"
    apply_model(cluster, namespace, model)
    second = wait_for(
        "a new revision",
        lambda: (r := tm(cluster, namespace, "roll")["status"]["revision"]) != first and r,
        30,
    )
    _wait_ready(cluster, namespace, "roll")
    deployments = wait_for(
        "the old revision's Deployment to go",
        lambda: (
            [d["metadata"]["name"] for d in cluster.get_all("deployment", namespace)]
            == [f"roll-{second}"]
        ),
        60,
    )
    assert deployments
    assert [
        c["metadata"]["name"]
        for c in cluster.get_all("configmap", namespace, "-l", "tmo.dev/model=roll")
    ] == [f"roll-{second}-config"]
    so = cluster.get("scaledobject", "roll", namespace)["spec"]
    assert so["scaleTargetRef"]["name"] == f"roll-{second}"
    reasons = {
        e["reason"]
        for e in cluster.get_all("events", namespace)
        if e["involvedObject"]["name"] == "roll"
    }
    assert {"NewRevision", "Ready", "RevisionRetired"} <= reasons


def _gateway_image(cluster: Cluster, ns: str, deployment: str) -> str:
    pod = cluster.get("deployment", deployment, ns)["spec"]["template"]["spec"]
    return str(next(c["image"] for c in pod["containers"] if c["name"] == "gateway"))


def test_hand_edits_of_children_are_reverted(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    apply_model(cluster, namespace, _small_model("edited"))
    revision = _wait_ready(cluster, namespace, "edited")["status"]["revision"]
    deployment, config = f"edited-{revision}", f"edited-{revision}-config"
    image = _gateway_image(cluster, namespace, deployment)
    properties = cluster.get("configmap", config, namespace)["data"]["config.properties"]

    # A person's own annotation is not TMO's to judge; a swapped image and a management API
    # opened to the network are what the TransformerModel does not say: those go.
    cluster.kubectl("annotate", "deployment", deployment, "team/owner=ml-platform", "-n", namespace)
    cluster.kubectl(
        "set", "image", f"deployment/{deployment}", "gateway=evil:latest", "-n", namespace
    )
    opened = properties.replace("127.0.0.1", "0.0.0.0")
    cluster.kubectl(
        "patch", "configmap", config, "-n", namespace, "--type=merge",
        "-p", json.dumps({"data": {"config.properties": opened}}),
    )  # fmt: skip
    wait_for(
        "the gateway image restored",
        lambda: _gateway_image(cluster, namespace, deployment) == image,
        30,
    )
    wait_for(
        "config.properties restored (at the next resync: ConfigMaps are not watched)",
        lambda: (
            cluster.get("configmap", config, namespace)["data"]["config.properties"] == properties
        ),
        30,
    )
    annotations = cluster.get("deployment", deployment, namespace)["metadata"]["annotations"]
    assert annotations["team/owner"] == "ml-platform"
    reverted = {
        e["message"].split(" was ")[0]
        for e in cluster.get_all("events", namespace)
        if e["reason"] == "ChildReverted"
    }
    assert reverted == {f"Deployment {deployment}", f"ConfigMap {config}"}, reverted
    # Restored once, then quiet: no fight with the kept annotation on later resyncs (once the
    # restored rollout has settled and the status says so).
    _wait_ready(cluster, namespace, "edited")
    time.sleep(2)
    writes = operator.stats()["writes_by_namespace"].get(namespace, 0)
    time.sleep(9)
    assert operator.stats()["writes_by_namespace"].get(namespace, 0) == writes, operator.log()


def test_delete_garbage_collects_every_child(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    model = _small_model("gone", route={"parentRefs": [{"name": "gw"}]})
    apply_model(cluster, namespace, model)
    _wait_ready(cluster, namespace, "gone")
    assert cluster.get("httproute", "gone", namespace)
    cluster.kubectl("delete", "tm", "gone", "-n", namespace, "--wait=true")

    def all_gone() -> bool:
        left = [
            k
            for k in (*KINDS, "httproute", "pods")
            if cluster.get_all(k, namespace, "-l", "tmo.dev/model=gone")
        ]
        assert not left, left
        return True

    wait_for("every child to be garbage-collected", all_gone, 90)


def test_missing_secret_stalls_then_recovers(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    model = _small_model("secretive")
    model["spec"]["model"]["credentialsSecretRef"] = {"name": "late-creds"}
    apply_model(cluster, namespace, model)

    def stalled() -> dict[str, Any] | bool:
        obj = tm(cluster, namespace, "secretive")
        c = condition(obj, "Stalled")
        return obj if c and c["status"] == "True" else False

    obj = dict(wait_for("Stalled", stalled, 30))
    c = condition(obj, "Stalled")
    assert c is not None and c["reason"] == "SecretNotFound" and "late-creds" in c["message"]
    assert condition(obj, "Ready")["status"] == "False"  # type: ignore[index]
    assert condition(obj, "Reconciling") is None
    assert _kstatus(cluster, obj) == "Failed"
    # Nothing that could not start was created.
    assert not cluster.get_all("deployment", namespace, "-l", "tmo.dev/model=secretive")
    events = [e for e in cluster.get_all("events", namespace) if e["reason"] == "SecretNotFound"]
    assert events and events[0]["type"] == "Warning" and "late-creds" in events[0]["message"]

    _create_secret(cluster, namespace, "late-creds")
    obj = _wait_ready(cluster, namespace, "secretive", timeout=60)
    assert condition(obj, "Stalled") is None
    assert _kstatus(cluster, obj) == "Current"


def test_a_rollout_without_prometheus_says_which_flag_to_set(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # This operator runs without --prometheus-url: its Rollouts cannot judge anything.
    apply_model(cluster, namespace, _small_model("unjudged"))
    _wait_ready(cluster, namespace, "unjudged", timeout=60)
    rollout = {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "unjudged", "namespace": namespace},
        "spec": {
            "targetRef": {"name": "unjudged"},
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
            "traffic": {"router": "replicas"},
        },
    }
    cluster.apply(json.dumps(rollout))

    def stalled() -> dict[str, Any] | bool:
        obj = cluster.get("rollouts.tmo.dev", "unjudged", namespace)
        c = condition(obj, "Stalled")
        return obj if c and c["reason"] == "PrometheusNotConfigured" else False

    obj = dict(wait_for("Rollout Stalled PrometheusNotConfigured", stalled, 30))
    message = condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert "--prometheus-url" in message and "TMO_PROMETHEUS_URL" in message
    assert _kstatus(cluster, obj) == "Failed"
    # The model keeps serving its revision; the operator is alive.
    assert condition(tm(cluster, namespace, "unjudged"), "Ready")["status"] == "True"  # type: ignore[index]
    operator.stats()


def test_revision_never_ready_stalls_after_the_deadline(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    # More GPUs than any node has: pods stay Pending, the Deployment exceeds its deadline (15 s).
    model = _small_model("greedy", resources={"limits": {"nvidia.com/gpu": "64"}})
    apply_model(cluster, namespace, model)

    def reconciling() -> dict[str, Any] | bool:
        obj = tm(cluster, namespace, "greedy")
        c = condition(obj, "Reconciling")
        return obj if c and c["status"] == "True" else False

    obj = dict(wait_for("Reconciling", reconciling, 30))
    assert _kstatus(cluster, obj) == "InProgress"

    def stalled() -> dict[str, Any] | bool:
        obj = tm(cluster, namespace, "greedy")
        c = condition(obj, "Stalled")
        return obj if c and c["reason"] == "ProgressDeadlineExceeded" else False

    obj = dict(wait_for("Stalled after the progress deadline", stalled, 90))
    assert condition(obj, "Reconciling") is None
    assert _kstatus(cluster, obj) == "Failed"


def _snapshot(cluster: Cluster, ns: str) -> dict[str, str]:
    versions = {}
    for kind in ("transformermodel", *KINDS):
        for o in cluster.get_all(kind, ns):
            versions[f"{kind}/{o['metadata']['name']}"] = o["metadata"]["resourceVersion"]
    return versions


def test_restart_converges_without_duplicates_or_idle_writes(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    for i in range(3):
        apply_model(cluster, namespace, _small_model(f"steady-{i}"))
    # Restart while they are still being reconciled.
    operator.restart()
    for i in range(3):
        _wait_ready(cluster, namespace, f"steady-{i}")
    before = _snapshot(cluster, namespace)
    # The operator is cluster-wide: count only this namespace's writes.
    writes = operator.stats()["writes_by_namespace"].get(namespace, 0)
    reconciles = operator.stats()["reconciles"]
    # Two full resyncs (4 s each) with nothing changed: no write at all.
    time.sleep(9)
    stats = operator.stats()
    assert stats["reconciles"] >= reconciles + 6, stats  # it did look, twice
    assert stats["writes_by_namespace"].get(namespace, 0) == writes, stats
    assert _snapshot(cluster, namespace) == before
    # And a restart on a converged cluster writes nothing either (reads only).
    operator.restart()
    time.sleep(6)
    stats = operator.stats()
    assert stats["models"] >= 3 and stats["writes_by_namespace"].get(namespace, 0) == 0, stats
    assert _snapshot(cluster, namespace) == before
    for i in range(3):
        deployments = cluster.get_all("deployment", namespace, "-l", f"tmo.dev/model=steady-{i}")
        assert len(deployments) == 1
