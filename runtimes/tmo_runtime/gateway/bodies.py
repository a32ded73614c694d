"""What people send to `/predictions/NAME`, turned into the one canonical JSON the handlers take.

Pure functions, no I/O. The canonical shape (the request contract) is
`{"inputs": ITEM | [ITEM, ...], "parameters": {...}}`; ITEM is a non-empty string (text tasks, a
generation prompt), `{"messages": [...]}` (a generation chat), standard base64 (image and audio
bytes) or `{"array": [numbers], "sampling_rate": int}` (speech as samples).

Accepted: JSON in the TorchServe/Hugging Face shape and its common variants, KServe v1
`instances`, raw bodies with any or no content type (what `curl --data-binary`, `-T` and `-d`
send), and multipart forms with any field name. Everything a client gets wrong is a
`ClientError` whose message names the field, says what is allowed, and shows one request that
works for the task.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import urllib.parse
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

TEXT_TASKS = frozenset(
    {"text-classification", "token-classification", "feature-extraction", "summarization"}
)
IMAGE_TASK = "image-classification"
SPEECH_TASK = "speech-recognition"
GENERATION_TASK = "text-generation"
MEDIA_TASKS = frozenset({IMAGE_TASK, SPEECH_TASK})

# Top-level JSON keys that carry the input, beside "inputs" (Hugging Face / TorchServe habits).
_INPUT_KEYS: tuple[str, ...] = (
    "inputs",
    "instances",
    "messages",
    "text",
    "sentence",
    "prompt",
    "image",
    "audio",
)
_INPUT_KEYS += ("data", "array")
# Keys clients send alongside that do not change the answer (request ids, HF's `options`).
_IGNORED_KEYS = frozenset({"id", "options", "parameters", "sampling_rate"})
# Multipart text fields that name the input for text tasks, in order of preference.
_TEXT_FIELDS = ("inputs", "text", "prompt", "data")


class ClientError(Exception):
    """The client's mistake: answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Invalid(ValueError):
    """A field of an otherwise readable request is wrong; the caller adds the example."""


# -- examples -------------------------------------------------------------------------------

_JSON = "-H 'Content-Type: application/json'"


def example(task: str, url: str = "http://HOST/predictions/NAME") -> str:
    """One request that works for the task, as a curl line."""
    if task == IMAGE_TASK:
        return f"curl --data-binary @cat.jpg -H 'Content-Type: image/jpeg' {url}"
    if task == SPEECH_TASK:
        return f"curl --data-binary @clip.wav -H 'Content-Type: audio/wav' {url}"
    if task == GENERATION_TASK:
        doc = '{"inputs": "Once upon a time", "parameters": {"max_new_tokens": 32}}'
        return f"curl {_JSON} -d '{doc}' {url}"
    return f'curl {_JSON} -d \'{{"inputs": "the refund is late"}}\' {url}'


def v1_example(task: str, url: str = "http://HOST/v1/models/NAME:predict") -> str:
    if task in MEDIA_TASKS:
        item = '{"b64": "<base64 of the file>"}'
    elif task == GENERATION_TASK:
        item = '"Once upon a time"'
    else:
        item = '"the refund is late"'
    return f"curl {_JSON} -d '{{\"instances\": [{item}]}}' {url}"


def _with_example(message: str, ex: str) -> str:
    return f"{message}. Example: {ex}"


# -- content headers ------------------------------------------------------------------------


def media_type(content_type: str | None) -> tuple[str, dict[str, str]]:
    """('type/subtype' lower-cased, {param: value}) of a Content-Type header."""
    if not content_type:
        return "", {}
    head, *rest = content_type.split(";")
    params: dict[str, str] = {}
    for p in rest:
        key, sep, value = p.partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return head.strip().lower(), params


def is_json_type(mtype: str) -> bool:
    return mtype in ("application/json", "text/json") or mtype.endswith("+json")


def decode_content_encoding(encoding: str | None, body: bytes, limit: int) -> bytes:
    """The body behind Content-Encoding (gzip, deflate, identity); 415 for others, 413 when
    it inflates beyond `limit` bytes (the same cap as a plain body)."""
    codings = [c.strip().lower() for c in (encoding or "").split(",") if c.strip()]
    for coding in reversed(codings):  # applied in order, so undone last-first
        if coding == "identity":
            continue
        if coding not in ("gzip", "x-gzip", "deflate"):
            raise ClientError(
                415,
                f"Content-Encoding {coding!r} is not supported; send gzip, deflate or an "
                "uncompressed body",
            )
        wbits = 16 + zlib.MAX_WBITS if coding != "deflate" else zlib.MAX_WBITS
        body = _inflate(body, wbits, limit, coding)
    return body


