"""Image classification and speech recognition."""

from __future__ import annotations

import io
import wave
from typing import Any

from tmo_runtime.handlers.common import (
    BadRequest,
    Request,
    Settings,
    binary_item,
    load_model,
    split_inputs,
)


def decode_image(payload: Any) -> Request:
    req = split_inputs(payload, ("image",))
    req.items = [binary_item(v) for v in req.items]
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
        from PIL import Image, UnidentifiedImageError

        images = []
        for data in items:
            try:
                images.append(Image.open(io.BytesIO(data)).convert("RGB"))
            except UnidentifiedImageError as e:
                raise BadRequest("not an image PIL can read") from e
        batch = self.processor(images=images, return_tensors="pt").to(self.settings.device)
        pixel_values = batch["pixel_values"].to(self.model.dtype)
        with torch.inference_mode():
            probs = self.model(pixel_values=pixel_values).logits.float().softmax(-1).cpu()
        labels = self.model.config.id2label
        out = []
        for row in probs:
            best = int(row.argmax())
            top = row.topk(min(5, row.shape[0]))
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


def wav_to_float(data: bytes) -> tuple[list[float], int]:
    """PCM WAV (8/16/32-bit, mono or first channel) to floats in [-1, 1]."""
    import numpy as np

    try:
        with wave.open(io.BytesIO(data)) as w:
            rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as e:
        raise BadRequest("audio must be a PCM WAV file") from e
    dtype = {1: np.uint8, 2: np.int16, 4: np.int32}.get(width)
    if dtype is None:
        raise BadRequest(f"unsupported WAV sample width {width}")
    samples = np.frombuffer(frames, dtype=dtype).reshape(-1, channels)[:, 0].astype(np.float32)
    if width == 1:
        samples = (samples - 128.0) / 128.0
    else:
        samples /= float(2 ** (8 * width - 1))
    return samples.tolist(), rate


def resample(samples: Any, rate: int, target: int) -> Any:
    import numpy as np

    arr = np.asarray(samples, dtype=np.float32)
    if rate == target or arr.size == 0:
        return arr
    n = max(1, round(arr.size * target / rate))
    return np.interp(np.linspace(0, arr.size - 1, n), np.arange(arr.size), arr).astype(np.float32)


def decode_audio(payload: Any) -> Request:
    if isinstance(payload, dict) and "array" in payload:
        rate = payload.get("sampling_rate", 16000)
        array = payload["array"]
        if not isinstance(array, list) or not isinstance(rate, int):
            raise BadRequest("array must be a list of floats and sampling_rate an integer")
        return Request(items=[(array, rate)], single=True)
    req = split_inputs(payload, ("audio",))
    req.items = [wav_to_float(binary_item(v)) for v in req.items]
    return req


class SpeechRecognition:
    decode = staticmethod(decode_audio)

    def __init__(self, settings: Settings) -> None:
        import transformers

        tf: Any = transformers

        self.settings = settings
        self.processor = tf.AutoProcessor.from_pretrained(settings.model_path)
        self.model = load_model(transformers.AutoModelForCTC, settings)
        self.rate = int(self.processor.feature_extractor.sampling_rate)

    def infer(self, items: list[Any], params: list[dict[str, Any]]) -> list[Any]:
        import numpy as np
        import torch

        audio = [resample(samples, rate, self.rate) for samples, rate in items]
        # The convolutional front end needs a few hundred samples; pad very short clips.
        min_len = 400
        audio = [np.pad(a, (0, max(0, min_len - a.size))) for a in audio]
        batch = self.processor(
            audio, sampling_rate=self.rate, padding=True, return_tensors="pt"
        ).to(self.settings.device)
        values = batch["input_values"].to(self.model.dtype)
        mask = batch.get("attention_mask")
        with torch.inference_mode():
            logits = self.model(input_values=values, attention_mask=mask).logits
        ids = logits.argmax(-1).cpu()
        texts = self.processor.batch_decode(ids)
        return [{"text": t} for t in texts]
