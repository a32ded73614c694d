"""The local control plane behaves like a real cluster: the ground every other e2e test stands on.

Each test checks API semantics TMO relies on: scheduling and readiness (kwok), garbage
collection by ownerReferences, third-party CRD schemas, RBAC, and server-side apply conflicts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from e2e.kube import Cluster, wait_for


def _deployment(name: str, replicas: int) -> str:
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {
                    "metadata": {"labels": {"app": name}},
                    "spec": {"containers": [{"name": "main", "image": "example.invalid/app:1"}]},
                },
            },
        }
    )


def test_deployment_becomes_available_on_kwok_nodes(cluster: Cluster, namespace: str) -> None:
    cluster.apply(_deployment("web", 2), "-n", namespace)

    def available() -> Any:
        d = cluster.get("deployment", "web", namespace)
        return d["status"].get("availableReplicas") == 2 and d

    wait_for("deployment web 2/2 available", available, timeout=90)
    pods = cluster.get_all("pods", namespace, "-l", "app=web")
    assert len(pods) == 2
    for pod in pods:
        assert pod["spec"]["nodeName"].startswith("kwok-node-"), pod["spec"].get("nodeName")
        assert pod["status"]["phase"] == "Running"
        ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
        assert ready["Ready"] == "True"


def test_deleting_a_deployment_garbage_collects_replicasets_and_pods(
    cluster: Cluster, namespace: str
) -> None:
    cluster.apply(_deployment("gc", 2), "-n", namespace)
    wait_for(
        "2 pods of gc",
        lambda: len(cluster.get_all("pods", namespace, "-l", "app=gc")) == 2,
        timeout=90,
    )
    rs = cluster.get_all("replicasets", namespace, "-l", "app=gc")
    assert rs and rs[0]["metadata"]["ownerReferences"][0]["kind"] == "Deployment"

    cluster.kubectl("delete", "deployment", "gc", "-n", namespace, "--wait=false")
    wait_for(
        "replicasets and pods of gc to be garbage-collected",
        lambda: (
            not cluster.get_all("replicasets", namespace, "-l", "app=gc")
            and not cluster.get_all("pods", namespace, "-l", "app=gc")
        ),
        timeout=90,
    )


THIRD_PARTY_OBJECTS = """
apiVersion: keda.sh/v1alpha1
kind: ScaledObject
metadata: {name: model}
spec:
  scaleTargetRef: {name: model}
  minReplicaCount: 1
  maxReplicaCount: 5
  triggers:
    - type: prometheus
      metadata:
        serverAddress: http://prometheus.monitoring:9090
        query: sum(tmo_inflight_requests{model="model"})
        threshold: "4"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: model}
spec:
  parentRefs: [{name: public-gw}]
  hostnames: [model.example.com]
  rules:
    - backendRefs:
        - {name: model-stable, port: 8080, weight: 90}
        - {name: model-canary, port: 8080, weight: 10}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: model}
spec:
  selector: {matchLabels: {app: model}}
  endpoints: [{port: metrics, interval: 15s}]
---
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata: {name: model}
spec:
  groups:
    - name: model
      rules:
        - alert: TMOHighLatency
          expr: >-
            histogram_quantile(0.99, sum by (le) (rate(tmo_request_duration_seconds_bucket[5m])))
            > 0.25
          for: 2m
          labels: {severity: warning}
"""


def test_third_party_crds_accept_valid_objects(cluster: Cluster, namespace: str) -> None:
    cluster.apply(THIRD_PARTY_OBJECTS, "-n", namespace)
    for kind in ("scaledobject", "httproute", "servicemonitor", "prometheusrule"):
        assert cluster.get(kind, "model", namespace)["metadata"]["name"] == "model"


def test_httproute_with_negative_weight_is_rejected_by_its_schema(
    cluster: Cluster, namespace: str
) -> None:
    bad = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad}
spec:
  parentRefs: [{name: public-gw}]
  rules:
    - backendRefs: [{name: model, port: 8080, weight: -1}]
"""
    r = cluster.apply(bad, "-n", namespace, check=False)
    assert r.returncode != 0
    assert "weight" in r.stderr and "greater than or equal to 0" in r.stderr, r.stderr


def _kubeconfig_with_token(cluster: Cluster, token: str, tmp_path: Path) -> str:
    """The cluster's kubeconfig with the admin credentials swapped for a bearer token."""
    kc = json.loads(
        cluster.kubectl("config", "view", "--raw", "--minify", "--flatten", "-o", "json").stdout
    )
    kc["users"] = [{"name": "sa", "user": {"token": token}}]
    kc["contexts"][0]["context"]["user"] = "sa"
    path = tmp_path / "sa.kubeconfig"
    path.write_text(json.dumps(kc))
    return str(path)


def test_rbac_denies_a_serviceaccount_without_bindings(
    cluster: Cluster, namespace: str, tmp_path: Path
) -> None:
    cluster.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    # A real token for the ServiceAccount (TokenRequest API), used as a real client would.
    token = cluster.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    as_sa = _kubeconfig_with_token(cluster, token, tmp_path)
    r = cluster.kubectl("--kubeconfig", as_sa, "get", "secrets", "-n", namespace, check=False)
    assert r.returncode != 0
    assert "Forbidden" in r.stderr and 'cannot list resource "secrets"' in r.stderr, r.stderr

    sa = f"system:serviceaccount:{namespace}:nobody"
    r = cluster.kubectl(
        "auth", "can-i", "list", "secrets", "-n", namespace, "--as", sa, check=False
    )
    assert r.stdout.strip() == "no"

    # And a RoleBinding is what changes the answer: RBAC is evaluated, not bypassed.
    cluster.kubectl(
        "create", "role", "read-secrets", "--verb=list", "--resource=secrets", "-n", namespace
    )
    cluster.kubectl(
        "create",
        "rolebinding",
        "nobody-reads",
        "--role=read-secrets",
        f"--serviceaccount={namespace}:nobody",
        "-n",
        namespace,
    )
    wait_for(
        "RoleBinding to take effect",
        lambda: (
            cluster.kubectl(
                "auth", "can-i", "list", "secrets", "-n", namespace, "--as", sa, check=False
            ).stdout.strip()
            == "yes"
        ),
        timeout=30,
    )
    assert cluster.kubectl("--kubeconfig", as_sa, "get", "secrets", "-n", namespace).returncode == 0


@pytest.fixture
def core(cluster: Cluster) -> client.CoreV1Api:
    return client.CoreV1Api(config.new_client_from_config(config_file=str(cluster.kubeconfig)))


def _apply_configmap(core: client.CoreV1Api, namespace: str, manager: str, value: str) -> Any:
    body = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "ssa", "namespace": namespace},
        "data": {"key": value},
    }
    return core.patch_namespaced_config_map(
        "ssa", namespace, body, field_manager=manager, _content_type="application/apply-patch+yaml"
    )


def test_server_side_apply_tracks_managers_and_reports_conflicts(
    core: client.CoreV1Api, namespace: str
) -> None:
    cm = _apply_configmap(core, namespace, "tmo-operator", "1")
    managers = {m.manager for m in cm.metadata.managed_fields}
    assert "tmo-operator" in managers
    # The same manager may change its own field.
    assert _apply_configmap(core, namespace, "tmo-operator", "2").data == {"key": "2"}

    with pytest.raises(ApiException) as err:
        _apply_configmap(core, namespace, "someone-else", "3")
    assert err.value.status == 409
    assert "conflict" in err.value.body.lower() and ".data.key" in err.value.body
    assert core.read_namespaced_config_map("ssa", namespace).data == {"key": "2"}
