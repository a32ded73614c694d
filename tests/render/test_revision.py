"""status.revision changes exactly when the pods would."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from tmo.render import RenderSettings, render_children


def _revision(manifest: dict[str, Any], settings: RenderSettings | None = None) -> str:
    return render_children(manifest, settings).revision


def _set(manifest: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(manifest)
    *parents, leaf = path.split(".")
    node = changed["spec"]
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return changed


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("model.uri", "s3://models/tinybert-email/v4/"),
        ("model.sha256", "a" * 64),
        ("runtime.batchSize", 16),
        ("runtime.image", "registry.example/tmo-runtime:2"),
        ("resources.limits", {"memory": "4Gi"}),
        ("task", "feature-extraction"),
        ("auth.tokenSecretRef", {"name": "other", "key": "token"}),
    ],
)
def test_pod_affecting_changes_make_a_new_revision(
    manifest: dict[str, Any], path: str, value: Any
) -> None:
    assert _revision(_set(manifest, path, value)) != _revision(manifest)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("scaling.maxReplicas", 20),
        ("scaling.minReplicas", 1),
        ("scaling.targetQueueLength", 9),
        ("monitoring.latencyP99Ms", 500),
        ("route", {"parentRefs": [{"name": "gw"}]}),
    ],
)
def test_scaling_monitoring_and_route_keep_the_revision(
    manifest: dict[str, Any], path: str, value: Any
) -> None:
    assert _revision(_set(manifest, path, value)) == _revision(manifest)


def test_defaults_written_out_keep_the_revision(manifest: dict[str, Any]) -> None:
    # Git holding `precision: fp32` or leaving it out is the same model.
    assert _revision(_set(manifest, "runtime.precision", "fp32")) == _revision(manifest)


def test_a_new_default_image_is_a_new_revision(manifest: dict[str, Any]) -> None:
    assert _revision(manifest, RenderSettings(runtime_image="r/tmo:2")) != _revision(manifest)


def test_revision_names_the_deployment_and_config(manifest: dict[str, Any]) -> None:
    r = render_children(manifest)
    names = {o["kind"]: o["metadata"]["name"] for o in r.objects}
    assert names["Deployment"] == f"email-triage-{r.revision}"
    assert names["ConfigMap"] == f"email-triage-{r.revision}-config"
    assert len(r.revision) == 10
