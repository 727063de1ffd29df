"""One function renders Gaussian splats on any backend: gsplat on CUDA, orbitforge's CPU twins.

`render_splats` takes the trainer's parameter dict (gsplat's naming: means, scales (log),
quats (wxyz), opacities (logit), sh0, shN) and cameras, and returns colour, alpha, expected
depth and the `info` dict gsplat's densification strategies read (means2d with gradients,
radii, image size, camera count).  Both backends fill it the same way, so the trainer and the
strategies run unchanged on a GPU and on a 2-core CPU.

gsplat is imported only when CUDA is available: on a machine with nvcc but no GPU it would try
to compile its kernels on first use and fail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Mapping

import torch
from torch import Tensor

from orbitforge.errors import InputError
from orbitforge.recon.splat.projection import project_gaussians, sh_to_colour

Backend = Literal["auto", "gsplat", "cpu", "reference"]


@dataclass
class SplatRender:
    """Rendered views.

    Attributes:
        rgb: [C, H, W, 3].  alpha: [C, H, W, 1].  depth: [C, H, W, 1] expected camera z
        (0 where alpha is 0).  info: what gsplat's strategies read (means2d, radii [C, N, 2],
        width, height, n_cameras).
    """

    rgb: Tensor
    alpha: Tensor
    depth: Tensor
    info: dict


def resolve_backend(backend: Backend) -> str:
    """"auto" -> "gsplat" with CUDA, else "cpu"; an explicit "gsplat" without CUDA is an error."""
    if backend == "auto":
        return "gsplat" if torch.cuda.is_available() else "cpu"
    if backend == "gsplat" and not torch.cuda.is_available():
        raise InputError("--backend gsplat needs a CUDA GPU; none is visible here: use --backend cpu or auto")
    if backend not in ("gsplat", "cpu", "reference"):
        raise InputError(f"unknown backend {backend!r}; choose auto, gsplat, cpu or reference")
    return backend


def render_splats(params: Mapping[str, Tensor], w2c: Tensor, Ks: Tensor, width: int, height: int, *,
                  sh_degree: int, background: Tensor | None = None, backend: Backend = "auto") -> SplatRender:
    """Render the splats in `params` from C cameras.

    Args:
        params: means [N, 3], scales [N, 3] (log), quats [N, 4] (wxyz), opacities [N] (logit),
            sh0 [N, 1, 3], shN [N, K-1, 3].
        w2c: [C, 4, 4] world-to-camera, OpenCV axes.  Ks: [C, 3, 3].
        sh_degree: SH bands used now (raised during training).
        background: [C, 3] colour behind the splats, or None for black.
    """
    which = resolve_backend(backend)
    if which == "gsplat":
        return _render_gsplat(params, w2c, Ks, width, height, sh_degree, background)
    return _render_cpu(params, w2c, Ks, width, height, sh_degree, background, exact=which == "reference")


def _render_gsplat(params, w2c, Ks, width, height, sh_degree, background) -> SplatRender:
    from gsplat import rasterization

    colours = torch.cat([params["sh0"], params["shN"]], dim=1)
    render, alpha, info = rasterization(
        params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
        colours, w2c, Ks, width, height, sh_degree=sh_degree, render_mode="RGB+ED", backgrounds=None,
    )
    rgb = render[..., :3]
    if background is not None:
        rgb = rgb + (1 - alpha) * background[:, None, None, :]
    return SplatRender(rgb, alpha, render[..., 3:4], info)


def _render_cpu(params, w2c, Ks, width, height, sh_degree, background, exact: bool) -> SplatRender:
    from orbitforge.recon.splat.raster_cpu import rasterize_fast, rasterize_reference

    means = params["means"]
    C = w2c.shape[0]
    proj = project_gaussians(means, params["quats"], params["scales"], w2c, Ks, width, height)
    campos = torch.linalg.inv(w2c)[:, :3, 3]  # [C, 3]
    dirs = torch.nn.functional.normalize(means[None] - campos[:, None], dim=-1)  # [C, N, 3]
    sh = torch.cat([params["sh0"], params["shN"]], dim=1)
    colours = sh_to_colour(sh, dirs, sh_degree)  # [C, N, 3]
    features = torch.cat([colours, proj.depths[..., None]], dim=-1)  # depth blended as a 4th channel
    bg = None
    if background is not None:
        bg = torch.cat([background, torch.zeros_like(background[:, :1])], dim=-1)
    opacities = torch.sigmoid(params["opacities"])[None].expand(C, -1)
    rasterize = rasterize_reference if exact else rasterize_fast
    radius = proj.radii.max(dim=-1).values  # the rasterisers take one (square) extent
    out, alpha = rasterize(proj.means2d, proj.conics, features, opacities, proj.depths.detach(), radius,
                           width, height, bg)
    depth = torch.where(alpha > 1e-6, out[..., 3:4] / alpha.clamp_min(1e-6), torch.zeros_like(alpha))
    info = {"means2d": proj.means2d, "radii": proj.radii, "gaussian_ids": None, "width": width,
            "height": height, "n_cameras": C, "depths": proj.depths}
    return SplatRender(out[..., :3], alpha, depth, info)
