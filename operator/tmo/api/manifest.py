"""Turning manifests (plain dicts) into API objects, and validation errors into problems."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from tmo.api.common import GROUP
from tmo.api.rollout import Rollout
from tmo.api.rules import RULE_ERROR
from tmo.api.transformermodel import TransformerModel

Resource = TransformerModel | Rollout
KINDS: dict[str, type[TransformerModel] | type[Rollout]] = {
    "TransformerModel": TransformerModel,
    "Rollout": Rollout,
}


class UnknownKindError(ValueError):
    """The document is not a TMO kind (its apiVersion/kind pair is not ours)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a manifest: the field's path (as the API server writes it) and why."""

    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message


def is_tmo_group(doc: Mapping[str, Any]) -> bool:
    api_version = doc.get("apiVersion")
    return isinstance(api_version, str) and api_version.split("/")[0] == GROUP


def load_manifest(doc: Mapping[str, Any]) -> Resource:
    """The TransformerModel or Rollout a manifest describes, with defaults filled in.

    Raises UnknownKindError when `kind` is not one of ours, and pydantic's ValidationError when
    the content is invalid (`problems(error)` lists what is wrong, field by field).
    """
    kind = doc.get("kind")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise UnknownKindError(
            f"unknown kind {kind!r} (apiVersion {doc.get('apiVersion')!r}): "
            f"expected one of {', '.join(KINDS)} in {GROUP}/v1alpha1"
        )
    return model.model_validate(dict(doc))


def field_path(loc: tuple[str | int, ...], relative: str = "") -> str:
    """A pydantic error location as the API server writes it: spec.steps[1].setWeight."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            # An empty key still has to show up as a field, not vanish.
            key = part or '""'
            out += f".{key}" if out else key
    if relative:
        out = f"{out}.{relative}" if out else relative
    return out


_FRIENDLY = {
    "missing": "is required",
    "extra_forbidden": "unknown field (not in the schema of this kind)",
}


def problems(error: ValidationError) -> list[Problem]:
    """Every error of a ValidationError, each with the path of the field it is about."""
    out = []
    for e in error.errors(include_url=False):
        ctx = e.get("ctx") or {}
        relative = str(ctx.get("field", "")) if e["type"] == RULE_ERROR else ""
        message = _FRIENDLY.get(e["type"], e["msg"])
        out.append(Problem(field_path(tuple(e["loc"]), relative), message))
    return out


def check_manifest(doc: Any) -> list[Problem]:
    """All problems of one manifest document; [] when it is a valid TransformerModel/Rollout."""
    if not isinstance(doc, Mapping):
        return [Problem("", f"a manifest must be a mapping, not {type(doc).__name__}")]
    try:
        load_manifest(doc)
    except UnknownKindError as e:
        return [Problem("kind", str(e))]
    except ValidationError as e:
        return problems(e)
    return []
