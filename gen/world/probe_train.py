"""Training and held-out evaluation of the attribute probe (`probe.py`) on a world dataset.

`train_probe(dataset_dir, config)` reads every view of the dataset's `train` split (area-resized
once to the probe's input size and kept as uint8), trains `ProbeNet` with AdamW on a one-cycle
schedule and cross-entropy on both heads, showing each asset `views_per_asset` times per epoch in
views drawn afresh each epoch, then measures accuracy on `val` (seen colour-category pairs) and
`test` (held-out pairs), every view of every asset.

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
        (probe, metrics).  metrics: train_assets, train_views_available, train_frames_per_epoch,
        train_seconds, epochs, final_loss, config, and heldout[split] (see `evaluate_probe`) for
        "val" and "test" (a split with no assets is left out).
    Raises:
        InputError: no dataset at `dataset_dir`, or its train split is empty.
    """
    categories, colours = default_vocabularies()
    frames, cat_labels, col_labels = _load_train(dataset_dir, config.net.image_size, categories, colours)
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
        final_loss, frames_per_epoch = _fit(net, frames, cat_labels, col_labels, config, progress)
        seconds = time.perf_counter() - t0
        probe = AttributeProbe(net, categories, colours, config.net)
        heldout = {split: m for split in _EVAL_SPLITS if (m := evaluate_probe(probe, dataset_dir, split)) is not None}
    finally:
        torch.set_num_threads(previous_threads)
    metrics = {"train_assets": int(len(frames)), "train_views_available": int(frames.shape[1]),
               "train_frames_per_epoch": frames_per_epoch, "train_seconds": round(seconds, 2), "epochs": config.epochs,
               "final_loss": round(final_loss, 4), "config": asdict(config), "heldout": heldout}
    for split, m in heldout.items():
        logger.info("probe on %s: category %.1f%%, colour %.1f%% (%d frames)", split, 100 * m["category_accuracy"],
                    100 * m["colour_accuracy"], m["frames"])
    return probe, metrics


def evaluate_probe(probe: AttributeProbe, dataset_dir: Path | str, split: str) -> dict | None:
    """Accuracy of `probe` on every view of a split; None when the split is empty.

    Per frame (`category_accuracy`, `colour_accuracy`, `both_accuracy`): each view on its own.
    Per asset (`asset_category_accuracy`, `asset_colour_accuracy`): the views' probabilities
    summed, what `score_clip`-style checks over a whole orbit can rely on.
    """
    data = OrbitDataset(dataset_dir, split)
    if len(data) == 0:
        return None
    cat_index = {name: i for i, name in enumerate(probe.categories)}
    col_index = {name: i for i, name in enumerate(probe.colours)}
    hits = np.zeros(5, np.int64)  # frame: category, colour, both; asset: category, colour
    frames_seen = 0
    for shard in data.shards():
        A, T = shard.frames.shape[:2]
        cat_probs, col_probs = probe.probabilities(shard.frames.reshape(A * T, *shard.frames.shape[2:]))
        cat_truth = np.array([cat_index[r["attributes"]["category"]] for r in shard.records])  # [A]
        col_truth = np.array([col_index[r["attributes"]["main_colour"]] for r in shard.records])  # [A]
        cat_ok = cat_probs.argmax(1).reshape(A, T) == cat_truth[:, None]  # [A, T]
        col_ok = col_probs.argmax(1).reshape(A, T) == col_truth[:, None]  # [A, T]
        asset_cat = cat_probs.reshape(A, T, -1).sum(1).argmax(1) == cat_truth  # [A]
        asset_col = col_probs.reshape(A, T, -1).sum(1).argmax(1) == col_truth  # [A]
        hits += [cat_ok.sum(), col_ok.sum(), (cat_ok & col_ok).sum(), asset_cat.sum(), asset_col.sum()]
        frames_seen += A * T
    frame_acc = [round(float(h) / frames_seen, 4) for h in hits[:3]]
    asset_acc = [round(float(h) / len(data), 4) for h in hits[3:]]
    return {"assets": len(data), "frames": frames_seen, "category_accuracy": frame_acc[0],
            "colour_accuracy": frame_acc[1], "both_accuracy": frame_acc[2],
            "asset_category_accuracy": asset_acc[0], "asset_colour_accuracy": asset_acc[1]}


