"""The pure parts of the analysis, with plain data: queries, templates, judges, verdicts."""

from __future__ import annotations

import math
from typing import Any

import pytest
from tmo.analysis import (
    MIN_WINDOW_SECONDS,
    SCRAPE_INTERVAL_SECONDS,
    AnalysisContext,
    ThresholdJudge,
    UnsupportedJudge,
    alert_query,
    builtin_query,
    effective_metrics,
    evaluate,
    judge_for,
    overall_verdict,
    render_query,
    requests_query,
    window_for,
)
from tmo.analysis.judges import MannWhitneyJudge
from tmo.analysis.metrics import format_number
from tmo.analysis.observe import AlertReading, MetricReading, Observations, Reading, one_number
from tmo.analysis.queries import promql_string
from tmo.api.rollout import Analysis, Metric, Verdict
from tmo.render.monitoring import render_service_monitor
from tmo.render.settings import RenderSettings

MONITORING = {"latencyP99Ms": 250.0, "memoryUtilization": 0.9, "errorRate": 0.01}
CTX = AnalysisContext("ml", "email-triage", "a1b2c3d", "7f9c2d1", MONITORING)
SEL = 'namespace="ml",model="email-triage",revision="a1b2c3d"'
NOW = "2025-01-01T00:00:00Z"


def analysis(**fields: Any) -> Analysis:
    return Analysis.model_validate(fields)


def metric(**fields: Any) -> Metric:
    return Metric.model_validate({"name": "m", **fields})


# --- queries -----------------------------------------------------------------------------------


def test_latency_is_a_quantile_in_milliseconds_over_the_window() -> None:
    assert builtin_query("latencyP99", CTX, CTX.canary, "30s") == (
        "histogram_quantile(0.99, sum by (le) "
        f"(rate(tmo_request_duration_seconds_bucket{{{SEL}}}[30s]))) * 1000"
    )
    assert builtin_query("latencyP50", CTX, CTX.canary, "1m").startswith("histogram_quantile(0.5,")
    assert "histogram_quantile(0.95," in builtin_query("latencyP95", CTX, CTX.canary, "1m")


def test_error_rate_counts_only_5xx_and_survives_a_revision_without_any() -> None:
    q = builtin_query("errorRate", CTX, CTX.canary, "30s")
    assert q == (
        f'(sum(rate(tmo_requests_total{{{SEL},code=~"5.."}}[30s])) or vector(0))'
        f" / sum(rate(tmo_requests_total{{{SEL}}}[30s]))"
    )
    assert "4.." not in q


def test_memory_leaves_out_the_gateway_sidecar() -> None:
    model = f'{{{SEL},container!="gateway"}}'
    assert builtin_query("memoryUtilization", CTX, CTX.canary, "30s") == (
        f"max(tmo_memory_usage_bytes{model} / tmo_memory_limit_bytes{model})"
    )


def test_queries_for_the_stable_revision_and_requests_and_alerts() -> None:
    stable = builtin_query("latencyP99", CTX, CTX.stable, "30s")
    assert 'revision="7f9c2d1"' in stable and CTX.canary not in stable
    assert requests_query(CTX, CTX.canary, "45s") == (
        f"sum(increase(tmo_requests_total{{{SEL}}}[45s]))"
    )
    assert alert_query("TMOHighLatency", CTX) == (
        'ALERTS{alertname="TMOHighLatency",alertstate="firing",'
        'namespace="ml",model="email-triage",revision="a1b2c3d"}'
    )
    with pytest.raises(ValueError, match="latencyP42"):
        builtin_query("latencyP42", CTX, CTX.canary, "30s")


