"""Building blocks shared by both kinds: the base model, names, quantities, durations, refs."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import timedelta
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, WithJsonSchema, model_validator
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from tmo.api.naming import DNS1035_LABEL, MAX_NAME_LENGTH
from tmo.api.rules import Rule, matches, python_regex

GROUP = "tmo.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def _add_object_rules(schema: dict[str, Any], model: type[Any]) -> None:
    rules: tuple[Rule, ...] = getattr(model, "cel_rules", ())
    if rules:
        schema.setdefault("x-kubernetes-validations", []).extend(r.cel_validation() for r in rules)


def _as_the_api_server_reads(data: Any) -> Any:
    """The input as the API server's decoder hands it to validation, at every depth.

    Null fields and null map values are pruned; floats without a fractional part are integers
    (2.0 is a valid replica count there); any Mapping (kopf hands out Mapping views) becomes a
    dict, since strict mode wants dicts.
    """
    if isinstance(data, Mapping):
        return {k: _as_the_api_server_reads(v) for k, v in data.items() if v is not None}
    if isinstance(data, list):
        return [_as_the_api_server_reads(v) for v in data]
    if isinstance(data, float) and data.is_integer() and abs(data) < 2**63:
        return int(data)
    return data


class APIModel(BaseModel):
    """Base of every API object: camelCase on the wire, strict types, unknown fields refused.

    Strict because the API server is strict ("2" is not an integer there either); nulls are
    dropped before validation because the API server prunes them (non-nullable fields).
    """

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        frozen=True,
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        use_attribute_docstrings=True,
        json_schema_extra=_add_object_rules,
    )

    # Cross-field rules of this object, emitted as x-kubernetes-validations and checked here.
    cel_rules: ClassVar[tuple[Rule, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        return _as_the_api_server_reads(data)

    @model_validator(mode="after")
    def _check_object_rules(self) -> APIModel:
        for rule in type(self).cel_rules:
            if not rule.check(self):
                raise rule.error()
        return self


# --- names -------------------------------------------------------------------------------------

DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"

_NAME_LENGTH_RULE = Rule(
    cel=f"self.size() <= {MAX_NAME_LENGTH}",
    message=f"must be at most {MAX_NAME_LENGTH} characters so that every derived name "
    "(NAME-<revision>-canary) fits in 63",
    check=lambda v: len(v) <= MAX_NAME_LENGTH,
)
_DNS1035_RULE = matches(
    DNS1035_LABEL,
    "must be lowercase letters, digits and '-', start with a letter and end with a letter "
    "or digit (it names a Service)",
)

ResourceName = Annotated[str, Field(max_length=253), _NAME_LENGTH_RULE, _DNS1035_RULE]
"""The name of a TransformerModel or Rollout (and of what refers to one)."""

ObjectName = Annotated[
    str,
    Field(max_length=253),
    matches(
        DNS1123_SUBDOMAIN,
        "must be a Kubernetes object name: lowercase letters, digits, '-' and '.', "
        "starting and ending with a letter or digit",
    ),
]
"""The name of another Kubernetes object (Secret, Gateway...)."""


class ObjectMeta(BaseModel):
    """Standard object metadata; only name and namespace matter to TMO, the rest passes through."""

    model_config = ConfigDict(extra="allow", frozen=True, use_attribute_docstrings=True)

    name: ResourceName
    """Name of the resource; it prefixes every object TMO creates for it."""
    namespace: str | None = None
    """Namespace of the resource."""
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    generation: int | None = None
    """Incremented by the API server on every spec change."""

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        return _as_the_api_server_reads(data)


class StatusModel(APIModel):
    """Base of status objects: unknown fields are ignored, not refused, so an operator reading
    status written by a newer version of itself keeps working."""

    model_config = ConfigDict(extra="ignore")


class LocalObjectReference(APIModel):
    """A reference to an object in the same namespace."""

    name: ObjectName
    """Name of the referenced object."""


class SecretKeyReference(APIModel):
    """A key of a Secret in the same namespace."""

    name: ObjectName
    """Name of the Secret."""
    key: Annotated[
        str,
        Field(max_length=253),
        matches(r"^[-._a-zA-Z0-9]+$", "must be a Secret key: letters, digits, '-', '_' and '.'"),
    ] = "token"
    """Key within the Secret."""


# --- quantities ---------------------------------------------------------------------------------

QUANTITY_PATTERN = (
    r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|"
    r"([eE](\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
_QUANTITY = python_regex(QUANTITY_PATTERN)


def _quantity(value: Any) -> int | str:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str) and _QUANTITY.search(value):
        return value
    raise PydanticCustomError(
        "quantity", "must be a Kubernetes quantity such as 500m, 2, 2Gi or 512Mi", {}
    )


Quantity = Annotated[
    int | str,
    PlainValidator(_quantity),
    WithJsonSchema(
        {
            "anyOf": [{"type": "integer"}, {"type": "string"}],
            "pattern": QUANTITY_PATTERN,
            "x-kubernetes-int-or-string": True,
        }
    ),
]
"""A Kubernetes resource quantity (an integer, or a string such as 500m or 2Gi)."""

# --- durations ----------------------------------------------------------------------------------

DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
_DURATION_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

Duration = Annotated[
    str,
    Field(max_length=32),
    matches(DURATION_PATTERN, "must be a duration such as 30s, 5m or 1h30m (units ms, s, m, h)"),
]
"""A duration in Go syntax restricted to ms, s, m and h: 30s, 5m, 1h30m."""


def parse_duration(text: str) -> timedelta:
    """The timedelta of a `Duration` string (one that passed validation)."""
    if not python_regex(DURATION_PATTERN).search(text):
        raise ValueError(f"not a duration: {text!r}")
    seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(text))
    return timedelta(seconds=seconds)
