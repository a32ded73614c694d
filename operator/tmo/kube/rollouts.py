"""The Rollout side of the reconcile shell: which Rollout governs a model, what is observed for
the state machine, and how its status is written. Decisions are tmo.rollout's; this module only
reads, builds plain inputs and formats outputs.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from tmo.api.rollout import RolloutSpec, RolloutStatus
from tmo.kube.status import DeploymentState
from tmo.render import names
from tmo.rollout import Problem

Key = tuple[str, str]


@dataclass
class RolloutIndex:
    """Every Rollout the operator watches, by key, and which of them target a model."""

    bodies: dict[Key, dict[str, Any]] = field(default_factory=dict)

    def put(self, body: dict[str, Any]) -> str | None:
        """Store the body; returns the target it had before, if that changed."""
        key = key_of(body)
        before = self.bodies.get(key)
        self.bodies[key] = body
        old = target_of(before) if before is not None else None
        return old if old is not None and old != target_of(body) else None

    def pop(self, key: Key) -> dict[str, Any] | None:
        return self.bodies.pop(key, None)

    def targeting(self, namespace: str, model: str) -> list[dict[str, Any]]:
        """Rollouts that target this model, the governing one first: the oldest (then by
        name), so a second Rollout created later never takes a running canary over."""
        found = [
            b for (ns, _), b in self.bodies.items() if ns == namespace and target_of(b) == model
        ]
        return sorted(
            found,
            key=lambda b: (
                str(b["metadata"].get("creationTimestamp", "")),
                b["metadata"]["name"],
            ),
        )


def key_of(body: dict[str, Any]) -> Key:
    return (body["metadata"]["namespace"], body["metadata"]["name"])


def target_of(body: dict[str, Any]) -> str | None:
    ref = (body.get("spec") or {}).get("targetRef") or {}
    name = ref.get("name")
    return str(name) if name else None


@dataclass(frozen=True)
class ParsedRollout:
    spec: RolloutSpec | None
    status: RolloutStatus
    problem: Problem | None


def parse_rollout(body: dict[str, Any]) -> ParsedRollout:
    """The Rollout through the API models. A spec the API server admitted should parse; if it
    does not (an older CRD without validation), the Rollout is Stalled, never a crash."""
    try:
        status = RolloutStatus.model_validate(body.get("status") or {})
    except ValidationError as e:
        return ParsedRollout(None, RolloutStatus(), Problem("InvalidStatus", _first_error(e)))
    try:
        spec = RolloutSpec.model_validate(body.get("spec") or {})
    except ValidationError as e:
        return ParsedRollout(None, status, Problem("InvalidSpec", _first_error(e)))
    return ParsedRollout(spec, status, None)


def _first_error(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err.get("loc", ()))
    return f"spec.{where}: {err.get('msg', 'invalid')}"


def deployments_by_revision(deployments: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    out = {}
    for d in deployments:
        revision = (d["metadata"].get("labels") or {}).get(names.LABEL_REVISION)
        if revision:
            out[revision] = d
    return out


def ready_replicas(deployment: dict[str, Any] | None) -> int:
    """Available replicas of the Deployment's current spec (0 while the controller has not
    caught up with a scale, so a step never moves traffic on a stale count)."""
    if deployment is None:
        return 0
    state = DeploymentState.from_object(deployment)
    if not state.up_to_date:
        return 0
    return min(state.available, state.desired)


def spec_replicas(deployment: dict[str, Any] | None) -> int:
    if deployment is None:
        return 0
    return int((deployment.get("spec") or {}).get("replicas", 1))


def merge_patch(previous: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch that turns `previous` into `new`: keys that went away become null
    (a plain merge patch of `new` would keep them), nested objects likewise; lists replace."""
    patch: dict[str, Any] = {}
    for k, v in new.items():
        old = previous.get(k)
        if isinstance(v, dict) and isinstance(old, dict):
            patch[k] = merge_patch(old, v)
        else:
            patch[k] = v
    for k in previous:
        if k not in new:
            patch[k] = None
    return patch


def same_status(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    return bool(_normal(a or {}) == _normal(b or {}))


def _normal(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: _normal(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [_normal(x) for x in v]
    if isinstance(v, float) and v.is_integer():
        return int(v)
    return v
