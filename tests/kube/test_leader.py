"""The Lease rules of leader election, on plain data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tmo.kube import leader

T0 = datetime(2026, 12, 2, 4, 0, 0, 123456, tzinfo=UTC)
TIMING = leader.LeaseTiming(duration_s=15, renew_deadline_s=10, retry_s=2)


def _lease(
    holder: str, renewed: datetime | None, rv: str = "7", transitions: int = 3
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "holderIdentity": holder,
        "leaseDurationSeconds": 15,
        "leaseTransitions": transitions,
    }
    if renewed:
        spec["renewTime"] = leader.micro_time(renewed)
        spec["acquireTime"] = leader.micro_time(renewed - timedelta(minutes=5))
    return {"metadata": {"name": "tmo-operator", "resourceVersion": rv}, "spec": spec}


def test_no_lease_is_created_and_a_fresh_one_held_by_another_is_waited_for() -> None:
    assert leader.next_step(None, "a", T0) == "create"
    held = leader.parse_lease(_lease("b", T0 - timedelta(seconds=14)))
    assert leader.next_step(held, "a", T0) == "wait"


def test_an_expired_or_released_lease_is_taken_and_ones_own_is_renewed() -> None:
    expired = leader.parse_lease(_lease("b", T0 - timedelta(seconds=15)))
    assert leader.next_step(expired, "a", T0) == "take"
    released = leader.parse_lease(_lease("", T0))
    assert leader.next_step(released, "a", T0) == "take"
    mine = leader.parse_lease(_lease("a", T0 - timedelta(seconds=14)))
    assert leader.next_step(mine, "a", T0) == "renew"


def test_a_take_counts_a_transition_and_is_conditional_on_the_read_version() -> None:
    expired = leader.parse_lease(_lease("b", T0 - timedelta(seconds=60), rv="42"))
    body = leader.lease_object("ops", "tmo-operator", "a", T0, TIMING, expired)
    assert body["metadata"]["resourceVersion"] == "42"
    assert body["spec"]["holderIdentity"] == "a"
    assert body["spec"]["leaseTransitions"] == 4
    assert body["spec"]["acquireTime"] == body["spec"]["renewTime"] == "2026-12-02T04:00:00.123456Z"


def test_a_renewal_keeps_acquire_time_and_transitions() -> None:
    mine = leader.parse_lease(_lease("a", T0 - timedelta(seconds=2)))
    assert mine is not None and mine.acquired is not None
    body = leader.lease_object("ops", "tmo-operator", "a", T0, TIMING, mine)
    assert body["spec"]["leaseTransitions"] == 3
    assert body["spec"]["acquireTime"] == leader.micro_time(mine.acquired)
    assert body["spec"]["renewTime"] == leader.micro_time(T0)


def test_release_clears_the_holder_so_a_standby_need_not_wait() -> None:
    mine = leader.parse_lease(_lease("a", T0))
    assert mine is not None
    body = leader.released(mine, "ops", "tmo-operator", T0)
    assert body["spec"]["holderIdentity"] is None
    view = leader.parse_lease(body)
    assert leader.next_step(view, "b", T0) == "take"


@pytest.mark.parametrize(
    ("duration", "deadline", "retry"), [(10, 10, 2), (15, 10, 10), (15, 10, 0)]
)
def test_timings_that_could_let_two_leaders_overlap_are_refused(
    duration: int, deadline: float, retry: float
) -> None:
    with pytest.raises(ValueError, match="retry < renew deadline < lease duration"):
        leader.LeaseTiming(duration, deadline, retry)
