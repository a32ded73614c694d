"""Rollouts for real: the operator, the local control plane, real model servers per revision, a
real Prometheus scraping them and evaluating TMO's alerts, and traffic split as the HTTPRoute says.

One model goes through a sequence of changes, each a new revision with a canary:
a harmless one promoted through every step, a slow one rolled back by the p99 gate, another
rolled back by the firing TMOHighLatency alert, a canary without traffic that gets no verdict,
Prometheus stopped mid-canary (hold, never promoted) and started again, a `pause: {}` gate
passed with `tmo rollout promote`, `abort` and `retry`. Flux's kstatus and Argo CD's health.lua
read the Rollout in each phase.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.dataplane import LocalDataPlane, build_tiny_model
from e2e.kube import Cluster, wait_for
from e2e.rollouts import (
    apply,
    change_runtime,
    condition,
    events,
    model_manifest,
    rollout,
    rollout_manifest,
    route_weights,
    tmo,
    verdicts,
    wait_phase,
)
from e2e.tmo_operator import OperatorProcess, install_crds, operator_kubeconfig

NAME = "triage"
STEPS = [
    {"setWeight": 25},
    {"pause": {"duration": "3s"}},
    {"setWeight": 50},
    {"pause": {"duration": "3s"}},
]
# The slow change: TorchServe holds each request up to 3 s waiting for a batch of 8.
SLOW = {"batchSize": 8, "maxBatchDelayMs": 3000}


@pytest.fixture(scope="module", params=["threshold", "mannWhitney"])
def judge(request: pytest.FixtureRequest) -> str:
    """Every test runs with each judge: mannWhitney compares the canary's requests with
    stable's (latency, 5xx), threshold holds them against the model's monitoring limits."""
    return str(request.param)


@pytest.fixture(scope="module")
def ns(cluster: Cluster, judge: str) -> Iterator[str]:
    name = f"ro-{judge[:2].lower()}-{int(time.time()) % 100000}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"file://{build_tiny_model(tmp_path_factory.mktemp('tiny') / 'model')}"


@pytest.fixture(scope="module")
def plane(
    cluster: Cluster, ns: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalDataPlane]:
    with LocalDataPlane(cluster, ns, tmp_path_factory.mktemp("plane"), rps=12) as dp:
        yield dp


@pytest.fixture(scope="module")
def operator(
    cluster: Cluster, ns: str, plane: LocalDataPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    install_crds(cluster)
    workdir = tmp_path_factory.mktemp("operator")
    op = OperatorProcess(
        cluster,
        workdir,
        kubeconfig=operator_kubeconfig(cluster, workdir),
        args=[
            "--namespace",
            ns,
            "--prometheus-url",
            plane.prometheus_url,
            "--alert-for",
            "5s",
            "--alert-window",
            "30s",
            "--resync-seconds",
            "10",
            "--retry-initial-seconds",
            "1",
            "--retry-max-seconds",
            "3",
        ],
    )
    op.start()
    yield op
    op.stop()


def _change(cluster: Cluster, ns: str, **runtime: Any) -> str:
    return change_runtime(cluster, ns, NAME, **runtime)


def _judged(judge: str) -> dict[str, Any]:
    """The analysis fields of a judge. mannWhitney with tolerance 2 (a canary must be three
    times worse than stable): here every revision's model server shares two cores with the
    others and with the test suite beside it, and a harmless canary's first requests after its
    idle time came out far slower than stable's (fresh-clone runs: mean +35 % and +66 %, p99
    +103 %, 21-24 requests against ~180), which a 10 % tolerance rightly calls worse: the
    judge has no warm-up window yet (docs/rollouts.md, "Not yet"). The slow change is about a
    hundred times slower, so it is still caught; bench/judges.py measures the judge's
    sensitivity, not this test."""
    return {"judge": judge, "tolerance": 2.0} if judge == "mannWhitney" else {"judge": judge}


def _set_rollout(
    cluster: Cluster, ns: str, judge: str, steps: list[dict[str, Any]], **analysis: Any
) -> None:
    apply(cluster, rollout_manifest(ns, NAME, steps, **_judged(judge), **analysis))


@pytest.fixture(scope="module")
def stable(
    cluster: Cluster,
    ns: str,
    judge: str,
    model_uri: str,
    plane: LocalDataPlane,
    operator: OperatorProcess,
) -> str:
    apply(
        cluster,
        model_manifest(ns, NAME, model_uri),
        rollout_manifest(ns, NAME, STEPS, **_judged(judge)),
    )
    obj = wait_phase(cluster, ns, NAME, {"Idle"}, timeout=60)
    revision = str(obj["status"]["stableRevision"])
    plane.wait_serving(revision, timeout=180)
    assert verdicts(cluster, obj) == ("Current", "Healthy")
    return revision


def test_a_harmless_change_is_promoted_through_every_step(
    cluster: Cluster, ns: str, judge: str, plane: LocalDataPlane, stable: str
) -> None:
    canary = _change(cluster, ns, maxBatchDelayMs=6)
    seen_weights: set[int] = set()
    seen_phases: set[str] = set()

    def done() -> dict[str, Any] | None:
        obj = rollout(cluster, ns, NAME)
        st = obj.get("status") or {}
        seen_phases.add(str(st.get("phase")))
        if st.get("phase") == "Progressing":
            weights = route_weights(cluster, ns, NAME)
            seen_weights.update(w for b, w in weights.items() if canary[:10] in b)
            verdicts(cluster, obj)  # Flux and Argo CD agree in every phase seen
        return obj if st.get("phase") == "Succeeded" else None

    obj = wait_for("the canary promoted", done, timeout=300, interval=1)
    assert obj["status"]["stableRevision"] == canary
    assert {25, 50} <= seen_weights, seen_weights
    assert plane.sent_by_revision()[canary] > 0
    assert verdicts(cluster, obj) == ("Current", "Healthy")
    reasons = events(cluster, ns, NAME)
    for reason in ("CanaryStarted", "WeightChanged", "StepPassed", "Promoted"):
        assert reason in reasons, reasons
    # The old stable revision is gone; all route traffic goes to the new one.
    wait_for("the old revision retired", lambda: plane.running().keys() == {canary}, 60)
    assert route_weights(cluster, ns, NAME) == {f"{NAME}-{canary[:10]}": 100}
    tm = cluster.get("tm", NAME, ns)
    assert condition(tm, "Ready")["status"] == "True"  # type: ignore[index]
    if judge == "mannWhitney":
        # Promoted on comparisons with stable, not on a lack of evidence.
        latency = [
            m for m in obj["status"]["analysis"]["measurements"] if m["metric"] == "latencyP99"
        ]
        assert latency[-1]["verdict"] == "Passed", latency[-1]
        assert (
            "significantly worse" in latency[-1]["message"] or "tolerance" in latency[-1]["message"]
        )
        assert latency[-1]["stableValue"] is not None


def test_a_slow_change_is_rolled_back_by_the_p99_gate(
    cluster: Cluster, ns: str, judge: str, plane: LocalDataPlane, stable: str
) -> None:
    good = rollout(cluster, ns, NAME)["status"]["stableRevision"]
    bad = _change(cluster, ns, **SLOW)
    obj = wait_phase(cluster, ns, NAME, {"RolledBack"}, timeout=300)
    stalled = condition(obj, "Stalled")
    assert stalled is not None and stalled["reason"] == "AnalysisFailed"
    assert "latencyP99" in stalled["message"] and f"{good} still serves" in stalled["message"]
    if judge == "mannWhitney":
        assert "worse than stable" in stalled["message"], stalled["message"]
    assert obj["status"]["stableRevision"] == good
    assert verdicts(cluster, obj) == ("Failed", "Degraded")
    # All traffic back on stable, the canary's pods gone.
    assert route_weights(cluster, ns, NAME) == {f"{NAME}-{good[:10]}": 100}
    wait_for("the canary removed", lambda: bad not in plane.running(), 60)
    tm = cluster.get("tm", NAME, ns)
    tm_stalled = condition(tm, "Stalled")
    assert tm_stalled is not None and tm_stalled["reason"] == "RolledBack"
    assert "RolledBack" in events(cluster, ns, NAME)


def test_a_firing_alert_rolls_back(
    cluster: Cluster, ns: str, judge: str, plane: LocalDataPlane, stable: str
) -> None:
    # Only the alert gates this canary: a query that always passes, and TMOHighLatency. The
    # pauses leave the alert time to fire (its p99 over 30 s must hold for 5 s).
    _set_rollout(
        cluster,
        ns,
        judge,
        [{"setWeight": 25}, {"pause": {"duration": "40s"}}, {"setWeight": 50}],
        metrics=[{"name": "always-ok", "query": "vector(0)", "max": 1}],
        alerts=["TMOHighLatency"],
    )
    good = rollout(cluster, ns, NAME)["status"]["stableRevision"]
    _change(cluster, ns, batchSize=8, maxBatchDelayMs=3001)
    obj = wait_phase(cluster, ns, NAME, {"RolledBack"}, timeout=300)
    message = condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert "TMOHighLatency" in message, message
    assert obj["status"]["stableRevision"] == good


def test_no_traffic_is_no_verdict_and_no_promotion(
    cluster: Cluster, ns: str, judge: str, plane: LocalDataPlane, stable: str
) -> None:
    _set_rollout(cluster, ns, judge, STEPS)
    plane.pause_load()
    try:
        canary = _change(cluster, ns, batchSize=4, maxBatchDelayMs=7)
        plane.wait_serving(canary, timeout=180)
        # Analysis intervals without a request: no verdict each time, and nothing moves.
        wait_for(
            "three Inconclusive runs",
            lambda: (
                (rollout(cluster, ns, NAME)["status"].get("analysis") or {}).get("inconclusive", 0)
                >= 3
            ),
            60,
        )
        st = rollout(cluster, ns, NAME)["status"]
        assert st["phase"] == "Progressing" and st["currentStep"] == 0, st
        assert st["analysis"]["verdict"] == "Inconclusive"
        assert st["analysis"]["inconclusive"] >= 2 and st["analysis"]["failed"] == 0
        assert "minRequests" in st["analysis"]["summary"]
    finally:
        plane.resume_load()
    obj = wait_phase(cluster, ns, NAME, {"Succeeded"}, timeout=300)
    assert obj["status"]["stableRevision"] == canary


def test_prometheus_down_holds_and_never_promotes(
    cluster: Cluster, ns: str, judge: str, plane: LocalDataPlane, stable: str
) -> None:
    _set_rollout(cluster, ns, judge, STEPS, maxConsecutiveErrors=2)
    canary = _change(cluster, ns, maxBatchDelayMs=8)
    wait_phase(cluster, ns, NAME, {"Progressing"}, timeout=60, canaryWeight=25)
    plane.stop_prometheus()
    try:
        obj = wait_phase(cluster, ns, NAME, {"Paused"}, timeout=120)
        assert condition(obj, "Ready")["reason"] == "AnalysisError"  # type: ignore[index]
        weight = obj["status"]["canaryWeight"]
        time.sleep(10)
        st = rollout(cluster, ns, NAME)["status"]
        assert st["phase"] == "Paused" and st["canaryWeight"] == weight
        assert st["stableRevision"] != canary
    finally:
        plane.start_prometheus()
    obj = wait_phase(cluster, ns, NAME, {"Succeeded"}, timeout=300)
    assert obj["status"]["stableRevision"] == canary


def test_approval_gate_promote_abort_and_retry(
    cluster: Cluster, ns: str, judge: str, plane: LocalDataPlane, stable: str
) -> None:
    _set_rollout(cluster, ns, judge, [{"setWeight": 25}, {"pause": {}}])
    canary = _change(cluster, ns, maxBatchDelayMs=9)
    obj = wait_phase(cluster, ns, NAME, {"Paused"}, timeout=300)
    assert condition(obj, "Ready")["reason"] == "AwaitingApproval"  # type: ignore[index]
    assert verdicts(cluster, obj) == ("InProgress", "Suspended")
    time.sleep(4)  # it keeps waiting
    assert rollout(cluster, ns, NAME)["status"]["phase"] == "Paused"
    out = tmo(cluster, "rollout", "promote", NAME, "-n", ns).stdout
    assert "approved" in out, out
    obj = wait_phase(cluster, ns, NAME, {"Succeeded"}, timeout=120)
    assert obj["status"]["stableRevision"] == canary
    assert obj["status"]["lastAction"]["action"] == "promote"

    # abort: all traffic back at once, Stalled Aborted; retry: from step 0 again.
    _set_rollout(cluster, ns, judge, STEPS)
    aborted = _change(cluster, ns, maxBatchDelayMs=10)
    wait_phase(cluster, ns, NAME, {"Progressing"}, timeout=60, canaryRevision=aborted)
    tmo(cluster, "rollout", "abort", NAME, "-n", ns)
    obj = wait_phase(cluster, ns, NAME, {"Aborted"}, timeout=60)
    assert condition(obj, "Stalled")["reason"] == "Aborted"  # type: ignore[index]
    assert verdicts(cluster, obj) == ("Failed", "Degraded")
    assert route_weights(cluster, ns, NAME) == {f"{NAME}-{canary[:10]}": 100}
    tmo(cluster, "rollout", "retry", NAME, "-n", ns)
    obj = wait_phase(cluster, ns, NAME, {"Succeeded"}, timeout=300)
    assert obj["status"]["stableRevision"] == aborted
    reasons = events(cluster, ns, NAME)
    for reason in ("AwaitingApproval", "Approved", "Aborted", "Retried"):
        assert reason in reasons, reasons


def test_a_second_rollout_on_a_model_is_a_conflict(cluster: Cluster, ns: str, stable: str) -> None:
    second = rollout_manifest(ns, "second", STEPS)
    second["spec"]["targetRef"]["name"] = NAME
    apply(cluster, second)

    def conflict() -> dict[str, Any] | None:
        obj = rollout(cluster, ns, "second")
        c = condition(obj, "Stalled")
        return obj if c is not None and c["reason"] == "TargetConflict" else None

    obj = wait_for("second Rollout TargetConflict", conflict, 60)
    assert NAME in condition(obj, "Stalled")["message"]  # type: ignore[index]
    assert condition(rollout(cluster, ns, NAME), "Stalled") is None
    cluster.kubectl("-n", ns, "delete", "rollouts.tmo.dev", "second")