def _fit(net: ProbeNet, frames: np.ndarray, cat_labels: np.ndarray, col_labels: np.ndarray, config: ProbeConfig,
         progress: Progress | None) -> tuple[float, int]:
    """The training loop over frames (A, T, S, S, 3); returns the last loss and frames per epoch.

    Each epoch shows every asset `views_per_asset` times, in views drawn afresh from all of its
    T views: the data of T views at the cost of `views_per_asset`."""
    generator = torch.Generator().manual_seed(config.seed)
    A, T = frames.shape[:2]
    views = min(config.views_per_asset, T)
    per_epoch = max(1, A * views // config.batch_size)
    total = config.epochs * per_epoch
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=config.learning_rate, total_steps=total,
                                                   pct_start=0.2)
    cats, cols = torch.from_numpy(cat_labels), torch.from_numpy(col_labels)
    average = {k: v.detach().clone() for k, v in net.state_dict().items()} if config.ema_decay is not None else None
    net.train()
    loss = torch.zeros(())
    for step in range(total):
        if step % per_epoch == 0:  # (asset, view) pairs of this epoch, shuffled
            chosen = torch.rand(A, T, generator=generator).argsort(dim=1)[:, :views]  # [A, views]
            pairs = torch.stack([torch.arange(A).repeat_interleave(views), chosen.reshape(-1)], dim=1)  # [A*views, 2]
            pairs = pairs[torch.randperm(len(pairs), generator=generator)]
        batch = pairs[(step % per_epoch) * config.batch_size:][:config.batch_size]  # [B, 2]
        assets = batch[:, 0]
        x = to_input(frames[assets.numpy(), batch[:, 1].numpy()], config.net.image_size)
        cat_logits, col_logits = net(_augment(x, config.max_shift_px, generator))
        loss = F.cross_entropy(cat_logits, cats[assets]) + F.cross_entropy(col_logits, cols[assets])
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        if average is not None:
            _update_average(average, net, min(config.ema_decay, (1 + step) / (10 + step)))
        if progress is not None:
            progress("train", step + 1, total)
    if average is not None:
        net.load_state_dict(average)
    net.eval()
    return float(loss.detach()), min(per_epoch * config.batch_size, A * views)


@torch.no_grad()
def _update_average(average: dict[str, torch.Tensor], net: ProbeNet, decay: float) -> None:
    """average <- decay * average + (1 - decay) * current, for weights and BatchNorm statistics.
    The decay ramps up from 0.1 (the (1 + t) / (10 + t) warm-up), so the random initial weights
    are forgotten within the first steps even in a short run."""
    for name, value in net.state_dict().items():
        if value.is_floating_point():
            average[name].lerp_(value, 1.0 - decay)
        else:  # BatchNorm's step counter
            average[name].copy_(value)


def _augment(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flips per frame and one wrapped shift per batch ([B, 3, S, S])."""
    flip = torch.rand(len(x), generator=generator) < 0.5
    x = torch.where(flip[:, None, None, None], x.flip(3), x)
    if max_shift > 0:
        dy, dx = torch.randint(-max_shift, max_shift + 1, (2,), generator=generator).tolist()
        x = torch.roll(x, (dy, dx), dims=(2, 3))  # what wraps in is white background
    return x


def _load_train(dataset_dir: Path | str, image_size: int, categories, colours):
    """Every view of the train split, area-resized once and kept as uint8 (12 KiB per 64^2 frame):
    frames (A, T, image_size, image_size, 3), category and colour label indices (A,) int64."""
    data = OrbitDataset(dataset_dir, "train")
    cat_index = {name: i for i, name in enumerate(categories)}
    col_index = {name: i for i, name in enumerate(colours)}
    frames, cat_labels, col_labels = [], [], []
    for shard in data.shards():
        A, T = shard.frames.shape[:2]
        small = to_input(shard.frames.reshape(A * T, *shard.frames.shape[2:]), image_size)
        small = ((small + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        frames.append(small.reshape(A, T, image_size, image_size, 3))
        cat_labels += [cat_index[r["attributes"]["category"]] for r in shard.records]
        col_labels += [col_index[r["attributes"]["main_colour"]] for r in shard.records]
    if not frames:
        return np.zeros((0, 1, image_size, image_size, 3), np.uint8), np.zeros(0, np.int64), np.zeros(0, np.int64)
    return np.concatenate(frames), np.asarray(cat_labels, np.int64), np.asarray(col_labels, np.int64)
