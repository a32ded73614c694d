"""`tmo operator --namespace NS` reconciles the TransformerModels of NS and leaves every other
namespace alone: no children, no status, no Events, not even a read there."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest

from e2e.kube import Cluster
from e2e.models import apply_model, small_model, tm, wait_ready
from e2e.tmo_operator import OperatorProcess

CHILDREN = ("deployment", "configmap", "service", "networkpolicy", "scaledobject")


@pytest.fixture
def other_namespace(cluster: Cluster) -> Iterator[str]:
    name = f"t-{uuid.uuid4().hex[:8]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_operator_reconciles_its_namespace_and_ignores_the_others(
    cluster: Cluster, namespace: str, other_namespace: str, namespaced_operator: OperatorProcess
) -> None:
    # The other namespace's model first: it is there all along.
    apply_model(cluster, other_namespace, small_model("outside"))
    apply_model(cluster, namespace, small_model("inside"))
    obj = wait_ready(cluster, namespace, "inside")
    assert obj["status"]["url"] == f"http://inside.{namespace}.svc:8080"
    for kind in CHILDREN:
        assert cluster.get_all(kind, namespace, "-l", "tmo.dev/model=inside"), kind

    # Two more resyncs (2 s each) give the operator every chance to get it wrong.
    time.sleep(5)
    outside = tm(cluster, other_namespace, "outside")
    assert "status" not in outside, outside["status"]
    for kind in CHILDREN:
        assert not cluster.get_all(kind, other_namespace, "-l", "tmo.dev/model=outside"), kind
    assert not cluster.get_all("events", other_namespace)
    stats = namespaced_operator.stats()
    assert stats["models"] == 1, stats
    assert other_namespace not in stats["requests_by_namespace"], stats
    assert other_namespace not in stats["writes_by_namespace"], stats
