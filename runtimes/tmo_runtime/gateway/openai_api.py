"""OpenAI-compatible API for text-generation models: what OpenAI SDKs, LangChain and curl
scripts written for vLLM/KubeAI send.

`POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models[/{model}]`. The bearer
token is the API key. Requests are translated into the handler's canonical payload (the same
one `/predictions` forwards); answers and errors come back in OpenAI's shapes, streamed as
server-sent events ending in `data: [DONE]` when `stream` is true.

The translation is pure (`chat_payload`, `completion_payload`, `chat_response`, ...); the routes
at the bottom only read, call TorchServe through the gateway, and write.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

GENERATION_TASK = "text-generation"
MAX_STOP = 4  # OpenAI's own limit on `stop` sequences


class OpenAIError(Exception):
    """Answered as OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        type_: str = "invalid_request_error",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type_

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(
    message: str, type_: str = "invalid_request_error", param: str | None = None, code: Any = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def error_type(status: int) -> str:
    if status == 401:
        return "authentication_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


@dataclass(frozen=True)
class Call:
    """One OpenAI request, translated: what to send the handler and how to answer."""

    model: str
    payload: dict[str, Any]  # the handler's canonical {"inputs": ..., "parameters": ...}
    stream: bool
    include_usage: bool  # stream_options.include_usage
    prompts: int  # choices to answer (completions with a list of prompts)


# Fields the SDKs send that change nothing here when left at their defaults. Anything else
# unknown is refused: an ignored parameter is a silently wrong answer.
_NEUTRAL = {
    "user": None,
    "n": 1,
    "presence_penalty": 0,
    "frequency_penalty": 0,
    "logprobs": False,
    "echo": False,
    "best_of": 1,
    "parallel_tool_calls": None,
    "store": False,
    "metadata": None,
    "service_tier": None,
}


def _require_object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise OpenAIError(400, "the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise OpenAIError(400, "'model' is required: the name of a served model", "model")
    return body


def _sampling(body: Mapping[str, Any], known: set[str]) -> dict[str, Any]:
    """OpenAI sampling fields -> handler parameters; refuses what the runtime cannot honour."""
    params: dict[str, Any] = {}
    for name, value in body.items():
        if name in known:
            continue
        if name in _NEUTRAL:
            neutral = _NEUTRAL[name]
            if neutral is None or value == neutral or value is None:
                continue
            raise OpenAIError(400, f"{name}={value!r} is not supported by this server", name)
        raise OpenAIError(400, f"unknown or unsupported field {name!r}", name)
    for src, dst in (("max_completion_tokens", "max_new_tokens"), ("max_tokens", "max_new_tokens")):
        if body.get(src) is not None:
            params[dst] = body[src]
    for name in ("temperature", "top_p", "top_k", "seed"):
        if body.get(name) is not None:
            params[name] = body[name]
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        # OpenAI samples unless temperature is 0; the handler needs it said.
        params["do_sample"] = temperature > 0
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not (isinstance(stop, list) and len(stop) <= MAX_STOP):
            raise OpenAIError(400, f"'stop' must be a string or up to {MAX_STOP} strings", "stop")
        if stop:
            params["stop"] = stop
    return params


def _stream_flags(body: Mapping[str, Any]) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise OpenAIError(400, "'stream' must be true or false", "stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise OpenAIError(400, "'stream_options' must be an object", "stream_options")
    return stream, bool(options.get("include_usage", False))


def _content_text(content: Any, where: str) -> str:
    """A message's content: a string, or a list of {"type": "text", "text": ...} parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise OpenAIError(400, f"{where}: only text content parts are supported", where)
            text = part.get("text")
            if not isinstance(text, str):
                raise OpenAIError(400, f"{where}: a text part needs a string 'text'", where)
            texts.append(text)
        return "".join(texts)
    raise OpenAIError(400, f"{where} must be a string or a list of text parts", where)


def chat_call(body: Any) -> Call:
    """`POST /v1/chat/completions` body -> the handler's chat payload."""
    doc = _require_object(body)
    messages = doc.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIError(400, "'messages' must be a non-empty list", "messages")
    turns = []
    for i, m in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise OpenAIError(400, f"{where} must be an object with role and content", where)
        role = m.get("role")
        if role not in ("system", "developer", "user", "assistant"):
            raise OpenAIError(
                400, f"{where}.role must be system, user or assistant; got {role!r}", where
            )
        content = _content_text(m.get("content"), f"{where}.content")
        # "developer" is the newer name OpenAI gives the system turn; chat templates know system.
        turns.append({"role": "system" if role == "developer" else role, "content": content})
    known = {
        "model",
        "messages",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
    }
    params = _sampling(doc, known)
    stream, usage = _stream_flags(doc)
    if stream:
        params["stream"] = True
    payload = {"inputs": {"messages": turns}, "parameters": params}
    return Call(doc["model"], payload, stream, usage, 1)


def completion_call(body: Any) -> Call:
    """`POST /v1/completions` body -> the handler's prompt payload."""
    doc = _require_object(body)
    prompt = doc.get("prompt")
    prompts = [prompt] if isinstance(prompt, str) else prompt
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) for p in prompts):
        raise OpenAIError(400, "'prompt' must be a string or a list of strings", "prompt")
    known = {
        "model",
        "prompt",
        "stream",
        "stream_options",
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "stop",
        "suffix",
    }
    if doc.get("suffix"):
        raise OpenAIError(400, "'suffix' (insertion) is not supported", "suffix")
    params = _sampling(doc, known)
    if "max_new_tokens" not in params:
        params["max_new_tokens"] = 16  # OpenAI's documented default for completions
    stream, usage = _stream_flags(doc)
    if stream:
        if len(prompts) != 1:
            raise OpenAIError(400, "streaming takes one prompt per request", "prompt")
        params["stream"] = True
    inputs: Any = prompts[0] if isinstance(prompt, str) else prompts
    return Call(doc["model"], {"inputs": inputs, "parameters": params}, stream, usage, len(prompts))


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage_of(results: list[Mapping[str, Any]]) -> dict[str, int]:
    prompt = sum(int(r.get("prompt_tokens", 0)) for r in results)
    completion = sum(int(r.get("completion_tokens", 0)) for r in results)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def chat_response(model: str, result: Mapping[str, Any], rid: str, created: int) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": str(result["generated_text"])},
                "logprobs": None,
                "finish_reason": result.get("finish_reason", "stop"),
            }
        ],
        "usage": usage_of([result]),
    }


