"""The table of invalid manifests, shared by the offline test and the API-server e2e test.

Each row is a valid base manifest with one thing broken, and the path of the field the error
must name. Both `tmo validate` (offline) and the API server must reject every row, naming it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

BASE_MODEL: dict[str, Any] = {
    "apiVersion": "tmo.dev/v1alpha1",
    "kind": "TransformerModel",
    "metadata": {"name": "case"},
    "spec": {
        "task": "text-classification",
        "model": {"uri": "s3://models/tinybert-email/v3/"},
    },
}

BASE_ROLLOUT: dict[str, Any] = {
    "apiVersion": "tmo.dev/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "case"},
    "spec": {
        "targetRef": {"name": "case"},
        "strategy": {"canary": {"steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}]}},
        "analysis": {"metrics": [{"name": "p99", "builtin": "latencyP99", "max": 250}]},
    },
}

_DELETE = object()


@dataclass(frozen=True)
class InvalidCase:
    id: str
    manifest: dict[str, Any]
    path: str
    """The offending field as the API server writes it, e.g. spec.scaling.minReplicas."""


def _with(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with dotted paths set (or removed with _DELETE)."""
    doc = copy.deepcopy(base)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = doc
        for key in parents:
            node = node.setdefault(key, {})
        if value is _DELETE:
            node.pop(last, None)
        else:
            node[last] = value
    return doc


def tm(case_id: str, path: str, **changes: Any) -> InvalidCase:
    return InvalidCase(case_id, _with(BASE_MODEL, _dotted(changes)), path)


def ro(case_id: str, path: str, **changes: Any) -> InvalidCase:
    return InvalidCase(case_id, _with(BASE_ROLLOUT, _dotted(changes)), path)


def _dotted(changes: dict[str, Any]) -> dict[str, Any]:
    # Keyword arguments cannot contain dots: "spec__scaling__minReplicas" means spec.scaling....
    return {k.replace("__", "."): v for k, v in changes.items()}


_GPU_BF16 = {"precision": "bf16", "attention": "flash_attention_2"}

