"""What people send with curl, end to end through the real gateway and TorchServe: every habit
gets an answer, and every client mistake a 4xx that says what to send (never a 5xx)."""

from __future__ import annotations

import base64
import gzip
import io
import json
from typing import Any

import httpx
import pytest

from tests.runtime.helpers import Served, b64, model_name, png_bytes, wav_bytes

pytestmark = pytest.mark.slow

FORM = "application/x-www-form-urlencoded"  # curl's content type for -d and --data-binary
TEXT = "text-classification"
IMAGE = "image-classification"
LABELS = {"negative", "neutral", "positive"}


def url(served: Served, task: str, path: str = "/predictions/{m}") -> str:
    return served.url + path.format(m=model_name(task))


def post(
    served: Served,
    task: str,
    content: bytes | None = None,
    content_type: str | None = None,
    path: str = "/predictions/{m}",
    method: str = "POST",
    **kw: Any,
) -> httpx.Response:
    headers = {**served.headers, **kw.pop("headers", {})}
    if content_type:
        headers["Content-Type"] = content_type
    return httpx.request(
        method, url(served, task, path), content=content, headers=headers, timeout=60, **kw
    )


def jpeg_bytes(size: tuple[int, int] = (64, 48), noise: bool = False) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8) if noise else None
    image = Image.fromarray(pixels) if pixels is not None else Image.new("RGB", size, (9, 90, 9))
    buf = io.BytesIO()
    image.save(buf, "JPEG", quality=95)
    return buf.getvalue()


def requests_total(served: Served, task: str, code: str) -> float:
    text = httpx.get(served.metrics_url + "/metrics", timeout=5).text
    model = f'model="{model_name(task)}"'
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("tmo_requests_total{") and model in line and f'code="{code}"' in line
    )


def test_curl_data_binary_image_and_wav(served: Served) -> None:
    r = post(served, IMAGE, jpeg_bytes(), FORM)  # curl --data-binary @cat.jpg URL
    assert r.status_code == 200, r.text
    assert r.json()["label"] in {"cat", "dog", "bird"}
    r = post(served, "speech-recognition", wav_bytes(), FORM)  # --data-binary @clip.wav
    assert r.status_code == 200, r.text
    assert isinstance(r.json()["text"], str)


def test_large_jpeg_under_the_body_cap(served: Served) -> None:
    big = jpeg_bytes((820, 820), noise=True)
    assert 512 * 1024 < len(big) < 1 << 20  # base64 of it is above the 1 MiB cap
    r = post(served, IMAGE, big, FORM)
    assert r.status_code == 200, r.text


def test_curl_upload_file_put_without_content_type(served: Served) -> None:
    r = post(served, IMAGE, png_bytes(), method="PUT")  # curl -T cat.png URL
    assert r.status_code == 200, r.text
    assert r.json()["label"] in {"cat", "dog", "bird"}


def test_curl_d_plain_text(served: Served) -> None:
    r = post(served, TEXT, b"the refund is late", FORM)  # curl -d 'the refund is late'
    assert r.status_code == 200, r.text
    assert r.json()["label"] in LABELS
    r = post(served, "token-classification", b"john works in paris", None, method="PUT")
    assert r.status_code == 200 and isinstance(r.json(), list), r.text


def test_curl_form_any_field_name(served: Served) -> None:
    jpg = jpeg_bytes()
    files = {"image": ("cat.jpg", jpg, "image/jpeg")}  # curl -F image=@cat.jpg
    r = httpx.post(url(served, IMAGE), files=files, headers=served.headers, timeout=60)
    assert r.status_code == 200, r.text
    files = {"upload": ("clip.wav", wav_bytes(), "audio/wav")}
    r = httpx.post(
        url(served, "speech-recognition"), files=files, headers=served.headers, timeout=60
    )
    assert r.status_code == 200, r.text
    form = {"text": "the refund is late"}  # curl -F text='the refund is late'
    r = httpx.post(url(served, TEXT), files={"text": (None, form["text"])}, headers=served.headers)
    assert r.status_code == 200 and r.json()["label"] in LABELS, r.text


def test_lenient_base64_image(served: Served) -> None:
    png = png_bytes()
    wrapped = "\n".join(b64(png)[i : i + 76] for i in range(0, len(b64(png)), 76))
    for encoded in (f"data:image/png;base64,{b64(png)}", wrapped):
        r = post(served, IMAGE, json.dumps({"inputs": encoded}).encode(), "application/json")
        assert r.status_code == 200, r.text
    urlsafe = base64.urlsafe_b64encode(png).decode().rstrip("=")
    r = post(
        served,
        IMAGE,
        json.dumps({"instances": [{"b64": urlsafe}]}).encode(),
        None,
        path="/v1/models/{m}:predict",
    )
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1, r.text


def test_empty_and_malformed_bodies_say_what_to_send(served: Served) -> None:
    before = requests_total(served, TEXT, "400")
    empty = post(served, TEXT, b"", "application/json")
    assert empty.status_code == 400
    assert "empty" in empty.json()["error"] and "curl" in empty.json()["error"]
    bad = post(served, TEXT, b'{"inputs": "the refund is late",}', "application/json")
    assert bad.status_code == 400
    assert "line 1 column" in bad.json()["error"]
    assert '{"inputs": "the refund is late"}' in bad.json()["error"]
    v2 = post(served, TEXT, b"", None, path="/v2/models/{m}/infer")
    assert v2.status_code == 400 and '"datatype": "BYTES"' in v2.json()["error"]
    image = post(served, IMAGE, b"", FORM)
    assert image.status_code == 400 and "--data-binary @cat.jpg" in image.json()["error"]
    assert requests_total(served, TEXT, "400") == before + 3


