"""Rollout: how a change to a TransformerModel goes live (DESIGN §2)."""

from __future__ import annotations

from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field

from tmo.api.common import (
    DURATION_PATTERN,
    APIModel,
    Duration,
    ObjectMeta,
    ResourceName,
    StatusModel,
    parse_duration,
)
from tmo.api.conditions import Conditions
from tmo.api.rules import Rule, cel_string, matches, unique

KIND: Final = "Rollout"

MAX_STEPS = 32
MAX_METRICS = 16

OnError = Literal["hold", "rollback"]
Judge = Literal["threshold", "mannWhitney"]
Router = Literal["gatewayAPI", "replicas"]
BuiltinMetric = Literal["latencyP50", "latencyP95", "latencyP99", "memoryUtilization", "errorRate"]
Phase = Literal["Idle", "Progressing", "Paused", "Promoting", "Succeeded", "RolledBack", "Aborted"]
Verdict = Literal["Passed", "Failed", "Inconclusive", "Error"]
ActionType = Literal["promote", "abort", "retry"]

# Imperative actions (`tmo rollout promote|abort|retry`) are this annotation on the Rollout, a
# JSON object {"action": "promote", "id": "...", "by": "...", "at": "RFC 3339"}. It is metadata,
# never spec, so it makes no Git drift; the operator acts once per id and records the id in
# status.lastAction, so a restart never repeats an action.
ACTION_ANNOTATION: Final = "tmo.dev/rollout-action"


class TargetReference(APIModel):
    """The TransformerModel a Rollout governs (same namespace)."""

    name: ResourceName
    """Name of the TransformerModel."""


class Pause(APIModel):
    """Wait before the next step: for a duration, or without one until approved (promote)."""

    duration: Duration | None = None
    """How long to wait (30s, 5m, 1h); absent means wait for `tmo rollout promote`."""


class Step(APIModel):
    """One canary step: either move traffic or pause. Analysis runs throughout."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.setWeight) != has(self.pause)",
            message="a step sets exactly one of setWeight or pause",
            check=lambda s: (s.set_weight is None) != (s.pause is None),
        ),
    )

    set_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Percentage (0-100) of traffic for the canary from this step on."""
    pause: Pause | None = None
    """Wait here; `pause: {}` waits for approval."""


def _weights(steps: list[Step]) -> list[int]:
    return [s.set_weight for s in steps if s.set_weight is not None]


Steps = Annotated[
    list[Step],
    Field(max_length=MAX_STEPS),
    Rule(
        cel="self.size() > 0",
        message="needs at least one step (setWeight or pause)",
        check=lambda steps: len(steps) > 0,
    ),
    Rule(
        cel="self.filter(s, has(s.setWeight)).map(s, s.setWeight).isSorted()",
        message="setWeight must not decrease from one step to the next",
        check=lambda steps: _weights(steps) == sorted(_weights(steps)),
    ),
]


class Canary(APIModel):
    """Canary strategy: the new revision runs beside the stable one while weights move."""

    steps: Steps
    """Steps in order; after the last one the canary is promoted to stable."""


class Strategy(APIModel):
    """How the new revision replaces the stable one."""

    canary: Canary
    """Step-wise canary with analysis."""


