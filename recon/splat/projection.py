"""3D Gaussians to screen-space 2D Gaussians (EWA splatting) and view-dependent colour.

Written here in plain torch (autograd gives the backward) rather than taken from gsplat's
private `_torch_impl`, whose functions change between releases.  The maths follows 3DGS
(Kerbl et al. 2023) and gsplat: Sigma_2D = J W Sigma W^T J^T + eps I with the perspective
Jacobian J, a 0.3 px low-pass (eps), and tangent-plane clamping of J for stability at the image
border.  Conventions are orbitforge's: OpenCV camera axes, pixel centres at +0.5.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

EPS_2D = 0.3
"""Low-pass filter added to every 2D covariance (px^2): a Gaussian is never thinner than a pixel."""
NEAR_PLANE = 0.01
"""Gaussians closer to the camera than this (world units along z) are culled."""

# real spherical-harmonic constants (degree 0-3), as in 3DGS / gsplat
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)


@dataclass
class Projected:
    """Screen-space Gaussians for C cameras.

    Attributes:
        means2d: [C, N, 2] pixel coordinates (centres at +0.5).
        conics: [C, N, 3] upper triangle (a, b, c) of the inverse 2D covariance.
        depths: [C, N] camera z.
        radii: [C, N, 2] int32 screen half-extent in x and y (3.33 sigma); 0 = culled.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor


def quat_to_rotmat(quats_wxyz: Tensor) -> Tensor:
    """[N, 4] (normalised here) -> [N, 3, 3]."""
    w, x, y, z = torch.nn.functional.normalize(quats_wxyz, dim=-1).unbind(-1)
    return torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)


def covariances_3d(quats_wxyz: Tensor, log_scales: Tensor) -> Tensor:
    """[N, 3, 3] world covariances R S S^T R^T."""
    rs = quat_to_rotmat(quats_wxyz) * torch.exp(log_scales)[:, None, :]  # R @ diag(s)
    return rs @ rs.transpose(1, 2)


def project_gaussians(means: Tensor, quats_wxyz: Tensor, log_scales: Tensor, w2c: Tensor, Ks: Tensor,
                      width: int, height: int) -> Projected:
    """Project N Gaussians into C cameras.

    Args:
        means: [N, 3] world positions.  quats_wxyz: [N, 4].  log_scales: [N, 3].
        w2c: [C, 4, 4] world-to-camera (OpenCV axes).  Ks: [C, 3, 3] intrinsics (pixels).
    """
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]  # [C, 3, 3], [C, 3]
    p = torch.einsum("cij,nj->cni", R, means) + t[:, None, :]  # [C, N, 3]
    x, y, z = p.unbind(-1)
    fx, fy, cx, cy = Ks[:, 0, 0, None], Ks[:, 1, 1, None], Ks[:, 0, 2, None], Ks[:, 1, 2, None]  # [C, 1]
    z_safe = torch.where(z > NEAR_PLANE, z, torch.ones_like(z))
    # the Jacobian's x/z, y/z are clamped to the image plus 30% of the half field of view, as
    # gsplat does (3DGS: 1.3x), so Gaussians far off-screen do not blow up their footprint
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    tx = torch.clamp(x / z_safe, -(cx / fx + 0.3 * tan_x), (width - cx) / fx + 0.3 * tan_x) * z_safe
    ty = torch.clamp(y / z_safe, -(cy / fy + 0.3 * tan_y), (height - cy) / fy + 0.3 * tan_y) * z_safe
    zeros = torch.zeros_like(z)
    J = torch.stack([fx / z_safe, zeros, -fx * tx / z_safe**2,
                     zeros, fy / z_safe, -fy * ty / z_safe**2], dim=-1).reshape(*z.shape, 2, 3)  # [C, N, 2, 3]
    cov_cam = torch.einsum("cij,njk,clk->cnil", R, covariances_3d(quats_wxyz, log_scales), R)  # [C, N, 3, 3]
    cov2d = J @ cov_cam @ J.transpose(-1, -2) + EPS_2D * torch.eye(2, dtype=means.dtype)  # [C, N, 2, 2]
    a, b, c = cov2d[..., 0, 0], cov2d[..., 0, 1], cov2d[..., 1, 1]
    det = (a * c - b * b).clamp_min(1e-12)
    conics = torch.stack([c / det, -b / det, a / det], dim=-1)  # [C, N, 3]
    means2d = torch.stack([fx * x / z_safe + cx, fy * y / z_safe + cy], dim=-1)  # [C, N, 2]
    with torch.no_grad():
        # per-axis extent at 3.33 sigma, as gsplat: beyond it alpha < 1/255 for any opacity
        radii = torch.ceil(3.33 * torch.sqrt(torch.stack([a, c], dim=-1)))  # [C, N, 2]
        off = ((means2d[..., 0] + radii[..., 0] <= 0) | (means2d[..., 0] - radii[..., 0] >= width)
               | (means2d[..., 1] + radii[..., 1] <= 0) | (means2d[..., 1] - radii[..., 1] >= height))
        keep = (z > NEAR_PLANE) & ~off
        radii = torch.where(keep[..., None], radii, torch.zeros_like(radii)).to(torch.int32)
    return Projected(means2d, conics, z, radii)


def sh_to_colour(sh: Tensor, dirs: Tensor, degree: int) -> Tensor:
    """Evaluate real SH up to `degree` (0-3) in unit view directions; +0.5 offset, clamped >= 0.

    Args:
        sh: [N, K, 3] coefficients (K >= (degree + 1)^2).  dirs: [C, N, 3] camera-to-Gaussian.
    Returns:
        [C, N, 3] colours.
    """
    x, y, z = dirs.unbind(-1)
    out = SH_C0 * sh[None, :, 0] + torch.zeros_like(dirs)  # broadcast to [C, N, 3]
    if degree >= 1:
        out = out - SH_C1 * y[..., None] * sh[None, :, 1] + SH_C1 * z[..., None] * sh[None, :, 2] - SH_C1 * x[..., None] * sh[None, :, 3]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        basis2 = (xy, yz, 2 * zz - xx - yy, xz, xx - yy)
        for k, (const, value) in enumerate(zip(SH_C2, basis2)):
            out = out + const * value[..., None] * sh[None, :, 4 + k]
    if degree >= 3:
        basis3 = (y * (3 * xx - yy), xy * z, y * (4 * zz - xx - yy), z * (2 * zz - 3 * xx - 3 * yy),
                  x * (4 * zz - xx - yy), z * (xx - yy), x * (xx - 3 * yy))
        for k, (const, value) in enumerate(zip(SH_C3, basis3)):
            out = out + const * value[..., None] * sh[None, :, 9 + k]
    return torch.clamp_min(out + 0.5, 0.0)
