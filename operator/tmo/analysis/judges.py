"""How a measured value becomes a verdict. `threshold` now; `mannWhitney` (canary against
stable samples) plugs in behind the same Judge interface later."""

from __future__ import annotations

import math
from typing import Protocol

from tmo.analysis.metrics import format_value
from tmo.api.rollout import Analysis, Metric, Verdict


class UnsupportedJudge(ValueError):
    """The Rollout asks for a judge this operator does not have (the operator reports it as
    Stalled rather than judging with another one and calling that the verdict)."""


class Judge(Protocol):
    def judge(
        self, metric: Metric, canary: float | None, stable: float | None
    ) -> tuple[Verdict, str]:
        """The verdict on the canary's value (None: no value), with a message for people.
        `stable` is the stable revision's value where there is one."""
        ...


class ThresholdJudge:
    """The canary's value against the metric's max and min; equal to a bound passes."""

    def judge(
        self, metric: Metric, canary: float | None, stable: float | None
    ) -> tuple[Verdict, str]:
        if canary is None or math.isnan(canary):
            return "Inconclusive", "no value for the canary in the window"
        shown = format_value(metric, canary)
        if metric.max is not None and canary > metric.max:
            return "Failed", f"{shown} > max {format_value(metric, metric.max)}"
        if metric.min is not None and canary < metric.min:
            return "Failed", f"{shown} < min {format_value(metric, metric.min)}"
        bounds = [
            *([f">= min {format_value(metric, metric.min)}"] if metric.min is not None else []),
            *([f"<= max {format_value(metric, metric.max)}"] if metric.max is not None else []),
        ]
        return "Passed", f"{shown} " + (" and ".join(bounds) if bounds else "(no max or min set)")


def judge_for(analysis: Analysis) -> Judge:
    """The judge the Rollout asks for. Raises UnsupportedJudge for one not built yet."""
    if analysis.judge == "threshold":
        return ThresholdJudge()
    raise UnsupportedJudge(f"judge {analysis.judge} is not available yet; use threshold")