class Metric(APIModel):
    """A measurement that gates the canary: a built-in one or a PromQL query."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            cel="has(self.builtin) != has(self.query)",
            message="a metric sets exactly one of builtin or query",
            check=lambda m: (m.builtin is None) != (m.query is None),
        ),
        Rule(
            cel="!has(self.min) || !has(self.max) || self.min <= self.max",
            message="min must be less than or equal to max",
            check=lambda m: m.min is None or m.max is None or m.min <= m.max,
            field="min",
        ),
    )

    name: Annotated[
        str,
        Field(max_length=63),
        matches(
            r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
            "must be lowercase letters, digits and '-', starting and ending with a letter or digit",
        ),
    ]
    """Name of the metric, unique in the list (appears in status and events)."""
    builtin: BuiltinMetric | None = None
    """A metric TMO knows for the canary revision: latencyP50, latencyP95, latencyP99 (ms),
    memoryUtilization (fraction of the memory limit) or errorRate (fraction of 5xx)."""
    query: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """PromQL returning one number; {{revision}}, {{canary}}, {{stable}}, {{namespace}},
    {{model}} and {{interval}} are substituted."""
    max: float | None = None
    """The check fails when the value is above this."""
    min: float | None = None
    """The check fails when the value is below this."""


Alert = Annotated[
    str,
    Field(max_length=128),
    matches(r"^[a-zA-Z_][a-zA-Z0-9_]*$", "must be a Prometheus alert name (letters, digits, _)"),
]


class Analysis(APIModel):
    """Prometheus-gated checks run every interval while a canary is live."""

    cel_rules: ClassVar[tuple[Rule, ...]] = (
        Rule(
            # has(self.judge): `default: {}` is checked against this rule before defaulting.
            cel="!has(self.judge) || self.judge != 'threshold' || !has(self.metrics) || "
            "self.metrics.all(m, has(m.max) || has(m.min))",
            message="with judge threshold every metric needs max or min",
            check=lambda a: (
                a.judge != "threshold"
                or all(m.max is not None or m.min is not None for m in a.metrics)
            ),
            field="metrics",
        ),
        Rule(
            cel="!has(self.judge) || self.judge != 'mannWhitney' || !has(self.metrics) || "
            "self.metrics.all(m, has(m.query) || m.builtin == 'memoryUtilization' || "
            "(!has(m.max) && !has(m.min)))",
            message="with judge mannWhitney latency and errorRate metrics are compared with "
            "stable and take no max or min (use alerts for absolute limits)",
            check=lambda a: (
                a.judge != "mannWhitney"
                or all(
                    m.query is not None
                    or m.builtin == "memoryUtilization"
                    or (m.max is None and m.min is None)
                    for m in a.metrics
                )
            ),
            field="metrics",
        ),
        Rule(
            cel="!has(self.judge) || self.judge != 'mannWhitney' || !has(self.metrics) || "
            "self.metrics.all(m, !(has(m.query) || m.builtin == 'memoryUtilization') || "
            "has(m.max) || has(m.min))",
            message="with judge mannWhitney memoryUtilization and query metrics need max or min "
            "(only latency and errorRate are compared with stable)",
            check=lambda a: (
                a.judge != "mannWhitney"
                or all(
                    not (m.query is not None or m.builtin == "memoryUtilization")
                    or m.max is not None
                    or m.min is not None
                    for m in a.metrics
                )
            ),
            field="metrics",
        ),
    )

    interval: Annotated[
        Duration,
        Rule(
            cel=f"!self.matches({cel_string(DURATION_PATTERN)}) || "
            "duration(self) >= duration('1s')",
            message="must be at least 1s",
            check=lambda v: parse_duration(v).total_seconds() >= 1,
        ),
    ] = "30s"
    """How often measurements are taken."""
    min_requests: Annotated[int, Field(ge=0)] = 100
    """Fewer canary requests than this in a window (mannWhitney: since the canary started)
    means no verdict yet, not failure."""
    failure_limit: Annotated[int, Field(ge=0, le=1000)] | None = None
    """Failed runs tolerated; one more rolls back. Default: 2 with judge threshold (one noisy
    window should not roll back), 0 with mannWhitney (its test already spends a false-rollback
    budget over the looks, so one failed look is the verdict)."""
    max_consecutive_errors: Annotated[int, Field(ge=0, le=1000)] = 4
    """Consecutive measurement errors (Prometheus unreachable, bad query) before onError."""
    on_error: OnError = "hold"
    """What too many measurement errors do: hold (pause and wait) or rollback."""
    judge: Judge = "threshold"
    """How a measurement becomes a verdict: threshold (canary value against max/min) or
    mannWhitney (latency and errorRate: canary requests against stable requests since the
    canary started, one-sided Mann-Whitney U test; memory and queries keep max/min)."""
    significance: Annotated[float, Field(gt=0, le=0.5)] = 0.01
    """mannWhitney: the false-rollback rate allowed over the whole rollout. It is spent over
    the looks (look k may use significance * 6 / (pi^2 k^2), split between the compared
    metrics), so checking every interval does not inflate it."""
    tolerance: Annotated[float, Field(ge=0, le=10)] = 0.1
    """mannWhitney: the smallest relative change worth a rollback (0.1: the canary's p99 or
    error rate at least 10 % above stable's). A significant but smaller difference passes."""
    metrics: Annotated[
        list[Metric],
        Field(
            max_length=MAX_METRICS,
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["name"],
            },
        ),
        Rule(
            cel="self.all(m, self.exists_one(n, n.name == m.name))",
            message="metric names must be unique",
            check=lambda ms: len({m.name for m in ms}) == len(ms),
        ),
    ] = Field(default_factory=list)
    """Gates; empty means the target's monitoring thresholds (latencyP99, memoryUtilization,
    errorRate)."""
    alerts: Annotated[
        list[Alert],
        Field(max_length=16, json_schema_extra={"x-kubernetes-list-type": "set"}),
        unique(),
    ] = Field(default_factory=list)
    """Prometheus alerts that fail a check when firing for the canary revision."""

    @property
    def effective_failure_limit(self) -> int:
        """failureLimit, or the judge's default when it is not set."""
        if self.failure_limit is not None:
            return self.failure_limit
        return 0 if self.judge == "mannWhitney" else 2


class Traffic(APIModel):
    """How traffic is split between stable and canary."""

    router: Router = "gatewayAPI"
    """gatewayAPI (weights on the model's HTTPRoute; needs spec.route) or replicas (the replica
    ratio of stable and canary behind one Service)."""


