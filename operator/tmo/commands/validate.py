"""`tmo validate -f FILE...`: the admission checks of the CRDs, offline (pre-commit, CI).

Prints `file: kind/name: field: message` per problem and exits 1 when there is any. Documents
of other API groups (Deployments, Kustomizations...) in the same files are skipped with a note
on stderr; an unknown kind in the tmo.dev group is a problem (most likely a typo).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from tmo.api.manifest import Problem, check_manifest, is_tmo_group


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f",
        "--filename",
        dest="files",
        action="append",
        required=True,
        nargs="+",
        type=Path,
        metavar="FILE",
        help="YAML file (multi-document allowed) or directory of *.yaml/*.yml; '-' reads stdin",
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print problems only")


def _expand(paths: list[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml"))
        else:
            yield path


def _label(doc: Any) -> str:
    if not isinstance(doc, Mapping):
        return "?/?"
    meta = doc.get("metadata")
    name = meta.get("name") if isinstance(meta, Mapping) else None
    return f"{doc.get('kind') or '?'}/{name or '?'}"


def check_text(text: str) -> Iterator[tuple[str, Problem | None]]:
    """(kind/name, problem) for every problem in a YAML stream; problem None = skipped document."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        yield "?/?", Problem("", f"not valid YAML: {e}".replace("\n", " "))
        return
    for doc in docs:
        if isinstance(doc, Mapping) and not is_tmo_group(doc) and "apiVersion" in doc:
            yield _label(doc), None
            continue
        for problem in check_manifest(doc):
            yield _label(doc), problem


def run(args: argparse.Namespace) -> int:
    failed = False
    checked = 0
    for path in _expand([p for group in args.files for p in group]):
        name = "-" if str(path) == "-" else str(path)
        try:
            text = sys.stdin.read() if name == "-" else path.read_text()
        except OSError as e:
            print(f"{name}: {e.strerror}", file=sys.stdout)
            failed = True
            continue
        for label, problem in check_text(text):
            if problem is None:
                if not args.quiet:
                    print(f"{name}: {label}: skipped (not a tmo.dev kind)", file=sys.stderr)
                continue
            failed = True
            print(f"{name}: {label}: {problem}")
        checked += 1
    if not args.quiet:
        print(f"checked {checked} file(s): {'problems found' if failed else 'ok'}", file=sys.stderr)
    return 1 if failed else 0
