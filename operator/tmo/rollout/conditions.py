"""A Rollout's conditions from its phase: what Argo CD (health.lua) and Flux (kstatus) read.

phase                 Ready                           Reconciling  Stalled
Progressing/Promoting False                           True         -
Paused                False (AwaitingApproval, ...)   True         -
Succeeded/Idle        True                            -            -
RolledBack/Aborted    False                           -            True (AnalysisFailed/Aborted)
a problem             False                           -            True (its reason)

`Reconciling` and `Stalled` appear only while True; `Ready`, `Promoted` and `AnalysisPassing`
are always present.
"""

from __future__ import annotations

from typing import Any

from tmo.api.conditions import ANALYSIS_PASSING, PROMOTED, READY, RECONCILING, STALLED

_READY_REASON = {
    "Progressing": "Progressing",
    "Promoting": "Promoting",
    "Paused": "Paused",
    "RolledBack": "AnalysisFailed",
    "Aborted": "Aborted",
}


def _condition(
    type_: str, status: str, reason: str, message: str, generation: int
) -> dict[str, Any]:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message[:32768],
        "observedGeneration": generation,
    }


def rollout_conditions(
    phase: str | None,
    verdict: str | None,
    reason: str,
    message: str,
    generation: int,
    *,
    stalled: bool,
    previous: list[dict[str, Any]],
    now: str,
) -> list[dict[str, Any]]:
    """`reason`: why the rollout is not ready (a Paused rollout's kind of pause, a problem);
    empty for the phase's own reason. `stalled`: a problem stops it (target missing...)."""
    conditions: list[dict[str, Any]] = []
    if stalled:
        conditions.append(_condition(READY, "False", reason, message, generation))
        conditions.append(_condition(STALLED, "True", reason, message, generation))
    elif phase in ("Idle", "Succeeded"):
        conditions.append(_condition(READY, "True", phase, message, generation))
    elif phase in ("RolledBack", "Aborted"):
        why = reason or _READY_REASON[phase]
        conditions.append(_condition(READY, "False", why, message, generation))
        conditions.append(_condition(STALLED, "True", why, message, generation))
    else:
        why = reason or _READY_REASON.get(phase or "", "Progressing")
        conditions.append(_condition(READY, "False", why, message, generation))
        conditions.append(_condition(RECONCILING, "True", why, message, generation))
    if phase == "Succeeded":
        conditions.append(
            _condition(PROMOTED, "True", "Promoted", "the latest canary was promoted", generation)
        )
    else:
        conditions.append(
            _condition(
                PROMOTED,
                "False",
                phase or "Pending",
                "no canary promoted" if phase in (None, "Idle") else f"phase {phase}",
                generation,
            )
        )
    if verdict == "Passed":
        analysis = ("True", "Passed", "the latest analysis run passed")
    elif verdict in ("Failed", "Error"):
        analysis = ("False", verdict, f"the latest analysis run: {verdict}")
    else:
        analysis = ("Unknown", verdict or "NoRuns", "no verdict from the latest analysis run")
    conditions.append(_condition(ANALYSIS_PASSING, *analysis, generation))
    _carry_transition_times(conditions, previous, now)
    return conditions


def _carry_transition_times(
    conditions: list[dict[str, Any]], previous: list[dict[str, Any]], now: str
) -> None:
    before = {c.get("type"): c for c in previous}
    for c in conditions:
        old = before.get(c["type"])
        same = old is not None and old.get("status") == c["status"]
        c["lastTransitionTime"] = (
            old.get("lastTransitionTime") or now if same and old is not None else now
        )
