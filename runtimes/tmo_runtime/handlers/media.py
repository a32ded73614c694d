"""Image classification and speech recognition.

Both read untrusted bytes: an image is opened and fully loaded, a WAV parsed, an array checked,
while the caller's request is decoded, so an unreadable one is that caller's 400 and never
fails the batched forward pass of the others.
"""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from typing import Any

from tmo_runtime.handlers.common import (
    BadRequest,
    Request,
    Settings,
    binary_item,
    check_parameters,
    integer,
    load_model,
    number,
    split_inputs,
)

IMAGE_PARAMETERS = {"top_k": integer(lo=1)}
DEFAULT_TOP_K = 5


def open_image(data: bytes) -> Any:
    """The image as RGB, fully decoded now: PIL reads lazily, and a truncated file would only
    fail later, inside the batch."""
    from PIL import Image

    if not data:
        raise BadRequest(
            "the image is empty; send the image file's bytes (PNG, JPEG, ...), "
            'base64-encoded in {"inputs": "<base64>"}'
        )
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("RGB")
    except Image.DecompressionBombError as e:
        raise BadRequest(f"the image has too many pixels to decode safely: {e}") from e
    except Exception as e:
        # UnidentifiedImageError, OSError("image file is truncated"), SyntaxError from a broken
        # PNG chunk...: whatever PIL raises on these bytes, the bytes are the problem.
        raise BadRequest(
            f"not an image that can be read ({type(e).__name__}: {e}); send a complete PNG, "
            "JPEG, GIF, BMP or WebP file"
        ) from e


def decode_image(payload: Any) -> Request:
    req = split_inputs(payload, ("image",))
    req.parameters = check_parameters(req.parameters, IMAGE_PARAMETERS)
    req.items = [open_image(binary_item(v)) for v in req.items]
    return req


