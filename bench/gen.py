"""Orbit-model benchmark: do generated orbits follow their prompts, agree with their cameras, and
reconstruct?

For N held-out prompts (world assets with seeds the training set never used; half of them with a
(main colour, category) pair that the training split held out), the pipeline generates an orbit
with known cameras, and each clip is measured five ways.  Each prompt is the asset's first
caption, with the world's random synonyms ("a tall tan mug"), recaptioned as `orbitforge
generate` does by default ("a beige mug"); --no-recaption conditions on it as written.

* **3D consistency**: COLMAP SfM on the generated frames (`estimate_poses(..., verify_known=True)`):
  the share of frames it registers and the rotation error of its cameras against the conditioning
  cameras after a robust Sim(3) alignment (targets: >= 90 % registered, <= 3 deg);
* **reconstructability**: splats fitted to the clip with its known cameras (`train_splats`),
  PSNR on the held-out frames (target >= 26 dB);
* **mesh**: the two mesh sources `export` can use, fused splat depth and the visual hull of the
  clip's silhouettes, rendered back from the clip's cameras (silhouette IoU and PSNR); on the
  ground-truth renders also their Chamfer distance to the true asset;
* **prompt following**: the world's attribute probe (`orbitforge world probe`) reads category and
  main colour from every frame (targets >= 80 %);
* **speed**: seconds per clip on this machine (target <= 20 s for a 16-frame clip at the starter
  resolution, 25 steps).

The same measures run on ground-truth renders of the same held-out assets (orbitforge's
renderer, same frame count, size and elevation): the peer that shows what each measure gives for
a perfectly consistent clip at this resolution, so the model's numbers read as a ratio.

Writes bench/results/gen.json and bench/results/gen.png (a contact sheet of the generated orbits
with their prompts).

Run:  .venv/bin/python bench/gen.py [--model checkpoints/orbit-starter] [--probe checkpoints/world-probe64.safetensors]
          [--prompts 50] [--frames 16] [--steps 25] [--guidance 3] [--guidance-rescale 0] [--splat-steps 500] [--threads N] [--workers N]
          [--no-recaption] [--truth-from bench/results/gen.json] [--probe-only]
Clips are generated in this process (so seconds per clip is the model's alone), then measured in
--workers processes of one thread each.  With --probe none the prompt-following columns are left
out (say so in any table you quote).  --truth-from takes the costly ground-truth measures (COLMAP,
splats, meshes) from an earlier run of the same prompts and settings; the probe columns are always
measured afresh, on the ground-truth renders re-made here, so a new probe needs no full run.
--probe-only measures prompt following alone (bench/results/gen_probe.json): minutes for the
hundreds of prompts that narrow its noise, where 50 prompts leave about +-6 points on colour.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SEED_BASE = 900_000_000
"""Prompt seeds start here, far above any training dataset's asset seeds (seed + index)."""


def held_out_prompts(n: int, dataset_seed: int = 0, holdout_fraction: float = 0.1) -> list[dict]:
    """`n` world captions from unseen assets, alternating seen and held-out (colour, category) pairs."""
    from orbitforge.gen.world.assets import sample_asset
    from orbitforge.gen.world.splits import holdout_pairs

    held = holdout_pairs(dataset_seed, holdout_fraction)
    want_unseen = n // 2
    prompts, seed = [], SEED_BASE
    unseen = seen = 0
    while len(prompts) < n:
        asset = sample_asset(seed)
        a = asset.attributes
        pair_unseen = (a.main_colour, a.category) in held
        if (pair_unseen and unseen < want_unseen) or (not pair_unseen and seen < n - want_unseen):
            prompts.append({"seed": seed, "caption": asset.captions[0], "category": a.category,
                            "main_colour": a.main_colour, "unseen_pair": pair_unseen})
            unseen += pair_unseen
            seen += not pair_unseen
        seed += 1
    return prompts


