"""The API models: DESIGN §2 field names, defaults, round trips, naming and durations."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import ValidationError
from tmo.api import (
    LONGEST_CHILD_SUFFIX,
    MAX_NAME_LENGTH,
    REVISION_LENGTH,
    Rollout,
    TransformerModel,
    child_name,
    load_manifest,
    parse_duration,
)
from tmo.api.manifest import UnknownKindError, field_path

from tests.api.examples import doc_id, example_docs
from tests.api.invalid_cases import BASE_MODEL, BASE_ROLLOUT


def _paths(node: Any, prefix: str = "") -> set[str]:
    out = set()
    if isinstance(node, dict):
        for k, v in node.items():
            out.add(prefix + k)
            out |= _paths(v, prefix + k + ".")
    elif isinstance(node, list):
        for item in node:
            out |= _paths(item, prefix)
    return out


# The field names DESIGN §2 pins (the contract docs, examples and dashboards rely on).
DESIGN_MODEL_FIELDS = {
    "spec.task", "spec.model.uri", "spec.model.format", "spec.model.sha256",
    "spec.model.credentialsSecretRef.name", "spec.runtime.image", "spec.runtime.workers",
    "spec.runtime.batchSize", "spec.runtime.maxBatchDelayMs", "spec.runtime.maxSequenceLength",
    "spec.runtime.precision", "spec.runtime.attention", "spec.runtime.responseTimeoutSeconds",
    "spec.resources.requests", "spec.resources.limits", "spec.scaling.minReplicas",
    "spec.scaling.maxReplicas", "spec.scaling.targetQueueLength", "spec.scaling.cooldownSeconds",
    "spec.monitoring.latencyP99Ms", "spec.monitoring.memoryUtilization",
    "spec.monitoring.errorRate", "spec.auth.tokenSecretRef.name", "spec.auth.tokenSecretRef.key",
    "spec.route.parentRefs.name", "spec.route.parentRefs.namespace", "spec.route.hostnames",
    "status.observedGeneration", "status.revision", "status.url", "status.replicas",
    "status.readyReplicas", "status.conditions",
}  # fmt: skip
DESIGN_ROLLOUT_FIELDS = {
    "spec.targetRef.name", "spec.paused", "spec.strategy.canary.steps.setWeight",
    "spec.strategy.canary.steps.pause.duration", "spec.analysis.interval",
    "spec.analysis.minRequests", "spec.analysis.failureLimit",
    "spec.analysis.maxConsecutiveErrors", "spec.analysis.onError", "spec.analysis.judge",
    "spec.analysis.metrics.name", "spec.analysis.metrics.builtin", "spec.analysis.metrics.query",
    "spec.analysis.metrics.max", "spec.analysis.alerts", "spec.traffic.router", "status.phase",
    "status.stableRevision", "status.canaryRevision", "status.currentStep", "status.canaryWeight",
    "status.analysis", "status.conditions", "status.observedGeneration",
}  # fmt: skip


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    out = set()
    for name, prop in schema.get("properties", {}).items():
        out.add(prefix + name)
        out |= _schema_paths(prop.get("items", prop), prefix + name + ".")
    return out


@pytest.mark.parametrize(
    ("model", "fields"),
    [(TransformerModel, DESIGN_MODEL_FIELDS), (Rollout, DESIGN_ROLLOUT_FIELDS)],
)
def test_design_field_names_exist(model: Any, fields: set[str]) -> None:
    from tmo.api.crd import openapi_schema

    missing = fields - _schema_paths(openapi_schema(model))
    assert not missing


def test_transformer_model_defaults() -> None:
    tm = load_manifest(BASE_MODEL)
    assert isinstance(tm, TransformerModel)
    spec = tm.spec
    assert spec.model.format == "huggingface"
    assert spec.model.sha256 is None
    assert (spec.runtime.image, spec.runtime.workers, spec.runtime.batch_size) == ("", 1, 8)
    assert spec.runtime.max_batch_delay_ms == 20
    assert spec.runtime.max_sequence_length == 512
    assert (spec.runtime.precision, spec.runtime.attention) == ("fp32", "sdpa")
    assert spec.runtime.response_timeout_seconds == 120
    assert (spec.scaling.min_replicas, spec.scaling.max_replicas) == (1, 10)
    assert (spec.scaling.target_queue_length, spec.scaling.cooldown_seconds) == (4, 300)
    assert spec.monitoring.latency_p99_ms == 250
    assert spec.monitoring.memory_utilization == 0.9
    assert spec.monitoring.error_rate == 0.01
    assert spec.auth is None and spec.route is None and tm.status is None


def test_rollout_defaults() -> None:
    ro = load_manifest(BASE_ROLLOUT)
    assert isinstance(ro, Rollout)
    assert ro.spec.paused is False
    a = ro.spec.analysis
    assert (a.interval, a.min_requests, a.effective_failure_limit, a.max_consecutive_errors) == (
        "30s", 100, 2, 4,
    )  # fmt: skip
    assert (a.on_error, a.judge, a.alerts) == ("hold", "threshold", [])
    # mannWhitney: one failed look rolls back (its test spends a budget over the looks)
    assert a.model_copy(update={"judge": "mannWhitney"}).effective_failure_limit == 0
    assert (
        a.model_copy(update={"judge": "mannWhitney", "failure_limit": 3}).effective_failure_limit
        == 3
    )
    assert (a.significance, a.tolerance) == (0.01, 0.1)
    assert ro.spec.traffic.router == "gatewayAPI"
    assert ro.spec.strategy.canary.steps[1].pause is not None
    assert ro.spec.strategy.canary.steps[1].pause.duration == "1m"


def test_snake_case_attributes_camel_case_wire() -> None:
    tm = TransformerModel.model_validate(BASE_MODEL)
    dumped = tm.model_dump(exclude_none=True)
    assert dumped["spec"]["runtime"]["maxBatchDelayMs"] == 20
    assert dumped["apiVersion"] == "tmo.dev/v1alpha1"
    assert "max_batch_delay_ms" not in str(dumped)


@pytest.mark.parametrize("doc", example_docs(), ids=doc_id)
def test_examples_round_trip(doc: dict[str, Any]) -> None:
    obj = load_manifest(doc)
    dumped = obj.model_dump(exclude_none=True, mode="json")
    assert load_manifest(dumped) == obj
    # Everything the manifest says survives (defaults are only added).
    assert _paths(doc) <= _paths(dumped)


def test_examples_cover_the_brief() -> None:
    docs = example_docs()
    tasks = {d["spec"]["task"] for d in docs if d["kind"] == "TransformerModel"}
    assert tasks >= {
        "text-classification", "summarization", "text-generation",
        "image-classification", "speech-recognition",
    }  # fmt: skip
    rollouts = [d["spec"] for d in docs if d["kind"] == "Rollout"]
    assert {r["analysis"]["judge"] for r in rollouts} == {"threshold", "mannWhitney"}
    assert {r.get("traffic", {}).get("router", "gatewayAPI") for r in rollouts} == {
        "gatewayAPI",
        "replicas",
    }
    assert any(r["analysis"].get("onError") == "rollback" for r in rollouts)
    assert any(s == {"pause": {}} for r in rollouts for s in r["strategy"]["canary"]["steps"])
    models = [d["spec"] for d in docs if d["kind"] == "TransformerModel"]
    assert any(m["runtime"].get("maxSequenceLength") == 8192 for m in models)
    assert any(m["runtime"].get("precision") == "int8" for m in models)
    assert any(
        m["runtime"].get("precision") == "bf16" and "nvidia.com/gpu" in m["resources"]["limits"]
        for m in models
    )


def test_status_round_trip() -> None:
    doc = {
        **BASE_ROLLOUT,
        "status": {
            "observedGeneration": 3,
            "phase": "Progressing",
            "currentStep": 2,
            "canaryWeight": 25,
            "analysis": {
                "verdict": "Inconclusive",
                "measurements": [
                    {"metric": "p99", "time": "2026-01-01T00:00:00Z", "verdict": "Inconclusive",
                     "requests": 12, "message": "12 requests < minRequests 100"},
                ],
            },
            "conditions": [
                {"type": "Ready", "status": "False", "reason": "Progressing",
                 "lastTransitionTime": "2026-01-01T00:00:00Z", "observedGeneration": 3},
            ],
        },
    }  # fmt: skip
    ro = load_manifest(doc)
    assert isinstance(ro, Rollout) and ro.status is not None
    assert ro.status.conditions[0].message == ""
    assert load_manifest(ro.model_dump(exclude_none=True)) == ro


def test_unknown_kind() -> None:
    with pytest.raises(UnknownKindError, match="unknown kind 'Deployment'"):
        load_manifest({"apiVersion": "apps/v1", "kind": "Deployment"})


def test_nulls_are_absent_like_on_the_api_server() -> None:
    doc = {**BASE_MODEL, "spec": {**BASE_MODEL["spec"], "runtime": {"workers": None}}}
    tm = load_manifest(doc)
    assert isinstance(tm, TransformerModel) and tm.spec.runtime.workers == 1


def test_field_path_format() -> None:
    assert field_path(("spec", "steps", 1, "setWeight")) == "spec.steps[1].setWeight"
    assert field_path(("spec", "scaling"), "minReplicas") == "spec.scaling.minReplicas"
    assert field_path((), "metadata.name") == "metadata.name"


def test_name_budget() -> None:
    assert len(LONGEST_CHILD_SUFFIX) == REVISION_LENGTH + len("--canary")
    assert MAX_NAME_LENGTH + len(LONGEST_CHILD_SUFFIX) == 63
    longest = "a" * MAX_NAME_LENGTH
    assert len(child_name(longest, "0123456789", "canary")) == 63
    assert child_name("m", "stable") == "m-stable"
    with pytest.raises(ValueError, match="reserved"):
        child_name("m", "0123456789", "canaryx")
    with pytest.raises(ValueError, match="DNS label"):
        child_name("m", "Canary")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h30m", 5400), ("1.5h", 5400), ("250ms", 0.25), ("0s", 0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "1d", "5 m", "-1s", "1h 30m", "s", "1.s"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_mapping_views_are_accepted() -> None:
    # kopf hands handlers Mapping views, not dicts; strict mode must not refuse them.
    from types import MappingProxyType

    spec = MappingProxyType({**BASE_MODEL["spec"], "scaling": MappingProxyType({"maxReplicas": 3})})
    tm = load_manifest(MappingProxyType({**BASE_MODEL, "spec": spec}))
    assert isinstance(tm, TransformerModel) and tm.spec.scaling.max_replicas == 3


def test_unknown_status_fields_are_ignored() -> None:
    doc = {**BASE_MODEL, "status": {"revision": "abc", "fromTheFuture": 1}}
    tm = load_manifest(doc)
    assert isinstance(tm, TransformerModel) and tm.status is not None
    assert tm.status.revision == "abc"


def test_input_read_like_the_api_server_decodes_it() -> None:
    # Integral floats are integers there, and null map values are pruned like null fields.
    doc = {
        **BASE_MODEL,
        "spec": {
            **BASE_MODEL["spec"],
            "scaling": {"maxReplicas": 3.0},
            "resources": {"limits": {"memory": "1Gi", "cpu": None}},
        },
    }
    tm = load_manifest(doc)
    assert isinstance(tm, TransformerModel)
    assert tm.spec.scaling.max_replicas == 3
    assert tm.spec.resources.limits == {"memory": "1Gi"}
    with pytest.raises(ValidationError):
        load_manifest({**doc, "spec": {**doc["spec"], "scaling": {"maxReplicas": 2.5}}})
