"""Splat rasteriser benchmark: forward + backward time of the CPU rasterisers on realistic scenes.

Measures, in one process and one run, `orbitforge.recon.splat.raster_cpu`:

* ``fast``      - `rasterize_fast`: tile binning, numba forward and hand-written numba backward (the choice);
* ``reference`` - `rasterize_reference`: the exact pure-torch twin (every (Gaussian, pixel) pair,
  sort, dense per-pixel cumprod, autograd backward).  Skipped with a reason where its pairs would
  not fit `--ref-max-pairs`.
* ``torch tiles`` - `rasterize_torch_tiles` below: a straightforward vectorised torch peer like the
  issue's baseline - the fast path's own 16x16 tile lists padded to the longest, alpha for every
  (tile pixel, list entry) as one dense tensor, cumprod, weighted sum, autograd backward; no
  early termination (so it differs from the others only where T < 1e-4).  Skipped above
  `--peer-max-elements` dense elements (memory).

Scenes come from `_random_scene`: one camera, D = 4 (RGB + depth), Gaussians with 2D covariance
eigenvalues 0.5-20 px^2 (radii 3-14 px) spread over the image (10 % margin), opacities 0.05-0.99,
random depths.  The loss is a fixed random linear function of render and alpha, so the backward
sees a dense upstream gradient as in training.  Each timing is the median of `--repeats` runs
after a warm-up call (numba compile or cache load, timed separately).  The machine is shared and
noisy: the ratio fast / reference measured in the same run means more than absolute times, and
the CPU seconds (all threads, `time.process_time`) and the load average are reported beside the
wall times so a run on a busy machine can be read for what it is.

Project target (from the CPU-splat issue): a straightforward vectorised torch version took 0.18 s
at 128^2 and 0.58 s at 256^2 for 10k Gaussians (forward + backward) on this machine; the fast path
should be >= 5x faster than that.

Run:  .venv/bin/python bench/splat_raster.py [--counts 10000 50000] [--sizes 128 256] [--repeats 5]
Prints a markdown table and writes JSON (default bench/results/splat_raster.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from importlib import metadata
from pathlib import Path

import numba
import numpy as np
import torch

from orbitforge.recon.splat import raster_cpu
from orbitforge.recon.splat.raster_cpu import (ALPHA_MAX, ALPHA_MIN, TILE_SIZE, _bin_kernel, _depth_order, _pixel_boxes,
                                               _random_scene, rasterize_fast, rasterize_reference)

ISSUE_BASELINE_S = {128: 0.18, 256: 0.58}  # vectorised torch fwd+bwd, 10k Gaussians, from the issue
TARGET_SPEEDUP = 5.0
D = 4


def make_scene(n: int, size: int, seed: int) -> dict:
    gen = torch.Generator().manual_seed(seed)
    scene = _random_scene(1, n, size, size, D, gen)
    scene["upstream"] = (torch.randn(1, size, size, D, generator=gen), torch.randn(1, size, size, 1, generator=gen))
    return scene


def pair_count(scene: dict, size: int) -> int:
    """(Gaussian, pixel) pairs the reference would materialise: the summed clipped box areas."""
    b = _pixel_boxes(scene["means2d"].numpy(), scene["radii"].numpy(), size, size).astype(np.int64)
    return int(((b[..., 1] - b[..., 0] + 1).clip(min=0) * (b[..., 3] - b[..., 2] + 1).clip(min=0)).sum())


def rasterize_torch_tiles(means2d, conics, colors, opacities, depths, radii, width, height, background=None):
    """The vectorised-torch peer (one camera): dense [tiles, pixels, K] alpha over padded tile lists."""
    C, N, D = colors.shape
    assert C == 1, "the peer handles one camera"
    ts = TILE_SIZE
    tiles_x, tiles_y = -(-width // ts), -(-height // ts)
    boxes = _pixel_boxes(means2d.detach().numpy(), radii.numpy(), width, height)
    offsets, ids = _bin_kernel(boxes, _depth_order(depths.numpy()).astype(np.int32), ts, tiles_x, tiles_y)
    counts = torch.from_numpy(np.diff(offsets))  # [T]
    K = max(int(counts.max()), 1)
    n_tiles = tiles_x * tiles_y
    slot = torch.arange(K)
    valid_slot = slot[None, :] < counts[:, None]  # [T, K]
    gid = torch.from_numpy(ids.astype(np.int64))[(torch.from_numpy(offsets[:-1])[:, None] + slot).clamp(max=max(len(ids) - 1, 0))]
    gid = torch.where(valid_slot, gid, torch.zeros_like(gid))  # [T, K]
    t = torch.arange(n_tiles)
    py, px = torch.meshgrid(torch.arange(ts), torch.arange(ts), indexing="ij")
    x = (t % tiles_x)[:, None] * ts + px.reshape(1, -1)  # [T, P]
    y = (t // tiles_x)[:, None] * ts + py.reshape(1, -1)
    b = torch.from_numpy(boxes[0]).long()[gid]  # [T, K, 4]
    inbox = ((x[:, :, None] >= b[:, None, :, 0]) & (x[:, :, None] <= b[:, None, :, 1])
             & (y[:, :, None] >= b[:, None, :, 2]) & (y[:, :, None] <= b[:, None, :, 3]))  # [T, P, K]
    m, con, op = means2d[0][gid], conics[0][gid], opacities[0][gid]  # [T, K, 2], [T, K, 3], [T, K]
    dx = (x.float() + 0.5)[:, :, None] - m[:, None, :, 0]  # [T, P, K]
    dy = (y.float() + 0.5)[:, :, None] - m[:, None, :, 1]
    sigma = 0.5 * (con[:, None, :, 0] * dx * dx + con[:, None, :, 2] * dy * dy) + con[:, None, :, 1] * dx * dy
    alpha = torch.clamp(op[:, None, :] * torch.exp(-sigma), max=ALPHA_MAX)
    alpha = torch.where(inbox & valid_slot[:, None, :] & (sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))
    trans = torch.cumprod(1 - alpha, dim=-1)  # [T, P, K]
    weight = alpha * torch.cat([torch.ones_like(trans[..., :1]), trans[..., :-1]], dim=-1)
    out = torch.einsum("tpk,tkd->tpd", weight, colors[0][gid])  # [T, P, D]
    if background is not None:
        out = out + trans[..., -1:] * background[0]
    alpha_out = 1 - trans[..., -1:]
    def image(v):  # [T, P, D] -> [1, H, W, D]
        v = v.reshape(tiles_y, tiles_x, ts, ts, -1).permute(0, 2, 1, 3, 4).reshape(tiles_y * ts, tiles_x * ts, -1)
        return v[None, :height, :width]
    return image(out), image(alpha_out)


def peer_elements(scene: dict, size: int) -> int:
    """Dense elements of the torch-tiles peer: tiles x 256 pixels x longest tile list."""
    tiles = -(-size // TILE_SIZE)
    boxes = _pixel_boxes(scene["means2d"].numpy(), scene["radii"].numpy(), size, size)
    offsets, _ = _bin_kernel(boxes, _depth_order(scene["depths"].numpy()).astype(np.int32), TILE_SIZE, tiles, tiles)
    return tiles * tiles * TILE_SIZE**2 * int(np.diff(offsets).max())


def run_once(fn, scene: dict, size: int) -> tuple[float, float, float, torch.Tensor]:
    """(forward wall s, backward wall s, forward + backward CPU s of all threads, render) of one
    call with fresh leaf tensors."""
    leaves = {k: scene[k].clone().requires_grad_(True) for k in ("means2d", "conics", "colors", "opacities")}
    cpu, start = time.process_time(), time.perf_counter()
    render, alpha = fn(**leaves, depths=scene["depths"], radii=scene["radii"], width=size, height=size)
    mid = time.perf_counter()
    v_render, v_alpha = scene["upstream"]
    torch.autograd.backward([render, alpha], [v_render, v_alpha])
    return mid - start, time.perf_counter() - mid, time.process_time() - cpu, render.detach()


def time_backend(fn, scene: dict, size: int, repeats: int) -> dict:
    runs = [run_once(fn, scene, size) for _ in range(repeats)]
    fwd, bwd, cpu = ([r[i] for r in runs] for i in range(3))
    total = [f + b for f, b in zip(fwd, bwd)]
    return {"fwd_s": statistics.median(fwd), "bwd_s": statistics.median(bwd), "fwd_bwd_s": statistics.median(total),
            "fwd_bwd_best_s": min(total), "fwd_bwd_cpu_s": statistics.median(cpu), "render": runs[-1][3]}


def measure(n: int, size: int, args) -> dict:
    scene = make_scene(n, size, seed=n + size)
    pairs = pair_count(scene, size)
    entry: dict = {"gaussians": n, "size": size, "pairs": pairs,
                   "fast": time_backend(rasterize_fast, scene, size, args.repeats)}
    fast_render = entry["fast"].pop("render")
    if pairs > args.ref_max_pairs:
        entry["reference"] = {"skipped": f"{pairs / 1e6:.0f}M (Gaussian, pixel) pairs > --ref-max-pairs "
                                         f"{args.ref_max_pairs / 1e6:.0f}M (memory)"}
    else:
        entry["reference"] = _time_peer(rasterize_reference, scene, size, args.ref_repeats, fast_render)
        entry["speedup"] = entry["reference"]["fwd_bwd_s"] / entry["fast"]["fwd_bwd_s"]
    elements = peer_elements(scene, size)
    if elements > args.peer_max_elements:
        entry["torch_tiles"] = {"skipped": f"{elements / 1e6:.0f}M dense elements > --peer-max-elements "
                                           f"{args.peer_max_elements / 1e6:.0f}M (memory)"}
    else:
        entry["torch_tiles"] = _time_peer(rasterize_torch_tiles, scene, size, args.ref_repeats, fast_render)
        entry["speedup_vs_torch_tiles"] = entry["torch_tiles"]["fwd_bwd_s"] / entry["fast"]["fwd_bwd_s"]
    if n == 10_000 and size in ISSUE_BASELINE_S:
        entry["issue_baseline_s"] = ISSUE_BASELINE_S[size]
        entry["speedup_vs_issue_baseline"] = ISSUE_BASELINE_S[size] / entry["fast"]["fwd_bwd_s"]
    return entry


def machine_info() -> dict:
    return {
        "cpu_count": os.cpu_count(), "cpus_usable": len(os.sched_getaffinity(0)),
        "load_average_1m": os.getloadavg()[0], "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": numba.threading_layer(), "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(), "python": platform.python_version(),
        "versions": {p: metadata.version(p) for p in ("numpy", "numba", "torch")},
    }


def print_report(rows: list[dict], repeats: int) -> None:
    print(f"1 camera, D={D} (RGB + depth), median of {repeats} (reference: fewer); {os.cpu_count()} CPUs, "
          f"numba threads {numba.get_num_threads()}, torch threads {torch.get_num_threads()}, "
          f"load {os.getloadavg()[0]:.1f}\n")
    print("| Gaussians | size | pairs | fast fwd s | fast bwd s | fast fwd+bwd s (best) | fast CPU s "
          "| reference fwd+bwd s | speed-up | torch tiles fwd+bwd s | speed-up | vs issue's torch baseline |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        f, ref = r["fast"], r["reference"]
        ref_s = ref["skipped"] if "skipped" in ref else f"{ref['fwd_bwd_s']:.3f}"
        speed = f"{r['speedup']:.1f}x" if "speedup" in r else "-"
        peer = r["torch_tiles"]
        peer_s = peer["skipped"] if "skipped" in peer else f"{peer['fwd_bwd_s']:.3f}"
        peer_speed = f"{r['speedup_vs_torch_tiles']:.1f}x" if "speedup_vs_torch_tiles" in r else "-"
        issue = (f"{r['issue_baseline_s']:.2f} s -> {r['speedup_vs_issue_baseline']:.1f}x"
                 if "issue_baseline_s" in r else "-")
        print(f"| {r['gaussians']:,} | {r['size']}² | {r['pairs'] / 1e6:.1f}M | {f['fwd_s']:.4f} | {f['bwd_s']:.4f} "
              f"| {f['fwd_bwd_s']:.4f} ({f['fwd_bwd_best_s']:.4f}) | {f['fwd_bwd_cpu_s']:.4f} | {ref_s} | {speed} "
              f"| {peer_s} | {peer_speed} | {issue} |")


def _time_peer(fn, scene, size: int, repeats: int, fast_render) -> dict:
    """A peer's timings plus its largest pixel difference from the fast path's render."""
    result = time_backend(fn, scene, size, repeats)
    result["max_abs_diff_render"] = float((result.pop("render") - fast_render).abs().max())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[10_000, 50_000], help="Gaussians per scene")
    parser.add_argument("--sizes", type=int, nargs="+", default=[128, 256], help="square image sides")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of the fast path")
    parser.add_argument("--ref-repeats", type=int, default=1, help="timed runs of the reference")
    parser.add_argument("--ref-max-pairs", type=int, default=30_000_000,
                        help="skip the reference above this many (Gaussian, pixel) pairs (~0.5 KB each)")
    parser.add_argument("--peer-max-elements", type=int, default=40_000_000,
                        help="skip the torch-tiles peer above this many dense (pixel, list entry) elements")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="torch intra-op threads for the reference (default: torch's own choice)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "splat_raster.json")
    args = parser.parse_args()
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)

    # 1. warm-up: numba compiles the kernels or loads them from its on-disk cache
    start = time.perf_counter()
    run_once(rasterize_fast, make_scene(100, 32, seed=0), 32)
    warmup_s = time.perf_counter() - start
    cache_hits = sum(raster_cpu._forward_kernel.stats.cache_hits.values())

    # 2. timed runs and report
    rows = [measure(n, size, args) for n in args.counts for size in args.sizes]
    print_report(rows, args.repeats)
    print(f"\nwarm-up (first call): {warmup_s:.2f} s, numba kernels {'loaded from cache' if cache_hits else 'compiled'}"
          " (NUMBA_CACHE_DIR=$(mktemp -d) forces a cold compile)")
    for r in rows:
        if "speedup_vs_issue_baseline" in r:
            met = r["speedup_vs_issue_baseline"] >= TARGET_SPEEDUP
            print(f"target >= {TARGET_SPEEDUP:.0f}x the issue's torch baseline at {r['size']}²: "
                  f"{'met' if met else 'NOT met'} ({r['speedup_vs_issue_baseline']:.1f}x)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"scene": {"cameras": 1, "D": D, "eigenvalues_px2": [0.5, 20.0], "margin": 0.1},
              "repeats": args.repeats, "ref_repeats": args.ref_repeats, "machine": machine_info(),
              "warmup_s": warmup_s, "numba_cache": "hit" if cache_hits else "compiled",
              "target": {"issue_baseline_s_10k": ISSUE_BASELINE_S, "speedup": TARGET_SPEEDUP}, "results": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
