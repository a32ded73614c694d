"""Explanations: the attention one layer pays between the tokens of one text.

`/explanations/{model}` (TorchServe sets the request header `explain` to "True") answers, per
item, `{"tokens", "attention" (len(tokens) x len(tokens), rows sum to ~1), "layer" (0-based),
"head" (int or "mean"), "num_layers", "num_heads"}`. Text tasks only: the encoder of
classification, token classification, feature extraction and summarization, and the prompt's
self-attention for text generation.

SDPA and flash attention compute no attention matrix, so the forward pass of an explanation
switches the model to eager attention and back (the model's weights are the same).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tmo_runtime.handlers.common import (
    BadRequest,
    ParamCheck,
    Request,
    TooLarge,
    boolean,
    check_parameters,
    integer,
    split_inputs,
    text_item,
)

TEXT_TASKS = (
    "text-classification",
    "token-classification",
    "feature-extraction",
    "summarization",
    "text-generation",
)
PARAMETERS: dict[str, ParamCheck] = {
    "layer": integer(),
    "head": integer(0),
    "truncation": boolean(),
}


def resolve_layer(layer: int, num_layers: int) -> int:
    """A 0-based layer from a possibly negative one (-1 = the last), or a 400."""
    if -num_layers <= layer < num_layers:
        return layer % num_layers
    raise BadRequest(
        f"parameters.layer must be from {-num_layers} to {num_layers - 1} (this model has "
        f"{num_layers} layers; negative counts from the last); got {layer}"
    )


def resolve_head(head: int | None, num_heads: int) -> int | None:
    if head is None or 0 <= head < num_heads:
        return head
    raise BadRequest(
        f"parameters.head must be from 0 to {num_heads - 1} (this model has {num_heads} heads), "
        f"or left out for the mean over heads; got {head}"
    )


@contextmanager
def eager_attention(model: Any) -> Iterator[None]:
    """Eager attention for one forward pass: the only implementation that returns weights."""
    before = getattr(model.config, "_attn_implementation", "eager")
    switch = before != "eager" and hasattr(model, "set_attn_implementation")
    if switch:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        if switch:
            model.set_attn_implementation(before)


def token_labels(tokenizer: Any, ids: list[int]) -> list[str]:
    """Readable pieces: byte-level BPE's "Ġthe" becomes " the"; WordPiece keeps "##ing"."""
    out = []
    for tok in tokenizer.convert_ids_to_tokens(ids):
        text = tokenizer.convert_tokens_to_string([tok])
        out.append(text if text else str(tok))
    return out


def attention_of(
    model: Any, forward: Any, enc: Any, layer: int, head: int | None
) -> dict[str, Any]:
    """One item's attention matrix of `layer`, for `head` or the mean over heads. `forward` is
    the model, or its encoder (summarization); `model` is what switches to eager attention."""
    import torch

    with eager_attention(model), torch.inference_mode():
        out = forward(**enc, output_attentions=True)
    attentions = getattr(out, "attentions", None) or getattr(out, "encoder_attentions", None)
    if not attentions or attentions[0] is None:
        raise RuntimeError(f"{type(model).__name__} returned no attention weights")
    num_layers, num_heads = len(attentions), int(attentions[0].shape[1])
    resolved = resolve_layer(layer, num_layers)
    head = resolve_head(head, num_heads)
    weights = attentions[resolved][0].float()
    matrix = weights.mean(0) if head is None else weights[head]
    return {
        "attention": matrix.cpu().tolist(),
        "layer": resolved,
        "head": "mean" if head is None else head,
        "num_layers": num_layers,
        "num_heads": num_heads,
    }


class Explainer:
    """A Task (decode/infer) over another task's model that explains instead of predicting."""

    def __init__(self, task: Any) -> None:
        self.task = task
        self.kind: str = task.settings.task
        # The window the task itself reads: encoders and summarization cap maxSequenceLength
        # by the model's position embeddings.
        window = getattr(task, "max_length", None) or getattr(task, "window", None)
        self.window = int(window or task.settings.max_sequence_length)

    def decode(self, payload: Any) -> Request:
        if self.kind not in TEXT_TASKS:
            raise BadRequest(
                f"explanations are for text tasks ({', '.join(TEXT_TASKS)}); this model is "
                f"{self.kind}"
            )
        req = split_inputs(payload, ("text", "prompt"))
        req.parameters = check_parameters(req.parameters, PARAMETERS)
        req.items = [self.text_of(v) for v in req.items]
        return req

    def text_of(self, value: Any) -> str:
        if self.kind == "text-generation" and isinstance(value, dict) and "messages" in value:
            from tmo_runtime.handlers.generation import decode_messages

            return str(self.task.prompt_of(decode_messages(value["messages"])))
        text = text_item(value)
        if not text.strip():
            raise BadRequest(
                f'inputs must be non-empty text, e.g. {{"inputs": "hello"}}; got {text!r}'
            )
        return text

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        return [self.explain(text, p) for text, p in zip(items, params, strict=True)]

    def explain(self, text: str, params: dict[str, Any]) -> dict[str, Any]:
        tok = self.task.tokenizer
        special = self.kind != "text-generation"  # generation prompts are fed without them
        ids: list[int] = tok(text, add_special_tokens=special)["input_ids"]
        if len(ids) > self.window:
            if not params.get("truncation"):
                raise TooLarge(
                    f"the input is {len(ids)} tokens, over the limit of {self.window} "
                    "(spec.runtime.maxSequenceLength); send a shorter text, or set "
                    '"parameters": {"truncation": true} to explain its first '
                    f"{self.window} tokens"
                )
            enc = tok(text, add_special_tokens=special, truncation=True, max_length=self.window)
            ids = enc["input_ids"]
        import torch

        device = self.task.settings.device
        input_ids = torch.tensor([ids], device=device)
        enc = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        model = self.task.model
        forward = model.get_encoder() if self.kind == "summarization" else model
        layer, head = int(params.get("layer", -1)), params.get("head")
        result = attention_of(model, forward, enc, layer, head)
        return {"tokens": token_labels(tok, ids), **result}


def explain_text(task: Any, text: str, layer: int = -1, head: int | None = None) -> Any:
    """One explanation in process (`tmo explain`), with the same checks as the endpoint."""
    explainer = Explainer(task)
    params = {"layer": layer} | ({} if head is None else {"head": head})
    req = explainer.decode({"inputs": text, "parameters": params})
    return explainer.infer(req.items, [req.parameters])[0]


def wants_explanation(context: Any, idx: int) -> bool:
    """TorchServe marks /explanations/{model} requests with the header `explain: True`."""
    try:
        return str(context.get_request_header(idx, "explain")) == "True"
    except (AttributeError, KeyError, TypeError):
        return False
