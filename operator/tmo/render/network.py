"""Network exposure: a NetworkPolicy (only the gateway's ports) and an optional HTTPRoute."""

from __future__ import annotations

from typing import Any

from tmo.render import names
from tmo.render.settings import RenderSettings
from tmo.render.traffic import Serving


def render_network_policy(obj: dict[str, Any], settings: RenderSettings) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": names.metadata(obj, name, names.model_labels(name)),
        "spec": {
            "podSelector": {"matchLabels": names.pod_selector(name)},
            "policyTypes": ["Ingress"],
            # TorchServe's ports (inference, management, metrics, gRPC) stay unreachable even if
            # a bind address is ever misconfigured: only the gateway's two ports are allowed.
            "ingress": [
                {
                    "ports": [
                        {"protocol": "TCP", "port": settings.http_port},
                        {"protocol": "TCP", "port": settings.metrics_port},
                    ]
                }
            ],
        },
    }


def render_http_route(
    obj: dict[str, Any], settings: RenderSettings, serving: Serving | None = None
) -> dict[str, Any] | None:
    """The model's route; under a gatewayAPI Rollout its backends are the stable and canary
    revisions' own Services, weighted by the canary step."""
    route = obj["spec"].get("route")
    if not route:
        return None
    name = obj["metadata"]["name"]
    port = settings.http_port
    if serving is not None and serving.router == "gatewayAPI":
        backends = [
            {"name": names.revision_service_name(name, r), "port": port, "weight": w}
            for r, w in serving.weights()
        ]
    else:
        backends = [{"name": names.service_name(name), "port": port, "weight": 100}]
    spec: dict[str, Any] = {
        "parentRefs": route.get("parentRefs") or [],
        "rules": [{"backendRefs": backends}],
    }
    if route.get("hostnames"):
        spec["hostnames"] = route["hostnames"]
    return {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": names.metadata(obj, name, names.model_labels(name)),
        "spec": spec,
    }
