"""The operator's metrics, from plain data: what a scrape shows for a reconciler's state."""

from __future__ import annotations

import datetime
from collections import Counter
from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from tmo.kube import metrics

NOW = datetime.datetime(2026, 12, 2, 4, 0, tzinfo=datetime.UTC)


def _rollout(name: str, phase: str | None, weight: int = 0, **analysis: int) -> dict[str, Any]:
    status: dict[str, Any] = {"canaryWeight": weight, "analysis": analysis}
    if phase:
        status["phase"] = phase
    return {
        "metadata": {"namespace": "ml", "name": name},
        "spec": {"targetRef": {"name": f"{name}-model"}},
        "status": status,
    }


def test_every_phase_is_reported_and_a_rollout_without_status_is_idle() -> None:
    phases = metrics.rollout_phases([_rollout("a", "Progressing"), _rollout("b", None)])
    assert phases["Progressing"] == 1 and phases["Idle"] == 1
    assert set(phases) == set(metrics.PHASES) and sum(phases.values()) == 2


def test_a_canary_ending_is_timed_from_its_start_once() -> None:
    live = {"phase": "Progressing", "canaryStartedAt": "2026-12-02T03:50:00Z"}
    assert metrics.canary_ending(live, {"phase": "Succeeded"}, NOW) == ("promoted", 600.0)
    assert metrics.canary_ending(live, {"phase": "RolledBack"}, NOW) == ("rolled_back", 600.0)
    # Not an ending: still live, or already ended (a later write of the same terminal phase).
    assert metrics.canary_ending(live, {"phase": "Paused"}, NOW) is None
    ended = {"phase": "RolledBack", "canaryStartedAt": "2026-12-02T03:50:00Z"}
    assert metrics.canary_ending(ended, {"phase": "RolledBack"}, NOW) is None


def test_a_scrape_shows_leader_counts_and_each_canary() -> None:
    reconciler = SimpleNamespace(
        stats=SimpleNamespace(
            reconciles=7, failures=1, child_writes=3, status_writes=4, events=2, analysis_runs=5
        ),
        client=SimpleNamespace(requests=Counter({"GET": 10, "PATCH": 4})),
        bodies={("ml", "m"): {}},
        rollouts=SimpleNamespace(
            bodies={("ml", "r"): _rollout("r", "Progressing", 25, passed=2, failed=1)}
        ),
    )
    try:
        metrics.set_leader(True)
        metrics.attach(reconciler)  # type: ignore[arg-type]
        text = generate_latest(metrics.REGISTRY).decode()
    finally:
        metrics.attach(None)
        metrics.set_leader(False)
    assert "tmo_operator_leader 1.0" in text
    assert 'tmo_operator_reconcile_errors_total{kind="TransformerModel"} 1.0' in text
    assert 'tmo_operator_kube_requests_total{verb="PATCH"} 4.0' in text
    labels = 'model="r-model",namespace="ml",rollout="r"'
    assert f"tmo_operator_rollout_canary_weight{{{labels}}} 25.0" in text
    assert f'tmo_operator_rollout_analysis_runs{{{labels},verdict="Failed"}} 1.0' in text
    # A standby (nothing attached) says only that it does not lead.
    standby = generate_latest(metrics.REGISTRY).decode()
    assert "tmo_operator_leader 0.0" in standby and "tmo_operator_models" not in standby


def _sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the one sample of `name` with exactly these labels in an exposition."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return None


def _model(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"namespace": "ml", "name": name},
        "spec": spec,
        "status": {"replicas": 3, "readyReplicas": 2},
    }


def test_each_model_gate_is_its_spec_value_or_the_api_default() -> None:
    body = _model(
        "m",
        monitoring={"latencyP99Ms": 400, "memoryUtilization": 0.8},
        scaling={"targetQueueLength": 6, "maxReplicas": 3},
    )
    gates = {labels["gate"]: v for labels, v in metrics.model_gates([body])}
    assert gates == {
        "latencyP99": 400.0,
        "memoryUtilization": 0.8,
        "errorRate": 0.01,  # the API's default: the body left it out
        "targetQueueLength": 6.0,
        "minReplicas": 1.0,
        "maxReplicas": 3.0,
    }
    labels = next(iter(metrics.model_gates([body])))[0]
    assert labels == {"namespace": "ml", "model": "m", "gate": "latencyP99"}
    # The defaults are the API's own: a model with no thresholds gets what the CRD defaults to.
    from tmo.api.transformermodel import Monitoring, Scaling

    defaults = {labels["gate"]: v for labels, v in metrics.model_gates([_model("d")])}
    assert defaults["latencyP99"] == Monitoring().latency_p99_ms
    assert defaults["memoryUtilization"] == Monitoring().memory_utilization
    assert defaults["errorRate"] == Monitoring().error_rate
    assert defaults["targetQueueLength"] == Scaling().target_queue_length
    assert (defaults["minReplicas"], defaults["maxReplicas"]) == (
        Scaling().min_replicas,
        Scaling().max_replicas,
    )