def test_label_values_are_quoted_safely() -> None:
    assert promql_string('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'
    odd = AnalysisContext('n"s', "m\\", 'x"}[1m]) or vector(1', "s", {})
    q = requests_query(odd, odd.canary, "30s")
    assert q == (
        'sum(increase(tmo_requests_total{namespace="n\\"s",model="m\\\\",'
        'revision="x\\"}[1m]) or vector(1"}[30s]))'
    )


# --- windows -----------------------------------------------------------------------------------


def test_window_is_the_interval_but_never_below_two_scrapes() -> None:
    assert MIN_WINDOW_SECONDS == 2 * SCRAPE_INTERVAL_SECONDS
    assert window_for(analysis(interval="1s")) == f"{MIN_WINDOW_SECONDS}s"
    assert window_for(analysis()) == "30s"
    assert window_for(analysis(interval="2m")) == "120s"
    assert window_for(analysis(interval="1m30s")) == "90s"
    assert window_for(analysis(interval="45.5s")) == "46s"


def test_scrape_interval_is_the_service_monitors() -> None:
    """If the ServiceMonitor scrapes less often, windows of 2 x 15 s see one sample: no rate."""
    doc = {"metadata": {"name": "m", "namespace": "ns"}, "spec": {}}
    endpoint = render_service_monitor(doc, RenderSettings())["spec"]["endpoints"][0]
    assert endpoint["interval"] == f"{SCRAPE_INTERVAL_SECONDS}s"


# --- templates ---------------------------------------------------------------------------------


def test_templates_substitute_every_placeholder() -> None:
    template = (
        'sum(rate(x{namespace="{{namespace}}",model="{{ model }}",revision="{{canary}}"}'
        '[{{interval}}])) / sum(rate(x{revision="{{  stable}}"}[{{interval }}]))'
        ' + y{revision="{{revision}}"}'
    )
    assert render_query(template, CTX, "30s") == (
        'sum(rate(x{namespace="ml",model="email-triage",revision="a1b2c3d"}[30s]))'
        ' / sum(rate(x{revision="7f9c2d1"}[30s])) + y{revision="a1b2c3d"}'
    )


def test_templates_escape_values_and_refuse_unknown_placeholders() -> None:
    odd = AnalysisContext("ns", 'm"x', "c", "s", {})
    assert render_query('x{model="{{model}}"}', odd, "30s") == 'x{model="m\\"x"}'
    with pytest.raises(ValueError, match=r"unknown placeholder \{\{canry\}\}"):
        render_query('x{revision="{{ canry }}"}', CTX, "30s")
    with pytest.raises(ValueError, match=r"\{\{\}\}"):
        render_query("x{{}}", CTX, "30s")
    assert render_query("sum(x) > 1", CTX, "30s") == "sum(x) > 1"


# --- which metrics -----------------------------------------------------------------------------


def test_no_metrics_means_the_targets_monitoring_thresholds() -> None:
    metrics = effective_metrics(Analysis(), MONITORING)
    assert [(m.name, m.builtin, m.max, m.min, m.query) for m in metrics] == [
        ("latencyP99", "latencyP99", 250.0, None, None),
        ("memoryUtilization", "memoryUtilization", 0.9, None, None),
        ("errorRate", "errorRate", 0.01, None, None),
    ]
    assert [m.name for m in effective_metrics(Analysis(), {"errorRate": 0.5})] == ["errorRate"]


def test_listed_metrics_replace_the_defaults() -> None:
    listed = analysis(metrics=[{"name": "p95", "builtin": "latencyP95", "max": 100}])
    assert [m.name for m in effective_metrics(listed, MONITORING)] == ["p95"]


# --- judges ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bounds", "value", "verdict", "message"),
    [
        ({"max": 250}, 250.0, "Passed", "250 <= max 250"),
        ({"max": 250}, 250.5, "Failed", "250.5 > max 250"),
        ({"max": 250}, -1.0, "Passed", "-1 <= max 250"),
        ({"min": 0.5}, 0.5, "Passed", "0.5 >= min 0.5"),
        ({"min": 0.5}, 0.4999, "Failed", "0.4999 < min 0.5"),
        ({"min": 1, "max": 2}, 1.5, "Passed", "1.5 >= min 1 and <= max 2"),
        ({"min": 1, "max": 2}, 3.0, "Failed", "3 > max 2"),
        ({"max": 0.9}, math.inf, "Failed", "inf > max 0.9"),
        ({"max": 1}, math.nan, "Inconclusive", "no value for the canary in the window"),
        ({"max": 1}, None, "Inconclusive", "no value for the canary in the window"),
    ],
)
def test_threshold_judge(
    bounds: dict[str, float], value: float | None, verdict: Verdict, message: str
) -> None:
    m = metric(query="q", **bounds)
    assert ThresholdJudge().judge(m, MetricReading(m, Reading(value))) == (verdict, message)


def test_threshold_judge_speaks_milliseconds_for_latency() -> None:
    p99 = metric(builtin="latencyP99", max=250)

    def judged(canary: float) -> tuple[str, str]:
        return ThresholdJudge().judge(p99, MetricReading(p99, Reading(canary), Reading(40.0)))

    assert judged(812.0) == ("Failed", "812 ms > max 250 ms")
    assert judged(49.512) == ("Passed", "49.51 ms <= max 250 ms")


