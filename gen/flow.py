"""The rectified-flow training objective of OrbitDiT, as one function a trainer calls per batch.

For clean latents x_0 and Gaussian noise n, a frame at noise level sigma is
x_s = (1 - s) x_0 + s n and the model regresses the constant velocity v = n - x_0 (Liu et al.
2022; Esser et al. 2024, "Scaling Rectified Flow Transformers", the SD3 paper), which is what
diffusers' FlowMatchEulerDiscreteScheduler integrates at sampling time.  sigma is drawn
logit-normal (SD3, sec. 3.1): sigmoid of a normal, which spends the training budget on the middle
noise levels where the velocity is hardest to predict.

Each sample also draws what it is conditioned on, so that one model serves text-to-3D,
image-to-3D and clip extension, and has an unconditional mode for classifier-free guidance:

* text is replaced by the model's null embeddings with probability `text_dropout`;
* with probability `extend_prob` a random prefix or suffix of the frames is given clean
  (ROLE_KNOWN), i.e. the clip is extended backward or forward from them;
* otherwise the first frame is given clean as the conditioning image (ROLE_IMAGE) unless the
  image is dropped, with probability `image_dropout`.

Clean context frames get timestep 0 and are left out of the loss.

    >>> loss = flow_matching_loss(model, FlowBatch(latents, rays, text), FlowLossConfig(), generator=g)
    >>> loss.backward()
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from orbitforge.errors import InputError
from orbitforge.gen.config import FlowLossConfig  # noqa: F401 (re-exported: the objective's settings)
from orbitforge.gen.dit import ROLE_IMAGE, ROLE_KNOWN, ROLE_NOISY, OrbitDiT
from orbitforge.gen.text import TextEmbeddings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FlowBatch:
    """One training batch, already encoded.

    Attributes:
        latents: (B, T, C, h, w) clean normalised VAE latents (`vae.encode_frames` per clip).
        rays: (B, T, 6, h, w) Plücker rays of the clips' cameras (`dit.camera_rays`).
        text: the B captions' embeddings (`text.SentenceEncoder.encode`).
    """

    latents: torch.Tensor
    rays: torch.Tensor
    text: TextEmbeddings


def sample_sigmas(batch_size: int, config: FlowLossConfig, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """(B,) float32 noise levels in (0, 1), logit-normal."""
    u = torch.randn(batch_size, generator=generator, device=device)
    return torch.sigmoid(config.logit_mean + config.logit_std * u)


def sample_roles(batch_size: int, num_frames: int, config: FlowLossConfig,
                 generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, T) int64 frame roles: what each sample is conditioned on (see the module docstring)."""
    B, T = batch_size, num_frames
    roles = torch.full((B, T), ROLE_NOISY, dtype=torch.long, device=device)
    u = torch.rand(B, 3, generator=generator, device=device)  # extend?, keep image?, prefix or suffix?
    extend = (u[:, 0] < config.extend_prob) & (T > 1)
    image = ~extend & (u[:, 1] >= config.image_dropout)
    roles[image, 0] = ROLE_IMAGE
    if extend.any():
        known = torch.randint(1, max(T, 2), (B,), generator=generator, device=device)  # [B] in [1, T-1]
        index = torch.arange(T, device=device)[None]  # [1, T]
        prefix = index < known[:, None]  # [B, T]
        suffix = index >= (T - known[:, None])
        span = torch.where((u[:, 2] < 0.5)[:, None], prefix, suffix)
        roles[extend[:, None] & span] = ROLE_KNOWN
    return roles


def flow_matching_loss(model: OrbitDiT, batch: FlowBatch, config: FlowLossConfig = FlowLossConfig(), *,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """The rectified-flow loss of one batch: mean squared velocity error over generated frames.

    Args:
        model: the transformer (train mode; gradients flow into it).
        batch: clean latents, rays and text embeddings of B clips.
        config: timestep distribution and conditioning dropout.
        generator: random stream for noise, sigmas, roles and dropout (on the latents' device),
            for reproducible steps.
    Returns:
        scalar float32 loss.
    """
    x0 = batch.latents
    if x0.ndim != 5:
        raise InputError(f"batch latents must be (B, T, C, h, w), got {tuple(x0.shape)}")
    B, T = x0.shape[:2]
    device = x0.device
    sigma = sample_sigmas(B, config, generator, device)  # [B]
    roles = sample_roles(B, T, config, generator, device)  # [B, T]
    drop_text = torch.rand(B, generator=generator, device=device) < config.text_dropout  # [B]
    noise = torch.randn(x0.shape, generator=generator, device=device, dtype=x0.dtype)

    noisy = roles == ROLE_NOISY  # [B, T]
    s = (sigma[:, None] * noisy).to(x0.dtype)  # [B, T]: context frames stay clean, sigma 0
    s5 = s[:, :, None, None, None]
    x_s = (1 - s5) * x0 + s5 * noise
    text = batch.text.to(device)
    v = model(x_s, s * config.num_train_timesteps, batch.rays.to(device), text.tokens, text.mask, text.pooled,
              roles=roles, drop_text=drop_text).sample  # [B, T, C, h, w]

    err = (v.float() - (noise - x0).float()).pow(2).mean(dim=(2, 3, 4))  # [B, T]
    weight = noisy.float()
    return (err * weight).sum() / weight.sum().clamp_min(1.0)
