"""Dynamic batching gain on CPU: batch 1 against batch 8.

    .venv/bin/python bench/batching.py [--concurrency 16] [--seconds 8] [--rounds 3]

A small random BERT classifier (hidden 256, 4 layers; big enough that the forward pass, not
HTTP, dominates) is served twice by one TorchServe: batchSize 1 and batchSize 8
(maxBatchDelayMs 10). The same closed loop of concurrent callers hits each through the gateway,
in alternating rounds. Also the forward pass alone, in process: 8 single-item calls against one
call with 8 items.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import closed_loop, manifest, start

TEXT = (
    "the customer wrote to support about a late refund for an order placed last week and asked "
    "the team to review the invoice and the payment date before the end of the month please"
)


def build_model(out: Path) -> None:
    import torch
    import transformers
    from tmo_runtime.tiny_models import LABELS, _labels, _wordpiece_tokenizer

    torch.manual_seed(0)
    tok = _wordpiece_tokenizer()
    cfg: Any = transformers.BertConfig(
        vocab_size=len(tok),
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        **_labels(LABELS),
    )
    model: Any = transformers.BertForSequenceClassification(cfg)
    tok.save_pretrained(out)
    model.save_pretrained(out)


def forward_only(model_dir: Path, repeats: int, threads: int) -> dict[str, float]:
    import torch
    from tmo_runtime.handlers.common import Settings
    from tmo_runtime.handlers.text import TextClassification

    # Fixed thread count: on a shared machine torch's default oversubscribes and the figure
    # would measure the neighbours.
    torch.set_num_threads(threads)
    task = TextClassification(Settings(task="text-classification", model_path=str(model_dir)))
    item = task.decode({"inputs": TEXT}).items[0]  # what the model reads, tokens counted
    for _ in range(3):
        task.infer([item] * 8, [{}] * 8)
    single, batched = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(8):
            task.infer([item], [{}])
        single.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        task.infer([item] * 8, [{}] * 8)
        batched.append(time.perf_counter() - t0)
    s, b = statistics.median(single), statistics.median(batched)
    return {"batch1_items_per_s": 8 / s, "batch8_items_per_s": 8 / b, "speedup": s / b}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--seconds", type=float, default=8.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--threads", type=int, default=1, help="torch threads, in-process part")
    args = p.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="tmo-bench-"))
    build_model(tmp / "model")
    fwd = forward_only(tmp / "model", args.repeats, args.threads)

    uri = f"file://{tmp / 'model'}"
    docs = [
        manifest("bs1", "text-classification", uri, batchSize=1, maxBatchDelayMs=10),
        manifest("bs8", "text-classification", uri, batchSize=8, maxBatchDelayMs=10),
    ]
    serve = start(docs, "--max-concurrency", "64", "--max-queue", "256")
    body = {"inputs": TEXT}
    rounds: dict[str, list[dict[str, float]]] = {"bs1": [], "bs8": []}
    try:
        for name in ("bs1", "bs8"):  # warm-up
            asyncio.run(closed_loop(f"{serve.gateway}/predictions/{name}", body, {}, 4, 2))
        for _ in range(args.rounds):
            for name in ("bs1", "bs8"):
                url = f"{serve.gateway}/predictions/{name}"
                rounds[name].append(
                    asyncio.run(closed_loop(url, body, {}, args.concurrency, args.seconds))
                )
    finally:
        serve.stop()
    served = {n: sorted(r, key=lambda x: x["rps"])[len(r) // 2] for n, r in rounds.items()}

    print(f"forward pass alone (in process, small BERT, ~40 tokens, {args.threads} thread(s)):")
    print(
        f"  batch 1: {fwd['batch1_items_per_s']:7.1f} items/s   batch 8: "
        f"{fwd['batch8_items_per_s']:7.1f} items/s   gain x{fwd['speedup']:.2f}"
    )
    print(
        f"TorchServe dynamic batching through the gateway, {args.concurrency} concurrent "
        f"callers, median of {args.rounds} rounds of {args.seconds:.0f}s:"
    )
    for name in ("bs1", "bs8"):
        s = served[name]
        print(
            f"  {name}: {s['rps']:7.1f} req/s   p50 {s['p50_ms']:7.1f} ms   "
            f"p99 {s['p99_ms']:7.1f} ms   errors {int(s['errors'])}"
        )
    gain = served["bs8"]["rps"] / served["bs1"]["rps"]
    print(f"  throughput gain batch 8 / batch 1: x{gain:.2f}")
    print(json.dumps({"forward": fwd, "served": served, "served_gain": gain}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
