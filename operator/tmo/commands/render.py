"""`tmo render -f FILE`: print the child objects of TransformerModels as a YAML stream.

No cluster needed: what the operator would apply, for GitOps reviews and diffs.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

import yaml

from tmo.render import RenderSettings, render_children
from tmo.render.names import KIND


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-f", "--filename", required=True, help="manifest file with TransformerModels ('-' = stdin)"
    )
    parser.add_argument(
        "--runtime-image", default=RenderSettings.runtime_image, help="default runtime image"
    )
    parser.add_argument(
        "--prometheus-url", default=RenderSettings.prometheus_url, help="Prometheus for KEDA"
    )
    parser.add_argument(
        "--autoscaler-owns-replicas",
        action="store_true",
        help="leave Deployment.spec.replicas to KEDA (as the operator does when KEDA is installed)",
    )


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings (config.properties, the model manifest) as readable `|` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


def to_yaml_stream(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_BlockDumper, sort_keys=False)


def _documents(filename: str) -> list[dict[str, Any]]:
    if filename == "-":
        text = sys.stdin.read()
    else:
        with open(filename, encoding="utf-8") as f:
            text = f.read()
    return [d for d in yaml.safe_load_all(text) if isinstance(d, dict)]


def run(args: argparse.Namespace) -> int:
    settings = RenderSettings(runtime_image=args.runtime_image, prometheus_url=args.prometheus_url)
    try:
        docs = _documents(args.filename)
    except (OSError, yaml.YAMLError) as e:
        print(f"tmo render: {e}", file=sys.stderr)
        return 1
    models = [d for d in docs if d.get("kind") == KIND]
    if not models:
        print(f"tmo render: no {KIND} in {args.filename}", file=sys.stderr)
        return 1
    out: list[dict[str, Any]] = []
    for manifest in models:
        try:
            rendered = render_children(
                manifest, settings, autoscaler_owns_replicas=args.autoscaler_owns_replicas
            )
        except ValueError as e:  # pydantic's ValidationError is a ValueError
            name = (manifest.get("metadata") or {}).get("name", "?")
            print(f"tmo render: {KIND} {name}: {e}", file=sys.stderr)
            return 1
        out.extend(rendered.objects)
    sys.stdout.write(to_yaml_stream(out))
    return 0