def _inflate(body: bytes, wbits: int, limit: int, coding: str) -> bytes:
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(body, limit + 1)
    except zlib.error:
        if wbits != zlib.MAX_WBITS:
            raise ClientError(400, f"the body is not valid {coding} data") from None
        # `deflate` is raw deflate in some clients, zlib-wrapped in the RFC: accept both.
        try:
            d = zlib.decompressobj(-zlib.MAX_WBITS)
            out = d.decompress(body, limit + 1)
        except zlib.error:
            raise ClientError(400, f"the body is not valid {coding} data") from None
    if len(out) > limit:
        raise ClientError(413, f"request body larger than {limit} bytes once decompressed")
    return out


# -- binary sniffing and base64 -------------------------------------------------------------

_IMAGE_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"),
    (b"\xff\xd8\xff", "JPEG"),
    (b"GIF87a", "GIF"),
    (b"GIF89a", "GIF"),
    (b"BM", "BMP"),
    (b"II*\x00", "TIFF"),
    (b"MM\x00*", "TIFF"),
)
# Audio the handler cannot read, named so the message can say how to convert it.
_OTHER_AUDIO: tuple[tuple[bytes, str], ...] = (
    (b"ID3", "MP3"),
    (b"\xff\xfb", "MP3"),
    (b"\xff\xf3", "MP3"),
    (b"fLaC", "FLAC"),
    (b"OggS", "Ogg"),
)


def sniff(data: bytes) -> str | None:
    """The file format the leading bytes show: PNG/JPEG/GIF/WebP/BMP/TIFF, WAV, or an audio
    format the speech handler does not read (MP3/FLAC/Ogg); None when unknown."""
    if data[:4] == b"RIFF" and data[8:12] == b"WAVE":
        return "WAV"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    for magic, name in (*_IMAGE_MAGIC, *_OTHER_AUDIO):
        if data.startswith(magic):
            return name
    return None


_DATA_URI = re.compile(r"^data:([^,;]*)((?:;[^,;]*)*),", re.IGNORECASE)
_B64_CHARS = re.compile(r"^[A-Za-z0-9+/_\-]*={0,2}$")


def lenient_b64decode(text: str) -> bytes:
    """Base64 as people paste it: a data URI, line-wrapped, URL-safe, padding missing."""
    s = text.strip()
    m = _DATA_URI.match(s)
    if m:
        if ";base64" not in m.group(2).lower():
            return urllib.parse.unquote_to_bytes(s[m.end() :])
        s = s[m.end() :]
    s = re.sub(r"\s+", "", s)
    if not s or not _B64_CHARS.match(s):
        raise Invalid("is not base64")
    s = s.rstrip("=").replace("-", "+").replace("_", "/")
    if len(s) % 4 == 1:
        raise Invalid("is not base64 (its length is not that of any base64 text)")
    try:
        return base64.b64decode(s + "=" * (-len(s) % 4), validate=True)
    except binascii.Error as e:
        raise Invalid(f"is not base64 ({e})") from None


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


# -- multipart ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Part:
    name: str
    filename: str | None
    content_type: str
    data: bytes


def parse_multipart(body: bytes, boundary: str) -> list[Part]:
    """multipart/form-data parts (RFC 7578), tolerant of bare LF line ends."""
    if not boundary:
        raise Invalid("multipart body without a boundary in its Content-Type")
    delimiter = b"--" + boundary.encode("latin-1")
    parts: list[Part] = []
    chunks = body.split(delimiter)
    for chunk in chunks[1:]:
        if chunk.startswith(b"--"):
            break  # the closing delimiter
        chunk = chunk[2:] if chunk.startswith(b"\r\n") else chunk.lstrip(b"\n")
        head, sep, data = chunk.partition(b"\r\n\r\n")
        if not sep:
            head, sep, data = chunk.partition(b"\n\n")
        if not sep:
            continue
        if data.endswith(b"\r\n"):
            data = data[:-2]
        elif data.endswith(b"\n"):
            data = data[:-1]
        headers: dict[str, str] = {}
        for line in head.decode("utf-8", "replace").splitlines():
            key, _, value = line.partition(":")
            headers[key.strip().lower()] = value.strip()
        _, disp = media_type(
            "form-data; " + headers.get("content-disposition", "").partition(";")[2]
        )
        parts.append(
            Part(disp.get("name", ""), disp.get("filename"), headers.get("content-type", ""), data)
        )
    if not parts:
        raise Invalid("multipart body has no parts")
    return parts


