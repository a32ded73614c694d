"""`tmo dev`: developer helpers (tiny offline models, artifact digests)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from tmo_runtime.tiny_models import TASKS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="dev_command", metavar="DEV_COMMAND", required=True)
    tiny = sub.add_parser("tiny-model", help="write a tiny random-weight model, built offline")
    tiny.add_argument("--task", required=True, choices=(*TASKS, "all"))
    tiny.add_argument("--out", required=True, type=Path, help="directory (one per task for all)")
    tiny.add_argument("--seed", type=int, default=0)
    digest = sub.add_parser("sha256", help="the digest spec.model.sha256 expects for a path")
    digest.add_argument("path", type=Path)


def run(args: argparse.Namespace) -> int:
    from tmo_runtime.fetcher import tree_sha256

    if args.dev_command == "sha256":
        print(tree_sha256(args.path))
        return 0
    import transformers

    from tmo_runtime.tiny_models import build_tiny_model

    hf_logging: Any = transformers.utils.logging
    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()
    tasks = TASKS if args.task == "all" else (args.task,)
    for task in tasks:
        out = args.out / task if args.task == "all" else args.out
        build_tiny_model(task, out, seed=args.seed)
        print(f"{task}: {out}  sha256={tree_sha256(out)}")
    return 0
