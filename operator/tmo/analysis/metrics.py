"""Which metrics gate a canary, and how their values read to people."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

from tmo.api.rollout import Analysis, BuiltinMetric, Metric

# Metrics computed from requests: with too little traffic they say nothing, so below
# minRequests they are Inconclusive, never Failed. Memory, queries and alerts are judged anyway.
REQUEST_BASED: Final = frozenset({"latencyP50", "latencyP95", "latencyP99", "errorRate"})

# Default gates, from the target's spec.monitoring: (metric name = builtin, monitoring key).
_DEFAULTS: Final[tuple[tuple[BuiltinMetric, str], ...]] = (
    ("latencyP99", "latencyP99Ms"),
    ("memoryUtilization", "memoryUtilization"),
    ("errorRate", "errorRate"),
)


# The quantile each latency built-in reads from the request-duration histogram.
QUANTILES: Final[dict[str, float]] = {"latencyP50": 0.5, "latencyP95": 0.95, "latencyP99": 0.99}


def effective_metrics(analysis: Analysis, monitoring: Mapping[str, float]) -> list[Metric]:
    """The Rollout's metrics, or when it lists none the target's monitoring thresholds as max
    gates named latencyP99, memoryUtilization and errorRate (keys missing from `monitoring` are
    left out). With judge mannWhitney, latencyP99 and errorRate are compared with stable and
    always gate (no max: the comparison replaces it); memoryUtilization keeps its max."""
    if analysis.metrics:
        return list(analysis.metrics)
    compare = analysis.judge == "mannWhitney"
    # model_construct: the default names are the built-ins' camelCase names (what people see in
    # status and alerts), which the user-facing name pattern (lowercase, '-') would refuse.
    return [
        Metric.model_construct(name=name, builtin=name)
        if compare and name in REQUEST_BASED
        else Metric.model_construct(name=name, builtin=name, max=float(monitoring[key]))
        for name, key in _DEFAULTS
        if key in monitoring or (compare and name in REQUEST_BASED)
    ]


def is_request_based(metric: Metric) -> bool:
    return metric.builtin in REQUEST_BASED


def compared_with_stable(metric: Metric) -> bool:
    """Whether the mannWhitney judge compares this gate's requests with stable's (latencies and
    errors); memory and PromQL gates are judged against their max/min by every judge."""
    return metric.builtin in REQUEST_BASED


def unit_of(metric: Metric) -> str:
    """The unit a metric's values are in, for messages ("" when it is a plain number)."""
    return "ms" if metric.builtin in ("latencyP50", "latencyP95", "latencyP99") else ""


def format_number(value: float) -> str:
    """A value as people read it: 812, 812.3, 0.95, 0.00512, inf."""
    if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if math.isfinite(value) and abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4g}"


def format_value(metric: Metric, value: float) -> str:
    """A value with the metric's unit: "812 ms", "0.95"."""
    unit = unit_of(metric)
    return f"{format_number(value)} {unit}" if unit else format_number(value)
