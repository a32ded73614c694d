"""Real object-store servers for the s3:// and gs:// fetch tests, built from their pinned Go
modules (e2e/tools/versitygw, e2e/tools/fakegcs) by e2e/tools/build.sh, started on free ports
and stopped afterwards.

- `s3_server`: versitygw, an S3-compatible gateway over a local folder (a real server that
  checks SigV4 signatures, so a wrong key is refused as AWS refuses it).
- `gcs_server`: fake-gcs-server, a GCS emulator (no real GCS can run here). It checks no
  credentials, so `gcs_server` puts `GcsAuthProxy` in front of it: a token endpoint that only
  grants an access token for a JWT signed by the test's service-account key, and a proxy that
  refuses requests without that token.
"""

from __future__ import annotations

import base64
import json
import secrets
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from tests.runtime.helpers import REPO

BUILD_SH = REPO / "e2e" / "tools" / "build.sh"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"


def go_tools_bin() -> Path:
    """The folder e2e/tools/build.sh builds the pinned Go tools into (a no-op once built)."""
    out = subprocess.run([str(BUILD_SH)], capture_output=True, text=True, timeout=1800, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"e2e/tools/build.sh failed:\n{out.stderr[-3000:]}")
    return Path(out.stdout.strip())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    """Until `url` answers at all (any status): the server is listening."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"{url}: server exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            )
        try:
            httpx.get(url, timeout=2)
            return
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError(f"{url}: not answering after {timeout}s:\n{log.read_text()[-3000:]}")


@contextmanager
def _process(argv: list[str], url: str, workdir: Path) -> Iterator[None]:
    log = workdir / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_http(url, proc, log)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --- S3 ---------------------------------------------------------------------------------------


@dataclass
class S3Server:
    endpoint: str
    access_key: str
    secret_key: str
    # Not AWS's default: that the fetch signs for the Secret's AWS_REGION is then tested too.
    region: str = "eu-central-1"

    def secret(self, **overrides: str) -> dict[str, str]:
        """A credentialsSecretRef Secret's content for this server, as a user writes it."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            **overrides,
        }

    def filesystem(self) -> Any:
        import s3fs

        return s3fs.S3FileSystem(
            key=self.access_key,
            secret=self.secret_key,
            endpoint_url=self.endpoint,
            client_kwargs={"region_name": self.region},
            config_kwargs={"s3": {"addressing_style": "path"}},
        )

    def upload(self, local: Path, bucket: str, key: str) -> None:
        """`local` (a file or a folder's files, under key/) into the bucket, made if needed."""
        fs = self.filesystem()
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        if local.is_dir():
            for path in sorted(p for p in local.rglob("*") if p.is_file()):
                fs.put_file(str(path), f"{bucket}/{key.rstrip('/')}/{path.relative_to(local)}")
        else:
            fs.put_file(str(local), f"{bucket}/{key}")


@contextmanager
def s3_server() -> Iterator[S3Server]:
    """versitygw serving a fresh folder, with one root user (random keys)."""
    binary = go_tools_bin() / "versitygw"
    workdir = Path(tempfile.mkdtemp(prefix="tmo-s3-"))
    (workdir / "data").mkdir()
    (workdir / "iam").mkdir()
    port = free_port()
    server = S3Server(
        endpoint=f"http://127.0.0.1:{port}",
        access_key="AK" + secrets.token_hex(8).upper(),
        secret_key=secrets.token_urlsafe(30),
    )
    argv = [
        str(binary),
        "--access", server.access_key,
        "--secret", server.secret_key,
        "--region", server.region,
        "--port", f"127.0.0.1:{port}",
        # Its internal IAM answers an unknown key as AWS does (InvalidAccessKeyId); the root-only
        # mode answers XAdminUserNotFound, 404.
        "--iam-dir", str(workdir / "iam"),
        "posix", str(workdir / "data"),
    ]  # fmt: skip
    try:
        with _process(argv, server.endpoint, workdir):
            yield server
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- GCS --------------------------------------------------------------------------------------