class ImageClassification:
    decode = staticmethod(decode_image)

    def __init__(self, settings: Settings) -> None:
        import transformers

        tf: Any = transformers

        self.settings = settings
        self.processor = tf.AutoImageProcessor.from_pretrained(settings.model_path)
        self.model = load_model(transformers.AutoModelForImageClassification, settings)

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        batch = self.processor(images=items, return_tensors="pt").to(self.settings.device)
        pixel_values = batch["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            probs = self.model(pixel_values=pixel_values).logits.float().softmax(-1).cpu()
        labels = self.model.config.id2label
        out = []
        for row, p in zip(probs, params, strict=True):
            best = int(row.argmax())
            top = row.topk(min(p.get("top_k", DEFAULT_TOP_K), row.shape[0]))
            out.append(
                {
                    "label": labels[best],
                    "score": float(row[best]),
                    "top": [
                        {"label": labels[int(i)], "score": float(s)}
                        for s, i in zip(top.values, top.indices, strict=True)
                    ],
                }
            )
        return out


def wav_to_float(data: bytes) -> tuple[Any, int]:
    """PCM WAV (8/16/32-bit, mono or first channel) to float32 samples in [-1, 1]."""
    import numpy as np

    if not data:
        raise BadRequest(_EMPTY_AUDIO)
    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            frames = w.readframes(w.getnframes())
    except Exception as e:  # wave.Error, EOFError, struct.error: the bytes are not a WAV
        raise BadRequest(
            f"audio must be a PCM WAV file ({type(e).__name__}: {e}); or send "
            '{"inputs": {"array": [floats], "sampling_rate": 16000}}'
        ) from e
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise BadRequest(f"unsupported WAV sample width {8 * width} bits; send 8, 16 or 32-bit PCM")
    frame = width * channels
    frames = frames[: len(frames) // frame * frame]  # a cut-off last frame is dropped
    samples = np.frombuffer(frames, dtype=dtype).reshape(-1, channels)[:, 0].astype(np.float32)
    if samples.size == 0:
        raise BadRequest(_EMPTY_AUDIO)
    if width == 1:
        samples = (samples - 128.0) / 128.0
    else:
        samples /= float(2 ** (8 * width - 1))
    return samples, rate


_EMPTY_AUDIO = (
    "the audio is empty; send a PCM WAV file base64-encoded in "
    '{"inputs": "<base64>"}, or {"inputs": {"array": [floats], "sampling_rate": 16000}}'
)


def audio_array(array: Any) -> Any:
    """A JSON list of numbers as float32 samples; anything else is the caller's 400."""
    import numpy as np

    what = '"array" must be a non-empty list of numbers (the samples, e.g. in [-1, 1])'
    if not isinstance(array, list) or not array:
        raise BadRequest(f"{what}; got {type(array).__name__} {str(array)[:40]}")
    # Only JSON numbers are samples: numpy would read "1" or true as one too.
    bad = next((x for x in array if type(x) not in (int, float)), None)
    if bad is not None:
        raise BadRequest(f"{what}; got the element {bad!r}")
    samples = np.asarray(array, dtype=np.float32)
    if not np.isfinite(samples).all():
        raise BadRequest(f"{what}; got NaN or infinity")
    return samples


SAMPLING_RATE = integer(1000, 384000, hint=" (samples per second of the array)")
SPEECH_PARAMETERS = {
    "sampling_rate": SAMPLING_RATE,
    "chunk_length_s": number(0.5, 600.0),
    "stride_length_s": number(0.0, 300.0),
}
DEFAULT_CHUNK_S = 10.0


def decode_audio(payload: Any) -> Request:
    """`{"inputs": "<base64 wav>" | {"array": [...], "sampling_rate": n} | [...]}`, and the older
    top-level `{"array": [...], "sampling_rate": n}`."""
    if isinstance(payload, dict) and "array" in payload and "inputs" not in payload:
        item = {k: payload[k] for k in ("array", "sampling_rate") if k in payload}
        payload = {"inputs": item, "parameters": payload.get("parameters")}
    req = split_inputs(payload, ("audio",))
    params = check_parameters(req.parameters, SPEECH_PARAMETERS)
    chunk = params.setdefault("chunk_length_s", DEFAULT_CHUNK_S)
    stride = params.setdefault("stride_length_s", chunk / 6)
    if 2 * stride >= chunk:
        raise BadRequest(
            f"parameters.stride_length_s ({stride}) must be less than half of chunk_length_s "
            f"({chunk}): each window keeps its middle and drops stride_length_s on each side"
        )
    arrays = [v for v in req.items if isinstance(v, dict)]
    if "sampling_rate" in params and not arrays:
        raise BadRequest(
            "parameters.sampling_rate is for the array form "
            '({"inputs": {"array": [...]}}); a WAV file carries its own rate'
        )
    items = []
    for v in req.items:
        if isinstance(v, dict):
            unknown = sorted(set(v) - {"array", "sampling_rate"})
            if unknown or "array" not in v:
                raise BadRequest(
                    'an audio array is {"array": [floats], "sampling_rate": 16000}; '
                    f"got the keys {sorted(v)}"
                )
            rate = v.get("sampling_rate", params.get("sampling_rate", 16000))
            items.append((audio_array(v["array"]), SAMPLING_RATE("sampling_rate", rate)))
        else:
            items.append(wav_to_float(binary_item(v)))
    req.items, req.parameters = items, params
    return req


def resample(samples: Any, rate: int, target: int) -> Any:
    import numpy as np

    arr = np.asarray(samples, dtype=np.float32)
    if rate == target or arr.size == 0:
        return arr
    n = max(1, round(arr.size * target / rate))
    return np.interp(np.linspace(0, arr.size - 1, n), np.arange(arr.size), arr).astype(np.float32)


@dataclass(frozen=True)
class Window:
    """Samples [start, end) of a clip; `left`/`right` samples at its inner edges overlap the
    neighbouring windows and are dropped from its output."""

    start: int
    end: int
    left: int
    right: int


def plan_windows(n: int, chunk: int, stride: int) -> list[Window]:
    """Fixed `chunk`-sample windows, each overlapping its neighbours by `stride` samples on each
    inner side (the Hugging Face ASR pipeline's chunk_length_s/stride_length_s): the kept
    middles tile the clip exactly, and the cost is linear in the clip's length."""
    if n <= chunk:
        return [Window(0, n, 0, 0)]
    step = chunk - 2 * stride
    out: list[Window] = []
    for start in range(0, n, step):
        end = min(start + chunk, n)
        last = end >= n
        left = 0 if start == 0 else stride
        if end - start > left:  # a tail that is all overlap adds nothing
            out.append(Window(start, end, left, 0 if last else stride))
        if last:
            break
    return out


# The convolutional front end needs a few hundred samples; very short clips are padded.
MIN_SAMPLES = 400
# Windows per forward pass: bounds the memory one long clip takes.
WINDOW_BATCH = 16


class SpeechRecognition:
    decode = staticmethod(decode_audio)

    def __init__(self, settings: Settings) -> None:
        import transformers

        tf: Any = transformers

        self.settings = settings
        self.processor = tf.AutoProcessor.from_pretrained(settings.model_path)
        self.model = load_model(transformers.AutoModelForCTC, settings)
        self.rate = int(self.processor.feature_extractor.sampling_rate)
        # Input samples per output frame (the convolutional front end's total stride).
        self.samples_per_frame = float(self.model.config.inputs_to_logits_ratio)

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import torch

        clips = [resample(samples, rate, self.rate) for samples, rate in items]
        jobs: list[tuple[int, Any, Window]] = []
        for i, (clip, p) in enumerate(zip(clips, params, strict=True)):
            chunk = round(p.get("chunk_length_s", DEFAULT_CHUNK_S) * self.rate)
            stride = round(p.get("stride_length_s", chunk / self.rate / 6) * self.rate)
            jobs.extend(
                (i, clip[w.start : w.end], w) for w in plan_windows(clip.size, chunk, stride)
            )
        # Windows of one length run together: no padding, so no attention mask, which would
        # send attention down its slow masked path (several times slower on CPU).
        by_size = sorted(range(len(jobs)), key=lambda k: jobs[k][1].size)
        kept: dict[int, Any] = {}
        start = 0
        while start < len(by_size):
            size = jobs[by_size[start]][1].size
            stop = start
            while stop < len(by_size) and stop - start < WINDOW_BATCH:
                if jobs[by_size[stop]][1].size != size:
                    break
                stop += 1
            group = by_size[start:stop]
            logits = self._logits([jobs[k][1] for k in group])
            for k, row in zip(group, logits, strict=True):
                kept[k] = self._middle(row, jobs[k][1].size, jobs[k][2])
            start = stop
        pieces: list[list[Any]] = [[] for _ in clips]
        for k, (i, _, _) in enumerate(jobs):
            pieces[i].append(kept[k])
        out = []
        for rows in pieces:
            # One argmax and one CTC decode over the joined frames, so a word or a repeated
            # letter across a window border is collapsed as if the clip were one window.
            ids = torch.cat(rows).argmax(-1)
            out.append({"text": self.processor.decode(ids), "windows": len(rows)})
        return out

    def _middle(self, row: Any, samples: int, w: Window) -> Any:
        """A window's output frames less those of the overlap at its inner edges."""
        frames = min(round(max(samples, MIN_SAMPLES) / self.samples_per_frame), row.shape[0])
        left = round(w.left / self.samples_per_frame)
        right = round(w.right / self.samples_per_frame)
        return row[left : max(left, frames - right)]

    def _logits(self, audio: list[Any]) -> Any:
        """CTC logits of windows of one length."""
        import numpy as np
        import torch

        audio = [np.pad(a, (0, max(0, MIN_SAMPLES - a.size))) for a in audio]
        batch = self.processor(audio, sampling_rate=self.rate, return_tensors="pt")
        values = batch["input_values"].to(self.settings.device, self.model.dtype)
        with torch.inference_mode():
            return self.model(input_values=values).logits.float().cpu()
