"""A local Git server for e2e tests: bare repositories under one folder, served over Git's smart
HTTP protocol by the real `git http-backend` (a CGI program that ships with git), behind a tiny
threaded HTTP server on 127.0.0.1. Flux's source-controller clones and fetches from it like from
any Git host; tests commit to a work tree and push.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType


def _git_exec_path() -> Path:
    r = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True)
    return Path(r.stdout.strip())


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.0"  # one request per connection; the body ends at close

    def do_GET(self) -> None:
        self._cgi()

    def do_POST(self) -> None:
        self._cgi()

    def log_message(self, format: str, *args: object) -> None:
        self.server.requests.append(f"{self.command} {self.path}")

    def _cgi(self) -> None:
        path, _, query = self.path.partition("?")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.server.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type") or "",
            "CONTENT_LENGTH": str(length),
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": "e2e",  # http-backend refuses pushes from anonymous users
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.0",
        }
        for header in ("Content-Encoding", "Git-Protocol"):
            if self.headers.get(header):
                env["HTTP_" + header.upper().replace("-", "_")] = self.headers[header]
        r = subprocess.run(
            [str(self.server.backend)], input=body, capture_output=True, env=env, timeout=60
        )
        crlf = r.stdout.find(b"\r\n\r\n")
        lf = r.stdout.find(b"\n\n")
        if crlf >= 0 and (lf < 0 or crlf < lf):  # CGI headers end with an empty line
            head, payload = r.stdout[:crlf], r.stdout[crlf + 4 :]
        else:
            head, payload = r.stdout[: max(lf, 0)], r.stdout[lf + 2 :] if lf >= 0 else b""
        status = 200
        headers: list[tuple[str, str]] = []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.strip().split()[0])
            elif name:
                headers.append((name, value.strip()))
        if r.returncode != 0 and not r.stdout:
            status, payload = 500, r.stderr
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.backend = _git_exec_path() / "git-http-backend"
        self.requests: list[str] = []


class GitServer:
    """`with GitServer(folder) as git:` serves every bare repository in `folder` at
    `git.url(name)` until the block ends."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self._server = _Server(root)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GitServer:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def requests(self) -> list[str]:
        """Every request served so far ("GET /repo.git/info/refs"...)."""
        return list(self._server.requests)

    def url(self, name: str) -> str:
        port = self._server.server_address[1]
        return f"http://127.0.0.1:{port}/{name}.git"

    def create(self, name: str, work_tree: Path) -> Repository:
        """A new bare repository `name` and a clone of it at `work_tree` to commit in."""
        bare = self.root / f"{name}.git"
        _git(self.root, "init", "--quiet", "--bare", "--initial-branch=main", str(bare))
        _git(bare, "config", "http.receivepack", "true")
        if work_tree.exists():
            shutil.rmtree(work_tree)
        _git(self.root, "clone", "--quiet", self.url(name), str(work_tree))
        _git(work_tree, "checkout", "--quiet", "-B", "main")
        return Repository(work_tree)


class Repository:
    """A work tree whose commits are pushed to the served repository."""

    def __init__(self, work_tree: Path) -> None:
        self.work_tree = work_tree

    def commit(self, files: dict[str, str], message: str) -> str:
        """Write `files` (path -> text), commit them, push to main; returns the commit SHA."""
        for rel, text in files.items():
            path = self.work_tree / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        _git(self.work_tree, "add", "--all")
        _git(self.work_tree, "commit", "--quiet", "-m", message)
        _git(self.work_tree, "push", "--quiet", "origin", "HEAD:main")
        return _git(self.work_tree, "rev-parse", "HEAD").strip()


def _git(cwd: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "e2e",
        "GIT_AUTHOR_EMAIL": "e2e@tmo.dev",
        "GIT_COMMITTER_NAME": "e2e",
        "GIT_COMMITTER_EMAIL": "e2e@tmo.dev",
        "GIT_CONFIG_GLOBAL": os.devnull,
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_TERMINAL_PROMPT": "0",
    }
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)
    if r.returncode != 0:
        raise AssertionError(f"git {' '.join(args)} failed ({r.returncode}):\n{r.stderr}")
    return r.stdout
