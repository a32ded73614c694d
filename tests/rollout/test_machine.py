"""The canary state machine with plain data: every path a user sees, and properties over random
runs (weights never go down within a canary, exactly one revision ends with all traffic, a
failing canary is never promoted, a restart from the written status changes nothing)."""

from __future__ import annotations

import datetime
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from tmo.api import ACTION_ANNOTATION, RolloutSpec, RolloutStatus
from tmo.rollout import (
    Action,
    AnalysisResult,
    Decision,
    Observation,
    Problem,
    analysis_due,
    next_state,
    parse_action,
)

T0 = datetime.datetime(2026, 12, 1, 12, 0, 0, tzinfo=datetime.UTC)
STEPS: list[dict[str, Any]] = [
    {"setWeight": 5},
    {"pause": {"duration": "1m"}},
    {"setWeight": 50},
    {"pause": {}},
]


def spec(steps: list[dict[str, Any]] | None = None, **analysis: Any) -> RolloutSpec:
    return RolloutSpec.model_validate(
        {
            "targetRef": {"name": "m"},
            "strategy": {"canary": {"steps": steps or STEPS}},
            "analysis": {"interval": "30s", "failureLimit": 1, **analysis},
            "traffic": {"router": "gatewayAPI"},
        }
    )


def run(v: str, revision: str = "canary1") -> AnalysisResult:
    return AnalysisResult(revision=revision, verdict=v, summary=f"verdict {v}")  # type: ignore[arg-type]


class Sim:
    """Feeds each decision's status back as the next pass's status, through JSON and the API
    model, as the operator does through the API server."""

    def __init__(self, rollout_spec: RolloutSpec, desired: str = "stable1") -> None:
        self.spec = rollout_spec
        self.status: dict[str, Any] = {}
        self.now = T0
        self.desired = desired
        self.events: list[str] = []
        self.last: Decision | None = None

    def step(self, seconds: float = 0, **obs: Any) -> Decision:
        self.now += datetime.timedelta(seconds=seconds)
        status = RolloutStatus.model_validate(json.loads(json.dumps(self.status)))
        o = Observation(now=self.now, desired=obs.pop("desired", self.desired), **obs)
        d = next_state(self.spec, status, o, generation=1)
        self.status = d.status
        self.events += [e.reason for e in d.events]
        self.last = d
        return d

    @property
    def phase(self) -> str:
        return str(self.status["phase"])

    def condition(self, type_: str) -> dict[str, Any] | None:
        return next((c for c in self.status["conditions"] if c["type"] == type_), None)


def started(rollout_spec: RolloutSpec | None = None) -> Sim:
    sim = Sim(rollout_spec or spec())
    sim.step()
    sim.desired = "canary1"
    sim.step(1, canary_ready=0, stable_replicas=4)
    return sim


def test_first_revision_is_stable_at_once_and_ready() -> None:
    sim = Sim(spec())
    d = sim.step()
    assert sim.phase == "Idle"
    assert sim.status["stableRevision"] == "stable1"
    ready = sim.condition("Ready")
    assert ready is not None and ready["status"] == "True"
    assert sim.condition("Stalled") is None and sim.condition("Reconciling") is None
    assert d.traffic is not None and d.traffic.canary is None


