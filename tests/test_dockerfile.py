"""The Dockerfile that builds the operator and runtime images passes hadolint, and its images
match what the chart and the rendered Deployments expect (no container engine runs here, so
these are the checks that can be made without building)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from tmo.render.deployment import RUN_AS

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"


def _hadolint() -> str:
    found = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(found).exists(), "hadolint missing: it comes with the dev extra (make venv)"
    return found


def test_dockerfile_passes_hadolint() -> None:
    r = subprocess.run([_hadolint(), str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_bad_dockerfile_is_caught(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    r = subprocess.run([_hadolint(), str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "DL3006" in r.stdout  # untagged base image


def _stage(name: str) -> str:
    text = DOCKERFILE.read_text()
    m = re.search(rf"^FROM \S+ AS {name}\n(.*?)(?=^FROM |\Z)", text, re.S | re.M)
    assert m, f"no {name} stage"
    return m.group(1)


def test_images_run_as_the_users_the_manifests_declare() -> None:
    chart = (REPO / "charts/tmo/templates/deployment.yaml").read_text()
    uid = re.search(r"runAsUser: (\d+)", chart)
    assert uid and f"USER {uid.group(1)}:" in _stage("operator")
    assert f"USER {RUN_AS}:" in _stage("runtime")
    assert "openjdk-17" in _stage("runtime")  # TorchServe 0.12 needs Java 17
