"""One analysis run of a canary: query Prometheus, judge, summarise."""

from __future__ import annotations

from tmo.analysis.context import AnalysisContext
from tmo.analysis.evaluate import AnalysisRun, evaluate
from tmo.analysis.judges import judge_for
from tmo.analysis.metrics import effective_metrics
from tmo.analysis.observe import observe
from tmo.analysis.prometheus import PrometheusClient
from tmo.analysis.queries import window_for
from tmo.api.rollout import Analysis


async def run_analysis(
    analysis: Analysis, ctx: AnalysisContext, prom: PrometheusClient, now: str
) -> AnalysisRun:
    """Measure every gate of `analysis` for the canary of `ctx` over the last window.

    Prometheus trouble never raises: it becomes Error measurements. A judge this operator does
    not have raises UnsupportedJudge before any query (the operator reports it as Stalled).
    `now` (RFC 3339) is the measurements' time.
    """
    judge = judge_for(analysis)
    metrics = effective_metrics(analysis, ctx.monitoring)
    observations = await observe(analysis, metrics, ctx, prom, window_for(analysis))
    return evaluate(analysis, ctx, observations, judge, now)
