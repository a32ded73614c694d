"""The one input every renderer reads: a TransformerModel as plain data, validated and defaulted.

The API models in `tmo.api` are the single source of truth for fields and defaults; this module
only turns a manifest into the camelCase dict they define (`model_dump(by_alias=True)`), so the
renderers read the same names as the CRD and the docs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from tmo.api import TransformerModelSpec


def validated_spec(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The spec as the API defines it (defaults filled in); ValueError when it is invalid."""
    spec = TransformerModelSpec.model_validate(dict(obj.get("spec") or {}))
    return dict(spec.model_dump(by_alias=True, exclude_none=True, mode="json"))


def load(obj: Mapping[str, Any], default_namespace: str = "default") -> dict[str, Any]:
    """A TransformerModel with its namespace set and a validated, defaulted spec."""
    meta = dict(obj.get("metadata") or {})
    meta["namespace"] = meta.get("namespace") or default_namespace
    return {
        "apiVersion": obj.get("apiVersion", "tmo.dev/v1alpha1"),
        "kind": obj.get("kind", "TransformerModel"),
        "metadata": meta,
        "spec": validated_spec(obj),
    }


def describe_error(e: ValueError) -> str:
    """What is wrong with a spec, one `spec.FIELD: problem` per error (pydantic's own text names
    the model class and repeats the whole input)."""
    if not isinstance(e, ValidationError):
        return str(e)
    return "; ".join(
        ".".join(["spec", *(str(p) for p in err.get("loc", ()))]) + f": {err.get('msg', 'invalid')}"
        for err in e.errors()
    )
