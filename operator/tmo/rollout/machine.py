"""The canary state machine: spec + status + what was observed -> the next status and traffic.

Pure: no clock, no I/O. The reconcile shell observes (the target's revision, the canary's ready
replicas, an analysis run when one is due, a pending imperative action), calls `next_state`, and
carries out the returned `Decision`: apply the traffic plan, write the status, post the events.

All progress lives in the status it returns (step index, when the step started, analysis
counters, the last handled action), so a restarted operator resumes exactly where the last
status write left off: pauses count from `stepStartedAt`, an action id is acted on once, and a
canary is promoted only from a status that says its last step completed with passing analysis.

Step rules:
- `setWeight: w` completes once the canary has the replicas for w ready, traffic is at w, and an
  analysis run since the step started has passed (so every step is gated by analysis).
- `pause: {duration}` completes when the duration has passed since the step started and an
  analysis run since then has passed; `pause: {}` also needs `tmo rollout promote`.
- After the last step: Promoting (the canary is scaled to the stable size), then the canary
  becomes the stable revision (Succeeded).
- A Failed run beyond `failureLimit`, or `maxConsecutiveErrors` errors with `onError: rollback`,
  rolls back at once (RolledBack); `onError: hold` pauses until Prometheus answers again.
- Inconclusive runs (too few canary requests) neither fail nor advance.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from tmo.api.common import parse_duration
from tmo.api.rollout import (
    ACTION_ANNOTATION,
    ActionRecord,
    ActionType,
    AnalysisStatus,
    Measurement,
    RolloutSpec,
    RolloutStatus,
    Router,
    Step,
    Verdict,
)
from tmo.rollout.conditions import rollout_conditions
from tmo.rollout.replicas import canary_replicas

# Phases in which a canary is live (has pods, may get traffic).
LIVE = frozenset({"Progressing", "Paused", "Promoting"})
# Measurements kept in status: the latest runs, newest last (API maximum is 64).
KEPT_MEASUREMENTS = 32

REASON_PAUSED = "Paused"
REASON_CANARY_FAILED = "CanaryFailed"
REASON_ANALYSIS_ERROR = "AnalysisError"
REASON_AWAITING_APPROVAL = "AwaitingApproval"


@dataclass(frozen=True)
class Action:
    """A pending imperative action, from the tmo.dev/rollout-action annotation."""

    action: ActionType
    id: str
    by: str = ""
    at: str | None = None


@dataclass(frozen=True)
class AnalysisResult:
    """One analysis run as the state machine needs it (tmo.analysis.AnalysisRun fits)."""

    revision: str  # the canary it judged: a run for a canary since superseded is ignored
    verdict: Verdict
    summary: str
    measurements: list[Measurement] = field(default_factory=list)
    requests: int | None = None


@dataclass(frozen=True)
class Problem:
    """Something that stops the Rollout from acting: becomes Stalled with this reason."""

    reason: str
    message: str


@dataclass(frozen=True)
class Observation:
    now: datetime.datetime
    # The target's revision (what Git wants now); None when the target does not exist.
    desired: str | None
    # Ready replicas of the canary's Deployment (of its current spec), and the stable
    # Deployment's replica count (what the autoscaler gives it now).
    canary_ready: int = 0
    stable_replicas: int = 1
    analysis: AnalysisResult | None = None
    action: Action | None = None
    problem: Problem | None = None
    # Whether the stable revision's Deployment exists (someone may have deleted it, or the
    # model was deleted and re-created): if not, the desired revision becomes stable at once.
    stable_exists: bool = True
    # Why the canary's pods cannot start (a failed model fetch, an image that cannot be
    # pulled, a crash loop), from pod status: the canary is rolled back, never waited for.
    canary_failure: str | None = None


@dataclass(frozen=True)
class TrafficPlan:
    """What the shell makes true: which revisions run and how traffic splits.

    `canary_replicas`: what the canary's Deployment runs: sized for the step's weight, which may
    run ahead of `weight` while the canary scales up, or the stable's size when promoting."""

    stable: str
    canary: str | None = None
    weight: int = 0
    canary_replicas: int = 0


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class Decision:
    status: dict[str, Any]
    traffic: TrafficPlan | None
    events: list[Event] = field(default_factory=list)
    # Come back after this many seconds even if nothing changes (pause ends, analysis due).
    requeue_after: float | None = None


