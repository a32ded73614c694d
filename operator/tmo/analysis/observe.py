"""The I/O half of an analysis run: every query it needs, at once, turned into plain data.

Nothing here judges: a failed query becomes a Reading with an error, so evaluate.py decides
from plain data (and is tested with plain data).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from tmo.analysis.context import AnalysisContext
from tmo.analysis.prometheus import PrometheusClient, PrometheusError, Sample
from tmo.analysis.queries import alert_query, builtin_query, render_query, requests_query
from tmo.api.rollout import Analysis, Metric

# Label sets quoted when a query returns several series: enough to see what came back.
_SHOWN_SERIES = 3


@dataclass(frozen=True)
class Reading:
    """One number from Prometheus: a value (may be NaN or ±Inf), no data (value and error both
    None), or an error message."""

    value: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class MetricReading:
    metric: Metric
    canary: Reading
    stable: Reading | None = None
    """Built-ins only: the same query for the stable revision."""


@dataclass(frozen=True)
class AlertReading:
    alert: str
    firing: int | None = None
    """Firing series of this alert for the canary; None with an error."""
    error: str | None = None


@dataclass(frozen=True)
class Observations:
    window: str
    """The PromQL range every rate() and increase() used, e.g. "30s"."""
    requests: Reading
    """Canary requests in the window (no data: no series, i.e. no request yet)."""
    metrics: list[MetricReading]
    alerts: list[AlertReading]


def _labels(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def one_number(samples: Sequence[Sample], empty_is_error: bool) -> Reading:
    """The single number a metric query must return, or what came back instead."""
    if len(samples) == 1:
        return Reading(value=samples[0][1])
    if not samples:
        return Reading(error="query returned no data") if empty_is_error else Reading()
    shown = ", ".join(_labels(labels) for labels, _ in samples[:_SHOWN_SERIES])
    more = ", ..." if len(samples) > _SHOWN_SERIES else ""
    return Reading(
        error=f"query returned {len(samples)} series, expected one number: {shown}{more}"
    )


async def _read(prom: PrometheusClient, promql: str, empty_is_error: bool) -> Reading:
    try:
        return one_number(await prom.query(promql), empty_is_error)
    except PrometheusError as exc:
        return Reading(error=str(exc))


async def _metric(
    prom: PrometheusClient, metric: Metric, ctx: AnalysisContext, window: str
) -> MetricReading:
    if metric.builtin is not None:
        # No series for a built-in means no traffic or no scrape yet: no data, not an error.
        canary, stable = await asyncio.gather(
            _read(prom, builtin_query(metric.builtin, ctx, ctx.canary, window), False),
            _read(prom, builtin_query(metric.builtin, ctx, ctx.stable, window), False),
        )
        return MetricReading(metric, canary, stable)
    try:
        promql = render_query(metric.query or "", ctx, window)
    except ValueError as exc:
        return MetricReading(metric, Reading(error=str(exc)))
    # A user's query must return one number: no data is a broken query, never a pass.
    return MetricReading(metric, await _read(prom, promql, True))


async def _alert(prom: PrometheusClient, alert: str, ctx: AnalysisContext) -> AlertReading:
    try:
        return AlertReading(alert, firing=len(await prom.query(alert_query(alert, ctx))))
    except PrometheusError as exc:
        return AlertReading(alert, error=str(exc))


async def observe(
    analysis: Analysis,
    metrics: Sequence[Metric],
    ctx: AnalysisContext,
    prom: PrometheusClient,
    window: str,
) -> Observations:
    """Run every query of one analysis run concurrently: a slow or unreachable Prometheus costs
    one timeout per run, not one per query."""
    requests, readings, alerts = await asyncio.gather(
        _read(prom, requests_query(ctx, ctx.canary, window), False),
        asyncio.gather(*(_metric(prom, m, ctx, window) for m in metrics)),
        asyncio.gather(*(_alert(prom, a, ctx) for a in analysis.alerts)),
    )
    return Observations(window, requests, list(readings), list(alerts))
