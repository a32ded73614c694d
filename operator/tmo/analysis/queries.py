"""PromQL for the analysis: built-in metrics, request counts, alerts, and user templates.

Every series comes from the gateway (runtimes/tmo_runtime/gateway/metrics.py), labelled
`model`, `revision` (and `code`, `container`) by the gateway and `namespace`, `pod` by the
ServiceMonitor's target labels. Label values are always quoted with `promql_string`.
"""

from __future__ import annotations

import math
import re
from typing import Final

from tmo.analysis.context import AnalysisContext
from tmo.api.common import parse_duration
from tmo.api.rollout import Analysis

# The ServiceMonitor's scrape interval (render/monitoring.py: endpoints[].interval = 15s).
# rate() and increase() need at least two samples in their range, so the window never goes
# below two scrapes: a shorter analysis interval still runs that often, over a 30s window.
SCRAPE_INTERVAL_SECONDS: Final = 15
MIN_WINDOW_SECONDS: Final = 2 * SCRAPE_INTERVAL_SECONDS

# The gateway sidecar's own memory is not the model's: memory gates judge every other container
# (`torchserve` in a pod, `tmo-serve` under `tmo serve`).
SIDECAR_CONTAINER: Final = "gateway"

_QUANTILES: Final = {"latencyP50": 0.5, "latencyP95": 0.95, "latencyP99": 0.99}
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal holding `value` exactly."""
    escaped = (
        value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    )
    return f'"{escaped}"'


def _escape_inside_quotes(value: str) -> str:
    return promql_string(value)[1:-1]


def window_for(analysis: Analysis) -> str:
    """The range of rate()/increase(): the analysis interval, at least MIN_WINDOW_SECONDS,
    rounded up to whole seconds ("30s")."""
    seconds = parse_duration(analysis.interval).total_seconds()
    return f"{max(math.ceil(seconds), MIN_WINDOW_SECONDS)}s"


def selector(ctx: AnalysisContext, revision: str, *matchers: str) -> str:
    """`{namespace="..",model="..",revision=".."}` plus extra matchers."""
    labels = [
        f"namespace={promql_string(ctx.namespace)}",
        f"model={promql_string(ctx.model)}",
        f"revision={promql_string(revision)}",
        *matchers,
    ]
    return "{" + ",".join(labels) + "}"


def builtin_query(builtin: str, ctx: AnalysisContext, revision: str, window: str) -> str:
    """PromQL for a built-in metric of one revision; one number (or nothing without series)."""
    if builtin in _QUANTILES:
        # Milliseconds, like the spec's latencyP99Ms and the thresholds users write.
        return (
            f"histogram_quantile({_QUANTILES[builtin]}, sum by (le) ("
            f"rate(tmo_request_duration_seconds_bucket{selector(ctx, revision)}[{window}])"
            ")) * 1000"
        )
    if builtin == "errorRate":
        # Only 5xx are errors: a client's mistake (4xx, 429) is never the canary's fault. A
        # revision that never failed has no 5xx series at all, hence `or vector(0)`; no traffic
        # at all leaves 0/0 = NaN (Inconclusive) or no series.
        errors = selector(ctx, revision, 'code=~"5.."')
        every = selector(ctx, revision)
        return (
            f"(sum(rate(tmo_requests_total{errors}[{window}])) or vector(0))"
            f" / sum(rate(tmo_requests_total{every}[{window}]))"
        )
    if builtin == "memoryUtilization":
        # Per pod and container, then the worst one. An unlimited container reports a +Inf
        # limit: usage / +Inf = 0, not NaN.
        model = selector(ctx, revision, f"container!={promql_string(SIDECAR_CONTAINER)}")
        return f"max(tmo_memory_usage_bytes{model} / tmo_memory_limit_bytes{model})"
    raise ValueError(f"unknown builtin metric {builtin!r}")


def comparison_window(canary_age_seconds: float) -> str:
    """The range the mannWhitney judge compares over: the canary's whole life (every request
    since it started), at least MIN_WINDOW_SECONDS, in whole seconds."""
    return f"{max(math.ceil(canary_age_seconds), MIN_WINDOW_SECONDS)}s"


def buckets_query(ctx: AnalysisContext, revision: str, window: str) -> str:
    """Requests per latency bucket (cumulative by `le`) the revision answered in the window."""
    return (
        "sum by (le) ("
        f"increase(tmo_request_duration_seconds_bucket{selector(ctx, revision)}[{window}]))"
    )


def mean_query(ctx: AnalysisContext, revision: str, window: str) -> str:
    """The revision's exact mean request duration (seconds) in the window, from the
    histogram's _sum and _count; NaN or no series without requests."""
    sel = selector(ctx, revision)
    return (
        f"sum(increase(tmo_request_duration_seconds_sum{sel}[{window}]))"
        f" / sum(increase(tmo_request_duration_seconds_count{sel}[{window}]))"
    )


def errors_query(ctx: AnalysisContext, revision: str, window: str) -> str:
    """5xx answers of the revision in the window (no series: none)."""
    errors = selector(ctx, revision, 'code=~"5.."')
    return f"sum(increase(tmo_requests_total{errors}[{window}]))"


def requests_query(ctx: AnalysisContext, revision: str, window: str) -> str:
    """Requests the revision answered in the window (every code)."""
    return f"sum(increase(tmo_requests_total{selector(ctx, revision)}[{window}]))"


def alert_query(alert: str, ctx: AnalysisContext) -> str:
    """Firing instances of `alert` for the canary; pending ones are not firing yet."""
    labels = ",".join(
        [
            f"alertname={promql_string(alert)}",
            'alertstate="firing"',
            f"namespace={promql_string(ctx.namespace)}",
            f"model={promql_string(ctx.model)}",
            f"revision={promql_string(ctx.canary)}",
        ]
    )
    return f"ALERTS{{{labels}}}"


def render_query(template: str, ctx: AnalysisContext, window: str) -> str:
    """A user's PromQL with {{canary}}, {{stable}}, {{revision}} (the canary), {{namespace}},
    {{model}} and {{interval}} (the window) substituted; spaces inside the braces are allowed.

    Values are escaped for a double-quoted PromQL string, where templates put them
    (`revision="{{canary}}"`). An unknown placeholder raises ValueError naming it.
    """
    values = {
        "canary": ctx.canary,
        "stable": ctx.stable,
        "revision": ctx.canary,
        "namespace": ctx.namespace,
        "model": ctx.model,
        "interval": window,
    }

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            known = ", ".join("{{" + k + "}}" for k in values)
            raise ValueError(f"unknown placeholder {{{{{name}}}}} in query (known: {known})")
        return _escape_inside_quotes(values[name])

    return _PLACEHOLDER.sub(substitute, template)