@pytest.mark.parametrize(
    ("task", "body", "field"),
    [
        (
            TEXT,
            {
                "inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                "parameters": 5,
            },
            "parameters",
        ),
        (
            TEXT,
            {
                "inputs": [
                    {
                        "name": "text",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": ["a"],
                        "parameters": [1],
                    }
                ]
            },
            "inputs[0].parameters",
        ),
        (
            "speech-recognition",
            {"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1, 1], "data": [None]}]},
            "inputs[0].data[0]",
        ),
    ],
)
def test_oip_v2_type_errors_are_counted_400s(
    served: Served, task: str, body: dict[str, Any], field: str
) -> None:
    before = requests_total(served, task, "400")
    r = post(
        served, task, json.dumps(body).encode(), "application/json", path="/v2/models/{m}/infer"
    )
    assert r.status_code == 400, r.text
    assert r.json()["error"].startswith(field)
    assert requests_total(served, task, "400") == before + 1


def test_unknown_version_is_404_naming_what_is_served(served: Served) -> None:
    body = b'{"inputs": "x"}'
    for path in ("/predictions/{m}/9.9", "/v2/models/{m}/versions/9.9/infer"):
        r = post(served, TEXT, body, "application/json", path=path)
        assert r.status_code == 404, r.text
        assert "9.9" in r.json()["error"] and "'1.0'" in r.json()["error"]
    meta = httpx.get(url(served, TEXT, "/v2/models/{m}/versions/9.9"), headers=served.headers)
    assert meta.status_code == 404
    assert post(served, TEXT, body, "application/json", path="/predictions/{m}/1.0").is_success


def test_kserve_v1_predict_and_ready(served: Served) -> None:
    doc = {"instances": ["the refund is late", {"text": "thanks"}]}
    r = post(
        served, TEXT, json.dumps(doc).encode(), "application/json", path="/v1/models/{m}:predict"
    )
    assert r.status_code == 200, r.text
    predictions = r.json()["predictions"]
    assert len(predictions) == 2 and all(p["label"] in LABELS for p in predictions)
    ready = httpx.get(url(served, TEXT, "/v1/models/{m}"), headers=served.headers)
    # The same path is OpenAI's model card: KServe's name and ready are in it.
    assert ready.status_code == 200
    assert ready.json()["name"] == model_name(TEXT) and ready.json()["ready"] is True
    bad = post(served, TEXT, b'{"inputs": "x"}', "application/json", path="/v1/models/{m}:predict")
    assert bad.status_code == 400 and "instances" in bad.json()["error"]


def test_content_encoding(served: Served) -> None:
    body = gzip.compress(b'{"inputs": "the refund is late"}')
    r = post(served, TEXT, body, "application/json", headers={"Content-Encoding": "gzip"})
    assert r.status_code == 200 and r.json()["label"] in LABELS, r.text
    r = post(served, TEXT, body, "application/json", headers={"Content-Encoding": "br"})
    assert r.status_code == 415 and "gzip" in r.json()["error"]


def test_handler_errors_pass_through_with_their_status(served: Served) -> None:
    doc = {"inputs": "x", "parameters": {"colour": "red"}}
    r = post(served, TEXT, json.dumps(doc).encode(), "application/json")
    assert r.status_code == 400 and "colour" in r.json()["error"], r.text
    not_an_image = post(served, IMAGE, b"GIF89a" + b"\0" * 20, "image/gif")
    assert not_an_image.status_code == 400 and "error" in not_an_image.json()


def test_explanations(served: Served) -> None:
    r = post(
        served,
        TEXT,
        b'{"inputs": "the refund is late"}',
        "application/json",
        path="/explanations/{m}",
    )
    assert r.status_code == 200, r.text
    doc = r.json()
    n = len(doc["tokens"])
    assert n >= 2 and len(doc["attention"]) == n
    assert all(abs(sum(row) - 1) < 1e-3 for row in doc["attention"])
    tensor = {"name": "text", "datatype": "BYTES", "shape": [1], "data": ["the refund"]}
    body = {"inputs": [tensor], "parameters": {"explain": True}}
    v2 = post(
        served, TEXT, json.dumps(body).encode(), "application/json", path="/v2/models/{m}/infer"
    )
    assert v2.status_code == 200, v2.text
    out = {o["name"]: o for o in v2.json()["outputs"]}
    k = out["tokens"]["shape"][0]
    assert out["attention"]["shape"] == [k, k] and len(out["attention"]["data"]) == k * k
    image = post(served, IMAGE, png_bytes(), "image/png", path="/explanations/{m}")
    assert image.status_code == 400 and "text tasks" in image.json()["error"]


def test_streaming_passes_lines_through(served: Served) -> None:
    doc = {"inputs": "once upon", "parameters": {"max_new_tokens": 5, "stream": True}}
    before = requests_total(served, "text-generation", "200")
    with httpx.stream(
        "POST", url(served, "text-generation"), json=doc, headers=served.headers, timeout=60
    ) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/x-ndjson")
        lines = [json.loads(line) for line in r.iter_lines() if line.strip()]
    assert lines[-1]["done"] is True and lines[-1]["completion_tokens"] >= 1
    assert all("token" in line for line in lines[:-1])
    assert "".join(line["token"] for line in lines[:-1]) == lines[-1]["generated_text"]
    assert requests_total(served, "text-generation", "200") == before + 1


def test_tritonclient_binary_tensors_get_a_400_that_says_what_to_change(served: Served) -> None:
    import numpy as np
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(served.url.removeprefix("http://"))
    text = httpclient.InferInput("text", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"the refund is late"], dtype=object))  # binary default
    with pytest.raises(InferenceServerException) as e:
        client.infer(model_name(TEXT), [text], headers=served.headers)
    assert e.value.status() == "400" and "binary_data=False" in str(e.value.message())
