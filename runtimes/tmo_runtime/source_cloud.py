"""s3:// and gs:// (and memory:// in tests) through fsspec: s3fs and gcsfs.

Credentials come from spec.model.credentialsSecretRef, as the fetch container gets them:
- s3://: the Secret's keys as environment variables, the names AWS SDKs read
  (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, optional AWS_SESSION_TOKEN, AWS_REGION, and
  AWS_ENDPOINT_URL for S3-compatible stores: MinIO, Ceph, R2, versitygw).
- gs://: the Secret's `service-account.json` key as a file under $TMO_CREDENTIALS_DIR; without
  it, Application Default Credentials (GOOGLE_APPLICATION_CREDENTIALS, workload identity).

Every failure is a FetchError naming the URI and the cause, never a secret value.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tmo_runtime.fetcher import FetchError, split_scheme

CREDENTIALS_DIR_ENV = "TMO_CREDENTIALS_DIR"
SERVICE_ACCOUNT_KEY = "service-account.json"
GCS_READ_SCOPE = "https://www.googleapis.com/auth/devstorage.read_only"
CONNECT_TIMEOUT_S = 10
READ_TIMEOUT_S = 60

# The key pair (or session token) itself was refused; XAdminUserNotFound is versitygw's
# root-only mode saying InvalidAccessKeyId.
_S3_REFUSED = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "XAdminUserNotFound",
}


def s3_endpoint() -> str | None:
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def _s3_filesystem() -> Any:
    import s3fs

    endpoint = s3_endpoint()
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    client: dict[str, Any] = {}
    if endpoint:
        client["endpoint_url"] = endpoint
    if region:
        client["region_name"] = region
    config: dict[str, Any] = {
        "connect_timeout": CONNECT_TIMEOUT_S,
        "read_timeout": READ_TIMEOUT_S,
        "retries": {"max_attempts": 3, "mode": "standard"},
    }
    if endpoint:  # S3-compatible stores all serve path-style; few have wildcard DNS
        config["s3"] = {"addressing_style": "path"}
    fs = s3fs.S3FileSystem(client_kwargs=client, config_kwargs=config)
    fs.retries = 2  # s3fs's own retries on top of botocore's (5 by default)
    return fs


def service_account_file() -> Path | None:
    root = os.environ.get(CREDENTIALS_DIR_ENV)
    path = Path(root) / SERVICE_ACCOUNT_KEY if root else None
    return path if path is not None and path.is_file() else None


def _gcs_credentials(uri: str, key_file: Path) -> Any:
    """The service account's credentials, refreshed once here so that a refused key fails
    at once with the token endpoint's reason (gcsfs would retry it as a transient 401)."""
    import google.auth.exceptions
    from google.auth.transport.requests import Request
    from google.oauth2 import service_account

    where = f"the Secret's {SERVICE_ACCOUNT_KEY}"
    try:
        info = json.loads(key_file.read_text())
        creds = service_account.Credentials.from_service_account_info(  # type: ignore[no-untyped-call]
            info, scopes=[GCS_READ_SCOPE]
        )
    except (ValueError, KeyError, TypeError, OSError) as e:
        # the reason names the missing field, never the key's content
        reason = type(e).__name__ if isinstance(e, json.JSONDecodeError) else _one_line(e)
        raise FetchError(f"{uri}: {where} is not a service-account key file ({reason})") from e
    token_uri = info.get("token_uri", "")
    try:
        creds.refresh(Request())
    except google.auth.exceptions.RefreshError as e:
        raise FetchError(
            f"{uri}: access denied ({where} was refused by its token endpoint "
            f"{token_uri}: {_one_line(e.args[0] if e.args else e)})"
        ) from e
    except google.auth.exceptions.TransportError as e:
        raise FetchError(
            f"{uri}: cannot reach the token endpoint {token_uri} of {where} ({type(e).__name__})"
        ) from e
    return creds


def _gcs_filesystem(uri: str) -> Any:
    # gcsfs's plain JSON-API filesystem: `gcsfs.GCSFileSystem` is, by default, an experimental
    # subclass that first asks the gRPC Storage Control API for each bucket's layout (a
    # permission a read-only service account lacks; with an emulator, a minute's timeout).
    from gcsfs.core import GCSFileSystem

    key_file = service_account_file()
    token = _gcs_credentials(uri, key_file) if key_file else None
    return GCSFileSystem(token=token, timeout=READ_TIMEOUT_S)


def _filesystem(scheme: str, uri: str) -> Any:
    try:
        if scheme == "s3":
            return _s3_filesystem()
        if scheme in ("gs", "gcs"):
            return _gcs_filesystem(uri)
        import fsspec

        return fsspec.filesystem(scheme)
    except ImportError as e:
        raise FetchError(f"{uri}: {e.name} is not installed (the runtime's [runtime] extra)") from e


