"""Status conditions, shaped like metav1.Condition (kubebuilder conventions), and their names.

kstatus (Flux) and Argo CD read `Ready`, `Reconciling` and `Stalled`: Ready is always present;
Reconciling and Stalled are present only while True (DESIGN §2, status conventions).
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from tmo.api.common import StatusModel

# Condition types.
READY = "Ready"
RECONCILING = "Reconciling"
STALLED = "Stalled"
PROMOTED = "Promoted"
ANALYSIS_PASSING = "AnalysisPassing"

# Reasons used across both kinds.
REASON_AWAITING_APPROVAL = "AwaitingApproval"
REASON_ANALYSIS_FAILED = "AnalysisFailed"
REASON_ABORTED = "Aborted"
REASON_INVALID_SPEC = "InvalidSpec"

ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(StatusModel):
    """One aspect of the resource's current state (metav1.Condition)."""

    type: Annotated[
        str,
        Field(
            max_length=316,
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        ),
    ]
    """Type of condition in CamelCase: Ready, Reconciling, Stalled, Promoted, AnalysisPassing."""
    status: ConditionStatus
    """Status of the condition: True, False or Unknown."""
    observed_generation: Annotated[int, Field(ge=0)] | None = None
    """The metadata.generation this condition was computed from."""
    last_transition_time: Annotated[str, Field(json_schema_extra={"format": "date-time"})]
    """When the condition last changed status (RFC 3339)."""
    reason: Annotated[
        str,
        Field(min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"),
    ]
    """A CamelCase, machine-readable reason for the last transition."""
    message: Annotated[str, Field(max_length=32768)] = ""
    """A human-readable explanation of the last transition."""


Conditions = Annotated[
    list[Condition],
    Field(
        json_schema_extra={
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["type"],
        },
    ),
]
