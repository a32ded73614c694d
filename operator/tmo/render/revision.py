"""`status.revision`: a short hash of everything that changes a model's pods.

Scaling, monitoring thresholds and the route are deliberately left out: changing them must update
the ScaledObject, PrometheusRule or HTTPRoute in place, never roll (or canary) new pods.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tmo.api import REVISION_LENGTH
from tmo.render.settings import RenderSettings

# Spec sections that end up in the pod template or in the per-revision ConfigMap.
POD_AFFECTING = ("task", "model", "runtime", "resources", "auth")


def runtime_image(spec: dict[str, Any], settings: RenderSettings) -> str:
    return str(spec.get("runtime", {}).get("image") or settings.runtime_image)


def pod_inputs(spec: dict[str, Any], settings: RenderSettings) -> dict[str, Any]:
    inputs = {key: spec.get(key) for key in POD_AFFECTING}
    # The image actually run, so a new operator default image is a new revision too.
    inputs["runtime"] = {**(spec.get("runtime") or {}), "image": runtime_image(spec, settings)}
    return inputs


def stable_hash(data: Any, length: int = REVISION_LENGTH) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:length]


def compute_revision(spec: dict[str, Any], settings: RenderSettings) -> str:
    return stable_hash(pod_inputs(spec, settings))
