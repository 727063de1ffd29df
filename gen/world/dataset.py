"""Orbit datasets of the synthetic world: N assets x T views, in shards, with held-out splits.

`build_dataset(root, config)` is the one entry point.  It works in two passes:

1. plan: sample every asset's attributes (in the worker pool), route each asset to `train`,
   `val` or `test` (`splits.py`: held-out colour-category pairs go to `test`), cut each split
   into shards of `shard_size` assets, and write the plan into `DIR/dataset.json`;
2. render: each worker renders whole shards (orbit of `views` cameras at a random elevation and
   start azimuth, white background, masks) and writes each one atomically (`shards.py`).

Everything is a pure function of `config`: asset i is `sample_asset(config.seed + i)`, its view
angles come from its own random stream, and shards are cut from the plan, so the bytes on disk do
not depend on the number of workers or on the order in which shards finish.  Re-running with the
same config skips every shard already on disk; a different config in the same folder is refused.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
from concurrent.futures import Executor, ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from orbitforge.errors import InputError
from orbitforge.gen.world import shards as S
from orbitforge.gen.world.splits import SPLITS, all_pairs, assign_split, holdout_pairs

logger = logging.getLogger(__name__)

MIN_SIZE, MAX_SIZE = 16, 512
"""Image side limits: below 16 px an asset is a blob; above 512 a shard of 64 orbits is GBs."""
MAX_SHARD_BYTES = 2 * 2**30
"""A shard is held in memory whole while it renders; larger ones are refused up front."""
_VIEW_STREAM = 103
"""Random-stream tag of the per-asset view angles (see splits.py for the others)."""
_PLAN_CHUNK = 64
"""Assets whose attributes one worker task samples while planning."""

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage "plan" or "render", counts in assets."""


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


