"""Synthetic-world benchmark: how fast orbit datasets build, and how well the attribute probe reads them.

Two measurements, one run:

* **dataset build** - `build_dataset` of a fresh dataset at 128^2 (default 64 and 256 assets x 8
  views, supersample 2), once with workers=1 (one process; numba renders the views of an orbit in
  parallel) and once with workers=2 (two processes, one render thread each).  Wall time of the
  whole call (planning, rendering, writing shards, and for workers=2 starting the processes);
  assets/s, frames/s and the speed-up.  The folders are compared byte for byte: the worker count
  must not change the data.
* **probe** - a dataset at 64^2 (default 5000 assets x 8 views) is built (or resumed) in
  `--probe-data`, the probe is trained on its train split with the default `ProbeConfig`
  (`views_per_asset` views per asset), and per-frame accuracy of both heads is measured on every
  view of the `val` split (seen colour-category pairs, new assets) and of the `test` split
  (colour-category pairs never seen in training).  Target: >= 95% on both heads, both splits.

The machine is shared and noisy: compare the speed-up measured within one run rather than
absolute numbers across runs.  The probe trains with the default `ProbeConfig` (one torch
thread: see `ProbeConfig.threads`).

Run:  .venv/bin/python bench/world.py [--assets 64 256] [--views 8] [--size 128]
                                      [--probe-assets 5000] [--probe-data runs/bench_world64] [--out PATH]
Prints a markdown table and writes JSON (default bench/results/world.json).
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict
from importlib import metadata
from pathlib import Path

from orbitforge.gen.world.dataset import DatasetConfig, build_dataset
from orbitforge.gen.world.probe import ProbeConfig, train_probe

ROOT = Path(__file__).resolve().parent.parent
TARGET_ACCURACY = 0.95  # from the synthetic-world issue: both heads, held-out renders


def bench_build(config: DatasetConfig, worker_counts: tuple[int, ...]) -> dict:
    """Build the same dataset from scratch once per worker count; time it; check identical bytes."""
    results, folders = {}, {}
    scratch = Path(tempfile.mkdtemp(prefix="bench_world_"))
    try:
        for workers in worker_counts:
            folder = folders[workers] = scratch / f"w{workers}"
            t0 = time.perf_counter()
            build_dataset(folder, config, workers=workers)
            seconds = time.perf_counter() - t0
            results[workers] = {"seconds": round(seconds, 2), "assets_per_s": round(config.assets / seconds, 2),
                                "frames_per_s": round(config.assets * config.views / seconds, 1)}
        first = folders[worker_counts[0]]
        identical = all(_same_tree(first, folders[w]) for w in worker_counts[1:])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    base = results[worker_counts[0]]["seconds"]
    for r in results.values():
        r["speedup"] = round(base / r["seconds"], 2)
    return {"config": asdict(config), "by_workers": results, "identical_bytes": identical}


def bench_probe(data_dir: Path, config: DatasetConfig, probe_config: ProbeConfig, workers: int) -> dict:
    """Build (or resume) the probe's dataset, train the probe, report held-out accuracy."""
    t0 = time.perf_counter()
    summary = build_dataset(data_dir, config, workers=workers)
    build_seconds = time.perf_counter() - t0
    probe, metrics = train_probe(data_dir, probe_config)
    return {"dataset": asdict(config), "dataset_counts": summary.counts,
            "dataset_build_seconds": round(build_seconds, 1), "dataset_resumed": summary.shards_skipped > 0,
            "probe": metrics}


def _same_tree(a: Path, b: Path) -> bool:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    return files_a == files_b and all(filecmp.cmp(a / f, b / f, shallow=False) for f in files_a)


def markdown(builds: list[dict], probe: dict | None) -> str:
    c = builds[0]["config"]
    lines = [f"Dataset build, {c['views']} views per asset at {c['size']}^2 (supersample {c['supersample']}):", "",
             "| assets | workers | seconds | assets/s | frames/s | speed-up | identical bytes |",
             "|---|---|---|---|---|---|---|"]
    for build in builds:
        for workers, r in build["by_workers"].items():
            same = "yes" if build["identical_bytes"] else "NO"
            lines.append(f"| {build['config']['assets']} | {workers} | {r['seconds']:.1f} | {r['assets_per_s']:.1f} | "
                         f"{r['frames_per_s']:.0f} | {r['speedup']:.2f}x | {same if workers != 1 else ''} |")
    if probe is not None:
        d, m = probe["dataset"], probe["probe"]
        lines += ["", f"Attribute probe at {d['size']}^2: {m['epochs']} epochs of {m['train_frames_per_epoch']} frames "
                  f"({m['train_assets']} train assets, views drawn from {m['train_views_available']} per asset), "
                  f"trained in {m['train_seconds']:.0f} s with {m['config']['threads'] or 'the default number of'} torch "
                  "thread(s):", "",
                  "| held-out split | assets | frames | category | main colour | both | category, per asset | "
                  "main colour, per asset |", "|---|---|---|---|---|---|---|---|"]
        names = {"val": "val (seen pairs, new assets)", "test": "test (unseen colour-category pairs)"}
        for split, r in m["heldout"].items():
            lines.append(f"| {names[split]} | {r['assets']} | {r['frames']} | {r['category_accuracy']:.1%} | "
                         f"{r['colour_accuracy']:.1%} | {r['both_accuracy']:.1%} | {r['asset_category_accuracy']:.1%} | "
                         f"{r['asset_colour_accuracy']:.1%} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--assets", type=int, nargs="+", default=[64, 256], help="assets in the build-speed datasets")
    parser.add_argument("--views", type=int, default=8, help="views per asset in the build-speed dataset")
    parser.add_argument("--size", type=int, default=128, help="image side of the build-speed dataset")
    parser.add_argument("--probe-assets", type=int, default=5000, help="assets in the probe's dataset (0: skip)")
    parser.add_argument("--probe-views", type=int, default=8, help="views per asset in the probe's dataset")
    parser.add_argument("--probe-data", type=Path, default=ROOT / "runs" / "bench_world64",
                        help="folder of the probe's dataset (resumed when it exists with the same settings)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "world.json")
    args = parser.parse_args()

    builds = [bench_build(DatasetConfig(assets=n, views=args.views, size=args.size), (1, 2)) for n in args.assets]
    probe = None
    if args.probe_assets > 0:
        data_config = DatasetConfig(assets=args.probe_assets, views=args.probe_views, size=64)
        probe = bench_probe(args.probe_data, data_config, ProbeConfig(), workers=2)
    table = markdown(builds, probe)
    print(table)
    result = {"build": builds, "probe": probe, "target_accuracy": TARGET_ACCURACY, "markdown": table,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                          "torch": metadata.version("torch"), "numba": metadata.version("numba")},
              "command": "bench/world.py " + " ".join(
                  f"--{k.replace('_', '-')} {' '.join(map(str, v)) if isinstance(v, list) else v}"
                  for k, v in vars(args).items() if k not in ("out", "probe_data"))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
