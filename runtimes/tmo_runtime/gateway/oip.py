"""Open Inference Protocol v2 (REST) <-> TMO handler payloads, as pure functions."""

from __future__ import annotations

import json
import math
from typing import Any

Tensor = dict[str, Any]

# name, datatype, shape (-1: any) of what each task takes and gives over OIP v2.
SIGNATURES: dict[str, tuple[list[Tensor], list[Tensor]]] = {
    "text-classification": (
        [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
        ],
    ),
    "token-classification": (
        [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        [{"name": "entities", "datatype": "BYTES", "shape": [-1]}],
    ),
    "feature-extraction": (
        [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        [{"name": "embedding", "datatype": "FP32", "shape": [-1, -1]}],
    ),
    "summarization": (
        [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        [{"name": "summary_text", "datatype": "BYTES", "shape": [-1]}],
    ),
    "text-generation": (
        [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
        [{"name": "generated_text", "datatype": "BYTES", "shape": [-1]}],
    ),
    "image-classification": (
        [{"name": "image", "datatype": "BYTES", "shape": [-1]}],
        [
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "score", "datatype": "FP32", "shape": [-1]},
        ],
    ),
    "speech-recognition": (
        [{"name": "audio", "datatype": "BYTES", "shape": [-1]}],
        [{"name": "text", "datatype": "BYTES", "shape": [-1]}],
    ),
}


def example(task: str, url: str = "http://HOST/v2/models/NAME/infer") -> str:
    """One OIP v2 request that works for the task, as a curl line."""
    if task == "image-classification":
        tensor = (
            '{"name": "image", "datatype": "BYTES", "shape": [1], "data": ["<base64 of cat.jpg>"]}'
        )
    elif task == "speech-recognition":
        tensor = '{"name": "audio", "datatype": "FP32", "shape": [1, 3], "data": [0.0, 0.1, 0.0]}'
    else:
        tensor = (
            '{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["the refund is late"]}'
        )
    return f"curl -H 'Content-Type: application/json' -d '{{\"inputs\": [{tensor}]}}' {url}"


class OipError(ValueError):
    """The request does not follow OIP v2; answered with 400 and {"error": ...} naming the
    field (inputs[0].data[3], parameters, ...)."""


def model_metadata(name: str, task: str, version: str) -> dict[str, Any]:
    inputs, outputs = SIGNATURES[task]
    return {
        "name": name,
        "versions": [version],
        "platform": "torchserve",
        "inputs": inputs,
        "outputs": outputs,
        "parameters": {"task": task},
    }


def _flatten(data: Any) -> list[Any]:
    """Row-major elements of nested lists (iterative: a deeply nested body is no crash)."""
    out: list[Any] = []
    stack = [iter([data])]
    while stack:
        for d in stack[-1]:
            if isinstance(d, list):
                stack.append(iter(d))
                break
            out.append(d)
        else:
            stack.pop()
    return out


_DATATYPES = frozenset(
    {"BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64"}
    | {"FP16", "FP32", "FP64", "BF16", "BYTES"}
)
_FLOATS = frozenset({"FP16", "FP32", "FP64", "BF16"})


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def _object(value: Any, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise OipError(f"{field} must be an object; got {_kind(value)}")
    return dict(value)


def _input_tensor(body: Any) -> Tensor:
    if not isinstance(body, dict):
        raise OipError(
            f'the inference request must be a JSON object {{"inputs": [...]}}; got {_kind(body)}'
        )
    if "id" in body and not isinstance(body["id"], str):
        raise OipError(f"id must be a string; got {_kind(body['id'])}")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        got = f"{len(inputs)} tensors" if isinstance(inputs, list) else _kind(inputs)
        raise OipError(f"inputs must be a list of exactly one input tensor; got {got}")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise OipError(f"inputs[0] must be a tensor object; got {_kind(tensor)}")
    for field in ("name", "shape", "datatype", "data"):
        if field not in tensor:
            raise OipError(f"inputs[0] is missing '{field}'")
    if not isinstance(tensor["name"], str):
        raise OipError(f"inputs[0].name must be a string; got {_kind(tensor['name'])}")
    dtype = tensor["datatype"]
    if not isinstance(dtype, str) or dtype not in _DATATYPES:
        raise OipError(
            f"inputs[0].datatype must be one of {', '.join(sorted(_DATATYPES))}; got {dtype!r}"
        )
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise OipError("inputs[0].shape must be a list of non-negative integers")
    flat = _flatten(tensor["data"])
    if math.prod(shape) != len(flat):
        raise OipError(f"inputs[0].shape {shape} does not match {len(flat)} data elements")
    if not flat:
        raise OipError("inputs[0].data is empty; send at least one element")
    for i, x in enumerate(flat):
        if dtype == "BYTES":
            ok = isinstance(x, str)
            want = "a string (base64 for images and audio)"
        elif dtype == "BOOL":
            ok, want = isinstance(x, bool), "true or false"
        elif dtype in _FLOATS:
            ok = isinstance(x, int | float) and not isinstance(x, bool)
            want = "a number"
        else:
            ok = isinstance(x, int) and not isinstance(x, bool)
            want = "an integer"
        if not ok:
            raise OipError(f"inputs[0].data[{i}] must be {want} for {dtype}; got {_kind(x)}")
    return {
        **tensor,
        "data": flat,
        "parameters": _object(tensor.get("parameters"), "inputs[0].parameters"),
    }


def explain_requested(body: Any) -> bool:
    """`"parameters": {"explain": true}` (request or tensor level) asks for an explanation."""
    if not isinstance(body, dict):
        return False
    found = [body.get("parameters")]
    inputs = body.get("inputs")
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], dict):
        found.append(inputs[0].get("parameters"))
    return any(isinstance(p, dict) and p.get("explain") is True for p in found)


def to_handler_payload(task: str, body: Any) -> dict[str, Any]:
    """The JSON body the TorchServe handler takes for this OIP v2 inference request.

    Items are checked and made canonical like `/predictions` bodies (bodies.canonical_item),
    so an empty text or a broken base64 image is a 400 here, naming the element."""
    from tmo_runtime.gateway.bodies import Invalid, canonical_item

    tensor = _input_tensor(body)
    params = _object(body.get("parameters"), "parameters")
    params.update(tensor["parameters"])
    explain = params.pop("explain", None)
    if explain is not None and not isinstance(explain, bool):
        raise OipError(f"parameters.explain must be true or false; got {_kind(explain)}")
    dtype, data = tensor["datatype"], tensor["data"]
    if task == "speech-recognition" and dtype in _FLOATS:
        rows = tensor["shape"][0] if len(tensor["shape"]) == 2 else 1
        if rows != 1:
            raise OipError("raw float audio takes one clip per request ([1, samples])")
        rate = params.pop("sampling_rate", 16000)
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            raise OipError(f"parameters.sampling_rate must be a positive integer; got {rate!r}")
        return {"array": [float(x) for x in data], "sampling_rate": rate, "parameters": params}
    if dtype != "BYTES":
        extra = " (or FP32 [1, samples] audio)" if task == "speech-recognition" else ""
        raise OipError(f"inputs[0].datatype: {task} takes BYTES{extra}; got {dtype}")
    items: list[Any] = list(data)
    if task == "text-generation" and tensor["name"] == "messages":
        try:
            items = [{"messages": json.loads(x)} for x in data]
        except ValueError as e:
            raise OipError(
                "inputs[0].data elements of 'messages' must be JSON arrays of "
                '{"role": ..., "content": ...}'
            ) from e
    if explain and len(items) != 1:
        raise OipError(f"an explanation takes one input element; got {len(items)}")
    try:
        items = [canonical_item(task, x, f"inputs[0].data[{i}]") for i, x in enumerate(items)]
    except Invalid as e:
        raise OipError(str(e)) from None
    return {"inputs": items, "parameters": params}


def explain_outputs(result: Any) -> list[Tensor]:
    """The handler's explanation of one element as OIP v2 tensors: tokens and attention."""
    if isinstance(result, list) and len(result) == 1:
        result = result[0]
    tokens = [str(t) for t in result["tokens"]]
    n = len(tokens)
    flat = [float(x) for row in result["attention"] for x in row]
    return [
        {"name": "tokens", "datatype": "BYTES", "shape": [n], "data": tokens},
        {"name": "attention", "datatype": "FP32", "shape": [n, n], "data": flat},
    ]


def to_outputs(task: str, results: list[Any]) -> list[Tensor]:
    """Handler results (one per input element) as OIP v2 output tensors."""
    n = len(results)

    def col(key: str) -> list[Any]:
        return [r[key] for r in results]

    if task in ("text-classification", "image-classification"):
        return [
            {"name": "label", "datatype": "BYTES", "shape": [n], "data": col("label")},
            {"name": "score", "datatype": "FP32", "shape": [n], "data": col("score")},
        ]
    if task == "token-classification":
        data = [json.dumps(r) for r in results]
        return [{"name": "entities", "datatype": "BYTES", "shape": [n], "data": data}]
    if task == "feature-extraction":
        rows = col("embedding")
        dim = len(rows[0]) if rows else 0
        flat = [x for row in rows for x in row]
        return [{"name": "embedding", "datatype": "FP32", "shape": [n, dim], "data": flat}]
    key = {
        "summarization": "summary_text",
        "text-generation": "generated_text",
        "speech-recognition": "text",
    }[task]
    return [{"name": key, "datatype": "BYTES", "shape": [n], "data": col(key)}]


def infer_response(
    name: str, version: str, request_id: str | None, outputs: list[Tensor]
) -> dict[str, Any]:
    doc: dict[str, Any] = {"model_name": name, "model_version": version, "outputs": outputs}
    if request_id is not None:
        doc["id"] = request_id
    return doc
