"""Video files through PyAV (FFmpeg with libx264 bundled in the wheel; no system ffmpeg)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from orbitforge.atomic import atomic_path
from orbitforge.errors import InputError


def write_video(path: Path | str, frames: np.ndarray, fps: float = 24.0, crf: int = 18) -> None:
    """Write (T, H, W, 3) uint8 frames as H.264 MP4, atomically (temp name, then rename).

    H.264 in yuv420p needs even sides, so odd sizes are padded by one edge pixel.
    """
    import av

    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise InputError(f"write_video needs (T>0, H, W, 3) uint8 frames, got {frames.shape} {frames.dtype}")
    pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
    if pad_h or pad_w:
        frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf)}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def read_video_frames(path: Path | str) -> np.ndarray:
    """All frames of a short video as (T, H, W, 3) uint8; for long videos use recon.ingest."""
    import av

    try:
        with av.open(str(path)) as container:
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    except (av.error.FFmpegError, ValueError) as exc:
        raise InputError(f"could not decode video {path}: {exc}") from None
