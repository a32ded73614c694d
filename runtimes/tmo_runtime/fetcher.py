"""Fetch a model artifact to a local path and verify its sha256.

Digest of a directory (so a user can compute it with coreutils):
    (cd DIR && find -L . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) | sha256sum
A single file's digest is its plain sha256.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

PVC_ROOT_ENV = "TMO_PVC_ROOT"  # where the pod mounts PVCs: pvc://CLAIM/p -> $TMO_PVC_ROOT/CLAIM/p
DEFAULT_PVC_ROOT = "/mnt/pvc"
_CHUNK = 1 << 20


class FetchError(RuntimeError):
    """The artifact could not be fetched."""


class IntegrityError(RuntimeError):
    """The artifact's digest does not match spec.model.sha256."""


def split_scheme(uri: str) -> tuple[str, str]:
    if "://" not in uri:
        raise FetchError(f"model URI {uri!r} has no scheme (file:// s3:// gs:// https:// ...)")
    scheme, rest = uri.split("://", 1)
    return scheme.lower(), rest


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _files_under(root: Path) -> Iterator[str]:
    for dirpath, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            rel = os.path.relpath(os.path.join(dirpath, name), root)
            yield "./" + rel.replace(os.sep, "/")


def tree_sha256(path: Path) -> str:
    """Digest of a file, or of a directory as the coreutils one-liner in the module doc."""
    if path.is_file():
        return file_sha256(path)
    lines = []
    for rel in sorted(_files_under(path), key=lambda r: r.encode()):
        lines.append(f"{file_sha256(path / rel)}  {rel}\n")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def verify_sha256(path: Path, expected: str | None, uri: str) -> str:
    actual = tree_sha256(path)
    if expected is not None and actual != expected.lower():
        raise IntegrityError(
            f"refusing to serve {uri}: sha256 mismatch (spec.model.sha256 {expected}, "
            f"artifact {actual}); the artifact changed or was tampered with"
        )
    return actual


def resolve_file_uri(rest: str, base_dir: Path) -> Path:
    path = Path(os.path.expandvars(rest)).expanduser()
    return path if path.is_absolute() else (base_dir / path).resolve()


def resolve_pvc_uri(rest: str, pvc_root: str | None = None) -> Path:
    root = pvc_root or os.environ.get(PVC_ROOT_ENV, DEFAULT_PVC_ROOT)
    claim, _, sub = rest.partition("/")
    if not claim or ".." in Path(sub).parts:
        raise FetchError(f"pvc://{rest}: expected pvc://CLAIM/path without '..'")
    return Path(root) / claim / sub


def _escapes(member: str) -> bool:
    """Whether an archive member's name is absolute or climbs out with '..'."""
    return member.startswith(("/", "\\")) or ".." in Path(member.replace("\\", "/")).parts


def _unpack_if_archive(path: Path, dest: Path) -> Path:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        out = dest / "unpacked"
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            # Every member is checked before the first is written: a refused archive leaves
            # nothing behind. tarfile's "data" filter refuses links out of `out` and special
            # files but silently strips a leading "/": refuse that here too.
            for info in members:
                if _escapes(info.name):
                    raise FetchError(f"{path.name}: unsafe path {info.name!r} in archive")
                try:
                    tarfile.data_filter(info, str(out))
                except tarfile.FilterError as e:
                    raise FetchError(
                        f"{path.name}: unsafe member {info.name!r} in archive ({e})"
                    ) from e
            try:
                # The filter again, at extraction: a link extracted earlier is resolved now.
                tar.extractall(out, members=members, filter="data")
            except tarfile.FilterError as e:
                raise FetchError(
                    f"{path.name}: unsafe member {e.tarinfo.name!r} in archive ({e})"
                ) from e
        return out
    if name.endswith(".zip"):
        out = dest / "unpacked"
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if _escapes(member):
                    raise FetchError(f"{path.name}: unsafe path {member!r} in archive")
            zf.extractall(out)
        return out
    return path


def _fetch_https(uri: str, dest: Path) -> Path:
    import httpx

    dest.mkdir(parents=True, exist_ok=True)
    target = dest / (uri.rstrip("/").rsplit("/", 1)[-1] or "artifact")
    with httpx.stream("GET", uri, follow_redirects=True, timeout=60.0) as r:
        if r.status_code != 200:
            raise FetchError(f"GET {uri}: HTTP {r.status_code}")
        with target.open("wb") as f:
            for chunk in r.iter_bytes(_CHUNK):
                f.write(chunk)
    return target


def fetch(uri: str, dest: Path, *, base_dir: Path, sha256: str | None = None) -> Path:
    """Local path of the artifact at `uri`, downloaded under `dest` when remote.

    Verification happens on what was fetched (before unpacking), so a digest covers exactly
    the bytes the user published.
    """
    scheme, rest = split_scheme(uri)
    if scheme == "file":
        path = resolve_file_uri(rest, base_dir)
    elif scheme == "pvc":
        path = resolve_pvc_uri(rest)
    elif scheme == "hf":
        from tmo_runtime.source_hf import fetch_hf

        path = fetch_hf(rest, dest)
    elif scheme == "https":
        path = _fetch_https(uri, dest)
    elif scheme in ("s3", "gs", "gcs", "memory"):
        from tmo_runtime.source_cloud import fetch_object_store

        path = fetch_object_store(uri, dest)
    elif scheme == "mlflow":
        from tmo_runtime.source_mlflow import fetch_mlflow

        path = fetch_mlflow(rest, dest)
    else:
        raise FetchError(f"model URI scheme {scheme}:// is not supported")
    if not path.exists():
        raise FetchError(f"{uri}: {path} does not exist")
    verify_sha256(path, sha256, uri)
    return _unpack_if_archive(path, dest) if path.is_file() else path
