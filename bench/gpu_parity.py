"""GPU parity: gsplat on CUDA against orbitforge's CPU rasteriser, same data, same steps.

One prepared script for a machine with a CUDA GPU (the project's target: an H200).  For each
rendered orbit (48 frames, known cameras, masks; Spot and the Khronos Avocado from
../shared/data) it trains `train_splats` twice with the same seed and number of steps, once with
`backend="gsplat"` on CUDA and once with `backend="cpu"`, and reports held-out PSNR/SSIM,
iterations per second and Gaussian counts; the target is |PSNR(gsplat) - PSNR(cpu)| <= 0.3 dB.
Before that it checks one forward + backward of `render_splats` on random splats with both
backends (max |image difference|, max |gradient difference| per parameter), and it times
gsplat's first call separately (gsplat 1.5 compiles its CUDA kernels on first use: minutes).

Without CUDA it prints one line and exits with status 1.  `--smoke` runs only the CPU leg at a
few steps and tiny size (no GPU needed) to check the plumbing, writing to a temporary file.

Run:  .venv/bin/python bench/gpu_parity.py [--steps 1000] [--size 128] [--strategy default]
Writes bench/results/splat_gpu.json (JSON + a printed markdown table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

PSNR_TOLERANCE_DB = 0.3
ASSETS = {"spot": "assets/spot/spot_textured.glb", "avocado": "assets/Avocado.glb"}


def render_parity(device: str) -> dict:
    """One forward + backward on random splats through both backends: max abs differences."""
    from orbitforge.recon.splat.render import render_splats

    g = torch.Generator().manual_seed(0)
    n, size = 2000, 96
    params = {"means": torch.randn(n, 3, generator=g) * 0.4, "scales": torch.full((n, 3), -3.5),
              "quats": torch.randn(n, 4, generator=g), "opacities": torch.randn(n, generator=g),
              "sh0": torch.rand(n, 1, 3, generator=g), "shN": torch.zeros(n, 15, 3)}
    c2w = torch.eye(4)
    c2w[2, 3] = -3.0  # camera on -z looking at the origin (OpenCV: +z forward)
    w2c = torch.linalg.inv(c2w)[None]
    K = torch.tensor([[[100.0, 0, size / 2], [0, 100.0, size / 2], [0, 0, 1]]])
    outs = {}
    for backend, dev in (("cpu", "cpu"), ("gsplat", device)):
        leaves = {k: v.clone().to(dev).requires_grad_(True) for k, v in params.items()}
        out = render_splats(leaves, w2c.to(dev), K.to(dev), size, size, sh_degree=0,
                            background=torch.ones(1, 3, device=dev), backend=backend)
        (out.rgb.square().sum() + out.alpha.sum()).backward()
        outs[backend] = (out.rgb.detach().cpu(), {k: v.grad.cpu() for k, v in leaves.items() if v.grad is not None})
    (img_c, grad_c), (img_g, grad_g) = outs["cpu"], outs["gsplat"]
    return {"gaussians": n, "size": size, "max_abs_image_diff": float((img_c - img_g).abs().max()),
            "max_abs_grad_diff": {k: float((grad_c[k] - grad_g[k]).abs().max()) for k in grad_c if k in grad_g}}


def train_leg(clip, backend: str, args) -> dict:
    from orbitforge.recon.splat.trainer import SplatConfig, train_splats

    config = SplatConfig(steps=args.steps, backend=backend, strategy=args.strategy, seed=0)
    start = time.perf_counter()
    result = train_splats(clip, config)
    seconds = time.perf_counter() - start
    m = result.metrics
    return {"psnr": m["psnr"], "ssim": m["ssim"], "gaussians": m["gaussians"], "train_seconds": m["seconds"],
            "iterations_per_s": args.steps / m["seconds"], "wall_seconds_with_eval": seconds,
            "peak_memory_mb": m["peak_memory_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--strategy", default="default", choices=["default", "mcmc"])
    parser.add_argument("--assets", nargs="+", default=list(ASSETS), choices=list(ASSETS))
    parser.add_argument("--smoke", action="store_true", help="CPU leg only, 20 steps at 32 px: checks the plumbing")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "splat_gpu.json")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.size, args.assets = 20, 32, args.assets[:1]
        args.out = Path(tempfile.mkdtemp()) / "splat_gpu_smoke.json"
    elif not torch.cuda.is_available():
        sys.exit("gpu_parity: no CUDA device visible (torch.cuda.is_available() is False); "
                 "run this on a GPU machine, or --smoke to check the script on a CPU")

    from conftest import DATA

    from orbitforge.mesh import load_meshes
    from orbitforge.render import OrbitConfig, render_orbit

    report: dict = {"steps": args.steps, "size": args.size, "strategy": args.strategy, "smoke": args.smoke,
                    "psnr_tolerance_db": PSNR_TOLERANCE_DB,
                    "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                                "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                                "versions": {p: metadata.version(p) for p in ("torch", "gsplat", "numba")}},
                    "results": {}}
    if not args.smoke:
        # 1. gsplat's first call compiles its CUDA kernels: time it apart from everything else
        start = time.perf_counter()
        report["render_parity"] = render_parity("cuda")
        report["gsplat_first_call_s"] = time.perf_counter() - start
        print(f"render parity (2k random splats, 96²): {json.dumps(report['render_parity'])}", flush=True)

    # 2. equal-step training on each orbit with both backends
    print("| asset | backend | steps | held-out PSNR | SSIM | it/s | Gaussians |\n|---|---|---|---|---|---|---|")
    for name in args.assets:
        clip = render_orbit(load_meshes(DATA / ASSETS[name]), OrbitConfig(frames=48, size=args.size))
        legs = {"cpu": train_leg(clip, "cpu", args)}
        if not args.smoke:
            legs["gsplat"] = train_leg(clip, "gsplat", args)
        for backend, r in legs.items():
            print(f"| {name} | {backend} | {args.steps} | {r['psnr']:.2f} | {r['ssim']:.3f} | "
                  f"{r['iterations_per_s']:.1f} | {r['gaussians']} |", flush=True)
        if "gsplat" in legs:
            diff = legs["gsplat"]["psnr"] - legs["cpu"]["psnr"]
            legs["psnr_diff_db"] = diff
            legs["within_tolerance"] = abs(diff) <= PSNR_TOLERANCE_DB
            legs["speedup_gsplat_over_cpu"] = legs["gsplat"]["iterations_per_s"] / legs["cpu"]["iterations_per_s"]
        report["results"][name] = legs

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    verdicts = [f"{n}: {'within' if r['within_tolerance'] else 'OUTSIDE'} {PSNR_TOLERANCE_DB} dB "
                f"({r['psnr_diff_db']:+.2f})" for n, r in report["results"].items() if "within_tolerance" in r]
    print("; ".join(verdicts) or "smoke run: CPU leg only")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
