"""charts/tmo/argocd/health.lua (Lua 5.1 via lupa) reads the statuses TMO computes correctly."""

from __future__ import annotations

from typing import Any

from tmo.kube.status import DeploymentState, Observation, Problem, compute_status

from e2e.argocd import health as _health

NOW = "2026-01-01T00:00:00Z"


def _model(status: dict[str, Any] | None, generation: int = 3) -> dict[str, Any]:
    obj: dict[str, Any] = {"metadata": {"name": "m", "generation": generation}}
    if status is not None:
        obj["status"] = status
    return obj


def _deployment(ready: int, **kw: Any) -> DeploymentState:
    values: dict[str, Any] = dict(
        desired=1,
        replicas=1,
        ready=ready,
        available=ready,
        updated=1,
        up_to_date=True,
        deadline_exceeded=False,
    )
    values.update(kw)
    return DeploymentState(**values)


def _status(**kw: Any) -> dict[str, Any]:
    return compute_status(Observation(generation=3, revision="r", url="u", **kw), None, NOW)


def test_ready_is_healthy() -> None:
    assert _health(_model(_status(current=_deployment(1))))[0] == "Healthy"


def test_starting_is_progressing() -> None:
    assert _health(_model(_status(current=_deployment(0))))[0] == "Progressing"


def test_stalled_is_degraded_with_the_reason() -> None:
    status, message = _health(_model(_status(problem=Problem("SecretNotFound", "Secret x"))))
    assert status == "Degraded" and message.startswith("SecretNotFound")
    status, _ = _health(_model(_status(current=_deployment(0, deadline_exceeded=True))))
    assert status == "Degraded"


def test_status_of_an_older_generation_is_progressing() -> None:
    assert _health(_model(_status(current=_deployment(1)), generation=4))[0] == "Progressing"


def test_no_status_yet_is_progressing() -> None:
    assert _health(_model(None))[0] == "Progressing"


# --- Rollout: DESIGN §2's table, with the conditions the state machine writes ---------------


def _rollout(phase: str, reason: str = "", stalled: bool = False) -> dict[str, Any]:
    from tmo.rollout import rollout_conditions

    conditions = rollout_conditions(
        phase, None, reason, f"phase {phase}", 3, stalled=stalled, previous=[], now=NOW
    )
    return _model({"observedGeneration": 3, "phase": phase, "conditions": conditions})


def test_rollout_phases_read_as_the_design_table_says() -> None:
    assert _health(_rollout("Progressing"))[0] == "Progressing"
    assert _health(_rollout("Promoting"))[0] == "Progressing"
    assert _health(_rollout("Paused", "AwaitingApproval"))[0] == "Suspended"
    assert _health(_rollout("Paused", "Paused"))[0] == "Suspended"
    # Held by measurement errors: not suspended by a person, and resumes by itself.
    assert _health(_rollout("Paused", "AnalysisError"))[0] == "Progressing"
    assert _health(_rollout("Succeeded"))[0] == "Healthy"
    assert _health(_rollout("Idle"))[0] == "Healthy"
    status, message = _health(_rollout("RolledBack"))
    assert status == "Degraded" and message.startswith("AnalysisFailed")
    assert _health(_rollout("Aborted"))[0] == "Degraded"
    status, message = _health(_rollout("Idle", "TargetNotFound", stalled=True))
    assert status == "Degraded" and message.startswith("TargetNotFound")