def test_judge_for() -> None:
    assert isinstance(judge_for(Analysis()), ThresholdJudge)
    judge = judge_for(analysis(judge="mannWhitney", significance=0.02, tolerance=0.2), 3, 2)
    assert isinstance(judge, MannWhitneyJudge)
    assert (judge.significance, judge.tolerance, judge.look, judge.compared) == (0.02, 0.2, 3, 2)
    assert issubclass(UnsupportedJudge, ValueError)


def test_numbers_read_well() -> None:
    assert [format_number(v) for v in (812.0, 812.34, 0.95, 0.00512, 1e-7, -3.0)] == [
        "812",
        "812.3",
        "0.95",
        "0.00512",
        "1e-07",
        "-3",
    ]


# --- verdicts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("verdicts", "overall"),
    [
        ([], "Passed"),
        (["Passed", "Passed"], "Passed"),
        (["Passed", "Inconclusive"], "Inconclusive"),
        (["Inconclusive", "Error", "Passed"], "Error"),
        (["Error", "Failed", "Inconclusive"], "Failed"),
        (["Failed"], "Failed"),
    ],
)
def test_the_worst_verdict_wins(verdicts: list[Verdict], overall: Verdict) -> None:
    assert overall_verdict(verdicts) == overall


def test_one_number() -> None:
    assert one_number([({"a": "b"}, 2.0)], True) == Reading(value=2.0)
    assert one_number([], False) == Reading()
    assert one_number([], True) == Reading(error="query returned no data")
    several = one_number([({"code": str(c)}, 1.0) for c in range(5)], False)
    assert several.error == (
        'query returned 5 series, expected one number: {code="0"}, {code="1"}, {code="2"}, ...'
    )


# --- evaluate: observations -> run ---------------------------------------------------------------


def observed(
    requests: Reading,
    canary: dict[str, Reading],
    alerts: dict[str, AlertReading] | None = None,
    stable: Reading | None = None,
) -> Observations:
    metrics = effective_metrics(Analysis(), MONITORING)
    return Observations(
        "30s",
        requests,
        [MetricReading(m, canary[m.name], stable) for m in metrics],
        list((alerts or {}).values()),
    )


def healthy(**changes: Reading) -> dict[str, Reading]:
    values = {
        "latencyP99": Reading(49.5),
        "memoryUtilization": Reading(0.6),
        "errorRate": Reading(0.0),
    }
    return {**values, **changes}


def run(obs: Observations, **fields: Any) -> Any:
    spec = analysis(alerts=[a.alert for a in obs.alerts], **fields)
    return evaluate(spec, CTX, obs, ThresholdJudge(), NOW)


def test_a_healthy_canary_passes() -> None:
    result = run(observed(Reading(512.4), healthy(), stable=Reading(48.0)))
    assert result.verdict == "Passed" and result.requests == 512
    assert result.summary == "3 checks passed (512 canary requests in the last 30s)"
    first = result.measurements[0]
    assert (first.metric, first.value, first.stable_value, first.requests, first.time) == (
        "latencyP99",
        49.5,
        48.0,
        512,
        NOW,
    )


def test_failures_name_metric_value_and_threshold() -> None:
    obs = observed(
        Reading(500),
        healthy(latencyP99=Reading(812.0), errorRate=Reading(0.02)),
        {"TMOHighLatency": AlertReading("TMOHighLatency", firing=1)},
    )
    result = run(obs)
    assert result.verdict == "Failed"
    assert result.summary == (
        "latencyP99 812 ms > max 250 ms; errorRate 0.02 > max 0.01; "
        "alert TMOHighLatency firing for revision a1b2c3d"
    )


def test_few_requests_make_request_metrics_inconclusive_not_failed() -> None:
    obs = observed(Reading(37.2), healthy(latencyP99=Reading(5000.0)))
    result = run(obs)
    assert result.verdict == "Inconclusive"
    assert result.summary == "37 canary requests in the last 30s, fewer than minRequests 100"
    assert [m.verdict for m in result.measurements] == ["Inconclusive", "Passed", "Inconclusive"]
    # The value is still recorded for people.
    assert result.measurements[0].value == 5000.0
    # minRequests 0 turns the gate off: the same run fails.
    assert run(obs, minRequests=0).verdict == "Failed"