def _choose_part(task: str, parts: list[Part]) -> Part:
    """For text tasks a field named inputs/text/prompt/data, else the first file, else the first
    field; for image and speech the first file, else the first field."""
    fields = [p for p in parts if p.name != "parameters"]
    if not fields:
        raise Invalid("the form has only a parameters field; add the input as a file or field")
    if task not in MEDIA_TASKS:
        for name in _TEXT_FIELDS:
            for p in fields:
                if p.name == name and p.filename is None:
                    return p
    files = [p for p in fields if p.filename is not None]
    return files[0] if files else fields[0]


# -- items ----------------------------------------------------------------------------------


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise Invalid(f"{where} must be a string (the text); got {_kind(value)}")
    if not value.strip():
        raise Invalid(f"{where} is empty; send the text to analyse")
    return value


def _messages(value: Any, where: str) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise Invalid(
            f'{where} must be a non-empty list of {{"role": ..., "content": ...}}; '
            f"got {_kind(value)}"
        )
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise Invalid(f'{where}[{i}] must be {{"role": "user", "content": "..."}}')
        if not isinstance(m.get("content"), str):
            raise Invalid(f"{where}[{i}].content must be a string; got {_kind(m.get('content'))}")
    return list(value)


def _binary(value: Any, where: str, task: str) -> str:
    """Standard base64 of an image or WAV given as (lenient) base64 text."""
    what = "image" if task == IMAGE_TASK else "audio"
    if isinstance(value, dict):
        for key in ("b64", "data", "image" if task == IMAGE_TASK else "audio", "inputs"):
            if key in value:
                return _binary(value[key], f"{where}.{key}", task)
        raise Invalid(f'{where} must be base64 text or {{"b64": "<base64>"}}; got {_kind(value)}')
    if not isinstance(value, str):
        raise Invalid(f"{where} must be the {what} file as base64 text; got {_kind(value)}")
    if re.match(r"^\s*(https?|s3|gs|file)://", value):
        raise Invalid(f"{where} is a URL; the gateway does not fetch files, send the {what} bytes")
    if not value.strip():
        raise Invalid(f"{where} is empty; send the {what} file as base64 text")
    try:
        data = lenient_b64decode(value)
    except Invalid as e:
        raise Invalid(f"{where} {e}: send the {what} file's bytes in base64") from None
    if not data:
        raise Invalid(f"{where} is empty; send the {what} file as base64 text")
    _check_format(data, task, where)
    return b64(data)


def _check_format(data: bytes, task: str, where: str) -> None:
    kind = sniff(data)
    if task == SPEECH_TASK and kind not in (None, "WAV"):
        raise Invalid(
            f"{where} is {kind}; speech-recognition reads PCM WAV "
            "(convert: ffmpeg -i in.mp3 -ac 1 -ar 16000 out.wav)"
        )
    if task == IMAGE_TASK and kind == "WAV":
        raise Invalid(f"{where} is a WAV file; image-classification takes an image")


def _audio_array(value: dict[str, Any], where: str, rate: Any) -> dict[str, Any]:
    array = value.get("array")
    if not isinstance(array, list) or not array:
        raise Invalid(f"{where}.array must be a non-empty list of numbers (the samples)")
    for i, x in enumerate(array):
        if not isinstance(x, int | float) or isinstance(x, bool):
            raise Invalid(f"{where}.array[{i}] must be a number; got {_kind(x)}")
    out: dict[str, Any] = {"array": array}
    rate = value.get("sampling_rate", rate)
    if rate is not None:
        if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
            raise Invalid(f"{where}.sampling_rate must be a positive integer (Hz); got {rate!r}")
        out["sampling_rate"] = rate
    return out


def canonical_item(task: str, value: Any, where: str, rate: Any = None) -> Any:
    """One input element in the contract's ITEM shape, or Invalid naming `where`."""
    if task in MEDIA_TASKS:
        if task == SPEECH_TASK and isinstance(value, dict) and "array" in value:
            return _audio_array(value, where, rate)
        return _binary(value, where, task)
    if isinstance(value, dict):
        if task == GENERATION_TASK and "messages" in value:
            return {"messages": _messages(value["messages"], f"{where}.messages")}
        keys = ("text", "sentence", "prompt", "data", "inputs")
        for key in keys:
            if key in value:
                return _text(value[key], f"{where}.{key}")
        allowed = '"text", or "messages"' if task == GENERATION_TASK else '"text"'
        raise Invalid(f"{where} must be a string or an object with {allowed}; got {_kind(value)}")
    return _text(value, where)


