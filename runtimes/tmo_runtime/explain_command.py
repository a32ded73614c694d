"""`tmo explain -f MODEL.yaml --text "..."`: a text's attention as a heat map PNG (or JSON).

Loads the manifest's model in this process (no TorchServe), with the same handler, precision
and window as `tmo serve`, and computes what `/explanations/{model}` answers.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

EXAMPLE = """example:
  tmo explain -f examples/local/text-classification.yaml --text "the refund is late" \\
      --layer -1 --out attention.png
  tmo explain -f examples/local/text-classification.yaml --text "hello" --head 0 --json
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EXAMPLE
    parser.add_argument("-f", "--file", required=True, type=Path, help="TransformerModel manifest")
    parser.add_argument(
        "--model", help="metadata.name of the model to explain (when the file holds several)"
    )
    parser.add_argument("--text", required=True, help="the text (or generation prompt) to explain")
    parser.add_argument(
        "--layer", type=int, default=-1, help="layer, 0-based; negative counts from the last (-1)"
    )
    parser.add_argument("--head", type=int, help="attention head (default: the mean over heads)")
    parser.add_argument("--out", type=Path, help="write the heat map PNG here")
    parser.add_argument("--json", action="store_true", help="print the explanation as JSON")
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def load_task(path: Path, name: str | None, device: str, workdir: Path) -> tuple[str, Any]:
    """The model's name and its handler task, built from the manifest as `tmo serve` does."""
    from tmo_runtime.fetcher import fetch
    from tmo_runtime.handlers.common import Settings
    from tmo_runtime.handlers.entry import build_task
    from tmo_runtime.manifest import load_manifests

    specs = load_manifests(path)
    if name is not None:
        specs = [s for s in specs if s.name == name]
        if not specs:
            raise ValueError(f"{path}: no TransformerModel named {name!r}")
    elif len(specs) > 1:
        names = ", ".join(s.name for s in specs)
        raise ValueError(f"{path} holds several models ({names}); choose one with --model")
    spec = specs[0]
    _say(f"fetching {spec.model_uri} ...")
    model_dir = fetch(spec.model_uri, workdir, base_dir=spec.base_dir, sha256=spec.model_sha256)
    settings = Settings(
        task=spec.task,
        model_path=str(model_dir),
        precision=spec.precision,
        attention=spec.attention,
        max_sequence_length=spec.max_sequence_length,
        max_new_tokens=spec.max_new_tokens,
        max_chunks=spec.max_chunks,
        device=device,
    )
    _say(f"loading model {spec.name} ({spec.task}, {spec.precision}) ...")
    import transformers

    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    return spec.name, build_task(settings)


def run(args: argparse.Namespace) -> int:
    from tmo_runtime.fetcher import FetchError
    from tmo_runtime.handlers.common import BadRequest
    from tmo_runtime.handlers.explain import explain_text
    from tmo_runtime.manifest import ManifestError

    if args.out is None and not args.json:
        _say("tmo explain: say where the result goes: --out attention.png and/or --json")
        return 2
    with tempfile.TemporaryDirectory(prefix="tmo-explain-") as tmp:
        try:
            name, task = load_task(args.file, args.model, args.device, Path(tmp))
            _say("computing attention ...")
            explanation = explain_text(task, args.text, args.layer, args.head)
        except (ManifestError, FetchError, BadRequest, ValueError, OSError) as e:
            # The checks are the endpoint's; here the knobs are flags.
            _say(f"tmo explain: {str(e).replace('parameters.', '--')}")
            return 1
    if args.out is not None:
        from tmo_runtime.heatmap import render_attention

        head, heads = explanation["head"], explanation["num_heads"]
        which = (
            f"mean over its {heads} heads" if head == "mean" else f"head {head} of 0-{heads - 1}"
        )
        last = explanation["num_layers"] - 1
        title = f"{name}: layer {explanation['layer']} of 0-{last}, {which}"
        image = render_attention(explanation["tokens"], explanation["attention"], title)
        image.save(args.out, "PNG")
        _say(f"wrote {args.out} ({image.width}x{image.height})")
    if args.json:
        print(json.dumps(explanation))
    return 0
