"""The I/O half of an analysis run: every query it needs, at once, turned into plain data.

Nothing here judges: a failed query becomes a Reading with an error, so evaluate.py decides
from plain data (and is tested with plain data).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from tmo.analysis.context import AnalysisContext
from tmo.analysis.metrics import QUANTILES, compared_with_stable
from tmo.analysis.prometheus import PrometheusClient, PrometheusError, Sample
from tmo.analysis.queries import (
    alert_query,
    buckets_query,
    builtin_query,
    errors_query,
    mean_query,
    render_query,
    requests_query,
)
from tmo.analysis.samples import BadCounts, Binned, from_buckets, outcomes
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
class SampleReading:
    """Both revisions' requests over the same window, for the mannWhitney judge: latency
    buckets, or outcomes (answered, 5xx). Empty samples with an error when Prometheus failed."""

    canary: Binned
    stable: Binned
    error: str | None = None


@dataclass(frozen=True)
class MetricReading:
    metric: Metric
    canary: Reading
    stable: Reading | None = None
    """Built-ins only: the same query for the stable revision."""
    samples: SampleReading | None = None
    """Compared built-ins under mannWhitney: the requests behind `canary` and `stable`."""


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


_EMPTY = Binned((), ())


@dataclass(frozen=True)
class _Requests:
    """What one comparison run fetched once for every compared gate."""

    latency: SampleReading
    outcomes: SampleReading


async def _latency(prom: PrometheusClient, ctx: AnalysisContext, window: str) -> SampleReading:
    try:
        canary, stable, c_mean, s_mean = await asyncio.gather(
            prom.query(buckets_query(ctx, ctx.canary, window)),
            prom.query(buckets_query(ctx, ctx.stable, window)),
            prom.query(mean_query(ctx, ctx.canary, window)),
            prom.query(mean_query(ctx, ctx.stable, window)),
        )
        return SampleReading(
            from_buckets(((labels.get("le", ""), v) for labels, v in canary), _one(c_mean)),
            from_buckets(((labels.get("le", ""), v) for labels, v in stable), _one(s_mean)),
        )
    except (PrometheusError, BadCounts) as exc:
        return SampleReading(_EMPTY, _EMPTY, str(exc))


def _one(samples: Sequence[Sample]) -> float | None:
    return samples[0][1] if len(samples) == 1 else None


def _total(samples: Sequence[Sample]) -> float:
    # One series from sum(), none when nothing matched (no request, or no 5xx).
    return samples[0][1] if samples else 0.0


async def _outcomes(prom: PrometheusClient, ctx: AnalysisContext, window: str) -> SampleReading:
    try:
        c_all, c_bad, s_all, s_bad = await asyncio.gather(
            prom.query(requests_query(ctx, ctx.canary, window)),
            prom.query(errors_query(ctx, ctx.canary, window)),
            prom.query(requests_query(ctx, ctx.stable, window)),
            prom.query(errors_query(ctx, ctx.stable, window)),
        )
        return SampleReading(
            outcomes(_total(c_all), _total(c_bad)), outcomes(_total(s_all), _total(s_bad))
        )
    except (PrometheusError, BadCounts) as exc:
        return SampleReading(_EMPTY, _EMPTY, str(exc))


def _figure(metric: Metric, sample: Binned) -> Reading:
    """The gate's own figure from a sample: the quantile in ms, or the error rate."""
    if metric.builtin in QUANTILES:
        q = sample.quantile(QUANTILES[metric.builtin])
        return Reading(value=q * 1000 if q is not None else None)
    return Reading(value=sample.share_of_last())


def compared_reading(metric: Metric, samples: SampleReading) -> MetricReading:
    """A compared gate's reading: figures computed from the samples, so the value shown and the
    test judge the same requests."""
    if samples.error is not None:
        return MetricReading(metric, Reading(error=samples.error), None, samples)
    return MetricReading(
        metric, _figure(metric, samples.canary), _figure(metric, samples.stable), samples
    )


async def _compared(
    prom: PrometheusClient, metrics: Sequence[Metric], ctx: AnalysisContext, window: str
) -> _Requests | None:
    wanted = [m for m in metrics if compared_with_stable(m)]
    if not wanted:
        return None
    latency, answered = await asyncio.gather(
        _latency(prom, ctx, window) if any(m.builtin in QUANTILES for m in wanted) else _nothing(),
        _outcomes(prom, ctx, window)
        if any(m.builtin == "errorRate" for m in wanted)
        else _nothing(),
    )
    return _Requests(latency, answered)


async def _nothing() -> SampleReading:
    return SampleReading(_EMPTY, _EMPTY)


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
    compare: bool = False,
) -> Observations:
    """Run every query of one analysis run concurrently: a slow or unreachable Prometheus costs
    one timeout per run, not one per query.

    With `compare` (the mannWhitney judge), latency and error gates are read as both
    revisions' requests over `window` (the canary's life) instead of one number each."""
    plain = [m for m in metrics if not (compare and compared_with_stable(m))]
    requests, readings, alerts, fetched = await asyncio.gather(
        _read(prom, requests_query(ctx, ctx.canary, window), False),
        asyncio.gather(*(_metric(prom, m, ctx, window) for m in plain)),
        asyncio.gather(*(_alert(prom, a, ctx) for a in analysis.alerts)),
        _compared(prom, metrics, ctx, window) if compare else _none(),
    )
    by_name = {r.metric.name: r for r in readings}
    ordered = []
    for m in metrics:
        if m.name in by_name:
            ordered.append(by_name[m.name])
        elif fetched is not None:
            samples = fetched.latency if m.builtin in QUANTILES else fetched.outcomes
            ordered.append(compared_reading(m, samples))
    return Observations(window, requests, ordered, list(alerts))


async def _none() -> _Requests | None:
    return None
