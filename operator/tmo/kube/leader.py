"""Leader election on a coordination.k8s.io Lease: the pure part (what to do with a Lease).

The rules are client-go's: a Lease is free when it has no holder or its holder has not renewed
it within leaseDurationSeconds; the holder renews every retry period and gives up (the process
exits) when it could not renew within the renew deadline, which is shorter than the lease
duration, so it has stopped writing before anyone else may take over.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

LEASE_API = "coordination.k8s.io/v1"

Step = Literal["create", "take", "renew", "wait"]


@dataclass(frozen=True)
class LeaseTiming:
    duration_s: int = 15
    renew_deadline_s: float = 10.0
    retry_s: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.retry_s < self.renew_deadline_s < self.duration_s:
            raise ValueError(
                "leader election needs retry < renew deadline < lease duration, got "
                f"{self.retry_s} / {self.renew_deadline_s} / {self.duration_s}"
            )


@dataclass(frozen=True)
class LeaseView:
    holder: str
    renewed: datetime | None
    duration_s: int
    transitions: int
    acquired: datetime | None
    resource_version: str

    def expired(self, now: datetime) -> bool:
        if not self.holder or self.renewed is None:
            return True
        return now >= self.renewed + timedelta(seconds=self.duration_s)


def micro_time(t: datetime) -> str:
    """Kubernetes MicroTime: RFC 3339 in UTC with microseconds."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def parse_lease(obj: dict[str, Any] | None) -> LeaseView | None:
    if obj is None:
        return None
    spec = obj.get("spec") or {}
    return LeaseView(
        holder=str(spec.get("holderIdentity") or ""),
        renewed=_parse_time(spec.get("renewTime")),
        duration_s=int(spec.get("leaseDurationSeconds") or 0),
        transitions=int(spec.get("leaseTransitions") or 0),
        acquired=_parse_time(spec.get("acquireTime")),
        resource_version=str((obj.get("metadata") or {}).get("resourceVersion", "")),
    )


def next_step(lease: LeaseView | None, me: str, now: datetime) -> Step:
    if lease is None:
        return "create"
    if lease.holder == me:
        return "renew"
    return "take" if lease.expired(now) else "wait"


def lease_object(
    namespace: str,
    name: str,
    me: str,
    now: datetime,
    timing: LeaseTiming,
    previous: LeaseView | None,
) -> dict[str, Any]:
    """The Lease to write for `next_step`'s create, take or renew. A take counts a transition;
    the resourceVersion makes the write conditional, so two standbys cannot both take it."""
    renewing = previous is not None and previous.holder == me
    acquired = previous.acquired if renewing and previous and previous.acquired else now
    transitions = (previous.transitions if previous else 0) + (0 if renewing or not previous else 1)
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if previous is not None:
        metadata["resourceVersion"] = previous.resource_version
    return {
        "apiVersion": LEASE_API,
        "kind": "Lease",
        "metadata": metadata,
        "spec": {
            "holderIdentity": me,
            "leaseDurationSeconds": timing.duration_s,
            "acquireTime": micro_time(acquired),
            "renewTime": micro_time(now),
            "leaseTransitions": transitions,
        },
    }


def released(lease: LeaseView, namespace: str, name: str, now: datetime) -> dict[str, Any]:
    """The Lease given back on a clean shutdown: no holder, so a standby takes it at once
    instead of waiting out the duration."""
    return {
        "apiVersion": LEASE_API,
        "kind": "Lease",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "resourceVersion": lease.resource_version,
        },
        "spec": {
            "holderIdentity": None,
            "leaseDurationSeconds": 1,
            "renewTime": micro_time(now),
            "leaseTransitions": lease.transitions,
        },
    }
