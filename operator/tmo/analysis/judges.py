"""How a measured value becomes a verdict: `threshold` (the canary against max/min) or
`mannWhitney` (the canary against the stable revision, Kayenta-style)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Protocol

from scipy.stats import fisher_exact, mannwhitneyu

from tmo.analysis.metrics import compared_with_stable, format_value
from tmo.analysis.observe import MetricReading
from tmo.analysis.samples import Binned
from tmo.api.rollout import Analysis, Metric, Verdict

# Fewer requests than this on either side: no verdict. A rank test on a handful of values says
# nothing, and its asymptotic p-value is not to be trusted there.
MIN_SAMPLES: Final = 20

# The alpha-spending series: look k of a canary may spend significance * 6 / (pi^2 * k^2).
# Over k = 1, 2, 3, ... these add up to the significance itself (sum 1/k^2 = pi^2 / 6).
_SPENDING: Final = 6 / math.pi**2


class UnsupportedJudge(ValueError):
    """The Rollout asks for a judge this operator does not have (the operator reports it as
    Stalled rather than judging with another one and calling that the verdict)."""


class Judge(Protocol):
    def judge(self, metric: Metric, reading: MetricReading) -> tuple[Verdict, str]:
        """The verdict on the canary's reading (its value is there: the caller has ruled out
        errors and missing data), with a message for people."""
        ...


class ThresholdJudge:
    """The canary's value against the metric's max and min; equal to a bound passes."""

    def judge(self, metric: Metric, reading: MetricReading) -> tuple[Verdict, str]:
        canary = reading.canary.value
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


def spent_alpha(significance: float, look: int, compared: int) -> float:
    """The level one comparison may use at `look` (1 for a canary's first test) when `compared`
    metrics are tested at each look: significance * 6 / (pi^2 look^2) / compared."""
    return significance * _SPENDING / (max(look, 1) ** 2) / max(compared, 1)


def relative_change(canary: float, stable: float) -> float:
    """(canary - stable) / stable; +inf when stable is 0 and the canary is not."""
    if stable == 0:
        return 0.0 if canary == 0 else math.inf
    return (canary - stable) / stable


def _percent(change: float) -> str:
    return "+inf %" if math.isinf(change) else f"{change * 100:+.1f} %"


@dataclass(frozen=True)
class MannWhitneyJudge:
    """Canary requests against stable requests with a one-sided Mann-Whitney U test.

    Samples: every request each revision answered since the canary started (the window of a
    look grows with the canary's age), at the gateway histogram's resolution for latency
    (samples.py: a request is its bucket's rank) and as 0/1 per request for errorRate. The
    same requests, so the same traffic mix and the same seconds, for both sides. The test asks
    whether canary values tend to be larger (slower, more errors) than stable ones
    (`scipy.stats.mannwhitneyu(..., alternative="greater")`, ties corrected, asymptotic). For
    errors, where the values are 0 and 1, the same one-sided question is asked of the 2x2 table
    with Fisher's exact test (`scipy.stats.fisher_exact`): see _p_value for why.

    A canary fails a gate only when both hold:
    - the test is significant at this look's spent level (below), and
    - the gate's own figure (p50/p95/p99 from the histograms, or the error rate) or, for
      latency, the exact mean (the histogram's _sum / _count) is worse than stable by at least
      `tolerance` (relative): with thousands of requests a 1 % change is "significant"; the
      tolerance is the smallest change worth a rollback. The mean is there because one quantile
      of a few hundred requests is noisy; either figure may show the change. Requiring it
      never adds false rollbacks: they need a significant test first.
    Otherwise it passes. It never fails for being better than stable.

    Repeated looks: a rollout looks every interval at growing data, so a per-look level would be
    spent again and again (ten looks at 0.05 roll back far more than 5 % of good canaries). The
    level is spent over the looks instead: look k (1-based, counting this canary's runs that
    reached a verdict) may use significance * 6 / (pi^2 k^2), split evenly between the metrics
    compared at each look. These add up to at most `significance` over any number of looks and
    metrics (a union bound), so the false-rollback rate holds for the whole rollout without
    knowing in advance how many looks it will take: manual approval pauses make that number
    unknowable, which rules out spending over a fixed plan (Pocock, O'Brien-Fleming). The
    price is lower levels for late looks, which growing samples pay back; bench/judges.py
    measures both rates.

    No verdict (Inconclusive, never Failed): fewer than MIN_SAMPLES requests on either side
    (none at all included), or counts Prometheus could not give. Identical samples, and both
    constant in the same bin, pass (the test has nothing to say: p = 1). Both constant in
    different bins are ranked like any other samples.

    Memory and query gates are no distributions of requests: they keep max/min, as with the
    threshold judge.
    """

    significance: float
    tolerance: float
    look: int = 1
    compared: int = 1

    @property
    def alpha(self) -> float:
        return spent_alpha(self.significance, self.look, self.compared)

    def judge(self, metric: Metric, reading: MetricReading) -> tuple[Verdict, str]:
        if not compared_with_stable(metric):
            return ThresholdJudge().judge(metric, reading)
        samples = reading.samples
        if samples is None or samples.error is not None:
            why = samples.error if samples is not None else "no request samples"
            return "Inconclusive", f"no comparison with stable: {why}"
        canary, stable = samples.canary, samples.stable
        if canary.total < MIN_SAMPLES or stable.total < MIN_SAMPLES:
            return "Inconclusive", (
                f"{canary.total} canary and {stable.total} stable requests since the canary "
                f"started, fewer than {MIN_SAMPLES} on a side to compare"
            )
        return self._compare(metric, reading, canary, stable)

    def _compare(
        self, metric: Metric, reading: MetricReading, canary: Binned, stable: Binned
    ) -> tuple[Verdict, str]:
        c_value = reading.canary.value
        s_value = reading.stable.value if reading.stable is not None else None
        if c_value is None or s_value is None or math.isnan(c_value) or math.isnan(s_value):
            return "Inconclusive", "no figure to compare for canary or stable"
        counted = f"{canary.total} vs {stable.total} requests"
        figures = f"{format_value(metric, c_value)} vs stable {format_value(metric, s_value)}"
        if canary.bounds != stable.bounds:
            return "Inconclusive", "canary and stable histograms have different buckets"
        if _single_bin(canary) is not None and _single_bin(canary) == _single_bin(stable):
            return "Passed", f"{figures}: every request in the same bucket ({counted})"
        p = _p_value(metric, canary, stable)
        change = relative_change(c_value, s_value)
        said = f"{figures} ({_percent(change)})"
        if metric.builtin != "errorRate" and canary.mean is not None and stable.mean is not None:
            # One quantile of a few hundred requests is noisy, and bucket-bound: the exact mean
            # (_sum / _count) moves with the whole distribution. Either may show the change.
            mean_change = relative_change(canary.mean, stable.mean)
            said += (
                f", mean {format_value(metric, canary.mean * 1000)} vs "
                f"{format_value(metric, stable.mean * 1000)} ({_percent(mean_change)})"
            )
            change = max(change, mean_change)
        said += f"; p={p:.2g} vs alpha {self.alpha:.2g} at look {self.look}; {counted}"
        if math.isnan(p):
            return "Passed", f"{figures}: no difference to test ({counted})"
        if p < self.alpha and change >= self.tolerance:
            return "Failed", f"worse than stable: {said}"
        if p < self.alpha:
            return "Passed", f"within tolerance {self.tolerance:.0%}: {said}"
        return "Passed", f"not significantly worse: {said}"


def _p_value(metric: Metric, canary: Binned, stable: Binned) -> float:
    """One-sided: canary values larger than stable's. Latency: Mann-Whitney U, asymptotic with
    the tie correction. Errors (0/1 per request): the same question on a 2x2 table, with
    Fisher's exact test: the rank test's normal approximation on rare 0/1 outcomes rejects
    several times more often than its level (bench/judges.py: 5.5 % instead of 1.5 % with 50
    canary requests at a 0.5 % error rate), and that was most of its false rollbacks."""
    if metric.builtin == "errorRate":
        (c_ok, c_bad), (s_ok, s_bad) = canary.counts, stable.counts
        return float(fisher_exact([[c_bad, c_ok], [s_bad, s_ok]], alternative="greater").pvalue)
    return float(
        mannwhitneyu(
            canary.expanded(), stable.expanded(), alternative="greater", method="asymptotic"
        ).pvalue
    )


def _single_bin(sample: Binned) -> int | None:
    used = [i for i, c in enumerate(sample.counts) if c > 0]
    return used[0] if len(used) == 1 else None


def judge_for(analysis: Analysis, look: int = 1, compared: int = 1) -> Judge:
    """The judge the Rollout asks for; `look` and `compared` matter to mannWhitney only."""
    if analysis.judge == "threshold":
        return ThresholdJudge()
    if analysis.judge == "mannWhitney":
        return MannWhitneyJudge(analysis.significance, analysis.tolerance, look, compared)
    raise UnsupportedJudge(f"judge {analysis.judge} is not available; use threshold or mannWhitney")
