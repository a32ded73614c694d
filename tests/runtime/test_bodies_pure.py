"""bodies.normalise: every accepted request shape -> the canonical payload, and the 400s that
say what to send."""

from __future__ import annotations

import base64
import gzip
import json
import zlib

import pytest
from tmo_runtime.gateway import oip
from tmo_runtime.gateway.bodies import (
    ClientError,
    decode_content_encoding,
    lenient_b64decode,
    normalise,
    normalise_instances,
    parse_multipart,
    sniff,
)

from tests.runtime.helpers import png_bytes, wav_bytes

FORM = "application/x-www-form-urlencoded"  # what curl -d / --data-binary send by default
TC = "text-classification"
IMG = "image-classification"
ASR = "speech-recognition"
GEN = "text-generation"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def refused(task: str, ctype: str | None, body: bytes, status: int = 400) -> str:
    with pytest.raises(ClientError) as e:
        normalise(task, ctype, body, url="http://h/predictions/m")
    assert e.value.status == status
    return e.value.message


@pytest.mark.parametrize(
    ("ctype", "body"),
    [
        ("application/json", b'{"inputs": "the refund is late"}'),
        ("application/json; charset=utf-8", b'{"text": "the refund is late"}'),
        (FORM, b'{"sentence": "the refund is late"}'),  # curl -d '{...}' without -H
        (FORM, b"the refund is late"),  # curl -d 'text'
        (None, b"the refund is late"),  # curl -T file.txt
        ("text/plain", b"the refund is late"),
        (FORM, b"inputs=the+refund+is+late"),  # --data-urlencode inputs=...
        ("application/json", b'"the refund is late"'),
        ("application/json", b'{"data": "the refund is late", "id": "r1"}'),
    ],
)
def test_text_shapes(ctype: str | None, body: bytes) -> None:
    assert normalise(TC, ctype, body) == {"inputs": "the refund is late"}


def test_lists_stay_lists_and_parameters_pass_through() -> None:
    doc = {"inputs": ["a", "b"], "parameters": {"top_k": 1}}
    assert normalise(TC, "application/json", json.dumps(doc).encode()) == doc
    assert normalise(TC, None, b'["a", "b"]') == {"inputs": ["a", "b"]}
    v1 = normalise_instances(TC, b'{"instances": ["a", {"text": "b"}]}')
    assert v1 == {"inputs": ["a", "b"]}


def test_text_that_only_looks_like_json_is_text() -> None:
    assert normalise(TC, FORM, b"[citation needed] late") == {"inputs": "[citation needed] late"}


def test_generation_messages_and_prompt() -> None:
    msgs = [{"role": "user", "content": "hi"}]
    doc = {"messages": msgs, "parameters": {"max_new_tokens": 3}}
    assert normalise(GEN, "application/json", json.dumps(doc).encode()) == {
        "inputs": {"messages": msgs},
        "parameters": {"max_new_tokens": 3},
    }
    assert normalise(GEN, None, b'{"prompt": "once"}') == {"inputs": "once"}
    assert "messages[0]" in refused(GEN, None, b'{"messages": ["hi"]}')
    assert "text-generation" in refused(TC, None, b'{"messages": [{"role": "u", "content": "x"}]}')


def test_raw_image_any_content_type_is_base64() -> None:
    png = png_bytes()
    for ctype in (FORM, None, "image/png", "application/octet-stream", "application/json"):
        assert normalise(IMG, ctype, png) == {"inputs": b64(png)}


@pytest.mark.parametrize(
    "encoded",
    [
        "data:image/png;base64," + b64(png_bytes()),
        "\n".join(b64(png_bytes())[i : i + 76] for i in range(0, len(b64(png_bytes())), 76)),
        base64.urlsafe_b64encode(png_bytes()).decode().rstrip("="),
    ],
    ids=["data-uri", "line-wrapped", "urlsafe-unpadded"],
)
def test_lenient_base64(encoded: str) -> None:
    png = png_bytes()
    assert lenient_b64decode(encoded) == png
    assert normalise(IMG, "application/json", json.dumps({"inputs": encoded}).encode()) == {
        "inputs": b64(png)
    }
    assert normalise(IMG, FORM, encoded.encode()) == {"inputs": b64(png)}  # -d @cat.b64


def test_speech_shapes() -> None:
    wav = wav_bytes(0.1)
    assert normalise(ASR, FORM, wav) == {"inputs": b64(wav)}
    doc = {"array": [0.0, 0.5], "sampling_rate": 8000}
    want = {"inputs": {"array": [0.0, 0.5], "sampling_rate": 8000}}
    assert normalise(ASR, "application/json", json.dumps(doc).encode()) == want
    assert normalise(ASR, None, json.dumps({"inputs": doc}).encode()) == want
    assert "MP3" in refused(ASR, None, b"ID3\x03\x00" + b"\0" * 50)
    assert "array[1]" in refused(ASR, None, b'{"array": [0.1, "x"]}')


def test_multipart_any_field_name() -> None:
    png = png_bytes()
    boundary = "XyZ"
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="cat.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + png
        + f"\r\n--{boundary}--\r\n".encode()
    )
    ctype = f"multipart/form-data; boundary={boundary}"
    assert parse_multipart(body, boundary)[0].data == png
    assert normalise(IMG, ctype, body) == {"inputs": b64(png)}
    text = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="lang"\r\n\r\nen\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="text"\r\n\r\nthe refund\r\n'
        f'--{boundary}\r\nContent-Disposition: form-data; name="parameters"\r\n\r\n'
        f'{{"top_k": 1}}\r\n--{boundary}--\r\n'
    ).encode()
    assert normalise(TC, ctype, text) == {"inputs": "the refund", "parameters": {"top_k": 1}}


