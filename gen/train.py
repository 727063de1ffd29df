"""Training the orbit model: `train_vae` (the video compression network) and `train_dit` (the
orbit-video transformer on the VAE's latents), one script for a CPU, one GPU or many.

Both loops are built on `accelerate.Accelerator`: on a CPU it is plain float32 PyTorch, on GPUs
it adds bf16 autocast and data-parallel processes (`accelerate launch -m orbitforge.cli train ...`).
Everything a step does is a pure function of (seed, step, process): the batch it draws, its noise
and its dropout come from per-step random streams, so a run that stops and resumes from its
latest checkpoint reaches bit-for-bit the state of a run that never stopped.

The run folder (`out_dir`):

    config.json                      the TrainConfig; a resumed run must match it (steps may grow)
    checkpoints/step-0001000/        model.safetensors, ema.safetensors, optimizer.safetensors,
                                     state.json (the last `keep_checkpoints` are kept)
    log.json, loss.png               training log (loss, lr, samples/s) and held-out metrics, curve
    samples/step-0001000.png         contact sheets: VAE inputs over reconstructions, or DiT
                                     ground-truth orbits over generated ones with their prompts
    cache/                           VAE latents and caption embeddings of a stored dataset
    vae/  (train_vae)                the EMA VAE, `save_pretrained`, scaling_factor measured
    pipeline/  (train_dit)           the EMA OrbitVideoPipeline, `save_pretrained`
    metrics.json                     final held-out metrics (VAE PSNR per split, DiT val loss)

Checkpoints never pickle: accelerate's `save_state` writes `optimizer.bin` and
`random_states_0.pkl` with torch.save, so optimizer moments go into safetensors here (tensors by
key, hyperparameters as JSON metadata) and there is no RNG state to save.

Data comes from a world dataset folder (`orbitforge world dataset`; the train split is held in
memory whole, and the DiT caches its VAE latents and caption embeddings once), or from
"procedural": orbits rendered on the fly from `sample_asset` in `workers` processes (for GPUs,
where rendering, not the model, is the bottleneck), never from held-out colour-category pairs.

    >>> config = TrainConfig(data="runs/world64", frames=8, size=64, model="cpu", steps=20000)
    >>> train_vae(config, "runs/vae")                                   # -> runs/vae/vae
    >>> train_dit(replace(config, vae="runs/vae"), "runs/dit")          # -> runs/dit/pipeline
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from orbitforge.atomic import atomic_path, write_bytes_atomic
from orbitforge.cameras import Cameras
from orbitforge.errors import InputError
from orbitforge.signals import terminate_as_interrupt
# TrainConfig and friends live in gen.config (light, for the command line); imported from here too
from orbitforge.gen.card import write_model_card
from orbitforge.gen.config import MODEL_PRESETS, PROCEDURAL, TrainConfig, VAELossConfig
from orbitforge.gen.flow import FlowBatch, flow_matching_loss
from orbitforge.gen.text import SentenceEncoder, TextEmbeddings

logger = logging.getLogger(__name__)

_CONFIG, _LOG, _METRICS, _CKPT_DIR = "config.json", "log.json", "metrics.json", "checkpoints"
_RESUMABLE_FIELDS = ("steps", "cooldown_steps", "data", "checkpoint_every", "keep_checkpoints", "sample_every",
                     "log_every", "workers")
"""Fields a resumed run may change; every other field must match the run folder's config.json.
`data` may change so that a run can go on with a larger dataset of the same world: a dataset's
splits are a pure function of its seed and each asset's index, so a larger one keeps the smaller
one's held-out assets held out.  Each session records the data it trained on."""
_BATCH_STREAM, _STEP_STREAM, _PROC_STREAM = 201, 202, 203
"""Random-stream tags (distinct from the dataset's 101-103)."""
_EVAL_SEED_BASE = 2**30
"""Procedural evaluation assets use seeds from here; training draws seeds below it."""
_SAMPLE_PROMPTS = 4
"""Orbits generated into each DiT sample grid."""


@dataclass(frozen=True)
class TrainResult:
    """What a training call did.

    Attributes:
        out_dir: the run folder.
        step: the step training stopped at (== config.steps unless interrupted).
        resumed_from: the checkpoint step it started from (0 for a fresh run).
        output: the saved model (OUT/vae or OUT/pipeline).
        metrics: the final held-out metrics (also in OUT/metrics.json).
    """

    out_dir: Path
    step: int
    resumed_from: int
    output: Path
    metrics: dict


Progress = Callable[[int, dict], None]
"""progress(step, stats): called after every step; stats has "loss" (and "lr")."""


# --------------------------------------------------------------------------------------------
# Data: orbits drawn as a pure function of (seed, batch index)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Orbits:
    """B orbits: frames (B, T, S, S, 3) uint8, K (B, T, 3, 3) and c2w (B, T, 4, 4) float32 at S x S,
    one caption per orbit, and each asset's row in the source (-1 for procedural assets)."""

    frames: np.ndarray
    K: np.ndarray
    c2w: np.ndarray
    captions: list[str]
    rows: np.ndarray
    views: np.ndarray  # [B, T] view indices within the stored orbit


