"""`orbitforge world ...`: the synthetic world on the command line.

    orbitforge world sample --n 16 -o DIR [--seed 0] [--category NAME]
    orbitforge world dataset --assets N --views T --size S -o DIR [--seed 0] [--workers W] [--shard-size 64]
    orbitforge world probe DATASET -o PROBE.safetensors [--epochs E] [--views V] [--seed 0]

`sample` writes DIR/asset_000.glb ..., DIR/assets.json (seed, attributes and captions per asset)
and DIR/contact_sheet.png (one three-quarter view per asset with its first caption).  Everything
is sampled and rendered before the first file is written, so bad input leaves nothing behind.
`dataset` renders an orbit dataset in shards (`dataset.py`), resumable; `probe` trains the
attribute probe on a dataset's train split and reports held-out accuracy (`probe.py`).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)

SHEET_TILE_PX = 160
"""Side of one asset's view on the contact sheet."""
SHEET_VIEW_AZIMUTH_DEG = 35.0
"""Three-quarter view from the front-right, where handles, spouts and doors show."""


def add_world_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `world sample` on the main parser's subcommands (called from orbitforge.cli)."""
    from orbitforge.gen.world.categories import CATEGORY_NAMES

    world = subparsers.add_parser("world", help="the synthetic asset world: procedural assets with captions")
    world_sub = world.add_subparsers(dest="world_command", required=True, metavar="WORLD_COMMAND")
    p = world_sub.add_parser("sample", help="write N random assets as GLB, their captions as JSON, and a contact sheet")
    p.add_argument("--n", type=int, default=16, help="number of assets (default 16)")
    p.add_argument("-o", "--output", required=True, type=Path, help="folder to write (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first asset; asset i uses seed + i (default 0)")
    p.add_argument("--category", default=None,
                   help=f"only this category (default: any of them): {', '.join(CATEGORY_NAMES)}; quote names with spaces")
    p.set_defaults(func=_cmd_sample)
    _add_dataset_command(world_sub)
    _add_probe_command(world_sub)


def _add_dataset_command(world_sub: argparse._SubParsersAction) -> None:
    from orbitforge.gen.world.dataset import DatasetConfig

    d = DatasetConfig()
    p = world_sub.add_parser("dataset", help="render N assets x T views into shards with held-out splits (resumable)")
    p.add_argument("--assets", type=int, default=d.assets, help=f"number of assets over all splits (default {d.assets})")
    p.add_argument("--views", type=int, default=d.views, help=f"views per asset, one orbit (default {d.views})")
    p.add_argument("--size", type=int, default=d.size, help=f"image side in pixels, 16 to 512 (default {d.size})")
    p.add_argument("-o", "--output", required=True, type=Path, help="dataset folder to create or resume")
    p.add_argument("--seed", type=int, default=d.seed, help=f"dataset seed; asset i uses seed + i (default {d.seed})")
    p.add_argument("--workers", type=int, default=None, help="processes rendering shards (default: one per core)")
    p.add_argument("--shard-size", type=int, default=d.shard_size, help=f"assets per shard (default {d.shard_size})")
    p.set_defaults(func=_cmd_dataset)


def dataset_command(recorded: dict, output: str | Path) -> str:
    """The `orbitforge world dataset` command line that re-creates a dataset from its recorded
    config (settings the command has no flag for are named, so a difference is never hidden)."""
    import shlex

    from orbitforge.gen.world.dataset import DatasetConfig

    flags = {"assets": "--assets", "views": "--views", "size": "--size", "seed": "--seed",
             "shard_size": "--shard-size"}
    parts = ["orbitforge", "world", "dataset"]
    for name, flag in flags.items():
        parts += [flag, str(recorded[name])]
    command = shlex.join(parts + ["-o", str(output)])
    default = asdict(DatasetConfig())
    other = {k: v for k, v in recorded.items() if k not in flags and json.dumps(v) != json.dumps(default.get(k))}
    return command + (f"   # with DatasetConfig {other}" if other else "")


