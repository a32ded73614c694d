"""An attention heat map as a PIL image (no matplotlib in the runtime's dependencies).

Rows are the attending tokens (labels on the left), columns the attended ones (labels on top,
rotated); the colour of a cell is its weight on a white-to-blue scale from 0 to the largest
weight, shown by the colour bar on the right.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

PAD = 8
TITLE_H = 24
BAR_W = 16
MAX_LABEL_CHARS = 16


def colour(weight: float, top: float) -> tuple[int, int, int]:
    """White at 0, deep blue at `top`."""
    t = 0.0 if top <= 0 else max(0.0, min(1.0, weight / top))
    return (round(255 - 247 * t), round(255 - 207 * t), round(255 - 148 * t))


def _label(token: str) -> str:
    text = token.replace("\n", "\\n").replace("\t", "\\t")
    return text if len(text) <= MAX_LABEL_CHARS else text[: MAX_LABEL_CHARS - 1] + "…"


def render_attention(tokens: Sequence[str], matrix: Sequence[Sequence[float]], title: str) -> Any:
    """The heat map as an RGB PIL image."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    n = len(tokens)
    cell = max(4, min(32, 640 // max(1, n)))
    labels = [_label(t) for t in tokens]
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    text_w = max((int(probe.textlength(s, font=font)) for s in labels), default=0)
    line_h = 12
    # Tokens too dense for one label per cell get every k-th label.
    every = max(1, -(-line_h // cell))
    margin = text_w + 2 * PAD
    grid = n * cell
    width = margin + grid + PAD + BAR_W + 56
    height = TITLE_H + margin + grid + PAD
    img = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(img)
    draw.text((PAD, 6), title, fill="black", font=font)
    x0, y0 = margin, TITLE_H + margin
    top = max((max(row) for row in matrix if len(row)), default=0.0)
    for i, row in enumerate(matrix):
        for j, w in enumerate(row):
            box = (x0 + j * cell, y0 + i * cell, x0 + (j + 1) * cell - 1, y0 + (i + 1) * cell - 1)
            draw.rectangle(box, fill=colour(float(w), top))
    # Column labels: drawn left-to-right on their own strip, then rotated to read upwards.
    strip = Image.new("RGB", (margin, grid), "white")
    sdraw = ImageDraw.Draw(strip)
    for i, s in enumerate(labels):
        if i % every == 0:
            y = i * cell + (cell - line_h) // 2
            sdraw.text(
                (margin - PAD - int(sdraw.textlength(s, font=font)), y), s, fill="black", font=font
            )
    img.paste(strip.rotate(90, expand=True), (x0, TITLE_H))
    for i, s in enumerate(labels):
        if i % every == 0:
            y = y0 + i * cell + (cell - line_h) // 2
            draw.text(
                (margin - PAD - int(draw.textlength(s, font=font)), y), s, fill="black", font=font
            )
    bx = x0 + grid + PAD
    for k in range(grid):
        draw.line(
            (bx, y0 + k, bx + BAR_W, y0 + k), fill=colour(top * (1 - k / max(1, grid - 1)), top)
        )
    draw.rectangle((bx, y0, bx + BAR_W, y0 + grid - 1), outline="black")
    draw.text((bx + BAR_W + 4, y0), f"{top:.2f}", fill="black", font=font)
    draw.text((bx + BAR_W + 4, y0 + grid - line_h), "0", fill="black", font=font)
    return img
