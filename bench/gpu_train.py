"""A time-boxed training run of the orbit model on one GPU (e.g. 15 minutes of an H200).

    python bench/gpu_train.py -o runs/gpu15 --minutes 15            # on the GPU machine
    python bench/gpu_train.py -o /tmp/smoke --minutes 3 --smoke     # the same flow, tiny, on a CPU
    python bench/gpu_train.py -o /tmp/speed --speed --threads 1      # samples/s of train_dit / train_vae

Phases, each a plain call into orbitforge (so every phase resumes if the script is re-run):

1. render a world dataset with every core (`build_dataset`): with 16 cores this takes about a
   minute and removes rendering from the training loop, which a GPU would otherwise wait on;
2. train the VAE (bf16) for its share of the time, then
3. train the DiT on the VAE's cached latents for the rest, and generate one orbit.

The step counts are fitted to the time: each training phase first runs `--warm` steps, reads
its own samples/s from log.json, and then resumes with `steps` raised to what fits the phase's
share (TrainConfig.steps may grow on resume).  Writes OUT/report.json and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path


def _fit(train, config, out: Path, seconds: float, warm: int) -> dict:
    """Train `warm` steps, measure, then resume to the step count that fills `seconds`."""
    t0 = time.perf_counter()
    train(replace(config, steps=warm), out)
    log = json.loads((out / "log.json").read_text())["train"]
    rates = [e["samples_per_s"] for e in log[1:]] or [log[-1]["samples_per_s"]]
    steps_per_s = sorted(rates)[len(rates) // 2] / config.batch_size
    left = seconds - (time.perf_counter() - t0)
    steps = max(warm, warm + int(0.9 * left * steps_per_s))  # 10% for evaluations and saving
    result = train(replace(config, steps=steps), out)
    return {"steps": steps, "steps_per_s": round(steps_per_s, 3), "samples_per_s": round(steps_per_s * config.batch_size, 2),
            "seconds": round(time.perf_counter() - t0, 1), "metrics": result.metrics}


def _speed(out: Path, steps: int) -> dict:
    """Median samples/s of train_dit ("cpu" preset) and train_vae ("starter") at 8 frames x 64 and 128 px,
    from stored data with cached latents, after two warm-up steps; the untrained VAE is as fast as a trained one."""
    import shutil

    from orbitforge.gen.train import TrainConfig, train_dit, train_vae
    from orbitforge.gen.vae import make_vae
    from orbitforge.gen.world.dataset import DatasetConfig, build_dataset

    build_dataset(out / "data", DatasetConfig(assets=24, views=8, size=128, shard_size=24, val_fraction=0.1), workers=1)
    if not (out / "vae" / "config.json").is_file():
        make_vae("starter").save_pretrained(out / "vae", safe_serialization=True)
    rows = {}
    for kind, train in (("dit", train_dit), ("vae", train_vae)):
        for size in (64, 128):
            run = out / f"{kind}-{size}"
            shutil.rmtree(run, ignore_errors=True)
            config = TrainConfig(data=str(out / "data"), frames=8, size=size, model="cpu", batch_size=8, steps=steps,
                                 log_every=1, sample_every=0, checkpoint_every=10**6, eval_assets=1,
                                 vae=str(out / "vae"), sample_steps=1)
            train(config, run)
            rates = sorted(e["samples_per_s"] for e in json.loads((run / "log.json").read_text())["train"][2:])
            rows[f"{kind} {size}px"] = {"samples_per_s": rates[len(rates) // 2], "all": rates}
            print(f"{kind} {size}px: {rows[f'{kind} {size}px']}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, required=True)
    p.add_argument("--minutes", type=float, default=15.0, help="whole budget, including data and start-up")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--assets", type=int, default=4096)
    p.add_argument("--warm", type=int, default=40, help="steps run before measuring the rate")
    p.add_argument("--model", default="cpu", choices=("cpu", "gpu"),
                   help="cpu (default): the shippable starter size (9.5 M, generates on a CPU); gpu: 54 M")
    p.add_argument("--batch-size", type=int, default=128, help="orbits per DiT step, frames per VAE step")
    p.add_argument("--smoke", action="store_true", help="tiny everything: check the flow on a CPU")
    p.add_argument("--speed", action="store_true", help="only measure training samples/s (few steps)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.speed:
        report = {"threads": torch.get_num_threads(), "load_average": os.getloadavg(), **_speed(args.output, 10)}
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / f"speed-{torch.get_num_threads()}threads.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report))
        return 0

    from orbitforge.gen.train import TrainConfig, train_dit, train_vae
    from orbitforge.gen.world.dataset import DatasetConfig, build_dataset

    t_start = time.perf_counter()
    budget = args.minutes * 60
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    if args.smoke:
        args.size, args.frames, args.assets, args.warm = 32, 4, 24, 4
    out = args.output
    report: dict = {"device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
                    "cpus": os.cpu_count(), "args": {k: str(v) for k, v in vars(args).items()}}

    # 1. data: every core renders shards
    t = time.perf_counter()
    data = DatasetConfig(assets=args.assets, views=args.frames, size=args.size, shard_size=32 if args.smoke else 128)
    summary = build_dataset(out / "data", data)
    report["data"] = {"assets": summary.counts, "seconds": round(time.perf_counter() - t, 1)}
    print(f"data: {summary.counts} in {report['data']['seconds']} s", flush=True)

    # 2./3. models, sharing what is left 1 : 2
    base = TrainConfig(data=str(out / "data"), frames=args.frames, size=args.size,
                       model="tiny" if args.smoke else args.model, batch_size=8 if args.smoke else args.batch_size,
                       warmup_steps=10 if args.smoke else 200, checkpoint_every=500, sample_every=1000,
                       log_every=2 if args.smoke else 20, eval_assets=4 if args.smoke else 16,
                       workers=0, sample_steps=4 if args.smoke else 20)
    left = budget - (time.perf_counter() - t_start) - (20 if args.smoke else 60)  # start-up, final sample
    report["vae"] = _fit(train_vae, replace(base, lr=2e-4 if not args.smoke else 1e-3), out / "vae", left / 3, args.warm)
    print(f"vae: {report['vae']}", flush=True)
    left = budget - (time.perf_counter() - t_start) - (10 if args.smoke else 45)
    report["dit"] = _fit(train_dit, replace(base, lr=3e-4 if not args.smoke else 3e-3, vae=str(out / "vae")),
                         out / "dit", left, args.warm)
    print(f"dit: {report['dit']}", flush=True)

    # 4. one generated orbit, timed
    from orbitforge.gen.pipeline import OrbitVideoPipeline

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pipe = OrbitVideoPipeline.from_pretrained(out / "dit" / "pipeline").to(device)
    pipe.set_progress_bar_config(disable=True)
    t = time.perf_counter()
    clip = pipe("a red mug with white stripes", num_inference_steps=25, generator=torch.Generator(device).manual_seed(0)).clip
    report["generate_seconds"] = round(time.perf_counter() - t, 2)
    clip.save(out / "sample_clip")
    report["total_seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "report.json").write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":  # the guard spawned data workers need
    sys.exit(main())