def measure_clip(clip, workdir: Path, splat_steps: int, truth_parts=None) -> dict:
    """SfM consistency against the known cameras, held-out PSNR of splats fitted with them, and
    the meshes made from them (`measure_meshes`)."""
    from orbitforge.recon.poses import PosesConfig, estimate_poses
    from orbitforge.recon.splat.trainer import SplatConfig, train_splats

    out: dict = {}
    try:
        poses = estimate_poses(clip, workdir, PosesConfig(verify_known=True, matching="exhaustive"))
        verify = poses.report.get("verify", {})
        out["registered_fraction"] = verify.get("registered", 0) / len(clip)
        out["rotation_median_deg"] = verify.get("rotation_deg_median")
        out["points"] = poses.report.get("points")
    except Exception as exc:  # noqa: BLE001 - a clip COLMAP cannot read at all counts as 0 registered
        out["registered_fraction"], out["rotation_median_deg"] = 0.0, None
        out["poses_error"] = f"{type(exc).__name__}: {exc}"
    splats = train_splats(clip, SplatConfig(steps=splat_steps, sh_degree=1, holdout_every=4))
    out["splat_psnr"] = float(splats.metrics["psnr"])
    out.update(measure_meshes(clip, splats.scene, truth_parts))
    return out


def measure_meshes(clip, scene, truth_parts=None) -> dict:
    """The two mesh sources `export` can use for a clip with known cameras, side by side: the
    splats' fused depth and the visual hull.  Each mesh is rendered back from the clip's cameras
    (unlit, as its baked texture already holds the shading): silhouette IoU against the clip's
    object and PSNR of the whole frame; with the true asset, the surface Chamfer distance too."""
    from orbitforge.errors import InputError
    from orbitforge.export.mesh import foreground_masks, mesh_from_silhouettes, mesh_from_splats
    from orbitforge.export.stage import mesh_config_for
    from orbitforge.recon.metrics import surface_chamfer
    from orbitforge.render import RenderConfig, render

    config = mesh_config_for(clip.width, clip.height, 20_000)  # what `export` would use
    objects = clip.masks if clip.masks is not None else foreground_masks(clip, config.foreground_threshold)
    out = {}
    for name, make in (("splat_mesh", lambda: mesh_from_splats(scene, clip, config)),
                       ("hull_mesh", lambda: mesh_from_silhouettes(clip, config))):
        try:
            mesh = make()
        except InputError:  # nothing to mesh counts as an empty render
            out[f"{name}_iou"] = 0.0
            continue
        back = render([mesh], clip.cameras, RenderConfig(shading="unlit", supersample=2))
        out[f"{name}_iou"] = float((back.mask & objects).sum() / max((back.mask | objects).sum(), 1))
        mse = np.mean((back.rgb.astype(np.float64) - clip.frames) ** 2)
        out[f"{name}_psnr"] = float(10 * np.log10(255.0**2 / max(mse, 1e-12)))
        if truth_parts is not None:
            out[f"{name}_chamfer"] = surface_chamfer(mesh, truth_parts)
    return out


def score(clip, prompt: dict, splat_steps: int, probe_path: Path | None, truth: bool = False) -> dict:
    """All measures of one clip, in a fresh temporary folder (runs in a worker process); a
    ground-truth render's meshes are also measured against the asset itself."""
    import torch

    torch.set_num_threads(1)  # one clip per core: COLMAP and small splat fits scale poorly across threads
    parts = None
    if truth:
        from orbitforge.gen.world.assets import sample_asset

        parts = sample_asset(prompt["seed"]).parts
    with tempfile.TemporaryDirectory() as tmp:
        row = measure_clip(clip, Path(tmp), splat_steps, parts)
    if probe_path is not None:
        row.update(probe_scores(probe_path, clip, prompt))
    return row


@functools.lru_cache(maxsize=1)
def _load_probe(path: Path):
    from orbitforge.gen.world.probe import AttributeProbe

    return AttributeProbe.load(path)


def probe_scores(probe_path: Path, clip, prompt: dict) -> dict:
    """The shares of the clip's frames in which the attribute probe reads the prompt's category
    and main colour."""
    got = _load_probe(probe_path).score_clip(
        clip.frames, {"category": prompt["category"], "main_colour": prompt["main_colour"]})
    return {"probe_category": got.category, "probe_colour": got.colour}


