"""`orbitforge world ...`: the synthetic world on the command line.

    orbitforge world sample --n 16 -o DIR [--seed 0] [--category NAME]

writes DIR/asset_000.glb ..., DIR/assets.json (seed, attributes and captions per asset) and
DIR/contact_sheet.png (one three-quarter view per asset with its first caption).  Everything is
sampled and rendered before the first file is written, so bad input leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
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


def _cmd_sample(args: argparse.Namespace) -> int:
    from tqdm import tqdm

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
        _write_atomic(args.output / name, glb)
        records.append({"file": name, **asset.to_dict()})
    _write_atomic(args.output / "assets.json", json.dumps({"assets": records}, indent=1).encode())
    from orbitforge.viewers.preview import contact_sheet, save_image

    labels = [a.captions[0] for a in assets]
    columns = min(len(assets), 8)
    save_image(contact_sheet(views, labels=labels, columns=columns, max_frames=len(views), label_lines=3),
               args.output / "contact_sheet.png")
    print(f"world: {len(assets)} assets -> {args.output} (asset_*.glb, assets.json, contact_sheet.png)")
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


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
