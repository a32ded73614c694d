"""A TransformerModel's status from what the operator observed. Pure: tested with plain data.

Conventions (DESIGN §2, kstatus, Argo CD): integer observedGeneration; `Ready` always present;
`Reconciling` and `Stalled` present only while True; domain conditions RuntimeReady,
AutoscalingReady and MonitoringReady always present with a reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
RUNTIME_READY = "RuntimeReady"
AUTOSCALING_READY = "AutoscalingReady"
MONITORING_READY = "MonitoringReady"


@dataclass(frozen=True)
class DeploymentState:
    """The parts of a revision's Deployment status that decide readiness."""

    desired: int
    replicas: int
    ready: int
    available: int
    updated: int
    up_to_date: bool  # status.observedGeneration == metadata.generation
    deadline_exceeded: bool  # Progressing=False, reason ProgressDeadlineExceeded

    @classmethod
    def from_object(cls, d: dict[str, Any]) -> DeploymentState:
        spec, st = d.get("spec") or {}, d.get("status") or {}
        progressing: dict[str, Any] = next(
            (c for c in st.get("conditions") or [] if c.get("type") == "Progressing"), {}
        )
        return cls(
            desired=int(spec.get("replicas", 1)),
            replicas=int(st.get("replicas", 0)),
            ready=int(st.get("readyReplicas", 0)),
            available=int(st.get("availableReplicas", 0)),
            updated=int(st.get("updatedReplicas", 0)),
            up_to_date=st.get("observedGeneration", 0) >= d["metadata"].get("generation", 0),
            deadline_exceeded=progressing.get("reason") == "ProgressDeadlineExceeded",
        )

    @property
    def complete(self) -> bool:
        return (
            self.up_to_date
            and self.updated >= self.desired
            and self.available >= self.desired
            and self.replicas == self.updated
        )


@dataclass(frozen=True)
class Problem:
    """Something only the operator can judge: makes the model Stalled."""

    reason: str
    message: str


@dataclass(frozen=True)
class RolloutView:
    """What the model's status tells of the Rollout that governs it."""

    name: str
    phase: str
    message: str
    stable: str
    # The model's own (desired) revision is the Rollout's live canary.
    canary_live: bool


@dataclass(frozen=True)
class Observation:
    generation: int
    revision: str
    url: str
    current: DeploymentState | None = None
    old_revisions: tuple[str, ...] = ()
    old_replicas: int = 0
    old_ready: int = 0
    problem: Problem | None = None
    autoscaling_installed: bool = True
    monitoring_installed: bool = True
    # Under a Rollout: `current` is the stable revision's Deployment (what serves), the counts
    # cover stable and canary, and the Rollout says why the desired revision is not all live.
    rollout: RolloutView | None = None
    replicas: int | None = None
    ready_replicas: int | None = None


def _condition(
    type_: str, status: bool, reason: str, message: str, generation: int
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": "True" if status else "False",
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
    }


def _runtime(obs: Observation) -> tuple[bool, str, str]:
    """(ready, reason, message) of the current revision's pods."""
    d = obs.current
    # Under a Rollout the pods that serve are the stable revision's.
    serving = obs.rollout.stable if obs.rollout is not None else obs.revision
    if obs.problem is not None:
        return False, obs.problem.reason, obs.problem.message
    if d is None:
        return False, "Creating", f"creating the Deployment of revision {serving}"
    if d.deadline_exceeded:
        return (
            False,
            "ProgressDeadlineExceeded",
            f"revision {serving}: {d.ready}/{d.desired} replicas ready and the Deployment "
            "exceeded its progress deadline (pods pending, image or model fetch failing?)",
        )
    if not d.complete:
        return (
            False,
            "Progressing",
            f"revision {serving}: {d.ready}/{d.desired} replicas ready",
        )
    return True, "Available", f"revision {serving}: {d.ready}/{d.desired} replicas ready"


