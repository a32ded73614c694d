"""How many canary replicas a traffic weight needs. Pure.

- gatewayAPI: the HTTPRoute splits by weight, so the canary needs capacity for its share:
  ceil(stable x weight / 100), at least one (a canary proven to start before traffic moves).
- replicas: one Service over both revisions splits by pod count, so the canary's count sets its
  share: c / (c + stable) ~ weight / 100, i.e. c = stable x w / (100 - w), rounded, at least one
  for any weight above 0. The achieved share is coarse with few replicas (1 of 3 pods is 33 %):
  `replica_share` says what it really is.
"""

from __future__ import annotations

import math

from tmo.api.rollout import Router


def canary_replicas(weight: int | None, stable: int, router: Router) -> int:
    """`weight` None: promotion, the canary takes the stable's size."""
    stable = max(stable, 1)
    if weight is None or weight >= 100:
        return stable
    if router == "gatewayAPI":
        return max(1, math.ceil(stable * weight / 100))
    if weight <= 0:
        return 0
    return max(1, round(stable * weight / (100 - weight)))


def replica_share(canary: int, stable: int) -> float:
    """The fraction of traffic a Service spreading requests evenly over pods gives the canary."""
    total = canary + stable
    return canary / total if total else 0.0
