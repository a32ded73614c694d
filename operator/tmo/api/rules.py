"""Admission rules stated once, enforced twice.

A `Rule` carries the CEL expression the API server evaluates (`x-kubernetes-validations`) and the
Python predicate `tmo validate` evaluates offline, next to the one message both report. Keeping
the pair in one object is what lets a test assert that the API server and the offline check agree.

A rule is used either as an `Annotated[...]` marker on a field (then `self` in CEL is the field's
value and the error points at the field) or in a model's `rules` class variable (then `self` is
the object and `field` names the property the message is about; it becomes CEL's `fieldPath`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import GetCoreSchemaHandler, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

RULE_ERROR = "tmo_rule"


@dataclass(frozen=True)
class Rule:
    """One admission rule: CEL for the API server, a predicate for offline checks, one message."""

    cel: str
    message: str
    check: Callable[[Any], bool]
    # For object rules: the property (relative, dotted) the message is about.
    field: str = ""

    def cel_validation(self) -> dict[str, str]:
        """The `x-kubernetes-validations` entry for this rule."""
        out = {"rule": self.cel, "message": self.message}
        if self.field:
            out["fieldPath"] = "." + self.field
        return out

    def error(self) -> PydanticCustomError:
        # The message goes through ctx, never the template, so braces in it stay literal.
        return PydanticCustomError(
            RULE_ERROR, "{message}", {"message": self.message, "field": self.field}
        )

    def _validate(self, value: Any) -> Any:
        if not self.check(value):
            raise self.error()
        return value

    # Used as an Annotated marker: validate after the type, and add the CEL to the field schema.
    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(self._validate, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        out = handler(schema)
        out.setdefault("x-kubernetes-validations", []).append(self.cel_validation())
        return out


def python_regex(pattern: str) -> re.Pattern[str]:
    """Compile a CEL (RE2) pattern for Python with the same meaning.

    RE2's `$` matches only at the very end; Python's also matches before a final newline.
    Patterns here use `^...$` and the common subset of both syntaxes (no `\\d`, no lookaround).
    """
    if pattern.endswith("$"):
        pattern = pattern[:-1] + r"\Z"
    return re.compile(pattern)


def matches(pattern: str, message: str) -> Rule:
    """A string rule: the value matches `pattern` (anchored with ^ and $)."""
    compiled = python_regex(pattern)
    return Rule(
        cel=f"self.matches({cel_string(pattern)})",
        message=message,
        check=lambda v: compiled.search(v) is not None,
    )


def max_length(limit: int, message: str) -> Rule:
    """A string length rule with a message of our own (the schema's maxLength has a generic one)."""
    return Rule(cel=f"self.size() <= {limit}", message=message, check=lambda v: len(v) <= limit)


def cel_string(text: str) -> str:
    """A CEL string literal. Raw strings keep regex backslashes as they are."""
    if "'" in text:
        raise ValueError(f"quote in CEL pattern: {text!r}")
    return f"r'{text}'"


def matches_if_prefixed(prefix: str, pattern: str, message: str) -> Rule:
    """A string rule that applies only to values starting with `prefix`."""
    compiled = python_regex(pattern)
    return Rule(
        cel=f"!self.startsWith({cel_string(prefix)}) || self.matches({cel_string(pattern)})",
        message=message,
        check=lambda v: not v.startswith(prefix) or compiled.search(v) is not None,
    )


def unique(message: str = "must not contain the same entry twice") -> Rule:
    """A list rule: no entry appears twice (the API server's listType=set says so too)."""
    return Rule(
        cel="self.all(x, self.exists_one(y, y == x))",
        message=message,
        check=lambda items: len(set(items)) == len(items),
    )