def _cameras(orbits: _Orbits, i: int) -> Cameras:
    size = orbits.frames.shape[-2]
    return Cameras(orbits.K[i].astype(np.float64), orbits.c2w[i].astype(np.float64), size, size)


class _StoredOrbits:
    """One split of a world dataset, whole in memory at `size` px (box-filtered down)."""

    def __init__(self, root: str, split: str, size: int, frames: int, limit: int | None = None):
        from orbitforge.gen.world.shards import OrbitDataset

        data = OrbitDataset(root, split)
        if data.size % size:
            raise InputError(f"dataset {root} is {data.size} px, not a multiple of size {size}; "
                             f"train at a divisor of {data.size} or build a dataset at {size} px")
        if data.views % frames:
            raise InputError(f"dataset {root} has {data.views} views per orbit, not a multiple of frames={frames}; "
                             f"use frames that divide {data.views}")
        factor, f32 = data.size // size, np.float32
        chunks, Ks, c2ws, self.captions = [], [], [], []
        for shard in data.shards():
            x = shard.frames
            if factor > 1:  # [A, T, S, S, 3] -> [A, T, s, s, 3], box filter
                A, T = x.shape[:2]
                x = x.reshape(A, T, size, factor, size, factor, 3).mean((3, 5)).round().astype(np.uint8)
            chunks.append(x)
            K = shard.K.copy()
            K[..., :2, :] /= factor
            Ks.append(K.astype(f32))
            c2ws.append(shard.c2w.astype(f32))
            self.captions.extend(tuple(r["captions"]) for r in shard.records)
            if limit is not None and sum(len(c) for c in chunks) >= limit:
                break
        n = len(self.captions) if limit is None else min(limit, len(self.captions))
        self.frames = np.concatenate(chunks)[:n] if chunks else np.zeros((0, data.views, size, size, 3), np.uint8)
        self.K = np.concatenate(Ks)[:n] if Ks else np.zeros((0, data.views, 3, 3), f32)
        self.c2w = np.concatenate(c2ws)[:n] if c2ws else np.zeros((0, data.views, 4, 4), f32)
        self.captions = self.captions[:n]
        self.stride = data.views // frames
        self.num_frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    def orbits(self, rows: np.ndarray, offsets: np.ndarray, caption_picks: np.ndarray) -> _Orbits:
        views = offsets[:, None] + self.stride * np.arange(self.num_frames)  # [B, T]
        r = rows[:, None]
        captions = [self.captions[i][k % len(self.captions[i])] for i, k in zip(rows, caption_picks)]
        return _Orbits(self.frames[r, views], self.K[r, views], self.c2w[r, views], captions, rows, views)

    def batch(self, index: int, batch_size: int, seed: int) -> _Orbits:
        rng = np.random.default_rng([_BATCH_STREAM, seed, index])
        rows = rng.integers(len(self), size=batch_size)
        return self.orbits(rows, rng.integers(self.stride, size=batch_size), rng.integers(1 << 16, size=batch_size))

    def all_orbits(self) -> _Orbits:
        """Every asset once, first caption, views from 0 (evaluation)."""
        n = len(self)
        return self.orbits(np.arange(n), np.zeros(n, int), np.zeros(n, int))


class _ProceduralOrbits:
    """Orbits rendered from `sample_asset` on the fly; training never sees held-out pairs."""

    def __init__(self, size: int, frames: int):
        self.size, self.num_frames = size, frames

    def batch(self, index: int, batch_size: int, seed: int) -> _Orbits:
        from orbitforge.gen.world import sample_asset
        from orbitforge.gen.world.splits import holdout_pairs

        held = holdout_pairs(seed, 0.1)  # the same pairs a dataset of this seed holds out
        rng = np.random.default_rng([_PROC_STREAM, seed, index])
        assets = []
        while len(assets) < batch_size:
            asset = sample_asset(int(rng.integers(_EVAL_SEED_BASE)))
            if (asset.attributes.main_colour, asset.attributes.category) not in held:
                assets.append(asset)
        return self.render(assets, rng)

    def render(self, assets, rng: np.random.Generator) -> _Orbits:
        from orbitforge.render import OrbitConfig, RenderConfig, orbit_cameras_for, render

        frames, Ks, c2ws, captions = [], [], [], []
        for asset in assets:
            orbit = OrbitConfig(frames=self.num_frames, size=self.size, elevation_deg=float(rng.uniform(0.0, 35.0)),
                                start_azimuth_deg=float(rng.uniform(0.0, 360.0)), render=RenderConfig(supersample=2))
            cams = orbit_cameras_for(asset.parts, orbit)
            frames.append(render(asset.parts, cams, orbit.render).rgb)
            Ks.append(cams.K)
            c2ws.append(cams.c2w)
            captions.append(asset.captions[int(rng.integers(len(asset.captions)))])
        B, T = len(assets), self.num_frames
        return _Orbits(np.stack(frames), np.stack(Ks).astype(np.float32), np.stack(c2ws).astype(np.float32),
                       captions, np.full(B, -1), np.tile(np.arange(T), (B, 1)))

    def eval_orbits(self, n: int, seed: int) -> _Orbits:
        from orbitforge.gen.world import sample_asset

        assets = [sample_asset(_EVAL_SEED_BASE + seed + k) for k in range(n)]
        orbits = self.render(assets, np.random.default_rng([_PROC_STREAM, seed, -1 % 2**32]))
        return replace(orbits, captions=[a.captions[0] for a in assets])


