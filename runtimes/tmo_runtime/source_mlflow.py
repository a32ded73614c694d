"""mlflow://NAME/VERSION and mlflow://NAME@ALIAS: a registered model version of an MLflow model
registry, resolved through the tracking server's REST API, then downloaded.

The registry is the credentials Secret's MLFLOW_TRACKING_URI (an http(s):// tracking server),
read from the environment or from the file of that name in $TMO_CREDENTIALS_DIR. Optional
MLFLOW_TRACKING_TOKEN (Bearer) or MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD (Basic):
the names MLflow's own client reads.

Where the version's artifacts live decides how they are downloaded:
    mlflow-artifacts:   the tracking server's artifact proxy (`mlflow server --serve-artifacts`)
    s3:// gs://         the object store, with the same Secret's cloud credentials
    http(s)://          a plain GET (a single file)
    file:// or a path   refused: that is the server's disk, which the pod cannot read

What the version holds, and so what spec.model.sha256 is the digest of:
    a save_pretrained directory (config.json at its top)   that directory
    an MLflow `transformers` flavor model (MLmodel, model/, components/tokenizer/ ...):
        the save_pretrained directory it holds: model/ with each components/*/ merged in
    one archive file (.mar .tar.gz .tgz .tar .zip) beside MLflow's metadata files: that file
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

import httpx
import yaml

from tmo_runtime.fetcher import FetchError

TRACKING_URI = "MLFLOW_TRACKING_URI"
TOKEN = "MLFLOW_TRACKING_TOKEN"
USERNAME = "MLFLOW_TRACKING_USERNAME"
PASSWORD = "MLFLOW_TRACKING_PASSWORD"
CREDENTIALS_DIR_ENV = "TMO_CREDENTIALS_DIR"
SECRET_FIELD = "spec.model.credentialsSecretRef"
ARCHIVE_SUFFIXES = (".mar", ".tar.gz", ".tgz", ".tar", ".zip")
# What MLflow writes beside a logged model's own files.
MLFLOW_METADATA = {
    "MLmodel",
    "conda.yaml",
    "python_env.yaml",
    "requirements.txt",
    "registered_model_meta",
    "input_example.json",
    "serving_input_example.json",
}
_CHUNK = 1 << 20
_TIMEOUT = httpx.Timeout(60.0, connect=10.0)


def _setting(name: str) -> str | None:
    """A Secret key: from the environment (envFrom) or its file in the credentials mount."""
    value = os.environ.get(name)
    if value:
        return value.strip()
    creds = os.environ.get(CREDENTIALS_DIR_ENV)
    if creds:
        path = Path(creds) / name
        if path.is_file():
            return path.read_text().strip() or None
    return None


def redact(url: str) -> str:
    """`url` without any user:password@ in it: the URL may be printed, the password may not."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


