"""The `tmo` command line.

One entry point; each subcommand lives in its own module under `tmo.commands` (or the runtime
package) exposing `add_arguments(parser)` and `run(args) -> int`. Modules are imported only for
the subcommand being run, so `tmo validate` in a GitOps pre-commit hook never pays for torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from typing import Protocol, cast

# name -> (module, one-line help). Add a line here when a subcommand module lands.
COMMANDS: dict[str, tuple[str, str]] = {
    "crds": ("tmo.commands.crds", "print the CustomResourceDefinitions generated from the API"),
    "validate": ("tmo.commands.validate", "check TransformerModel/Rollout manifests offline"),
    "render": ("tmo.commands.render", "print the child objects of TransformerModels as YAML"),
    "operator": ("tmo.commands.operator", "run the TMO operator (kopf) against a cluster"),
    "rollout": ("tmo.commands.rollout", "show, promote, abort or retry canary Rollouts"),
    "serve": ("tmo_runtime.serve_command", "serve manifests locally via TorchServe + gateway"),
    "explain": ("tmo_runtime.explain_command", "draw a model's attention over a text as a PNG"),
    "dev": ("tmo_runtime.dev_command", "developer helpers: tiny offline models, artifact sha256"),
}


class _Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> int: ...


def _load(module: str) -> _Command:
    return cast(_Command, importlib.import_module(module))


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tmo",
        description="TMO, the Transformer Model Operator: serve, autoscale, monitor and canary "
        "transformer models on Kubernetes with TorchServe.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # Only the chosen subcommand's module is imported; the others show their help line only.
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            _load(module).add_arguments(p)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list)
    args = parser.parse_args(args_list)
    if not args.command:
        parser.print_help()
        return 2
    module, _ = COMMANDS[args.command]
    try:
        return _load(module).run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
