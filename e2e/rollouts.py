"""Helpers for the Rollout e2e tests: manifests, waits on phases, Flux's and Argo CD's verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import yaml

from e2e.argocd import health
from e2e.kube import Cluster, kstatus, wait_for
from e2e.tmo_operator import REPO

# Flux's kstatus verdict -> what Argo CD's health.lua may say of the same object. A Rollout
# waiting for approval is Suspended for Argo CD and still InProgress for Flux.
ARGO_FOR_FLUX = {
    "Current": {"Healthy"},
    "InProgress": {"Progressing", "Suspended"},
    "Failed": {"Degraded"},
}


def model_manifest(
    namespace: str, name: str, uri: str, *, route: bool = True, **runtime: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "task": "text-classification",
        "model": {"uri": uri, "format": "huggingface"},
        "runtime": {"workers": 1, "batchSize": 4, "maxBatchDelayMs": 5, **runtime},
        "resources": {"requests": {"cpu": "100m", "memory": "512Mi"}},
        "scaling": {"minReplicas": 2, "maxReplicas": 4},
        "monitoring": {"latencyP99Ms": 1500, "memoryUtilization": 0.99, "errorRate": 0.05},
    }
    if route:
        spec["route"] = {"parentRefs": [{"name": "public-gw"}]}
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "TransformerModel",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }


def rollout_manifest(
    namespace: str,
    name: str,
    steps: list[dict[str, Any]],
    *,
    router: str = "gatewayAPI",
    **analysis: Any,
) -> dict[str, Any]:
    return {
        "apiVersion": "tmo.dev/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "targetRef": {"name": name},
            "strategy": {"canary": {"steps": steps}},
            "analysis": {"interval": "3s", "minRequests": 10, "failureLimit": 0, **analysis},
            "traffic": {"router": router},
        },
    }


def apply(cluster: Cluster, *docs: dict[str, Any]) -> None:
    cluster.apply(yaml.safe_dump_all(docs))


def rollout(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    return cluster.get("rollouts.tmo.dev", name, namespace)


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    conditions = (obj.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), None)


def wait_phase(
    cluster: Cluster,
    namespace: str,
    name: str,
    phases: set[str],
    timeout: float = 180,
    **expect: Any,
) -> dict[str, Any]:
    """The Rollout once its status.phase is in `phases` (and every `expect` status field
    matches), for the generation the API server has now."""

    def check() -> dict[str, Any] | None:
        obj = rollout(cluster, namespace, name)
        st = obj.get("status") or {}
        if st.get("observedGeneration") != obj["metadata"].get("generation"):
            return None
        if st.get("phase") not in phases:
            return None
        if any(st.get(k) != v for k, v in expect.items()):
            return None
        return obj

    try:
        return dict(wait_for(f"Rollout {namespace}/{name} in {phases} {expect}", check, timeout))
    except AssertionError as e:
        last = rollout(cluster, namespace, name).get("status")
        raise AssertionError(f"{e}\nstatus now: {json.dumps(last, indent=1)[:4000]}") from None


def verdicts(cluster: Cluster, obj: dict[str, Any]) -> tuple[str, str]:
    """(Flux's kstatus, Argo CD's health) of `obj`, checked to agree."""
    flux = kstatus(cluster, obj)
    argo = health(obj)[0]
    assert argo in ARGO_FOR_FLUX[flux], (flux, argo, obj.get("status"))
    return flux, argo


def events(cluster: Cluster, namespace: str, name: str, kind: str = "Rollout") -> list[str]:
    """Reasons of the Events about one object, oldest first."""
    items = cluster.get_all("events", namespace)
    mine = [
        e
        for e in items
        if e["involvedObject"].get("kind") == kind and e["involvedObject"].get("name") == name
    ]
    mine.sort(key=lambda e: (e.get("lastTimestamp") or "", e["metadata"]["name"]))
    return [e["reason"] for e in mine]


def tmo(cluster: Cluster, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "tmo.cli", *args, "--kubeconfig", str(cluster.kubeconfig)],
        capture_output=True,
        text=True,
        env=cluster.env(),
        cwd=REPO,
        timeout=120,
    )
    if check and r.returncode != 0:
        raise AssertionError(f"tmo {' '.join(args)} failed ({r.returncode}):\n{r.stdout}{r.stderr}")
    return r


def route_weights(cluster: Cluster, namespace: str, name: str) -> dict[str, int]:
    """Backend Service -> weight of the model's HTTPRoute."""
    route = cluster.get("httproutes.gateway.networking.k8s.io", name, namespace)
    backends = route["spec"]["rules"][0]["backendRefs"]
    return {b["name"]: int(b.get("weight", 1)) for b in backends}


def change_runtime(cluster: Cluster, namespace: str, name: str, **runtime: Any) -> str:
    """Patch the model's spec.runtime (a new revision); returns that revision once the operator
    has computed it."""
    before = cluster.get("tm", name, namespace).get("status", {}).get("revision")
    patch = json.dumps({"spec": {"runtime": runtime}})
    cluster.kubectl("-n", namespace, "patch", "tm", name, "--type", "merge", "-p", patch)

    def new() -> str | None:
        revision = cluster.get("tm", name, namespace).get("status", {}).get("revision")
        return str(revision) if revision and revision != before else None

    return str(wait_for(f"a new revision of {namespace}/{name}", new, 30))