class _BatchStream(torch.utils.data.IterableDataset):
    """Batch k = start, start + 1, ... of one process, rendered in DataLoader workers in turn
    (the loader interleaves workers round-robin, so the order is still deterministic)."""

    def __init__(self, source, start: int, batch_size: int, seed: int, rank: int, world: int):
        super().__init__()
        self.source, self.start, self.batch_size, self.seed, self.rank, self.world = (
            source, start, batch_size, seed, rank, world)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        k = self.start + worker
        while True:
            yield self.source.batch(k * self.world + self.rank, self.batch_size, self.seed)
            k += workers


def _keep(x):
    return x


def _worker_init(_: int) -> None:
    """One thread per rendering worker: the workers are the parallelism."""
    torch.set_num_threads(1)
    try:
        import numba

        numba.set_num_threads(1)
    except (ImportError, ValueError):
        pass


def _batches(source, start: int, config: TrainConfig, batch_size: int, rank: int, world: int):
    """An endless iterator of this process's batches from step `start` on."""
    stream = _BatchStream(source, start, batch_size, config.seed, rank, world)
    if config.workers == 0 or not isinstance(source, _ProceduralOrbits):
        return iter(stream)
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=config.workers, collate_fn=_keep,
                                         multiprocessing_context="spawn", worker_init_fn=_worker_init,
                                         prefetch_factor=4, persistent_workers=True)
    return iter(loader)


def _train_source(config: TrainConfig):
    if config.data == PROCEDURAL:
        return _ProceduralOrbits(config.size, config.frames)
    source = _StoredOrbits(config.data, "train", config.size, config.frames)
    if len(source) == 0:
        raise InputError(f"dataset {config.data} has no train assets; build it with more --assets")
    logger.info("loaded %d train orbits (%.0f MB) from %s", len(source), source.frames.nbytes / 2**20, config.data)
    return source


def _eval_sets(config: TrainConfig) -> dict[str, _Orbits]:
    """Held-out orbits per split: val and test of a stored dataset, or unseen procedural assets."""
    if config.data == PROCEDURAL:
        return {"heldout": _ProceduralOrbits(config.size, config.frames).eval_orbits(config.eval_assets, config.seed)}
    out = {}
    for split in ("val", "test"):
        stored = _StoredOrbits(config.data, split, config.size, config.frames, limit=config.eval_assets)
        if len(stored):
            out[split] = stored.all_orbits()
    if not out:
        logger.warning("dataset %s has no val or test assets: evaluating on train assets", config.data)
        out["train"] = _StoredOrbits(config.data, "train", config.size, config.frames,
                                     limit=config.eval_assets).all_orbits()
    return out


# --------------------------------------------------------------------------------------------
# EMA, checkpoints, log
# --------------------------------------------------------------------------------------------