def parse_action(annotations: Mapping[str, str] | None) -> Action | None:
    """The action annotation, or None when absent or not understood (the CLI writes it)."""
    raw = (annotations or {}).get(ACTION_ANNOTATION)
    if not raw:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    action, id_ = data.get("action"), data.get("id")
    if action not in ("promote", "abort", "retry") or not isinstance(id_, str) or not id_:
        return None
    by, at = data.get("by"), data.get("at")
    return Action(
        action=action,
        id=id_[:128],
        by=str(by)[:256] if by else "",
        at=at if isinstance(at, str) else None,
    )


def rfc3339(t: datetime.datetime) -> str:
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=datetime.UTC)


def step_label(step: Step) -> str:
    if step.set_weight is not None:
        return f"setWeight {step.set_weight}"
    assert step.pause is not None
    return f"pause {step.pause.duration}" if step.pause.duration else "pause (until promoted)"


def analysis_due(spec: RolloutSpec, status: RolloutStatus, now: datetime.datetime) -> bool:
    """Whether an analysis run is due: a canary is live and an interval has passed since the
    last run (or since the canary started: a brand-new canary has no traffic to judge yet)."""
    if status.phase not in LIVE or not status.canary_revision:
        return False
    since = parse_time(status.analysis.last_run_time if status.analysis else None) or parse_time(
        status.canary_started_at
    )
    if since is None:
        return True
    interval = parse_duration(spec.analysis.interval).total_seconds()
    return (now - since).total_seconds() >= interval


def canary_look(status: RolloutStatus, now: datetime.datetime) -> tuple[float, int]:
    """(seconds since the canary started, this run's look number): the canary's runs that
    reached a verdict so far, plus one. Inconclusive and errored runs tested nothing, so they
    spend none of the mannWhitney judge's significance."""
    started = parse_time(status.canary_started_at)
    age = max(0.0, (now - started).total_seconds()) if started is not None else 0.0
    a = status.analysis
    return age, 1 + (a.passed + a.failed if a is not None else 0)


@dataclass
class _State:
    """The mutable working copy of the status while one decision is made."""

    phase: str | None
    stable: str | None
    canary: str | None
    step: int
    weight: int
    canary_started_at: str | None
    step_started_at: str | None
    analysis: AnalysisStatus
    last_action: ActionRecord | None
    message: str = ""
    # Condition reasons for this pass (Ready's reason when not ready, Stalled's when stalled).
    reason: str = ""
    scale_weight: int | None = 0
    events: list[Event] = field(default_factory=list)
    # Where the last status left off: transitions (not passes) post Events.
    prev_phase: str | None = None
    prev_reason: str = ""
    prev_step: int = 0

    def event(self, type_: Literal["Normal", "Warning"], reason: str, message: str) -> None:
        self.events.append(Event(type_, reason, message))


def _load(status: RolloutStatus) -> _State:
    ready = next((c for c in status.conditions if c.type == "Ready"), None)
    # The Ready reason carries why a Paused rollout is paused (approval, spec, analysis errors)
    # and why a canary ended (AnalysisFailed, CanaryFailed): later passes keep saying so.
    kept = status.phase in ("Paused", "RolledBack", "Aborted")
    reason = ready.reason if ready is not None and kept else ""
    return _State(
        reason=reason,
        prev_phase=status.phase,
        prev_reason=reason,
        prev_step=status.current_step or 0,
        phase=status.phase,
        stable=status.stable_revision,
        canary=status.canary_revision,
        step=status.current_step or 0,
        weight=status.canary_weight or 0,
        canary_started_at=status.canary_started_at,
        step_started_at=status.step_started_at,
        analysis=status.analysis or AnalysisStatus(),
        last_action=status.last_action,
        message=status.message,
        scale_weight=status.canary_weight or 0,
    )


