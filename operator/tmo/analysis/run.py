"""One analysis run of a canary: query Prometheus, judge, summarise."""

from __future__ import annotations

from tmo.analysis.context import AnalysisContext
from tmo.analysis.evaluate import AnalysisRun, evaluate
from tmo.analysis.judges import judge_for
from tmo.analysis.metrics import compared_with_stable, effective_metrics
from tmo.analysis.observe import observe
from tmo.analysis.prometheus import PrometheusClient
from tmo.analysis.queries import comparison_window, window_for
from tmo.api.rollout import Analysis


async def run_analysis(
    analysis: Analysis, ctx: AnalysisContext, prom: PrometheusClient, now: str
) -> AnalysisRun:
    """Measure every gate of `analysis` for the canary of `ctx` over the last window.

    Prometheus trouble never raises: it becomes Error measurements. A judge this operator does
    not have raises UnsupportedJudge before any query (the operator reports it as Stalled).
    `now` (RFC 3339) is the measurements' time.
    """
    metrics = effective_metrics(analysis, ctx.monitoring)
    compare = analysis.judge == "mannWhitney"
    compared = sum(compared_with_stable(m) for m in metrics)
    judge = judge_for(analysis, ctx.look, compared)
    window = comparison_window(ctx.canary_age_seconds) if compare else window_for(analysis)
    observations = await observe(analysis, metrics, ctx, prom, window, compare)
    return evaluate(analysis, ctx, observations, judge, now)
