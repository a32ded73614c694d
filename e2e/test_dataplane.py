"""The local data plane (e2e/dataplane.py) against the real operator: it serves each revision the
operator renders, Prometheus scrapes it with the ServiceMonitor's labels and loads the
PrometheusRule, the load follows the HTTPRoute, and a new revision replaces the old one.

The traffic-split rules are pure functions: checked first with plain objects.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from e2e.dataplane import LocalDataPlane, build_tiny_model, choose_revision, traffic_split
from e2e.kube import Cluster, wait_for
from e2e.tmo_operator import OperatorProcess, install_crds, operator_kubeconfig

MODEL = "triage"


# --- traffic split: plain data -------------------------------------------------------------------


def _deployment(revision: str, replicas: int | None, model: str = MODEL) -> dict[str, Any]:
    labels = {"tmo.dev/model": model, "tmo.dev/revision": revision}
    pod = {**labels, "app.kubernetes.io/component": "model-server"}
    spec: dict[str, Any] = {"template": {"metadata": {"labels": pod}}}
    if replicas is not None:
        spec["replicas"] = replicas
    return {"metadata": {"name": f"{model}-{revision}", "labels": labels}, "spec": spec}


def _service(name: str, **selector: str) -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"selector": selector}}


MAIN = _service(MODEL, **{"tmo.dev/model": MODEL, "app.kubernetes.io/component": "model-server"})


def _route(*backends: tuple[str, int | None]) -> dict[str, Any]:
    refs = [
        {"name": n, "port": 8080} | ({"weight": w} if w is not None else {}) for n, w in backends
    ]
    return {"metadata": {"name": MODEL}, "spec": {"rules": [{"backendRefs": refs}]}}


def test_split_without_route_follows_the_replica_ratio() -> None:
    deployments = [_deployment("a", 3), _deployment("b", 1), _deployment("c", 0)]
    deployments.append(_deployment("x", 5, model="other"))
    assert traffic_split(MODEL, deployments, {MODEL: MAIN}, None) == {"a": 0.75, "b": 0.25}
    # No Service (yet): all the model's revisions; an absent spec.replicas means 1.
    assert traffic_split(MODEL, [_deployment("a", None)], {}, None) == {"a": 1.0}


def test_split_with_route_follows_backend_weights_and_selectors() -> None:
    deployments = [_deployment("a", 2), _deployment("b", 2)]
    services = {
        MODEL: MAIN,
        "stable": _service("stable", **{"tmo.dev/revision": "a"}),
        "canary": _service("canary", **{"tmo.dev/revision": "b"}),
    }
    route = _route(("stable", 75), ("canary", 25))
    assert traffic_split(MODEL, deployments, services, route) == {"a": 0.75, "b": 0.25}
    assert traffic_split(MODEL, deployments, services, _route(("stable", 100), ("canary", 0))) == {
        "a": 1.0
    }
    # The model's main Service spreads its weight by replicas; the weight defaults to 1.
    assert traffic_split(MODEL, deployments, services, _route((MODEL, None))) == {
        "a": 0.5,
        "b": 0.5,
    }
    # A backend Service that does not exist, or selects nothing running, carries nothing.
    assert traffic_split(MODEL, deployments, services, _route(("gone", 50))) == {}


def test_unready_revisions_get_nothing() -> None:
    rng = random.Random(1)
    split = {"a": 0.5, "b": 0.5}
    picks = [choose_revision(split, {"a"}, rng) for _ in range(200)]
    assert {p[0] for p in picks} == {"a"}
    assert {p[1] for p in picks} == {None, "b"}  # b's share was rerouted, and counted
    assert choose_revision(split, set(), rng)[0] is None
    assert choose_revision({"a": 0.0}, {"a"}, rng) == (None, None)


# --- against the local control plane -------------------------------------------------------------


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "text-classification")


@pytest.fixture
def operator(cluster: Cluster, namespace: str, tmp_path: Path) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    workdir = tmp_path / "operator"
    workdir.mkdir()
    op = OperatorProcess(
        cluster,
        workdir,
        kubeconfig=operator_kubeconfig(cluster, workdir),
        args=[
            "--namespace",
            namespace,
            "--resync-seconds",
            "4",
            "--retry-initial-seconds",
            "1",
            "--retry-max-seconds",
            "3",
            "--addon-check-seconds",
            "2",
        ],
    )
    op.start()
    yield op
    op.stop()


def _model(namespace: str, uri: str, max_batch_delay_ms: int) -> dict[str, Any]:
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "TransformerModel",
        "metadata": {"name": MODEL, "namespace": namespace},
        "spec": {
            "task": "text-classification",
            "model": {"uri": uri, "format": "huggingface"},
            "runtime": {"workers": 1, "batchSize": 4, "maxBatchDelayMs": max_batch_delay_ms},
            "resources": {
                "requests": {"cpu": "100m", "memory": "256Mi"},
                "limits": {"memory": "2Gi"},
            },
            "scaling": {"minReplicas": 1, "maxReplicas": 3},
            "monitoring": {"latencyP99Ms": 2000},
            "route": {"parentRefs": [{"name": "public-gw"}]},
        },
    }


def _revision(cluster: Cluster, ns: str, not_: str | None = None) -> str:
    def new_revision() -> str | None:
        st = cluster.get("transformermodel", MODEL, ns).get("status") or {}
        rev = st.get("revision")
        return str(rev) if rev and rev != not_ else None

    return str(wait_for("a new status.revision", new_revision, 60))


def _deployment_of(cluster: Cluster, ns: str, revision: str) -> str:
    def found() -> str | None:
        items = cluster.get_all("deployment", ns, "-l", f"tmo.dev/revision={revision}")
        return str(items[0]["metadata"]["name"]) if items else None

    return str(wait_for(f"the Deployment of revision {revision}", found, 60))


def _requests(dp: LocalDataPlane, ns: str, revision: str, pod: str) -> float:
    value = dp.value(
        f'sum(tmo_requests_total{{namespace="{ns}",model="{MODEL}",revision="{revision}",'
        f'pod="{pod}",code="200"}})'
    )
    return value or 0.0


def _wait_requests_increase(dp: LocalDataPlane, ns: str, revision: str, pod: str) -> None:
    first = wait_for(
        f"tmo_requests_total of {revision} in Prometheus",
        lambda: _requests(dp, ns, revision, pod),
        60,
    )
    wait_for(
        f"tmo_requests_total of {revision} increasing",
        lambda: _requests(dp, ns, revision, pod) >= first + 10,
        60,
    )


def test_serves_each_revision_with_metrics_alerts_and_routed_load(
    cluster: Cluster,
    namespace: str,
    operator: OperatorProcess,
    tiny_model: Path,
    tmp_path: Path,
) -> None:
    ns = namespace
    cluster.apply(json.dumps(_model(ns, f"file://{tiny_model}", 10)))
    rev1 = _revision(cluster, ns)
    pod1 = _deployment_of(cluster, ns, rev1) + "-0"
    assert cluster.get("httproute", MODEL, ns)

    pids: list[int] = []
    with LocalDataPlane(cluster, ns, tmp_path / "dataplane", rps=20) as dp:
        dp.wait_serving(rev1, timeout=120)
        pids += dp.server_processes()
        wait_for("the load to follow the HTTPRoute", lambda: dp.splits() == {MODEL: {rev1: 1.0}})
        _wait_requests_increase(dp, ns, rev1, pod1)

        # Labels as a ServiceMonitor gives them: namespace and pod from the target, model and
        # revision from the series.
        series = dp.query(f'tmo_requests_total{{namespace="{ns}",revision="{rev1}"}}')
        assert {s["metric"]["pod"] for s in series} == {pod1}
        assert {s["metric"]["model"] for s in series} == {MODEL}
        wait_for("TMO's alert rules loaded", lambda: "TMOHighLatency" in dp.rule_names(), 30)

        sent, codes = dp.sent_by_revision(), dp.codes_by_revision()
        assert set(sent) == {rev1}, dp.describe()
        assert codes[rev1][200] > 0 and set(codes[rev1]) == {200}, dp.describe()

        # Prometheus stopped and started again: same port, same TSDB, scraping resumes.
        url = dp.prometheus_url
        dp.stop_prometheus()
        with pytest.raises(httpx.HTTPError):
            dp.query("up")
        dp.start_prometheus()
        assert dp.prometheus_url == url and _requests(dp, ns, rev1, pod1) > 0
        _wait_requests_increase(dp, ns, rev1, pod1)
        assert "TMOHighLatency" in dp.rule_names()

        # A new revision replacing this one is e2e/test_rollout.py's business (with canaries).

    # Nothing outlives the harness.
    for pid in set(pids):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# --- hand-made revisions: weights, auth, a crashing revision, the replicas router -----------------

TOKEN = "s3cret-t0ken"


def _revision_objects(ns: str, revision: str, uri: str, replicas: int) -> list[dict[str, Any]]:
    """What the operator renders for one revision, reduced to what the harness reads."""
    name = f"{MODEL}-{revision}"
    labels = {
        "app.kubernetes.io/managed-by": "tmo-operator",
        "tmo.dev/model": MODEL,
        "tmo.dev/revision": revision,
    }
    pod_labels = {**labels, "app.kubernetes.io/component": "model-server"}
    manifest = {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "TransformerModel",
        "metadata": {"name": MODEL, "namespace": ns},
        "spec": {
            "task": "text-classification",
            "model": {"uri": uri, "format": "huggingface"},
            "runtime": {"workers": 1, "batchSize": 4, "maxBatchDelayMs": 5},
            "auth": {"tokenSecretRef": {"name": "triage-token", "key": "token"}},
        },
        "status": {"revision": revision},
    }
    gateway = {
        "name": "gateway",
        "image": "tmo-runtime:test",
        "ports": [
            {"name": "http", "containerPort": 8080},
            {"name": "metrics", "containerPort": 9090},
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": f"{name}-config", "namespace": ns, "labels": labels},
            "data": {"model.yaml": yaml.safe_dump(manifest)},
        },
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": pod_labels},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {
                        "containers": [gateway],
                        "volumes": [{"name": "config", "configMap": {"name": f"{name}-config"}}],
                    },
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": labels},
            "spec": {"selector": {"tmo.dev/revision": revision}, "ports": [{"port": 8080}]},
        },
    ]


def _weights(ns: str, stable: int, canary: int) -> dict[str, Any]:
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": MODEL, "namespace": ns},
        "spec": {
            "parentRefs": [{"name": "public-gw"}],
            "rules": [
                {
                    "backendRefs": [
                        {"name": f"{MODEL}-stable1", "port": 8080, "weight": stable},
                        {"name": f"{MODEL}-canary1", "port": 8080, "weight": canary},
                    ]
                }
            ],
        },
    }


def _apply_all(cluster: Cluster, objects: list[dict[str, Any]]) -> None:
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def _share(before: Counter[str], after: Counter[str], revision: str) -> float:
    delta = after - before
    return delta[revision] / max(1, sum(delta.values()))


def test_routes_by_weights_with_auth_and_survives_a_crashing_revision(
    cluster: Cluster, namespace: str, tiny_model: Path, tmp_path: Path
) -> None:
    ns, uri = namespace, f"file://{tiny_model}"
    cluster.kubectl(
        "create", "secret", "generic", "triage-token", "-n", ns, f"--from-literal=token={TOKEN}"
    )
    _apply_all(
        cluster,
        [
            *_revision_objects(ns, "stable1", uri, replicas=1),
            *_revision_objects(ns, "canary1", uri, replicas=1),
            *_revision_objects(ns, "broken1", "file:///nonexistent/model", replicas=1),
            _weights(ns, 75, 25),
        ],
    )
    with LocalDataPlane(cluster, ns, tmp_path / "dataplane", rps=20) as dp:
        stable_url = dp.wait_serving("stable1", timeout=120)
        dp.wait_serving("canary1", timeout=120)
        # A revision whose server cannot start fails its wait at once, with the server's log.
        with pytest.raises(AssertionError, match="exited"):
            dp.wait_serving("broken1", timeout=60)
        assert "nonexistent" in dp.server_log("broken1")

        # The gateway checks the token the harness read from the Secret.
        assert (
            httpx.post(f"{stable_url}/predictions/{MODEL}", json={"text": "x"}).status_code == 401
        )
        before = dp.sent_by_revision()
        time.sleep(8)
        after = dp.sent_by_revision()
        assert 0.1 <= _share(before, after, "canary1") <= 0.4, dp.describe()
        assert set(after) == {"stable1", "canary1"}, dp.describe()
        codes = dp.codes_by_revision()
        assert all(set(c) == {200} for c in codes.values()), dp.describe()

        # Weight 0 gets nothing.
        cluster.apply(json.dumps(_weights(ns, 0, 100)))
        wait_for("the new weights", lambda: dp.splits() == {MODEL: {"canary1": 1.0}})
        before = dp.sent_by_revision()
        time.sleep(2)
        assert _share(before, dp.sent_by_revision(), "canary1") == 1.0, dp.describe()

        # No HTTPRoute: the replica ratio over every running revision (the broken one included,
        # whose share is sent to the ready ones and counted).
        cluster.kubectl("delete", "httproute", MODEL, "-n", ns)
        cluster.kubectl("scale", "deployment", f"{MODEL}-stable1", "-n", ns, "--replicas=2")
        expected = {"broken1": 0.25, "canary1": 0.25, "stable1": 0.5}
        wait_for("the replica ratio", lambda: dp.splits() == {MODEL: expected})
        wait_for("unready picks counted", lambda: dp.unready_picks()["broken1"] > 0)

        # Scaled to 0 or deleted: the revision's server stops.
        cluster.kubectl("scale", "deployment", f"{MODEL}-canary1", "-n", ns, "--replicas=0")
        cluster.kubectl("delete", "deployment", f"{MODEL}-broken1", "-n", ns)
        dp.wait_stopped("canary1", timeout=60)
        dp.wait_stopped("broken1", timeout=60)
        assert dp.splits() == {MODEL: {"stable1": 1.0}}
        print(f"\n{dp.describe()}")
