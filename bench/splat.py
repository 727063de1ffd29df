"""Splat training benchmark: held-out PSNR against wall-clock seconds on rendered orbits.

Renders a 48-frame orbit (known cameras, masks) of Spot and of the Khronos Avocado from
../shared/data, trains with `orbitforge.recon.splat.trainer.train_splats` on this machine's
backend ("auto": gsplat on CUDA, the CPU rasteriser elsewhere), evaluates the held-out frames
(every 8th) every `--eval-every` steps, and writes the curve as JSON and a PNG.  The
rasteriser's own forward/backward timings are in bench/splat_raster.py.

Run:  .venv/bin/python bench/splat.py [--size 128] [--steps 1500] [--backend auto]
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
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "splat.json")
    args = parser.parse_args()
    results, curves = {}, {}
    print("| asset | size | steps | backend | held-out PSNR | SSIM | Gaussians | seconds | PSNR at ~5 min |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rel in ASSETS.items():
        clip = render_orbit(load_meshes(DATA / rel), OrbitConfig(frames=48, size=args.size))
        config = SplatConfig(steps=args.steps, eval_every=args.eval_every, backend=args.backend)
        result = train_splats(clip, config)
        m = result.metrics
        within = [p["psnr"] for p in result.curve if p["seconds"] <= 300]
        at_five = max(within) if within else None
        results[name] = {"metrics": m, "curve": result.curve, "psnr_within_300s": at_five}
        curves[name] = result.curve
        print(f"| {name} | {args.size}² | {args.steps} | {m['backend']} | {m['psnr']:.2f} | {m['ssim']:.3f} | "
              f"{m['gaussians']} | {m['seconds']:.0f} | {at_five if at_five is None else round(at_five, 2)} |", flush=True)
    meta = {"machine": {"cpus": os.cpu_count(), "platform": platform.platform()}, "size": args.size,
            "steps": args.steps, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, indent=2))
    png = args.out.with_suffix(".png")
    save_image(training_curve(curves, title=f"held-out PSNR, {args.size}² orbits, {results['spot']['metrics']['backend']}"), png)
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
