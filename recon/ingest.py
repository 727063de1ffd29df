"""Ingest: a phone video or a folder of photos becomes a Clip of well-chosen frames.

Video is decoded as a stream (PyAV): the timeline is cut into as many windows as frames are
wanted, and only the sharpest frame of the current window is held at full resolution, so a
10-minute 4K video needs memory for a handful of frames, not for the video.  Sharpness is the
variance of the Laplacian on a small grey copy; near-duplicates (a paused camera) are dropped by
comparing tiny thumbnails.  Photos keep their order; EXIF gives a focal length when it can.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from PIL import ExifTags, Image, ImageOps

from orbitforge.clip import Clip
from orbitforge.errors import InputError

logger = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp")
MIN_FRAMES = 3
"""Structure from motion needs at least this many views."""
TEXTURELESS_SHARPNESS = 2.0
"""Laplacian variance (on 0-255 grey) below which a frame carries no usable texture."""


@dataclass(frozen=True)
class IngestConfig:
    """How frames are chosen."""

    target_frames: int = 80
    """Frames kept from a video (photos are all kept)."""
    max_side: int = 1024
    """Longer image side after resizing; SIFT on a CPU gains little above this."""
    duplicate_threshold: float = 1.5
    """Mean absolute difference (0-255) of 32x32 grey thumbnails below which two
    consecutive frames count as the same view."""


@dataclass(frozen=True)
class Ingested:
    """What ingest produced: the clip plus what it learned on the way.

    Attributes:
        clip: the chosen frames, no cameras.
        focal_px: focal length in pixels of the resized frames from EXIF, or None.
        source_indices: (T,) index of each chosen frame in the source (frame number or file order).
        sharpness: (T,) Laplacian variance of each chosen frame.
        names: source file name per frame (photos) or "frame_<n>" (video).
    """

    clip: Clip
    focal_px: float | None
    source_indices: np.ndarray
    sharpness: np.ndarray
    names: tuple[str, ...] = field(default=())


def laplacian_variance(grey: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian: a cheap, standard focus measure."""
    g = grey.astype(np.float32)
    lap = g[1:-1, :-2] + g[1:-1, 2:] + g[:-2, 1:-1] + g[2:, 1:-1] - 4 * g[1:-1, 1:-1]
    return float(lap.var())


def resized_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(width, height) with the longer side at most `max_side`, aspect kept."""
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L").resize((32, 32), Image.Resampling.BILINEAR), np.float32)


def ingest(path: Path | str, config: IngestConfig = IngestConfig(), *, progress: Callable[[int], None] | None = None) -> Ingested:
    """A video file or a folder of images -> Ingested (a Clip without cameras)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    if path.is_dir():
        return _ingest_images(path, config)
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return _ingest_video(path, config, progress)
    raise InputError(f"{path} is neither a video ({', '.join(VIDEO_SUFFIXES)}) nor a folder of images")


# ---------------------------------------------------------------------------------------------
# video
# ---------------------------------------------------------------------------------------------


def _count_frames(path: Path) -> int:
    """Frames in the first video stream: from the header, else by demuxing packets (no decode)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


def _decode(path: Path, max_side: int) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """(index, grey 256-px copy, RGB frame resized to max_side) per decoded frame, streaming."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for index, frame in enumerate(container.decode(stream)):
            width, height = resized_size(frame.width, frame.height, max_side)
            gw, gh = resized_size(frame.width, frame.height, 256)
            grey = frame.reformat(width=gw, height=gh, format="gray").to_ndarray()
            yield index, grey, frame.reformat(width=width, height=height, format="rgb24").to_ndarray()