def _add_probe_command(world_sub: argparse._SubParsersAction) -> None:
    from orbitforge.gen.world.probe import ProbeConfig

    d = ProbeConfig()
    p = world_sub.add_parser("probe", help="train the category/colour probe on a dataset and report held-out accuracy")
    p.add_argument("dataset", type=Path, help="folder written by `orbitforge world dataset`")
    p.add_argument("-o", "--output", required=True, type=Path, help="probe weights to write (.safetensors)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"passes over the train split (default {d.epochs})")
    p.add_argument("--views", type=int, default=d.views_per_asset,
                   help=f"views of each train asset per epoch, drawn afresh each epoch (default {d.views_per_asset})")
    p.add_argument("--seed", type=int, default=d.seed, help=f"training seed (default {d.seed})")
    p.set_defaults(func=_cmd_probe)


def _cmd_sample(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from orbitforge.atomic import write_bytes_atomic
    from orbitforge.errors import InputError
    from orbitforge.gen.world import sample_assets

    # 1. everything that can fail on bad input, before anything is written
    if args.output.exists() and not args.output.is_dir():
        raise InputError(f"output {args.output} is a file; give a folder for -o")
    assets = sample_assets(args.n, seed=args.seed, category=args.category)
    glbs = [a.to_glb_bytes() for a in tqdm(assets, desc="world: meshes", unit="asset", disable=None)]
    views = render_views(assets, progress=tqdm(total=len(assets), desc="world: renders", unit="asset", disable=None))
    # 2. files, each written under a temporary name and renamed into place
    args.output.mkdir(parents=True, exist_ok=True)
    records = []
    for i, (asset, glb) in enumerate(zip(assets, glbs)):
        name = f"asset_{i:03d}.glb"
        write_bytes_atomic(args.output / name, glb)
        records.append({"file": name, **asset.to_dict()})
    write_bytes_atomic(args.output / "assets.json", json.dumps({"assets": records}, indent=1).encode())
    from orbitforge.viewers.preview import contact_sheet, save_image

    labels = [a.captions[0] for a in assets]
    columns = min(len(assets), 8)
    save_image(contact_sheet(views, labels=labels, columns=columns, max_frames=len(views), label_lines=3),
               args.output / "contact_sheet.png")
    print(f"world: {len(assets)} assets -> {args.output} (asset_*.glb, assets.json, contact_sheet.png)")
    return 0


class _StageBars:
    """tqdm bars for a library `progress(stage, done, total)` callback, one bar per stage."""

    def __init__(self, prefix: str):
        self.prefix, self.bars = prefix, {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:  # starts at `done`, so a resumed run's ETA counts only new work
            bar = self.bars[stage] = tqdm(total=total, initial=done, desc=f"{self.prefix}: {stage}", unit="asset",
                                          disable=None, dynamic_ncols=True)
        bar.update(done - bar.n)

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _cmd_dataset(args: argparse.Namespace) -> int:
    from orbitforge.gen.world.dataset import DatasetConfig, build_dataset

    config = DatasetConfig(assets=args.assets, views=args.views, size=args.size, seed=args.seed,
                           shard_size=args.shard_size)
    bars = _StageBars("world dataset")
    try:
        summary = build_dataset(args.output, config, workers=args.workers, progress=bars)
    finally:
        bars.close()
    counts = ", ".join(f"{k} {v}" for k, v in summary.counts.items())
    state = f"rendered {summary.shards_rendered} shard(s)" + (
        f", {summary.shards_skipped} already complete" if summary.shards_skipped else "")
    print(f"world dataset: {state} in {summary.seconds:.1f} s -> {args.output} ({counts})")
    return 0


def _cmd_probe(args: argparse.Namespace) -> int:
    from orbitforge.gen.world.probe import ProbeConfig, train_probe

    config = ProbeConfig(epochs=args.epochs, views_per_asset=args.views, seed=args.seed)
    if args.output.suffix != ".safetensors" or args.output.is_dir():
        from orbitforge.errors import InputError

        raise InputError(f"probe output must be a .safetensors file, got {args.output}")
    bars = _StageBars("world probe")
    try:
        probe, metrics = train_probe(args.dataset, config, progress=bars)
    finally:
        bars.close()
    probe.save(args.output)
    print(f"world probe: trained in {metrics['train_seconds']:.0f} s on {metrics['train_assets']} assets "
          f"({metrics['epochs']} epochs of {metrics['train_frames_per_epoch']} frames) -> {args.output}")
    names = {"val": "val (seen colour-category pairs)", "test": "test (held-out colour-category pairs)"}
    for split, m in metrics["heldout"].items():
        print(f"  {names[split]}, {m['frames']} frames: category {m['category_accuracy']:.1%}, "
              f"main colour {m['colour_accuracy']:.1%} per frame; {m['asset_colour_accuracy']:.1%} colour per asset")
    return 0


def render_views(assets: Sequence, size: int = SHEET_TILE_PX, progress=None) -> np.ndarray:
    """One lit three-quarter view per asset, (N, size, size, 3) uint8, antialiased."""
    from orbitforge.render import OrbitConfig, RenderConfig, orbit_cameras_for, render

    config = OrbitConfig(frames=1, size=size, elevation_deg=22.0, start_azimuth_deg=SHEET_VIEW_AZIMUTH_DEG,
                         render=RenderConfig(supersample=3))
    views = []
    for asset in assets:
        views.append(render(asset.parts, orbit_cameras_for(asset.parts, config), config.render).rgb[0])
        if progress is not None:
            progress.update(1)
    if progress is not None:
        progress.close()
    return np.stack(views)