def compute_status(obs: Observation, previous: dict[str, Any] | None, now: str) -> dict[str, Any]:
    """The whole status to write; lastTransitionTime is kept from `previous` when unchanged."""
    gen = obs.generation
    runtime_ok, runtime_reason, runtime_msg = _runtime(obs)
    stalled = obs.problem is not None or runtime_reason == "ProgressDeadlineExceeded"
    rolling = bool(obs.old_revisions)
    ready = runtime_ok and not rolling
    conditions = []
    # Ready's reason and message; RuntimeReady keeps the pods' own.
    why, said = runtime_reason, runtime_msg
    held = _held_by_rollout(obs)
    if held is not None:
        ready, stalled, why, said = False, held[0], held[1], held[2]
    if ready:
        conditions.append(_condition(READY, True, "Ready", said, gen))
    elif stalled:
        conditions.append(_condition(READY, False, why, said, gen))
        conditions.append(_condition(STALLED, True, why, said, gen))
    else:
        reason, message = why, said
        if held is not None:
            pass
        elif runtime_ok and rolling:
            reason = "RetiringOldRevisions"
            message = f"revision {obs.revision} ready; retiring {', '.join(obs.old_revisions)}"
        elif rolling:
            reason = "RollingOut"
            message = f"rolling out {runtime_msg}; {', '.join(obs.old_revisions)} still serving"
        conditions.append(_condition(READY, False, reason, message, gen))
        conditions.append(_condition(RECONCILING, True, reason, message, gen))
    conditions.append(_condition(RUNTIME_READY, runtime_ok, runtime_reason, runtime_msg, gen))
    if obs.autoscaling_installed:
        conditions.append(
            _condition(
                AUTOSCALING_READY,
                True,
                "ScaledObjectApplied",
                "KEDA scales on tmo_inflight_requests",
                gen,
            )
        )
    else:
        conditions.append(
            _condition(
                AUTOSCALING_READY,
                False,
                "KEDANotInstalled",
                "KEDA's ScaledObject (CRD scaledobjects.keda.sh, keda.sh/v1alpha1) is not "
                "installed: replicas stay at minReplicas until KEDA is installed",
                gen,
            )
        )
    if obs.monitoring_installed:
        conditions.append(
            _condition(
                MONITORING_READY,
                True,
                "RulesApplied",
                "ServiceMonitor and PrometheusRule applied",
                gen,
            )
        )
    else:
        conditions.append(
            _condition(
                MONITORING_READY,
                False,
                "PrometheusOperatorNotInstalled",
                "the Prometheus Operator's CRDs servicemonitors.monitoring.coreos.com and "
                "prometheusrules.monitoring.coreos.com (monitoring.coreos.com/v1) are not both "
                "installed: no ServiceMonitor or alert rules until they are",
                gen,
            )
        )
    _carry_transition_times(conditions, previous, now)
    d = obs.current
    replicas = (d.replicas if d else 0) + obs.old_replicas
    ready_replicas = (d.ready if d else 0) + obs.old_ready
    return {
        "observedGeneration": gen,
        "revision": obs.revision,
        "url": obs.url,
        "replicas": replicas if obs.replicas is None else obs.replicas,
        "readyReplicas": ready_replicas if obs.ready_replicas is None else obs.ready_replicas,
        "conditions": conditions,
    }


def _held_by_rollout(obs: Observation) -> tuple[bool, str, str] | None:
    """(stalled, reason, message) when a Rollout keeps the desired revision from serving all
    traffic: a live canary (Reconciling), a rolled back or aborted one (Stalled), or a Rollout
    that cannot act yet (Reconciling). None when the desired revision is the stable one."""
    r = obs.rollout
    if r is None or r.stable == obs.revision:
        return None
    if r.canary_live:
        return False, "CanaryInProgress", f"Rollout {r.name}: {r.message}"
    if r.phase in ("RolledBack", "Aborted"):
        reason = "RolledBack" if r.phase == "RolledBack" else "CanaryAborted"
        return (
            True,
            reason,
            f"revision {obs.revision} did not go live (Rollout {r.name}): {r.message}",
        )
    return False, "WaitingForRollout", f"Rollout {r.name}: {r.message}"


def _carry_transition_times(
    conditions: list[dict[str, Any]], previous: dict[str, Any] | None, now: str
) -> None:
    before = {c.get("type"): c for c in (previous or {}).get("conditions") or []}
    for c in conditions:
        old = before.get(c["type"])
        same = old is not None and old.get("status") == c["status"]
        c["lastTransitionTime"] = old.get("lastTransitionTime", now) if same and old else now


def status_changed(new: dict[str, Any], previous: dict[str, Any] | None) -> bool:
    """Whether writing `new` would change anything (so an idle reconcile writes nothing)."""
    return _comparable(new) != _comparable(previous or {})


def _comparable(status: dict[str, Any]) -> dict[str, Any]:
    keys = ("observedGeneration", "revision", "url", "replicas", "readyReplicas")
    out: dict[str, Any] = {k: status.get(k) for k in keys}
    out["conditions"] = sorted(
        (
            (
                c.get("type"),
                c.get("status"),
                c.get("reason"),
                c.get("message"),
                c.get("observedGeneration"),
                c.get("lastTransitionTime"),
            )
            for c in status.get("conditions") or []
        ),
        key=lambda t: str(t[0]),
    )
    return out
