"""OrbitDiT: a diffusion transformer over spacetime patches of an orbit clip's latents.

The Sora recipe narrowed to orbits (see issue 7): each frame's latent is cut into p x p patches,
the patches of all T frames form one sequence, and every block runs full self-attention over it,
so every view attends to every other (this is where multi-view consistency comes from).  Each
token also carries:

* the Plücker rays of its target camera at latent resolution, patchified like the latents, so
  any camera path can be asked for, not only a fixed orbit (cameras are first normalised by
  `normalize_c2w`, so the world's placement and scale do not matter);
* a 2D sin-cos position within its frame (relative: a frame always spans the same range);
* a role embedding: ROLE_NOISY (to generate), ROLE_KNOWN (a clean frame of a clip being
  extended) or ROLE_IMAGE (the clean first-frame latent of image-to-3D conditioning).

Conditioning: adaLN-Zero (Peebles & Xie 2023) on timestep + pooled text, with the modulation
MLP shared by all blocks and a learned per-block offset table (adaLN-single, PixArt-alpha, Chen
et al. 2023), which halves the parameters of a small model.  The timestep is per frame: clean
context frames get t = 0.  Token-level text enters by cross-attention to the frozen sentence
encoder's token embeddings, with a learned null token always in the context (an attention sink,
and the whole context when the text is dropped for classifier-free guidance).

Velocity convention (rectified flow, as diffusers' FlowMatchEulerDiscreteScheduler): the input
is x_s = (1 - s) x_0 + s * noise at sigma s, `timestep` = s * 1000, and the model predicts
v = noise - x_0.

    >>> from orbitforge.cameras import orbit
    >>> model = OrbitDiT(in_channels=4, patch_size=1, width=32, num_layers=2, num_heads=2, text_dim=384)
    >>> x = torch.randn(1, 8, 4, 2, 2)                     # [B, T, C, h, w]
    >>> rays = camera_rays(orbit(8, radius=2.0, width=16, height=16), 2, 2)[None]   # [1, 8, 6, 2, 2]
    >>> out = model(x, torch.tensor([500.0]), rays, torch.randn(1, 5, 384), torch.ones(1, 5, dtype=torch.bool),
    ...             torch.randn(1, 384)).sample                                    # [1, 8, 4, 2, 2]
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import ConfigMixin, ModelMixin  # ModelMixin must be importable from here: pipeline loading
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps, get_2d_sincos_pos_embed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from torch import nn

from orbitforge.cameras import Cameras, plucker_rays
from orbitforge.errors import InputError

logger = logging.getLogger(__name__)

ROLE_NOISY, ROLE_KNOWN, ROLE_IMAGE = 0, 1, 2
"""Frame roles: generated from noise; a clean known frame (clip extension); the clean
conditioning image (image-to-3D)."""
NUM_ROLES = 3
RAY_CHANNELS = 6
"""Plücker coordinates: unit direction (3) and moment = origin x direction (3)."""
_POS_SPAN = 16
"""A frame's patch grid always spans [0, 16) in the sin-cos embedding, whatever its size."""
_TIME_FREQS = 256
"""Sinusoidal timestep features before the timestep MLP (DiT's choice)."""


# --------------------------------------------------------------------------------------------
# Cameras -> per-token ray inputs
# --------------------------------------------------------------------------------------------


