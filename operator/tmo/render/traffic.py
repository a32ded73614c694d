"""What a Rollout decided about serving, as the renderers need it. Plain data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Serving:
    """The stable revision, the live canary (if any), the canary's traffic weight (0-100) and
    replica count, and how traffic is split (gatewayAPI: HTTPRoute weights; replicas: one
    Service over both revisions)."""

    stable: str
    canary: str | None = None
    weight: int = 0
    canary_replicas: int = 0
    router: Literal["gatewayAPI", "replicas"] = "gatewayAPI"

    def weights(self) -> list[tuple[str, int]]:
        """(revision, weight) of the route's backends: stable first."""
        if self.canary is None:
            return [(self.stable, 100)]
        return [(self.stable, 100 - self.weight), (self.canary, self.weight)]

    def revision_services(self) -> list[str]:
        """Revisions that need their own Service (route backends)."""
        if self.router != "gatewayAPI":
            return []
        return [r for r, _ in self.weights()]
