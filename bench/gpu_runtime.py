"""GPU runtime benchmark: bf16 + SDPA against fp32 + eager attention, random weights.

    python bench/gpu_runtime.py [--quick]

Self-contained (torch + transformers only, no model hub, no TMO server): builds a BERT-base
sized encoder (hidden 768, 12 layers, 110M parameters) and a ~1.1B decoder (LLaMA-style:
hidden 2048, 22 layers, GQA 32/4 heads) directly on the GPU with random weights, then measures
  - encoder: forward latency (p50/p99) for batch 8 x 128 tokens, and sequences/s;
  - decoder: prefill latency for batch 4 x 512 tokens, and greedy decode tokens/s for
    batch 4 x 128 new tokens.
Prints a table and one JSON line. Needs a CUDA device; exits 2 without one.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

VARIANTS = (("fp32", "eager"), ("bf16", "sdpa"))


def _timed(fn: Callable[[], Any], warmup: int, iters: int) -> list[float]:
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    out = []
    for _ in range(iters):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        out.append(time.perf_counter() - start)
    return out


def _pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


def _build(kind: str, dtype: Any, attn: str, device: str = "cuda") -> Any:
    import torch
    import transformers

    tf: Any = transformers
    if kind == "encoder":
        cfg = tf.BertConfig(
            vocab_size=30522,
            hidden_size=768,
            num_hidden_layers=12,
            num_attention_heads=12,
            intermediate_size=3072,
            max_position_embeddings=512,
        )
        cls = tf.BertModel
    else:
        cfg = tf.LlamaConfig(
            vocab_size=32000,
            hidden_size=2048,
            intermediate_size=5632,
            num_hidden_layers=22,
            num_attention_heads=32,
            num_key_value_heads=4,
            max_position_embeddings=2048,
        )
        cls = tf.LlamaForCausalLM
    torch.manual_seed(0)
    # Built on the device directly: random init of 1B parameters on the CPU takes minutes.
    with torch.device(device):
        model = cls._from_config(cfg, attn_implementation=attn, dtype=dtype)
    model.eval()
    return model


def bench_encoder(dtype_name: str, attn: str, iters: int) -> dict[str, float]:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    model = _build("encoder", dtype, attn)
    batch, seq = 8, 128
    ids = torch.randint(1000, 30000, (batch, seq), device="cuda")
    mask = torch.ones_like(ids)

    def step() -> None:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask)

    times = _timed(step, warmup=5, iters=iters)
    return {
        "p50_ms": _pct(times, 50) * 1000,
        "p99_ms": _pct(times, 99) * 1000,
        "sequences_per_s": batch / statistics.median(times),
    }


def bench_decoder(dtype_name: str, attn: str, iters: int, new_tokens: int) -> dict[str, float]:
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    model = _build("decoder", dtype, attn)
    params = sum(p.numel() for p in model.parameters())
    batch, prompt = 4, 512
    ids = torch.randint(1000, 31000, (batch, prompt), device="cuda")
    mask = torch.ones_like(ids)

    def prefill() -> None:
        with torch.inference_mode():
            model(input_ids=ids, attention_mask=mask, use_cache=False)

    prefill_times = _timed(prefill, warmup=3, iters=iters)

    def generate() -> None:
        with torch.inference_mode():
            model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                pad_token_id=0,
            )

    gen_times = _timed(generate, warmup=1, iters=max(2, iters // 5))
    return {
        "params_b": params / 1e9,
        "prefill_p50_ms": _pct(prefill_times, 50) * 1000,
        "prefill_p99_ms": _pct(prefill_times, 99) * 1000,
        "decode_tokens_per_s": batch * new_tokens / statistics.median(gen_times),
        "generate_p50_s": statistics.median(gen_times),
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer iterations and new tokens")
    args = p.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("gpu_runtime: no CUDA device", file=sys.stderr)
        return 2
    iters = 10 if args.quick else 50
    new_tokens = 32 if args.quick else 128
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__}
    for dtype_name, attn in VARIANTS:
        key = f"{dtype_name}+{attn}"
        encoder = bench_encoder(dtype_name, attn, iters)
        torch.cuda.empty_cache()
        decoder = bench_decoder(dtype_name, attn, iters, new_tokens)
        torch.cuda.empty_cache()
        result[key] = {"encoder": encoder, "decoder": decoder}
        print(key, json.dumps(result[key]), flush=True)
    base, fast = result["fp32+eager"], result["bf16+sdpa"]
    result["speedup"] = {
        "encoder_latency": base["encoder"]["p50_ms"] / fast["encoder"]["p50_ms"],
        "decoder_prefill": base["decoder"]["prefill_p50_ms"] / fast["decoder"]["prefill_p50_ms"],
        "decoder_tokens_per_s": fast["decoder"]["decode_tokens_per_s"]
        / base["decoder"]["decode_tokens_per_s"],
    }
    print(f"device: {result['device']}")
    print(
        f"{'':12s}{'BERT-base p50':>15s}{'seq/s':>10s}{'1B prefill p50':>16s}{'decode tok/s':>14s}"
    )
    for dtype_name, attn in VARIANTS:
        r = result[f"{dtype_name}+{attn}"]
        print(
            f"{dtype_name + '+' + attn:12s}{r['encoder']['p50_ms']:12.2f} ms"
            f"{r['encoder']['sequences_per_s']:10.0f}{r['decoder']['prefill_p50_ms']:13.1f} ms"
            f"{r['decoder']['decode_tokens_per_s']:14.0f}"
        )
    print("speedup bf16+sdpa over fp32+eager:", json.dumps(result["speedup"]))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
