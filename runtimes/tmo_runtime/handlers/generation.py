"""Text generation: prompts and chat conversations (the model's chat template).

Parameters (all optional; anything else is a 400 naming the allowed ones):

- `max_new_tokens`: 1..spec.runtime.maxNewTokens; default min(64, that limit), so a request that
  says nothing gets a short answer fast. Beyond the limit is a 400 naming it, never a silent cap.
- `temperature` (>= 0), `top_p` (0 < p <= 1), `top_k` (>= 0, 0 = off), `do_sample`: sampling is
  on when `do_sample` is true, or when it is absent and a sampling knob is given (temperature >
  0, top_p, top_k). `temperature: 0` is always greedy. Nothing given: greedy, the same answer
  every time. Knobs not given take the model's generation_config values.
- `seed`: a sampled item with a seed runs alone under its own RNG state, so the same seed, prompt
  and parameters give the same text whatever else shares the batch.
- `stop`: a string or up to 4; the text is cut before the first one, finish_reason "stop".
- `stream`: send text deltas as they are generated (see `routing`); one input per request.
- `truncation`: a prompt that does not fit (prompt tokens + max_new_tokens > maxSequenceLength)
  is a 413; with `truncation: true` the model reads the prompt's latest tokens instead.
  Chat conversations always keep their latest turns (the oldest are dropped, and the answer says
  `"truncated": true`), but the last user turn must fit whole: a question cut in half gets a 413,
  not an answer to a different question.

Items with different generation settings cannot share one generate() call, so a batch is
grouped by settings and each group runs once; seeded sampled items and streamed items run alone.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any

from tmo_runtime.handlers.common import (
    BadRequest,
    ParamCheck,
    Request,
    Settings,
    TooLarge,
    boolean,
    check_parameters,
    integer,
    load_model,
    number,
    split_inputs,
    strings,
    text_item,
)

log = logging.getLogger("tmo.handler")

DEFAULT_MAX_NEW_TOKENS = 64
MAX_STOP_STRINGS = 4
SAMPLING_KNOBS = ("temperature", "top_p", "top_k")


def generation_parameters(limit: int) -> dict[str, ParamCheck]:
    return {
        "max_new_tokens": integer(
            1, limit, hint=f" (the model's limit, spec.runtime.maxNewTokens, is {limit})"
        ),
        "temperature": number(0.0),
        "top_p": number(0.0, 1.0, lo_open=True),
        "top_k": integer(0),
        "do_sample": boolean(),
        "stop": strings(MAX_STOP_STRINGS),
        "seed": integer(0, 2**63 - 1),
        "stream": boolean(),
        "truncation": boolean(),
    }


@dataclass(frozen=True)
class GenSettings:
    """What decides how an item is generated; items with equal settings share a generate()."""

    max_new_tokens: int
    do_sample: bool
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None

    def generate_kwargs(self) -> dict[str, Any]:
        if not self.do_sample:
            return {"do_sample": False}
        kw: dict[str, Any] = {"do_sample": True}
        for name in SAMPLING_KNOBS:
            value = getattr(self, name)
            if value is not None:
                kw[name] = value
        return kw


def gen_settings(params: dict[str, Any], default_max: int) -> GenSettings:
    """The generation settings a validated `parameters` object asks for."""
    n = int(params.get("max_new_tokens", default_max))
    knobs = {k: params[k] for k in SAMPLING_KNOBS if k in params}
    if params.get("temperature") == 0:
        return GenSettings(n, False)  # temperature 0 is greedy, whatever else was said
    sample = params.get("do_sample")
    if sample is None:
        sample = bool(knobs)
    if not sample:
        return GenSettings(n, False)
    return GenSettings(n, True, knobs.get("temperature"), knobs.get("top_p"), knobs.get("top_k"))


def group_items(keys: Sequence[Hashable], alone: Sequence[bool]) -> list[list[int]]:
    """Indexes grouped by equal key, in first-seen order; an item marked `alone` is its own
    group (seeded sampling, streaming)."""
    groups: dict[Hashable, list[int]] = {}
    out: list[list[int]] = []
    for i, (key, solo) in enumerate(zip(keys, alone, strict=True)):
        if solo:
            out.append([i])
        elif key in groups:
            groups[key].append(i)
        else:
            groups[key] = [i]
            out.append(groups[key])
    return out


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """The text before the earliest stop string, and whether one was found."""
    cut = min((p for p in (text.find(s) for s in stops) if p >= 0), default=-1)
    return (text, False) if cut < 0 else (text[:cut], True)


def held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters may still become a stop string (or are an unfinished UTF-8
    character), so a stream never sends text that the final answer cuts away."""
    hold = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), 0, -1):
            if text.endswith(s[:n]):
                hold = max(hold, n)
                break
    if text.endswith("\ufffd"):  # a byte-level token that is half of a character
        hold = max(hold, len(text) - len(text.rstrip("\ufffd")))
    return hold


