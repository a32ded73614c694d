"""s3:// and gs:// models, fetched by the fetch init container as the operator renders it, with
the credentials Secret given as kubelet gives it (env and files), from real servers built from
pinned Go modules: versitygw (S3-compatible, checks SigV4) and fake-gcs-server (GCS emulator,
behind a token endpoint and proxy that check the service account's signed JWT and token)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tmo.render.configmap import MODEL_STORE
from tmo_runtime.fetcher import file_sha256, tree_sha256

from tests.runtime.helpers import manifest
from tests.runtime.object_stores import (
    GcsServer,
    S3Server,
    free_port,
    gcs_server,
    s3_server,
    service_account_key,
)
from tests.runtime.rendered_pod import run_rendered_fetch

pytestmark = pytest.mark.slow

MODEL = "cloud-model"
TASK = "text-classification"


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        yield server


@pytest.fixture(scope="module")
def gcs() -> Iterator[GcsServer]:
    with gcs_server() as server:
        yield server


@pytest.fixture(scope="module")
def model_dir(tiny_models: Path) -> Path:
    return tiny_models / TASK


@pytest.fixture(scope="module")
def mar_file(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A .mar as a user publishes one: the fetch container's own packaging of the model."""
    doc = manifest(MODEL, TASK, f"file://{model_dir}")
    proc, paths = run_rendered_fetch(doc)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path_factory.mktemp("mar") / f"{MODEL}.mar"
    shutil.copy(paths.mapping[MODEL_STORE] / f"{MODEL}.mar", out)
    shutil.rmtree(paths.root, ignore_errors=True)
    return out


def cloud_manifest(uri: str, sha256: str | None = None, **model: Any) -> dict[str, Any]:
    doc = manifest(MODEL, TASK, uri)
    doc["spec"]["model"]["credentialsSecretRef"] = {"name": "creds"}
    if sha256:
        doc["spec"]["model"]["sha256"] = sha256
    doc["spec"]["model"].update(model)
    return doc


_roots: list[Path] = []


@pytest.fixture(scope="module", autouse=True)
def _clean_pod_paths() -> Iterator[None]:
    yield
    for root in _roots:
        shutil.rmtree(root, ignore_errors=True)