class _EMA:
    """An exponential moving average of a model's weights, kept as a frozen copy of the model."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay = decay

    @torch.no_grad()
    def update(self, model: torch.nn.Module, step: int) -> None:
        d = min(self.decay, (1.0 + step) / (10.0 + step))
        ema = list(self.model.parameters())
        torch._foreach_lerp_(ema, [p.detach().to(e.dtype) for e, p in zip(ema, model.parameters())], 1.0 - d)


def _tensors(state: dict) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().contiguous() for k, v in state.items()}


def _save_checkpoint(out_dir: Path, step: int, model, ema: _EMA, optimizer, config: TrainConfig) -> Path:
    """OUT/checkpoints/step-NNNNNNN/, written whole under a temporary name, then renamed."""
    from safetensors.torch import save_file

    root = out_dir / _CKPT_DIR
    final = root / f"step-{step:07d}"
    tmp = root / f".step-{step:07d}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        save_file(_tensors(model.state_dict()), tmp / "model.safetensors")
        save_file(_tensors(ema.model.state_dict()), tmp / "ema.safetensors")
        opt = optimizer.state_dict()
        moments = {f"state.{i}.{name}": value for i, entry in opt["state"].items() for name, value in entry.items()}
        save_file(_tensors(moments), tmp / "optimizer.safetensors",
                  metadata={"param_groups": json.dumps(opt["param_groups"])})
        (tmp / "state.json").write_text(json.dumps({"step": step, "config": asdict(config)}, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(root.glob("step-*"))[:-config.keep_checkpoints]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _latest_checkpoint(out_dir: Path) -> Path | None:
    done = [p for p in sorted((out_dir / _CKPT_DIR).glob("step-*")) if (p / "state.json").is_file()]
    return done[-1] if done else None


def _load_checkpoint(path: Path, model, ema: _EMA, optimizer) -> int:
    from safetensors import safe_open
    from safetensors.torch import load_file

    model.load_state_dict(load_file(path / "model.safetensors"))
    ema.model.load_state_dict(load_file(path / "ema.safetensors"))
    with safe_open(path / "optimizer.safetensors", "pt") as f:
        groups = json.loads(f.metadata()["param_groups"])
        state: dict[int, dict] = {}
        for key in f.keys():
            _, i, name = key.split(".", 2)
            state.setdefault(int(i), {})[name] = f.get_tensor(key)
    for g in groups:  # JSON turned tuples into lists
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    return int(json.loads((path / "state.json").read_text())["step"])


def _check_run_folder(out_dir: Path, config: TrainConfig, kind: str) -> None:
    """Refuse a folder holding another run; write config.json for a new one."""
    path = out_dir / _CONFIG
    wanted = json.loads(json.dumps({"kind": kind, **asdict(config)}))
    if path.is_file():
        recorded = json.loads(path.read_text())
        changed = sorted(k for k in set(recorded) | set(wanted)
                         if k not in _RESUMABLE_FIELDS and recorded.get(k) != wanted.get(k))
        if changed:
            raise InputError(f"{out_dir} holds a {recorded.get('kind', '?')} run with other settings "
                             f"({', '.join(changed)} differ); re-run with the same settings to resume it, or "
                             "give a new output folder")
    elif out_dir.is_dir() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir} is not empty and holds no {_CONFIG}; give a new or empty output folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, json.dumps(wanted, indent=1).encode())


class _Log:
    """OUT/log.json (train entries every `log_every` steps, eval entries, and one `sessions` entry
    per invocation: its steps, threads and device, i.e. the compute a model card reports) and
    OUT/loss.png."""

    def __init__(self, out_dir: Path, resume_step: int):
        self.out_dir = out_dir
        path = out_dir / _LOG
        old = json.loads(path.read_text()) if path.is_file() and resume_step > 0 else {}
        self.train = [e for e in old.get("train", []) if e["step"] <= resume_step]
        self.eval = [e for e in old.get("eval", []) if e["step"] <= resume_step]
        self.sessions = [{**s, "to_step": min(s["to_step"], resume_step)}
                         for s in old.get("sessions", []) if s["from_step"] < resume_step]

    def write(self) -> None:
        entries = {"train": self.train, "eval": self.eval, "sessions": self.sessions}
        write_bytes_atomic(self.out_dir / _LOG, json.dumps(entries, indent=1).encode())
        if not self.train:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot([e["step"] for e in self.train], [e["loss"] for e in self.train], lw=1, label="train loss")
        keys = sorted({k for e in self.eval for k in e if k.startswith(("loss_", "psnr_"))})
        twin = ax.twinx() if any(k.startswith("psnr_") for k in keys) else None
        for key in keys:
            pts = [(e["step"], e[key]) for e in self.eval if key in e]
            psnr = key.startswith("psnr_")
            (twin if psnr else ax).plot(*zip(*pts), "s--" if psnr else "o-", ms=3, color=f"C{keys.index(key) + 1}",
                                        label=f"held-out {key}")
        if twin is not None:
            twin.set_ylabel("PSNR (dB)")
            twin.legend(fontsize=8, loc="center right")
        ax.set_xlabel("step")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
        fig.tight_layout()
        with atomic_path(self.out_dir / "loss.png") as tmp:
            fig.savefig(tmp)
        plt.close(fig)


def _save_grid(out_dir: Path, step: int, frames: np.ndarray, columns: int, labels: list[str]) -> None:
    from orbitforge.viewers.preview import contact_sheet, save_image

    tile = max(96, min(frames.shape[1], 128))  # small frames are upscaled so labels stay readable
    sheet = contact_sheet(frames, labels=labels, columns=columns, max_frames=len(frames), tile=tile, label_lines=2)
    save_image(sheet, out_dir / "samples" / f"step-{step:07d}.png")


# --------------------------------------------------------------------------------------------
# The shared loop
# --------------------------------------------------------------------------------------------


def _accelerator(config: TrainConfig):
    from accelerate import Accelerator

    mp = config.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() else "no"
    return Accelerator(mixed_precision=mp, cpu=not torch.cuda.is_available())


def _step_generator(config: TrainConfig, step: int, rank: int, device) -> torch.Generator:
    seed = int(np.random.SeedSequence([_STEP_STREAM, config.seed, step, rank]).generate_state(1)[0])
    return torch.Generator(device=device).manual_seed(seed)


def learning_rate(config: TrainConfig, step: int) -> float:
    """The rate for optimiser step `step` (0-based): linear warmup, constant, then a linear cooldown
    to 0 over the last `cooldown_steps` -- the decay is where a constant-rate run's loss drops."""
    warm = (step + 1) / max(1, config.warmup_steps)
    cool = (config.steps - step) / config.cooldown_steps if config.cooldown_steps else 1.0
    return config.lr * max(0.0, min(1.0, warm, cool))