@dataclass(frozen=True)
class DatasetConfig:
    """What to render; every field is recorded in dataset.json, and a resumed run must match it."""

    assets: int = 1024
    """Number of assets over all splits together; asset i is `sample_asset(seed + i)`."""
    views: int = 8
    """Views per asset, evenly spaced over 360 degrees of azimuth (one orbit)."""
    size: int = 128
    """Square image side in pixels, 16 to 512."""
    seed: int = 0
    """Dataset seed: first asset seed, and the seed of view angles, held-out pairs and val draw.
    Datasets whose seeds differ by less than `assets` share assets: space them apart."""
    shard_size: int = 64
    """Assets per shard file (the last shard of a split may be smaller)."""
    fov_deg: float = 40.0
    """Vertical field of view of every camera."""
    elevation_range_deg: tuple[float, float] = (0.0, 35.0)
    """Each orbit's elevation is drawn uniformly from this range (degrees above the centre)."""
    supersample: int = 2
    """Render at this factor and box-filter down: antialiased edges at supersample^2 the cost."""
    holdout_fraction: float = 0.1
    """Share of (main colour, category) pairs whose assets go only to the `test` split."""
    val_fraction: float = 0.05
    """Share of the remaining assets that go to `val` (seen pairs, unseen assets)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "elevation_range_deg", tuple(float(v) for v in self.elevation_range_deg))
        if not _is_int(self.assets) or self.assets < 1:
            raise InputError(f"a dataset needs at least 1 asset, got {self.assets!r}; use --assets 1 or more")
        if not _is_int(self.views) or self.views < 1:
            raise InputError(f"each asset needs at least 1 view, got {self.views!r}; use --views 1 or more")
        if not _is_int(self.size) or not MIN_SIZE <= self.size <= MAX_SIZE:
            raise InputError(f"image size must be {MIN_SIZE} to {MAX_SIZE} pixels, got {self.size!r}; "
                             "choose --size in that range (64, 128 and 256 are typical)")
        if not _is_int(self.seed) or self.seed < 0:
            raise InputError(f"seed must be a non-negative integer, got {self.seed!r}")
        if not _is_int(self.shard_size) or self.shard_size < 1:
            raise InputError(f"shard size must be at least 1 asset, got {self.shard_size!r}")
        lo, hi = self.elevation_range_deg
        if not -90.0 < lo <= hi < 90.0:
            raise InputError(f"elevation range must satisfy -90 < low <= high < 90 degrees, got {self.elevation_range_deg}")
        if not 0.0 <= self.holdout_fraction < 0.5 or not 0.0 <= self.val_fraction < 0.5:
            raise InputError(f"holdout and val fractions must be in [0, 0.5), got {self.holdout_fraction} "
                             f"and {self.val_fraction}")
        from orbitforge.render import OrbitConfig, RenderConfig

        OrbitConfig(frames=self.views, size=self.size, fov_deg=self.fov_deg,
                    render=RenderConfig(supersample=self.supersample))  # camera and renderer limits
        shard_bytes = self.shard_size * self.views * self.size**2 * 4 * self.supersample**2
        if shard_bytes > MAX_SHARD_BYTES:
            raise InputError(f"a shard of {self.shard_size} assets x {self.views} views at {self.size} px needs about "
                             f"{shard_bytes / 2**30:.1f} GiB while rendering (limit {MAX_SHARD_BYTES / 2**30:.0f} GiB); "
                             "use a smaller --shard-size")


@dataclass(frozen=True)
class DatasetSummary:
    """What `build_dataset` did.

    Attributes:
        root: the dataset folder.
        counts: assets per split ("train", "val", "test").
        shards_rendered, shards_skipped: shard files written now, and found complete from before.
        assets_rendered: assets rendered now (0 when everything was already there).
        seconds: wall time of this call.
    """

    root: Path
    counts: dict[str, int]
    shards_rendered: int
    shards_skipped: int
    assets_rendered: int
    seconds: float


def build_dataset(root: Path | str, config: DatasetConfig = DatasetConfig(), *, workers: int | None = None,
                  progress: Progress | None = None) -> DatasetSummary:
    """Render (or finish rendering) the orbit dataset `config` into folder `root`.

    Args:
        root: output folder; created if missing; may hold an unfinished build of the same config.
        config: what to render.
        workers: processes rendering shards in parallel; None means `os.cpu_count()`; 1 renders in
            this process (the renderer still uses every core for the frames of one orbit).
        progress: called as progress(stage, done, total) after each planning chunk and shard.
    Returns:
        a DatasetSummary.  The dataset is read back with `OrbitDataset(root, split)`.
    Raises:
        InputError: a bad config, `root` is a file or a folder of other things, or `root` holds a
            dataset of a different config.  Nothing is written in these cases.

    Example:
        >>> build_dataset("runs/world_data", DatasetConfig(assets=256, views=4, size=64))
    """
    t0 = time.perf_counter()
    root = Path(root)
    workers = _check_workers(workers)
    manifest = _existing_manifest(root, config)
    root.mkdir(parents=True, exist_ok=True)
    (root / S.SHARD_DIR).mkdir(exist_ok=True)
    _remove_partials(root / S.SHARD_DIR)
    pool = _executor(workers)
    finished = False
    try:
        if manifest is None:
            manifest = _plan(config, pool, progress)
            S.write_atomic(root / S.MANIFEST, _to_json(manifest))
        todo = _missing_shards(root, manifest)
        if len(todo) < len(manifest["shards"]):
            logger.info("resuming %s: %d of %d shards already complete", root, len(manifest["shards"]) - len(todo),
                        len(manifest["shards"]))
        done_assets = config.assets - sum(s["assets"] for s in todo)
        if progress is not None:
            progress("render", done_assets, config.assets)
        futures = [pool.submit(_render_shard, str(root), shard, asdict(config)) for shard in todo]
        for future in as_completed(futures):
            done_assets += future.result()
            if progress is not None:
                progress("render", done_assets, config.assets)
        finished = True
    finally:  # on an error or Ctrl-C, shards not yet started are dropped; finished ones stay
        pool.shutdown(wait=True, cancel_futures=not finished)
    manifest["complete"] = True
    S.write_atomic(root / S.MANIFEST, _to_json(manifest))
    return DatasetSummary(root, dict(manifest["counts"]), len(todo), len(manifest["shards"]) - len(todo),
                          sum(s["assets"] for s in todo), time.perf_counter() - t0)


def _missing_shards(root: Path, manifest: dict) -> list[dict]:
    return [s for s in manifest["shards"] if not (root / S.SHARD_DIR / f"{s['name']}.safetensors").is_file()]


def view_angles(config: DatasetConfig, index: int) -> tuple[float, float]:
    """(elevation_deg, start_azimuth_deg) of asset `index`'s orbit: its own random stream."""
    rng = np.random.default_rng([_VIEW_STREAM, config.seed, index])
    return float(rng.uniform(*config.elevation_range_deg)), float(rng.uniform(0.0, 360.0))


# --- planning ---------------------------------------------------------------------------------


def _plan(config: DatasetConfig, pool: Executor, progress: Progress | None) -> dict:
    """Sample attributes, route assets to splits, cut shards: the manifest before any render."""
    seeds = [config.seed + i for i in range(config.assets)]
    chunks = [seeds[i:i + _PLAN_CHUNK] for i in range(0, len(seeds), _PLAN_CHUNK)]
    pairs: list[tuple[str, str]] = []
    for chunk_pairs in pool.map(_main_pairs, chunks):  # map keeps the order: deterministic
        pairs.extend(chunk_pairs)
        if progress is not None:
            progress("plan", len(pairs), config.assets)
    held = holdout_pairs(config.seed, config.holdout_fraction)
    members: dict[str, list[int]] = {split: [] for split in SPLITS}
    for index, (colour, category) in enumerate(pairs):
        split = assign_split(index, colour, category, seed=config.seed, held_out=held, val_fraction=config.val_fraction)
        members[split].append(index)
    shards = []
    for split in SPLITS:
        indices = members[split]
        for number, start in enumerate(range(0, len(indices), config.shard_size)):
            chunk = indices[start:start + config.shard_size]
            shards.append({"name": S.shard_name(split, number), "split": split, "assets": len(chunk), "indices": chunk})
    counts = {split: len(members[split]) for split in SPLITS}
    logger.info("planned %d assets: %s; %d held-out pairs of %d", config.assets, counts, len(held), len(all_pairs()))
    return {
        "format": S.FORMAT, "version": S.FORMAT_VERSION, "complete": False, "config": asdict(config),
        "split": {
            "rule": "test: assets whose (main colour, category) pair is held out; val: a seeded share of the rest",
            "holdout_pairs": sorted([colour, category] for colour, category in held),
            "holdout_fraction": config.holdout_fraction, "val_fraction": config.val_fraction,
        },
        "counts": {**counts, "frames": config.assets * config.views},
        "shards": shards,
    }