class RolloutSpec(APIModel):
    """How changes to the target TransformerModel go live."""

    target_ref: TargetReference
    """The TransformerModel whose changes this Rollout governs."""
    paused: bool = False
    """Hold the rollout where it is (a gate to toggle in Git)."""
    strategy: Strategy
    """Canary steps."""
    analysis: Analysis = Field(default_factory=Analysis, json_schema_extra={"default": {}})
    """Checks that gate each step."""
    traffic: Traffic = Field(default_factory=Traffic, json_schema_extra={"default": {}})
    """Traffic splitting."""


class Measurement(StatusModel):
    """One metric measured in one analysis run."""

    metric: Annotated[str, Field(max_length=63)]
    """Name of the metric (or alert:NAME for an alert check)."""
    time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """When it was measured (RFC 3339)."""
    verdict: Verdict
    """Passed, Failed, Inconclusive (e.g. too few requests) or Error (query failed)."""
    value: float | None = None
    """The canary's value."""
    stable_value: float | None = None
    """The stable revision's value (mannWhitney)."""
    requests: Annotated[int, Field(ge=0)] | None = None
    """Canary requests in the window."""
    message: Annotated[str, Field(max_length=1024)] = ""
    """Why this verdict."""


class AnalysisStatus(StatusModel):
    """Recent analysis results for the current canary."""

    verdict: Verdict | None = None
    """Outcome of the latest run."""
    last_run_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    """When the latest run happened."""
    summary: Annotated[str, Field(max_length=1024)] = ""
    """The latest run in one line: the failing metrics with values and thresholds, or why
    there is no verdict (too few canary requests, measurement errors)."""
    passed: Annotated[int, Field(ge=0)] = 0
    """Passed runs for this canary."""
    failed: Annotated[int, Field(ge=0)] = 0
    """Failed runs for this canary (compared with failureLimit)."""
    inconclusive: Annotated[int, Field(ge=0)] = 0
    """Runs without a verdict (e.g. fewer than minRequests)."""
    consecutive_errors: Annotated[int, Field(ge=0)] = 0
    """Errored runs in a row (compared with maxConsecutiveErrors)."""
    measurements: Annotated[list[Measurement], Field(max_length=64)] = Field(default_factory=list)
    """The latest measurements, newest last."""


class ActionRecord(StatusModel):
    """An imperative action (promote, abort, retry) the operator has carried out."""

    action: ActionType
    """promote, abort or retry."""
    id: Annotated[str, Field(max_length=128)]
    """The action's id from the tmo.dev/rollout-action annotation (acted on once)."""
    by: Annotated[str, Field(max_length=256)] = ""
    """Who asked for it (the user the CLI authenticated as)."""
    requested_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    """When it was asked for (RFC 3339)."""
    handled_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """When the operator acted on it (RFC 3339)."""
    result: Annotated[str, Field(max_length=1024)] = ""
    """What it did, or why it did nothing."""
    step: Annotated[int, Field(ge=0)] | None = None
    """promote: the step it approved (a pause without duration passes once approved)."""


class RolloutStatus(StatusModel):
    """Observed state, written by the operator through the status subresource."""

    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation the operator last acted on."""
    phase: Phase | None = None
    """Idle, Progressing, Paused, Promoting, Succeeded, RolledBack or Aborted."""
    stable_revision: Annotated[str, Field(max_length=64)] | None = None
    """Revision serving the stable traffic."""
    canary_revision: Annotated[str, Field(max_length=64)] | None = None
    """Revision being rolled out, if any."""
    current_step: Annotated[int, Field(ge=0)] | None = None
    """Index of the step in progress."""
    canary_weight: Annotated[int, Field(ge=0, le=100)] | None = None
    """Percentage of traffic on the canary."""
    canary_started_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = (
        None
    )
    """When the current canary started (RFC 3339)."""
    step_started_at: Annotated[str, Field(json_schema_extra={"format": "date-time"})] | None = None
    """When the current step started (RFC 3339): pause durations count from it, so an operator
    restart never restarts a pause."""
    last_action: ActionRecord | None = None
    """The latest imperative action (promote, abort, retry) carried out."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """What is happening, for people."""
    analysis: AnalysisStatus | None = None
    """Recent measurements, verdicts and counts."""
    conditions: Conditions = Field(default_factory=list)
    """Ready, Reconciling, Stalled, Promoted, AnalysisPassing."""


class Rollout(APIModel):
    """Canary rollout of a TransformerModel's changes: traffic steps gated by Prometheus
    analysis, automatic promotion or rollback, manual approval gates."""

    api_version: Literal["tmo.dev/v1alpha1"] = "tmo.dev/v1alpha1"
    """APIVersion of this object: tmo.dev/v1alpha1."""
    kind: Literal["Rollout"] = "Rollout"
    """Kind of this object: Rollout."""
    metadata: ObjectMeta
    """Standard object metadata."""
    spec: RolloutSpec
    """How changes go live."""
    status: RolloutStatus | None = None
    """Observed state (status subresource)."""
