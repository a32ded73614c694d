"""Spec (+ operator settings) -> every child object of a TransformerModel. Pure: no cluster."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tmo.render import source
from tmo.render.autoscaling import render_scaled_object
from tmo.render.configmap import render_config_map
from tmo.render.deployment import render_deployment
from tmo.render.monitoring import render_prometheus_rule, render_service_monitor
from tmo.render.network import render_http_route, render_network_policy
from tmo.render.revision import compute_revision
from tmo.render.service import model_url, render_service
from tmo.render.settings import RenderSettings

# API groups served by add-ons (CRDs) rather than by Kubernetes itself: a cluster may lack them.
AUTOSCALING_GROUP = "keda.sh"
MONITORING_GROUP = "monitoring.coreos.com"
ROUTING_GROUP = "gateway.networking.k8s.io"


@dataclass(frozen=True)
class Rendered:
    revision: str
    url: str
    objects: list[dict[str, Any]] = field(default_factory=list)

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]


def api_group(obj: Mapping[str, Any]) -> str:
    api_version = str(obj["apiVersion"])
    return api_version.split("/")[0] if "/" in api_version else ""


def render_children(
    manifest: Mapping[str, Any],
    settings: RenderSettings | None = None,
    *,
    autoscaler_owns_replicas: bool = False,
) -> Rendered:
    """All children, in apply order (ConfigMap before the Deployment whose pods mount it).

    `autoscaler_owns_replicas`: KEDA is installed, so its HPA owns Deployment.spec.replicas and
    applying a count here would fight it on every reconcile.
    """
    settings = settings or RenderSettings()
    obj = source.load(manifest)
    spec = obj["spec"]
    revision = compute_revision(spec, settings)
    replicas = None if autoscaler_owns_replicas else int(spec["scaling"]["minReplicas"])
    objects: list[dict[str, Any] | None] = [
        render_config_map(obj, revision, settings),
        render_deployment(obj, revision, settings, replicas),
        render_service(obj, settings),
        render_network_policy(obj, settings),
        render_scaled_object(obj, revision, settings),
        render_service_monitor(obj, settings),
        render_prometheus_rule(obj, settings),
        render_http_route(obj, settings),
    ]
    return Rendered(
        revision=revision,
        url=model_url(obj, settings),
        objects=[o for o in objects if o is not None],
    )