def canonical_inputs(task: str, value: Any, where: str, rate: Any = None) -> Any:
    """ITEM or [ITEM, ...] (a list keeps being a list: its answer is a list)."""
    if isinstance(value, list):
        if not value:
            raise Invalid(f"{where} is an empty list; send at least one input")
        if task == SPEECH_TASK and all(isinstance(x, int | float) for x in value):
            # A bare list of samples: one clip, not a batch of numbers.
            return _audio_array({"array": value}, where, rate)
        return [canonical_item(task, v, f"{where}[{i}]", rate) for i, v in enumerate(value)]
    return canonical_item(task, value, where, rate)


def _parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(
            f'parameters must be an object, e.g. {{"parameters": {{...}}}}; got {_kind(value)}'
        )
    return dict(value)


def canonical_document(task: str, doc: Any) -> dict[str, Any]:
    """A decoded JSON body in any accepted shape -> the canonical payload."""
    if not isinstance(doc, dict):
        if isinstance(doc, str | list):  # a bare input or list of inputs
            return {"inputs": canonical_inputs(task, doc, "inputs")}
        raise Invalid(f'the body must be a JSON object like {{"inputs": ...}}; got {_kind(doc)}')
    params = _parameters(doc.get("parameters"))
    present = [k for k in _INPUT_KEYS if k in doc]
    if not present:
        keys = ", ".join(repr(k) for k in doc) or "none"
        raise Invalid(f'expected the input under "inputs" (keys sent: {keys})')
    # {"array": [...], "sampling_rate": n} is one key pair, not two inputs.
    if len(present) > 1:
        raise Invalid(f"send the input under one key; got {', '.join(present)}")
    unknown = sorted(set(doc) - set(_INPUT_KEYS) - _IGNORED_KEYS)
    if unknown:
        raise Invalid(
            f"unknown field {unknown[0]!r}; a request has inputs (or one of "
            f"{', '.join(_INPUT_KEYS[1:])}), parameters and optionally id"
        )
    key = present[0]
    value = doc[key]
    rate = doc.get("sampling_rate")
    if rate is not None and task != SPEECH_TASK:
        raise Invalid("sampling_rate is for speech-recognition")
    if key == "messages":
        if task != GENERATION_TASK:
            raise Invalid("messages are for text-generation models; send inputs")
        inputs: Any = {"messages": _messages(value, "messages")}
    elif key == "array":
        if task != SPEECH_TASK:
            raise Invalid("array is for speech-recognition models; send inputs")
        inputs = _audio_array(doc, "body", rate)
    elif key == "instances":
        if not isinstance(value, list):
            raise Invalid(f"instances must be a list; got {_kind(value)}")
        inputs = canonical_inputs(task, value, "instances", rate)
    elif _is_oip_tensors(value):
        raise Invalid(
            "this is an Open Inference Protocol v2 body; send it to /v2/models/NAME/infer"
        )
    else:
        inputs = canonical_inputs(task, value, key, rate)
    out: dict[str, Any] = {"inputs": inputs}
    if params:
        out["parameters"] = params
    return out


def _is_oip_tensors(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, dict) and "datatype" in t for t in value)
    )