def test_replicas_come_from_the_model_status_and_a_new_model_has_none() -> None:
    new = {"metadata": {"namespace": "ml", "name": "n"}, "spec": {}}
    assert list(metrics.model_replicas([_model("m"), new])) == [
        ({"namespace": "ml", "model": "m"}, 3.0, 2.0),
        ({"namespace": "ml", "model": "n"}, 0.0, 0.0),
    ]


def _measured(metric: str, verdict: str, value: float | None) -> dict[str, Any]:
    return {"metric": metric, "time": "2026-12-02T04:00:00Z", "verdict": verdict, "value": value}


def test_the_newest_measurement_of_each_gate_is_exported_canary_and_stable() -> None:
    older = _measured("latencyP99", "Failed", 900.0)
    newer = {**_measured("latencyP99", "Passed", 120.0), "stableValue": 100.0}
    errors = _measured("errorRate", "Inconclusive", None)  # too few requests: no value
    status = {"analysis": {"measurements": [older, errors, newer]}}
    assert list(metrics.measurement_series(status)) == [
        ("latencyP99", "canary", 120.0),
        ("latencyP99", "stable", 100.0),
    ]
    verdicts = {(m, v): x for m, v, x in metrics.verdict_series(status)}
    assert verdicts[("latencyP99", "Passed")] == 1.0
    assert verdicts[("latencyP99", "Failed")] == 0.0  # the older run's verdict is gone
    assert verdicts[("errorRate", "Inconclusive")] == 1.0
    assert {v for (_, v) in verdicts} == set(metrics.VERDICTS)
    assert sum(verdicts.values()) == 2  # one current verdict per gate
    assert list(metrics.measurement_series({})) == []
    assert list(metrics.verdict_series({"analysis": None})) == []


def test_revision_roles_name_the_canary_only_while_one_is_live() -> None:
    live = {"stableRevision": "aaa", "canaryRevision": "bbb"}
    assert list(metrics.revision_roles(live)) == [("aaa", "stable"), ("bbb", "canary")]
    assert list(metrics.revision_roles({"stableRevision": "aaa"})) == [("aaa", "stable")]
    assert list(metrics.revision_roles({})) == []


def test_a_scrape_shows_gates_replicas_measurements_and_verdicts() -> None:
    live = _rollout("r", "Progressing", 50, passed=1)
    live["status"].update(stableRevision="aaa", canaryRevision="bbb")
    live["status"]["analysis"]["measurements"] = [
        {**_measured("latencyP99", "Passed", 120.0), "stableValue": 100.0},
        _measured("alert:TMOHighLatency", "Failed", 1.0),
    ]
    reconciler = SimpleNamespace(
        stats=SimpleNamespace(
            reconciles=0, failures=0, child_writes=0, status_writes=0, events=0, analysis_runs=1
        ),
        client=SimpleNamespace(requests=Counter()),
        bodies={("ml", "m"): _model("m", monitoring={"latencyP99Ms": 400})},
        rollouts=SimpleNamespace(bodies={("ml", "r"): live}),
    )
    try:
        metrics.attach(reconciler)  # type: ignore[arg-type]
        text = generate_latest(metrics.REGISTRY).decode()
    finally:
        metrics.attach(None)
    assert 'tmo_operator_model_gate{gate="latencyP99",model="m",namespace="ml"} 400.0' in text
    assert 'tmo_operator_model_replicas{model="m",namespace="ml"} 3.0' in text
    assert 'tmo_operator_model_ready_replicas{model="m",namespace="ml"} 2.0' in text
    rollout = {"namespace": "ml", "rollout": "r", "model": "r-model"}
    assert _sample(text, "tmo_operator_rollout_phase", **rollout, phase="Progressing") == 1.0
    assert _sample(text, "tmo_operator_rollout_phase", **rollout, phase="Idle") == 0.0
    revision = {**rollout, "revision": "bbb", "role": "canary"}
    assert _sample(text, "tmo_operator_rollout_revision", **revision) == 1.0
    measured = {**rollout, "metric": "latencyP99"}
    name = "tmo_operator_rollout_measurement"
    assert _sample(text, name, **measured, revision_role="canary") == 120.0
    assert _sample(text, name, **measured, revision_role="stable") == 100.0
    gate = {**rollout, "metric": "alert:TMOHighLatency"}
    assert _sample(text, "tmo_operator_rollout_gate_verdict", **gate, verdict="Failed") == 1.0
    assert _sample(text, "tmo_operator_rollout_gate_verdict", **gate, verdict="Passed") == 0.0
    # Every new family says what it is.
    for name in (
        "tmo_operator_model_gate",
        "tmo_operator_model_replicas",
        "tmo_operator_model_ready_replicas",
        "tmo_operator_rollout_phase",
        "tmo_operator_rollout_revision",
        "tmo_operator_rollout_measurement",
        "tmo_operator_rollout_gate_verdict",
    ):
        assert f"# HELP {name} " in text