def summarise(rows: list[dict]) -> dict:
    def mean(key, subset=None):
        vals = [r[key] for r in (subset or rows) if r.get(key) is not None]
        return float(np.mean(vals)) if vals else None

    def median(key):
        vals = [r[key] for r in rows if r.get(key) is not None]
        return float(np.median(vals)) if vals else None

    summary = {"prompts": len(rows), "registered_fraction": mean("registered_fraction"),
               "rotation_median_deg": median("rotation_median_deg"), "splat_psnr": mean("splat_psnr"),
               "seconds_per_clip": median("seconds")}
    for source in ("splat_mesh", "hull_mesh"):
        for measure in ("iou", "psnr", "chamfer"):
            summary[f"{source}_{measure}"] = mean(f"{source}_{measure}")
    if rows and "probe_category" in rows[0]:
        for split, subset in (("all", rows), ("unseen_pairs", [r for r in rows if r["unseen_pair"]])):
            summary[f"probe_category_{split}"] = mean("probe_category", subset)
            summary[f"probe_colour_{split}"] = mean("probe_colour", subset)
    return summary


def markdown(gen: dict, truth: dict, meta: dict) -> str:
    def fmt(value, spec, unit=""):
        return "n/a" if value is None else format(value, spec) + unit

    def row(label, key, spec, target, unit=""):
        if gen.get(key) is None and truth.get(key) is None:  # not measured in this run (--probe-only)
            return None
        return f"| {label} | {fmt(gen.get(key), spec, unit)} | {fmt(truth.get(key), spec, unit)} | {target} |"

    lines = [f"Orbit model {meta['model']} ({meta['frames']} frames, {meta['size']}^2, {meta['steps']} steps), "
             f"{gen['prompts']} held-out prompts (half with unseen colour-category pairs):", "",
             "| measure | generated | ground-truth renders | target |", "| --- | --- | --- | --- |",
             row("frames COLMAP registers", "registered_fraction", ".1%", ">= 90%"),
             row("median rotation error vs the cameras", "rotation_median_deg", ".2f", "<= 3 deg", " deg"),
             row("held-out PSNR of splats fitted with the known cameras", "splat_psnr", ".2f", ">= 26 dB", " dB")]
    for source, label in (("splat_mesh", "mesh from splat depth"), ("hull_mesh", "mesh from silhouettes (visual hull)")):
        lines += [row(f"{label}: silhouette IoU rendered back", f"{source}_iou", ".3f", ""),
                  row(f"{label}: PSNR rendered back", f"{source}_psnr", ".2f", "", " dB")]
        if truth.get(f"{source}_chamfer") is not None:
            lines.append(row(f"{label}: Chamfer to the true asset (share of diagonal)", f"{source}_chamfer", ".2%", ""))
    if "probe_category_all" in gen:
        lines += [row("probe: category, all prompts", "probe_category_all", ".1%", ">= 80%"),
                  row("probe: category, unseen pairs", "probe_category_unseen_pairs", ".1%", ">= 80%"),
                  row("probe: main colour, all prompts", "probe_colour_all", ".1%", ">= 80%"),
                  row("probe: main colour, unseen pairs", "probe_colour_unseen_pairs", ".1%", ">= 80%")]
    lines.append(f"| seconds per {meta['frames']}-frame clip ({meta['device']}) | {fmt(gen['seconds_per_clip'], '.2f')} "
                 f"| | <= 20 s for 16 frames |")
    if meta.get("seconds_per_16_frame_clip") is not None:
        lines.append(f"| seconds per 16-frame clip | {meta['seconds_per_16_frame_clip']:.2f} | | <= 20 s |")
    return "\n".join(line for line in lines if line is not None)


def measure_in_workers(jobs: list, prompts: list[dict], args) -> list[dict]:
    """`score` every (clip, prompt) job in --workers processes; jobs past the prompts are ground truth."""
    print(f"measuring {len(jobs)} clips with {args.workers} worker processes", flush=True)
    with ProcessPoolExecutor(args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(score, clip, prompt, args.splat_steps, args.probe, k >= len(prompts))
                   for k, (clip, prompt) in enumerate(jobs)]
        scored = []
        for k, future in enumerate(futures):
            scored.append(future.result())
            kind, i = ("generated", k) if k < len(prompts) else ("truth", k - len(prompts))
            print(f"[{k + 1}/{len(jobs)}] {kind:9s} registered {scored[-1]['registered_fraction']:.0%}  "
                  f"PSNR {scored[-1]['splat_psnr']:.1f}  mesh IoU splats {scored[-1]['splat_mesh_iou']:.2f} "
                  f"hull {scored[-1]['hull_mesh_iou']:.2f}  {prompts[i]['caption']}", flush=True)
    return scored