class Registry:
    """The tracking server's REST API, as the fetch of one mlflow:// URI sees it."""

    def __init__(self, uri: str) -> None:
        self.uri = uri  # mlflow://..., for messages
        tracking = _setting(TRACKING_URI)
        if not tracking:
            raise FetchError(
                f"{uri}: no registry address: set {TRACKING_URI} (http(s)://host:port of the "
                f"MLflow tracking server) in the Secret named by {SECRET_FIELD}"
            )
        parts = urlsplit(tracking)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FetchError(
                f"{uri}: {TRACKING_URI} {redact(tracking)!r} is not an http(s):// tracking "
                "server address (a databricks, file or database URI cannot be used from the pod)"
            )
        self.base = redact(tracking).rstrip("/")
        headers = {"User-Agent": "tmo-fetch"}
        auth: httpx.BasicAuth | None = None
        token, user, password = _setting(TOKEN), _setting(USERNAME), _setting(PASSWORD)
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user or password:
            auth = httpx.BasicAuth(user or "", password or "")
        elif parts.username:
            auth = httpx.BasicAuth(parts.username, parts.password or "")
        self.client = httpx.Client(base_url=self.base, headers=headers, auth=auth, timeout=_TIMEOUT)

    def close(self) -> None:
        self.client.close()

    def _fail(self, what: str, r: httpx.Response) -> FetchError:
        if r.status_code in (401, 403):
            return FetchError(
                f"{self.uri}: the registry at {self.base} refused the credentials "
                f"(HTTP {r.status_code} on {what}): check {TOKEN} or {USERNAME} / {PASSWORD} in "
                f"the Secret named by {SECRET_FIELD}"
            )
        message, code = "", ""
        try:
            body = r.json()
            if isinstance(body, dict):
                code = str(body.get("error_code") or "")
                message = str(body.get("message") or code)
        except ValueError:
            pass
        message = " ".join(message.split())[:300] or r.reason_phrase
        # A missing alias is a 400 INVALID_PARAMETER_VALUE "... alias x not found."
        missing = r.status_code == 404 or code == "RESOURCE_DOES_NOT_EXIST"
        if missing or (r.status_code == 400 and "not found" in message.lower()):
            return FetchError(f"{self.uri}: not found ({what}: {message})")
        return FetchError(
            f"{self.uri}: the registry at {self.base} answered HTTP {r.status_code} on {what}: "
            f"{message}"
        )

    def request(self, path: str, params: dict[str, str] | None = None) -> httpx.Response:
        try:
            return self.client.get(path, params=params)
        except httpx.HTTPError as e:
            raise FetchError(
                f"{self.uri}: the registry at {self.base} is unreachable "
                f"({type(e).__name__}: {' '.join(str(e).split())[:200]})"
            ) from e

    def get_json(self, path: str, params: dict[str, str], what: str) -> dict[str, Any]:
        r = self.request(path, params)
        if r.status_code != 200:
            raise self._fail(what, r)
        try:
            body = r.json()
        except ValueError as e:
            raise FetchError(
                f"{self.uri}: {self.base} answered {what} with something other than JSON: is "
                f"{TRACKING_URI} the MLflow tracking server?"
            ) from e
        if not isinstance(body, dict):
            raise FetchError(f"{self.uri}: unexpected answer to {what} from {self.base}")
        return body

    # -- resolution --------------------------------------------------------------------------

    def model_version(self, name: str, version: str | None, alias: str | None) -> dict[str, Any]:
        if alias is not None:
            body = self.get_json(
                "/api/2.0/mlflow/registered-models/alias",
                {"name": name, "alias": alias},
                f"alias @{alias} of registered model {name!r}",
            )
        else:
            assert version is not None
            body = self.get_json(
                "/api/2.0/mlflow/model-versions/get",
                {"name": name, "version": version},
                f"version {version} of registered model {name!r}",
            )
        mv = body.get("model_version")
        if not isinstance(mv, dict) or not mv.get("version"):
            raise FetchError(f"{self.uri}: the registry's answer has no model_version")
        status = mv.get("status", "READY")
        if status != "READY":
            raise FetchError(
                f"{self.uri}: version {mv['version']} of {name!r} is {status}, not READY"
                + (f" ({mv['status_message']})" if mv.get("status_message") else "")
            )
        return mv

    def download_uri(self, name: str, version: str) -> str:
        body = self.get_json(
            "/api/2.0/mlflow/model-versions/get-download-uri",
            {"name": name, "version": version},
            f"the download URI of version {version} of {name!r}",
        )
        uri = body.get("artifact_uri")
        if not isinstance(uri, str) or not uri:
            raise FetchError(f"{self.uri}: the registry gave no artifact_uri for version {version}")
        if uri.startswith("runs:/"):  # the run's artifact location, then the path in it
            run_id, _, sub = uri[len("runs:/") :].strip("/").partition("/")
            run = self.get_json("/api/2.0/mlflow/runs/get", {"run_id": run_id}, f"run {run_id}")
            base = str(run.get("run", {}).get("info", {}).get("artifact_uri") or "")
            if not base:
                raise FetchError(f"{self.uri}: run {run_id} has no artifact_uri")
            uri = f"{base.rstrip('/')}/{sub}" if sub else base
        elif uri.startswith("models:/"):  # a logged model (MLflow 3): its own artifact location
            model_id = uri[len("models:/") :].strip("/").split("/", 1)[0]
            info = self.get_json(
                f"/api/2.0/mlflow/logged-models/{quote(model_id, safe='')}",
                {},
                f"logged model {model_id}",
            )
            uri = str(info.get("model", {}).get("info", {}).get("artifact_uri") or "")
            if not uri:
                raise FetchError(f"{self.uri}: logged model {model_id} has no artifact_uri")
        return uri

    # -- the artifact proxy ------------------------------------------------------------------

    def _proxy_base(self, location: str) -> tuple[httpx.Client, str]:
        """The client and the proxy-relative path of an mlflow-artifacts: location."""
        parts = urlsplit(location)
        path = parts.path.lstrip("/")
        if parts.netloc and parts.netloc != urlsplit(self.base).netloc:
            # mlflow-artifacts://host:port/path: another server, with the same credentials.
            scheme = urlsplit(self.base).scheme
            other = httpx.Client(
                base_url=f"{scheme}://{parts.netloc}",
                headers=self.client.headers,
                auth=self.client.auth,
                timeout=_TIMEOUT,
            )
            return other, path
        return self.client, path

    def download_proxied(self, location: str, dest: Path) -> Path:
        client, root = self._proxy_base(location)
        try:
            files = self._list(client, root)
            if files is None:  # not a directory: a single file
                target = dest / (root.rsplit("/", 1)[-1] or "artifact")
                self._download(client, root, target)
                return target
            target = dest / "artifact"
            target.mkdir(parents=True, exist_ok=True)
            self._download_tree(client, root, "", target, files)
            return target
        finally:
            if client is not self.client:
                client.close()

    def _list(self, client: httpx.Client, path: str) -> list[dict[str, Any]] | None:
        what = f"the artifact listing of {path}"
        try:
            r = client.get("/api/2.0/mlflow-artifacts/artifacts", params={"path": path})
        except httpx.HTTPError as e:
            raise FetchError(
                f"{self.uri}: the artifact proxy at {client.base_url} is unreachable "
                f"({type(e).__name__})"
            ) from e
        if r.status_code != 200:
            raise self._fail(what, r)
        try:
            files = r.json().get("files")
        except (ValueError, AttributeError) as e:
            raise FetchError(f"{self.uri}: {what}: the artifact proxy did not answer JSON") from e
        if not files:
            return None
        return [f for f in files if isinstance(f, dict) and f.get("path")]

    def _download_tree(
        self,
        client: httpx.Client,
        root: str,
        rel: str,
        target: Path,
        files: list[dict[str, Any]],
    ) -> None:
        for entry in files:
            # The listing's paths are relative to the listed path; never outside the target.
            name = str(entry["path"]).rstrip("/").rsplit("/", 1)[-1]
            if name in ("", ".", "..") or "\\" in name:
                raise FetchError(f"{self.uri}: unsafe artifact path {entry['path']!r}")
            sub = f"{rel}/{name}" if rel else name
            if entry.get("is_dir"):
                (target / sub).mkdir(parents=True, exist_ok=True)
                children = self._list(client, f"{root}/{sub}")
                self._download_tree(client, root, sub, target, children or [])
            else:
                self._download(client, f"{root}/{sub}", target / sub)

    def _download(self, client: httpx.Client, path: str, target: Path) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        url = "/api/2.0/mlflow-artifacts/artifacts/" + quote(path)
        try:
            with client.stream("GET", url) as r:
                if r.status_code != 200:
                    r.read()
                    raise self._fail(f"the download of {path}", r)
                with target.open("wb") as f:
                    for chunk in r.iter_bytes(_CHUNK):
                        f.write(chunk)
        except httpx.HTTPError as e:
            raise FetchError(
                f"{self.uri}: the download of {path} from {client.base_url} failed "
                f"({type(e).__name__})"
            ) from e


