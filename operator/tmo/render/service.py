"""The Service in front of every revision of a model: the gateway's ports only."""

from __future__ import annotations

from typing import Any

from tmo.render import names
from tmo.render.settings import RenderSettings


def model_url(obj: dict[str, Any], settings: RenderSettings) -> str:
    meta = obj["metadata"]
    host = (
        f"{names.service_name(meta['name'])}.{meta['namespace']}.{settings.cluster_domain_suffix}"
    )
    return f"http://{host}:{settings.http_port}"


def render_service(obj: dict[str, Any], settings: RenderSettings) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.metadata(
            obj,
            names.service_name(name),
            {**names.model_labels(name), names.LABEL_COMPONENT: names.COMPONENT_MODEL_SERVER},
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": names.pod_selector(name),
            "ports": [
                {
                    "name": "http",
                    "port": settings.http_port,
                    "targetPort": "http",
                    "protocol": "TCP",
                },
                {
                    "name": "metrics",
                    "port": settings.metrics_port,
                    "targetPort": "metrics",
                    "protocol": "TCP",
                },
            ],
        },
    }


def render_revision_service(
    obj: dict[str, Any], revision: str, settings: RenderSettings
) -> dict[str, Any]:
    """One revision's own Service: an HTTPRoute backend that the Rollout weights.

    Its component label differs from the model's Service so the ServiceMonitor (which selects
    the model's Service) does not scrape the same pods twice."""
    name = obj["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": names.metadata(
            obj,
            names.revision_service_name(name, revision),
            {
                **names.revision_labels(name, revision),
                names.LABEL_COMPONENT: names.COMPONENT_REVISION_SERVICE,
            },
        ),
        "spec": {
            "type": "ClusterIP",
            "selector": {**names.pod_selector(name), names.LABEL_REVISION: revision},
            "ports": [
                {
                    "name": "http",
                    "port": settings.http_port,
                    "targetPort": "http",
                    "protocol": "TCP",
                }
            ],
        },
    }
