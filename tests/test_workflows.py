"""The GitHub Actions workflows pass actionlint (built from its pinned Go module by
e2e/tools/build.sh), with shellcheck checking every `run:` script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = REPO / ".github" / "workflows"


@pytest.fixture(scope="module")
def actionlint() -> str:
    out = subprocess.run(
        [str(REPO / "e2e" / "tools" / "build.sh")],
        capture_output=True,
        text=True,
        check=True,
        timeout=600,
    )
    return str(Path(out.stdout.strip()) / "actionlint")


def lint(actionlint: str, *files: Path) -> subprocess.CompletedProcess[str]:
    # shellcheck comes with `make deps`: without it actionlint silently skips run: scripts.
    assert shutil.which("shellcheck"), "shellcheck missing: `make deps` installs it"
    return subprocess.run(
        [actionlint, "-no-color", "-oneline", *map(str, files)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_workflows_pass_actionlint(actionlint: str) -> None:
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "release.yml"}
    r = lint(actionlint, *files)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_broken_workflow_is_caught(actionlint: str, tmp_path: Path) -> None:
    bad = tmp_path / ".github" / "workflows" / "bad.yml"
    bad.parent.mkdir(parents=True)
    bad.write_text(
        "on: push\njobs:\n  t:\n    runs-on: ubuntu-24.04\n    steps:\n"
        "      - run: echo ${{ github.event.pull_request.title }} $undefined_var\n"
        "      - uses: actions/checkout@v4\n        with: {nope: 1}\n"
    )
    r = lint(actionlint, bad)
    assert r.returncode != 0 and "bad.yml" in r.stdout


def test_ci_runs_make_test_through_ci_run() -> None:
    """CI runs exactly what a developer runs: .ci/run, which calls `make test`."""
    doc = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())
    runs = [s.get("run", "") for s in doc["jobs"]["test"]["steps"]]
    assert ".ci/run" in runs
    assert "make test" in (REPO / ".ci" / "run").read_text()
