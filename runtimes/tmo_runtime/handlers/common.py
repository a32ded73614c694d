"""What every task handler shares: settings, payload decoding, precision and attention."""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger("tmo.handler")


class BadRequest(ValueError):
    """One request of a batch is malformed; only that caller gets a 400."""

    status = 400


class TooLarge(BadRequest):
    """One request is beyond a limit of the manifest; only that caller gets a 413, and the
    message names the limit, its manifest field and how to get under it."""

    status = 413


@dataclass(frozen=True)
class Settings:
    task: str
    model_path: str
    precision: str = "fp32"
    attention: str = "sdpa"
    max_sequence_length: int = 512
    max_new_tokens: int = 256
    max_chunks: int = 64
    device: str = "cpu"
    threads: int = 1  # torch intra-op threads of this worker (CPU)


@dataclass
class Request:
    """One caller's request: one or more items, processed together with the whole batch."""

    items: list[Any]
    single: bool
    parameters: dict[str, Any] = field(default_factory=dict)


def available_cpus(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """CPUs this container may use: the cgroup quota (v2, then v1), else the affinity mask."""
    import os

    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = count or 1
    try:
        with open(f"{cgroup_root}/cpu.max") as f:
            quota, period = f.read().split()[:2]
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        try:
            with open(f"{cgroup_root}/cpu/cpu.cfs_quota_us") as f:
                quota_us = int(f.read())
            with open(f"{cgroup_root}/cpu/cpu.cfs_period_us") as f:
                period_us = int(f.read())
            if quota_us > 0:
                cpus = min(cpus, max(1, quota_us // period_us))
        except (OSError, ValueError):
            pass
    return cpus


def worker_threads(config: Mapping[str, Any]) -> int:
    """Split the CPUs among the model's workers: torch's default (all cores per worker)
    oversubscribes a pod with several workers and runs several times slower."""
    import os

    if os.environ.get("TMO_TORCH_THREADS", "").isdigit():
        return max(1, int(os.environ["TMO_TORCH_THREADS"]))
    workers = max(1, int(config.get("minWorkers", 1) or 1))
    return max(1, available_cpus() // workers)


def settings_from_yaml(config: Mapping[str, Any], model_dir: str, device: str) -> Settings:
    h = dict(config.get("handler") or {})
    return Settings(
        task=str(h["task"]),
        model_path=str(h.get("model_path") or model_dir),
        precision=str(h.get("precision", "fp32")),
        attention=str(h.get("attention", "sdpa")),
        max_sequence_length=int(h.get("max_sequence_length", 512)),
        max_new_tokens=int(h.get("max_new_tokens", 256)),
        max_chunks=int(h.get("max_chunks", 64)),
        device=device,
        threads=worker_threads(config),
    )


def raw_body(request: Mapping[str, Any]) -> Any:
    body = request.get("body")
    if body is None:
        body = request.get("data")
    if isinstance(body, bytearray):
        body = bytes(body)
    return body


def as_json_or_raw(body: Any) -> Any:
    """TorchServe hands JSON bodies over decoded, others as bytes or str."""
    if isinstance(body, bytes | str):
        head = body.lstrip()[:1]
        if head in (b"{", b"[", "{", "["):
            try:
                return json.loads(body)
            except ValueError:
                return body
    return body


def split_inputs(payload: Any, keys: Sequence[str]) -> Request:
    """`{"inputs": x | [x, ...], "parameters": {...}}`, one of `keys`, or a bare value."""
    params: dict[str, Any] = {}
    value = payload
    if isinstance(payload, dict):
        raw = payload.get("parameters")
        if raw is not None and not isinstance(raw, dict):
            raise BadRequest(
                f'parameters must be an object, e.g. {{"parameters": {{...}}}}; '
                f"got {type(raw).__name__}"
            )
        params = dict(raw or {})
        for key in ("inputs", *keys):
            if key in payload:
                value = payload[key]
                break
        else:
            raise BadRequest(f"expected one of {', '.join(('inputs', *keys))} in the request")
    if isinstance(value, list):
        if not value:
            raise BadRequest("empty inputs")
        return Request(items=list(value), single=False, parameters=params)
    return Request(items=[value], single=True, parameters=params)


def text_item(value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest("text input is not UTF-8") from e
    if not isinstance(value, str):
        raise BadRequest(f"expected a string, got {type(value).__name__}")
    return value


def non_blank_text(value: Any) -> str:
    """A text item the model can answer about: empty or whitespace-only text would still get
    a label, an embedding or a summary, of nothing, so it is refused."""
    text = text_item(value)
    if not text.strip():
        raise BadRequest(
            f'inputs must be non-empty text, e.g. {{"inputs": "the refund is late"}}; got {text!r}'
        )
    return text


def binary_item(value: Any) -> bytes:
    """Raw bytes, or base64 text inside JSON."""
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as e:
            raise BadRequest("binary input is neither raw bytes nor base64") from e
    raise BadRequest(f"expected bytes or base64, got {type(value).__name__}")


def torch_dtype(precision: str, device: str) -> Any:
    import torch

    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        if device == "cpu":
            log.warning("fp16 on CPU is slow and partly unsupported; consider bf16 or int8")
        return torch.float16
    return torch.float32  # fp32, and int8 which quantises an fp32 model after loading


def attention_implementation(requested: str, device: str) -> str:
    """flash_attention_2 only where it can run; otherwise SDPA, said once in the log."""
    if requested != "flash_attention_2":
        return requested
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        log.warning("flash_attention_2 requested but flash_attn is not installed: using sdpa")
        return "sdpa"
    if not device.startswith("cuda"):
        log.warning("flash_attention_2 needs a CUDA device: using sdpa")
        return "sdpa"
    return requested


def load_model(cls: Any, settings: Settings) -> Any:
    """from_pretrained with the runtime's precision and attention, then int8 if asked."""
    import torch

    if settings.precision == "int8" and settings.device != "cpu":
        raise ValueError("precision int8 is dynamic quantisation, which runs on CPU only")
    dtype = torch_dtype(settings.precision, settings.device)
    attn = attention_implementation(settings.attention, settings.device)
    try:
        model = cls.from_pretrained(settings.model_path, dtype=dtype, attn_implementation=attn)
    except (ValueError, ImportError) as e:
        # Some architectures have no SDPA path; eager always exists.
        log.warning("attention %s unavailable for this model (%s): using eager", attn, e)
        model = cls.from_pretrained(settings.model_path, dtype=dtype, attn_implementation="eager")
    model.eval()
    if settings.precision == "int8":
        quantize: Any = torch.ao.quantization.quantize_dynamic
        model = quantize(model, {torch.nn.Linear}, dtype=torch.qint8)
    return model.to(settings.device) if settings.precision != "int8" else model


def max_new_tokens(params: list[dict[str, Any]], cap: int) -> list[int]:
    out = []
    for p in params:
        n = p.get("max_new_tokens", cap)
        if not isinstance(n, int) or n < 1:
            raise BadRequest("parameters.max_new_tokens must be a positive integer")
        out.append(min(n, cap))
    return out


# A parameter's check: (name, value) -> the value to use, or BadRequest naming what is allowed.
ParamCheck = Callable[[str, Any], Any]


def check_parameters(params: Any, allowed: Mapping[str, ParamCheck]) -> dict[str, Any]:
    """Validate a request's `parameters` against a task's allowed names: an unknown name is a
    400 listing the allowed ones (never silently ignored), a bad value a 400 naming it."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise BadRequest(
            f'parameters must be an object, e.g. {{"max_new_tokens": 32}}; '
            f"got {type(params).__name__}"
        )
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        takes = ", ".join(sorted(allowed)) or "no parameters"
        raise BadRequest(f"unknown parameter {unknown[0]!r}; this model takes: {takes}")
    return {name: allowed[name](name, value) for name, value in params.items()}


def integer(lo: int | None = None, hi: int | None = None, hint: str = "") -> ParamCheck:
    def check(name: str, value: Any) -> int:
        # bool is an int in Python; true is not a token count.
        ok = isinstance(value, int) and not isinstance(value, bool)
        if ok and (lo is None or value >= lo) and (hi is None or value <= hi):
            return int(value)
        bounds = _bounds(lo, hi)
        raise BadRequest(f"parameters.{name} must be an integer{bounds}{hint}; got {value!r}")

    return check


def number(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False
) -> ParamCheck:
    def check(name: str, value: Any) -> float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            v = float(value)
            above = lo is None or (v > lo if lo_open else v >= lo)
            if above and (hi is None or v <= hi) and v == v:  # v == v: not NaN
                return v
        low = "" if lo is None else (f" > {lo}" if lo_open else f" >= {lo}")
        high = "" if hi is None else f" and <= {hi}"
        raise BadRequest(f"parameters.{name} must be a number{low}{high}; got {value!r}")

    return check


def boolean() -> ParamCheck:
    def check(name: str, value: Any) -> bool:
        if isinstance(value, bool):
            return value
        raise BadRequest(f"parameters.{name} must be true or false; got {value!r}")

    return check


def one_of(*choices: str) -> ParamCheck:
    def check(name: str, value: Any) -> str:
        if isinstance(value, str) and value in choices:
            return value
        raise BadRequest(f"parameters.{name} must be one of {', '.join(choices)}; got {value!r}")

    return check


def strings(max_items: int) -> ParamCheck:
    """A string or a list of up to `max_items` non-empty strings, as a list."""

    def check(name: str, value: Any) -> list[str]:
        items = [value] if isinstance(value, str) else value
        if (
            isinstance(items, list)
            and len(items) <= max_items
            and all(isinstance(x, str) and x for x in items)
        ):
            return list(items)
        raise BadRequest(
            f"parameters.{name} must be a string or a list of at most {max_items} non-empty "
            f"strings; got {value!r}"
        )

    return check


def _bounds(lo: int | None, hi: int | None) -> str:
    if lo is not None and hi is not None:
        return f" from {lo} to {hi}"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""