def test_refusals_say_what_to_send() -> None:
    empty = refused(TC, "application/json", b"  ")
    assert "empty" in empty and "curl" in empty and "http://h/predictions/m" in empty
    bad = refused(TC, "application/json", b'{"inputs": "x",}')
    assert "line 1 column" in bad and '{"inputs": "the refund is late"}' in bad
    assert "line 1" in refused(TC, FORM, b'{"inputs": ')  # braces must parse
    assert "parameters" in refused(TC, None, b'{"inputs": "x", "parameters": 5}')
    assert "inputs[1]" in refused(TC, None, b'{"inputs": ["x", null]}')
    assert "inputs[0] is empty" in refused(TC, None, b'{"inputs": ["  "]}')
    assert "'nothing'" in refused(TC, None, b'{"nothing": 1}')
    assert "'colour'" in refused(TC, None, b'{"inputs": "x", "colour": 1}')
    assert "not UTF-8" in refused(TC, FORM, b"\xff\xfe\x00bad")
    assert "URL" in refused(IMG, None, b'{"inputs": "https://x/cat.jpg"}')
    assert "not base64" in refused(IMG, None, b'{"inputs": "***"}')
    assert "--data-binary @cat.jpg" in refused(IMG, None, b"")
    assert "/v2/models" in refused(TC, None, b'{"inputs": [{"name": "t", "datatype": "BYTES"}]}')
    assert "nested too deeply" in refused(TC, "application/json", b"[" * 100_000)


def test_content_encoding() -> None:
    raw = b'{"inputs": "x"}'
    assert decode_content_encoding("gzip", gzip.compress(raw), 100) == raw
    assert decode_content_encoding("deflate", zlib.compress(raw), 100) == raw
    assert decode_content_encoding(None, raw, 100) == raw
    with pytest.raises(ClientError) as e:
        decode_content_encoding("br", raw, 100)
    assert e.value.status == 415 and "gzip" in e.value.message
    with pytest.raises(ClientError) as e:
        decode_content_encoding("gzip", gzip.compress(b"x" * 10_000), 100)
    assert e.value.status == 413


def test_sniff() -> None:
    assert sniff(png_bytes()) == "PNG"
    assert sniff(wav_bytes(0.1)) == "WAV"
    assert sniff(b"\xff\xd8\xff\xe0rest") == "JPEG"
    assert sniff(b"RIFF\0\0\0\0WEBPVP8 ") == "WebP"
    assert sniff(b"hello") is None


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["a"]}]}, None),
        (
            {
                "inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": ["a"]}],
                "parameters": 5,
            },
            "parameters",
        ),
        (
            {
                "inputs": [
                    {
                        "name": "t",
                        "datatype": "BYTES",
                        "shape": [1],
                        "data": ["a"],
                        "parameters": [1],
                    }
                ]
            },
            "inputs[0].parameters",
        ),
        ({"inputs": [{"name": "t", "datatype": "FP32", "shape": [1], "data": [None]}]}, "data[0]"),
        ({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": [""]}]}, "data[0]"),
        ({"inputs": [{"name": "t", "datatype": "BYTES", "shape": [1], "data": [7]}]}, "data[0]"),
        ({"inputs": [{"name": 3, "datatype": "BYTES", "shape": [1], "data": ["a"]}]}, "name"),
        ({"inputs": [{"name": "t", "datatype": "STR", "shape": [1], "data": ["a"]}]}, "datatype"),
        ({"inputs": "a"}, "inputs"),
        ([1], "JSON object"),
    ],
)
def test_oip_type_errors_name_the_field(body: object, field: str | None) -> None:
    if field is None:
        assert oip.to_handler_payload(TC, body)["inputs"] == ["a"]
        return
    with pytest.raises(oip.OipError, match=field.replace("[", r"\[").replace("]", r"\]")):
        oip.to_handler_payload(TC, body)


def test_oip_deeply_nested_data_is_flattened_not_a_crash() -> None:
    deep: object = ["a"]
    for _ in range(5000):
        deep = [deep]
    tensor = {"name": "t", "datatype": "BYTES", "shape": [1], "data": deep}
    assert oip.to_handler_payload(TC, {"inputs": [tensor]})["inputs"] == ["a"]


def test_oip_explain() -> None:
    tensor = {"name": "t", "datatype": "BYTES", "shape": [1], "data": ["a"]}
    body = {"inputs": [tensor], "parameters": {"explain": True, "layer": -1}}
    assert oip.explain_requested(body)
    assert oip.to_handler_payload(TC, body)["parameters"] == {"layer": -1}
    two = {
        "inputs": [{**tensor, "shape": [2], "data": ["a", "b"]}],
        "parameters": body["parameters"],
    }
    with pytest.raises(oip.OipError, match="one input element"):
        oip.to_handler_payload(TC, two)
    out = oip.explain_outputs({"tokens": ["a", "b"], "attention": [[1, 0], [0.5, 0.5]]})
    assert out[0]["shape"] == [2] and out[1] == {
        "name": "attention",
        "datatype": "FP32",
        "shape": [2, 2],
        "data": [1.0, 0.0, 0.5, 0.5],
    }
