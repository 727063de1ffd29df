"""Training and held-out evaluation of the attribute probe (`probe.py`) on a world dataset.

`train_probe(dataset_dir, config)` reads the dataset's `train` split (a few evenly spaced views
per asset, area-resized once to the probe's input size and kept as uint8), trains `ProbeNet` with
AdamW on a one-cycle schedule and cross-entropy on both heads, then measures per-frame accuracy on
`val` (seen colour-category pairs) and `test` (held-out pairs), every view of every asset.

Augmentation is geometric only: horizontal flips (the world has no handedness a label depends
on) and small wrapped shifts (framing varies with the asset's size).  Photometric jitter is left
out on purpose: brightness is how "gray" differs from "silver" under the same light.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from orbitforge.errors import InputError
from orbitforge.gen.world.probe import AttributeProbe, ProbeConfig, Progress, default_vocabularies
from orbitforge.gen.world.probe_net import ProbeNet, to_input
from orbitforge.gen.world.shards import OrbitDataset

logger = logging.getLogger(__name__)

_EVAL_SPLITS = ("val", "test")


def train_probe(dataset_dir: Path | str, config: ProbeConfig = ProbeConfig(), *,
                progress: Progress | None = None) -> tuple[AttributeProbe, dict]:
    """Train the probe on a dataset's train split; evaluate it on val and test.

    Args:
        dataset_dir: a folder written by `build_dataset`.
        config: training settings (and the network's shape, `config.net`).
        progress: called as progress("train", batches done, batches in total).
    Returns:
        (probe, metrics).  metrics: train_frames, train_assets, train_seconds, epochs, final_loss,
        and heldout[split] = {assets, frames, category_accuracy, colour_accuracy, both_accuracy}
        for "val" and "test" (a split with no assets is left out).
    Raises:
        InputError: no dataset at `dataset_dir`, or its train split is empty.
    """
    categories, colours = default_vocabularies()
    frames, cat_labels, col_labels = _load_split(dataset_dir, "train", config.views_per_asset, config.net.image_size,
                                                 categories, colours)
    if len(frames) == 0:
        raise InputError(f"{dataset_dir}: the train split is empty; build a dataset with more --assets")
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        with torch.random.fork_rng(devices=[]):  # seeded init without disturbing the caller's RNG
            torch.manual_seed(config.seed)
            net = ProbeNet(config.net, len(categories), len(colours))
        t0 = time.perf_counter()
        final_loss = _fit(net, frames, cat_labels, col_labels, config, progress)
        seconds = time.perf_counter() - t0
        probe = AttributeProbe(net, categories, colours, config.net)
        heldout = {split: m for split in _EVAL_SPLITS if (m := evaluate_probe(probe, dataset_dir, split)) is not None}
    finally:
        torch.set_num_threads(previous_threads)
    metrics = {"train_frames": int(len(frames)), "train_assets": int(len(frames) // _views_used(dataset_dir, config)),
               "train_seconds": round(seconds, 2), "epochs": config.epochs, "final_loss": round(final_loss, 4),
               "config": asdict(config), "heldout": heldout}
    for split, m in heldout.items():
        logger.info("probe on %s: category %.1f%%, colour %.1f%% (%d frames)", split, 100 * m["category_accuracy"],
                    100 * m["colour_accuracy"], m["frames"])
    return probe, metrics


def evaluate_probe(probe: AttributeProbe, dataset_dir: Path | str, split: str) -> dict | None:
    """Per-frame accuracy of `probe` on every view of a split; None when the split is empty."""
    data = OrbitDataset(dataset_dir, split)
    if len(data) == 0:
        return None
    cat_hits = col_hits = both_hits = frames_seen = 0
    for shard in data.shards():
        views = shard.frames.reshape(-1, *shard.frames.shape[2:])  # [A * T, S, S, 3]
        predictions = probe.predict(views)
        T = shard.frames.shape[1]
        for k, p in enumerate(predictions):
            truth = shard.records[k // T]["attributes"]
            cat_ok, col_ok = p.category == truth["category"], p.colour == truth["main_colour"]
            cat_hits, col_hits, both_hits = cat_hits + cat_ok, col_hits + col_ok, both_hits + (cat_ok and col_ok)
        frames_seen += len(predictions)
    return {"assets": len(data), "frames": frames_seen, "category_accuracy": round(cat_hits / frames_seen, 4),
            "colour_accuracy": round(col_hits / frames_seen, 4), "both_accuracy": round(both_hits / frames_seen, 4)}


def _fit(net: ProbeNet, frames: np.ndarray, cat_labels: np.ndarray, col_labels: np.ndarray, config: ProbeConfig,
         progress: Progress | None) -> float:
    """The training loop; returns the last batch's loss."""
    generator = torch.Generator().manual_seed(config.seed)
    per_epoch = max(1, len(frames) // config.batch_size)
    total = config.epochs * per_epoch
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=total,
                                                   pct_start=0.2)
    cats, cols = torch.from_numpy(cat_labels), torch.from_numpy(col_labels)
    net.train()
    loss = torch.zeros(())
    for step in range(total):
        if step % per_epoch == 0:
            order = torch.randperm(len(frames), generator=generator)
        batch = order[(step % per_epoch) * config.batch_size:][:config.batch_size]
        x = _augment(to_input(frames[batch.numpy()], config.net.image_size), config.max_shift_px, generator)
        cat_logits, col_logits = net(x)
        loss = F.cross_entropy(cat_logits, cats[batch]) + F.cross_entropy(col_logits, cols[batch])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if progress is not None:
            progress("train", step + 1, total)
    net.eval()
    return float(loss.detach())


def _augment(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips per frame and one wrapped shift per batch ([B, 3, S, S])."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if max_shift > 0:
        dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
        x = torch.roll(x, (dy, dx), dims=(2, 3))  # what wraps in is white background
    return x


def _load_split(dataset_dir: Path | str, split: str, views: int, image_size: int, categories, colours):
    """Frames (N, image_size, image_size, 3) uint8 and label indices (N,) int64 of `views`
    evenly spaced views per asset of a split."""
    data = OrbitDataset(dataset_dir, split)
    chosen = _view_indices(data.views, views)
    cat_index = {name: i for i, name in enumerate(categories)}
    col_index = {name: i for i, name in enumerate(colours)}
    frames, cat_labels, col_labels = [], [], []
    for shard in data.shards():
        picked = shard.frames[:, chosen].reshape(-1, *shard.frames.shape[2:])  # [A * V, S, S, 3]
        small = to_input(picked, image_size)  # resize once, keep uint8: 12 KiB per 64^2 frame
        frames.append(((small + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())
        for record in shard.records:
            cat_labels += [cat_index[record["attributes"]["category"]]] * len(chosen)
            col_labels += [col_index[record["attributes"]["main_colour"]]] * len(chosen)
    if not frames:
        return np.zeros((0, image_size, image_size, 3), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(frames), np.asarray(cat_labels, np.int64), np.asarray(col_labels, np.int64)


def _view_indices(available: int, wanted: int) -> np.ndarray:
    """`wanted` view indices spread evenly over an orbit of `available` views."""
    if wanted >= available:
        return np.arange(available)
    return np.unique(np.linspace(0, available, wanted, endpoint=False).astype(int))


def _views_used(dataset_dir: Path | str, config: ProbeConfig) -> int:
    return len(_view_indices(OrbitDataset(dataset_dir, "train").views, config.views_per_asset))
