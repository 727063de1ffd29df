"""The on-disk form of a world dataset, and `OrbitDataset`, the reader.

    DIR/dataset.json                       manifest: config, split definition, shard list, counts
    DIR/shards/train-00000.safetensors     tensors of up to `shard_size` assets (layout below)
    DIR/shards/train-00000.json            sidecar: per asset seed, view angles, captions, attributes
    DIR/shards/val-00000…, test-00000…     the other splits, same layout

Tensors of a shard with A assets, T views, S x S pixels (safetensors, little-endian, no pickle):

    frames  uint8   [A, T, S, S, 3]   sRGB, white background
    masks   uint8   [A, T, S, ceil(S / 8)]   object masks, bits packed along x (np.packbits, big bit order)
    K       float32 [A, T, 3, 3]     intrinsics in pixels, pixel centres at +0.5
    c2w     float32 [A, T, 4, 4]     camera-to-world, OpenCV camera axes, world +Y up, metres
    seeds   int64   [A]              `sample_asset` seed of each asset

safetensors metadata is str -> str only, so captions and attributes live in the JSON sidecar,
which is written before the tensors: a shard counts as present when its .safetensors file
exists, and both are renamed into place whole.  The reader imports no torch; an `OrbitDataset`
has `__len__` and `__getitem__`, so a torch `DataLoader` takes it as it is (keep `shuffle=False`,
or shuffle within shards, since random access across shards reloads a shard per item).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from orbitforge.cameras import Cameras
from orbitforge.atomic import write_bytes_atomic
from orbitforge.errors import InputError
from orbitforge.gen.world.splits import SPLITS

logger = logging.getLogger(__name__)

MANIFEST = "dataset.json"
SHARD_DIR = "shards"
FORMAT = "orbitforge-world-dataset"
FORMAT_VERSION = 1
SHARD_FORMAT = "orbitforge-world-shard"


def shard_name(split: str, number: int) -> str:
    """"train-00000": the file stem of a split's shard."""
    return f"{split}-{number:05d}"


@dataclass(frozen=True, eq=False)
class OrbitShard:
    """One shard in memory: A assets x T views at S x S.

    Attributes:
        frames: (A, T, S, S, 3) uint8 sRGB.
        masks: (A, T, S, S) bool, True on the object.
        K: (A, T, 3, 3) float32 intrinsics in pixels.
        c2w: (A, T, 4, 4) float32 camera-to-world, OpenCV axes, +Y up, metres.
        records: per asset, the sidecar entry: seed, index, elevation_deg, start_azimuth_deg,
            captions, attributes (as `AssetAttributes.to_dict`).
    """

    frames: np.ndarray
    masks: np.ndarray
    K: np.ndarray
    c2w: np.ndarray
    records: tuple[dict, ...]

    def __len__(self) -> int:
        return len(self.frames)


@dataclass(frozen=True, eq=False)
class OrbitSample:
    """One asset of a dataset: its orbit and what it is.

    Attributes:
        seed: `sample_asset(seed)` rebuilds the asset.
        frames: (T, S, S, 3) uint8 sRGB.
        masks: (T, S, S) bool.
        cameras: the T cameras (OpenCV axes, camera-to-world, +Y up, metres).
        captions: truthful captions, the first one canonical.
        attributes: ground truth as a dict (`AssetAttributes.to_dict`): category, main_colour, ...
    """

    seed: int
    frames: np.ndarray
    masks: np.ndarray
    cameras: Cameras
    captions: tuple[str, ...]
    attributes: dict

    def to_clip(self, fps: float = 24.0):
        """As a `Clip` (frames, cameras, masks), e.g. to save it or to reconstruct it."""
        from orbitforge.clip import Clip

        return Clip(self.frames, self.cameras, self.masks, fps=fps, source=self.captions[0])


def encode_shard(frames: np.ndarray, masks: np.ndarray, K: np.ndarray, c2w: np.ndarray, seeds: Sequence[int],
                 *, split: str) -> bytes:
    """The safetensors bytes of one shard (see the module docstring for shapes)."""
    from safetensors.numpy import save

    tensors = {
        "frames": np.ascontiguousarray(frames, dtype=np.uint8),
        "masks": np.packbits(np.asarray(masks, dtype=bool), axis=-1),  # [A, T, S, ceil(S/8)]
        "K": np.ascontiguousarray(K, dtype="<f4"),
        "c2w": np.ascontiguousarray(c2w, dtype="<f4"),
        "seeds": np.asarray(seeds, dtype="<i8"),
    }
    # one metadata key: safetensors writes its metadata map in hash order, and identical configs
    # must give identical bytes
    info = {"format": SHARD_FORMAT, "version": FORMAT_VERSION, "split": split, "size": int(frames.shape[2]),
            "mask_packing": "np.packbits axis=-1 bitorder=big"}
    return save(tensors, metadata={"orbitforge": json.dumps(info, sort_keys=True)})


