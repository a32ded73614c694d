"""`tmo crds`: print (or write) the CustomResourceDefinitions generated from the API models."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tmo.api.crd import all_crds, to_yaml


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="write one file per CRD into this directory (crds/ in the repository) "
        "instead of printing both to stdout",
    )


def run(args: argparse.Namespace) -> int:
    crds = all_crds()
    if args.out_dir is None:
        sys.stdout.write("---\n".join(to_yaml(doc) for doc in crds.values()))
        return 0
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for name, doc in crds.items():
        (args.out_dir / name).write_text(to_yaml(doc))
        print(f"wrote {args.out_dir / name}", file=sys.stderr)
    return 0