def _one_line(value: object) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _scrub(message: str) -> str:
    """Blank any credential value that a server or library echoed into the message."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        value = os.environ.get(name)
        if value and len(value) >= 4:
            message = message.replace(value, "***")
    return message


def _chain(error: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    e: BaseException | None = error
    while e is not None and e not in seen:
        seen.append(e)
        e = e.__cause__ or e.__context__
    return seen


def _s3_code(error: BaseException) -> str | None:
    for e in _chain(error):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            code = (response.get("Error") or {}).get("Code")
            if code:
                return str(code)
    return None


def _s3_message(error: BaseException) -> str:
    for e in _chain(error):
        response = getattr(e, "response", None)
        if isinstance(response, dict):
            return _one_line((response.get("Error") or {}).get("Message") or "")
    return ""


def _s3_explained(fs: Any, path: str, error: BaseException) -> BaseException:
    """A refused HEAD has no body to say why (only "403", "400"): the same refusal of a one-key
    listing of the same place carries the store's error code and message."""
    code = _s3_code(error)
    if code is not None and not code.isdigit():
        return error
    bucket, _, key = path.partition("/")
    try:
        fs.call_s3("list_objects_v2", Bucket=bucket, Prefix=key, MaxKeys=1)
    except Exception as e:  # the listing's own error, when it has a code
        return e if _s3_code(e) else error
    return error


def _describe(uri: str, scheme: str, error: BaseException) -> str:
    names = {type(e).__name__ for e in _chain(error)}
    if scheme == "s3":
        endpoint = s3_endpoint() or "the AWS S3 endpoint"
    else:
        endpoint = os.environ.get("STORAGE_EMULATOR_HOST") or "the GCS endpoint"
    code = _s3_code(error) if scheme == "s3" else None
    if code in _S3_REFUSED:
        return (
            f"{uri}: access denied (the Secret's AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY "
            f"were refused: {code})"
        )
    if code in ("AccessDenied", "AllAccessDisabled", "AccountProblem"):
        return f"{uri}: access denied ({code}: the Secret's credentials may not read it)"
    if code == "AuthorizationHeaderMalformed":  # AWS: "the region 'x' is wrong; expecting 'y'"
        return f"{uri}: refused: wrong region, check the Secret's AWS_REGION ({_s3_message(error)})"
    if code == "400":  # a HEAD refused without a body: a request signed for another region
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "unset"
        return (
            f"{uri}: refused as a bad request (HTTP 400): check the Secret's AWS_REGION "
            f"({region}) is the bucket's region"
        )
    if "NoCredentialsError" in names:
        return (
            f"{uri}: no credentials (put AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the "
            f"Secret named by spec.model.credentialsSecretRef)"
        )
    if code in ("NoSuchBucket", "NoSuchKey", "404") or isinstance(error, FileNotFoundError):
        what = "bucket not found" if code == "NoSuchBucket" else "not found"
        return f"{uri}: {what}"
    if isinstance(error, PermissionError) or "Forbidden" in str(error).split(":")[0]:
        return f"{uri}: access denied ({_one_line(error) or code})"
    if names & {"ConnectTimeoutError", "ReadTimeoutError", "TimeoutError", "ServerTimeoutError"}:
        return f"{uri}: timed out talking to {endpoint}"
    if names & {"EndpointConnectionError", "ClientConnectorError", "ConnectionRefusedError"}:
        return f"{uri}: cannot reach {endpoint} (connection failed)"
    if "HttpError" in names and "401" in str(getattr(error, "code", "")):
        return f"{uri}: access denied (the credentials were refused: {_one_line(error)})"
    return f"{uri}: {type(error).__name__}: {_one_line(error) or code}"


def fetch_object_store(uri: str, dest: Path) -> Path:
    """The object (a .mar, an archive, a file) or every object under the prefix, in `dest`."""
    scheme, _ = split_scheme(uri)
    fs = _filesystem(scheme, uri)
    path = fs._strip_protocol(uri).rstrip("/")
    dest.mkdir(parents=True, exist_ok=True)
    try:
        info = fs.info(path)
        if info["type"] == "directory":
            target = dest / "model"
            fs.get(path + "/", str(target), recursive=True)
        else:
            target = dest / path.rsplit("/", 1)[-1]
            fs.get(path, str(target))
    except FetchError:
        raise
    except Exception as e:  # every failure becomes one message naming the URI
        cause: BaseException = e
        if scheme == "s3" and isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
            cause = _s3_explained(fs, path, e)
        raise FetchError(_scrub(_describe(uri, scheme, cause))) from e
    return target
