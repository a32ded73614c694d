"""Long inputs: does a long request hold short ones behind it? Is speech linear in the clip?

    .venv/bin/python bench/long_inputs.py [--windows 400] [--seconds 5,20,60]

Summarisation (a small random BART: d_model 256, 3+3 layers, so that compute, not HTTP,
dominates as it does for real models; maxSequenceLength 64, one worker, batchSize 8): while one
long document (about `--windows` windows) is summarised, a prober sends a one-line document
every 100 ms and records its latency. Two ways, in the same run:

- baseline: the long document goes to TorchServe directly, as one request (what the gateway
  did before: one batch holds the whole document, and every short request batched or queued
  behind it waits for all of it);
- gateway: the long document goes through the gateway, which sends it to TorchServe piece by
  piece (tmo_runtime.gateway.longdocs, 8 windows a piece), so short requests run between two
  pieces.

Speech (tiny model): time to transcribe clips of `--seconds` lengths through the gateway, and
the time per audio second (flat = linear).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import sys
import tempfile
import time
import wave
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _serve import Serve, manifest, percentile, start

SHORT = "the refund is late."


def document(windows: int) -> str:
    # ~4 characters per token: 64-token windows are about 256 characters.
    sentence = "the party shall give written notice of any change to the agreement. "
    return sentence * max(1, windows * 256 // len(sentence))


async def probe_during(
    serve: Serve, long_url: str, long_headers: dict[str, str], long_body: dict[str, Any]
) -> dict[str, float]:
    url = f"{serve.gateway}/predictions/summ"
    short_lat: list[float] = []
    async with httpx.AsyncClient(timeout=600) as client:
        done = asyncio.Event()

        async def long_call() -> float:
            t0 = time.perf_counter()
            r = await client.post(long_url, json=long_body, headers=long_headers)
            done.set()
            if r.status_code != 200:
                raise RuntimeError(f"long request: {r.status_code} {r.text[:300]}")
            return time.perf_counter() - t0

        async def prober() -> None:
            await asyncio.sleep(0.3)  # the long request is in first
            while not done.is_set():
                t0 = time.perf_counter()
                r = await client.post(url, json={"inputs": SHORT})
                if r.status_code == 200:
                    short_lat.append(time.perf_counter() - t0)
                await asyncio.sleep(0.1)

        long_s, _ = await asyncio.gather(long_call(), prober())
    return {
        "long_s": long_s,
        "short_n": float(len(short_lat)),
        "short_p50_s": percentile(short_lat, 50),
        "short_max_s": max(short_lat) if short_lat else float("nan"),
    }


def build_small_bart(out: Path) -> None:
    import torch
    import transformers
    from tmo_runtime.tiny_models import _bpe_tokenizer

    torch.manual_seed(0)
    tok = _bpe_tokenizer(add_bos_eos=True)
    cfg: Any = transformers.BartConfig(
        vocab_size=len(tok),
        d_model=256,
        encoder_layers=3,
        decoder_layers=3,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.eos_token_id,
        forced_eos_token_id=tok.eos_token_id,
    )
    model: Any = transformers.BartForConditionalGeneration(cfg)
    tok.model_max_length = 128
    tok.save_pretrained(out)
    model.save_pretrained(out)


def wav(seconds: float, rate: int = 16000) -> bytes:
    import numpy as np

    t = np.arange(int(seconds * rate))
    samples = (np.sin(t / 7.0) * 8000).astype(np.int16)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return buf.getvalue()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--windows", type=int, default=400)
    p.add_argument("--seconds", default="5,20,60")
    args = p.parse_args()
    from tmo_runtime.tiny_models import build_tiny_model

    models = Path(tempfile.mkdtemp(prefix="tmo-bench-long-"))
    print("building models ...", file=sys.stderr)
    import transformers

    transformers.utils.logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    build_small_bart(models / "summarization")
    build_tiny_model("speech-recognition", models / "speech-recognition")
    docs = [
        manifest(
            "summ",
            "summarization",
            f"file://{models / 'summarization'}",
            maxSequenceLength=64,
            maxChunks=4096,
            batchSize=8,
            maxBatchDelayMs=10,
        ),
        manifest("asr", "speech-recognition", f"file://{models / 'speech-recognition'}"),
    ]
    print("starting tmo serve ...", file=sys.stderr)
    serve = start(docs)
    try:
        body = {"inputs": document(args.windows), "parameters": {"max_new_tokens": 16}}
        ts_url = serve.state["torchserve"]["inference"] + "/predictions/summ"
        print(f"summarisation: one document of ~{args.windows} windows, short probes every 0.1 s")
        base = asyncio.run(probe_during(serve, ts_url, serve.ts_headers(), body))
        gw = asyncio.run(probe_during(serve, f"{serve.gateway}/predictions/summ", {}, body))
        print(f"  {'':28}{'long doc s':>12}{'probes':>8}{'short p50 s':>13}{'short max s':>13}")
        for name, r in (("baseline (one request)", base), ("gateway (pieces)", gw)):
            print(
                f"  {name:28}{r['long_s']:12.2f}{r['short_n']:8.0f}"
                f"{r['short_p50_s']:13.3f}{r['short_max_s']:13.3f}"
            )
        ratio = base["short_max_s"] / gw["short_max_s"] if gw["short_max_s"] else float("nan")
        print(f"  worst short-request wait: {ratio:.1f}x shorter through the gateway")

        print("speech recognition: clip length against time")
        url = f"{serve.gateway}/predictions/asr"
        for seconds in (float(s) for s in args.seconds.split(",")):
            data = wav(seconds)
            httpx.post(url, content=data, timeout=600)  # warm
            t0 = time.perf_counter()
            r = httpx.post(url, json={"inputs": base64.b64encode(data).decode()}, timeout=600)
            took = time.perf_counter() - t0
            windows = r.json().get("windows", "-") if r.status_code == 200 else r.status_code
            per_second = took / seconds * 1000
            print(
                f"  {seconds:5.0f} s clip: {took:6.2f} s "
                f"({per_second:5.1f} ms per audio s, windows {windows})"
            )
    finally:
        serve.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
