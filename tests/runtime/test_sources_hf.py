"""hf:// in the pod the operator renders, from a Hugging Face Hub cache on a claim (offline).

The Hub cannot be reached here, so the cache is written in the layout `hf download
--cache-dir` leaves (blobs named by digest, snapshots of links, refs naming commits), and the
real huggingface_hub resolves it in offline mode, as it does in an air-gapped cluster.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tmo.render.configmap import MODEL_STORE
from tmo.render.deployment import HF_CACHE_DIR
from tmo_runtime.fetcher import tree_sha256

from tests.runtime.helpers import manifest
from tests.runtime.rendered_pod import PodPaths, rendered_containers, run_rendered_fetch

pytestmark = pytest.mark.slow

NAME = "hf-model"
REPO = "acme/tiny-classifier"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def write_hub_cache(model_dir: Path, cache: Path, repo: str, commit: str, ref: str) -> None:
    """`model_dir`'s files as the snapshot `commit` of `repo` in a Hub cache, with `ref` on it."""
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    for src in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        data = src.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snapshot / src.relative_to(model_dir)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / ref).write_text(commit)


def _read_only(path: Path, on: bool) -> None:
    for p in [path, *path.rglob("*")]:
        if not p.is_symlink():
            p.chmod((0o555 if p.is_dir() else 0o444) if on else (0o755 if p.is_dir() else 0o644))


@pytest.fixture
def cached_pod(tiny_models: Path) -> Iterator[tuple[PodPaths, Path]]:
    paths = PodPaths()
    cache = Path(paths.local(HF_CACHE_DIR))
    write_hub_cache(tiny_models / "text-classification", cache, REPO, COMMIT, "v1.2")
    _read_only(cache, True)  # the claim is mounted read-only
    yield paths, cache
    _read_only(cache, False)
    shutil.rmtree(paths.root, ignore_errors=True)


def _doc(uri: str, **model: str) -> dict[str, Any]:
    doc = manifest(NAME, "text-classification", uri)
    doc["spec"]["model"].update(model)
    return doc


def test_hf_model_is_read_offline_from_the_cache_claim(
    cached_pod: tuple[PodPaths, Path], tiny_models: Path
) -> None:
    paths, cache = cached_pod
    digest = tree_sha256(tiny_models / "text-classification")
    doc = _doc(f"hf://{REPO}@v1.2", hfCacheClaim="hub-cache", sha256=digest)
    fetch = rendered_containers(doc)["fetch"]
    env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_CACHE"] == HF_CACHE_DIR
    (mount,) = [m for m in fetch["volumeMounts"] if m["name"] == "model-source"]
    assert mount == {"name": "model-source", "mountPath": HF_CACHE_DIR, "readOnly": True}

    before = sorted(str(p) for p in cache.rglob("*"))
    # HF_ENDPOINT at an address that refuses connections: any network use would fail the fetch.
    proc, _ = run_rendered_fetch(doc, paths=paths, env={"HF_ENDPOINT": "http://127.0.0.1:9"})
    assert proc.returncode == 0, proc.stderr
    assert (Path(paths.local(MODEL_STORE)) / f"{NAME}.mar").is_file()
    assert sorted(str(p) for p in cache.rglob("*")) == before  # nothing written to the claim

    # The commit itself works as the revision too; the sha256 covers the snapshot's files.
    by_commit = _doc(f"hf://{REPO}@{COMMIT}", hfCacheClaim="hub-cache", sha256=digest)
    proc, _ = run_rendered_fetch(by_commit, paths=paths)
    assert proc.returncode == 0, proc.stderr


def test_hf_revision_missing_from_the_cache_is_a_clear_error(
    cached_pod: tuple[PodPaths, Path],
) -> None:
    paths, _ = cached_pod
    proc, _ = run_rendered_fetch(_doc(f"hf://{REPO}@v9", hfCacheClaim="hub-cache"), paths=paths)
    assert proc.returncode != 0
    assert f"hf://{REPO}@v9" in proc.stderr
    assert "not in the Hugging Face cache" in proc.stderr
    assert "hf download" in proc.stderr  # says how to fill it


def test_hf_sha256_mismatch_refuses_to_serve(cached_pod: tuple[PodPaths, Path]) -> None:
    paths, _ = cached_pod
    doc = _doc(f"hf://{REPO}@v1.2", hfCacheClaim="hub-cache", sha256="0" * 64)
    proc, _ = run_rendered_fetch(doc, paths=paths)
    assert proc.returncode != 0
    assert "sha256 mismatch" in proc.stderr
    assert not (Path(paths.local(MODEL_STORE)) / f"{NAME}.mar").exists()


def test_hf_without_a_cache_claim_downloads_and_names_the_endpoint_it_could_not_reach() -> None:
    """Online mode (no hfCacheClaim): the fetch goes to HF_ENDPOINT from the Secret, with the
    Secret's HF_TOKEN; here the endpoint refuses connections, and the error says where it went."""
    doc = _doc(f"hf://{REPO}@v1.2")
    doc["spec"]["model"]["credentialsSecretRef"] = {"name": "hf"}
    fetch = rendered_containers(doc)["fetch"]
    env = {e["name"]: e.get("value") for e in fetch["env"]}
    assert "HF_HUB_OFFLINE" not in env and env["HF_HUB_DISABLE_TELEMETRY"] == "1"
    secret = {"HF_TOKEN": "hf_secret_value_never_logged", "HF_ENDPOINT": "http://127.0.0.1:9"}
    proc, paths = run_rendered_fetch(doc, secret=secret, timeout=120)
    try:
        assert proc.returncode != 0
        assert f"hf://{REPO}@v1.2" in proc.stderr and "127.0.0.1:9" in proc.stderr
        assert "hf_secret_value_never_logged" not in proc.stderr + proc.stdout
    finally:
        shutil.rmtree(paths.root, ignore_errors=True)
