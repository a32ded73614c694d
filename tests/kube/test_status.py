"""The status a TransformerModel gets for each observed state (pure: no cluster)."""

from __future__ import annotations

from typing import Any

from tmo.kube.status import DeploymentState, Observation, Problem, compute_status, status_changed

NOW = "2026-01-01T00:00:00Z"
LATER = "2026-01-01T00:05:00Z"


def _deployment(desired: int = 2, ready: int = 2, **kw: Any) -> DeploymentState:
    values: dict[str, Any] = dict(
        desired=desired,
        replicas=desired,
        ready=ready,
        available=ready,
        updated=desired,
        up_to_date=True,
        deadline_exceeded=False,
    )
    values.update(kw)
    return DeploymentState(**values)


def _obs(**kw: Any) -> Observation:
    values: dict[str, Any] = dict(generation=3, revision="abc", url="http://m.ns.svc:8080")
    values.update(kw)
    return Observation(**values)


def _conditions(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in status["conditions"]}


def test_available_revision_is_ready_without_reconciling_or_stalled() -> None:
    status = compute_status(_obs(current=_deployment()), None, NOW)
    c = _conditions(status)
    assert c["Ready"]["status"] == "True"
    assert "Reconciling" not in c and "Stalled" not in c
    assert c["RuntimeReady"]["status"] == "True"
    assert status["observedGeneration"] == 3 and isinstance(status["observedGeneration"], int)
    assert (status["replicas"], status["readyReplicas"]) == (2, 2)
    assert status["revision"] == "abc" and status["url"] == "http://m.ns.svc:8080"


def test_starting_revision_is_reconciling() -> None:
    c = _conditions(compute_status(_obs(current=_deployment(ready=1)), None, NOW))
    assert c["Ready"]["status"] == "False"
    assert c["Reconciling"]["status"] == "True"
    assert "Stalled" not in c


def test_old_revision_still_present_is_rolling_out() -> None:
    obs = _obs(current=_deployment(ready=0), old_revisions=("old1",), old_replicas=2, old_ready=2)
    status = compute_status(obs, None, NOW)
    c = _conditions(status)
    assert c["Reconciling"]["reason"] == "RollingOut"
    assert "old1" in c["Ready"]["message"]
    assert status["readyReplicas"] == 2


def test_missing_secret_is_stalled_naming_it() -> None:
    problem = Problem("SecretNotFound", "Secret ns/s3-creds (model.credentialsSecretRef) not found")
    c = _conditions(compute_status(_obs(problem=problem), None, NOW))
    assert c["Stalled"]["status"] == "True"
    assert c["Stalled"]["reason"] == "SecretNotFound"
    assert "s3-creds" in c["Stalled"]["message"]
    assert c["Ready"]["status"] == "False"
    assert "Reconciling" not in c


def test_progress_deadline_exceeded_is_stalled() -> None:
    obs = _obs(current=_deployment(ready=0, deadline_exceeded=True))
    c = _conditions(compute_status(obs, None, NOW))
    assert c["Stalled"]["reason"] == "ProgressDeadlineExceeded"
    assert c["RuntimeReady"]["status"] == "False"


def test_missing_addons_say_why_and_the_model_still_serves() -> None:
    obs = _obs(current=_deployment(), autoscaling_installed=False, monitoring_installed=False)
    c = _conditions(compute_status(obs, None, NOW))
    assert c["Ready"]["status"] == "True"
    assert c["AutoscalingReady"]["status"] == "False"
    assert c["AutoscalingReady"]["reason"] == "KEDANotInstalled"
    assert c["MonitoringReady"]["reason"] == "PrometheusOperatorNotInstalled"


def test_unchanged_status_keeps_transition_times_and_needs_no_write() -> None:
    first = compute_status(_obs(current=_deployment()), None, NOW)
    again = compute_status(_obs(current=_deployment()), first, LATER)
    assert not status_changed(again, first)
    assert all(c["lastTransitionTime"] == NOW for c in again["conditions"])


def test_a_transition_updates_its_time_and_is_a_change() -> None:
    first = compute_status(_obs(current=_deployment(ready=1)), None, NOW)
    second = compute_status(_obs(current=_deployment()), first, LATER)
    assert status_changed(second, first)
    assert _conditions(second)["Ready"]["lastTransitionTime"] == LATER
    # AutoscalingReady did not change status: its time stays.
    assert _conditions(second)["AutoscalingReady"]["lastTransitionTime"] == NOW


def test_deployment_state_from_a_real_object() -> None:
    d = {
        "metadata": {"generation": 2},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": 2,
            "replicas": 1,
            "readyReplicas": 1,
            "availableReplicas": 1,
            "updatedReplicas": 1,
            "conditions": [{"type": "Progressing", "reason": "NewReplicaSetAvailable"}],
        },
    }
    state = DeploymentState.from_object(d)
    assert state.complete and not state.deadline_exceeded
    d["metadata"]["generation"] = 3
    assert not DeploymentState.from_object(d).complete


def test_under_a_rollout_the_model_says_what_its_canary_does() -> None:
    from tmo.kube.status import RolloutView

    def view(phase: str, live: bool, stable: str = "old") -> RolloutView:
        return RolloutView("ro", phase, f"phase {phase}", stable, canary_live=live)

    live = _conditions(
        compute_status(_obs(current=_deployment(), rollout=view("Progressing", True)), None, NOW)
    )
    assert (
        live["Ready"]["status"] == "False" and live["Reconciling"]["reason"] == "CanaryInProgress"
    )
    assert "Rollout ro" in live["Ready"]["message"]
    # The stable revision's pods serve meanwhile.
    assert (
        live["RuntimeReady"]["status"] == "True"
        and "revision old" in live["RuntimeReady"]["message"]
    )
    back = _conditions(
        compute_status(_obs(current=_deployment(), rollout=view("RolledBack", False)), None, NOW)
    )
    assert back["Stalled"]["reason"] == "RolledBack" and "Reconciling" not in back
    assert "revision abc did not go live" in back["Stalled"]["message"]
    promoted = _conditions(
        compute_status(
            _obs(current=_deployment(), rollout=view("Succeeded", False, "abc")), None, NOW
        )
    )
    assert promoted["Ready"]["status"] == "True" and "Stalled" not in promoted