def decode_shard(path: Path) -> OrbitShard:
    """Read a shard and its sidecar back into arrays (masks unpacked to bool)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"cannot read shard {path}: {exc}; delete it and re-run `orbitforge world dataset` "
                         "with the same settings to render it again") from None
    size = tensors["frames"].shape[2]
    masks = np.unpackbits(tensors["masks"], axis=-1, count=size).astype(bool)  # [A, T, S, S]
    sidecar = json.loads(path.with_suffix(".json").read_text())
    return OrbitShard(tensors["frames"], masks, tensors["K"], tensors["c2w"], tuple(sidecar["assets"]))


write_atomic = write_bytes_atomic  # one atomic writer for the whole project (orbitforge.atomic)


def read_manifest(root: Path) -> dict:
    """The manifest of dataset folder `root`; InputError when there is none or it is not ours."""
    path = Path(root) / MANIFEST
    if not path.is_file():
        raise InputError(f"{root} is not a world dataset (no {MANIFEST}); build one with "
                         "`orbitforge world dataset -o DIR` and pass that DIR")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc}); rebuild the dataset") from None
    if manifest.get("format") != FORMAT:
        raise InputError(f"{path} is not a world dataset manifest (format {manifest.get('format')!r}, "
                         f"expected {FORMAT!r})")
    return manifest


class OrbitDataset:
    """Assets of one split of a world dataset, read lazily, one shard in memory at a time.

    Args:
        root: the folder given to `build_dataset` (holds dataset.json).
        split: "train", "val" (seen colour-category pairs) or "test" (held-out pairs).
    Raises:
        InputError: no dataset at `root`, an unknown split, or a shard of the split is missing
            (the build was interrupted: re-run it to finish).

    Example:
        >>> data = OrbitDataset("runs/world_data", "test")
        >>> sample = data[0]
        >>> sample.frames.shape, sample.attributes["category"], sample.captions[0]
    """

    def __init__(self, root: Path | str, split: str = "train"):
        self.root = Path(root)
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; choose one of: {', '.join(SPLITS)}")
        self.manifest = read_manifest(self.root)
        self.split = split
        self._shards = [s for s in self.manifest["shards"] if s["split"] == split]
        missing = [s["name"] for s in self._shards if not self._path(s["name"]).is_file()]
        if missing:
            raise InputError(f"{self.root}: {len(missing)} shard(s) of split {split!r} are missing "
                             f"(first: {missing[0]}); re-run the same `orbitforge world dataset` command to finish it")
        self._starts = np.cumsum([0] + [s["assets"] for s in self._shards])
        self._cached: tuple[int, OrbitShard] | None = None

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, index: int) -> OrbitSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"asset {index} out of range for {len(self)} assets in split {self.split!r}")
        index %= len(self)
        k = int(np.searchsorted(self._starts, index, side="right")) - 1
        shard = self._load(k)
        return _sample(shard, index - int(self._starts[k]))

    def __iter__(self) -> Iterator[OrbitSample]:
        for shard in self.shards():
            for i in range(len(shard)):
                yield _sample(shard, i)

    def shards(self) -> Iterator[OrbitShard]:
        """Every shard of the split in order, whole: the fast way to read everything."""
        for k in range(len(self._shards)):
            yield self._load(k)

    @property
    def views(self) -> int:
        return int(self.manifest["config"]["views"])

    @property
    def size(self) -> int:
        return int(self.manifest["config"]["size"])

    def _path(self, name: str) -> Path:
        return self.root / SHARD_DIR / f"{name}.safetensors"

    def _load(self, k: int) -> OrbitShard:
        if self._cached is None or self._cached[0] != k:
            self._cached = (k, decode_shard(self._path(self._shards[k]["name"])))
        return self._cached[1]


def _sample(shard: OrbitShard, i: int) -> OrbitSample:
    size = shard.frames.shape[2]
    record = shard.records[i]
    cameras = Cameras(shard.K[i], shard.c2w[i], size, size)
    return OrbitSample(int(record["seed"]), shard.frames[i], shard.masks[i], cameras,
                       tuple(record["captions"]), dict(record["attributes"]))
