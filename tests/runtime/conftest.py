from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from tmo_runtime.tiny_models import TASKS, build_tiny_model

from tests.runtime.helpers import Served, example_manifests, start_serve, wait_ready


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every task's tiny model, built once per session (offline, a few seconds)."""
    root = tmp_path_factory.mktemp("models")
    for task in TASKS:
        build_tiny_model(task, root / task)
    return root


@pytest.fixture(scope="session")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_models: Path) -> Iterator[Served]:
    """One `tmo serve` (one TorchServe, one gateway) serving a tiny model of every task, from
    the manifests in examples/local/ (relative file:// URIs, as a user runs them).

    Small admission limits so the overload test can reach them without a long load loop.
    """
    base = tmp_path_factory.mktemp("serve")
    paths = example_manifests(base / "examples", tiny_models)
    # Keep the workdir short: TorchServe's AF_UNIX sockets live under it.
    import tempfile

    workdir = Path(tempfile.mkdtemp(prefix="tmo-t", dir="/tmp"))
    s = start_serve(
        paths,
        workdir,
        "s3cr3t-token",
        "--max-concurrency",
        "4",
        "--max-queue",
        "8",
        "--max-body-bytes",
        str(1 << 20),
    )
    try:
        wait_ready(s, 300)
        yield s
    finally:
        s.stop()