def next_state(
    spec: RolloutSpec, status: RolloutStatus, obs: Observation, generation: int
) -> Decision:
    """The whole next status, the traffic to make true and the events to post."""
    s = _load(status)
    now = rfc3339(obs.now)
    previous_conditions = [c.model_dump(by_alias=True) for c in status.conditions]

    if obs.desired is not None and (
        s.stable is None or (not obs.stable_exists and s.stable != obs.desired)
    ):
        # The first revision the Rollout sees becomes stable at once: nothing to compare with.
        if s.stable is not None:
            s.event(
                "Warning",
                "StableMissing",
                f"the Deployment of stable revision {s.stable} is gone: revision "
                f"{obs.desired} becomes stable without a canary",
            )
        s.stable, s.phase, s.canary, s.step, s.weight = obs.desired, "Idle", None, 0, 0
        s.message = f"revision {obs.desired} is stable"
        s.event("Normal", "StableRevision", f"revision {obs.desired} serves all traffic")

    if obs.problem is not None or obs.desired is None:
        # Hold everything where it is: no traffic change, the status says why.
        problem = obs.problem or Problem("TargetNotFound", "the target does not exist")
        s.message = problem.message
        conditions = rollout_conditions(
            s.phase,
            s.analysis.verdict,
            problem.reason,
            problem.message,
            generation,
            stalled=True,
            previous=previous_conditions,
            now=now,
        )
        traffic = _traffic(s, obs, spec.traffic.router) if s.stable else None
        events = [*s.events, *_problem_events(status, problem)]
        return Decision(_dump(s, conditions, generation), traffic, events)

    assert obs.desired is not None
    _handle_action(spec, s, obs, now)
    _follow_target(s, obs.desired, now)

    if s.phase in LIVE and s.canary:
        if obs.analysis is not None and obs.analysis.revision == s.canary:
            _record_analysis(spec, s, obs.analysis, now)
        if s.phase in LIVE and obs.canary_failure:
            _end_canary(
                s,
                "RolledBack",
                REASON_CANARY_FAILED,
                f"canary {s.canary} rolled back: its pods cannot start: {obs.canary_failure}; "
                f"revision {s.stable} still serves",
            )
            s.event("Warning", "RolledBack", s.message)
        if s.phase in LIVE:
            _progress(spec, s, obs, now)
    router = spec.traffic.router

    conditions = rollout_conditions(
        s.phase,
        s.analysis.verdict,
        s.reason,
        s.message,
        generation,
        stalled=False,
        previous=previous_conditions,
        now=now,
    )
    return Decision(
        _dump(s, conditions, generation),
        _traffic(s, obs, router),
        s.events,
        _requeue_after(spec, s, obs.now),
    )


# --- the parts of a decision ---------------------------------------------------------------


def _handle_action(spec: RolloutSpec, s: _State, obs: Observation, now: str) -> None:
    action = obs.action
    if action is None or (s.last_action is not None and s.last_action.id == action.id):
        return
    result: str
    if action.action == "abort":
        if s.phase in LIVE and s.canary:
            result = f"aborted canary {s.canary}: all traffic back on {s.stable}"
            by = action.by or "a user"
            msg = f"canary {s.canary} aborted by {by}; revision {s.stable} still serves"
            _end_canary(s, "Aborted", "Aborted", msg)
            s.event("Warning", "Aborted", s.message)
        else:
            result = "nothing to abort: no canary is running"
    elif action.action == "retry":
        if s.phase in ("RolledBack", "Aborted") and s.canary and s.canary == obs.desired:
            result = f"canary {s.canary} restarted from step 0"
            _start_canary(s, s.canary, now)
            s.event("Normal", "Retried", f"{result} by {action.by or 'a user'}")
        else:
            result = "nothing to retry: only a rolled back or aborted canary can be retried"
    else:  # promote
        step = _current_step(spec, s)
        if s.phase not in LIVE or not s.canary:
            result = "nothing to promote: no canary is running"
        elif spec.paused:
            result = "spec.paused is true: set it to false (in Git) to let the rollout go on"
        elif step is None or step.pause is None:
            what = step_label(step) if step is not None else "promotion"
            result = f"no pause to pass at step {s.step} ({what}): the rollout goes on by itself"
        else:
            result = f"approved: step {s.step} ({step_label(step)}) passes once analysis passes"
            s.event("Normal", "Approved", f"{result} (by {action.by or 'a user'})")
    s.last_action = ActionRecord(
        action=action.action,
        id=action.id,
        by=action.by,
        requested_at=action.at,
        handled_at=now,
        result=result,
        step=s.step if action.action == "promote" else None,
    )