def _earlier_truth(path: Path, prompts: list[dict], frames: int, size: int, args) -> list[dict]:
    """The ground-truth rows of an earlier run, checked to be of these very clips and settings,
    without their probe columns (the caller scores those again with this run's probe)."""
    earlier = json.loads(path.read_text())
    meta = earlier["meta"]
    same = {"frames": frames, "size": size, "splat_steps": args.splat_steps, "elevation": args.elevation}
    recorded = {"elevation": 20.0, **meta}  # gen.json files before --truth-from did not record it: all used 20
    differ = [k for k, v in same.items() if recorded.get(k) != v]
    seeds = [r["seed"] for r in earlier["truth_rows"]]
    if differ or seeds != [p["seed"] for p in prompts]:
        sys.exit(f"--truth-from {path}: its ground truth was measured with other settings "
                 f"({', '.join(differ) or 'prompts'}); measure it again without --truth-from")
    return [{**p, **{k: v for k, v in r.items() if k not in p and not k.startswith("probe_")}}
            for p, r in zip(prompts, earlier["truth_rows"])]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "checkpoints" / "orbit-starter", help="pipeline folder")
    parser.add_argument("--probe", default=str(REPO / "checkpoints" / "world-probe64.safetensors"),
                        help="attribute probe (`orbitforge world probe` output), or none")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--frames", type=int, default=None, help="default: the model's")
    parser.add_argument("--size", type=int, default=None, help="default: the model's")
    parser.add_argument("--steps", type=int, default=25, help="sampler steps")
    parser.add_argument("--guidance", type=float, default=3.0)
    parser.add_argument("--guidance-rescale", type=float, default=0.0)
    parser.add_argument("--elevation", type=float, default=20.0)
    parser.add_argument("--splat-steps", type=int, default=500)
    parser.add_argument("--threads", type=int, default=None, help="torch threads while generating (default: torch's)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                        help="processes measuring clips, one thread each (default: one per core)")
    parser.add_argument("--no-recaption", action="store_true", help="condition on the captions as written")
    parser.add_argument("--truth-from", type=Path, default=None,
                        help="take the ground-truth rows from an earlier gen.json of the same prompts, frames, size, "
                             "elevation and splat steps (they do not depend on the model) instead of measuring them; "
                             "the probe still reads the ground-truth renders afresh")
    parser.add_argument("--probe-only", action="store_true",
                        help="measure prompt following alone (no COLMAP, splats or meshes): minutes for hundreds of "
                             "prompts, where 50 prompts leave about +-6 points of noise on colour")
    parser.add_argument("--out", type=Path, default=None,
                        help="default bench/results/gen.json (gen_probe.json with --probe-only)")
    args = parser.parse_args(argv)

    import torch

    from orbitforge.gen.cli_generate import resolve_model
    from orbitforge.gen.pipeline import OrbitSettings, OrbitVideoPipeline
    from orbitforge.gen.world.assets import sample_asset
    from orbitforge.render import OrbitConfig, render_orbit
    from orbitforge.viewers.preview import contact_sheet, save_image

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = resolve_model(args.model)
    pipe = OrbitVideoPipeline.from_pretrained(model).to(device)
    pipe.set_progress_bar_config(disable=True)
    frames = args.frames or pipe.config.default_frames
    size = args.size or pipe.config.default_size
    args.probe = None if args.probe.lower() == "none" else Path(args.probe)
    if args.probe_only and (args.probe is None or args.truth_from):
        sys.exit("--probe-only needs a probe and measures its own ground truth: drop --probe none / --truth-from")
    args.out = args.out or REPO / "bench" / "results" / ("gen_probe.json" if args.probe_only else "gen.json")
    prompts = held_out_prompts(args.prompts)
    earlier_truth = _earlier_truth(args.truth_from, prompts, frames, size, args) if args.truth_from else None
    if not args.no_recaption:  # what `orbitforge generate` conditions on
        from orbitforge.gen.recaption import recaptioner_for

        rewrite = recaptioner_for(pipe)
        prompts = [{**p, "model_caption": rewrite(p["caption"]).caption} for p in prompts]
    # 1. generate every clip in this process (timed alone: seconds per clip is the model's cost)
    def sample(caption: str, num_frames: int, seed: int, steps: int = args.steps):
        """One timed orbit at the benchmark's settings: (clip, seconds)."""
        t0 = time.perf_counter()
        out = pipe(caption, cameras=OrbitSettings(elevation_deg=args.elevation), num_frames=num_frames, height=size,
                   width=size, num_inference_steps=steps, guidance_scale=args.guidance,
                   guidance_rescale=args.guidance_rescale,
                   generator=torch.Generator(device).manual_seed(seed))
        return out.clip, time.perf_counter() - t0

    captions = [p.get("model_caption", p["caption"]) for p in prompts]
    sample(captions[0], frames, 0, steps=1)  # warm-up: first-call allocations are not per-clip cost
    clips, truths, seconds = [], [], []
    for k, prompt in enumerate(prompts):
        clip, took = sample(captions[k], frames, k)
        seconds.append(took)
        clips.append(clip)
        truths.append(render_orbit(sample_asset(prompt["seed"]).parts,
                                   OrbitConfig(frames=frames, size=size, elevation_deg=args.elevation)))
    # the target is stated for 16-frame clips: time those too when the model's default is shorter
    seconds_16 = [sample(captions[k % len(prompts)], 16, k)[1] for k in range(3 if frames != 16 else 0)]
    print(f"generated {len(clips)} clips, median {np.median(seconds):.2f} s each", flush=True)
    # 2. measure generated clips and their ground-truth peers side by side
    jobs = [(clip, prompt) for prompt, clip in zip(prompts, clips)]
    if args.probe_only:  # the probe reads every clip here: nothing costly for workers to do
        scored = [probe_scores(args.probe, clip, prompt) for clip, prompt in jobs]
        truth_rows = [{**p, **probe_scores(args.probe, clip, p)} for clip, p in zip(truths, prompts)]
    else:
        if earlier_truth is None:
            jobs += list(zip(truths, prompts))
        elif args.probe is not None:  # cheap, and the probe may have changed since
            for row, clip in zip(earlier_truth, truths):
                row.update(probe_scores(args.probe, clip, row))
        scored = measure_in_workers(jobs, prompts, args)
        truth_rows = earlier_truth or [{**p, **r} for p, r in zip(prompts, scored[len(prompts):])]
    rows = [{**p, "seconds": s, **r} for p, s, r in zip(prompts, seconds, scored[:len(prompts)])]
    sheets = [(clip.frames, prompt["caption"]) for clip, prompt in zip(clips, prompts)]

    summary, truth_summary = summarise(rows), summarise(truth_rows)
    meta = {"model": str(model), "frames": frames, "size": size, "steps": args.steps, "guidance": args.guidance,
            "guidance_rescale": args.guidance_rescale,
            "device": torch.cuda.get_device_name() if device == "cuda" else f"{platform.processor() or 'cpu'}, "
            f"{torch.get_num_threads()} torch threads", "splat_steps": args.splat_steps,
            "probe": str(args.probe) if args.probe else None,
            "probe_sha256": hashlib.sha256(args.probe.read_bytes()).hexdigest() if args.probe else None,
            "recaptioned": not args.no_recaption, "probe_only": args.probe_only,
            "elevation": args.elevation, "truth_from": str(args.truth_from) if args.truth_from else None,
            "seconds_per_16_frame_clip": float(np.median(seconds_16)) if seconds_16 else None}
    table = markdown(summary, truth_summary, meta)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"meta": meta, "summary": summary, "truth_summary": truth_summary, "rows": rows,
                                    "truth_rows": truth_rows, "markdown": table}, indent=1))
    # grid: up to 12 orbits, 8 views each, one row per prompt
    picked = sheets[:12]
    views = min(8, frames)
    idx = np.linspace(0, frames - 1, views).round().astype(int)
    grid = np.concatenate([f[idx] for f, _ in picked])
    labels = [label for _, label in picked for label in [label] + [""] * (views - 1)]
    save_image(contact_sheet(grid, labels=labels, columns=views, max_frames=len(grid), tile=max(64, size),
                             label_lines=2), args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
