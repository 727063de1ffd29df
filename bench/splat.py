"""Splat training benchmark: held-out PSNR against wall-clock seconds on rendered orbits.

Renders a 48-frame orbit (known cameras, masks) of Spot and of the Khronos Avocado from
../shared/data, and loads the 20-view NeRF-synthetic lego subset (real GT cameras, masks from
alpha, `--lego-size`² and `--lego-steps`; frames 0, 8, 16 held out), trains each with
`orbitforge.recon.splat.trainer.train_splats` on this machine's backend ("auto": gsplat on
CUDA, the CPU rasteriser elsewhere), evaluates the held-out frames (every 8th) every `--eval-every` steps, and writes the curve as JSON and a PNG.  The
rasteriser's own forward/backward timings are in bench/splat_raster.py.

Run:  .venv/bin/python bench/splat.py [--size 128] [--steps 1500] [--backend auto] [--strategy default]
      [--lego-size 200] [--lego-steps 1500] [--skip-lego]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from conftest import DATA  # noqa: E402
from test_splat_trainer import lego_clip  # noqa: E402

from orbitforge.mesh import load_meshes  # noqa: E402
from orbitforge.recon.splat.trainer import SplatConfig, train_splats  # noqa: E402
from orbitforge.render import OrbitConfig, render_orbit  # noqa: E402
from orbitforge.viewers.preview import save_image, training_curve  # noqa: E402

ASSETS = {"spot": "assets/spot/spot_textured.glb", "avocado": "assets/Avocado.glb"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--eval-every", type=int, default=250)
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--strategy", default="default", choices=["default", "mcmc"])
    parser.add_argument("--lego-size", type=int, default=200)
    parser.add_argument("--lego-steps", type=int, default=1500)
    parser.add_argument("--skip-lego", action="store_true")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "splat.json")
    args = parser.parse_args()
    results, curves = {}, {}
    print("| asset | size | steps | backend | held-out PSNR | SSIM | Gaussians | seconds | PSNR at ~5 min |")
    print("|---|---|---|---|---|---|---|---|---|")
    runs = [(name, args.size, args.steps) for name in ASSETS]
    if not args.skip_lego:
        runs.append(("lego", args.lego_size, args.lego_steps))
    for name, size, steps in runs:
        if name == "lego":
            clip = lego_clip(size)
        else:
            clip = render_orbit(load_meshes(DATA / ASSETS[name]), OrbitConfig(frames=48, size=size))
        config = SplatConfig(steps=steps, eval_every=args.eval_every, backend=args.backend, strategy=args.strategy)
        result = train_splats(clip, config)
        m = result.metrics
        within = [p["psnr"] for p in result.curve if p["seconds"] <= 300]
        at_five = max(within) if within else None
        results[name] = {"metrics": m, "curve": result.curve, "psnr_within_300s": at_five, "size": size, "steps": steps}
        curves[name] = result.curve
        print(f"| {name} | {size}² | {steps} | {m['backend']} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
              f"{m['gaussians']} | {m['seconds']:.0f} | {at_five if at_five is None else round(at_five, 2)} |", flush=True)
    meta = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_average_1m": os.getloadavg()[0]},
            "size": args.size, "steps": args.steps, "strategy": args.strategy, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, indent=2))
    png = args.out.with_suffix(".png")
    save_image(training_curve(curves, title=f"held-out PSNR, {args.size}² orbits + lego {args.lego_size}², {results['spot']['metrics']['backend']}"), png)
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
