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
