"""The Rollout's canary logic, pure: the state machine, conditions and replica sizing.

The kopf shell (tmo.kube) observes, calls `next_state` and carries out the `Decision`.
"""

from tmo.rollout.conditions import rollout_conditions
from tmo.rollout.machine import (
    LIVE,
    Action,
    AnalysisResult,
    Decision,
    Event,
    Observation,
    Problem,
    TrafficPlan,
    analysis_due,
    canary_look,
    held_decision,
    next_state,
    parse_action,
    parse_time,
    rfc3339,
    step_label,
)
from tmo.rollout.replicas import canary_replicas, replica_share

__all__ = [
    "LIVE",
    "Action",
    "AnalysisResult",
    "Decision",
    "Event",
    "Observation",
    "Problem",
    "TrafficPlan",
    "analysis_due",
    "canary_look",
    "canary_replicas",
    "held_decision",
    "next_state",
    "parse_action",
    "parse_time",
    "replica_share",
    "rfc3339",
    "rollout_conditions",
    "step_label",
]
