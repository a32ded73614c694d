"""hf://ORG/NAME[@REVISION] through huggingface_hub, online or from a mounted cache.

Online, the fetch container downloads into its own temp dir with HF_TOKEN (gated and private
repositories) and HF_ENDPOINT (a private mirror) from the credentials Secret. Offline
(HF_HUB_OFFLINE=1, set with spec.model.hfCacheClaim), the snapshot is read from HF_HUB_CACHE,
the layout `hf download --cache-dir` writes, and nothing touches the network.
"""

from __future__ import annotations

import os
from pathlib import Path

from tmo_runtime.fetcher import FetchError


def fetch_hf(rest: str, dest: Path) -> Path:
    """The local snapshot folder of hf://`rest` (files are links into the cache's blobs)."""
    # huggingface_hub's own reading of HF_HUB_CACHE / HF_HOME and HF_HUB_OFFLINE.
    from huggingface_hub import constants, errors, snapshot_download

    repo, _, revision = rest.partition("@")
    revision = revision or "main"
    uri = f"hf://{rest}"
    is_offline = bool(constants.HF_HUB_OFFLINE)
    # Offline: the mounted cache. Online: a fresh cache in the fetch container's temp dir
    # unless the environment names one (tmo serve on a developer's machine reuses theirs).
    own_cache = is_offline or os.environ.get("HF_HUB_CACHE")
    cache = Path(constants.HF_HUB_CACHE) if own_cache else dest / "hf-cache"
    try:
        path = snapshot_download(
            repo_id=repo,
            revision=revision,
            cache_dir=cache,
            local_files_only=is_offline,
            token=os.environ.get("HF_TOKEN") or None,
        )
    except errors.LocalEntryNotFoundError as e:
        if is_offline:
            raise FetchError(
                f"{uri}: revision {revision} of {repo} is not in the Hugging Face cache at "
                f"{cache} (offline: fill the cache with `hf download {repo} --revision "
                f"{revision} --cache-dir DIR`)"
            ) from e
        raise FetchError(f"{uri}: the Hub could not be reached ({_endpoint()}): {e}") from e
    except errors.GatedRepoError as e:
        raise FetchError(
            f"{uri}: {repo} is gated: the Secret's HF_TOKEN must belong to an account that "
            "accepted its terms"
        ) from e
    except errors.RepositoryNotFoundError as e:
        raise FetchError(
            f"{uri}: repository {repo} not found on {_endpoint()} (or private: give HF_TOKEN "
            "in the Secret named by spec.model.credentialsSecretRef)"
        ) from e
    except errors.RevisionNotFoundError as e:
        raise FetchError(f"{uri}: revision {revision} not found in {repo}") from e
    except errors.HfHubHTTPError as e:
        raise FetchError(f"{uri}: {_endpoint()} answered {e}") from e
    except OSError as e:
        raise FetchError(f"{uri}: {e}") from e
    return Path(str(path))


def _endpoint() -> str:
    return os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