def _b64url_decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def service_account_key(
    token_uri: str, email: str = "tmo-test@tmo-test.iam.gserviceaccount.com"
) -> tuple[dict[str, str], Any]:
    """A fresh GCP service-account key file's content (RSA 2048) whose token_uri is ours."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "tmo-test",
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": email,
        "client_id": str(secrets.randbelow(10**20)),
        "auth_uri": "https://accounts.google.com/o/oauth2/auth",
        "token_uri": token_uri,
    }
    return info, key.public_key()


@dataclass
class GcsAuthProxy:
    """An OAuth token endpoint plus an authenticating proxy in front of the emulator."""

    upstream: str
    public_key: Any = None  # the service account's, that the JWT assertion must verify with
    email: str = ""
    access_token: str = field(default_factory=lambda: "ya29.test-" + secrets.token_urlsafe(16))
    grants: list[dict[str, Any]] = field(default_factory=list)  # verified JWT claims
    refused_grants: list[str] = field(default_factory=list)
    authorizations: list[str] = field(default_factory=list)  # what reached the proxy

    def check_assertion(self, assertion: str, audience: str) -> dict[str, Any]:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding

        header_b64, payload_b64, signature_b64 = assertion.split(".")
        header = json.loads(_b64url_decode(header_b64))
        claims: dict[str, Any] = json.loads(_b64url_decode(payload_b64))
        if header.get("alg") != "RS256":
            raise ValueError(f"alg {header.get('alg')}")
        self.public_key.verify(  # raises InvalidSignature
            _b64url_decode(signature_b64),
            f"{header_b64}.{payload_b64}".encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        # google-auth addresses the assertion to Google's token URI whatever the key file's
        # token_uri (where it is sent); Google checks that value.
        if claims.get("iss") != self.email or claims.get("aud") not in (audience, GOOGLE_TOKEN_URI):
            raise ValueError(f"iss {claims.get('iss')} aud {claims.get('aud')}")
        if claims.get("exp", 0) < time.time():
            raise ValueError("expired")
        return claims


def _handler(proxy: GcsAuthProxy, base: list[str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, doc: dict[str, Any]) -> None:
            self._send(status, json.dumps(doc).encode(), {"Content-Type": "application/json"})

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _token(self) -> None:
            form = urllib.parse.parse_qs(self._body().decode())
            try:
                assert form["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
                claims = proxy.check_assertion(form["assertion"][0], base[0] + "/token")
            except Exception as e:  # any bad assertion is refused as Google does
                proxy.refused_grants.append(f"{type(e).__name__}: {e}")
                self._json(
                    400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
                )
                return
            proxy.grants.append(claims)
            self._json(
                200,
                {"access_token": proxy.access_token, "expires_in": 3600, "token_type": "Bearer"},
            )

        def _forward(self) -> None:
            if self.command == "POST" and self.path == "/token":
                self._token()
                return
            auth = self.headers.get("Authorization", "")
            proxy.authorizations.append(auth)
            body = self._body()
            if auth != f"Bearer {proxy.access_token}":
                self._json(401, {"error": {"code": 401, "message": "Invalid Credentials"}})
                return
            headers = {
                k: v
                for k, v in self.headers.items()
                if k.lower() not in ("host", "authorization", "connection", "accept-encoding")
            }
            r = httpx.request(
                self.command, proxy.upstream + self.path, headers=headers, content=body, timeout=30
            )
            keep = ("content-type", "etag", "location", "x-goog-hash", "x-goog-generation", "range")
            self._send(
                r.status_code, r.content, {k: v for k, v in r.headers.items() if k.lower() in keep}
            )

        do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _forward

    return Handler


@dataclass
class GcsServer:
    emulator: str  # fake-gcs-server itself, no auth
    host: str  # STORAGE_EMULATOR_HOST for the fetcher: the authenticating proxy
    token_uri: str
    auth: GcsAuthProxy

    def service_account(self) -> str:
        """A new service-account key file's JSON that the token endpoint accepts."""
        info, public = service_account_key(self.token_uri)
        self.auth.public_key, self.auth.email = public, info["client_email"]
        return json.dumps(info)

    def upload(self, local: Path, bucket: str, key: str) -> None:
        """Through the emulator's JSON upload API (not the proxy): the fetcher's traffic is
        what the proxy records."""
        httpx.post(f"{self.emulator}/storage/v1/b", json={"name": bucket}, timeout=10)
        files = sorted(p for p in local.rglob("*") if p.is_file()) if local.is_dir() else [local]
        for path in files:
            name = f"{key.rstrip('/')}/{path.relative_to(local)}" if local.is_dir() else key
            r = httpx.post(
                f"{self.emulator}/upload/storage/v1/b/{bucket}/o",
                params={"uploadType": "media", "name": name},
                content=path.read_bytes(),
                timeout=30,
            )
            r.raise_for_status()


@contextmanager
def gcs_server() -> Iterator[GcsServer]:
    binary = go_tools_bin() / "fake-gcs-server"
    workdir = Path(tempfile.mkdtemp(prefix="tmo-gcs-"))
    port = free_port()
    emulator = f"http://127.0.0.1:{port}"
    argv = [
        str(binary),
        "-scheme", "http",
        "-host", "127.0.0.1",
        "-port", str(port),
        "-backend", "memory",
        "-external-url", emulator,
        "-log-level", "warn",
    ]  # fmt: skip
    auth = GcsAuthProxy(upstream=emulator)
    base: list[str] = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(auth, base))
    base.append(f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        with _process(argv, f"{emulator}/storage/v1/b", workdir):
            yield GcsServer(emulator, base[0], base[0] + "/token", auth)
    finally:
        httpd.shutdown()
        httpd.server_close()
        shutil.rmtree(workdir, ignore_errors=True)