def _follow_target(s: _State, desired: str, now: str) -> None:
    """React to the target's revision: a new canary, a superseded one, or a revert."""
    if desired == s.stable:
        if s.phase in LIVE and s.canary:
            msg = (
                f"the model was reverted to stable revision {s.stable}: canary {s.canary} "
                "removed without analysis"
            )
            s.event("Normal", "CanaryAbandoned", msg)
            s.phase, s.canary, s.weight, s.step, s.message = "Idle", None, 0, 0, msg
        elif s.phase in ("RolledBack", "Aborted"):
            s.phase, s.canary, s.weight = "Idle", None, 0
            s.message = f"revision {s.stable} is stable (the model was reverted to it)"
        s.reason = ""
        return
    if desired == s.canary:
        return  # carry on (or stay rolled back until the model changes or a retry)
    if s.phase in LIVE and s.canary:
        s.event("Normal", "Superseded", f"canary {s.canary} superseded by revision {desired}")
    _start_canary(s, desired, now)
    s.event(
        "Normal",
        "CanaryStarted",
        f"canary {desired} started beside stable {s.stable}",
    )


def _start_canary(s: _State, revision: str, now: str) -> None:
    s.phase, s.canary, s.step, s.weight, s.scale_weight = "Progressing", revision, 0, 0, 0
    s.canary_started_at = s.step_started_at = now
    s.analysis = AnalysisStatus()
    s.message = f"canary {revision} starting beside stable {s.stable}"


def _end_canary(s: _State, phase: str, reason: str, message: str) -> None:
    """Roll back: all traffic on stable at once; the canary revision stays named in status."""
    s.phase, s.weight, s.scale_weight, s.reason, s.message = phase, 0, 0, reason, message


def _record_analysis(spec: RolloutSpec, s: _State, run: AnalysisResult, now: str) -> None:
    a = s.analysis
    kept = [*a.measurements, *run.measurements][-KEPT_MEASUREMENTS:]
    s.analysis = AnalysisStatus(
        verdict=run.verdict,
        last_run_time=now,
        summary=run.summary[:1024],
        passed=a.passed + (run.verdict == "Passed"),
        failed=a.failed + (run.verdict == "Failed"),
        inconclusive=a.inconclusive + (run.verdict == "Inconclusive"),
        consecutive_errors=a.consecutive_errors + 1 if run.verdict == "Error" else 0,
        measurements=kept,
    )
    cfg = spec.analysis
    if run.verdict == "Failed":
        s.event("Warning", "AnalysisFailed", f"canary {s.canary}: {run.summary}")
        if s.analysis.failed > cfg.effective_failure_limit:
            _end_canary(
                s,
                "RolledBack",
                "AnalysisFailed",
                f"canary {s.canary} rolled back: {run.summary} ({s.analysis.failed} failed "
                f"runs > failureLimit {cfg.effective_failure_limit}); revision {s.stable} "
                "still serves",
            )
            s.event("Warning", "RolledBack", s.message)
        return
    if run.verdict == "Error":
        errors = s.analysis.consecutive_errors
        s.event("Warning", "AnalysisError", f"canary {s.canary}: {run.summary}")
        if errors >= max(cfg.max_consecutive_errors, 1):
            if cfg.on_error == "rollback":
                _end_canary(
                    s,
                    "RolledBack",
                    "AnalysisFailed",
                    f"canary {s.canary} rolled back: analysis errored {errors} times in a row "
                    f"(onError: rollback): {run.summary}; revision {s.stable} still serves",
                )
                s.event("Warning", "RolledBack", s.message)
            else:
                s.phase, s.reason = "Paused", REASON_ANALYSIS_ERROR
                s.message = (
                    f"holding canary {s.canary} at {s.weight}%: analysis errored {errors} times "
                    f"in a row ({run.summary}); resumes when measurements work again"
                )
        return
    if s.phase == "Paused" and s.reason == REASON_ANALYSIS_ERROR:
        s.phase = "Progressing"