class DeltaCutter:
    """Turns the growing decoded text of one item into the deltas to stream: what is sent is
    always a prefix of the final (stop-cut) text, and all deltas together are that text."""

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = list(stops)
        self.sent = 0
        self.stopped = False

    def feed(self, text: str, final: bool = False) -> str:
        if self.stopped:
            return ""
        text, self.stopped = cut_at_stop(text, self.stops)
        end = len(text) if (final or self.stopped) else len(text) - held_back(text, self.stops)
        if end <= self.sent:
            return ""
        delta = text[self.sent : end]
        self.sent = end
        return delta


@dataclass
class Prompt:
    """One item ready to generate: its token ids (already fitted to the window)."""

    ids: list[int]
    truncated: bool


def decode_messages(messages: Any) -> dict[str, Any]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest(
            'messages must be a non-empty list, e.g. {"inputs": {"messages": '
            '[{"role": "user", "content": "hello"}]}}'
        )
    for m in messages:
        if not isinstance(m, dict) or not {"role", "content"} <= m.keys():
            raise BadRequest(
                'each message needs a role and a content, e.g. {"role": "user", "content": "hi"}'
            )
        if not isinstance(m["role"], str) or not m["role"]:
            raise BadRequest(f"a message's role must be a non-empty string; got {m['role']!r}")
        if not isinstance(m["content"], str) or not m["content"].strip():
            raise BadRequest(
                f"message content must be non-empty text (role {m['role']!r}); got {m['content']!r}"
            )
    return {"messages": messages}


def decode_item(value: Any) -> dict[str, Any]:
    if isinstance(value, dict) and "messages" in value:
        return decode_messages(value["messages"])
    text = text_item(value)
    if not text.strip():
        raise BadRequest(
            f'the prompt must be non-empty text, e.g. {{"inputs": "hello"}}; got {text!r}'
        )
    return {"prompt": text}


class TokenStreamer:
    """A transformers streamer (BaseStreamer's put/end) for one item: decodes the new tokens
    as they come and hands each text delta to `emit`."""

    def __init__(self, tokenizer: Any, stops: Sequence[str], emit: Callable[[str], None]) -> None:
        self.tokenizer = tokenizer
        self.cutter = DeltaCutter(stops)
        self.emit = emit
        self.ids: list[int] = []
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:  # generate() hands the prompt over first
            self.prompt_seen = True
            return
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())
        self._send(final=False)

    def end(self) -> None:
        self._send(final=True)

    def _send(self, final: bool) -> None:
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        delta = self.cutter.feed(text, final=final)
        if delta:
            self.emit(delta)


class StopOnStrings:
    """A stopping criterion: a row is done once its new text holds a stop string. Records the
    step so the row's completion token count is known even when pad differs from EOS."""

    def __init__(self, tokenizer: Any, stops: list[list[str]], prompt_len: int) -> None:
        self.tokenizer = tokenizer
        self.stops = stops
        self.prompt_len = prompt_len
        self.ended_at: dict[int, int] = {}
        longest = max((len(s) for row in stops for s in row), default=0)
        # Enough tokens to hold the longest stop string even at 4 byte-level tokens a character.
        self.tail = 4 * longest + 4

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        n_new = input_ids.shape[1] - self.prompt_len
        for row, stops in enumerate(self.stops):
            if row in self.ended_at:
                done[row] = True
                continue
            if not stops:
                continue
            start = max(self.prompt_len, input_ids.shape[1] - self.tail)
            text = self.tokenizer.decode(input_ids[row, start:], skip_special_tokens=True)
            if any(s in text for s in stops):
                self.ended_at[row] = n_new
                done[row] = True
        return done


