"""What the reconciler e2e tests share: a running operator, TransformerModel manifests, and waits
on a model's status."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from e2e.kube import Cluster, wait_for
from e2e.tmo_operator import OperatorProcess, install_crds, operator_kubeconfig


@contextmanager
def running_operator(cluster: Cluster, workdir: Path, *args: str) -> Iterator[OperatorProcess]:
    """`tmo operator ARGS` with the chart's RBAC (the operator ServiceAccount's token)."""
    install_crds(cluster)
    op = OperatorProcess(cluster, workdir, list(args), operator_kubeconfig(cluster, workdir))
    op.start()
    try:
        yield op
    finally:
        op.stop()


def small_model(name: str, **spec: Any) -> dict[str, Any]:
    """A small text-classification TransformerModel; `spec` replaces top-level spec fields."""
    base: dict[str, Any] = {
        "task": "text-classification",
        "model": {"uri": "s3://models/tiny/v1/", "format": "huggingface"},
        "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}},
        "scaling": {"minReplicas": 1, "maxReplicas": 5},
    }
    base.update(spec)
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "TransformerModel",
        "metadata": {"name": name},
        "spec": base,
    }


def apply_model(cluster: Cluster, ns: str, manifest: dict[str, Any]) -> None:
    m = copy.deepcopy(manifest)
    m["metadata"]["namespace"] = ns
    cluster.apply(json.dumps(m))


def tm(cluster: Cluster, ns: str, name: str) -> dict[str, Any]:
    return cluster.get("transformermodel", name, ns)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return None


def ready(cluster: Cluster, ns: str, name: str) -> dict[str, Any] | bool:
    """The model when its status is about its current generation and says Ready=True."""
    obj = tm(cluster, ns, name)
    c = condition(obj, "Ready")
    fresh = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
    return obj if fresh and c is not None and c["status"] == "True" else False


def wait_ready(cluster: Cluster, ns: str, name: str, timeout: float = 60) -> dict[str, Any]:
    return dict(wait_for(f"{ns}/{name} Ready=True", lambda: ready(cluster, ns, name), timeout))


def wait_stalled(
    cluster: Cluster, ns: str, name: str, reason: str, timeout: float = 30
) -> dict[str, Any]:
    """The model once its status is about its current generation and Stalled for `reason`."""

    def stalled() -> dict[str, Any] | bool:
        obj = tm(cluster, ns, name)
        c = condition(obj, "Stalled")
        fresh = (obj.get("status") or {}).get("observedGeneration") == obj["metadata"]["generation"]
        return obj if fresh and c and c["status"] == "True" and c["reason"] == reason else False

    return dict(wait_for(f"{ns}/{name} Stalled {reason}", stalled, timeout))


def resyncs(operator: OperatorProcess, n: int, timeout: float = 20) -> None:
    """Wait until the operator has made `n` more reconcile passes (of any model)."""
    start = operator.stats()["reconciles"]
    wait_for(f"{n} more reconciles", lambda: operator.stats()["reconciles"] >= start + n, timeout)
