"""The chart's RBAC lets the operator do what it needs and nothing else (`kubectl auth can-i`)."""

from __future__ import annotations

import pytest

from e2e.kube import Cluster, wait_for
from e2e.tmo_operator import OPERATOR_NAMESPACE, install_rbac

SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:tmo-operator"

ALLOWED = [
    ("list", "transformermodels.tmo.dev", "-A"),
    ("watch", "transformermodels.tmo.dev", "-A"),
    ("patch", "transformermodels.tmo.dev", "--subresource=status", "-n", "anywhere"),
    ("update", "transformermodels.tmo.dev", "--subresource=finalizers", "-n", "anywhere"),
    ("list", "rollouts.tmo.dev", "-A"),
    ("watch", "deployments.apps", "-A"),
    ("create", "deployments.apps", "-n", "anywhere"),
    ("patch", "deployments.apps", "-n", "anywhere"),
    ("delete", "deployments.apps", "-n", "anywhere"),
    ("patch", "configmaps", "-n", "anywhere"),
    ("patch", "services", "-n", "anywhere"),
    ("get", "secrets", "-n", "anywhere"),
    ("list", "pods", "-A"),
    ("watch", "pods", "-A"),
    ("create", "events", "-n", "anywhere"),
    ("patch", "networkpolicies.networking.k8s.io", "-n", "anywhere"),
    ("patch", "scaledobjects.keda.sh", "-n", "anywhere"),
    ("patch", "servicemonitors.monitoring.coreos.com", "-n", "anywhere"),
    ("patch", "prometheusrules.monitoring.coreos.com", "-n", "anywhere"),
    ("patch", "httproutes.gateway.networking.k8s.io", "-n", "anywhere"),
]

DENIED = [
    ("list", "secrets", "-A"),
    ("watch", "secrets", "-A"),
    ("list", "secrets", "-n", "anywhere"),
    ("create", "pods", "--subresource=exec", "-n", "anywhere"),
    ("get", "pods", "-n", "anywhere"),
    ("get", "pods", "--subresource=log", "-n", "anywhere"),
    ("patch", "pods", "-n", "anywhere"),
    ("delete", "pods", "-n", "anywhere"),
    ("create", "secrets", "-n", "anywhere"),
    # The spec belongs to Git: the operator writes status only.
    ("patch", "transformermodels.tmo.dev", "-n", "anywhere"),
    ("update", "transformermodels.tmo.dev", "-n", "anywhere"),
    ("delete", "transformermodels.tmo.dev", "-n", "anywhere"),
    ("create", "clusterrolebindings.rbac.authorization.k8s.io"),
    ("impersonate", "serviceaccounts", "-A"),
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("*", "*", "-A"),
]


@pytest.fixture(scope="module")
def rbac(cluster: Cluster) -> None:
    install_rbac(cluster)
    wait_for(
        "the operator's ClusterRoleBinding to take effect",
        lambda: _can(cluster, "list", "transformermodels.tmo.dev", "-A"),
        30,
    )


def _can(cluster: Cluster, *args: str) -> bool:
    r = cluster.kubectl("auth", "can-i", *args, "--as", SA, check=False)
    return r.stdout.strip() == "yes"


@pytest.mark.parametrize("check", ALLOWED, ids=lambda c: " ".join(c))
def test_operator_can(cluster: Cluster, rbac: None, check: tuple[str, ...]) -> None:
    assert _can(cluster, *check)


@pytest.mark.parametrize("check", DENIED, ids=lambda c: " ".join(c))
def test_operator_cannot(cluster: Cluster, rbac: None, check: tuple[str, ...]) -> None:
    assert not _can(cluster, *check)