def normalize_c2w(c2w: np.ndarray) -> np.ndarray:
    """Camera poses moved to a canonical place and size: what the model sees.

    The centre is the least-squares point that all optical axes aim at (the orbit's target) and
    the scale makes the mean camera distance to it 1; rotations are kept, so world +Y stays up
    and the asset's front stays +Z.  When the axes do not meet (parallel views, one camera) the
    world origin is kept as the centre.

    Args:
        c2w: (T, 4, 4) camera-to-world, OpenCV axes.
    Returns:
        (T, 4, 4) float64 normalised camera-to-world.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    origins, forward = c2w[:, :3, 3], c2w[:, :3, 2]  # [T, 3], [T, 3]
    proj = np.eye(3) - forward[:, :, None] * forward[:, None, :]  # [T, 3, 3] projectors off each axis
    A, b = proj.sum(0), np.einsum("tij,tj->i", proj, origins)
    centre = np.linalg.solve(A, b) if np.linalg.cond(A) < 1e6 else np.zeros(3)
    dist = np.linalg.norm(origins - centre, axis=-1).mean()
    out = c2w.copy()
    out[:, :3, 3] = (origins - centre) / (dist if dist > 1e-9 else 1.0)
    return out


def camera_rays(cameras: Cameras, latent_height: int, latent_width: int, *, normalize: bool = True) -> torch.Tensor:
    """Plücker rays of the cameras at latent resolution, the model's camera input.

    Latent pixel (i, j) covers image pixels [8i, 8i + 8), so resizing the intrinsics to the
    latent grid puts each ray through the centre of the image block it summarises.

    Args:
        cameras: T cameras (any image size; undistorted).
        latent_height, latent_width: h, w of the latent grid.
        normalize: canonicalise the poses first (`normalize_c2w`); keep True for OrbitDiT.
    Returns:
        (T, 6, h, w) float32: unit direction and moment, world +Y up.
    """
    cams = cameras.resized(latent_width, latent_height)
    if normalize:
        cams = Cameras(cams.K, normalize_c2w(cams.c2w), cams.width, cams.height)
    rays = plucker_rays(cams)  # [T, h, w, 6]
    return torch.from_numpy(rays).permute(0, 3, 1, 2).contiguous()


# --------------------------------------------------------------------------------------------
# Blocks
# --------------------------------------------------------------------------------------------


def _modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x (B, T, S, W) scaled and shifted per frame by shift, scale (B, T, W)."""
    return x * (1 + scale[:, :, None]) + shift[:, :, None]


