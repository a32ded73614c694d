"""https:// fetch against a real TLS server on loopback (self-signed certificate via openssl)."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import ssl
import subprocess
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tmo.render.configmap import MODEL_STORE
from tmo_runtime import fetcher

from tests.runtime.helpers import manifest
from tests.runtime.rendered_pod import run_rendered_fetch


@pytest.fixture
def https_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, Path]]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    # The fetcher trusts what the pod's CA bundle trusts; here that is the test's own CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()


def test_https_tarball_is_verified_and_unpacked(
    https_root: tuple[str, Path], tmp_path: Path
) -> None:
    base, root = https_root
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "bert"}')
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
        tar.add(model / "config.json", arcname="config.json")
    digest = hashlib.sha256((root / "model.tar.gz").read_bytes()).hexdigest()
    got = fetcher.fetch(f"{base}/model.tar.gz", tmp_path / "dl", base_dir=tmp_path, sha256=digest)
    assert (got / "config.json").read_text() == '{"model_type": "bert"}'
    with pytest.raises(fetcher.IntegrityError):
        fetcher.fetch(f"{base}/model.tar.gz", tmp_path / "dl2", base_dir=tmp_path, sha256="f" * 64)
    with pytest.raises(fetcher.FetchError, match="HTTP 404"):
        fetcher.fetch(f"{base}/missing.tar.gz", tmp_path / "dl3", base_dir=tmp_path)


@pytest.mark.slow
def test_rendered_fetch_container_packages_an_https_archive(
    https_root: tuple[str, Path], tiny_models: Path
) -> None:
    """The example's shape (efficientformer): a save_pretrained directory published as one
    .tar.gz, fetched by the init container the operator renders, verified and packaged."""
    base, root = https_root
    with tarfile.open(root / "model.tar.gz", "w:gz") as tar:
        tar.add(tiny_models / "text-classification", arcname=".")
    digest = hashlib.sha256((root / "model.tar.gz").read_bytes()).hexdigest()
    doc = manifest("https-model", "text-classification", f"{base}/model.tar.gz")
    doc["spec"]["model"]["sha256"] = digest
    proc, paths = run_rendered_fetch(doc)
    try:
        assert proc.returncode == 0, proc.stderr
        assert (Path(paths.local(MODEL_STORE)) / "https-model.mar").is_file()
    finally:
        shutil.rmtree(paths.root, ignore_errors=True)
