"""The committed CRDs are exactly what the models generate, and they are well-formed."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from tmo.api.crd import REGENERATE, all_crds, to_yaml
from tmo.cli import main

CRDS = Path(__file__).resolve().parents[2] / "crds"


@pytest.mark.parametrize("name", sorted(all_crds()))
def test_committed_crds_match_models(name: str) -> None:
    generated = to_yaml(all_crds()[name])
    committed = (CRDS / name).read_text() if (CRDS / name).exists() else ""
    assert committed == generated, (
        f"crds/{name} is out of date with operator/tmo/api: run `{REGENERATE}` and commit it"
    )


def test_tmo_crds_prints_both(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["crds"]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    assert [d["spec"]["names"]["kind"] for d in docs] == ["TransformerModel", "Rollout"]


def _walk(schema: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    yield path, schema
    for name, prop in schema.get("properties", {}).items():
        yield from _walk(prop, f"{path}.{name}")
    if "items" in schema:
        yield from _walk(schema["items"], f"{path}[]")
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _walk(schema["additionalProperties"], f"{path}{{}}")


def _has_rules(schema: dict[str, Any]) -> bool:
    return any("x-kubernetes-validations" in s for _, s in _walk(schema))


@pytest.fixture(params=sorted(all_crds()))
def crd(request: pytest.FixtureRequest) -> dict[str, Any]:
    return all_crds()[request.param]


def _schema(crd: dict[str, Any]) -> dict[str, Any]:
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_every_field_is_described(crd: dict[str, Any]) -> None:
    undocumented = [
        p for p, s in _walk(_schema(crd))
        if p.count(".") >= 1 and not p.startswith(".metadata") and not p.endswith(("[]", "{}"))
        and not s.get("description")
    ]  # fmt: skip
    assert not undocumented


def test_structural(crd: dict[str, Any]) -> None:
    for path, s in _walk(_schema(crd)):
        if s.get("x-kubernetes-int-or-string"):
            continue
        assert "type" in s, f"{path} has no type"
        assert not {"$ref", "anyOf", "allOf", "oneOf", "title", "const"} & s.keys(), path
        assert isinstance(s.get("exclusiveMinimum", True), bool), path


def test_cel_cost_is_bounded(crd: dict[str, Any]) -> None:
    # The API server estimates CEL cost from maxLength/maxItems; unbounded ones get refused.
    for path, s in _walk(_schema(crd)):
        if s.get("type") == "array" and _has_rules(s):
            assert "maxItems" in s, f"{path}: list with CEL rules needs maxItems"
        if s.get("type") == "string" and "x-kubernetes-validations" in s:
            assert "maxLength" in s, f"{path}: string with CEL rules needs maxLength"


def test_names_columns_subresource(crd: dict[str, Any]) -> None:
    names = crd["spec"]["names"]
    version = crd["spec"]["versions"][0]
    assert names["categories"] == ["tmo"]
    assert version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"]]
    if names["kind"] == "TransformerModel":
        assert names["shortNames"] == ["tm"]
        assert columns == ["Ready", "Revision", "Replicas", "URL", "Age"]
    else:
        assert names["shortNames"] == ["tmro"]
        assert columns == ["Phase", "Step", "Weight", "Stable", "Canary", "Verdict", "Age"]


def test_defaults_on_sections(crd: dict[str, Any]) -> None:
    spec = _schema(crd)["properties"]["spec"]["properties"]
    sections = ["runtime", "resources", "scaling", "monitoring"]
    if crd["spec"]["names"]["kind"] == "Rollout":
        sections = ["analysis", "traffic"]
    for section in sections:
        assert spec[section]["default"] == {}