def _ingest_video(path: Path, config: IngestConfig, progress) -> Ingested:
    import av

    try:
        total = _count_frames(path)
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise InputError(f"cannot read video {path} ({str(exc).splitlines()[0] or type(exc).__name__}); "
                         "is it a complete video file? re-export or re-copy it") from None
    if total < MIN_FRAMES:
        raise InputError(f"video {path} has {total} frame(s); need at least {MIN_FRAMES}: record a longer orbit")
    windows = min(config.target_frames, total)
    best: dict[int, tuple[float, int, np.ndarray]] = {}  # window -> (sharpness, index, frame)
    decoded = 0
    try:
        for index, grey, rgb in _decode(path, config.max_side):
            window = min(index * windows // total, windows - 1)
            score = laplacian_variance(grey)
            if window not in best or score > best[window][0]:
                best[window] = (score, index, rgb)
            decoded += 1
            if progress is not None:
                progress(1)
    except av.error.FFmpegError as exc:
        if decoded < MIN_FRAMES:
            raise InputError(f"video {path} is corrupt: decoding failed after {decoded} frame(s) ({exc})") from None
        logger.warning("video %s is truncated: decoded %d of %d frames, using those", path, decoded, total)
    if decoded < MIN_FRAMES:
        raise InputError(f"video {path} decoded to {decoded} frame(s); need at least {MIN_FRAMES}")
    chosen = [best[w] for w in sorted(best)]
    scores = np.array([c[0] for c in chosen])
    frames = [c[2] for c in chosen]
    indices = np.array([c[1] for c in chosen])
    _check_texture(scores, str(path))
    keep = _drop_duplicates(frames, config.duplicate_threshold)
    with av.open(str(path)) as container:
        rate = container.streams.video[0].average_rate
    fps = float(rate) * len(keep) / max(decoded, 1) if rate else 24.0
    return _finish(
        [frames[i] for i in keep], scores[keep], indices[keep], None, str(path),
        tuple(f"frame_{indices[i]:06d}" for i in keep), fps=max(fps, 1.0),
    )


def _drop_duplicates(frames: list[np.ndarray], threshold: float) -> list[int]:
    """Indices to keep: a frame almost identical to the last kept one is dropped."""
    keep = [0]
    last = _thumbnail(frames[0])
    for i in range(1, len(frames)):
        thumb = _thumbnail(frames[i])
        if np.abs(thumb - last).mean() >= threshold:
            keep.append(i)
            last = thumb
    if len(keep) < len(frames):
        logger.warning("dropped %d near-duplicate frame(s) (camera not moving)", len(frames) - len(keep))
    return keep


# ---------------------------------------------------------------------------------------------
# photos
# ---------------------------------------------------------------------------------------------


def exif_focal_px(image: Image.Image) -> float | None:
    """Focal length in pixels of this image from EXIF, or None when EXIF cannot tell.

    Uses the 35 mm-equivalent focal length when present (36 mm film width over the long side),
    else the focal length in mm with the focal-plane resolution (pixels per unit on the sensor).
    """
    exif = image.getexif()
    sub = exif.get_ifd(ExifTags.IFD.Exif)
    tags = {**{ExifTags.TAGS.get(k, k): v for k, v in exif.items()}, **{ExifTags.TAGS.get(k, k): v for k, v in sub.items()}}
    width, height = image.size
    f35 = tags.get("FocalLengthIn35mmFilm")
    if f35:
        return float(f35) / 36.0 * max(width, height)
    focal_mm, res, unit = tags.get("FocalLength"), tags.get("FocalPlaneXResolution"), tags.get("FocalPlaneResolutionUnit")
    unit_mm = {2: 25.4, 3: 10.0, 4: 1.0, 5: 0.001}.get(int(unit) if unit else 2)
    if focal_mm and res and unit_mm:
        exif_width = tags.get("ExifImageWidth") or width
        return float(focal_mm) * float(res) / unit_mm * width / float(exif_width)
    return None


def _ingest_images(folder: Path, config: IngestConfig) -> Ingested:
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
    if len(files) < MIN_FRAMES:
        raise InputError(f"{folder} holds {len(files)} image(s); need at least {MIN_FRAMES} views of the object")
    frames, scores, sizes, focals = [], [], set(), []
    for file in files:
        try:
            with Image.open(file) as im:
                im = ImageOps.exif_transpose(im)
                focal = exif_focal_px(im)
                sizes.add(im.size)
                width, height = resized_size(*im.size, config.max_side)
                rgb = np.asarray(im.convert("RGB").resize((width, height), Image.Resampling.LANCZOS))
        except OSError as exc:
            raise InputError(f"cannot read image {file} ({exc}); remove or re-export it") from None
        if focal is not None:
            focals.append(focal * width / im.size[0])
        frames.append(rgb)
        scores.append(laplacian_variance(np.asarray(Image.fromarray(rgb).convert("L"))))
    if len(sizes) > 1:
        raise InputError(
            f"images in {folder} have different sizes {sorted(sizes)[:3]}...; one camera per capture is assumed: "
            "use photos from one camera at one resolution"
        )
    focal_px = float(np.median(focals)) if len(focals) == len(files) else None
    return _finish(frames, np.array(scores), np.arange(len(files)), focal_px, str(folder), tuple(p.name for p in files))


def _check_texture(scores: np.ndarray, source: str) -> None:
    if float(np.max(scores)) < TEXTURELESS_SHARPNESS:
        raise InputError(
            f"the frames of {source} are blank or textureless (max sharpness {np.max(scores):.2f}); "
            "film in more light, with a textured background or object, and in focus"
        )


def _finish(frames, scores, indices, focal_px, source, names, fps: float = 10.0) -> Ingested:
    """Checks shared by both inputs, then the Ingested record."""
    _check_texture(scores, source)
    if len(frames) < MIN_FRAMES:
        raise InputError(f"only {len(frames)} distinct frame(s) in {source}; move the camera around the object")
    sharp_floor = 0.05 * float(np.median(scores))
    blurry = int((scores < sharp_floor).sum())
    if blurry:
        logger.warning("%d frame(s) are far blurrier than the rest; slower camera motion helps", blurry)
    clip = Clip(np.stack(frames), fps=fps, source=source)
    return Ingested(clip, focal_px, np.asarray(indices), np.asarray(scores, np.float64), names)

