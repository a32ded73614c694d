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
from tmo.render.service import model_url, render_revision_service, render_service
from tmo.render.settings import RenderSettings
from tmo.render.traffic import Serving

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
    serving: Serving | None = None,
) -> Rendered:
    """All children, in apply order (ConfigMap before the Deployment whose pods mount it).

    `autoscaler_owns_replicas`: KEDA is installed, so its HPA owns Deployment.spec.replicas and
    applying a count here would fight it on every reconcile.

    `serving`: what a Rollout decided (stable and canary revisions, weight, canary size). The
    spec renders only its own revision; a stable revision from an older spec is left as it
    runs (not rendered, so not applied), and the spec's revision is rendered only when it is the
    stable or the canary one (a rolled-back revision gets no pods).
    """
    settings = settings or RenderSettings()
    obj = source.load(manifest)
    spec = obj["spec"]
    revision = compute_revision(spec, settings)
    replicas = None if autoscaler_owns_replicas else int(spec["scaling"]["minReplicas"])
    runs_own_revision = serving is None or revision in (serving.stable, serving.canary)
    if serving is not None and revision == serving.canary and not autoscaler_owns_replicas:
        replicas = serving.canary_replicas
    scaled = serving.stable if serving is not None else revision
    objects: list[dict[str, Any] | None] = [
        render_config_map(obj, revision, settings) if runs_own_revision else None,
        render_deployment(obj, revision, settings, replicas) if runs_own_revision else None,
        render_service(obj, settings),
        *(
            render_revision_service(obj, r, settings)
            for r in (serving.revision_services() if serving is not None else ())
        ),
        render_network_policy(obj, settings),
        # The autoscaler follows the stable revision only: canary load never scales stable
        # (argo-rollouts#2857) and the canary's size is the Rollout's alone.
        render_scaled_object(obj, scaled, settings),
        render_service_monitor(obj, settings),
        render_prometheus_rule(obj, settings),
        render_http_route(obj, settings, serving),
    ]
    return Rendered(
        revision=revision,
        url=model_url(obj, settings),
        objects=[o for o in objects if o is not None],
    )
