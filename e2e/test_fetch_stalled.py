"""A model whose fetch fails is Stalled with the fetcher's own line, against the local control
plane with the real operator (running with the chart's RBAC).

kwok never runs containers, so the tests write what kubelet would: a pod status whose init
container `fetch` is in CrashLoopBackOff with the fetcher's termination message. kwok's stages
only act on Pending pods that are not Ready (pod-ready) or on pods being deleted, so a status
that keeps phase Running (a bound pod) stays as written; a pod no node can take (Pending,
unscheduled) is not kwok's at all.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.kube import Cluster, kstatus, wait_for
from e2e.models import apply_model, running_operator
from e2e.rollouts import apply, condition, events, model_manifest, rollout_manifest, wait_phase
from e2e.tmo_operator import OperatorProcess

T = "2026-01-01T00:00:00Z"


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    # Fast retries, and no periodic resync within a test: a model that is stuck costs no
    # request at all unless something changes, so any request shows a loop. A Prometheus
    # address, so Rollouts act (their analysis is never due in these tests).
    with running_operator(
        cluster,
        tmp_path_factory.mktemp("operator-fetch"),
        "--retry-initial-seconds",
        "1",
        "--retry-max-seconds",
        "2",
        "--prometheus-url",
        "http://127.0.0.1:9",
    ) as op:
        yield op


def _model(name: str, uri: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "TransformerModel",
        "metadata": {"name": name},
        "spec": {
            "task": "text-classification",
            "model": {"uri": uri, "format": "huggingface"},
            "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
            "scaling": {"minReplicas": 1, "maxReplicas": 3},
            **spec,
        },
    }


def _wait_condition(
    cluster: Cluster, ns: str, name: str, type_: str, status: str, reason: str | None = None
) -> dict[str, Any]:
    def seen() -> dict[str, Any] | bool:
        obj = cluster.get("transformermodel", name, ns)
        c = condition(obj, type_)
        fresh = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        ok = c is not None and c["status"] == status and reason in (None, c["reason"])
        return obj if fresh and ok else False

    return dict(wait_for(f"{ns}/{name} {type_}={status} {reason or ''}", seen, 60))


def _pods(cluster: Cluster, ns: str, name: str, revision: str) -> list[dict[str, Any]]:
    selector = f"tmo.dev/model={name},tmo.dev/revision={revision}"
    return [
        p
        for p in cluster.get_all("pod", ns, "-l", selector)
        if not p["metadata"].get("deletionTimestamp")
    ]


def _one_pod(cluster: Cluster, ns: str, name: str, revision: str) -> dict[str, Any]:
    pods = wait_for(f"a pod of {name} {revision}", lambda: _pods(cluster, ns, name, revision), 60)
    return dict(pods[0])


def _patch_status(cluster: Cluster, ns: str, pod: str, status: dict[str, Any]) -> None:
    # A merge patch replaces the lists whole, as kubelet's own status does.
    cluster.kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": status}),
    )


def _images(pod: dict[str, Any]) -> dict[str, str]:
    spec = pod["spec"]
    return {c["name"]: c["image"] for c in [*spec["initContainers"], *spec["containers"]]}


def _fetch_failing(pod: dict[str, Any], line: str, phase: str) -> dict[str, Any]:
    """What kubelet reports for `Init:CrashLoopBackOff`: fetch exited 1 with `line` as its
    termination message and waits to be restarted; the other containers never started."""
    images = _images(pod)
    return {
        "phase": phase,
        "conditions": [
            {"type": "Initialized", "status": "False", "reason": "ContainersNotInitialized"},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady"},
            {"type": "ContainersReady", "status": "False", "reason": "ContainersNotReady"},
            {"type": "PodScheduled", "status": "True" if phase == "Running" else "False"},
        ],
        "initContainerStatuses": [
            {
                "name": "fetch",
                "image": images["fetch"],
                "imageID": "",
                "ready": False,
                "restartCount": 3,
                "state": {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": "back-off 40s restarting failed container=fetch",
                    }
                },
                "lastState": {
                    "terminated": {
                        "exitCode": 1,
                        "reason": "Error",
                        "message": line + "\n",
                        "startedAt": T,
                        "finishedAt": T,
                    }
                },
            }
        ],
        "containerStatuses": [
            {
                "name": name,
                "image": images[name],
                "imageID": "",
                "ready": False,
                "restartCount": 0,
                "state": {"waiting": {"reason": "PodInitializing"}},
            }
            for name in ("torchserve", "gateway")
        ],
    }


def _healthy(pod: dict[str, Any]) -> dict[str, Any]:
    """The same pod once the fetch succeeded and both containers are ready."""
    images = _images(pod)
    return {
        "phase": "Running",
        "conditions": [
            {"type": t, "status": "True"}
            for t in ("Initialized", "Ready", "ContainersReady", "PodScheduled")
        ],
        "initContainerStatuses": [
            {
                "name": "fetch",
                "image": images["fetch"],
                "imageID": "",
                "ready": True,
                "restartCount": 4,
                "state": {"terminated": {"exitCode": 0, "reason": "Completed"}},
            }
        ],
        "containerStatuses": [
            {
                "name": name,
                "image": images[name],
                "imageID": "",
                "ready": True,
                "started": True,
                "restartCount": 0,
                "state": {"running": {"startedAt": T}},
            }
            for name in ("torchserve", "gateway")
        ],
    }


def _events(cluster: Cluster, ns: str, name: str, reason: str) -> list[dict[str, Any]]:
    return [
        e
        for e in cluster.get_all("events", ns)
        if e["reason"] == reason and e["involvedObject"]["name"] == name
    ]


def _activity(
    cluster: Cluster, operator: OperatorProcess, ns: str, name: str
) -> tuple[str, int, int]:
    """The model's resourceVersion, and the operator's writes and requests in `ns`."""
    stats = operator.stats()
    return (
        cluster.get("transformermodel", name, ns)["metadata"]["resourceVersion"],
        stats["writes_by_namespace"].get(ns, 0),
        stats["requests_by_namespace"].get(ns, 0),
    )


def _settled(
    cluster: Cluster, operator: OperatorProcess, ns: str, name: str
) -> tuple[str, int, int]:
    """`_activity` once it stopped changing: the pod going unready still moves the
    Deployment's counts (and so the model's status), and the stats file lags by 0.5 s."""
    last: list[tuple[str, int, int]] = [_activity(cluster, operator, ns, name)]

    def still() -> tuple[str, int, int] | None:
        time.sleep(2)
        now = _activity(cluster, operator, ns, name)
        same = now == last[0]
        last[0] = now
        return now if same else None

    settled: tuple[str, int, int] = wait_for("the operator to settle", still, 30)
    return settled


def test_failed_fetch_stalls_the_model_once_and_clears_when_the_pod_recovers(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    uri = "s3://models/tiny/v1/"
    apply_model(cluster, namespace, _model("fetchy", uri))
    revision = _wait_condition(cluster, namespace, "fetchy", "Ready", "True")["status"]["revision"]
    pod = _one_pod(cluster, namespace, "fetchy", revision)
    name = pod["metadata"]["name"]

    line = f"fetch failed: {uri}: PermissionError: Access Denied"
    _patch_status(cluster, namespace, name, _fetch_failing(pod, line, "Running"))
    assert cluster.kubectl("get", "pod", name, "-n", namespace, "--no-headers").stdout.split()[
        2
    ] == ("Init:CrashLoopBackOff")

    obj = _wait_condition(cluster, namespace, "fetchy", "Stalled", "True", "FetchFailed")
    stalled = condition(obj, "Stalled")
    assert stalled is not None
    assert stalled["message"] == f"revision {revision}, pod {name}: {line}"
    ready = condition(obj, "Ready")
    assert ready is not None and ready["status"] == "False" and ready["reason"] == "FetchFailed"
    assert condition(obj, "Reconciling") is None
    assert kstatus(cluster, obj) == "Failed"  # what Flux makes of it
    # `kubectl get tm`: the model is not Ready.
    row = cluster.kubectl("get", "tm", "fetchy", "-n", namespace, "--no-headers").stdout.split()
    assert row[:2] == ["fetchy", "False"], row
    events = wait_for(
        "the FetchFailed Event", lambda: _events(cluster, namespace, "fetchy", "FetchFailed"), 30
    )
    assert events[0]["type"] == "Warning" and uri in events[0]["message"]

    # No hot loop while it stays stuck: the pod "restarts" (kubelet rewrites its status with
    # the same failure), and nothing is read or written, let alone retried.
    settled = _settled(cluster, operator, namespace, "fetchy")
    restarted = _fetch_failing(pod, line, "Running")
    restarted["initContainerStatuses"][0]["restartCount"] = 4
    _patch_status(cluster, namespace, name, restarted)
    time.sleep(10)
    assert _activity(cluster, operator, namespace, "fetchy") == settled
    assert len(_events(cluster, namespace, "fetchy", "FetchFailed")) == 1

    # The fetch succeeds on a later try: Stalled goes, the model is Ready again.
    _patch_status(cluster, namespace, name, _healthy(pod))
    obj = _wait_condition(cluster, namespace, "fetchy", "Ready", "True")
    assert condition(obj, "Stalled") is None


def test_new_revision_that_cannot_fetch_keeps_the_old_one_serving(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    model = _model("guarded", "s3://models/tiny/v1/")
    apply_model(cluster, namespace, model)
    old = _wait_condition(cluster, namespace, "guarded", "Ready", "True")["status"]["revision"]

    # The new revision asks for more CPU than any kwok node has: its pod stays Pending and
    # unscheduled, which kwok leaves alone, so the status the test writes is the only one.
    uri = "s3://models/tiny/v2/"
    model["spec"]["model"]["uri"] = uri
    model["spec"]["resources"]["requests"]["cpu"] = "64"
    apply_model(cluster, namespace, model)
    new = wait_for(
        "the new revision",
        lambda: (
            r
            if (r := cluster.get("transformermodel", "guarded", namespace)["status"]["revision"])
            != old
            else None
        ),
        60,
    )
    pod = _one_pod(cluster, namespace, "guarded", new)
    line = f"fetch failed: {uri}: not found"
    _patch_status(cluster, namespace, pod["metadata"]["name"], _fetch_failing(pod, line, "Pending"))

    obj = _wait_condition(cluster, namespace, "guarded", "Stalled", "True", "FetchFailed")
    stalled = condition(obj, "Stalled")
    assert stalled is not None and f"revision {new}" in stalled["message"]
    assert line in stalled["message"]
    # The old revision was not touched and still serves.
    deployments = {
        d["metadata"]["labels"]["tmo.dev/revision"]: d
        for d in cluster.get_all("deployment", namespace, "-l", "tmo.dev/model=guarded")
    }
    assert set(deployments) == {old, new}
    assert deployments[old]["status"].get("readyReplicas", 0) >= 1
    assert obj["status"]["readyReplicas"] >= 1

    # The pod is deleted and its ReplicaSet makes a new one, not failing (yet): not Stalled.
    cluster.kubectl("delete", "pod", pod["metadata"]["name"], "-n", namespace, "--wait=false")
    obj = _wait_condition(cluster, namespace, "guarded", "Reconciling", "True", "RollingOut")
    assert condition(obj, "Stalled") is None

    # Fixed in Git: a revision that starts replaces the old one.
    model["spec"]["resources"]["requests"]["cpu"] = "100m"
    apply_model(cluster, namespace, model)
    obj = _wait_condition(cluster, namespace, "guarded", "Ready", "True")
    assert obj["status"]["revision"] not in (old, new)


def test_a_canary_that_cannot_fetch_is_rolled_back_and_the_stable_keeps_serving(
    cluster: Cluster, namespace: str, operator: OperatorProcess
) -> None:
    """Under a Rollout the canary is not waited for for ever: its pods' failure rolls it back
    (RolledBack, reason CanaryFailed, the fetcher's line), all traffic stays on stable."""
    model = model_manifest(namespace, "canaried", "s3://models/tiny/v1/", route=False)
    rollout = rollout_manifest(
        namespace,
        "canaried",
        [{"setWeight": 50}, {"pause": {}}],
        router="replicas",
        interval="10m",
    )
    apply(cluster, model, rollout)
    stable = wait_phase(cluster, namespace, "canaried", {"Idle"}, 60)["status"]["stableRevision"]

    uri = "s3://models/tiny/v2/"
    model["spec"]["model"]["uri"] = uri
    apply(cluster, model)
    live = wait_phase(cluster, namespace, "canaried", {"Progressing"}, 60)
    canary = live["status"]["canaryRevision"]
    assert canary and canary != stable
    pod = _one_pod(cluster, namespace, "canaried", canary)
    line = f"fetch failed: {uri}: not found"
    _patch_status(cluster, namespace, pod["metadata"]["name"], _fetch_failing(pod, line, "Running"))

    done = wait_phase(cluster, namespace, "canaried", {"RolledBack"}, 60)
    st = done["status"]
    assert st["stableRevision"] == stable and st.get("canaryWeight", 0) == 0
    stalled = condition(done, "Stalled")
    assert stalled is not None and stalled["reason"] == "CanaryFailed"
    assert line in stalled["message"] and f"{stable} still serves" in stalled["message"]
    wait_for(
        "the RolledBack Event", lambda: "RolledBack" in events(cluster, namespace, "canaried"), 30
    )
    # The stable revision's Deployment still runs its replicas.
    deployments = {
        d["metadata"]["labels"]["tmo.dev/revision"]: d
        for d in cluster.get_all("deployment", namespace, "-l", "tmo.dev/model=canaried")
    }
    assert deployments[stable]["spec"]["replicas"] >= 1