class TextGeneration:
    def __init__(self, settings: Settings) -> None:
        import transformers

        self.settings = settings
        tok = transformers.AutoTokenizer.from_pretrained(settings.model_path)
        # Decoder-only batches pad on the left so every row's last token is its own.
        tok.padding_side = "left"
        if tok.pad_token is None:
            tok.pad_token = tok.eos_token
        self.tokenizer = tok
        self.model = load_model(transformers.AutoModelForCausalLM, settings)
        self.parameters = generation_parameters(settings.max_new_tokens)
        self.default_max = min(DEFAULT_MAX_NEW_TOKENS, settings.max_new_tokens)
        eos = self.model.generation_config.eos_token_id
        if eos is None:
            eos = tok.eos_token_id
        self.eos_ids = {int(e) for e in (eos if isinstance(eos, list) else [eos]) if e is not None}
        # Set by routing for the one streamed caller being run; called with each JSON line.
        self.stream_sink: Callable[[str], None] | None = None

    def decode(self, payload: Any) -> Request:
        """`{"inputs": prompt | {"messages": [...]} | [...], "parameters": {...}}`, or the older
        top-level `{"messages": [...]}` (one conversation)."""
        if isinstance(payload, dict) and "messages" in payload and "inputs" not in payload:
            raw = payload.get("parameters")
            req = Request(items=[payload], single=True, parameters=raw)  # type: ignore[arg-type]
        else:
            req = split_inputs(payload, ("prompt", "text"))
        req.parameters = check_parameters(req.parameters, self.parameters)
        if req.parameters.get("stream") and not req.single:
            raise BadRequest(
                'parameters.stream takes one input per request, e.g. {"inputs": "hello", '
                f'"parameters": {{"stream": true}}}}; got a list of {len(req.items)}'
            )
        n = int(req.parameters.get("max_new_tokens", self.default_max))
        truncate = bool(req.parameters.get("truncation", False))
        req.items = [self.fit(decode_item(v), n, truncate) for v in req.items]
        return req

    def prompt_of(self, item: dict[str, Any]) -> str:
        if "messages" in item:
            if not self.tokenizer.chat_template:
                raise BadRequest("this model has no chat template; send a prompt instead")
            text = self.tokenizer.apply_chat_template(
                item["messages"], tokenize=False, add_generation_prompt=True
            )
            return str(text)
        return str(item["prompt"])

    def fit(self, item: dict[str, Any], max_new: int, truncate: bool) -> dict[str, Any]:
        """Tokenise the item once and fit it to maxSequenceLength - max_new_tokens (see the
        module docstring for who is cut and who is refused)."""
        limit = self.settings.max_sequence_length
        room = limit - max_new
        text = self.prompt_of(item)
        ids: list[int] = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) <= room and room > 0:
            return item | {"prompt_ids": Prompt(ids, False)}
        over = (
            f"the prompt is {len(ids)} tokens and max_new_tokens is {max_new}: together over the "
            f"limit of {limit} (spec.runtime.maxSequenceLength)"
        )
        if room <= 0:
            raise TooLarge(f"{over}; lower max_new_tokens below {limit}")
        if "messages" in item:
            must_keep = self.last_user_turn_tokens(item["messages"], text, len(ids))
            if must_keep > room:
                raise TooLarge(
                    f"{over}, and the last user message alone needs {must_keep} tokens; "
                    "send a shorter message or lower max_new_tokens"
                )
        elif not truncate:
            raise TooLarge(
                f"{over}; send a shorter prompt, lower max_new_tokens, or set "
                '"parameters": {"truncation": true} to have the model read the prompt\'s last '
                f"{room} tokens"
            )
        return item | {"prompt_ids": Prompt(ids[len(ids) - room :], True)}

    def last_user_turn_tokens(self, messages: list[dict[str, Any]], text: str, n: int) -> int:
        """Tokens from the start of the last user message to the end of the prompt."""
        users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
        k = users[-1] if users else len(messages) - 1
        before = ""
        if k > 0:
            before = str(
                self.tokenizer.apply_chat_template(
                    messages[:k], tokenize=False, add_generation_prompt=False
                )
            )
        if not text.startswith(before) or not getattr(self.tokenizer, "is_fast", False):
            return n  # a template that is not prefix-stable: the whole prompt must fit
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        first = next((i for i, (s, _) in enumerate(enc["offset_mapping"]) if s >= len(before)), n)
        return n - first

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        settings = [gen_settings(p, self.default_max) for p in params]
        alone = [
            bool(p.get("stream")) or (s.do_sample and "seed" in p)
            for p, s in zip(params, settings, strict=True)
        ]
        out: list[Any] = [None] * len(items)
        for group in group_items(settings, alone):
            results = self.generate(
                [items[i] for i in group], settings[group[0]], [params[i] for i in group]
            )
            for i, result in zip(group, results, strict=True):
                out[i] = result
        return out

    def generate(
        self, items: list[dict[str, Any]], gs: GenSettings, params: list[dict[str, Any]]
    ) -> list[dict[str, Any]]:
        import torch
        import transformers

        prompts = [i["prompt_ids"] for i in items]
        enc = self.tokenizer.pad(
            {"input_ids": [p.ids for p in prompts]}, padding=True, return_tensors="pt"
        ).to(self.settings.device)
        width = int(enc["input_ids"].shape[1])
        stops = [list(p.get("stop", [])) for p in params]
        stop_criterion = StopOnStrings(self.tokenizer, stops, width)
        extra: dict[str, Any] = {}
        if any(stops):
            extra["stopping_criteria"] = transformers.StoppingCriteriaList([stop_criterion])
        streamer = None
        if len(items) == 1 and params[0].get("stream") and self.stream_sink is not None:
            sink = self.stream_sink
            streamer = TokenStreamer(
                self.tokenizer, stops[0], lambda d: sink(json.dumps({"token": d}) + "\n")
            )
            extra["streamer"] = streamer
        seed = params[0].get("seed") if len(items) == 1 and gs.do_sample else None
        devices = [torch.device(self.settings.device)] if self.settings.device != "cpu" else []
        # A seeded item forks the RNG: same seed, same text, and other callers' sampling stays
        # unaffected by it.
        with torch.random.fork_rng(devices=devices, enabled=seed is not None):
            if seed is not None:
                torch.manual_seed(int(seed))
            with torch.inference_mode():
                generated = self.model.generate(
                    **enc,
                    max_new_tokens=gs.max_new_tokens,
                    pad_token_id=self.tokenizer.pad_token_id,
                    **gs.generate_kwargs(),
                    **extra,
                )
        new = generated[:, width:].cpu().tolist()
        out = []
        for row, item in enumerate(items):
            out.append(self.result(item, new[row], stops[row], stop_criterion.ended_at.get(row)))
        return out

    def result(
        self, item: dict[str, Any], new: list[int], stops: list[str], stop_step: int | None
    ) -> dict[str, Any]:
        """The answer of one item from its generated ids (padding after its end included)."""
        end = next((i + 1 for i, t in enumerate(new) if t in self.eos_ids), None)
        finish = "length"
        if end is not None:
            finish = "stop"
        if stop_step is not None and (end is None or stop_step < end):
            end, finish = stop_step, "stop"
        tokens = new if end is None else new[:end]
        text = str(self.tokenizer.decode(tokens, skip_special_tokens=True))
        text, stopped = cut_at_stop(text, stops)
        prompt: Prompt = item["prompt_ids"]
        result: dict[str, Any] = {
            "generated_text": text,
            "prompt_tokens": len(prompt.ids),
            "completion_tokens": len(tokens),
            "finish_reason": "stop" if stopped else finish,
        }
        if prompt.truncated:
            result["truncated"] = True
        if "messages" in item:
            result["messages"] = [*item["messages"], {"role": "assistant", "content": text}]
        return result


def wants_stream(payload: Any) -> bool:
    """Whether a (decoded JSON) request asks to be streamed; checked before the batch runs."""
    if not isinstance(payload, dict):
        return False
    params = payload.get("parameters")
    return isinstance(params, dict) and params.get("stream") is True