def parse(rest: str) -> tuple[str, str | None, str | None]:
    """NAME/VERSION or NAME@ALIAS (as the CRD's pattern admits them)."""
    if "@" in rest:
        name, alias = rest.rsplit("@", 1)
        if name and alias:
            return name, None, alias
    elif "/" in rest:
        name, version = rest.rsplit("/", 1)
        if name and version.isdigit():
            return name, version, None
    raise FetchError(f"mlflow://{rest}: expected mlflow://NAME/VERSION or mlflow://NAME@ALIAS")


def download(registry: Registry, location: str, dest: Path) -> Path:
    scheme = urlsplit(location).scheme.lower()
    if scheme == "mlflow-artifacts":
        return registry.download_proxied(location, dest)
    if scheme in ("s3", "gs", "gcs"):
        from tmo_runtime.source_cloud import fetch_object_store

        return fetch_object_store(location, dest)
    if scheme in ("http", "https"):
        from tmo_runtime.fetcher import _fetch_https

        return _fetch_https(location, dest)
    raise FetchError(
        f"{registry.uri}: the version's artifacts are at {redact(location)}, which the pod "
        "cannot read (the registry server's own disk, or a store tmo does not support): run "
        "the tracking server with --serve-artifacts (mlflow-artifacts:) or an s3:// / gs:// "
        "artifact root"
    )


