"""What counts as a hand edit of a child, and what is a controller doing its job."""

from __future__ import annotations

import copy
from typing import Any

from tmo.kube.drift import fingerprint

DEPLOYMENT: dict[str, Any] = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {
        "name": "m-abc",
        "namespace": "ml",
        "resourceVersion": "10",
        "generation": 1,
        "labels": {"tmo.dev/model": "m"},
        "annotations": {"tmo.dev/applied-hash": "h1"},
    },
    "spec": {
        "replicas": 2,
        "template": {"spec": {"containers": [{"name": "gateway", "image": "tmo:1"}]}},
    },
    "status": {"readyReplicas": 2},
}


def _changed(**edits: Any) -> dict[str, Any]:
    obj = copy.deepcopy(DEPLOYMENT)
    for path, value in edits.items():
        *parents, leaf = path.split("__")
        node = obj
        for p in parents:
            node = node[p]
        node[leaf] = value
    return obj


def test_controllers_changes_are_not_edits() -> None:
    base = fingerprint("Deployment", DEPLOYMENT)
    # The HPA scales, the Deployment controller reports and stamps its revision, writes bump
    # resourceVersion and generation: none of these is a person's edit.
    assert fingerprint("Deployment", _changed(spec__replicas=7)) == base
    assert fingerprint("Deployment", _changed(status={"readyReplicas": 0})) == base
    scaled = _changed(metadata__resourceVersion="11", metadata__generation=2)
    assert fingerprint("Deployment", scaled) == base
    stamped = copy.deepcopy(DEPLOYMENT)
    stamped["metadata"]["annotations"]["deployment.kubernetes.io/revision"] = "3"
    assert fingerprint("Deployment", stamped) == base


def test_hand_edits_are() -> None:
    base = fingerprint("Deployment", DEPLOYMENT)
    image = copy.deepcopy(DEPLOYMENT)
    image["spec"]["template"]["spec"]["containers"][0]["image"] = "evil:latest"
    assert fingerprint("Deployment", image) != base
    labelled = copy.deepcopy(DEPLOYMENT)
    labelled["metadata"]["labels"]["team"] = "x"
    assert fingerprint("Deployment", labelled) != base
    config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}, "data": {"a": "1"}}
    assert fingerprint("ConfigMap", config_map) != fingerprint(
        "ConfigMap", {**config_map, "data": {"a": "2"}}
    )
    # replicas is only the autoscaler's on a Deployment.
    service = {"metadata": {}, "spec": {"replicas": 1, "ports": []}}
    edited = {**service, "spec": {"replicas": 2, "ports": []}}
    assert fingerprint("Service", service) != fingerprint("Service", edited)
    # A list response's items have no kind: the same Deployment fingerprints the same.
    listed = {k: v for k, v in DEPLOYMENT.items() if k not in ("kind", "apiVersion")}
    scaled = _changed(spec__replicas=3)
    assert fingerprint("Deployment", listed) == fingerprint("Deployment", scaled)
