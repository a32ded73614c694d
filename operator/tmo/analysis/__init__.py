"""Prometheus-gated analysis of a Rollout's canary (DESIGN §2, issue 8).

The operator calls `run_analysis` every `analysis.interval` while a canary is live; the pure
parts (query builders, judges, evaluate) are usable and tested on their own.
"""

from tmo.analysis.context import AnalysisContext
from tmo.analysis.evaluate import AnalysisRun, evaluate, overall_verdict
from tmo.analysis.judges import (
    Judge,
    MannWhitneyJudge,
    ThresholdJudge,
    UnsupportedJudge,
    judge_for,
)
from tmo.analysis.metrics import effective_metrics
from tmo.analysis.observe import Observations, observe
from tmo.analysis.prometheus import PrometheusClient, PrometheusError
from tmo.analysis.queries import (
    MIN_WINDOW_SECONDS,
    SCRAPE_INTERVAL_SECONDS,
    alert_query,
    builtin_query,
    render_query,
    requests_query,
    window_for,
)
from tmo.analysis.run import run_analysis

__all__ = [
    "MIN_WINDOW_SECONDS",
    "SCRAPE_INTERVAL_SECONDS",
    "AnalysisContext",
    "AnalysisRun",
    "Judge",
    "MannWhitneyJudge",
    "Observations",
    "PrometheusClient",
    "PrometheusError",
    "ThresholdJudge",
    "UnsupportedJudge",
    "alert_query",
    "builtin_query",
    "effective_metrics",
    "evaluate",
    "judge_for",
    "observe",
    "overall_verdict",
    "render_query",
    "requests_query",
    "run_analysis",
    "window_for",
]