def _current_step(spec: RolloutSpec, s: _State) -> Step | None:
    steps = spec.strategy.canary.steps
    return steps[s.step] if s.step < len(steps) else None


def _analysis_passed_in_step(s: _State) -> bool:
    last = parse_time(s.analysis.last_run_time)
    started = parse_time(s.step_started_at)
    return (
        s.analysis.verdict == "Passed"
        and last is not None
        # Strictly after: a run from the pass that started the step judged the step before.
        and (started is None or last > started)
    )


def _progress(spec: RolloutSpec, s: _State, obs: Observation, now: str) -> None:
    """Move through the steps as far as this observation allows (at most one step a pass:
    the next step needs an analysis run of its own)."""
    held = s.phase == "Paused" and s.reason == REASON_ANALYSIS_ERROR
    if held:
        s.scale_weight = s.weight
        return
    steps = spec.strategy.canary.steps
    step = _current_step(spec, s)
    s.phase, s.reason = "Progressing", ""
    if step is None:
        # Every step done: scale the canary to the stable's size, then swap roles.
        s.phase, s.scale_weight = "Promoting", None
        wanted = canary_replicas(None, obs.stable_replicas, spec.traffic.router)
        if obs.canary_ready >= wanted:
            promoted, old = s.canary, s.stable
            s.stable, s.canary, s.weight, s.scale_weight = promoted, None, 0, 0
            s.phase = "Succeeded"
            s.message = f"canary {promoted} promoted: it serves all traffic ({old} retired)"
            s.event("Normal", "Promoted", s.message)
        else:
            s.message = f"promoting canary {s.canary}: {obs.canary_ready}/{wanted} replicas ready"
        return
    passed = _analysis_passed_in_step(s)
    verdict = s.analysis.verdict
    if verdict == "Inconclusive":
        waiting_analysis = f"no verdict yet: {s.analysis.summary}"
    elif verdict in (None, "Passed"):
        waiting_analysis = "waiting for a passing analysis run"
    else:
        waiting_analysis = f"waiting for a passing analysis run (last: {verdict})"
    where = f"step {s.step + 1}/{len(steps)} ({step_label(step)})"
    if spec.paused:
        s.phase, s.reason, s.scale_weight = "Paused", REASON_PAUSED, s.weight
        s.message = f"paused by spec.paused at {where}, canary at {s.weight}%"
        return
    if step.set_weight is not None:
        target = step.set_weight
        s.scale_weight = max(target, s.weight)
        wanted = canary_replicas(s.scale_weight, obs.stable_replicas, spec.traffic.router)
        if obs.canary_ready < wanted:
            s.message = (
                f"{where}: canary {s.canary} scaling for {target}% "
                f"({obs.canary_ready}/{wanted} ready)"
            )
            return
        if s.weight != target:
            # Traffic moves now: the step's analysis must judge the canary at this weight.
            s.weight, s.step_started_at = target, now
            s.event("Normal", "WeightChanged", f"canary {s.canary} at {target}% of traffic")
        if not passed:
            s.message = f"{where}: canary at {target}%, {waiting_analysis}"
            return
        _advance(spec, s, now)
        return
    assert step.pause is not None
    s.scale_weight = s.weight
    # `tmo rollout promote` passes this pause (an approval gate, or the rest of a timed one).
    approved = (
        s.last_action is not None
        and s.last_action.action == "promote"
        and s.last_action.step == s.step
    )
    if step.pause.duration and not approved:
        started = parse_time(s.step_started_at) or obs.now
        end = started + parse_duration(step.pause.duration)
        if end > obs.now:
            s.message = f"{where}: canary at {s.weight}% until {rfc3339(end)}"
            return
    elif not approved:
        s.phase, s.reason = "Paused", REASON_AWAITING_APPROVAL
        s.message = (
            f"{where}: canary {s.canary} at {s.weight}% waits for approval: tmo rollout promote"
        )
        if (s.prev_phase, s.prev_reason, s.prev_step) != ("Paused", s.reason, s.step):
            s.event("Normal", "AwaitingApproval", s.message)
        return
    if not passed:
        s.message = f"{where}: canary at {s.weight}%, {waiting_analysis}"
        return
    _advance(spec, s, now)


