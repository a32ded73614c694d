"""s3:// and gs:// (and memory:// in tests) through fsspec: s3fs and gcsfs."""

from __future__ import annotations

from pathlib import Path

from tmo_runtime.fetcher import FetchError


def fetch_object_store(uri: str, dest: Path) -> Path:
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
