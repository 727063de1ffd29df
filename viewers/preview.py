"""Pictures of a stage's output: contact sheets (later: turntables, training curves)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont


def contact_sheet(
    frames: np.ndarray,
    *,
    labels: Sequence[str] | None = None,
    columns: int | None = None,
    max_frames: int = 48,
    tile: int | None = None,
    gap: int = 4,
    background: tuple[int, int, int] = (32, 32, 36),
    label_lines: int = 1,
) -> Image.Image:
    """A grid of frames, evenly subsampled to at most `max_frames`, with optional labels.

    Args:
        frames: (T, H, W, 3) uint8.
        labels: one short caption per frame (drawn under each tile), or None.
        columns: grid width; default makes the sheet roughly square.
        tile: resize tiles to this height in pixels (aspect kept); default keeps the size.
        label_lines: lines of text under each tile; a longer label is word-wrapped over them
            (and cut after the last), so sentence-long captions stay readable.
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or len(frames) == 0:
        raise ValueError(f"contact_sheet needs (T>0, H, W, 3) frames, got shape {frames.shape}")
    pick = np.unique(np.linspace(0, len(frames) - 1, min(max_frames, len(frames))).round().astype(int))
    images = [Image.fromarray(frames[i][..., :3]) for i in pick]
    if tile:
        width = max(1, round(images[0].width * tile / images[0].height))
        images = [im.resize((width, tile), Image.Resampling.LANCZOS) for im in images]
    w, h = images[0].size
    cols = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    label_h = (12 * max(1, label_lines) + 2) if labels is not None else 0
    sheet = Image.new("RGB", (cols * (w + gap) + gap, rows * (h + gap + label_h) + gap), background)
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    for k, (i, im) in enumerate(zip(pick, images)):
        x = gap + (k % cols) * (w + gap)
        y = gap + (k // cols) * (h + gap + label_h)
        sheet.paste(im, (x, y))
        if labels is not None:
            for line_no, line in enumerate(_label_lines(str(labels[i]), max(4, w // 6), label_lines)):
                draw.text((x + 2, y + h + 1 + 12 * line_no), line, fill=(220, 220, 220), font=font)
    return sheet


def _label_lines(text: str, width: int, lines: int) -> list[str]:
    """`text` cut to one line of `width` characters, or word-wrapped over up to `lines` lines."""
    if lines <= 1:
        return [text[:width]]
    import textwrap

    return textwrap.wrap(text, width, max_lines=lines, placeholder="...") or [""]


def save_image(image: Image.Image, path) -> None:
    """Save a PNG atomically (temp name in the same folder, then rename)."""
    import os
    from pathlib import Path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}.png")
    try:
        image.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def save_turntable_gif(frames: np.ndarray, path, *, fps: float = 24.0, max_side: int = 256) -> None:
    """An endlessly looping GIF of an orbit's frames, resized to at most `max_side`, atomically."""
    import os
    from pathlib import Path

    frames = np.asarray(frames)
    images = [Image.fromarray(f) for f in frames]
    scale = min(1.0, max_side / max(images[0].size))
    if scale < 1.0:
        size = (max(1, round(images[0].width * scale)), max(1, round(images[0].height * scale)))
        images = [im.resize(size, Image.Resampling.LANCZOS) for im in images]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}.gif")
    try:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0, optimize=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
