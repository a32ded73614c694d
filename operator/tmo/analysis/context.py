"""What an analysis run is about: which model, which revisions, and the model's own thresholds."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class AnalysisContext:
    """The canary under analysis, as the series' labels name it.

    `namespace`, `model` and `revision` are the labels the ServiceMonitor and the gateway put on
    every tmo_* series, so these strings are label values, not Kubernetes object names.
    """

    namespace: str
    model: str
    canary: str
    """The canary revision, as in the `revision` label."""
    stable: str
    """The stable revision: built-ins are measured for it too, for comparison."""
    monitoring: Mapping[str, float]
    """The target TransformerModel's spec.monitoring (camelCase keys: latencyP99Ms,
    memoryUtilization, errorRate): the gates when the Rollout lists no metrics."""
    canary_age_seconds: float = 0.0
    """Seconds since the canary started: the mannWhitney judge compares every request since."""
    look: int = 1
    """This run's place among the canary's runs that reached a verdict (1: the first test):
    the mannWhitney judge spends its significance over the looks."""