def test_healthy_canary_goes_through_every_step_and_is_promoted() -> None:
    sim = started()
    assert sim.phase == "Progressing" and sim.status["canaryRevision"] == "canary1"
    assert "CanaryStarted" in sim.events
    # Step 1 (setWeight 5): the canary needs ceil(4 x 5%) = 1 ready replica before traffic moves.
    d = sim.step(1, canary_ready=0, stable_replicas=4)
    assert d.traffic is not None and d.traffic.canary_replicas == 1 and d.traffic.weight == 0
    d = sim.step(1, canary_ready=1, stable_replicas=4)
    assert d.traffic is not None and d.traffic.weight == 5
    assert sim.status["currentStep"] == 0  # waits for an analysis run at 5 %
    sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Passed"))
    assert sim.status["currentStep"] == 1
    # Step 2 (pause 1m): the pause counts from the step's start, and needs a passing run.
    sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Passed"))
    assert sim.status["currentStep"] == 1
    sim.step(31, canary_ready=1, stable_replicas=4, analysis=run("Passed"))
    assert sim.status["currentStep"] == 2
    # Step 3 (setWeight 50): 2 replicas first.
    d = sim.step(1, canary_ready=1, stable_replicas=4)
    assert d.traffic is not None and d.traffic.canary_replicas == 2 and d.traffic.weight == 5
    sim.step(1, canary_ready=2, stable_replicas=4)
    assert sim.status["canaryWeight"] == 50
    sim.step(30, canary_ready=2, stable_replicas=4, analysis=run("Passed"))
    assert sim.status["currentStep"] == 3
    # Step 4 (pause {}): waits for approval however long it takes.
    sim.step(3600, canary_ready=2, stable_replicas=4, analysis=run("Passed"))
    assert sim.phase == "Paused"
    ready = sim.condition("Ready")
    assert ready is not None and ready["reason"] == "AwaitingApproval"
    assert sim.events.count("AwaitingApproval") == 1
    sim.step(1, canary_ready=2, stable_replicas=4, action=Action("promote", "a1", "alice"))
    assert sim.status["lastAction"]["id"] == "a1" and sim.status["lastAction"]["by"] == "alice"
    sim.step(30, canary_ready=2, stable_replicas=4, analysis=run("Passed"))
    assert sim.phase == "Promoting"
    d = sim.step(1, canary_ready=2, stable_replicas=4)
    assert d.traffic is not None and d.traffic.canary_replicas == 4  # the stable's size first
    d = sim.step(1, canary_ready=4, stable_replicas=4)
    assert sim.phase == "Succeeded"
    assert sim.status["stableRevision"] == "canary1" and "canaryRevision" not in sim.status
    assert d.traffic is not None and d.traffic.stable == "canary1" and d.traffic.canary is None
    assert sim.condition("Ready")["status"] == "True"  # type: ignore[index]
    assert sim.condition("Promoted")["status"] == "True"  # type: ignore[index]
    assert "Promoted" in sim.events


def test_failures_beyond_the_limit_roll_back_at_once() -> None:
    sim = started()
    sim.step(1, canary_ready=1, stable_replicas=4)
    sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Failed"))
    assert sim.phase == "Progressing"  # failureLimit 1: one failure is tolerated
    d = sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Failed"))
    assert sim.phase == "RolledBack"
    assert d.traffic is not None and d.traffic.canary is None  # all traffic on stable
    stalled = sim.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "AnalysisFailed"
    assert "stable1 still serves" in stalled["message"] and "verdict Failed" in stalled["message"]
    assert sim.condition("Ready")["status"] == "False"  # type: ignore[index]
    # It stays rolled back while the model still asks for the failed revision...
    sim.step(600, canary_ready=0, stable_replicas=4)
    assert sim.phase == "RolledBack"
    # ...and retry starts it again from step 0.
    sim.step(1, action=Action("retry", "r1"))
    assert sim.phase == "Progressing" and sim.status["currentStep"] == 0
    assert sim.status["analysis"]["failed"] == 0


def test_a_canary_whose_pods_cannot_start_is_rolled_back_not_waited_for() -> None:
    sim = started()
    sim.step(5, canary_ready=0, stable_replicas=4)
    assert sim.phase == "Progressing"  # still starting: waited for
    why = "revision canary1, pod p-0: fetch failed: s3://models/x/: not found"
    d = sim.step(5, canary_ready=0, stable_replicas=4, canary_failure=why)
    assert sim.phase == "RolledBack"
    assert d.traffic is not None and d.traffic.canary is None
    stalled = sim.condition("Stalled")
    assert stalled is not None and stalled["reason"] == "CanaryFailed"
    assert why in stalled["message"] and "stable1 still serves" in stalled["message"]
    assert "RolledBack" in sim.events
    # The failed revision is not tried again by itself; a fix in Git (a new revision) is.
    sim.step(60, canary_ready=0, stable_replicas=4, canary_failure=why)
    assert sim.phase == "RolledBack"
    stalled = sim.condition("Stalled")  # later passes keep the reason
    assert stalled is not None and stalled["reason"] == "CanaryFailed"
    sim.desired = "canary2"
    sim.step(1, canary_ready=0, stable_replicas=4)
    assert sim.phase == "Progressing" and sim.status["canaryRevision"] == "canary2"