class _Attention(nn.Module):
    """Multi-head attention through `F.scaled_dot_product_attention`, with RMS-normalised
    queries and keys (QK-norm keeps the logits bounded in bf16 and at high learning rates)."""

    def __init__(self, width: int, num_heads: int, context_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        head_dim = width // num_heads
        self.to_q = nn.Linear(width, width)
        self.to_kv = nn.Linear(context_dim or width, 2 * width)
        self.norm_q = nn.RMSNorm(head_dim, eps=1e-6)
        self.norm_k = nn.RMSNorm(head_dim, eps=1e-6)
        self.to_out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, N, W); context (B, L, Wc) or None for self-attention; mask (B, L) bool, True
        where a context token may be attended."""
        B, N, W = x.shape
        ctx = x if context is None else context
        heads = lambda t: t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)  # noqa: E731  [B, nh, *, hd]
        q = self.norm_q(heads(self.to_q(x)))  # [B, nh, N, hd]
        k, v = self.to_kv(ctx).chunk(2, dim=-1)
        k, v = self.norm_k(heads(k)), heads(v)  # [B, nh, L, hd]
        attn_mask = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, L]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # [B, nh, N, hd]
        return self.to_out(out.transpose(1, 2).reshape(B, N, W))


class OrbitDiTBlock(nn.Module):
    """Self-attention over all frames' tokens, cross-attention to text, MLP.

    Self-attention and the MLP are wrapped in adaLN-Zero (shift, scale, gate per frame); the
    gates and the cross-attention output start at zero, so every block starts as the identity.
    """

    def __init__(self, width: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.attn = _Attention(width, num_heads)
        self.norm2 = nn.LayerNorm(width, eps=1e-6)
        self.cross_attn = _Attention(width, num_heads)
        self.norm3 = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        hidden = int(width * mlp_ratio)
        # exact GELU: PyTorch's tanh approximation is ~5x slower on CPU (measured 2.3 vs 0.5 ms on a
        # 512 x 1024 activation), where the starter model trains
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))
        # adaLN-single: this block's learned offset to the shared modulation
        self.scale_shift_table = nn.Parameter(torch.zeros(6, width))

    def forward(self, x: torch.Tensor, modulation: torch.Tensor, context: torch.Tensor,
                context_mask: torch.Tensor, num_frames: int) -> torch.Tensor:
        """x (B, N, W) with N = T * S tokens; modulation (B, T, 6, W); context (B, L, W);
        context_mask (B, L) bool."""
        B, N, W = x.shape
        mod = modulation + self.scale_shift_table  # [B, T, 6, W]
        shift1, scale1, gate1, shift2, scale2, gate2 = mod.unbind(dim=2)  # each [B, T, W]
        frames = lambda t: t.view(B, num_frames, -1, W)  # noqa: E731  [B, T, S, W]

        h = _modulate(frames(self.norm1(x)), shift1, scale1).view(B, N, W)
        x = x + (frames(self.attn(h)) * gate1[:, :, None]).view(B, N, W)
        x = x + self.cross_attn(self.norm2(x), context, context_mask)
        h = _modulate(frames(self.norm3(x)), shift2, scale2).view(B, N, W)
        return x + (frames(self.mlp(h)) * gate2[:, :, None]).view(B, N, W)


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class OrbitDiT(ModelMixin, ConfigMixin):
    """The orbit-video diffusion transformer.

    Args:
        in_channels: C, latent channels of the VAE.
        patch_size: p, side of a square patch in latent pixels (per frame, no temporal patching).
        width: W, token width.
        num_layers: number of transformer blocks.
        num_heads: attention heads; must divide `width`.
        mlp_ratio: MLP hidden width / W.
        text_dim: D, width of the text encoder's token and pooled embeddings (384 for the bundled
            all-MiniLM-L6-v2).

    Parameters (`count_parameters`): width 32, 2 blocks, p 1, C 4, D 384: 81 k.  Width 256, 8
    blocks, p 2, C 8, D 384 (the CPU starter size): 9.51 M, of which 6.31 M are self-attention
    and MLP (the issue's "6.3M"), 2.10 M cross-attention, 0.39 M the shared adaLN.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(
        self,
        in_channels: int = 8,
        patch_size: int = 2,
        width: int = 256,
        num_layers: int = 8,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        text_dim: int = 384,
    ):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("patch_size", patch_size), ("width", width),
                            ("num_layers", num_layers), ("num_heads", num_heads), ("text_dim", text_dim)):
            if not isinstance(value, int) or value < 1:
                raise InputError(f"OrbitDiT {name} must be a positive integer, got {value!r}")
        if width % num_heads or (width // num_heads) % 2:
            raise InputError(f"width {width} must split into {num_heads} heads of even size")
        if width % 4:
            raise InputError(f"width must be a multiple of 4 (2D sin-cos positions), got {width}")
        if not mlp_ratio > 0:
            raise InputError(f"mlp_ratio must be positive, got {mlp_ratio}")
        self.gradient_checkpointing = False
        p = patch_size

        # 1. token inputs: latent patches, ray patches, frame roles
        self.patch_embed = nn.Linear(in_channels * p * p, width)
        self.ray_embed = nn.Sequential(nn.Linear(RAY_CHANNELS * p * p, width), nn.SiLU(), nn.Linear(width, width))
        self.role_embed = nn.Embedding(NUM_ROLES, width)
        # 2. conditioning: timestep + pooled text -> shared adaLN modulation
        self.time_proj = Timesteps(_TIME_FREQS, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embed = TimestepEmbedding(_TIME_FREQS, width)
        self.pooled_embed = nn.Sequential(nn.Linear(text_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.adaln = nn.Sequential(nn.SiLU(), nn.Linear(width, 6 * width))
        # 3. text tokens for cross-attention, and the classifier-free null embeddings
        self.text_proj = nn.Sequential(nn.Linear(text_dim, width), nn.GELU(), nn.Linear(width, width))
        self.null_token = nn.Parameter(torch.randn(1, text_dim) * 0.02)  # [1, D]
        self.null_pooled = nn.Parameter(torch.zeros(text_dim))  # [D]
        # 4. blocks and output
        self.blocks = nn.ModuleList([OrbitDiTBlock(width, num_heads, mlp_ratio) for _ in range(num_layers)])
        self.norm_out = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.adaln_out = nn.Sequential(nn.SiLU(), nn.Linear(width, 2 * width))
        self.proj_out = nn.Linear(width, in_channels * p * p)
        self._init_weights()

    def _init_weights(self) -> None:
        """Xavier linears (DiT); zero modulation, gates, cross-attention outputs and output layer,
        so the untrained model is the identity through its blocks and predicts zero velocity."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.role_embed.weight, std=0.02)
        for layer in (self.adaln[-1], self.adaln_out[-1], self.proj_out,
                      *(b.cross_attn.to_out for b in self.blocks)):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    # --- patches --------------------------------------------------------------------------

    def _patchify(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, K, h, w) -> (B, T * h/p * w/p, K * p * p), frame-major, rows then columns."""
        B, T, K, h, w = x.shape
        p = self.config.patch_size
        x = x.reshape(B, T, K, h // p, p, w // p, p)
        x = x.permute(0, 1, 3, 5, 2, 4, 6)  # [B, T, h/p, w/p, K, p, p]
        return x.reshape(B, T * (h // p) * (w // p), K * p * p)

    def _unpatchify(self, x: torch.Tensor, T: int, h: int, w: int) -> torch.Tensor:
        """Inverse of `_patchify`: (B, N, C * p * p) -> (B, T, C, h, w)."""
        B = x.shape[0]
        p, C = self.config.patch_size, self.config.in_channels
        x = x.reshape(B, T, h // p, w // p, C, p, p).permute(0, 1, 4, 2, 5, 3, 6)  # [B, T, C, h/p, p, w/p, p]
        return x.reshape(B, T, C, h, w)

    def _positions(self, gh: int, gw: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """(gh * gw, W) 2D sin-cos positions of one frame's patch grid, rows then columns."""
        pos = get_2d_sincos_pos_embed(self.config.width, (gh, gw), base_size=_POS_SPAN, interpolation_scale=1.0,
                                      device=device, output_type="pt")
        return pos.to(dtype)

    def check_inputs(self, hidden_states: torch.Tensor, rays: torch.Tensor) -> None:
        """Raise InputError unless latents (B, T, C, h, w) and rays (B, T, 6, h, w) fit."""
        C, p = self.config.in_channels, self.config.patch_size
        if hidden_states.ndim != 5 or hidden_states.shape[2] != C:
            raise InputError(f"latents must be (B, T, {C}, h, w), got {tuple(hidden_states.shape)}")
        B, T, _, h, w = hidden_states.shape
        if h % p or w % p:
            raise InputError(f"latent size {w}x{h} is not a multiple of the patch size {p}; "
                             f"frames must be multiples of {8 * p} pixels with the 8x VAE")
        if tuple(rays.shape) != (B, T, RAY_CHANNELS, h, w):
            raise InputError(f"rays must be {(B, T, RAY_CHANNELS, h, w)} to match the latents, got {tuple(rays.shape)}")

    # --- forward --------------------------------------------------------------------------

    def forward(
        self,
        hidden_states: torch.Tensor,  # [B, T, C, h, w]
        timestep: torch.Tensor,  # [B] or [B, T]
        rays: torch.Tensor,  # [B, T, 6, h, w]
        text_tokens: torch.Tensor,  # [B, L, D]
        text_mask: torch.Tensor | None,  # [B, L] bool
        text_pooled: torch.Tensor,  # [B, D]
        roles: torch.Tensor | None = None,  # [B, T] int64
        drop_text: torch.Tensor | None = None,  # [B] bool
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict the flow velocity of every frame.

        Args:
            hidden_states: (B, T, C, h, w) latents: noisy for ROLE_NOISY frames, clean for the
                others.
            timestep: (B,) or (B, T) sigma * 1000 per sample or per frame; the model does not
                force context frames to 0, the caller does (`flow.py`, the pipeline).
            rays: (B, T, 6, h, w) Plücker rays of the target cameras (`camera_rays`).
            text_tokens: (B, L, D) token embeddings of the frozen text encoder.
            text_mask: (B, L) bool, True on real tokens; None means all real.
            text_pooled: (B, D) pooled sentence embeddings.
            roles: (B, T) ROLE_NOISY / ROLE_KNOWN / ROLE_IMAGE; None means all ROLE_NOISY.
            drop_text: (B,) bool, True to replace the text by the learned null embeddings
                (classifier-free guidance); None means keep every prompt.
        Returns:
            Transformer2DModelOutput whose `sample` is the (B, T, C, h, w) velocity, or a
            1-tuple when return_dict is False.  Velocities of context frames are meaningless.
        """
        self.check_inputs(hidden_states, rays)
        B, T, C, h, w = hidden_states.shape
        p = self.config.patch_size
        gh, gw = h // p, w // p
        dtype = hidden_states.dtype

        # 1. tokens: latent patches + ray patches + in-frame positions + roles
        x = self.patch_embed(self._patchify(hidden_states))  # [B, N, W], N = T * gh * gw
        x = x + self.ray_embed(self._patchify(rays.to(dtype)))
        pos = self._positions(gh, gw, x.device, x.dtype)  # [S, W]
        x = (x.view(B, T, gh * gw, -1) + pos).view(B, T * gh * gw, -1)
        if roles is None:
            roles = torch.full((B, T), ROLE_NOISY, dtype=torch.long, device=x.device)
        x = (x.view(B, T, gh * gw, -1) + self.role_embed(roles)[:, :, None]).view(B, T * gh * gw, -1)

        # 2. text: null substitution for classifier-free guidance, null token always in context
        pooled, tokens = text_pooled.to(dtype), text_tokens.to(dtype)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=x.device) if text_mask is None else text_mask
        if drop_text is not None:
            keep = ~drop_text.to(x.device).bool()  # [B]
            pooled = torch.where(keep[:, None], pooled, self.null_pooled.to(dtype))
            mask = mask & keep[:, None]
        null = self.null_token.to(dtype).expand(B, 1, -1)  # [B, 1, D]
        context = self.text_proj(torch.cat([null, tokens], dim=1))  # [B, 1 + L, W]
        context_mask = torch.cat([torch.ones(B, 1, dtype=torch.bool, device=x.device), mask.bool()], dim=1)

        # 3. per-frame conditioning vector and the shared modulation
        t = torch.as_tensor(timestep, device=x.device)
        if t.ndim == 0:
            t = t.expand(B)
        if t.shape == (B,):
            t = t[:, None].expand(B, T)
        if t.shape != (B, T):
            raise InputError(f"timestep must be a scalar or have shape (B,) or (B, T) = ({B}, {T}), "
                             f"got {tuple(t.shape)}")
        t_emb = self.time_embed(self.time_proj(t.reshape(-1)).to(dtype)).view(B, T, -1)  # [B, T, W]
        cond = t_emb + self.pooled_embed(pooled)[:, None]  # [B, T, W]
        modulation = self.adaln(cond).view(B, T, 6, -1)  # [B, T, 6, W]

        # 4. blocks: full attention over all T * gh * gw tokens
        for block in self.blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                x = self._gradient_checkpointing_func(block, x, modulation, context, context_mask, T)
            else:
                x = block(x, modulation, context, context_mask, T)

        # 5. output: adaLN final layer, patches back to latents
        shift, scale = self.adaln_out(cond).chunk(2, dim=-1)  # [B, T, W] each
        x = _modulate(self.norm_out(x).view(B, T, gh * gw, -1), shift, scale).view(B, T * gh * gw, -1)
        out = self._unpatchify(self.proj_out(x), T, h, w)  # [B, T, C, h, w]
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def tokens_per_clip(num_frames: int, height: int, width: int, patch_size: int, vae_scale: int = 8) -> int:
    """Sequence length of a clip: T * (H / (8p)) * (W / (8p))."""
    return num_frames * (height // (vae_scale * patch_size)) * (width // (vae_scale * patch_size))