def _transformers_dir(root: Path, uri: str) -> Path | None:
    """The save_pretrained directory an MLflow `transformers` flavor model holds, or None."""
    mlmodel = root / "MLmodel"
    if not mlmodel.is_file():
        return None
    try:
        meta = yaml.safe_load(mlmodel.read_text())
    except yaml.YAMLError as e:
        raise FetchError(f"{uri}: the version's MLmodel file is not YAML ({e})") from e
    flavor = (meta or {}).get("flavors", {}).get("transformers") if isinstance(meta, dict) else None
    if not isinstance(flavor, dict):
        return None
    binary = root / str(flavor.get("model_binary") or "pipeline")  # MLflow's own default
    if not binary.is_dir():
        raise FetchError(
            f"{uri}: the version is an MLflow transformers model without its weights "
            "(logged with save_pretrained=False?): log it with its weights, or register a "
            "save_pretrained directory"
        )
    components = root / "components"
    if not components.is_dir():
        return binary
    merged = root.parent / "save_pretrained"
    shutil.copytree(binary, merged)
    for component in sorted(p for p in components.iterdir() if p.is_dir()):
        shutil.copytree(component, merged, dirs_exist_ok=True)
    return merged


def model_path(artifact: Path, uri: str) -> Path:
    """What the version holds, as fetch() verifies and packages it (see the module doc)."""
    if artifact.is_file() or (artifact / "config.json").is_file():
        return artifact
    flavored = _transformers_dir(artifact, uri)
    if flavored is not None:
        return flavored
    top = [p for p in artifact.iterdir() if p.name not in MLFLOW_METADATA]
    archives = [p for p in top if p.is_file() and p.name.lower().endswith(ARCHIVE_SUFFIXES)]
    if len(top) == 1 and archives:
        return archives[0]
    raise FetchError(
        f"{uri}: the version's artifacts are neither a save_pretrained directory (no "
        "config.json), an MLflow transformers model nor one archive (.mar .tar.gz .zip); "
        f"found {sorted(p.name for p in artifact.iterdir())[:8]}"
    )


def fetch_mlflow(rest: str, dest: Path) -> Path:
    uri = f"mlflow://{rest}"
    name, version, alias = parse(rest)
    registry = Registry(uri)
    try:
        mv = registry.model_version(name, version, alias)
        location = registry.download_uri(name, str(mv["version"]))
        dest.mkdir(parents=True, exist_ok=True)
        artifact = download(registry, location, dest / "mlflow")
    finally:
        registry.close()
    return model_path(artifact, uri)
