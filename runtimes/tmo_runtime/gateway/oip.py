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


class OipError(ValueError):
    """The request does not follow OIP v2; answered with 400 and {"error": ...}."""


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
    if isinstance(data, list):
        out: list[Any] = []
        for d in data:
            out.extend(_flatten(d))
        return out
    return [data]


def _input_tensor(body: Any) -> Tensor:
    if not isinstance(body, dict):
        raise OipError("the inference request must be a JSON object")
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or len(inputs) != 1:
        raise OipError("expected exactly one input tensor in 'inputs'")
    tensor = inputs[0]
    if not isinstance(tensor, dict):
        raise OipError("an input tensor must be an object")
    for field in ("name", "shape", "datatype", "data"):
        if field not in tensor:
            raise OipError(f"input tensor is missing '{field}'")
    shape = tensor["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise OipError("shape must be a list of non-negative integers")
    flat = _flatten(tensor["data"])
    if math.prod(shape) != len(flat):
        raise OipError(f"shape {shape} does not match {len(flat)} data elements")
    return {**tensor, "data": flat}


def to_handler_payload(task: str, body: Any) -> dict[str, Any]:
    """The JSON body the TorchServe handler takes for this OIP v2 inference request."""
    tensor = _input_tensor(body)
    params = dict(body.get("parameters") or {})
    params.update(tensor.get("parameters") or {})
    dtype, data = tensor["datatype"], tensor["data"]
    if task == "speech-recognition" and dtype in ("FP32", "FP64"):
        rows = tensor["shape"][0] if len(tensor["shape"]) == 2 else 1
        if rows != 1:
            raise OipError("raw float audio takes one clip per request ([1, samples])")
        rate = params.pop("sampling_rate", 16000)
        return {"array": [float(x) for x in data], "sampling_rate": rate, "parameters": params}
    if dtype != "BYTES":
        raise OipError(f"{task} takes a BYTES input tensor; got {dtype}")
    if not all(isinstance(x, str) for x in data):
        raise OipError("BYTES data must be strings (base64 for images and audio)")
    items: list[Any] = list(data)
    if task == "text-generation" and tensor["name"] == "messages":
        try:
            items = [{"messages": json.loads(x)} for x in data]
        except ValueError as e:
            raise OipError("'messages' elements must be JSON arrays of {role, content}") from e
    return {"inputs": items, "parameters": params}


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