def test_inconclusive_runs_neither_fail_nor_advance() -> None:
    sim = started()
    sim.step(1, canary_ready=1, stable_replicas=4)
    for _ in range(20):
        sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Inconclusive"))
    assert sim.phase == "Progressing" and sim.status["currentStep"] == 0
    assert sim.status["analysis"]["inconclusive"] == 20
    assert "no verdict yet: verdict Inconclusive" in sim.status["message"]
    assert sim.status["analysis"]["summary"] == "verdict Inconclusive"


def test_errors_hold_then_resume_with_on_error_hold() -> None:
    sim = started(spec(maxConsecutiveErrors=2))
    sim.step(1, canary_ready=1, stable_replicas=4)
    sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Error"))
    assert sim.phase == "Progressing"
    d = sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Error"))
    assert sim.phase == "Paused"
    assert sim.condition("Ready")["reason"] == "AnalysisError"  # type: ignore[index]
    assert d.traffic is not None and d.traffic.weight == 5  # weights unchanged
    sim.step(3600, canary_ready=1, stable_replicas=4)
    assert sim.phase == "Paused" and sim.status["currentStep"] == 0  # never advances
    sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Passed"))
    assert sim.phase == "Progressing" and sim.status["currentStep"] == 1


def test_errors_roll_back_with_on_error_rollback() -> None:
    sim = started(spec(maxConsecutiveErrors=1, onError="rollback"))
    sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Error"))
    assert sim.phase == "RolledBack"
    assert "errored" in sim.status["message"]


def test_abort_rolls_back_now_and_records_who() -> None:
    sim = started()
    sim.step(1, canary_ready=1, stable_replicas=4)
    d = sim.step(1, canary_ready=1, action=Action("abort", "x1", "bob", "2026-12-01T12:00:00Z"))
    assert sim.phase == "Aborted"
    assert d.traffic is not None and d.traffic.canary is None
    assert sim.condition("Stalled")["reason"] == "Aborted"  # type: ignore[index]
    assert sim.status["lastAction"]["by"] == "bob"
    # The same action id seen again (a restart, a resync) is not acted on twice.
    before = dict(sim.status)
    sim.step(1, action=Action("abort", "x1", "bob"))
    assert sim.status["lastAction"] == before["lastAction"]


def test_a_new_revision_supersedes_the_canary_and_a_revert_goes_straight_back() -> None:
    sim = started()
    sim.step(1, canary_ready=1, stable_replicas=4)
    sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Passed"))
    sim.step(1, desired="canary2", canary_ready=1, stable_replicas=4)
    assert sim.status["canaryRevision"] == "canary2" and sim.status["currentStep"] == 0
    assert "Superseded" in sim.events
    # A run of the superseded canary does not count for the new one.
    sim.step(1, desired="canary2", analysis=run("Failed", revision="canary1"))
    assert sim.status["analysis"]["failed"] == 0
    d = sim.step(1, desired="stable1")
    assert sim.phase == "Idle" and "canaryRevision" not in sim.status
    assert d.traffic is not None and d.traffic.canary is None
    assert "CanaryAbandoned" in sim.events


def test_spec_paused_holds_where_it_is() -> None:
    sim = started(spec(steps=[{"setWeight": 10}, {"pause": {"duration": "10s"}}]))
    paused = RolloutSpec.model_validate({**sim.spec.model_dump(by_alias=True), "paused": True})
    sim.spec = paused
    sim.step(100, canary_ready=1, stable_replicas=4, analysis=run("Passed"))
    assert sim.phase == "Paused" and sim.status["currentStep"] == 0
    assert sim.condition("Ready")["reason"] == "Paused"  # type: ignore[index]


def test_problems_stall_without_touching_traffic() -> None:
    sim = started()
    sim.step(1, canary_ready=1, stable_replicas=4)
    d = sim.step(1, problem=Problem("RouteMissing", "no route"))
    assert sim.condition("Stalled")["reason"] == "RouteMissing"  # type: ignore[index]
    assert d.traffic is not None and d.traffic.weight == 5 and d.traffic.canary == "canary1"
    sim.step(1, canary_ready=1, stable_replicas=4)
    assert sim.condition("Stalled") is None


