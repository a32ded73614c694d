"""Read the TransformerModel fields the runtime needs from a manifest.

Validation and defaults come from the API models in `tmo.api` (the one definition of the API);
`ServeSpec` is the runtime's flat view of what it needs.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError
from tmo.api import TransformerModel

from tmo_runtime.ts_config import HandlerSettings, ModelEntry

KIND = "TransformerModel"


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
    max_new_tokens: int
    max_chunks: int
    precision: str
    attention: str
    response_timeout_s: int
    auth_required: bool
    revision: str
    base_dir: Path  # relative file:// URIs resolve against the manifest's directory

    def model_entry(self, url: str = "") -> ModelEntry:
        """TorchServe's registration of this model (batching, workers, timeout from the spec)."""
        return ModelEntry(
            name=self.name,
            url=url,
            workers=self.workers,
            batch_size=self.batch_size,
            max_batch_delay_ms=self.max_batch_delay_ms,
            response_timeout_s=self.response_timeout_s,
        )

    def handler_settings(self) -> HandlerSettings:
        """What TMO's TorchServe handler reads from the packaged model (task, dtype, window)."""
        return HandlerSettings(
            task=self.task,
            precision=self.precision,
            attention=self.attention,
            max_sequence_length=self.max_sequence_length,
            max_new_tokens=self.max_new_tokens,
            max_chunks=self.max_chunks,
        )


def revision_of(spec: Mapping[str, Any]) -> str:
    """Short hash of the spec fields that change the pod (the reconciler owns the real one)."""
    relevant = {k: spec.get(k) for k in ("task", "model", "runtime", "resources")}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:7]


def _validation_message(e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"])
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def serve_spec_from_dict(doc: Mapping[str, Any], base_dir: Path) -> ServeSpec:
    try:
        tm = TransformerModel.model_validate(dict(doc))
    except ValidationError as e:
        name = (doc.get("metadata") or {}).get("name", "?")
        raise ManifestError(f"TransformerModel {name}: {_validation_message(e)}") from e
    spec, runtime = tm.spec, tm.spec.runtime
    raw_spec = dict(doc.get("spec") or {})
    # In a pod the operator's revision comes with the manifest; locally, hash the spec.
    revision = (tm.status.revision if tm.status else None) or revision_of(raw_spec)
    return ServeSpec(
        name=tm.metadata.name,
        namespace=tm.metadata.namespace or "default",
        task=spec.task,
        model_uri=spec.model.uri,
        model_format=spec.model.format,
        model_sha256=spec.model.sha256,
        workers=runtime.workers,
        batch_size=runtime.batch_size,
        max_batch_delay_ms=runtime.max_batch_delay_ms,
        max_sequence_length=runtime.max_sequence_length,
        max_new_tokens=runtime.max_new_tokens,
        max_chunks=runtime.max_chunks,
        precision=runtime.precision,
        attention=runtime.attention,
        response_timeout_s=runtime.response_timeout_seconds,
        auth_required=spec.auth is not None,
        revision=revision,
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
