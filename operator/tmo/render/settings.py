"""What the renderers need to know that is not in a TransformerModel: the operator's configuration.

Kept apart from the operator's process settings (flags, namespaces, log format) so that
`tmo render` and the unit tests build children from plain data, without a cluster.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RenderSettings:
    # Used when spec.runtime.image is empty. Part of the revision: a new default image rolls pods.
    runtime_image: str = "ghcr.io/tmo-dev/tmo-runtime:0.1.0"
    # Where KEDA's prometheus trigger reads tmo_inflight_requests.
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    # The gateway's ports: the only ones a model pod exposes.
    http_port: int = 8080
    metrics_port: int = 9090
    # TorchServe's own ports, bound to 127.0.0.1 inside the pod and never exposed.
    torchserve_inference_port: int = 8085
    torchserve_management_port: int = 8086
    torchserve_metrics_port: int = 8087
    torchserve_grpc_inference_port: int = 7070
    torchserve_grpc_management_port: int = 7071
    # A revision whose pods are not Available by then is reported Stalled (Deployment's own
    # progressDeadlineSeconds, so the deadline survives operator restarts).
    progress_deadline_seconds: int = 600
    # How long an alert condition must hold before it fires.
    alert_for: str = "2m"
    # Window of the rate() in latency and error-rate alerts.
    alert_window: str = "5m"
    cluster_domain_suffix: str = "svc"