def _advance(spec: RolloutSpec, s: _State, now: str) -> None:
    steps = spec.strategy.canary.steps
    done = steps[s.step]
    s.step += 1
    s.step_started_at = now
    nxt = steps[s.step] if s.step < len(steps) else None
    s.message = f"step {s.step}/{len(steps)} ({step_label(done)}) passed; " + (
        f"next: {step_label(nxt)}" if nxt is not None else "promoting"
    )
    s.event("Normal", "StepPassed", s.message)


def _traffic(s: _State, obs: Observation, router: Router) -> TrafficPlan:
    assert s.stable is not None
    if s.phase in LIVE and s.canary:
        replicas = canary_replicas(s.scale_weight, obs.stable_replicas, router)
        return TrafficPlan(s.stable, s.canary, s.weight, replicas)
    return TrafficPlan(s.stable)


def _requeue_after(spec: RolloutSpec, s: _State, now: datetime.datetime) -> float | None:
    if s.phase not in LIVE or not s.canary:
        return None
    interval = parse_duration(spec.analysis.interval).total_seconds()
    since = parse_time(s.analysis.last_run_time) or parse_time(s.canary_started_at) or now
    waits = [max(0.5, (since - now).total_seconds() + interval)]
    step = _current_step(spec, s)
    if step is not None and step.pause is not None and step.pause.duration:
        started = parse_time(s.step_started_at) or now
        end = started + parse_duration(step.pause.duration)
        waits.append(max(0.5, (end - now).total_seconds()))
    return min(waits)


def held_decision(
    status: RolloutStatus, problem: Problem, generation: int, now: datetime.datetime
) -> Decision:
    """A Rollout that cannot act at all (no usable spec, a conflict, no target): Stalled with
    the problem, its status otherwise as it was, and no traffic plan."""
    previous = [c.model_dump(by_alias=True) for c in status.conditions]
    out = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    out["observedGeneration"] = generation
    out["message"] = problem.message
    out["conditions"] = rollout_conditions(
        status.phase,
        status.analysis.verdict if status.analysis else None,
        problem.reason,
        problem.message,
        generation,
        stalled=True,
        previous=previous,
        now=rfc3339(now),
    )
    return Decision(out, None, _problem_events(status, problem))


def _problem_events(status: RolloutStatus, problem: Problem) -> list[Event]:
    stalled = next((c for c in status.conditions if c.type == "Stalled"), None)
    if stalled is not None and stalled.status == "True" and stalled.reason == problem.reason:
        return []
    return [Event("Warning", problem.reason, problem.message)]


def _dump(s: _State, conditions: list[dict[str, Any]], generation: int) -> dict[str, Any]:
    status = RolloutStatus(
        observed_generation=generation,
        phase=s.phase,  # type: ignore[arg-type]
        stable_revision=s.stable,
        canary_revision=s.canary,
        current_step=s.step,
        canary_weight=s.weight,
        canary_started_at=s.canary_started_at,
        step_started_at=s.step_started_at,
        message=s.message[:32768],
        analysis=s.analysis,
        last_action=s.last_action,
    )
    out = status.model_dump(by_alias=True, exclude_none=True, mode="json")
    out["conditions"] = conditions
    return out
