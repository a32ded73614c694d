"""Random bodies x random content types x the seven models, through the real gateway and
TorchServe: a client's bytes never get a 5xx, and never hang."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tmo_runtime.tiny_models import TASKS

from tests.runtime.helpers import Served, b64, model_name, png_bytes, wav_bytes

pytestmark = pytest.mark.slow

CONTENT_TYPES = [
    None,
    "application/json",
    "application/json; charset=utf-8",
    "application/x-www-form-urlencoded",
    "text/plain",
    "application/octet-stream",
    "image/png",
    "audio/wav",
    "multipart/form-data; boundary=b",
    "multipart/form-data",
    "application/vnd.api+json",
]
KEYS = ["inputs", "parameters", "text", "messages", "instances", "array", "data", "b64", "id"]
PARAMS = ["top_k", "max_new_tokens", "stream", "truncation", "temperature", "stop", "seed"]

scalars = st.none() | st.booleans() | st.integers(-3, 300) | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.sampled_from(KEYS + PARAMS) | st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=12,
)
files = st.sampled_from([png_bytes(), wav_bytes(0.05), b""]).map(
    lambda data: {"inputs": b64(data)} if data else {"inputs": ""}
)
json_bodies = (json_values | files).map(lambda doc: json.dumps(doc).encode())
bodies = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=80).map(str.encode),
    json_bodies,
    st.sampled_from([png_bytes(), wav_bytes(0.05), b"--b\r\nContent-Disposition: form-data"]),
)
paths = st.sampled_from(
    ["/predictions/{m}", "/v2/models/{m}/infer", "/v1/models/{m}:predict", "/explanations/{m}"]
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    task=st.sampled_from(sorted(TASKS)),
    body=bodies,
    content_type=st.sampled_from(CONTENT_TYPES),
    path=paths,
)
def test_no_5xx_for_any_body(
    served: Served, task: str, body: bytes, content_type: str | None, path: str
) -> None:
    headers: dict[str, Any] = dict(served.headers)
    if content_type:
        headers["Content-Type"] = content_type
    url = served.url + path.format(m=model_name(task))
    r = httpx.post(url, content=body, headers=headers, timeout=30)
    assert r.status_code < 500, (task, path, content_type, body[:200], r.status_code, r.text)
    if r.status_code >= 400:
        assert r.headers["content-type"].startswith("application/json"), r.text
        assert r.json()["error"]
