"""The pure half of an analysis run: observations + judge -> measurements, verdict, summary."""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from tmo.analysis.context import AnalysisContext
from tmo.analysis.judges import Judge
from tmo.analysis.metrics import is_request_based
from tmo.analysis.observe import AlertReading, MetricReading, Observations
from tmo.api.rollout import Analysis, Measurement, Verdict

# Limits of the status fields (api/rollout.py: Measurement.metric and .message).
MAX_MESSAGE: Final = 1024
MAX_METRIC_NAME: Final = 63

# The worst verdict wins: one failed gate fails the run whatever else errored.
_SEVERITY: Final[dict[Verdict, int]] = {"Passed": 0, "Inconclusive": 1, "Error": 2, "Failed": 3}


@dataclass(frozen=True)
class AnalysisRun:
    """One analysis run, as the operator records it in status.analysis and its Events."""

    verdict: Verdict
    """Failed if any check failed; else Error if any errored; else Inconclusive if any was;
    else Passed."""
    requests: int | None
    """Canary requests in the window (None: they could not be counted)."""
    measurements: list[Measurement]
    """One per metric, then one per alert ("alert:NAME")."""
    summary: str
    """One line for people: what failed with value and threshold, why no verdict, the error."""


def overall_verdict(verdicts: Iterable[Verdict]) -> Verdict:
    """Failed > Error > Inconclusive > Passed; no checks at all pass."""
    return max(verdicts, key=_SEVERITY.__getitem__, default="Passed")


def clip(text: str, limit: int = MAX_MESSAGE) -> str:
    """One line of at most `limit` characters (Prometheus errors can be long and multi-line)."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _finite(value: float | None) -> float | None:
    # Status is JSON: NaN and ±Inf cannot go there. The message keeps what was seen.
    return value if value is not None and math.isfinite(value) else None


@dataclass(frozen=True)
class _Check:
    measurement: Measurement
    # How the summary names this check's outcome: "latencyP99 812 ms > max 250 ms".
    said: str


def _requests(observations: Observations) -> tuple[int | None, str | None]:
    reading = observations.requests
    if reading.error is not None:
        return None, reading.error
    if reading.value is None:  # no series: nothing was ever answered
        return 0, None
    if not math.isfinite(reading.value):
        return None, f"the request count is {reading.value}"
    return round(reading.value), None


def _too_few(requests: int, analysis: Analysis, window: str) -> str:
    return (
        f"{requests} canary requests in the last {window}, "
        f"fewer than minRequests {analysis.min_requests}"
    )


def _metric_check(
    reading: MetricReading,
    analysis: Analysis,
    ctx: AnalysisContext,
    observations: Observations,
    judge: Judge,
    now: str,
) -> _Check:
    metric, canary = reading.metric, reading.canary
    requests, requests_error = _requests(observations)
    window = observations.window
    gated = is_request_based(metric) and analysis.min_requests > 0
    verdict: Verdict
    if canary.error is not None:
        verdict, message = "Error", canary.error
    elif gated and requests is None:
        verdict, message = "Error", f"could not count canary requests: {requests_error}"
    elif gated and requests is not None and requests < analysis.min_requests:
        # Too little traffic says nothing about the canary: no verdict, never a failure.
        verdict, message = "Inconclusive", _too_few(requests, analysis, window)
    elif canary.value is None:
        verdict, message = "Inconclusive", f"no data for revision {ctx.canary} in the last {window}"
    else:
        verdict, message = judge.judge(metric, reading)
    stable_value = (
        _finite(reading.stable.value)
        if reading.stable is not None and reading.stable.error is None
        else None
    )
    measurement = Measurement(
        metric=clip(metric.name, MAX_METRIC_NAME),
        time=now,
        verdict=verdict,
        value=_finite(canary.value),
        stable_value=stable_value,
        requests=requests,
        message=clip(message),
    )
    return _Check(measurement, clip(f"{metric.name} {message}"))


def _alert_check(
    reading: AlertReading, ctx: AnalysisContext, requests: int | None, now: str
) -> _Check:
    verdict: Verdict
    if reading.error is not None or reading.firing is None:
        verdict, message = "Error", reading.error or "no answer"
    elif reading.firing > 0:
        verdict, message = "Failed", f"alert {reading.alert} firing for revision {ctx.canary}"
    else:
        verdict, message = "Passed", f"alert {reading.alert} not firing for revision {ctx.canary}"
    measurement = Measurement(
        # Alert names may be longer than the field allows; the message keeps the whole name.
        metric=clip(f"alert:{reading.alert}", MAX_METRIC_NAME),
        time=now,
        verdict=verdict,
        value=float(reading.firing) if reading.firing is not None else None,
        requests=requests,
        message=clip(message),
    )
    return _Check(measurement, clip(message))


def _summary(
    verdict: Verdict, checks: list[_Check], requests: int | None, analysis: Analysis, window: str
) -> str:
    mine = [c for c in checks if c.measurement.verdict == verdict]
    if verdict == "Failed":
        return "; ".join(c.said for c in mine)
    if verdict == "Passed":
        counted = f"{requests} canary requests" if requests is not None else "requests unknown"
        if not checks:
            return f"no metrics or alerts to check ({counted} in the last {window})"
        return f"{len(checks)} checks passed ({counted} in the last {window})"
    # Error and Inconclusive: the same cause (Prometheus down, too few requests) usually
    # touches many checks; say it once, naming the checks only when it is not all of them.
    by_message: dict[str, list[str]] = {}
    for c in mine:
        by_message.setdefault(c.measurement.message, []).append(c.measurement.metric)
    too_few = _too_few(requests, analysis, window) if requests is not None else None
    parts = []
    for message, names in by_message.items():
        if message == too_few or len(names) == len(checks):
            parts.append(message)
        else:
            parts.append(f"{', '.join(names)}: {message}")
    return "; ".join(parts)


def evaluate(
    analysis: Analysis,
    ctx: AnalysisContext,
    observations: Observations,
    judge: Judge,
    now: str,
) -> AnalysisRun:
    """Measurements (time `now`), the run's verdict and its summary, from plain data."""
    requests, _ = _requests(observations)
    checks = [
        *(_metric_check(r, analysis, ctx, observations, judge, now) for r in observations.metrics),
        *(_alert_check(r, ctx, requests, now) for r in observations.alerts),
    ]
    measurements = [c.measurement for c in checks]
    verdict = overall_verdict(m.verdict for m in measurements)
    summary = _summary(verdict, checks, requests, analysis, observations.window)
    if (
        verdict == "Passed"
        and analysis.min_requests > 0
        and (requests is None or requests < analysis.min_requests)
    ):
        # Memory, queries and alerts may fail a canary without traffic, but never pass one:
        # a canary that has not served minRequests is not proven (no promotion on no evidence).
        verdict = "Inconclusive"
        counted = f"{requests}" if requests is not None else "an unknown number of"
        summary = (
            f"checks passed, but {counted} canary requests in the last {observations.window}, "
            f"fewer than minRequests {analysis.min_requests}"
        )
    return AnalysisRun(verdict, requests, measurements, clip(summary))
