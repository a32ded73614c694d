"""CustomResourceDefinitions generated from the pydantic models.

Pydantic's JSON Schema is turned into a Kubernetes structural schema: $refs inlined, nullable
unions collapsed to their non-null member (absent == null for the API server, which prunes
nulls), titles dropped, JSON-Schema-2020 numeric exclusivity rewritten to OpenAPI v3 booleans,
and the metadata schema cut down to what Kubernetes allows there (name only).
"""

from __future__ import annotations

import json
from typing import Any

import yaml

from tmo.api.common import GROUP, VERSION, APIModel
from tmo.api.rollout import Rollout
from tmo.api.transformermodel import TransformerModel

CRD_FILES = {
    "TransformerModel": "tmo.dev_transformermodels.yaml",
    "Rollout": "tmo.dev_rollouts.yaml",
}
REGENERATE = "make crds"

_DROP = {"title"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(n, defs) for n in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        return _merge(_structural(target, defs), _structural(node, defs))
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        return _merge(_structural(inner, defs), _structural(node, defs))
    if "anyOf" in node and not node.get("x-kubernetes-int-or-string"):
        members = [m for m in node.pop("anyOf") if m != {"type": "null"}]
        if len(members) != 1:
            raise ValueError(f"union without a structural schema: {members}")
        if node.get("default", 0) is None:
            del node["default"]
        return _merge(_structural(members[0], defs), _structural(node, defs))
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {k: _structural(v, defs) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _structural(value, defs)
        elif key == "additionalProperties" and value is False:
            continue  # the API server refuses unknown fields (strict field validation) anyway
        elif key == "description" and isinstance(value, str):
            # Docstrings wrap at 100 columns; kubectl explain rewraps anyway.
            out[key] = " ".join(value.split())
        elif key == "const":
            out["enum"] = [value]
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        else:
            out[key] = value
    return out


def _describe_defaults(node: Any) -> Any:
    """Append scalar defaults to descriptions: `kubectl explain` shows descriptions only."""
    if isinstance(node, list):
        return [_describe_defaults(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: _describe_defaults(v) for k, v in node.items()}
    default = node.get("default")
    if "description" in out and isinstance(default, bool | int | float | str):
        shown = json.dumps(default) if isinstance(default, bool | str) else default
        out["description"] = f"{out['description']} Default: {shown}."
    return out


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Field-level keys (description, default, rules) win over the type's own."""
    out = dict(base)
    for key, value in override.items():
        if key == "x-kubernetes-validations":
            out[key] = [*base.get(key, []), *value]
        else:
            out[key] = value
    return out


def openapi_schema(model: type[APIModel]) -> dict[str, Any]:
    """The structural openAPIV3Schema of a top-level kind."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    schema = _structural(raw, defs)
    props = schema["properties"]
    for key in ("apiVersion", "kind"):
        props[key] = {"type": "string", "description": props[key]["description"]}
    # Kubernetes allows only restrictions on name/generateName under metadata.
    meta_name = props["metadata"]["properties"]["name"]
    props["metadata"] = {"type": "object", "properties": {"name": meta_name}}
    schema["required"] = [r for r in schema.get("required", []) if r == "spec"]
    return dict(_describe_defaults(schema))


def _ready(column: str = "Ready") -> dict[str, Any]:
    return {
        "name": column,
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    }


_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

_PRINTER_COLUMNS: dict[str, list[dict[str, Any]]] = {
    "TransformerModel": [
        _ready(),
        {"name": "Revision", "type": "string", "jsonPath": ".status.revision"},
        {"name": "Replicas", "type": "integer", "jsonPath": ".status.replicas"},
        {"name": "URL", "type": "string", "jsonPath": ".status.url"},
        _AGE,
    ],
    "Rollout": [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Step", "type": "integer", "jsonPath": ".status.currentStep"},
        {"name": "Weight", "type": "integer", "jsonPath": ".status.canaryWeight"},
        {"name": "Stable", "type": "string", "jsonPath": ".status.stableRevision"},
        {"name": "Canary", "type": "string", "jsonPath": ".status.canaryRevision"},
        {"name": "Verdict", "type": "string", "jsonPath": ".status.analysis.verdict"},
        _AGE,
    ],
}

_NAMES = {
    "TransformerModel": ("transformermodels", "transformermodel", ["tm"]),
    "Rollout": ("rollouts", "rollout", ["tmro"]),
}


def crd(model: type[TransformerModel] | type[Rollout]) -> dict[str, Any]:
    """The CustomResourceDefinition of one kind."""
    kind = model.model_fields["kind"].default
    plural, singular, short_names = _NAMES[kind]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{GROUP}",
            "annotations": {f"{GROUP}/generated-by": f"tmo crds (regenerate: {REGENERATE})"},
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": short_names,
                "categories": ["tmo"],
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema(model)},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS[kind],
                }
            ],
        },
    }


def all_crds() -> dict[str, dict[str, Any]]:
    """File name (under crds/) -> CRD, for both kinds."""
    return {
        CRD_FILES["TransformerModel"]: crd(TransformerModel),
        CRD_FILES["Rollout"]: crd(Rollout),
    }


def to_yaml(doc: dict[str, Any]) -> str:
    """Stable YAML text of a CRD (sorted keys, so regeneration diffs stay minimal)."""
    return yaml.safe_dump(doc, sort_keys=True, width=100, allow_unicode=True)
