"""`tmo validate`: output format, exit codes, multi-document files, other kinds."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tmo.cli import main

from tests.api.examples import EXAMPLES
from tests.api.invalid_cases import BASE_MODEL, BASE_ROLLOUT, CASES


def _write(tmp_path: Path, name: str, *docs: object) -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump_all(docs))
    return path


def test_examples_are_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "-f", str(EXAMPLES)]) == 0
    assert capsys.readouterr().out == ""


def test_problem_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = next(c for c in CASES if c.id == "min-above-max").manifest
    path = _write(tmp_path, "m.yaml", BASE_ROLLOUT, bad)
    assert main(["validate", "-f", str(path)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f"{path}: TransformerModel/case: spec.scaling.minReplicas: "
        "minReplicas must be less than or equal to maxReplicas"
    ]


def test_every_table_row_fails_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write(tmp_path, "all.yaml", *[c.manifest for c in CASES])
    assert main(["validate", "-f", str(path)]) == 1
    out = capsys.readouterr().out
    for case in CASES:
        assert f": {case.path}" in out, case.id


def test_other_groups_skipped_typos_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}}
    path = _write(tmp_path, "mixed.yaml", deployment, BASE_MODEL)
    assert main(["validate", "-f", str(path)]) == 0
    assert "Deployment/d: skipped" in capsys.readouterr().err

    typo = {**BASE_MODEL, "kind": "TransfomerModel"}
    path = _write(tmp_path, "typo.yaml", typo)
    assert main(["validate", "-f", str(path)]) == 1
    assert "TransfomerModel/case: kind: unknown kind 'TransfomerModel'" in capsys.readouterr().out


def test_unreadable_and_broken_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("kind: [unclosed\n")
    assert main(["validate", "-f", str(broken), str(tmp_path / "missing.yaml")]) == 1
    out = capsys.readouterr().out
    assert "broken.yaml: ?/?: not valid YAML" in out
    assert "missing.yaml: No such file" in out
