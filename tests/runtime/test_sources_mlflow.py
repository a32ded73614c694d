"""mlflow://NAME/VERSION and mlflow://NAME@ALIAS against a real MLflow tracking server (the
version pinned in e2e/tools/mlflow-requirements.txt, SQLite backend, artifacts proxied by the
server), through the rendered fetch init container run as a local process.
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tmo.render.configmap import MODEL_STORE
from tmo_runtime import fetcher, source_mlflow
from tmo_runtime.torchserve import free_port

from tests.runtime.helpers import manifest
from tests.runtime.mlflow_server import MlflowServer, RegistryClient, start_mlflow_server
from tests.runtime.rendered_pod import run_rendered_fetch

pytestmark = pytest.mark.slow

MODEL = "tiny-mlflow"
REGISTERED = "tiny-classifier"


@dataclass
class Registry:
    server: MlflowServer
    save_pretrained: Path
    dir_sha: str  # version 1 (alias champion): a save_pretrained directory in a run
    archive_sha: str  # version 2: one .tar.gz of it
    flavor_version: str  # version 3: an MLflow 3 logged model of the transformers flavor


def _transformers_flavor(src: Path, out: Path) -> Path:
    """The layout mlflow.transformers.save_model writes: MLmodel, model/ (the model's
    save_pretrained files), components/tokenizer/ (the tokenizer's)."""
    tokenizer_files = {"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"}
    tokenizer_files |= {"vocab.txt", "merges.txt", "vocab.json", "added_tokens.json"}
    for path in src.iterdir():
        sub = "components/tokenizer" if path.name in tokenizer_files else "model"
        (out / sub).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, out / sub / path.name)
    mlmodel = {
        "artifact_path": "model",
        "flavors": {
            "python_function": {"loader_module": "mlflow.transformers", "model_binary": "model"},
            "transformers": {
                "task": "text-classification",
                "instance_type": "TextClassificationPipeline",
                "pipeline_model_type": "BertForSequenceClassification",
                "framework": "pt",
                "components": ["tokenizer"],
                "tokenizer_type": "PreTrainedTokenizerFast",
                "model_binary": "model",
                "transformers_version": "4.0",
            },
        },
    }
    (out / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    (out / "requirements.txt").write_text("transformers\ntorch\n")
    return out


@pytest.fixture(scope="module")
def registry(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    root = tmp_path_factory.mktemp("mlflow")
    server = start_mlflow_server(root / "server")
    client = RegistryClient(server.url)
    try:
        src = tiny_models / "text-classification"
        exp = client.experiment("tmo-tests")
        run = client.run_with_artifacts(exp, "model", src)
        v1 = client.register(REGISTERED, f"runs:/{run}/model", run_id=run)

        archive = root / "model.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for path in sorted(src.iterdir()):
                tar.add(path, arcname=path.name)
        run2 = client.run_with_artifacts(exp, "packed", archive)
        v2 = client.register(REGISTERED, f"runs:/{run2}/packed", run_id=run2)

        flavored = _transformers_flavor(src, root / "flavored")
        model_id = client.logged_model(exp, "classifier", flavored)
        v3 = client.register(REGISTERED, f"models:/{model_id}", model_id=model_id)

        client.set_alias(REGISTERED, "champion", v1)
        assert (v1, v2, v3) == ("1", "2", "3")
        yield Registry(
            server,
            src,
            fetcher.tree_sha256(src),
            fetcher.file_sha256(archive),
            v3,
        )
    finally:
        client.close()
        server.stop()


def _fetch(uri: str, sha256: str | None, secret: dict[str, str]) -> tuple[Any, Path]:
    doc = manifest(MODEL, "text-classification", uri)
    doc["spec"]["model"]["credentialsSecretRef"] = {"name": "mlflow"}
    if sha256:
        doc["spec"]["model"]["sha256"] = sha256
    proc, paths = run_rendered_fetch(doc, secret=secret)
    return proc, paths.mapping[MODEL_STORE]


def _verdict(proc: Any) -> str:
    """The fetch container's one-line verdict: the last line of its stderr."""
    lines = str(proc.stderr).strip().splitlines()
    assert lines, "no error line on stderr"
    return lines[-1]


def test_fetch_by_version_verifies_and_packages(registry: Registry) -> None:
    uri = f"mlflow://{REGISTERED}/1"
    proc, store = _fetch(uri, registry.dir_sha, {"MLFLOW_TRACKING_URI": registry.server.url})
    assert proc.returncode == 0, proc.stderr
    assert (store / f"{MODEL}.mar").is_file()


def test_fetch_by_alias_resolves_the_aliased_version(registry: Registry) -> None:
    # @champion is version 1 (a directory), not the latest (3): only its digest verifies.
    uri = f"mlflow://{REGISTERED}@champion"
    proc, store = _fetch(uri, registry.dir_sha, {"MLFLOW_TRACKING_URI": registry.server.url})
    assert proc.returncode == 0, proc.stderr
    assert (store / f"{MODEL}.mar").is_file()


def test_an_archive_version_is_verified_as_the_archive_then_unpacked(registry: Registry) -> None:
    uri = f"mlflow://{REGISTERED}/2"
    proc, store = _fetch(uri, registry.archive_sha, {"MLFLOW_TRACKING_URI": registry.server.url})
    assert proc.returncode == 0, proc.stderr
    assert (store / f"{MODEL}.mar").is_file()


def test_a_transformers_flavor_logged_model_is_its_save_pretrained_directory(
    registry: Registry,
) -> None:
    """MLflow 3: the version's source is models:/m-...; the flavor's model/ and
    components/tokenizer/ together are the save_pretrained directory, and its digest is the
    directory's the user started from."""
    uri = f"mlflow://{REGISTERED}/{registry.flavor_version}"
    proc, store = _fetch(uri, registry.dir_sha, {"MLFLOW_TRACKING_URI": registry.server.url})
    assert proc.returncode == 0, proc.stderr
    assert (store / f"{MODEL}.mar").is_file()


def test_wrong_sha256_is_refused(registry: Registry) -> None:
    uri = f"mlflow://{REGISTERED}/1"
    proc, store = _fetch(uri, "0" * 64, {"MLFLOW_TRACKING_URI": registry.server.url})
    assert proc.returncode != 0, proc.stderr
    line = _verdict(proc)
    assert "sha256 mismatch" in line and uri in line
    assert not (store / f"{MODEL}.mar").exists()


@pytest.mark.parametrize("ref", ["/99", "@nobody", "-absent/1"])
def test_unknown_version_alias_or_model_is_not_found(registry: Registry, ref: str) -> None:
    uri = f"mlflow://{REGISTERED}{ref}"
    proc, store = _fetch(uri, None, {"MLFLOW_TRACKING_URI": registry.server.url})
    assert proc.returncode != 0, proc.stderr
    line = _verdict(proc)
    assert uri in line and "not found" in line, proc.stderr
    assert not (store / f"{MODEL}.mar").exists()


def test_missing_tracking_uri_names_the_key_and_the_secret_field(registry: Registry) -> None:
    uri = f"mlflow://{REGISTERED}/1"
    proc, _ = _fetch(uri, None, {"MLFLOW_TRACKING_TOKEN": "s3cr3t-value"})
    assert proc.returncode != 0, proc.stderr
    line = _verdict(proc)
    assert uri in line and "MLFLOW_TRACKING_URI" in line
    assert "spec.model.credentialsSecretRef" in line
    assert "s3cr3t-value" not in proc.stderr


def test_unreachable_registry_names_the_uri_and_never_the_password(registry: Registry) -> None:
    uri = f"mlflow://{REGISTERED}/1"
    secret = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_TRACKING_USERNAME": "admin",
        "MLFLOW_TRACKING_PASSWORD": "pa55-value",
    }
    proc, _ = _fetch(uri, None, secret)
    assert proc.returncode != 0, proc.stderr
    line = _verdict(proc)
    assert uri in line and "unreachable" in line
    assert "pa55-value" not in proc.stderr


def test_an_artifact_location_the_pod_cannot_read_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://user:pw-value@127.0.0.1:1")
    reg = source_mlflow.Registry("mlflow://m/1")
    try:
        assert reg.base == "http://127.0.0.1:1"
        with pytest.raises(fetcher.FetchError) as e:
            source_mlflow.download(reg, "file:///srv/mlruns/1/abc/artifacts/model", tmp_path)
    finally:
        reg.close()
    assert "mlflow://m/1" in str(e.value) and "cannot read" in str(e.value)
    assert "pw-value" not in str(e.value)


ADMIN = ("admin", "tmo-Admin-pa55word-1")


@pytest.fixture(scope="module")
def auth_registry(tiny_models: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A tracking server behind MLflow's basic-auth app, with version 1 of REGISTERED."""
    server = start_mlflow_server(tmp_path_factory.mktemp("mlflow-auth"), admin=ADMIN)
    client = RegistryClient(server.url, auth=ADMIN)
    try:
        exp = client.experiment("tmo-auth")
        run = client.run_with_artifacts(exp, "model", tiny_models / "text-classification")
        client.register(REGISTERED, f"runs:/{run}/model", run_id=run)
        yield server.url
    finally:
        client.close()
        server.stop()


def test_basic_auth_credentials_from_the_secret(auth_registry: str, tiny_models: Path) -> None:
    uri = f"mlflow://{REGISTERED}/1"
    secret = {
        "MLFLOW_TRACKING_URI": auth_registry,
        "MLFLOW_TRACKING_USERNAME": ADMIN[0],
        "MLFLOW_TRACKING_PASSWORD": ADMIN[1],
    }
    sha = fetcher.tree_sha256(tiny_models / "text-classification")
    proc, store = _fetch(uri, sha, secret)
    assert proc.returncode == 0, proc.stderr
    assert (store / f"{MODEL}.mar").is_file()


@pytest.mark.parametrize("password", [None, "wrong-pa55-value"])
def test_refused_credentials_name_the_keys_never_the_values(
    auth_registry: str, password: str | None
) -> None:
    uri = f"mlflow://{REGISTERED}/1"
    secret = {"MLFLOW_TRACKING_URI": auth_registry}
    if password:
        secret |= {"MLFLOW_TRACKING_USERNAME": ADMIN[0], "MLFLOW_TRACKING_PASSWORD": password}
    proc, _ = _fetch(uri, None, secret)
    assert proc.returncode != 0, proc.stderr
    line = _verdict(proc)
    assert uri in line and "HTTP 401" in line and "MLFLOW_TRACKING_PASSWORD" in line, line
    assert "wrong-pa55-value" not in proc.stderr
