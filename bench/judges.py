"""Which canary judge to trust: thousands of simulated canaries judged by the shipped code.

    .venv/bin/python bench/judges.py [--canaries 2000] [--requests 3000] [--rerecord]
        [--jobs 2] [--quick] [--json FILE]

1. Record (once; cached under ~/.cache/tmo/bench/ by RECORDING_VERSION, `--rerecord` redoes it):
   a real `tmo serve` with a tiny random-weight text-classification model, N requests through
   the gateway from 4 concurrent clients (closed loop), inputs drawn from a fixed list of
   sentences of varied length; per request the latency the client saw (perf_counter) and the
   status code. No distribution is invented: every simulated request is a recorded one.

2. Simulate canaries. Each interval (30 s) a canary gets Poisson(c) requests and stable
   Poisson(c (1 - w) / w) (weight w), c about 15, 50 and 250. A request is a recorded latency
   drawn with replacement, transformed by the scenario (canary only), binned into the gateway's
   histogram buckets; it is a 5xx with the scenario's error rate, independently of its latency.
   The judges only ever see bucket counts, and resampling n recorded values and binning them is
   exactly Multinomial(n, the recording's bucket shares): that is how they are drawn (fast, and
   the same distribution). Stable's draws are shared by every scenario of a cell.

   Each interval builds what Prometheus would answer and calls the shipped code:
   tmo.analysis.evaluate.evaluate(analysis, ctx, observations, judge_for(analysis, look, compared),
   now) as run.py does, with effective_metrics (latencyP99, errorRate; memoryUtilization has no
   request samples and is left out), then machine._record_analysis's rule: rolled back when the
   Failed runs exceed failureLimit. threshold judges see this interval's histogram (p99 as
   histogram_quantile, x1000 ms) and error rate; mannWhitney sees every request since the canary
   started, both revisions (observe.compared_reading), with look = 1 + earlier Passed/Failed
   runs (machine.canary_look). Not rolled back after 10 intervals: promoted.

   Two shortcuts that change no verdict: threshold runs are memoised on what decides them (the
   canary's request count, bucket counts and errors: ThresholdJudge and evaluate read nothing
   else for the verdict), and rows that differ only in failureLimit share one sequence of runs
   (evaluate never reads failureLimit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from tmo.analysis.context import AnalysisContext
from tmo.analysis.evaluate import evaluate
from tmo.analysis.judges import judge_for
from tmo.analysis.metrics import compared_with_stable, effective_metrics
from tmo.analysis.observe import (
    MetricReading,
    Observations,
    Reading,
    SampleReading,
    compared_reading,
)
from tmo.analysis.queries import comparison_window, window_for
from tmo.analysis.samples import Binned, from_values, outcomes
from tmo.api.rollout import Analysis, Metric, Verdict
from tmo_runtime.gateway.metrics import BUCKETS

# Bump when the way requests are recorded changes: the cache is keyed by it.
RECORDING_VERSION: Final = "judges-rec-1"
CACHE: Final = Path.home() / ".cache" / "tmo" / "bench"
CONCURRENCY: Final = 4
WARMUP: Final = 50
SENTENCES: Final = (
    "refund please",
    "the parcel arrived late and the box was damaged",
    "can you check why my invoice shows the wrong amount for last month",
    "the customer wrote to support about a late refund for an order placed last week and "
    "asked the team to review the invoice",
    "i would like to change the delivery address of my order to the office instead of my home "
    "address because nobody will be at home during the day next week and the courier cannot "
    "leave parcels at the door",
    "great service, thanks",
    "the app crashes every time i open the settings page after the latest update, on two "
    "different phones, and reinstalling it did not help at all",
)

BOUNDS: Final = (*(float(b) for b in BUCKETS), math.inf)
INTERVAL_S: Final = 30
INTERVALS: Final = 10
WITHIN: Final = 3
WEIGHTS: Final = (0.05, 0.25)
PER_INTERVAL: Final = (15, 50, 250)
GOAL_PER_INTERVAL: Final = 50
BASE_ERROR_RATE: Final = 0.005
BAD_ERROR_RATE: Final = 0.02
NOW: Final = "2026-01-01T00:00:00Z"


# --- 1. recording -----------------------------------------------------------------------------


def _serve_and_send(requests: int) -> tuple[list[float], list[int]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import httpx
    from _serve import manifest, start
    from tmo_runtime.tiny_models import build_tiny_model

    tmp = Path(tempfile.mkdtemp(prefix="tmo-bench-"))
    build_tiny_model("text-classification", tmp / "model")
    doc = manifest("tc", "text-classification", f"file://{tmp / 'model'}")
    serve = start([doc], "--max-concurrency", "64", "--max-queue", "256")
    url = f"{serve.gateway}/predictions/tc"
    latencies: list[float] = []
    codes: list[int] = []

    async def run() -> None:
        pick = random.Random(0)
        remaining = WARMUP + requests
        limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
        async with httpx.AsyncClient(timeout=120, limits=limits) as client:

            async def caller() -> None:
                nonlocal remaining
                while remaining > 0:
                    remaining -= 1
                    warm = remaining >= requests
                    body = {"inputs": pick.choice(SENTENCES)}
                    t0 = time.perf_counter()
                    r = await client.post(url, json=body)
                    elapsed = time.perf_counter() - t0
                    if not warm:
                        latencies.append(elapsed)
                        codes.append(r.status_code)

            await asyncio.gather(*(caller() for _ in range(CONCURRENCY)))

    try:
        asyncio.run(run())
    finally:
        serve.stop()
    return latencies, codes


def recording(requests: int, rerecord: bool) -> dict[str, Any]:
    """The recorded requests, from the cache unless absent or `rerecord`."""
    path = CACHE / f"{RECORDING_VERSION}-n{requests}-c{CONCURRENCY}.json"
    if path.is_file() and not rerecord:
        cached: dict[str, Any] = json.loads(path.read_text())
        cached["cached"] = str(path)
        return cached
    t0 = time.perf_counter()
    latencies, codes = _serve_and_send(requests)
    rec: dict[str, Any] = {
        "version": RECORDING_VERSION,
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "concurrency": CONCURRENCY,
        "latencies_s": latencies,
        "codes": codes,
        "seconds": time.perf_counter() - t0,
        # Other work on the machine shows in the tail: say how busy it was.
        "loadavg": list(os.getloadavg()),
        "cpus": os.cpu_count(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec))
    rec["cached"] = None
    return rec


# --- 2. scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    error_rate: float
    good: bool


SCENARIOS: Final = (
    Scenario("good", "good: canary = stable (same latencies, error rate 0.5 %)", 0.005, True),
    Scenario("x1.2", "bad-latency: every latency x1.2 (p99 +20 %, p50 +20 %)", 0.005, False),
    Scenario(
        "tail",
        "bad-latency, tail only: values above p90 stretched (p99 +20 %, p50 same)",
        0.005,
        False,
    ),
    Scenario("x1.1", "bad-p50: every latency x1.1 (p50 +10 %)", 0.005, False),
    Scenario("errors", "bad-errors: error rate 0.5 % -> 2 % (latencies unchanged)", 0.02, False),
)


def transformed(key: str, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    if key == "x1.2":
        return values * 1.2
    if key == "x1.1":
        return values * 1.1
    if key == "tail":
        # Monotone: above p90 stretched so the p99 lands at 1.2 x p99; p50 untouched.
        p90, p99 = np.quantile(values, [0.9, 0.99])
        stretch = (1.2 * p99 - p90) / (p99 - p90)
        out: npt.NDArray[np.float64] = np.where(
            values > p90, p90 + (values - p90) * stretch, values
        )
        return out
    return values


def bucket_means(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The mean recorded latency inside each gateway bucket (0 where none fell): a drawn
    bucket count times it gives the histogram's _sum, so the judge sees the mean it reads from
    _sum / _count in a cluster."""
    index = np.searchsorted(np.asarray(BOUNDS), values, side="left")
    sums = np.bincount(index, weights=values, minlength=len(BOUNDS))[: len(BOUNDS)]
    counts = np.bincount(index, minlength=len(BOUNDS))[: len(BOUNDS)]
    out: npt.NDArray[np.float64] = np.divide(
        sums, counts, out=np.zeros(len(BOUNDS)), where=counts > 0
    )
    return out


