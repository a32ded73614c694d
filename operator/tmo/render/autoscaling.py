"""The KEDA ScaledObject: replicas follow the gateway's in-flight requests (TorchServe's queue).

TorchServe exports no queue-length gauge (pytorch/serve #714, #2412); the gateway's
`tmo_inflight_requests` is that signal. KEDA's prometheus trigger with the default AverageValue
metric type gives ceil(sum(in-flight) / targetQueueLength) replicas.
"""

from __future__ import annotations

from typing import Any

from tmo.render import names
from tmo.render.settings import RenderSettings


def inflight_query(namespace: str, model: str, revision: str) -> str:
    return (
        f'sum(tmo_inflight_requests{{namespace="{namespace}",model="{model}",'
        f'revision="{revision}"}})'
    )


def render_scaled_object(
    obj: dict[str, Any], revision: str, settings: RenderSettings
) -> dict[str, Any]:
    meta = obj["metadata"]
    scaling = obj["spec"]["scaling"]
    return {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": names.metadata(obj, meta["name"], names.model_labels(meta["name"])),
        "spec": {
            # Follows the current revision: a new revision's Deployment takes over the scaling.
            "scaleTargetRef": {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "name": names.deployment_name(meta["name"], revision),
            },
            "minReplicaCount": scaling["minReplicas"],
            "maxReplicaCount": scaling["maxReplicas"],
            "cooldownPeriod": scaling["cooldownSeconds"],
            "pollingInterval": 15,
            "triggers": [
                {
                    "type": "prometheus",
                    "name": "inflight-requests",
                    "metadata": {
                        "serverAddress": settings.prometheus_url,
                        "query": inflight_query(meta["namespace"], meta["name"], revision),
                        "threshold": str(scaling["targetQueueLength"]),
                        # No series yet (no traffic, fresh pods) means zero load, not an error.
                        "ignoreNullValues": "true",
                    },
                }
            ],
        },
    }
