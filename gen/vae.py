"""The video compression network: a per-frame image VAE with 8x spatial compression.

It is a stock diffusers `AutoencoderKL` (the Stable Diffusion VAE's Encoder/Decoder blocks:
ResNet blocks, 2x downsampling per level, one attention layer in the middle), configured small
enough to train on the synthetic world's renders on a CPU.  Frames are compressed one by one:
the orbit's frames are far apart in viewpoint, so a temporal VAE would buy little here, and all
cross-frame modelling happens in the transformer's full attention.

Four levels of `block_out_channels` give three downsamplings, i.e. 8x: a 128 x 128 frame
becomes a (latent_channels, 16, 16) latent.  Latents are normalised for the diffusion model as
`(z - shift_factor) * scaling_factor` (the diffusers convention); `measure_latent_scale` finds
the factor that gives unit variance on a sample of frames, to be written into the config once
the VAE is trained.

Presets (parameters counted with `count_parameters`):

    ========  ==================  =======  ===========  ===============================
    preset    block_out_channels  latent   parameters   use
    ========  ==================  =======  ===========  ===============================
    tiny      (8, 8, 8, 8)        4        24.8 k       tests only
    starter   (32, 64, 128, 128)  8        3.90 M       the CPU starter model, 64-128 px
    ========  ==================  =======  ===========  ===============================

The starter VAE (1.47 M encoder, 2.42 M decoder) takes ~105 ms to encode and ~215 ms to decode
one 128 x 128 frame on one core of the 2-core CI CPU (float32, no grad).

    >>> vae = make_vae("tiny")
    >>> z = encode_frames(vae, np.zeros((3, 16, 16, 3), np.uint8))   # [3, 4, 2, 2]
    >>> decode_latents(vae, z).shape
    (3, 16, 16, 3)
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np
import torch
from diffusers import AutoencoderKL

from orbitforge.errors import InputError

logger = logging.getLogger(__name__)

VAE_SCALE = 8
"""Spatial compression of every orbitforge VAE: 4 levels, 3 downsamplings."""


@dataclass(frozen=True)
class VAEConfig:
    """The knobs of a small `AutoencoderKL`; everything else keeps the diffusers default."""

    block_out_channels: tuple[int, ...] = (32, 64, 128, 128)
    """Channels per level; exactly 4 levels (8x).  Wider levels cost quadratically in compute."""
    latent_channels: int = 8
    """Channels of the latent; 8 rather than SD's 4 keeps small, saturated textures at 8x."""
    layers_per_block: int = 1
    """ResNet blocks per level in the encoder (the decoder has one more, as in diffusers)."""
    norm_num_groups: int = 16
    """GroupNorm groups; must divide every entry of block_out_channels."""
    scaling_factor: float = 1.0
    """Latent normalisation; set it from `measure_latent_scale` after training the VAE."""
    mid_block_attention: bool = True
    """One self-attention layer at the latent resolution (16 x 16 at 128 px: cheap)."""

    def __post_init__(self) -> None:
        if len(self.block_out_channels) != 4:
            raise InputError(f"an orbitforge VAE has 4 levels (8x compression), got block_out_channels="
                             f"{self.block_out_channels}")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise InputError(f"norm_num_groups={self.norm_num_groups} must divide every block width, not {bad}")
        if self.latent_channels < 1:
            raise InputError(f"latent_channels must be positive, got {self.latent_channels}")


VAE_PRESETS: dict[str, VAEConfig] = {
    "tiny": VAEConfig(block_out_channels=(8, 8, 8, 8), latent_channels=4, norm_num_groups=4),
    "starter": VAEConfig(),
}


def make_vae(config: VAEConfig | Literal["tiny", "starter"] = "starter") -> AutoencoderKL:
    """A randomly initialised diffusers `AutoencoderKL` with 8x compression, float32, CPU."""
    if isinstance(config, str):
        try:
            config = VAE_PRESETS[config]
        except KeyError:
            raise InputError(f"unknown VAE preset {config!r}; choose one of {sorted(VAE_PRESETS)}") from None
    c = asdict(config)
    n = len(config.block_out_channels)
    return AutoencoderKL(
        in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=tuple(c["block_out_channels"]), layers_per_block=config.layers_per_block,
        latent_channels=config.latent_channels, norm_num_groups=config.norm_num_groups,
        scaling_factor=config.scaling_factor, mid_block_add_attention=config.mid_block_attention,
    )


