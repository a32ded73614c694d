"""Read the TransformerModel fields the runtime needs from a manifest.

TODO(tmo.api): the pydantic API models in `operator/tmo/api` are being written in parallel.
`serve_spec_from_dict` is the single adapter from the plain manifest dict; switch its body to
`tmo.api` models once they exist so defaults and validation have one definition.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

API_VERSION = "tmo.dev/v1alpha1"
KIND = "TransformerModel"
TASKS = (
    "text-classification",
    "token-classification",
    "summarization",
    "text-generation",
    "image-classification",
    "speech-recognition",
    "feature-extraction",
)
PRECISIONS = ("fp32", "bf16", "fp16", "int8")
ATTENTIONS = ("sdpa", "eager", "flash_attention_2")
FORMATS = ("huggingface", "mar", "torchscript", "onnx")


class ManifestError(ValueError):
    """The manifest cannot be served as written."""


@dataclass(frozen=True)
class ServeSpec:
    name: str
    namespace: str
    task: str
    model_uri: str
    model_format: str
    model_sha256: str | None
    workers: int
    batch_size: int
    max_batch_delay_ms: int
    max_sequence_length: int
    precision: str
    attention: str
    response_timeout_s: int
    auth_required: bool
    revision: str
    base_dir: Path  # relative file:// URIs resolve against the manifest's directory


def _get(d: Mapping[str, Any], key: str, default: Any) -> Any:
    value = d.get(key, default)
    return default if value is None else value


def _choice(value: str, allowed: Iterable[str], what: str) -> str:
    options = tuple(allowed)
    if value not in options:
        raise ManifestError(f"{what} must be one of {', '.join(options)}; got {value!r}")
    return value


def _positive(value: Any, what: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ManifestError(f"{what} must be a positive integer; got {value!r}")
    return value


def revision_of(spec: Mapping[str, Any]) -> str:
    """Short hash of the spec fields that change the pod (the reconciler owns the real one)."""
    relevant = {k: spec.get(k) for k in ("task", "model", "runtime", "resources")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:7]


def serve_spec_from_dict(doc: Mapping[str, Any], base_dir: Path) -> ServeSpec:
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise ManifestError(
            f"expected apiVersion {API_VERSION} kind {KIND}; "
            f"got {doc.get('apiVersion')!r} {doc.get('kind')!r}"
        )
    meta = _get(doc, "metadata", {})
    spec = _get(doc, "spec", {})
    name = meta.get("name")
    if not name or not isinstance(name, str):
        raise ManifestError("metadata.name is required")
    model = _get(spec, "model", {})
    uri = model.get("uri")
    if not uri or not isinstance(uri, str):
        raise ManifestError("spec.model.uri is required")
    runtime = _get(spec, "runtime", {})
    auth = _get(spec, "auth", {})
    sha = model.get("sha256")
    return ServeSpec(
        name=name,
        namespace=str(_get(meta, "namespace", "default")),
        task=_choice(str(spec.get("task")), TASKS, "spec.task"),
        model_uri=uri,
        model_format=_choice(str(_get(model, "format", "huggingface")), FORMATS, "model.format"),
        model_sha256=str(sha).lower() if sha else None,
        workers=_positive(_get(runtime, "workers", 1), "runtime.workers"),
        batch_size=_positive(_get(runtime, "batchSize", 8), "runtime.batchSize"),
        max_batch_delay_ms=int(_get(runtime, "maxBatchDelayMs", 20)),
        max_sequence_length=_positive(
            _get(runtime, "maxSequenceLength", 512), "runtime.maxSequenceLength"
        ),
        precision=_choice(str(_get(runtime, "precision", "fp32")), PRECISIONS, "precision"),
        attention=_choice(str(_get(runtime, "attention", "sdpa")), ATTENTIONS, "attention"),
        response_timeout_s=_positive(
            _get(runtime, "responseTimeoutSeconds", 120), "runtime.responseTimeoutSeconds"
        ),
        auth_required=bool(auth.get("tokenSecretRef")),
        revision=revision_of(spec),
        base_dir=base_dir,
    )


def load_manifests(path: Path) -> list[ServeSpec]:
    """Every TransformerModel in a (possibly multi-document) YAML file."""
    text = path.read_text()
    specs = []
    for doc in yaml.safe_load_all(text):
        if not doc:
            continue
        if doc.get("kind") != KIND:
            continue  # a Rollout or Secret beside the model is fine to skip
        specs.append(serve_spec_from_dict(doc, path.resolve().parent))
    if not specs:
        raise ManifestError(f"{path}: no {KIND} found")
    return specs