def completion_response(
    model: str, results: list[Mapping[str, Any]], rid: str, created: int
) -> dict[str, Any]:
    return {
        "id": rid,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [
            {
                "index": i,
                "text": str(r["generated_text"]),
                "logprobs": None,
                "finish_reason": r.get("finish_reason", "stop"),
            }
            for i, r in enumerate(results)
        ],
        "usage": usage_of(results),
    }


def _envelope(
    kind: str, model: str, rid: str, created: int, choices: list[dict[str, Any]]
) -> dict[str, Any]:
    return {"id": rid, "object": kind, "created": created, "model": model, "choices": choices}


def chat_chunk(
    model: str, rid: str, created: int, delta: dict[str, Any], finish: str | None
) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
    return _envelope("chat.completion.chunk", model, rid, created, [choice])


def completion_chunk(
    model: str, rid: str, created: int, text: str, finish: str | None
) -> dict[str, Any]:
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
    return _envelope("text_completion", model, rid, created, [choice])


def sse(doc: Mapping[str, Any] | str) -> bytes:
    data = doc if isinstance(doc, str) else json.dumps(doc, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def sse_events(
    lines: AsyncIterator[Mapping[str, Any]], call: Call, chat: bool
) -> AsyncIterator[bytes]:
    """The handler's streamed lines ({"token"}..., then the result with "done") as OpenAI
    server-sent events; an error line ends the stream with an error event, then [DONE]."""
    rid = new_id("chatcmpl" if chat else "cmpl")
    created = int(time.time())
    if chat:
        yield sse(chat_chunk(call.model, rid, created, {"role": "assistant", "content": ""}, None))
    async for line in lines:
        if "error" in line:
            yield sse(error_body(str(line["error"]), error_type(int(line.get("status", 500)))))
            break
        if "token" in line:
            text = str(line["token"])
            if not text:
                continue
            if chat:
                yield sse(chat_chunk(call.model, rid, created, {"content": text}, None))
            else:
                yield sse(completion_chunk(call.model, rid, created, text, None))
            continue
        finish = str(line.get("finish_reason", "stop"))
        if chat:
            yield sse(chat_chunk(call.model, rid, created, {}, finish))
        else:
            yield sse(completion_chunk(call.model, rid, created, "", finish))
        if call.include_usage:
            kind = "chat.completion.chunk" if chat else "text_completion"
            usage = _envelope(kind, call.model, rid, created, []) | {"usage": usage_of([line])}
            yield sse(usage)
        break
    yield sse("[DONE]")


def model_card(name: str, task: str, ready: bool) -> dict[str, Any]:
    # `name` and `ready` too: KServe v1 clients read the same path for readiness.
    return {
        "id": name,
        "object": "model",
        "created": 0,
        "owned_by": "tmo",
        "task": task,
        "name": name,
        "ready": ready,
    }