def shares(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The recording's share of requests per gateway bucket (binned as the client library
    does, via the shipped samples.from_values)."""
    counts = np.asarray(from_values(values.tolist(), BOUNDS).counts, dtype=np.float64)
    out: npt.NDArray[np.float64] = counts / counts.sum()
    return out


# --- judges -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One sequence of analysis runs per canary; `rows` are the failureLimits applied to it."""

    key: str
    analysis: dict[str, Any]
    rows: tuple[tuple[str, int], ...]
    """(row name, failure limit: rolled back when Failed runs exceed it)."""
    inconclusive_fails: bool = False
    """Flagger-like: a run without a verdict (no data) counts as Failed."""
    goal_only: bool = False
    """Run at ~GOAL_PER_INTERVAL canary requests per interval only (to save time)."""

    @property
    def cumulative(self) -> bool:
        return bool(self.analysis.get("judge") == "mannWhitney")


CONFIGS: Final = (
    Config(
        "threshold",
        {"judge": "threshold"},
        (("threshold (shipped defaults: minReq 100, fl 2)", 2),),
    ),
    Config(
        "threshold-tuned",
        {"judge": "threshold", "minRequests": 20, "failureLimit": 0},
        (("threshold (minReq 20, fl 0)", 0),),
    ),
    Config(
        "flagger",
        {"judge": "threshold", "minRequests": 0},
        (
            ("flagger-like (no data fails, threshold 5)", 4),
            ("flagger-like (no data fails, fl 2)", 2),
        ),
        inconclusive_fails=True,
    ),
    Config(
        "mw-defaults",
        {"judge": "mannWhitney"},
        (("mannWhitney (defaults: sig 0.01, tol 0.1, minReq 100, fl 0)", 0),),
    ),
    Config(
        "mw",
        {"judge": "mannWhitney", "minRequests": 30, "significance": 0.01, "tolerance": 0.1},
        (
            ("mannWhitney (sig 0.01, tol 0.1, minReq 30, fl 0)", 0),
            ("mannWhitney (sig 0.01, tol 0.1, minReq 30, fl 2)", 2),
        ),
    ),
    Config(
        "mw-sig5",
        {"judge": "mannWhitney", "minRequests": 30, "significance": 0.05, "tolerance": 0.1},
        (("mannWhitney (sig 0.05, tol 0.1, minReq 30, fl 0)", 0),),
        goal_only=True,
    ),
)
ROWS: Final = tuple(name for c in CONFIGS for name, _ in c.rows)