def test_no_series_at_all_is_zero_requests() -> None:
    result = run(observed(Reading(), healthy(latencyP99=Reading(), errorRate=Reading())))
    assert result.requests == 0 and result.verdict == "Inconclusive"


def test_without_enough_traffic_nothing_passes_even_if_every_check_does() -> None:
    obs = observed(Reading(3), healthy())
    obs = Observations(obs.window, obs.requests, [obs.metrics[1]], [])  # memory only: judged
    result = run(obs)
    assert [m.verdict for m in result.measurements] == ["Passed"]
    assert result.verdict == "Inconclusive"
    assert result.summary == (
        "checks passed, but 3 canary requests in the last 30s, fewer than minRequests 100"
    )
    assert run(obs, minRequests=0).verdict == "Passed"


def test_memory_still_fails_without_traffic() -> None:
    result = run(observed(Reading(0), healthy(memoryUtilization=Reading(0.95))))
    assert result.verdict == "Failed"
    assert result.summary == "memoryUtilization 0.95 > max 0.9"


def test_no_data_and_nan_are_inconclusive_and_never_stored_as_nan() -> None:
    obs = observed(Reading(500), healthy(memoryUtilization=Reading(), latencyP99=Reading(math.nan)))
    result = run(obs)
    assert result.verdict == "Inconclusive"
    assert [m.value for m in result.measurements] == [None, None, 0.0]
    assert result.summary == (
        "latencyP99: no value for the canary in the window; "
        "memoryUtilization: no data for revision a1b2c3d in the last 30s"
    )


def test_infinite_values_fail_but_are_not_stored() -> None:
    result = run(observed(Reading(500), healthy(memoryUtilization=Reading(math.inf))))
    assert result.verdict == "Failed" and result.summary == "memoryUtilization inf > max 0.9"
    assert result.measurements[1].value is None


def test_prometheus_down_is_one_error() -> None:
    down = Reading(error="Prometheus at http://p:9090 is unreachable: ConnectError")
    obs = observed(
        down,
        {name: down for name in ("latencyP99", "memoryUtilization", "errorRate")},
        {"A": AlertReading("A", error=down.error)},
        stable=down,
    )
    result = run(obs)
    assert result.verdict == "Error" and result.requests is None
    assert result.summary == "Prometheus at http://p:9090 is unreachable: ConnectError"
    assert all(m.verdict == "Error" and m.stable_value is None for m in result.measurements)


def test_a_failure_beats_errors_and_an_uncounted_canary_is_an_error() -> None:
    bad = Reading(error="Prometheus refused the query (bad_data): boom")
    result = run(observed(bad, healthy(memoryUtilization=Reading(0.99))))
    assert result.verdict == "Failed" and result.summary == "memoryUtilization 0.99 > max 0.9"
    assert result.measurements[0].verdict == "Error"
    assert result.measurements[0].message == (
        "could not count canary requests: Prometheus refused the query (bad_data): boom"
    )
    errored = run(observed(Reading(500), healthy(errorRate=bad)))
    assert errored.verdict == "Error"
    assert errored.summary == "errorRate: Prometheus refused the query (bad_data): boom"


def test_a_failing_stable_query_does_not_touch_the_canarys_verdict() -> None:
    result = run(observed(Reading(500), healthy(), stable=Reading(error="timeout")))
    assert result.verdict == "Passed"
    assert all(m.stable_value is None for m in result.measurements)


def test_alerts() -> None:
    long_name = "A" * 100
    obs = observed(
        Reading(0),
        healthy(),
        {
            "TMOHighLatency": AlertReading("TMOHighLatency", firing=0),
            long_name: AlertReading(long_name, firing=2),
        },
    )
    result = run(obs, minRequests=0)
    alerts = result.measurements[3:]
    assert [(m.metric, m.verdict, m.value) for m in alerts] == [
        ("alert:TMOHighLatency", "Passed", 0.0),
        (("alert:" + long_name)[:60] + "...", "Failed", 2.0),
    ]
    assert result.summary == f"alert {long_name} firing for revision a1b2c3d"


def test_messages_fit_the_status_field() -> None:
    huge = Reading(error="line one\nline two " + "x" * 5000)
    result = run(observed(Reading(500), healthy(errorRate=huge)))
    message = result.measurements[2].message
    assert len(message) == 1024 and message.startswith("line one line two x")
    assert message.endswith("...") and len(result.summary) <= 1024
