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


def hf_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    hf_home = os.environ.get(
        "HF_HOME", os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    )
    return Path(hf_home) / "hub"


def resolve_hf_uri(rest: str, cache: Path | None = None) -> Path:
    """hf://org/name@rev from the local Hugging Face cache; never touches the network."""
    repo, _, rev = rest.partition("@")
    rev = rev or "main"
    root = (cache or hf_cache_dir()) / ("models--" + repo.replace("/", "--"))
    if not root.is_dir():
        raise FetchError(f"hf://{rest}: {repo} is not in the local Hugging Face cache ({root})")
    ref = root / "refs" / rev
    commit = ref.read_text().strip() if ref.is_file() else rev
    snapshot = root / "snapshots" / commit
    if not snapshot.is_dir():
        raise FetchError(f"hf://{rest}: revision {rev} is not in the local cache ({snapshot})")
    return snapshot


def _unpack_if_archive(path: Path, dest: Path) -> Path:
    name = path.name.lower()
    if name.endswith((".tar.gz", ".tgz", ".tar")):
        out = dest / "unpacked"
        with tarfile.open(path) as tar:
            tar.extractall(out, filter="data")  # "data" refuses absolute paths and links out
        return out
    if name.endswith(".zip"):
        out = dest / "unpacked"
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if member.startswith("/") or ".." in Path(member).parts:
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


def _fetch_fsspec(uri: str, dest: Path) -> Path:
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise FetchError(
            f"{uri}: no fsspec filesystem for this scheme ({e}); install s3fs/gcsfs"
        ) from e
    dest.mkdir(parents=True, exist_ok=True)
    if not fs.exists(path):
        raise FetchError(f"{uri}: not found")
    if fs.isdir(path):
        target = dest / "model"
        fs.get(path.rstrip("/") + "/", str(target), recursive=True)
    else:
        target = dest / path.rstrip("/").rsplit("/", 1)[-1]
        fs.get(path, str(target))
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
        path = resolve_hf_uri(rest)
    elif scheme == "https":
        path = _fetch_https(uri, dest)
    elif scheme in ("s3", "gs", "gcs", "memory"):
        path = _fetch_fsspec(uri, dest)
    else:
        raise FetchError(f"model URI scheme {scheme}:// is not supported")
    if not path.exists():
        raise FetchError(f"{uri}: {path} does not exist")
    verify_sha256(path, sha256, uri)
    return _unpack_if_archive(path, dest) if path.is_file() else path