@dataclass(frozen=True)
class Task:
    config: Config
    weight: float
    per_interval: int
    scenario: Scenario
    canaries: int
    seed: int
    stable_shares: tuple[float, ...]
    canary_shares: tuple[float, ...]
    stable_means: tuple[float, ...]
    canary_means: tuple[float, ...]
    threshold_ms: float


@dataclass
class Outcome:
    """Per row: the interval (1-based) each canary was rolled back at, 0 when promoted, and
    the gates that failed the run that rolled it back ("" when promoted)."""

    task: Task
    rolled_back_at: dict[str, list[int]]
    rolled_back_by: dict[str, list[str]]
    seconds: float


def _draw(
    rng: np.random.Generator, n: int, mean: float, p: npt.NDArray[np.float64], err: float
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(requests, bucket counts, 5xx) per canary and interval."""
    total = rng.poisson(mean, (n, INTERVALS)).astype(np.int64)
    buckets = rng.multinomial(total, p).astype(np.int64)
    errors = rng.binomial(total, err).astype(np.int64)
    return total, buckets, errors


def _binned(counts: npt.NDArray[np.int64], means: npt.NDArray[np.float64]) -> Binned:
    total = int(counts.sum())
    mean = float(np.dot(counts, means)) / total if total else None
    return Binned(BOUNDS, tuple(int(c) for c in counts), mean)


def _readings(
    metrics: Sequence[Metric],
    c_lat: Binned,
    s_lat: Binned,
    c_out: Binned,
    s_out: Binned,
    compare: bool,
) -> list[MetricReading]:
    latency, answered = SampleReading(c_lat, s_lat), SampleReading(c_out, s_out)
    out = []
    for m in metrics:
        r = compared_reading(m, latency if m.builtin == "latencyP99" else answered)
        # threshold: observe() reads one number per revision and no samples.
        out.append(r if compare else MetricReading(m, r.canary, r.stable))
    return out


def simulate(task: Task) -> Outcome:
    t0 = time.perf_counter()
    cfg, w, c = task.config, task.weight, task.per_interval
    cell = (WEIGHTS.index(w), PER_INTERVAL.index(c))
    stable_rng = np.random.default_rng([task.seed, *cell, 0])
    canary_rng = np.random.default_rng([task.seed, *cell, 1 + SCENARIOS.index(task.scenario)])
    n = task.canaries
    s_n, s_b, s_e = _draw(
        stable_rng, n, c * (1 - w) / w, np.asarray(task.stable_shares), BASE_ERROR_RATE
    )
    c_n, c_b, c_e = _draw(
        canary_rng, n, float(c), np.asarray(task.canary_shares), task.scenario.error_rate
    )
    if cfg.cumulative:
        s_n, s_b, s_e = s_n.cumsum(1), s_b.cumsum(1), s_e.cumsum(1)
        c_n, c_b, c_e = c_n.cumsum(1), c_b.cumsum(1), c_e.cumsum(1)

    c_means, s_means = np.asarray(task.canary_means), np.asarray(task.stable_means)
    analysis = Analysis.model_validate(cfg.analysis)
    monitoring = {"latencyP99Ms": task.threshold_ms, "errorRate": 0.01}
    metrics = effective_metrics(analysis, monitoring)
    compared = sum(compared_with_stable(m) for m in metrics)
    limits = [limit for _, limit in cfg.rows]
    memo: dict[tuple[int, tuple[int, ...], int], tuple[Verdict, str]] = {}
    rolled: dict[str, list[int]] = {name: [] for name, _ in cfg.rows}
    rolled_by: dict[str, list[str]] = {name: [] for name, _ in cfg.rows}

    for i in range(n):
        passed = failed = 0
        failed_at: list[int] = []
        failed_by: list[str] = []
        for k in range(INTERVALS):
            key = (int(c_n[i, k]), tuple(int(x) for x in c_b[i, k]), int(c_e[i, k]))
            known = None if cfg.cumulative else memo.get(key)
            if known is None:
                age = INTERVAL_S * (k + 1)
                ctx = AnalysisContext(
                    "bench", "tc", "canary", "stable", monitoring, age, 1 + passed + failed
                )
                obs = Observations(
                    comparison_window(age) if cfg.cumulative else window_for(analysis),
                    Reading(value=float(c_n[i, k])),
                    _readings(
                        metrics,
                        _binned(c_b[i, k], c_means),
                        _binned(s_b[i, k], s_means),
                        outcomes(float(c_n[i, k]), float(c_e[i, k])),
                        outcomes(float(s_n[i, k]), float(s_e[i, k])),
                        cfg.cumulative,
                    ),
                    [],
                )
                judge = judge_for(analysis, ctx.look, compared)
                run = evaluate(analysis, ctx, obs, judge, NOW)
                gates = "+".join(m.metric for m in run.measurements if m.verdict == "Failed")
                known = (run.verdict, gates)
                if not cfg.cumulative:
                    memo[key] = known
            verdict, gates = known
            if cfg.inconclusive_fails and verdict in ("Inconclusive", "Error"):
                verdict, gates = "Failed", "no data"
            if verdict == "Failed":
                failed += 1
                failed_at.append(k + 1)
                failed_by.append(gates)
                if failed > max(limits):
                    break
            elif verdict == "Passed":
                passed += 1
        for name, limit in cfg.rows:
            rolled[name].append(failed_at[limit] if len(failed_at) > limit else 0)
            rolled_by[name].append(failed_by[limit] if len(failed_by) > limit else "")
    return Outcome(task, rolled, rolled_by, time.perf_counter() - t0)


# --- figures ----------------------------------------------------------------------------------


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def figures(at: list[int], by: list[str]) -> dict[str, Any]:
    n = len(at)
    gates: dict[str, int] = {}
    for g in by:
        if g:
            gates[g] = gates.get(g, 0) + 1
    hit = [a for a in at if a > 0]
    lo, hi = wilson(len(hit), n)
    return {
        "canaries": n,
        "rolled_back": len(hit),
        "rate": len(hit) / n if n else 0.0,
        "within_3": sum(1 for a in hit if a <= WITHIN) / n if n else 0.0,
        "mean_intervals": sum(hit) / len(hit) if hit else None,
        "wilson95": [lo, hi],
        "by_gate": gates,
    }


def _pct(x: float) -> str:
    return f"{x * 100:5.1f}"


def print_tables(results: dict[tuple[str, str, float, int], dict[str, Any]]) -> None:
    cells = [(w, c) for w in WEIGHTS for c in PER_INTERVAL]
    cols = [(w, c) for w, c in cells if any((r, "good", w, c) in results for r in ROWS)]
    name_w = max(len(r) for r in ROWS) + 2
    for sc in SCENARIOS:
        print()
        print(sc.title)
        if sc.good:
            print("  false rollback % [95 % Wilson interval] (rolled back at all in 10 intervals)")
        else:
            print("  detected % in 10 intervals / detected % within 3 / mean intervals to rollback")
        print("  " + "judge".ljust(name_w) + "".join(f"w={w:.0%} c={c}".ljust(20) for w, c in cols))
        for row in ROWS:
            if not any((row, sc.key, w, c) in results for w, c in cols):
                continue  # not run (--only)
            line = "  " + row.ljust(name_w)
            for w, c in cols:
                f = results.get((row, sc.key, w, c))
                if f is None:
                    line += "-".ljust(20)
                elif sc.good:
                    lo, hi = f["wilson95"]
                    line += f"{_pct(f['rate'])} [{lo * 100:.1f}-{hi * 100:.1f}]".ljust(20)
                else:
                    mean = f["mean_intervals"]
                    shown = f"{mean:4.1f}" if mean is not None else "   -"
                    line += f"{_pct(f['rate'])} {_pct(f['within_3'])} {shown}".ljust(20)
            print(line)


def print_gates(results: dict[tuple[str, str, float, int], dict[str, Any]]) -> None:
    """Which gate failed the run that rolled back a good canary."""
    print()
    print("good canaries rolled back, by the gate(s) that failed the deciding run (count)")
    for row in ROWS:
        parts = []
        for w in WEIGHTS:
            for c in PER_INTERVAL:
                f = results.get((row, "good", w, c))
                if f is None or not f["by_gate"]:
                    continue
                shown = " ".join(f"{g}:{n}" for g, n in sorted(f["by_gate"].items()))
                parts.append(f"w={w:.0%} c={c} [{shown}]/{f['canaries']}")
        if parts:
            print(f"  {row}: " + "; ".join(parts))


def print_goal(results: dict[tuple[str, str, float, int], dict[str, Any]]) -> None:
    print()
    print(
        f"goal: >= 95 % of x1.2 canaries rolled back within {WITHIN} intervals at "
        f"~{GOAL_PER_INTERVAL} canary requests/interval, <= 1 % false rollbacks (both weights)"
    )
    for row in ROWS:
        parts, ok = [], True
        for w in WEIGHTS:
            bad = results.get((row, "x1.2", w, GOAL_PER_INTERVAL))
            good = results.get((row, "good", w, GOAL_PER_INTERVAL))
            if bad is None or good is None:
                continue
            ok = ok and bad["within_3"] >= 0.95 and good["rate"] <= 0.01
            lo, hi = good["wilson95"]
            parts.append(
                f"w={w:.0%}: {bad['within_3'] * 100:.1f} % within {WITHIN}, "
                f"false {good['rate'] * 100:.2f} % [{lo * 100:.2f}-{hi * 100:.2f}]"
            )
        if parts:  # a row not run (--only) has nothing to say
            print(f"  {'MET ' if ok else 'MISS'} {row}: " + "; ".join(parts))


# --- main -------------------------------------------------------------------------------------


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    p.add_argument("--requests", type=int, default=3000, help="requests to record")
    p.add_argument("--rerecord", action="store_true", help="record again, ignore the cache")
    p.add_argument(
        "--canaries", type=int, default=2000, help=f"canaries per cell at c={GOAL_PER_INTERVAL}"
    )
    p.add_argument(
        "--canaries-other", type=int, default=500, help="canaries per cell at the other rates"
    )
    p.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="smoke run: 40 canaries, one cell")
    p.add_argument("--json", type=Path, help="write every figure here")
    p.add_argument(
        "--only",
        default="",
        metavar="KEYS",
        help="comma-separated judge configurations to run ("
        + ", ".join(c.key for c in CONFIGS)
        + "; default all)",
    )
    p.add_argument(
        "--goal", action="store_true", help=f"only the goal's cells (c={GOAL_PER_INTERVAL})"
    )
    args = p.parse_args()
    if args.quick:
        args.canaries = args.canaries_other = min(args.canaries, 40)
        args.requests = min(args.requests, 300)

    t_start = time.perf_counter()
    rec = recording(args.requests, args.rerecord)
    values = np.asarray(rec["latencies_s"], dtype=np.float64)
    codes = rec["codes"]
    q50, q90, q99 = (float(x) for x in np.quantile(values, [0.5, 0.9, 0.99]))
    bad_codes = sum(1 for code in codes if code >= 500)
    print(
        f"recorded {len(values)} requests through the gateway ({rec['concurrency']} concurrent "
        f"clients, tiny text-classification on CPU, {rec['recorded_at']}"
        + (f", cached {rec['cached']}" if rec["cached"] else f", took {rec['seconds']:.0f}s")
        + ")"
    )
    if "loadavg" in rec:
        print(
            f"  machine load while recording (1/5/15 min): "
            f"{' '.join(f'{x:.1f}' for x in rec['loadavg'])} on {rec['cpus']} CPUs"
        )
    print(
        f"  client latency p50 {q50 * 1000:.2f} ms  p90 {q90 * 1000:.2f} ms  "
        f"p99 {q99 * 1000:.2f} ms  max {values.max() * 1000:.2f} ms; 5xx {bad_codes}, "
        f"other non-200 {sum(1 for code in codes if code != 200 and code < 500)}"
    )
    whole = from_values(values.tolist(), BOUNDS)
    print(
        "  share per gateway bucket (le, ms): "
        + ", ".join(
            f"{b * 1000:g}: {cnt / whole.total:.1%}"
            for b, cnt in zip(BOUNDS, whole.counts, strict=True)
            if cnt
        )
    )
    per_scenario = {sc.key: shares(transformed(sc.key, values)) for sc in SCENARIOS}
    means = {sc.key: bucket_means(transformed(sc.key, values)) for sc in SCENARIOS}
    hist_p99 = {
        sc.key: (from_values(transformed(sc.key, values).tolist(), BOUNDS).quantile(0.99) or 0.0)
        * 1000
        for sc in SCENARIOS
    }
    threshold_ms = hist_p99["good"] * 1.1
    print(
        "  p99 as histogram_quantile over the whole recording: "
        + ", ".join(f"{k} {v:.2f} ms" for k, v in hist_p99.items() if k != "errors")
    )
    print(
        f"  threshold judges: max latencyP99 {threshold_ms:.2f} ms (stable's histogram p99 x 1.1; "
        f"raw p99 x 1.1 would be {q99 * 1100:.2f} ms), max errorRate 0.01"
    )

    cells = (
        [(0.25, GOAL_PER_INTERVAL)]
        if args.quick
        else [
            (w, c) for w in WEIGHTS for c in PER_INTERVAL if c == GOAL_PER_INTERVAL or not args.goal
        ]
    )
    stable = tuple(float(x) for x in per_scenario["good"])
    tasks = [
        Task(
            cfg,
            w,
            c,
            sc,
            args.canaries if c == GOAL_PER_INTERVAL else args.canaries_other,
            args.seed,
            stable,
            tuple(float(x) for x in per_scenario[sc.key]),
            tuple(float(x) for x in means["good"]),
            tuple(float(x) for x in means[sc.key]),
            threshold_ms,
        )
        for w, c in cells
        for sc in SCENARIOS
        for cfg in CONFIGS
        if (c == GOAL_PER_INTERVAL or not cfg.goal_only)
        and (not args.only or cfg.key in args.only.split(","))
    ]
    # Longest first (mannWhitney runs cost a rank test each), so the workers end together.
    tasks.sort(key=lambda t: -t.canaries * (50 if t.config.cumulative else 1))
    t_sim = time.perf_counter()
    with ProcessPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        done = list(pool.map(simulate, tasks))
    sim_seconds = time.perf_counter() - t_sim

    results: dict[tuple[str, str, float, int], dict[str, Any]] = {}
    for o in done:
        for row, at in o.rolled_back_at.items():
            key = (row, o.task.scenario.key, o.task.weight, o.task.per_interval)
            results[key] = figures(at, o.rolled_back_by[row])
    print()
    print(
        f"{args.canaries} canaries per cell at c={GOAL_PER_INTERVAL}, {args.canaries_other} at "
        f"the other rates; {INTERVALS} intervals of {INTERVAL_S}s, Poisson "
        f"request counts; w = canary weight, c = mean canary requests per interval (stable "
        f"gets c (1 - w) / w); gates latencyP99 and errorRate (memory: no request samples)"
    )
    print_tables(results)
    print_gates(results)
    print_goal(results)
    total = time.perf_counter() - t_start
    slowest = max(done, key=lambda o: o.seconds)
    print()
    print(
        f"simulation {sim_seconds:.0f}s on {args.jobs} worker(s) (slowest task "
        f"{slowest.task.config.key} w={slowest.task.weight:.0%} c={slowest.task.per_interval} "
        f"{slowest.task.scenario.key}: {slowest.seconds:.0f}s); whole run {total:.0f}s"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "recording": {
                        "count": len(values),
                        "p50_ms": q50 * 1000,
                        "p90_ms": q90 * 1000,
                        "p99_ms": q99 * 1000,
                        "max_ms": float(values.max()) * 1000,
                        "histogram_p99_ms": hist_p99,
                        "version": rec["version"],
                        "recorded_at": rec["recorded_at"],
                    },
                    "threshold_ms": threshold_ms,
                    "canaries": args.canaries,
                    "canaries_other": args.canaries_other,
                    "intervals": INTERVALS,
                    "results": [
                        {"judge": r, "scenario": s, "weight": w, "per_interval": c, **f}
                        for (r, s, w, c), f in results.items()
                    ],
                    "simulation_seconds": sim_seconds,
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