def _kind(value: Any) -> str:
    return {
        type(None): "null",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


# -- whole bodies ---------------------------------------------------------------------------


def parse_json(body: bytes) -> Any:
    """JSON, or Invalid with the parser's position."""
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise Invalid(f"the body is not UTF-8 JSON (byte {e.start} is not UTF-8)") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise Invalid(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise Invalid("malformed JSON: nested too deeply") from None


def _raw_text(body: bytes, where: str = "the body") -> str:
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise Invalid(
            f"{where} is not UTF-8 text (byte {e.start}); this model takes text"
        ) from None
    if not text.strip():
        raise Invalid(f"{where} is empty; send the text to analyse")
    return text


def _raw_media(task: str, body: bytes, where: str = "the body") -> str:
    """A raw upload: file bytes (sniffed), or base64 text / a data URI of them."""
    if sniff(body) is None and body.strip():
        try:
            text = body.decode("ascii")
        except UnicodeDecodeError:
            text = ""
        if text.strip():
            try:
                decoded = lenient_b64decode(text)
            except Invalid:
                decoded = b""
            if decoded and (sniff(decoded) is not None or text.lstrip().startswith("data:")):
                body = decoded
    if not body.strip():
        what = "image" if task == IMAGE_TASK else "audio"
        raise Invalid(f"{where} is empty; send the {what} file")
    _check_format(body, task, where)
    # Unknown formats still go to the handler: the model's reader may know them.
    return b64(body)


def _form_text(body: bytes) -> str | None:
    """`curl -d 'inputs=...'` / `--data-urlencode text=...`: the field's value; None when the
    body is not such a form (then it is the text itself)."""
    try:
        text = body.decode("ascii")
    except UnicodeDecodeError:
        return None
    name, sep, _ = text.partition("=")
    if not sep or name not in _TEXT_FIELDS:
        return None
    fields = urllib.parse.parse_qs(text, keep_blank_values=True)
    values = fields.get(name)
    return values[0] if values else None


def _raw_body(task: str, mtype: str, body: bytes) -> dict[str, Any]:
    if task in MEDIA_TASKS:
        return {"inputs": _raw_media(task, body)}
    if mtype == "application/x-www-form-urlencoded":
        form = _form_text(body)
        if form is not None:
            return {"inputs": _text(form, "the form field")}
    return {"inputs": _raw_text(body)}


def _multipart(task: str, params: dict[str, str], body: bytes) -> dict[str, Any]:
    parts = parse_multipart(body, params.get("boundary", ""))
    part = _choose_part(task, parts)
    where = f"form field {part.name!r}"
    out: dict[str, Any]
    if task in MEDIA_TASKS:
        out = {"inputs": _raw_media(task, part.data, where)}
    elif is_json_type(media_type(part.content_type)[0]):
        out = canonical_document(task, parse_json(part.data))
    else:
        out = {"inputs": _raw_text(part.data, where)}
    extra = [p for p in parts if p.name == "parameters"]
    if extra:
        out["parameters"] = _parameters(parse_json(extra[0].data))
    return out


def _looks_like_json(body: bytes) -> bool:
    head = body.lstrip()[:1]
    return head in (b"{", b"[", b'"')


def normalise(
    task: str,
    content_type: str | None,
    body: bytes,
    *,
    url: str = "http://HOST/predictions/NAME",
) -> dict[str, Any]:
    """The canonical payload for a `/predictions` request body, or ClientError (400) whose
    message names what is wrong and shows a request that works (`url` goes into it)."""
    return _guard(lambda: _normalise(task, content_type, body), example(task, url))


def normalise_instances(
    task: str, body: bytes, *, url: str = "http://HOST/v1/models/NAME:predict"
) -> dict[str, Any]:
    """A KServe v1 `{"instances": [...], "parameters"?}` body -> canonical (inputs a list)."""

    def run() -> dict[str, Any]:
        if not body.strip():
            raise Invalid("the body is empty")
        doc = parse_json(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("instances"), list):
            raise Invalid('expected {"instances": [...]}')
        return canonical_document(task, doc)

    return _guard(run, v1_example(task, url))


def _guard(run: Callable[[], dict[str, Any]], ex: str) -> dict[str, Any]:
    try:
        return run()
    except Invalid as e:
        raise ClientError(400, _with_example(str(e), ex)) from None
    except ClientError as e:
        raise ClientError(e.status, _with_example(e.message, ex)) from None


def _normalise(task: str, content_type: str | None, body: bytes) -> dict[str, Any]:
    if not body.strip():
        raise Invalid("the body is empty")
    mtype, params = media_type(content_type)
    if mtype.startswith("multipart/"):
        return _multipart(task, params, body)
    # Files first: image/audio bytes are never JSON, whatever the header says.
    if task in MEDIA_TASKS and sniff(body) is not None:
        return {"inputs": _raw_media(task, body)}
    if is_json_type(mtype):
        return canonical_document(task, parse_json(body))
    if mtype == "text/plain" and task not in MEDIA_TASKS:
        return {"inputs": _raw_text(body)}
    if _looks_like_json(body):
        # `curl -d '{"inputs": ...}'` sends JSON as a form: read it as JSON. A text that only
        # starts like JSON ("[citation needed] ...") stays text, but "{...}" must parse.
        try:
            doc = parse_json(body)
        except Invalid:
            if body.lstrip().startswith(b"{") or task in MEDIA_TASKS:
                raise
        else:
            return canonical_document(task, doc)
    return _raw_body(task, mtype, body)
