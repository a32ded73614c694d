"""`tmo render -f FILE`: every example renders to a YAML stream of complete children."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tmo.cli import main

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.stem)
def test_every_example_renders(example: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "-f", str(example)]) == 0
    docs = list(yaml.safe_load_all(capsys.readouterr().out))
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "ConfigMap", "Service", "ScaledObject", "PrometheusRule"} <= kinds
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"] and d["metadata"]["namespace"]


def test_invalid_manifest_fails_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: tmo.dev/v1alpha1\nkind: TransformerModel\nmetadata: {name: bad}\n"
        "spec: {task: text-classification, model: {uri: 'ftp://x'}}\n"
    )
    assert main(["render", "-f", str(bad)]) == 1
    assert "bad" in capsys.readouterr().err


def test_no_model_in_file_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n")
    assert main(["render", "-f", str(empty)]) == 1
    assert "no TransformerModel" in capsys.readouterr().err
