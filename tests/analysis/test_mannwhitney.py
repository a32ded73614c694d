"""The mannWhitney judge with plain data: samples from buckets, the spent level, verdicts on
degenerate and real-looking samples, and the false-rollback rate over repeated looks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from tmo.analysis import AnalysisContext, evaluate, judge_for
from tmo.analysis.judges import MIN_SAMPLES, MannWhitneyJudge, spent_alpha
from tmo.analysis.metrics import effective_metrics
from tmo.analysis.observe import (
    MetricReading,
    Observations,
    Reading,
    SampleReading,
    compared_reading,
)
from tmo.analysis.samples import (
    MAX_EXPANDED,
    BadCounts,
    Binned,
    from_buckets,
    from_values,
    outcomes,
)
from tmo.api.rollout import Analysis, Metric
from tmo_runtime.gateway.metrics import BUCKETS

BOUNDS = (*BUCKETS, math.inf)
P99 = Metric.model_construct(name="latencyP99", builtin="latencyP99")
ERRORS = Metric.model_construct(name="errorRate", builtin="errorRate")
MEMORY = Metric.model_construct(name="memory", builtin="memoryUtilization", max=0.9)
CTX = AnalysisContext("ml", "triage", "canary1", "stable1", {}, canary_age_seconds=90, look=1)
NOW = "2025-01-01T00:00:00Z"


def analysis(**fields: Any) -> Analysis:
    return Analysis.model_validate({"judge": "mannWhitney", **fields})


def latencies(rng: np.random.Generator, n: int, scale: float = 1.0) -> Binned:
    # Log-normal around 30 ms: the shape of a small model's latency behind the gateway.
    return from_values(rng.lognormal(math.log(0.03), 0.35, n) * scale, BOUNDS)


def judged(canary: Binned, stable: Binned, metric: Metric = P99, **judge: Any) -> tuple[str, str]:
    reading = compared_reading(metric, SampleReading(canary, stable))
    return MannWhitneyJudge(**{"significance": 0.05, "tolerance": 0.1, **judge}).judge(
        metric, reading
    )


# --- samples -----------------------------------------------------------------------------------


def test_buckets_become_per_bucket_counts() -> None:
    cumulative = [("0.1", 5.0), ("+Inf", 12.4), ("0.05", 2.0), ("0.25", 11.6)]
    assert from_buckets(cumulative) == Binned((0.05, 0.1, 0.25, math.inf), (2, 3, 7, 0))


def test_extrapolated_counts_never_go_negative() -> None:
    # increase() extrapolates each bucket on its own: a higher bucket can come out lower.
    assert from_buckets([("0.1", 7.2), ("0.25", 6.9), ("+Inf", 9.0)]).counts == (7, 0, 2)


@pytest.mark.parametrize(
    ("buckets", "error"),
    [([("0.1", math.nan)], "NaN"), ([("fast", 3.0)], "le='fast' is not a number")],
)
def test_counts_that_are_no_sample(buckets: list[tuple[str, float]], error: str) -> None:
    with pytest.raises(BadCounts, match=error):
        from_buckets(buckets)


def test_quantile_is_prometheus_histogram_quantile() -> None:
    sample = Binned((0.1, 0.2, math.inf), (50, 50, 0))
    assert sample.quantile(0.5) == pytest.approx(0.1)
    assert sample.quantile(0.75) == pytest.approx(0.15)  # linear inside the bucket
    assert Binned((0.1, math.inf), (10, 90)).quantile(0.99) == 0.1  # in +Inf: highest bound
    assert Binned((0.1, math.inf), (0, 0)).quantile(0.5) is None


def test_outcomes_and_error_rate() -> None:
    sample = outcomes(total=200.4, errors=3.2)
    assert sample.counts == (197, 3)
    assert sample.share_of_last() == pytest.approx(3 / 200)
    assert outcomes(total=2, errors=5).counts == (0, 2)  # never more errors than requests


def test_huge_samples_are_scaled_down_in_proportion() -> None:
    big = Binned((1.0, 2.0), (3 * MAX_EXPANDED, MAX_EXPANDED))
    values = big.expanded()
    assert len(values) == MAX_EXPANDED
    assert np.mean(values) == pytest.approx(0.25)


# --- the spent level ---------------------------------------------------------------------------


def test_the_level_spent_over_any_number_of_looks_stays_within_significance() -> None:
    spent = sum(spent_alpha(0.05, k, compared=2) * 2 for k in range(1, 100_000))
    assert spent < 0.05
    assert spent > 0.0499
    assert spent_alpha(0.05, 1, 1) == pytest.approx(0.05 * 6 / math.pi**2)
    assert spent_alpha(0.05, 2, 1) == pytest.approx(spent_alpha(0.05, 1, 1) / 4)


# --- verdicts ----------------------------------------------------------------------------------


def test_a_slower_canary_fails_and_says_by_how_much() -> None:
    rng = np.random.default_rng(1)
    verdict, message = judged(latencies(rng, 300, scale=1.3), latencies(rng, 3000))
    assert verdict == "Failed"
    assert message.startswith("worse than stable: ")
    assert "300 vs 3000 requests" in message
    assert "at look 1" in message


def test_the_same_distribution_passes() -> None:
    rng = np.random.default_rng(2)
    verdict, message = judged(latencies(rng, 300), latencies(rng, 3000))
    assert message.startswith("not significantly worse"), message
    assert verdict == "Passed"


def test_a_faster_canary_passes() -> None:
    rng = np.random.default_rng(3)
    verdict, message = judged(latencies(rng, 300, scale=0.5), latencies(rng, 3000))
    assert (verdict, message.split(":")[0]) == ("Passed", "not significantly worse")


def test_a_significant_change_below_the_tolerance_passes() -> None:
    # 5 % slower with 20 000 requests a side: significant, but below a 10 % tolerance.
    rng = np.random.default_rng(4)
    canary, stable = latencies(rng, 20_000, scale=1.05), latencies(rng, 20_000)
    verdict, message = judged(canary, stable)
    assert (verdict, message.split(":")[0]) == ("Passed", "within tolerance 10%")
    assert judged(canary, stable, tolerance=0.0)[0] == "Failed"


def test_later_looks_need_stronger_evidence() -> None:
    rng = np.random.default_rng(5)
    canary, stable = latencies(rng, 60, scale=1.3), latencies(rng, 600)
    assert judged(canary, stable, look=1)[0] == "Failed"
    assert judged(canary, stable, look=40)[0] == "Passed"


def test_more_errors_fail() -> None:
    verdict, message = judged(outcomes(400, 20), outcomes(4000, 20), ERRORS)
    assert verdict == "Failed"
    assert "0.05 vs stable 0.005" in message


def test_no_errors_on_either_side_pass() -> None:
    assert judged(outcomes(400, 0), outcomes(4000, 0), ERRORS) == (
        "Passed",
        "0 vs stable 0: every request in the same bucket (400 vs 4000 requests)",
    )


@pytest.mark.parametrize(
    ("canary", "stable", "verdict", "said"),
    [
        # empty: nothing to compare
        (Binned((), ()), Binned((), ()), "Inconclusive", "0 canary and 0 stable requests"),
        (Binned(BOUNDS, (0,) * len(BOUNDS)), None, "Inconclusive", "0 canary and"),
        # fewer than MIN_SAMPLES on a side
        (Binned((0.1, math.inf), (MIN_SAMPLES - 1, 0)), None, "Inconclusive", "fewer than"),
        # identical samples, and both constant in the same bucket
        (None, None, "Passed", "not significantly worse"),
        (Binned((0.1, math.inf), (500, 0)), Binned((0.1, math.inf), (900, 0)), "Passed", "same"),
        # both constant, the canary in a slower bucket: ranked like any samples
        (Binned((0.1, 0.2, math.inf), (0, 500, 0)), Binned((0.1, 0.2, math.inf), (900, 0, 0)),
         "Failed", "worse than stable"),
        # different buckets (another gateway version): no comparison
        (Binned((0.1, math.inf), (500, 0)), Binned((0.2, math.inf), (900, 0)), "Inconclusive",
         "different buckets"),
    ],
)  # fmt: skip
def test_degenerate_samples_have_defined_verdicts(
    canary: Binned | None, stable: Binned | None, verdict: str, said: str
) -> None:
    same = latencies(np.random.default_rng(6), 500)
    result = judged(canary or same, stable or same)
    assert result[0] == verdict
    assert said in result[1]


def test_nan_and_errors_are_no_verdict() -> None:
    judge = MannWhitneyJudge(0.05, 0.1)
    big = Binned((0.1, math.inf), (500, 0))
    nan = MetricReading(P99, Reading(math.nan), Reading(10.0), SampleReading(big, big))
    assert judge.judge(P99, nan) == ("Inconclusive", "no figure to compare for canary or stable")
    broken = compared_reading(P99, SampleReading(Binned((), ()), Binned((), ()), "timeout"))
    assert broken.canary.error == "timeout"
    assert judge.judge(P99, broken) == (
        "Inconclusive",
        "no comparison with stable: timeout",
    )


def test_memory_keeps_its_max() -> None:
    judge = MannWhitneyJudge(0.05, 0.1)
    assert judge.judge(MEMORY, MetricReading(MEMORY, Reading(0.95)))[0] == "Failed"
    assert judge.judge(MEMORY, MetricReading(MEMORY, Reading(0.5)))[0] == "Passed"


# --- with evaluate, as the operator runs it ----------------------------------------------------


def test_min_requests_counts_every_request_since_the_canary_started() -> None:
    rng = np.random.default_rng(7)
    canary, stable = latencies(rng, 80, scale=1.5), latencies(rng, 800)
    readings = [compared_reading(P99, SampleReading(canary, stable))]
    obs = Observations("90s", Reading(80.0), readings, [])
    a = analysis(minRequests=100)
    run = evaluate(a, CTX, obs, judge_for(a), NOW)
    assert run.verdict == "Inconclusive"
    assert run.summary == "80 canary requests in the last 90s, fewer than minRequests 100"
    a = analysis(minRequests=50)
    run = evaluate(a, CTX, obs, judge_for(a), NOW)
    assert run.verdict == "Failed"
    (m,) = run.measurements
    assert m.value is not None and m.stable_value is not None
    assert m.value > m.stable_value


def test_default_gates_under_mannwhitney() -> None:
    monitoring = {"latencyP99Ms": 250.0, "memoryUtilization": 0.9, "errorRate": 0.01}
    gates = effective_metrics(analysis(), monitoring)
    assert [(m.name, m.max) for m in gates] == [
        ("latencyP99", None),
        ("memoryUtilization", 0.9),
        ("errorRate", None),
    ]
    # latency and errors are compared even without a monitoring threshold
    assert [m.name for m in effective_metrics(analysis(), {})] == ["latencyP99", "errorRate"]


@pytest.mark.parametrize(
    ("metrics", "error"),
    [
        ([{"name": "p99", "builtin": "latencyP99", "max": 250}], "take no max or min"),
        ([{"name": "mem", "builtin": "memoryUtilization"}], "need max or min"),
        ([{"name": "q", "query": "up"}], "need max or min"),
    ],
)
def test_the_api_refuses_gates_the_judge_cannot_use(
    metrics: list[dict[str, Any]], error: str
) -> None:
    with pytest.raises(ValueError, match=error):
        analysis(metrics=metrics)


# --- the false-rollback rate over a whole rollout ----------------------------------------------


def test_good_canaries_are_rarely_rolled_back_over_many_looks() -> None:
    """400 good canaries, 10 looks each at growing samples, failureLimit 0: the share rolled
    back must stay within the significance (0.05) even though each is tested ten times; a
    per-look level of 0.05 rolls back about a fifth of them (checked too, so this test can
    tell the two apart)."""
    rng = np.random.default_rng(8)

    def rolled_back(spend: bool) -> float:
        backs = 0
        for _ in range(400):
            c: list[float] = []
            s: list[float] = []
            for look in range(1, 11):
                c.extend(rng.lognormal(math.log(0.03), 0.35, 40))
                s.extend(rng.lognormal(math.log(0.03), 0.35, 400))
                judge = MannWhitneyJudge(
                    0.05 if spend else 0.05 * math.pi**2 / 6, 0.0, look if spend else 1
                )
                reading = compared_reading(
                    P99, SampleReading(from_values(c, BOUNDS), from_values(s, BOUNDS))
                )
                if judge.judge(P99, reading)[0] == "Failed":
                    backs += 1
                    break
        return backs / 400

    assert rolled_back(spend=True) <= 0.05
    assert rolled_back(spend=False) >= 0.10
