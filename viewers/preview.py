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
    """Save an image atomically (format from the suffix)."""
    from orbitforge.atomic import atomic_path

    with atomic_path(path) as tmp:
        image.save(tmp)


def save_turntable_gif(frames: np.ndarray, path, *, fps: float = 24.0, max_side: int = 256) -> None:
    """An endlessly looping GIF of an orbit's frames, resized to at most `max_side`, atomically."""
    from orbitforge.atomic import atomic_path

    frames = np.asarray(frames)
    images = [Image.fromarray(f) for f in frames]
    scale = min(1.0, max_side / max(images[0].size))
    if scale < 1.0:
        size = (max(1, round(images[0].width * scale)), max(1, round(images[0].height * scale)))
        images = [im.resize(size, Image.Resampling.LANCZOS) for im in images]
    with atomic_path(path) as tmp:
        images[0].save(tmp, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0, optimize=True)


def camera_path_image(cameras, points=None, colours=None, *, size: int = 420) -> Image.Image:
    """Top (x-z) and side (x-y) views of camera centres and viewing directions over sparse
    points, in the world's +Y-up frame: the quickest check that a reconstruction is sane.

    Args:
        cameras: a `Cameras` (centres and forward axes are drawn, first camera ringed).
        points: optional (P, 3) world points; colours: optional (P, 3) uint8.
    """
    centres = cameras.centres
    forward = cameras.c2w[:, :3, 2]
    pts = np.zeros((0, 3)) if points is None else np.asarray(points, dtype=np.float64)
    extent = np.abs(np.concatenate([centres, pts[np.linalg.norm(pts, axis=1) < 3 * np.abs(centres).max()]])).max()
    scale = (size / 2 - 16) / max(extent, 1e-9)
    sheet = Image.new("RGB", (2 * size + 12, size + 22), (250, 250, 252))
    draw = ImageDraw.Draw(sheet)
    font = ImageFont.load_default()
    step = max(1, len(pts) // 20000)
    rgb = np.full((len(pts), 3), 150, np.uint8) if colours is None else np.asarray(colours, np.uint8)
    for panel, (a, b, sign_b, title) in enumerate(((0, 2, 1, "top view (x right, z down the page)"), (0, 1, -1, "side view (x right, y up)"))):
        ox = panel * (size + 12) + size / 2
        oy = 22 + size / 2
        to_px = lambda p: (ox + scale * p[..., a], oy + sign_b * scale * p[..., b])  # noqa: E731
        draw.text((panel * (size + 12) + 4, 4), title, fill=(60, 60, 60), font=font)
        draw.rectangle([panel * (size + 12), 20, panel * (size + 12) + size, 20 + size], outline=(200, 200, 205))
        px, py = to_px(pts[::step])
        for x, y, c in zip(px, py, rgb[::step]):
            draw.point((x, y), fill=tuple(int(v) for v in c))
        cx, cy = to_px(centres)
        fx, fy = to_px(centres + 0.15 * extent * forward)
        for i in range(len(centres)):
            hue = i / max(len(centres) - 1, 1)
            colour = (int(40 + 200 * hue), 80, int(230 - 180 * hue))
            draw.line([(cx[i], cy[i]), (fx[i], fy[i])], fill=colour, width=1)
            draw.ellipse([cx[i] - 2.5, cy[i] - 2.5, cx[i] + 2.5, cy[i] + 2.5], fill=colour)
        draw.ellipse([cx[0] - 5, cy[0] - 5, cx[0] + 5, cy[0] + 5], outline=(0, 0, 0))
    return sheet


def training_curve(curves: dict, *, x: str = "seconds", y: str = "psnr", title: str = "") -> Image.Image:
    """A line chart (matplotlib, headless) of named curves, each a list of dicts with x and y keys."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6), dpi=110)
    for name, points in curves.items():
        ax.plot([p[x] for p in points], [p[y] for p in points], marker="o", markersize=3, label=name)
    ax.set_xlabel(x)
    ax.set_ylabel(y)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if curves:
        ax.legend()
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")
