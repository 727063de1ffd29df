"""Mesh-from-splats benchmark: geometry (Chamfer) and texture (PSNR at held-out views) on real assets.

For Spot and the Khronos Avocado from ../shared/data: render a 48-frame orbit (known cameras,
masks), train splats (`train_splats`, this machine's backend), extract the textured mesh with
`orbitforge.export.mesh.mesh_from_splats`, then measure

* Chamfer: symmetric mean surface distance to the ground-truth mesh (50k samples each way),
  as a share of the truth's bounding-box diagonal;
* PSNR of the exported mesh re-rendered by orbitforge's renderer against ground-truth renders at
  held-out views (between the training azimuths, at other elevations).  The truth is rendered
  as the training frames were (lit); the export is rendered unlit, because its texture is
  baked from those lit frames and already holds their (view-independent) shading;
* seconds per phase of `mesh_from_splats`.

Writes bench/results/export.json and a side-by-side PNG: per asset three rows over the even held-out
views, the truth, the textured export and the export's bare geometry.

Run:  .venv/bin/python bench/export.py [--size 128] [--steps 1500] [--cache DIR]
`--cache DIR` keeps the trained splats (DIR/NAME_SIZE_STEPS.ply) so reruns skip training.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import DATA  # noqa: E402

from orbitforge.export.mesh import MeshConfig, mesh_from_splats  # noqa: E402
from orbitforge.gaussians import load_ply, save_ply  # noqa: E402
from orbitforge.mesh import load_meshes  # noqa: E402
from orbitforge.recon.metrics import surface_chamfer  # noqa: E402
from orbitforge.recon.splat.trainer import SplatConfig, train_splats  # noqa: E402
from orbitforge.render import OrbitConfig, RenderConfig, orbit_cameras_for, render, render_orbit  # noqa: E402

ASSETS = {"spot": "assets/spot/spot_textured.glb", "avocado": "assets/Avocado.glb"}
HELD_OUT = ((10.0, 3.75), (35.0, 11.25))  # (elevation, start azimuth): off the training ring's views
HELD_OUT_VIEWS = 4  # per held-out ring


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-12)))


def held_out_views(parts, size: int, lit: RenderConfig):
    """Truth renders, cameras: HELD_OUT_VIEWS per ring of HELD_OUT."""
    cams, truth = [], []
    for elevation, azimuth in HELD_OUT:
        config = OrbitConfig(frames=HELD_OUT_VIEWS, size=size, elevation_deg=elevation, start_azimuth_deg=azimuth, render=lit)
        c = orbit_cameras_for(parts, config)
        cams.append(c)
        truth.append(render(parts, c, lit).rgb)
    return cams, np.concatenate(truth)


def trained_scene(name: str, clip, args):
    path = args.cache / f"{name}_{args.size}_{args.steps}.ply" if args.cache else None
    if path is not None and path.is_file():
        return load_ply(path), None
    t0 = time.perf_counter()
    result = train_splats(clip, SplatConfig(steps=args.steps, sh_degree=args.sh_degree))
    seconds = time.perf_counter() - t0
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        save_ply(result.scene, path)
    return result.scene, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=48)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--sh-degree", type=int, default=1)
    parser.add_argument("--faces", type=int, default=MeshConfig.faces)
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "export.json")
    args = parser.parse_args()
    lit = OrbitConfig().render  # the training frames' shading
    unlit = RenderConfig(shading="unlit", supersample=lit.supersample)
    grey = RenderConfig(supersample=lit.supersample)
    results, rows = {}, []
    print("| asset | faces | Chamfer % diag | held-out PSNR dB | mesh s | phases s |")
    print("|---|---|---|---|---|---|")
    for name, rel in ASSETS.items():
        parts = load_meshes(DATA / rel)
        clip = render_orbit(parts, OrbitConfig(frames=args.frames, size=args.size))
        scene, train_seconds = trained_scene(name, clip, args)
        phases, last = {}, [time.perf_counter()]

        def progress(phase, done, total, phases=phases, last=last):
            if done == total:
                now = time.perf_counter()
                phases[phase] = round(now - last[0], 2)
                last[0] = now

        t0 = time.perf_counter()
        mesh = mesh_from_splats(scene, clip, MeshConfig(faces=args.faces), progress=progress)
        mesh_seconds = time.perf_counter() - t0
        cams, truth = held_out_views(parts, args.size, lit)
        got = np.concatenate([render(mesh, c, unlit).rgb for c in cams])
        bare = replace(mesh, uvs=None, base_colour=None, _cache={})
        geometry = np.concatenate([render(bare, c, grey).rgb for c in cams])
        per_view = [psnr(t, g) for t, g in zip(truth, got)]
        cd = surface_chamfer(mesh, parts, samples=50_000)
        results[name] = {"chamfer_fraction_of_diagonal": round(cd, 5), "psnr_held_out_db": round(float(np.mean(per_view)), 2),
                         "psnr_per_view_db": [round(p, 2) for p in per_view], "faces": len(mesh.faces),
                         "vertices": len(mesh.vertices), "gaussians": scene.num_gaussians,
                         "mesh_seconds": round(mesh_seconds, 1), "phase_seconds": phases,
                         "train_seconds": "splats from --cache" if train_seconds is None else round(train_seconds, 1)}
        print(f"| {name} | {len(mesh.faces)} | {100 * cd:.2f} | {np.mean(per_view):.2f} | {mesh_seconds:.0f} | {phases} |",
              flush=True)
        rows.append(np.concatenate([np.concatenate(list(x[::2]), 1) for x in (truth, got, geometry)], 0))
    meta = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "size": args.size, "frames": args.frames,
            "steps": args.steps, "sh_degree": args.sh_degree, "held_out": {"rings_elevation_azimuth_deg": HELD_OUT,
                                                                            "views_per_ring": HELD_OUT_VIEWS},
            "mesh_config": "MeshConfig() defaults" if args.faces == MeshConfig.faces else f"MeshConfig(faces={args.faces})",
            "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, indent=2))
    png = args.out.with_suffix(".png")
    Image.fromarray(np.concatenate(rows, 0)).save(png)
    print(f"wrote {args.out} and {png} (rows per asset: truth | export, textured, unlit | export's geometry, lit)")


if __name__ == "__main__":
    main()
