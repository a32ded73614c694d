"""Prometheus scraping (ServiceMonitor) and alerts (PrometheusRule) for one model.

Alerts group by namespace, model and revision so a canary's alerts are told apart from the
stable revision's (Rollout analysis watches `TMOHighLatency{revision="<canary>"}`).
"""

from __future__ import annotations

from typing import Any

from tmo.render import names
from tmo.render.settings import RenderSettings

BY = "namespace, model, revision"


def _selector(namespace: str, model: str) -> str:
    return f'namespace="{namespace}",model="{model}"'


def alert_rules(obj: dict[str, Any], settings: RenderSettings) -> list[dict[str, Any]]:
    meta = obj["metadata"]
    ns, model = meta["namespace"], meta["name"]
    mon = obj["spec"]["monitoring"]
    sel = _selector(ns, model)
    window = settings.alert_window
    p99_seconds = float(mon["latencyP99Ms"]) / 1000.0
    labels = {"severity": "warning", "tmo_alert": "true"}
    latency = (
        f"histogram_quantile(0.99, sum by ({BY}, le) "
        f"(rate(tmo_request_duration_seconds_bucket{{{sel}}}[{window}]))) > {p99_seconds:g}"
    )
    memory = (
        # Per container: each has its own limit, and the model's memory is the torchserve one.
        f"max by ({BY}, pod, container) "
        f"(tmo_memory_usage_bytes{{{sel}}} / tmo_memory_limit_bytes{{{sel}}})"
        f" > {float(mon['memoryUtilization']):g}"
    )
    errors = (
        f'sum by ({BY}) (rate(tmo_requests_total{{{sel},code=~"5.."}}[{window}]))'
        f" / sum by ({BY}) (rate(tmo_requests_total{{{sel}}}[{window}]))"
        f" > {float(mon['errorRate']):g}"
    )
    return [
        {
            "alert": "TMOHighLatency",
            "expr": latency,
            "for": settings.alert_for,
            "labels": labels,
            "annotations": {
                "summary": f"p99 latency of {ns}/{model} above {float(mon['latencyP99Ms']):g} ms",
                "description": "p99 latency of revision {{ $labels.revision }} is "
                "{{ $value | humanizeDuration }}.",
            },
        },
        {
            "alert": "TMOMemorySpike",
            "expr": memory,
            # Memory is about to OOM-kill the pod: a short hold, not the full alert_for.
            "for": "1m",
            "labels": labels,
            "annotations": {
                "summary": f"memory of a {ns}/{model} pod above "
                f"{float(mon['memoryUtilization']):.0%} of its limit",
                "description": "Container {{ $labels.container }} of pod {{ $labels.pod }} "
                "(revision {{ $labels.revision }}) uses {{ $value | humanizePercentage }} "
                "of its memory limit.",
            },
        },
        {
            "alert": "TMOHighErrorRate",
            "expr": errors,
            "for": settings.alert_for,
            "labels": labels,
            "annotations": {
                "summary": f"5xx ratio of {ns}/{model} above {float(mon['errorRate']):g}",
                "description": "Revision {{ $labels.revision }} answers "
                "{{ $value | humanizePercentage }} of requests with 5xx.",
            },
        },
    ]


def render_prometheus_rule(obj: dict[str, Any], settings: RenderSettings) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": names.metadata(obj, name, names.model_labels(name)),
        "spec": {"groups": [{"name": f"tmo.{name}", "rules": alert_rules(obj, settings)}]},
    }


def render_service_monitor(obj: dict[str, Any], settings: RenderSettings) -> dict[str, Any]:
    name = obj["metadata"]["name"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": names.metadata(obj, name, names.model_labels(name)),
        "spec": {
            "selector": {"matchLabels": names.pod_selector(name)},
            "endpoints": [
                {
                    "port": "metrics",
                    "path": "/metrics",
                    "interval": "15s",
                    # The revision label on a series must be the pod's, not the Service's.
                    "honorLabels": True,
                }
            ],
        },
    }