def vae_scale(vae: AutoencoderKL) -> int:
    """The VAE's spatial compression: 2 ** (levels - 1)."""
    return 2 ** (len(vae.config.block_out_channels) - 1)


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def frames_to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 sRGB -> (T, 3, H, W) float32 in [-1, 1]."""
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be (T, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    if not frames.flags.writeable:  # e.g. np.asarray(PIL image): torch warns on read-only memory
        frames = frames.copy()
    x = torch.from_numpy(np.ascontiguousarray(frames)).permute(0, 3, 1, 2).float()  # [T, 3, H, W]
    return x / 127.5 - 1.0


def tensor_to_frames(x: torch.Tensor) -> np.ndarray:
    """(T, 3, H, W) float in [-1, 1] -> (T, H, W, 3) uint8 sRGB (clamped, rounded)."""
    x = ((x.detach().float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def _check_size(vae: AutoencoderKL, height: int, width: int) -> None:
    s = vae_scale(vae)
    if height % s or width % s:
        raise InputError(f"frame size {width}x{height} is not a multiple of the VAE's {s}x compression; "
                         f"use a size such as {max(s, width // s * s)}x{max(s, height // s * s)}")


def encode_frames(vae: AutoencoderKL, frames: np.ndarray | torch.Tensor, *, sample: bool = False,
                  generator: torch.Generator | None = None, chunk: int = 16) -> torch.Tensor:
    """Encode frames to normalised latents, `chunk` frames at a time.

    Args:
        vae: an orbitforge VAE (any `AutoencoderKL`).
        frames: (T, H, W, 3) uint8 sRGB, or (T, 3, H, W) float in [-1, 1]; H, W multiples of 8.
        sample: draw from the posterior (training augmentation) instead of taking its mean.
        generator: random stream for `sample=True`.
        chunk: frames per encoder call (bounds memory).
    Returns:
        (T, C, H/8, W/8) latents, `(z - shift_factor) * scaling_factor`, on the VAE's device
        and dtype.  Gradients flow when called under grad mode (VAE training).
    """
    x = frames if isinstance(frames, torch.Tensor) else frames_to_tensor(frames)
    _check_size(vae, x.shape[-2], x.shape[-1])
    x = x.to(vae.device, vae.dtype)
    shift = vae.config.shift_factor or 0.0
    out = []
    for start in range(0, len(x), chunk):
        posterior = vae.encode(x[start : start + chunk]).latent_dist
        z = posterior.sample(generator) if sample else posterior.mode()  # [t, C, h, w]
        out.append((z - shift) * vae.config.scaling_factor)
    return torch.cat(out)


def decode_latents(vae: AutoencoderKL, latents: torch.Tensor, *, chunk: int = 16,
                   output_type: Literal["np", "pt"] = "np") -> np.ndarray | torch.Tensor:
    """Decode normalised latents back to frames.

    Args:
        latents: (T, C, h, w) as returned by `encode_frames`.
        output_type: "np" for (T, 8h, 8w, 3) uint8 sRGB; "pt" for (T, 3, 8h, 8w) float in
            [-1, 1] (unclamped, differentiable: the VAE's reconstruction loss).
    """
    if latents.ndim != 4 or latents.shape[1] != vae.config.latent_channels:
        raise InputError(f"latents must be (T, {vae.config.latent_channels}, h, w), got {tuple(latents.shape)}")
    shift = vae.config.shift_factor or 0.0
    z = latents.to(vae.device, vae.dtype) / vae.config.scaling_factor + shift
    x = torch.cat([vae.decode(z[s : s + chunk]).sample for s in range(0, len(z), chunk)])  # [T, 3, H, W]
    return x if output_type == "pt" else tensor_to_frames(x)


@torch.no_grad()
def measure_latent_scale(vae: AutoencoderKL, frames: np.ndarray) -> float:
    """1 / std of the raw (unnormalised) latent means of `frames`: the `scaling_factor` that
    gives the diffusion model unit-variance inputs (Rombach et al. 2022, sec. 4.3.2)."""
    shift = vae.config.shift_factor or 0.0
    z = encode_frames(vae, frames) / vae.config.scaling_factor + shift
    return float(1.0 / z.float().std().clamp_min(1e-6))
