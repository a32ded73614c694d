"""Arbitrary input never crashes the models: it is accepted, or refused naming a field."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from tmo.api import Rollout, TransformerModel, problems

from tests.api.examples import example_docs

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False)
    | st.text(max_size=40),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=20,
)

# Keys that exist in the API, so that random documents reach deep validation paths.
api_keys = st.sampled_from(
    ["apiVersion", "kind", "metadata", "name", "spec", "task", "model", "uri", "sha256",
     "runtime", "workers", "precision", "attention", "scaling", "minReplicas", "maxReplicas",
     "strategy", "canary", "steps", "setWeight", "pause", "duration", "analysis", "metrics",
     "builtin", "query", "max", "min", "judge", "interval", "targetRef", "resources", "limits"]
)  # fmt: skip
api_like = st.recursive(
    json_values,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(api_keys | st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


def _accept_or_name_field(model: type[TransformerModel] | type[Rollout], doc: Any) -> None:
    try:
        model.model_validate(doc)
    except ValidationError as e:
        found = problems(e)
        assert found
        if isinstance(doc, dict):
            assert all(p.field for p in found), found
        assert all(p.message for p in found), found


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=api_like)
def test_arbitrary_json(doc: Any) -> None:
    _accept_or_name_field(TransformerModel, doc)
    _accept_or_name_field(Rollout, doc)


def _leaf_paths(node: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [path]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _leaf_paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _leaf_paths(v, (*path, i))
    return out


@st.composite
def mutated_examples(draw: st.DrawFn) -> dict[str, Any]:
    doc = copy.deepcopy(draw(st.sampled_from(example_docs())))
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p in _leaf_paths(doc) if p]
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for key in path[:-1]:
            parent = parent[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete" and isinstance(parent, dict):
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(api_keys)] = draw(json_values)
    return doc


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated_examples())
def test_mutated_examples(doc: dict[str, Any]) -> None:
    model = TransformerModel if doc.get("kind") == "TransformerModel" else Rollout
    _accept_or_name_field(model, doc)
