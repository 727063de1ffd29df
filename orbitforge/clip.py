"""Clip: frames with optional known cameras, masks and depth; what every stage passes along.

On disk a clip is a folder laid out so that nerfstudio can train on it directly:

    frames/00000.png ...      RGB frames
    masks/00000.png ...       8-bit masks (255 = object), when known
    depths/00000.npy ...      float32 camera-z depth in world units (0 = none), when known
    transforms.json           nerfstudio format, when cameras are known (mask_path, depth_file_path)
    clip.json                 fps, source, size, frame count
    clip.mp4                  H.264 preview of the frames
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from orbitforge.cameras import Cameras, check_image_size, from_transforms_json, to_transforms_json
from orbitforge.errors import InputError
from orbitforge.video import write_video

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Clip:
    """T frames of one object.

    Attributes:
        frames: (T, H, W, 3) uint8 sRGB.
        cameras: T cameras (known for generated and rendered clips), or None.
        masks: (T, H, W) bool object masks, or None.
        depths: (T, H, W) float32 camera-z depth, 0 where unknown, or None.
        fps: playback rate of the clip's video.
        source: the prompt, image or file the clip came from.
    """

    frames: np.ndarray
    cameras: Cameras | None = None
    masks: np.ndarray | None = None
    depths: np.ndarray | None = None
    fps: float = 24.0
    source: str = ""

    def __post_init__(self) -> None:
        frames = np.asarray(self.frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise InputError(f"clip frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
        if len(frames) == 0:
            raise InputError("a clip needs at least one frame, got zero")
        T, H, W = frames.shape[:3]
        check_image_size(W, H)
        if self.cameras is not None:
            if len(self.cameras) != T:
                raise InputError(f"clip has {T} frames but {len(self.cameras)} cameras")
            if (self.cameras.width, self.cameras.height) != (W, H):
                raise InputError(
                    f"clip frames are {W}x{H} but cameras are {self.cameras.width}x{self.cameras.height}"
                )
        for name in ("masks", "depths"):
            arr = getattr(self, name)
            if arr is not None and np.shape(arr) != (T, H, W):
                raise InputError(f"clip {name} must be {(T, H, W)}, got {np.shape(arr)}")
        if not self.fps > 0:
            raise InputError(f"fps must be positive, got {self.fps}")

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def height(self) -> int:
        return self.frames.shape[1]

    @property
    def width(self) -> int:
        return self.frames.shape[2]

    @property
    def backdrop(self) -> tuple[float, float, float]:
        """The colour behind the object, (r, g, b) in [0, 1]: see `backdrop_colour`."""
        return tuple(float(c) for c in backdrop_colour(self.frames))

    def save(self, folder: Path | str, *, video: bool = True) -> None:
        """Write the clip's folder layout (see the module docstring) into `folder`."""
        folder = Path(folder)
        names = [f"{i:05d}.png" for i in range(len(self))]
        (folder / "frames").mkdir(parents=True, exist_ok=True)
        for name, frame in zip(names, self.frames):
            Image.fromarray(frame).save(folder / "frames" / name, compress_level=1)
        if self.masks is not None:
            (folder / "masks").mkdir(exist_ok=True)
            for name, mask in zip(names, self.masks):
                Image.fromarray(np.where(mask, 255, 0).astype(np.uint8)).save(folder / "masks" / name)
        if self.depths is not None:
            (folder / "depths").mkdir(exist_ok=True)
            for name, depth in zip(names, self.depths):
                np.save(folder / "depths" / name.replace(".png", ".npy"), depth.astype(np.float32))
        if self.cameras is not None:
            data = to_transforms_json(self.cameras, [f"frames/{n}" for n in names])
            for entry, name in zip(data["frames"], names):
                if self.masks is not None:
                    entry["mask_path"] = f"masks/{name}"
                if self.depths is not None:
                    entry["depth_file_path"] = f"depths/{name.replace('.png', '.npy')}"
            (folder / "transforms.json").write_text(json.dumps(data, indent=2))
        meta = {"fps": self.fps, "source": self.source, "num_frames": len(self), "width": self.width, "height": self.height}
        (folder / "clip.json").write_text(json.dumps(meta, indent=2))
        if video:
            write_video(folder / "clip.mp4", self.frames, fps=self.fps)

    @classmethod
    def load(cls, folder: Path | str) -> "Clip":
        """Read a clip folder written by `save` (cameras from transforms.json when present)."""
        folder = Path(folder)
        meta_path = folder / "clip.json"
        if not meta_path.is_file():
            raise InputError(f"{folder} is not a clip folder (no clip.json)")
        meta = json.loads(meta_path.read_text())
        cameras, paths = None, sorted(str(p.relative_to(folder)) for p in (folder / "frames").glob("*.png"))
        if (folder / "transforms.json").is_file():
            cameras, paths = from_transforms_json(folder / "transforms.json")
        if not paths:
            raise InputError(f"clip folder {folder} has no frames")
        frames = np.stack([np.asarray(Image.open(folder / p).convert("RGB")) for p in paths])
        stems = [Path(p).stem for p in paths]
        masks = depths = None
        if (folder / "masks").is_dir():
            masks = np.stack([np.asarray(Image.open(folder / "masks" / f"{s}.png")) > 127 for s in stems])
        if (folder / "depths").is_dir():
            depths = np.stack([np.load(folder / "depths" / f"{s}.npy", allow_pickle=False) for s in stems])
        return cls(frames, cameras, masks, depths, fps=float(meta.get("fps", 24.0)), source=str(meta.get("source", "")))


def backdrop_colour(frames: np.ndarray) -> np.ndarray:
    """(3,) float in [0, 1]: the median colour of the frames' one-pixel borders.

    What the object stands in front of: white for orbitforge's renders and generated orbits,
    black for a studio capture such as Middlebury's temple, some grey for a cluttered room.
    Args: frames (T, H, W, 3) or (H, W, 3) uint8 sRGB.
    """
    frames = np.asarray(frames)
    frames = frames[None] if frames.ndim == 3 else frames
    border = np.concatenate([frames[:, 0], frames[:, -1], frames[:, :, 0], frames[:, :, -1]], axis=1)
    return np.median(border.reshape(-1, 3), axis=0) / 255.0