def _run_loop(*, config: TrainConfig, out_dir: Path, accelerator, model: torch.nn.Module, ema: _EMA,
              loss_fn: Callable[[torch.nn.Module, object, torch.Generator], torch.Tensor],
              batches_from: Callable[[int], object],
              evaluate: Callable[[int], dict], samples_per_step: int, progress: Progress | None,
              stop_at: int | None) -> tuple[int, int]:
    """Optimise `model` from its latest checkpoint to config.steps; returns (start, end) step."""
    params = [p for p in model.parameters() if p.requires_grad]
    # foreach: one fused update over all tensors, also on a CPU (~10% of a small model's step otherwise)
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.99),
                                  foreach=True)
    ckpt = _latest_checkpoint(out_dir)
    start = _load_checkpoint(ckpt, model, ema, optimizer) if ckpt is not None else 0
    if ckpt is not None:
        logger.info("resuming %s from %s", out_dir, ckpt.name)
    model, optimizer = accelerator.prepare(model, optimizer)
    raw = accelerator.unwrap_model(model)
    log = _Log(out_dir, start)
    end = min(config.steps, stop_at or config.steps)
    main = accelerator.is_main_process
    device = accelerator.device
    session = {"from_step": start, "to_step": start, "data": config.data, "wall_seconds": 0.0,
               "processes": accelerator.num_processes,
               "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
               "torch_threads": torch.get_num_threads(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    log.sessions.append(session)
    t_session = time.perf_counter()

    def save(step: int) -> None:
        session.update(to_step=step, wall_seconds=round(time.perf_counter() - t_session, 1))
        if main:
            _save_checkpoint(out_dir, step, raw, ema, optimizer, config)
            log.write()
        accelerator.wait_for_everyone()

    if start == 0 and config.sample_every and main:
        log.eval.append({"step": 0, **evaluate(0)})
    batches = batches_from(start)
    step, losses, t0 = start, [], time.perf_counter()
    with terminate_as_interrupt():
        try:
            while step < end:
                batch = next(batches)
                lr = learning_rate(config, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                model.train()
                with accelerator.autocast():
                    generator = _step_generator(config, step, accelerator.process_index, accelerator.device)
                    loss = loss_fn(model, batch, generator)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(params, config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                ema.update(raw, step)
                losses.append(float(loss.detach()))
                if not math.isfinite(losses[-1]):
                    raise InputError(f"the loss became {losses[-1]} at step {step}; lower --lr or use "
                                     "--mixed-precision no, then resume (the last checkpoint is intact)")
                if progress is not None:
                    progress(step, {"loss": losses[-1], "lr": lr})
                if step % config.log_every == 0 or step == end:
                    seconds = time.perf_counter() - t0
                    log.train.append({"step": step, "loss": float(np.mean(losses)), "lr": lr,
                                      "samples_per_s": round(len(losses) * samples_per_step / seconds, 3),
                                      "seconds": round(seconds, 3)})
                    losses, t0 = [], time.perf_counter()
                if config.sample_every and step % config.sample_every == 0 and step != end and main:
                    t_eval = time.perf_counter()
                    log.eval.append({"step": step, **evaluate(step)})
                    t0 += time.perf_counter() - t_eval  # samples/s counts training time only
                if step % config.checkpoint_every == 0 and step != end:
                    save(step)
        except KeyboardInterrupt:
            if step > start:
                logger.warning("interrupted at step %d: writing a checkpoint to resume from", step)
                save(step)
            raise
    if step > start or _latest_checkpoint(out_dir) is None:
        if main:
            log.eval.append({"step": step, **evaluate(step)})
        save(step)
    return start, step


# --------------------------------------------------------------------------------------------
# VAE
# --------------------------------------------------------------------------------------------


class _VAEObjective(torch.nn.Module):
    """The VAE's loss as a module `forward`, so data-parallel wrappers see the whole step."""

    def __init__(self, vae, loss: VAELossConfig, train_encoder: bool = True):
        super().__init__()
        self.vae, self.loss, self.train_encoder = vae, loss, train_encoder

    def forward(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x (B, 3, S, S) in [-1, 1] -> scalar loss."""
        with torch.set_grad_enabled(self.train_encoder and torch.is_grad_enabled()):
            posterior = self.vae.encode(x).latent_dist
        # a frozen encoder's decoder learns the posterior means: the latents a transformer is trained on
        z = posterior.sample(generator) if self.train_encoder else posterior.mode()
        recon = self.vae.decode(z).sample.float()  # [B, 3, S, S]
        err = (recon - x).abs() if self.loss.reconstruction == "l1" else (recon - x).pow(2)
        loss = err.mean()
        if self.train_encoder:
            loss = loss + self.loss.kl_weight * posterior.kl().float().mean() / x[0].numel()
        if self.loss.ssim_weight > 0:
            from pytorch_msssim import ssim

            win = min(11, x.shape[-1] - 1 + x.shape[-1] % 2)
            s = ssim((recon.clamp(-1, 1) + 1) / 2, (x + 1) / 2, data_range=1.0, win_size=win)
            loss = loss + self.loss.ssim_weight * (1 - s)
        return loss


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0**2 / max(mse, 1e-10)))


def train_vae(config: TrainConfig, out_dir: Path | str, *, progress: Progress | None = None,
              stop_at: int | None = None) -> TrainResult:
    """Train the per-frame VAE on world renders; save the EMA weights to OUT/vae.

    Args:
        config: the run; `batch_size` counts frames; `frames` only selects views of a dataset.
        out_dir: run folder, created, or resumed from its latest checkpoint.
        progress: progress(step, {"loss", "lr"}) after each step.
        stop_at: stop (with a checkpoint) at this step even if config.steps is larger: a
            time-boxed chunk of a longer resumable run; the final VAE is written only at
            config.steps.
    Returns:
        TrainResult; metrics hold reconstruction PSNR (dB) per held-out split (`psnr_val`,
        `psnr_test`, or `psnr_heldout` for procedural data) and the latent `scaling_factor`.
    """
    from orbitforge.gen.vae import decode_latents, encode_frames, frames_to_tensor, make_vae, measure_latent_scale

    out_dir = Path(out_dir)
    # a VAE that cannot be loaded fails before the run folder records its settings
    base = load_trained_vae(config.decoder_from) if config.decoder_from else None
    _check_run_folder(out_dir, config, "vae")
    accelerator = _accelerator(config)
    if base is not None:  # the latent space stays the one a transformer may already be trained on
        vae = base
        vae.encoder.requires_grad_(False)
        if vae.quant_conv is not None:
            vae.quant_conv.requires_grad_(False)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            vae = make_vae(MODEL_PRESETS[config.model]["vae"])
    objective = _VAEObjective(vae, config.vae_loss, train_encoder=not config.decoder_from).to(accelerator.device)
    ema = _EMA(objective, config.ema_decay)  # ema.model.vae is the VAE that ships
    source = _train_source(config)
    evals = _eval_sets(config)
    rank, world = accelerator.process_index, accelerator.num_processes
    # a stored batch takes its frames from batch_size different orbits; a rendered one uses every view
    per_orbit = max(1, math.ceil(config.batch_size / config.frames)) if config.data == PROCEDURAL else config.batch_size

    def frames_of(batch: _Orbits, rng_index: int) -> torch.Tensor:
        flat = batch.frames.reshape(-1, *batch.frames.shape[2:])  # [B*T, S, S, 3]
        pick = np.random.default_rng([_BATCH_STREAM, config.seed, rng_index]).permutation(len(flat))
        return frames_to_tensor(flat[pick[: config.batch_size]])

    def batches_from(start: int):
        stream = _batches(source, start, config, per_orbit, rank, world)
        k = start
        while True:
            yield frames_of(next(stream), k * world + rank)
            k += 1

    @torch.no_grad()
    def evaluate(step: int) -> dict:
        metrics, shown = {}, []
        for split, orbits in evals.items():
            flat = orbits.frames.reshape(-1, *orbits.frames.shape[2:])  # [N*T, S, S, 3]
            recon = decode_latents(ema.model.vae, encode_frames(ema.model.vae, flat))
            metrics[f"psnr_{split}"] = round(float(np.mean([_psnr(a, b) for a, b in zip(flat, recon)])), 3)
            shown.append((split, flat[:8], recon[:8]))
        cols = min(len(f) for _, f, _ in shown)
        grid = np.concatenate([np.concatenate([a[:cols], b[:cols]]) for _, a, b in shown])
        labels = [f"{split} {row}" for split, _, _ in shown for row in ("input", "recon") for _ in range(cols)]
        _save_grid(out_dir, step, grid, cols, labels)
        logger.info("VAE step %d: %s", step, metrics)
        return metrics

    start, end = _run_loop(config=config, out_dir=out_dir, accelerator=accelerator, model=objective, ema=ema,
                           loss_fn=lambda m, x, g: m(x.to(accelerator.device), g), batches_from=batches_from,
                           evaluate=evaluate, samples_per_step=config.batch_size * world, progress=progress,
                           stop_at=stop_at)
    output = out_dir / "vae"
    metrics = _last_eval(out_dir)
    if end >= config.steps and accelerator.is_main_process:
        vae = ema.model.vae
        if not config.decoder_from:  # a frozen encoder keeps the scale the transformer was trained with
            probe = np.concatenate([o.frames.reshape(-1, *o.frames.shape[2:]) for o in evals.values()])[:64]
            vae.register_to_config(scaling_factor=measure_latent_scale(vae, probe))
        metrics["scaling_factor"] = vae.config.scaling_factor
        vae.save_pretrained(output, safe_serialization=True)
        write_bytes_atomic(out_dir / _METRICS, json.dumps(metrics, indent=1).encode())
    return TrainResult(out_dir, end, start, output, metrics)


def _last_eval(out_dir: Path) -> dict:
    """The newest held-out metrics in OUT/log.json (step included)."""
    path = out_dir / _LOG
    entries = json.loads(path.read_text()).get("eval", []) if path.is_file() else []
    return dict(entries[-1]) if entries else {}


# --------------------------------------------------------------------------------------------
# DiT
# --------------------------------------------------------------------------------------------


def load_trained_vae(path: Path | str):
    """The EMA VAE written by `train_vae`: its run folder or the `vae/` folder inside it."""
    from diffusers import AutoencoderKL

    path = Path(path)
    if (path / "vae" / "config.json").is_file():
        path = path / "vae"
    if not (path / "config.json").is_file():
        raise InputError(f"no trained VAE at {path}; train one with `orbitforge train vae -o DIR` and pass that "
                         "DIR (or DIR/vae)")
    return AutoencoderKL.from_pretrained(str(path), use_safetensors=True, local_files_only=True)


def _file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@torch.no_grad()
def _encode_orbits(vae, frames: np.ndarray, device, chunk: int = 64) -> torch.Tensor:
    """(N, T, S, S, 3) uint8 -> (N, T, C, S/8, S/8) float32 normalised latents on the CPU."""
    from orbitforge.gen.vae import encode_frames

    flat = frames.reshape(-1, *frames.shape[2:])
    out = []
    for start in range(0, len(flat), chunk):
        with torch.autocast(device.type, enabled=device.type == "cuda", dtype=torch.bfloat16):
            out.append(encode_frames(vae, flat[start:start + chunk]).float().cpu())
        if len(flat) > 20 * chunk and start // chunk % 20 == 0:  # only for the one-off dataset encode
            logger.info("encoding frames to latents: %d / %d", start + len(out[-1]), len(flat))
    z = torch.cat(out)
    return z.view(*frames.shape[:2], *z.shape[1:])


def _cached_latents(vae, vae_digest: str, stored: _StoredOrbits, cache_dir: Path, tag: str, device) -> torch.Tensor:
    """The VAE latents of every stored orbit, computed once per (VAE weights, data) and cached."""
    from safetensors.torch import load_file, save_file

    key = hashlib.sha256(f"{vae_digest}|{tag}|{stored.frames.shape}".encode()).hexdigest()[:16]
    path = cache_dir / f"latents-{key}.safetensors"
    if path.is_file():
        return load_file(path)["latents"]
    latents = _encode_orbits(vae, stored.frames, device)
    with atomic_path(path) as tmp:
        save_file({"latents": latents.contiguous()}, tmp)
    return latents


class _TextBank:
    """Caption embeddings: every caption of a stored dataset encoded once (and cached on disk);
    unseen captions (procedural data) go through the encoder and its LRU cache."""

    def __init__(self, encoder: SentenceEncoder, captions: list[str], cache_dir: Path | None):
        from safetensors.torch import load_file, save_file

        self.encoder = encoder
        unique = sorted(set(captions))
        self.index = {c: i for i, c in enumerate(unique)}
        if not unique:
            return
        key = hashlib.sha256(json.dumps([encoder.model_name, unique]).encode()).hexdigest()[:16]
        path = cache_dir / f"text-{key}.safetensors" if cache_dir is not None else None
        if path is not None and path.is_file():
            t = load_file(path)
        else:
            tokens, lengths, pooled = [], [], []
            for start in range(0, len(unique), 128):
                emb = encoder.encode(unique[start:start + 128])
                n = emb.mask.sum(1)
                tokens += [emb.tokens[i, : int(n[i])].cpu() for i in range(len(n))]
                lengths.append(n.cpu())
                pooled.append(emb.pooled.cpu())
            t = {"tokens": torch.cat(tokens), "lengths": torch.cat(lengths), "pooled": torch.cat(pooled)}
            if path is not None:
                with atomic_path(path) as tmp:
                    save_file(t, tmp)
            logger.info("encoded %d unique captions once", len(unique))
        self.tokens, self.pooled = t["tokens"], t["pooled"]  # [sum L, D], [K, D]
        self.lengths = t["lengths"].long()
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)])

    def embed(self, captions: list[str]) -> TextEmbeddings:
        if any(c not in self.index for c in captions):
            return self.encoder.encode(captions)
        rows = [self.index[c] for c in captions]
        L = int(max(self.lengths[r] for r in rows))
        tokens = torch.zeros(len(rows), L, self.tokens.shape[1])  # [B, L, D]
        mask = torch.zeros(len(rows), L, dtype=torch.bool)
        for i, r in enumerate(rows):
            n = int(self.lengths[r])
            tokens[i, :n] = self.tokens[self.offsets[r]: self.offsets[r] + n]
            mask[i, :n] = True
        return TextEmbeddings(tokens, mask, self.pooled[rows])


def _rays(orbits: _Orbits, h: int, w: int) -> torch.Tensor:
    """(B, T, 6, h, w) Plücker rays of each orbit's cameras."""
    from orbitforge.gen.dit import camera_rays

    return torch.stack([camera_rays(_cameras(orbits, i), h, w) for i in range(len(orbits.captions))])


def train_dit(config: TrainConfig, out_dir: Path | str, *, progress: Progress | None = None,
              stop_at: int | None = None) -> TrainResult:
    """Train the orbit transformer on a trained VAE's latents; save the EMA OrbitVideoPipeline.

    Args:
        config: the run; `vae` must name a `train_vae` output; `batch_size` counts orbits of
            `frames` views at `size` px.
        out_dir: run folder, created, or resumed from its latest checkpoint.
        progress: progress(step, {"loss", "lr"}) after each step.
        stop_at: stop (with a checkpoint) at this step even if config.steps is larger; the
            pipeline is written only at config.steps.
    Returns:
        TrainResult whose output is OUT/pipeline (`OrbitVideoPipeline.from_pretrained` loads it);
        metrics hold the flow loss of the EMA model on held-out orbits (`loss_val`, `loss_test`,
        or `loss_heldout`) with fixed noise.
    """
    from diffusers import FlowMatchEulerDiscreteScheduler

    from orbitforge.gen.dit import OrbitDiT
    from orbitforge.gen.pipeline import OrbitVideoPipeline

    if config.vae is None:
        raise InputError("the transformer trains on a VAE's latents: train one with `orbitforge train vae -o DIR`, "
                         "then pass --vae DIR")
    out_dir = Path(out_dir)
    vae = load_trained_vae(config.vae)  # before the folder is touched: a bad path writes nothing
    _check_run_folder(out_dir, config, "dit")
    accelerator = _accelerator(config)
    device, rank, world = accelerator.device, accelerator.process_index, accelerator.num_processes
    vae.to(device).eval().requires_grad_(False)
    weights = Path(vae.config._name_or_path) / "diffusion_pytorch_model.safetensors"
    vae_digest = _file_digest(weights) if weights.is_file() else str(config.vae)
    encoder = SentenceEncoder(config.text_model, device=device, cache_size=4096)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = OrbitDiT(in_channels=vae.config.latent_channels, text_dim=encoder.dim,
                         **MODEL_PRESETS[config.model]["dit"]).to(device)
    ema = _EMA(model, config.ema_decay)
    source = _train_source(config)
    evals = _eval_sets(config)
    h = w = config.size // 8
    cache = out_dir / "cache"

    # 1. what a step sees: latents (cached for stored data, encoded on the fly otherwise), rays, text
    if isinstance(source, _StoredOrbits):
        train_latents = _cached_latents(vae, vae_digest, source, cache, f"{Path(config.data).resolve()}|train", device)
        text = _TextBank(encoder, [c for caps in source.captions for c in caps], cache)
    else:
        train_latents, text = None, _TextBank(encoder, [], None)
    eval_batches = {}
    for split, orbits in evals.items():
        with torch.no_grad():
            z = _encode_orbits(vae, orbits.frames, device)
        eval_batches[split] = FlowBatch(z, _rays(orbits, h, w), text.embed(orbits.captions))

    def to_flow_batch(orbits: _Orbits) -> FlowBatch:
        if train_latents is not None:
            z = train_latents[torch.from_numpy(orbits.rows)[:, None], torch.from_numpy(orbits.views)]  # [B, T, C, h, w]
        else:
            z = _encode_orbits(vae, orbits.frames, device)
        return FlowBatch(z, _rays(orbits, h, w), text.embed(orbits.captions))

    def batches_from(start: int):
        return map(to_flow_batch, _batches(source, start, config, config.batch_size, rank, world))

    def loss_fn(prepared: torch.nn.Module, batch: FlowBatch, generator: torch.Generator) -> torch.Tensor:
        batch = FlowBatch(batch.latents.to(device), batch.rays.to(device), batch.text.to(device))
        return flow_matching_loss(prepared, batch, config.flow, generator=generator)

    # 2. held-out loss with fixed noise, and sample grids from the EMA weights
    pipe = OrbitVideoPipeline(ema.model, vae, FlowMatchEulerDiscreteScheduler(), text_model=config.text_model,
                              default_frames=config.frames, default_size=config.size)
    pipe.set_progress_bar_config(disable=True)

    @torch.no_grad()
    def evaluate(step: int) -> dict:
        metrics = {}
        for split, batch in eval_batches.items():
            batch = FlowBatch(batch.latents.to(device), batch.rays.to(device), batch.text.to(device))
            losses = [float(flow_matching_loss(ema.model, batch, config.flow,
                                               generator=torch.Generator(device).manual_seed(1000 + k)))
                      for k in range(4)]
            metrics[f"loss_{split}"] = round(float(np.mean(losses)), 5)
        split, orbits = next(iter(evals.items()))
        rows, labels = [], []
        for i in range(min(_SAMPLE_PROMPTS, len(orbits.captions))):
            out = pipe(orbits.captions[i], cameras=_cameras(orbits, i), num_inference_steps=config.sample_steps,
                       generator=torch.Generator(device).manual_seed(i))
            rows += [orbits.frames[i], out.clip.frames]
            labels += [orbits.captions[i]] + [""] * (config.frames - 1) + ["generated"] + [""] * (config.frames - 1)
        _save_grid(out_dir, step, np.concatenate(rows), config.frames, labels)
        logger.info("DiT step %d: %s", step, metrics)
        return metrics

    start, end = _run_loop(config=config, out_dir=out_dir, accelerator=accelerator, model=model, ema=ema,
                           loss_fn=loss_fn, batches_from=batches_from, evaluate=evaluate,
                           samples_per_step=config.batch_size * world, progress=progress, stop_at=stop_at)
    output = out_dir / "pipeline"
    metrics = _last_eval(out_dir)
    if end >= config.steps and accelerator.is_main_process:
        pipe.save_pretrained(output)
        write_bytes_atomic(out_dir / _METRICS, json.dumps(metrics, indent=1).encode())
        write_model_card(out_dir, output)
    return TrainResult(out_dir, end, start, output, metrics)
