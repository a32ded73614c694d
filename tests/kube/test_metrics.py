"""The operator's metrics, from plain data: what a scrape shows for a reconciler's state."""

from __future__ import annotations

import datetime
from collections import Counter
from types import SimpleNamespace
from typing import Any

from prometheus_client import generate_latest
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