def test_analysis_is_due_an_interval_after_the_canary_started_then_each_interval() -> None:
    sim = started()
    s = spec()
    status = RolloutStatus.model_validate(sim.status)
    assert not analysis_due(s, status, sim.now + datetime.timedelta(seconds=10))
    assert analysis_due(s, status, sim.now + datetime.timedelta(seconds=31))


def test_the_action_annotation_is_parsed_strictly() -> None:
    ok = json.dumps({"action": "promote", "id": "abc", "by": "me", "at": "2026-12-01T00:00:00Z"})
    assert parse_action({ACTION_ANNOTATION: ok}) == Action(
        "promote", "abc", "me", "2026-12-01T00:00:00Z"
    )
    for bad in (
        "",
        "not json",
        "[]",
        json.dumps({"action": "delete", "id": "x"}),
        json.dumps({"action": "abort"}),
    ):
        assert parse_action({ACTION_ANNOTATION: bad}) is None


# --- properties over random runs ------------------------------------------------------------

observations = st.lists(
    st.tuples(
        st.sampled_from([0, 1, 5, 30, 61]),  # seconds since the last pass
        st.sampled_from([None, "Passed", "Passed", "Passed", "Failed", "Inconclusive", "Error"]),
        st.integers(0, 6),  # canary ready replicas
        st.sampled_from([None, None, None, None, "promote", "abort", "retry"]),
        st.booleans(),  # operator restarted before this pass (status only survives)
    ),
    min_size=1,
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(observations)
def test_properties_over_random_runs(passes: list[tuple[int, Any, int, Any, bool]]) -> None:
    sim = Sim(spec(maxConsecutiveErrors=2))
    sim.step()
    sim.desired = "canary1"
    weights: list[int] = []
    failed_runs = 0
    promoted = False
    for i, (dt, verdict, ready, action, _restart) in enumerate(passes):
        analysis = run(verdict) if verdict else None
        act = Action(action, f"a{i}") if action else None
        before = sim.status
        d = sim.step(dt, canary_ready=ready, stable_replicas=4, analysis=analysis, action=act)
        # Determinism: the same status and observation give the same decision (a restart
        # from the written status cannot decide anything else).
        again = next_state(
            sim.spec,
            RolloutStatus.model_validate(json.loads(json.dumps(before))),
            Observation(
                now=sim.now,
                desired="canary1",
                canary_ready=ready,
                stable_replicas=4,
                analysis=analysis,
                action=act,
            ),
            generation=1,
        )
        assert again.status == d.status
        assert d.traffic is not None
        if verdict == "Failed" and before.get("phase") in ("Progressing", "Paused", "Promoting"):
            failed_runs += 1
        if sim.phase in ("Progressing", "Paused", "Promoting"):
            weights.append(d.traffic.weight)
            # Weights never decrease within a canary.
            assert weights == sorted(weights), weights
            assert 0 <= d.traffic.weight <= 100
        else:
            weights = []
            # At rest exactly one revision holds 100 %.
            assert d.traffic.canary is None and d.traffic.weight == 0
        if sim.phase == "Succeeded":
            promoted = True
            # Never promoted with the failure budget spent, nor without a passing last run.
            assert sim.status["analysis"]["failed"] <= 1
            assert sim.status["stableRevision"] == "canary1"
        if sim.phase in ("RolledBack", "Aborted"):
            assert sim.status["stableRevision"] == "stable1"
    if promoted:
        assert "Promoted" in sim.events and sim.events.count("Promoted") == 1


def test_promote_passes_the_rest_of_a_timed_pause_but_not_a_weight_step() -> None:
    sim = started()
    sim.step(1, canary_ready=1, stable_replicas=4)
    sim.step(1, canary_ready=1, stable_replicas=4, action=Action("promote", "p0"))
    assert "no pause to pass" in sim.status["lastAction"]["result"]
    sim.step(30, canary_ready=1, stable_replicas=4, analysis=run("Passed"))
    assert sim.status["currentStep"] == 1  # pause 1m starts
    sim.step(1, canary_ready=1, stable_replicas=4, action=Action("promote", "p1"))
    assert sim.status["currentStep"] == 1  # approved, but needs a passing run in the step
    sim.step(5, canary_ready=1, stable_replicas=4, analysis=run("Passed"))
    assert sim.status["currentStep"] == 2  # 6 s into a 1 min pause
