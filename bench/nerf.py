"""NeRF (nerfstudio nerfacto) beside splats on the same rendered orbit: held-out PSNR, seconds,
and the Chamfer distance of each exported mesh to the true asset.

Both backends run as a user runs them, through the CLI on one run folder each:
`render-orbit` (known cameras and masks), then `splat` + `export` or `nerf` + `export --from nerf`.
Both hold out every 8th frame and are measured by the same code (`recon.metrics.image_quality`).
Needs the NeRF environment (`make setup-nerf`); without it the NeRF row says so.

Run:  .venv/bin/python bench/nerf.py [--asset spot] [--size 96] [--frames 24] [--nerf-steps 300]
      [--rays 1024] [--depth-size 64] [--splat-steps 1500] [--work /tmp/orbitforge-bench-nerf]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from conftest import DATA  # noqa: E402
from orbitforge.recon.metrics import surface_chamfer  # noqa: E402

from orbitforge.cli import main as orbitforge  # noqa: E402
from orbitforge.errors import InputError  # noqa: E402
from orbitforge.mesh import load_meshes  # noqa: E402

ASSETS = {"spot": "assets/spot/spot_textured.glb", "avocado": "assets/Avocado.glb"}


def run_cli(*argv: str) -> float:
    t0 = time.perf_counter()
    code = orbitforge([str(a) for a in argv])
    if code != 0:
        raise SystemExit(f"orbitforge {' '.join(map(str, argv))} exited {code}")
    return time.perf_counter() - t0


def mesh_chamfer(run: Path, truth_parts) -> float:
    """Chamfer distance (fraction of the true diagonal) of the exported GLB, moved back into the
    run's world (the export stood it on the ground at glTF scale)."""
    import trimesh

    from orbitforge.export.presets import Placement

    placement = json.loads((run / "run.json").read_text())["stages"]["asset"]["metrics"]["placement_gltf"]
    mesh = trimesh.load(run / "asset" / "asset.glb", force="mesh")
    mesh.apply_transform(Placement.from_json(placement).file_to_world())
    return surface_chamfer(mesh, truth_parts, samples=50_000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asset", choices=sorted(ASSETS), default="spot")
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--nerf-steps", type=int, default=300)
    parser.add_argument("--rays", type=int, default=1024)
    parser.add_argument("--depth-size", type=int, default=64)
    parser.add_argument("--splat-steps", type=int, default=1500)
    parser.add_argument("--work", type=Path, default=Path("/tmp/orbitforge-bench-nerf"))
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "nerf.json")
    args = parser.parse_args()
    asset = DATA / ASSETS[args.asset]
    if not asset.is_file():
        raise SystemExit(f"{asset} is missing: this benchmark reads ../shared/data")
    truth = load_meshes(asset)
    shutil.rmtree(args.work, ignore_errors=True)
    rows = {}
    for backend in ("splats", "nerf"):
        run = args.work / backend
        run_cli("render-orbit", asset, "-o", run, "--frames", args.frames, "--size", args.size)
        try:
            if backend == "splats":
                train = run_cli("splat", run, "--steps", args.splat_steps)
                settings = {"steps": args.splat_steps}
            else:
                train = run_cli("nerf", run, "--steps", args.nerf_steps, "--rays", args.rays,
                                "--depth-size", args.depth_size)
                settings = {"steps": args.nerf_steps, "rays_per_batch": args.rays, "depth_size": args.depth_size}
        except SystemExit as exc:
            rows[backend] = {"error": str(exc)}
            continue
        export = run_cli("export", run, "--formats", "glb", "--from", backend)
        stages = json.loads((run / "run.json").read_text())["stages"]
        trained = stages["splats" if backend == "splats" else "nerf"]["metrics"]
        rows[backend] = {**settings, "psnr_held_out_db": trained["psnr"], "ssim_held_out": trained["ssim"],
                         "train_seconds": round(train, 1), "export_seconds": round(export, 1),
                         "faces": stages["asset"]["metrics"].get("faces")}
        try:
            rows[backend]["chamfer_fraction_of_diagonal"] = round(mesh_chamfer(run, truth), 5)
        except (KeyError, InputError) as exc:
            rows[backend]["chamfer_fraction_of_diagonal"] = f"not measured: {exc}"
    print(f"| backend | settings | held-out PSNR dB | SSIM | train s | export s | Chamfer % diag |")
    print("|---|---|---|---|---|---|---|")
    for backend, r in rows.items():
        if "error" in r:
            print(f"| {backend} | {r['error']} | | | | | |")
            continue
        cd = r["chamfer_fraction_of_diagonal"]
        cd = f"{100 * cd:.2f}" if isinstance(cd, float) else cd
        settings = ", ".join(f"{k} {r[k]}" for k in ("steps", "rays_per_batch", "depth_size") if k in r)
        print(f"| {backend} | {settings} | {r['psnr_held_out_db']:.2f} | {r['ssim_held_out']:.3f} | "
              f"{r['train_seconds']:.0f} | {r['export_seconds']:.0f} | {cd} |")
    if all("error" not in r for r in rows.values()):
        ratio = rows["nerf"]["train_seconds"] / rows["splats"]["train_seconds"]
        print(f"nerf/splats training seconds: {ratio:.2f}x")
    meta = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "asset": args.asset,
            "size": args.size, "frames": args.frames, "held_out": "every 8th frame",
            "command": "python bench/nerf.py " + " ".join(sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