def _main_pairs(seeds: list[int]) -> list[tuple[str, str]]:
    """(main colour, category) of each seed's asset (runs in a worker)."""
    from orbitforge.gen.world.assets import sample_asset

    return [(a.attributes.main_colour, a.attributes.category) for a in map(sample_asset, seeds)]


# --- rendering --------------------------------------------------------------------------------


def _render_shard(root: str, shard: dict, config_fields: dict) -> int:
    """Render one shard and write it (sidecar first, tensors last); returns its asset count."""
    from orbitforge.gen.world.assets import sample_asset
    from orbitforge.render import OrbitConfig, RenderConfig, orbit_cameras_for, render

    config = DatasetConfig(**config_fields)
    frames, masks, Ks, c2ws, records = [], [], [], [], []
    for index in shard["indices"]:
        asset = sample_asset(config.seed + index)
        elevation, azimuth = view_angles(config, index)
        orbit = OrbitConfig(frames=config.views, size=config.size, elevation_deg=elevation, fov_deg=config.fov_deg,
                            start_azimuth_deg=azimuth, render=RenderConfig(supersample=config.supersample))
        cameras = orbit_cameras_for(asset.parts, orbit)
        out = render(asset.parts, cameras, orbit.render)
        frames.append(out.rgb)
        masks.append(out.mask)
        Ks.append(cameras.K)
        c2ws.append(cameras.c2w)
        records.append({"index": index, **asset.to_dict(), "elevation_deg": round(elevation, 6),
                        "start_azimuth_deg": round(azimuth, 6)})
    shard_dir = Path(root) / S.SHARD_DIR
    sidecar = {"format": S.SHARD_FORMAT, "split": shard["split"], "views": config.views, "size": config.size,
               "assets": records}
    S.write_atomic(shard_dir / f"{shard['name']}.json", _to_json(sidecar))
    data = S.encode_shard(np.stack(frames), np.stack(masks), np.stack(Ks), np.stack(c2ws),
                          [config.seed + i for i in shard["indices"]], split=shard["split"])
    S.write_atomic(shard_dir / f"{shard['name']}.safetensors", data)
    return len(records)


# --- helpers ----------------------------------------------------------------------------------


class _InlineExecutor(Executor):
    """workers=1: run tasks here, in order, with no process start-up and no pickling."""

    def submit(self, fn, /, *args, **kwargs):
        from concurrent.futures import Future

        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except Exception as exc:  # delivered through the future, like a pool would
            future.set_exception(exc)
        return future


def _executor(workers: int) -> Executor:
    if workers == 1:
        return _InlineExecutor()
    # spawn, not fork: the parent may hold OpenMP threads (numba, torch) that a fork would corrupt
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
                               initializer=_init_worker)


def _init_worker() -> None:
    """One render thread per worker process: the processes already fill the cores."""
    import numba

    numba.set_num_threads(1)


def _check_workers(workers: int | None) -> int:
    if workers is None:
        return os.cpu_count() or 1
    if not _is_int(workers) or workers < 1:
        raise InputError(f"workers must be at least 1, got {workers!r}")
    return int(workers)


def _existing_manifest(root: Path, config: DatasetConfig) -> dict | None:
    """The plan of an unfinished (or finished) build of the same config in `root`, or None.

    Refuses a file, a folder of unrelated things and a dataset of another config, before
    anything is written."""
    if root.exists() and not root.is_dir():
        raise InputError(f"output {root} is a file; give a folder for -o")
    if not root.is_dir():
        return None
    if not (root / S.MANIFEST).is_file():
        if any(root.iterdir()):
            raise InputError(f"{root} is not empty and holds no {S.MANIFEST}; give a new or empty folder for -o")
        return None
    manifest = S.read_manifest(root)
    recorded = manifest.get("config", {})
    wanted = _from_json(_to_json(asdict(config)))
    if recorded != wanted:
        changed = sorted(k for k in set(recorded) | set(wanted) if recorded.get(k) != wanted.get(k))
        raise InputError(f"{root} holds a dataset built with other settings ({', '.join(changed)} differ); "
                         "re-run with the same settings to resume it, or give a new folder for -o")
    return manifest


def _remove_partials(shard_dir: Path) -> None:
    """Temporary files of an interrupted run (one builder per folder at a time)."""
    stale = list(shard_dir.glob(".*.partial-*"))
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        logger.warning("removed %d partial file(s) left by an interrupted run in %s", len(stale), shard_dir)


def _to_json(obj: dict) -> bytes:
    import json

    return json.dumps(obj, indent=1).encode()


def _from_json(data: bytes) -> dict:
    import json

    return json.loads(data)