CASES: list[InvalidCase] = [
    # --- TransformerModel: metadata -------------------------------------------------------------
    tm("name-too-long", "metadata.name", metadata={"name": "m" * 46}),
    tm("name-starts-with-digit", "metadata.name", metadata={"name": "7b-chat"}),
    # --- spec.task / model ------------------------------------------------------------------------
    tm("task-unknown", "spec.task", spec__task="translation"),
    tm("model-missing", "spec.model", spec__model=_DELETE),
    tm("uri-unsupported-scheme", "spec.model.uri", spec__model__uri="ftp://models/x"),
    tm("uri-no-scheme", "spec.model.uri", spec__model__uri="models/tinybert"),
    tm("uri-pvc-without-claim", "spec.model.uri", spec__model__uri="pvc:///weights"),
    tm("uri-hf-without-org", "spec.model.uri", spec__model__uri="hf://bert-base"),
    tm("uri-https-directory", "spec.model.uri", spec__model__uri="https://h.example/models/m/"),
    tm("uri-mlflow-no-version", "spec.model.uri", spec__model__uri="mlflow://classifier"),
    tm("uri-mlflow-version-zero", "spec.model.uri", spec__model__uri="mlflow://classifier/0"),
    tm(
        "hf-cache-claim-not-hf",
        "spec.model.hfCacheClaim",
        spec__model__uri="s3://b/m/",
        spec__model__hfCacheClaim="hub-cache",
    ),
    tm("format-unknown", "spec.model.format", spec__model__format="safetensors"),
    tm("sha256-too-short", "spec.model.sha256", spec__model__sha256="abc123"),
    tm("sha256-not-hex", "spec.model.sha256", spec__model__sha256="g" * 64),
    tm(
        "credentials-bad-name",
        "spec.model.credentialsSecretRef.name",
        spec__model__credentialsSecretRef={"name": "S3_Creds"},
    ),
    # --- runtime ---------------------------------------------------------------------------------
    tm("workers-zero", "spec.runtime.workers", spec__runtime={"workers": 0}),
    tm("workers-string", "spec.runtime.workers", spec__runtime={"workers": "2"}),
    tm("batch-size-zero", "spec.runtime.batchSize", spec__runtime={"batchSize": 0}),
    tm(
        "batch-delay-negative",
        "spec.runtime.maxBatchDelayMs",
        spec__runtime={"maxBatchDelayMs": -1},
    ),
    tm("precision-unknown", "spec.runtime.precision", spec__runtime={"precision": "fp8"}),
    tm(
        "flash-attention-fp32",
        "spec.runtime.attention",
        spec__runtime={"attention": "flash_attention_2"},
        spec__resources={"limits": {"nvidia.com/gpu": 1}},
    ),
    tm("flash-attention-without-gpu", "spec.runtime.attention", spec__runtime=_GPU_BF16),
    tm(
        "timeout-zero",
        "spec.runtime.responseTimeoutSeconds",
        spec__runtime={"responseTimeoutSeconds": 0},
    ),
    # --- resources / scaling / monitoring --------------------------------------------------------
    tm("quantity-bad", "spec.resources.limits", spec__resources={"limits": {"memory": "2 GB"}}),
    tm(
        "min-above-max",
        "spec.scaling.minReplicas",
        spec__scaling={"minReplicas": 5, "maxReplicas": 2},
    ),
    tm("max-zero", "spec.scaling.maxReplicas", spec__scaling={"minReplicas": 0, "maxReplicas": 0}),
    tm("min-negative", "spec.scaling.minReplicas", spec__scaling={"minReplicas": -1}),
    tm("scaling-unknown-field", "spec.scaling.maxReplica", spec__scaling={"maxReplica": 3}),
    tm(
        "memory-utilization-zero",
        "spec.monitoring.memoryUtilization",
        spec__monitoring={"memoryUtilization": 0},
    ),
    tm(
        "memory-utilization-above-one",
        "spec.monitoring.memoryUtilization",
        spec__monitoring={"memoryUtilization": 1.5},
    ),
    tm("error-rate-negative", "spec.monitoring.errorRate", spec__monitoring={"errorRate": -0.1}),
    # --- auth / route ----------------------------------------------------------------------------
    tm(
        "auth-without-secret-name",
        "spec.auth.tokenSecretRef.name",
        spec__auth={"tokenSecretRef": {}},
    ),
    tm("route-no-parents", "spec.route.parentRefs", spec__route={"parentRefs": []}),
    tm(
        "route-bad-hostname",
        "spec.route.hostnames[0]",
        spec__route={"parentRefs": [{"name": "gw"}], "hostnames": ["Triage.Example.com"]},
    ),
    tm(
        "route-hostname-repeated",
        "spec.route.hostnames",
        spec__route={"parentRefs": [{"name": "gw"}], "hostnames": ["a.example.com"] * 2},
    ),
    # --- Rollout ---------------------------------------------------------------------------------
    ro("rollout-name-too-long", "metadata.name", metadata={"name": "r" * 46}),
    ro("target-missing-name", "spec.targetRef.name", spec__targetRef={}),
    ro("strategy-missing", "spec.strategy", spec__strategy=_DELETE),
    ro("steps-empty", "spec.strategy.canary.steps", spec__strategy={"canary": {"steps": []}}),
    ro(
        "weight-above-100",
        "spec.strategy.canary.steps[0].setWeight",
        spec__strategy={"canary": {"steps": [{"setWeight": 150}]}},
    ),
    ro(
        "weight-negative",
        "spec.strategy.canary.steps[0].setWeight",
        spec__strategy={"canary": {"steps": [{"setWeight": -5}]}},
    ),
    ro(
        "weights-decreasing",
        "spec.strategy.canary.steps",
        spec__strategy={"canary": {"steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 20}]}},
    ),
    ro(
        "step-weight-and-pause",
        "spec.strategy.canary.steps[0]",
        spec__strategy={"canary": {"steps": [{"setWeight": 10, "pause": {}}]}},
    ),
    ro("step-empty", "spec.strategy.canary.steps[0]", spec__strategy={"canary": {"steps": [{}]}}),
    ro(
        "pause-duration-words",
        "spec.strategy.canary.steps[1].pause.duration",
        spec__strategy={
            "canary": {"steps": [{"setWeight": 5}, {"pause": {"duration": "5 minutes"}}]}
        },
    ),
    ro(
        "pause-duration-days",
        "spec.strategy.canary.steps[0].pause.duration",
        spec__strategy={"canary": {"steps": [{"pause": {"duration": "1d"}}]}},
    ),
    ro("interval-zero", "spec.analysis.interval", spec__analysis__interval="0s"),
    ro("on-error-unknown", "spec.analysis.onError", spec__analysis__onError="ignore"),
    ro("judge-unknown", "spec.analysis.judge", spec__analysis__judge="tTest"),
    ro("failure-limit-negative", "spec.analysis.failureLimit", spec__analysis__failureLimit=-1),
    ro(
        "metric-builtin-and-query",
        "spec.analysis.metrics[0]",
        spec__analysis__metrics=[{"name": "x", "builtin": "errorRate", "query": "up", "max": 1}],
    ),
    ro(
        "metric-neither-builtin-nor-query",
        "spec.analysis.metrics[0]",
        spec__analysis__metrics=[{"name": "x", "max": 1}],
    ),
    ro(
        "metric-builtin-unknown",
        "spec.analysis.metrics[0].builtin",
        spec__analysis__metrics=[{"name": "x", "builtin": "p99", "max": 1}],
    ),
    ro(
        "metric-min-above-max",
        "spec.analysis.metrics[0].min",
        spec__analysis__metrics=[{"name": "x", "builtin": "errorRate", "min": 2, "max": 1}],
    ),
    ro(
        "threshold-metric-without-bounds",
        "spec.analysis.metrics",
        spec__analysis__metrics=[{"name": "x", "builtin": "errorRate"}],
    ),
    ro(
        "mannwhitney-compared-gate-with-max",
        "spec.analysis.metrics",
        spec__analysis__judge="mannWhitney",
    ),
    ro(
        "mannwhitney-memory-without-bounds",
        "spec.analysis.metrics",
        spec__analysis__judge="mannWhitney",
        spec__analysis__metrics=[{"name": "mem", "builtin": "memoryUtilization"}],
    ),
    ro("tolerance-negative", "spec.analysis.tolerance", spec__analysis__tolerance=-0.1),
    ro("significance-zero", "spec.analysis.significance", spec__analysis__significance=0),
    ro(
        "metric-names-duplicate",
        "spec.analysis.metrics",
        spec__analysis__metrics=[
            {"name": "x", "builtin": "errorRate", "max": 1},
            {"name": "x", "builtin": "latencyP99", "max": 1},
        ],
    ),
    ro("alert-bad-name", "spec.analysis.alerts[0]", spec__analysis__alerts=["high-latency"]),
    ro("alerts-repeated", "spec.analysis.alerts", spec__analysis__alerts=["TMOHighLatency"] * 2),
    ro("router-unknown", "spec.traffic.router", spec__traffic={"router": "istio"}),
    ro("paused-not-boolean", "spec.paused", spec__paused="yes"),
]