def fetch(
    doc: dict[str, Any], secret: dict[str, str], env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    """Run the rendered fetch container; its exit, and the model store it wrote to."""
    proc, paths = run_rendered_fetch(doc, secret=secret, env=env, timeout=120)
    _roots.append(paths.root)
    return proc, paths.mapping[MODEL_STORE]


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else ""


def assert_no_secret(proc: subprocess.CompletedProcess[str], *values: str) -> None:
    for value in values:
        assert value not in proc.stderr and value not in proc.stdout


# --- s3:// ------------------------------------------------------------------------------------


@pytest.mark.parametrize("uri", ["s3://models/tc/", "s3://models/tc"])
def test_s3_directory_model_is_fetched_verified_and_packaged(
    s3: S3Server, model_dir: Path, uri: str
) -> None:
    """A folder of objects under a prefix (with or without the trailing /), from an
    S3-compatible store named by the Secret's AWS_ENDPOINT_URL, verified against
    spec.model.sha256 and packaged as the model server's .mar."""
    s3.upload(model_dir, "models", "tc/")
    proc, store = fetch(cloud_manifest(uri, tree_sha256(model_dir)), s3.secret())
    assert proc.returncode == 0, proc.stderr
    assert (store / f"{MODEL}.mar").is_file()
    assert_no_secret(proc, s3.secret_key)


def test_s3_mar_object_is_fetched_as_published(s3: S3Server, mar_file: Path) -> None:
    s3.upload(mar_file, "models", "archives/cloud-model.mar")
    doc = cloud_manifest(
        "s3://models/archives/cloud-model.mar", file_sha256(mar_file), format="mar"
    )
    proc, store = fetch(doc, s3.secret())
    assert proc.returncode == 0, proc.stderr
    assert (store / f"{MODEL}.mar").read_bytes() == mar_file.read_bytes()


def test_s3_wrong_secret_key_is_refused_with_the_reason(s3: S3Server, model_dir: Path) -> None:
    s3.upload(model_dir, "models", "tc/")
    wrong = "wR0ng" + s3.secret_key[5:]
    proc, store = fetch(cloud_manifest("s3://models/tc/"), s3.secret(AWS_SECRET_ACCESS_KEY=wrong))
    assert proc.returncode != 0
    line = last_line(proc)
    assert "s3://models/tc/: access denied" in line, proc.stderr
    assert "AWS_SECRET_ACCESS_KEY were refused: SignatureDoesNotMatch" in line, proc.stderr
    assert "Traceback" not in proc.stderr
    assert_no_secret(proc, wrong, s3.secret_key)
    assert not (store / f"{MODEL}.mar").exists()


def test_s3_unknown_access_key_is_refused_with_the_reason(s3: S3Server, model_dir: Path) -> None:
    s3.upload(model_dir, "models", "tc/")
    secret = s3.secret(AWS_ACCESS_KEY_ID="AKNOSUCHUSER0000")
    proc, _ = fetch(cloud_manifest("s3://models/tc/"), secret)
    assert proc.returncode != 0
    line = last_line(proc)
    assert "s3://models/tc/: access denied" in line, proc.stderr
    assert "refused: InvalidAccessKeyId" in line, proc.stderr
    assert_no_secret(proc, s3.secret_key)


def test_s3_region_comes_from_the_secret(s3: S3Server, model_dir: Path) -> None:
    """The server is in eu-central-1 (the passing tests sign for it); a Secret naming another
    region is refused by the server, and the message says to check AWS_REGION."""
    s3.upload(model_dir, "models", "tc/")
    proc, _ = fetch(cloud_manifest("s3://models/tc/"), s3.secret(AWS_REGION="ap-south-1"))
    assert proc.returncode != 0
    line = last_line(proc)
    assert "s3://models/tc/: refused" in line, line
    assert "check the Secret's AWS_REGION" in line, line
    assert "ap-south-1" in line, line


@pytest.mark.parametrize("uri", ["s3://models/no-such-model/", "s3://no-such-bucket/tc/"])
def test_s3_missing_model_is_not_found(s3: S3Server, model_dir: Path, uri: str) -> None:
    s3.upload(model_dir, "models", "tc/")
    proc, _ = fetch(cloud_manifest(uri), s3.secret())
    assert proc.returncode != 0
    assert f"{uri}: " in last_line(proc) and "not found" in last_line(proc), proc.stderr


def test_s3_unreachable_endpoint_is_named(model_dir: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    secret = {
        "AWS_ACCESS_KEY_ID": "AK",
        "AWS_SECRET_ACCESS_KEY": "x" * 20,
        "AWS_ENDPOINT_URL": endpoint,
    }
    start = time.monotonic()
    proc, _ = fetch(cloud_manifest("s3://models/tc/"), secret)
    assert proc.returncode != 0
    assert f"s3://models/tc/: cannot reach {endpoint}" in last_line(proc), proc.stderr
    assert time.monotonic() - start < 60


# --- gs:// ------------------------------------------------------------------------------------


def test_gs_directory_model_uses_the_secrets_service_account(
    gcs: GcsServer, model_dir: Path
) -> None:
    """The Secret's service-account.json is what authenticates: the fetcher signs a JWT with
    its key for its token_uri, and every request reaching the store carries the token that
    the token endpoint granted for that signature (the proxy refuses any other)."""
    gcs.upload(model_dir, "gmodels", "tc/")
    key = gcs.service_account()
    gcs.auth.grants.clear()
    gcs.auth.authorizations.clear()
    doc = cloud_manifest("gs://gmodels/tc/", tree_sha256(model_dir))
    proc, store = fetch(doc, {"service-account.json": key}, env={"STORAGE_EMULATOR_HOST": gcs.host})
    assert proc.returncode == 0, proc.stderr
    assert (store / f"{MODEL}.mar").is_file()
    (grant,) = gcs.auth.grants
    assert grant["iss"] == json.loads(key)["client_email"]
    assert "devstorage.read_only" in grant["scope"]
    assert gcs.auth.authorizations
    assert set(gcs.auth.authorizations) == {f"Bearer {gcs.auth.access_token}"}
    assert_no_secret(proc, json.loads(key)["private_key"].splitlines()[1])


def test_gs_key_not_trusted_by_the_token_endpoint_is_refused(
    gcs: GcsServer, model_dir: Path
) -> None:
    gcs.upload(model_dir, "gmodels", "tc/")
    gcs.service_account()  # the key the token endpoint trusts
    other, _ = service_account_key(gcs.token_uri, gcs.auth.email)  # same account, wrong key
    proc, _ = fetch(
        cloud_manifest("gs://gmodels/tc/"),
        {"service-account.json": json.dumps(other)},
        env={"STORAGE_EMULATOR_HOST": gcs.host},
    )
    assert proc.returncode != 0
    line = last_line(proc)
    assert "gs://gmodels/tc/: access denied (the Secret's service-account.json was refused" in line
    assert "Invalid JWT Signature" in line, proc.stderr
    assert gcs.auth.refused_grants and "InvalidSignature" in gcs.auth.refused_grants[-1]
    assert_no_secret(proc, other["private_key"].splitlines()[1])


def test_gs_missing_model_is_not_found(gcs: GcsServer) -> None:
    proc, _ = fetch(
        cloud_manifest("gs://gmodels/no-such-model/"),
        {"service-account.json": gcs.service_account()},
        env={"STORAGE_EMULATOR_HOST": gcs.host},
    )
    assert proc.returncode != 0
    assert "gs://gmodels/no-such-model/: not found" in last_line(proc), proc.stderr


# --- every scheme -----------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["s3", "gs"])
def test_sha256_mismatch_is_refused(
    scheme: str, s3: S3Server, gcs: GcsServer, model_dir: Path
) -> None:
    if scheme == "s3":
        s3.upload(model_dir, "models", "tc/")
        secret, env = s3.secret(), None
    else:
        gcs.upload(model_dir, "gmodels", "tc/")
        secret, env = (
            {"service-account.json": gcs.service_account()},
            {"STORAGE_EMULATOR_HOST": gcs.host},
        )
    uri = f"{scheme}://{'models' if scheme == 's3' else 'gmodels'}/tc/"
    proc, store = fetch(cloud_manifest(uri, "0" * 64), secret, env)
    assert proc.returncode != 0
    assert f"refusing to serve {uri}: sha256 mismatch" in last_line(proc), proc.stderr
    assert not (store / f"{MODEL}.mar").exists()
