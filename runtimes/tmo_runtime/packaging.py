"""Package a fetched model for TorchServe's model store.

A Hugging Face directory becomes a TorchServe model either as a no-archive directory (the
default: MAR-INF/MANIFEST.json, the handler shim and model-config.yaml beside symlinks to the
fetched files, so multi-gigabyte weights are never copied) or as a `.mar` zip that carries the
weights itself (for stores that must be self-contained).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import replace
from pathlib import Path

from tmo_runtime.ts_config import HandlerSettings, ModelEntry, render_model_config_yaml

HANDLER_FILE = "tmo_handler.py"
MODEL_CONFIG_FILE = "model-config.yaml"
# The handler code lives in the installed tmo_runtime package; the archive only points at it.
HANDLER_SHIM = (
    '"""TorchServe entry point for TMO models (generated)."""\n'
    "from tmo_runtime.handlers.entry import handle  # noqa: F401\n"
)


def render_manifest_json(name: str, version: str) -> str:
    doc = {
        "createdOn": "01/01/1970 00:00:00",
        "runtime": "python",
        "model": {
            "modelName": name,
            "handler": f"{HANDLER_FILE}:handle",
            "modelVersion": version,
            "configFile": MODEL_CONFIG_FILE,
        },
        "archiverVersion": "0.12.0",
    }
    return json.dumps(doc, indent=2) + "\n"


def _generated_files(entry: ModelEntry, handler: HandlerSettings) -> dict[str, str]:
    return {
        "MAR-INF/MANIFEST.json": render_manifest_json(entry.name, entry.version),
        HANDLER_FILE: HANDLER_SHIM,
        MODEL_CONFIG_FILE: render_model_config_yaml(entry, handler),
    }


def package_huggingface(
    model_dir: Path,
    store: Path,
    entry: ModelEntry,
    handler: HandlerSettings,
    *,
    archive: bool = False,
) -> ModelEntry:
    """Write the model into `store`; returns the entry with `url` set to what TorchServe loads."""
    store.mkdir(parents=True, exist_ok=True)
    if archive:
        target = store / f"{entry.name}.mar"
        files = _generated_files(entry, replace(handler, model_path=None))
        with zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zf:
            for rel, text in files.items():
                zf.writestr(rel, text)
            for path in sorted(model_dir.rglob("*")):
                if path.is_file():
                    zf.write(path, path.relative_to(model_dir).as_posix())
        return replace(entry, url=target.name)
    target = store / entry.name
    if target.exists():
        shutil.rmtree(target)
    (target / "MAR-INF").mkdir(parents=True)
    # The handler loads from model_path, so the weights stay where the fetcher left them.
    files = _generated_files(entry, replace(handler, model_path=str(model_dir.resolve())))
    for rel, text in files.items():
        (target / rel).write_text(text)
    return replace(entry, url=target.name)


def place_mar(mar: Path, store: Path, entry: ModelEntry) -> ModelEntry:
    """A user-built .mar goes into the store as is (its own handler and config apply)."""
    store.mkdir(parents=True, exist_ok=True)
    target = store / f"{entry.name}.mar"
    if target.exists() or target.is_symlink():
        target.unlink()
    os.symlink(mar.resolve(), target)
    return replace(entry, url=target.name)
