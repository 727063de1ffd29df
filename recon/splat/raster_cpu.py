"""CPU rasterisers for projected 2D Gaussians, with gsplat's blending semantics.

The splat trainer must run where there is no GPU, and gsplat 1.5 cannot render on a CPU (it
compiles CUDA on first use).  Projection and colour are plain torch upstream; this module does
the one step torch is too slow for: front-to-back alpha blending of C x N screen-space
Gaussians into C images, forward and backward.

Semantics (gsplat `rasterize_to_pixels`, Kerbl et al. 2023):

* pixel (col i, row j) has centre (i + 0.5, j + 0.5); d = centre - mean2d;
  sigma = 0.5 (a dx^2 + c dy^2) + b dx dy with conic (a, b, c) the inverse 2D covariance;
  alpha = min(0.999, opacity exp(-sigma)); a Gaussian counts only if sigma >= 0 and
  alpha >= 1/255;
* a Gaussian touches only pixels whose centre lies in its screen box [mean - r, mean + r]
  (r = radii, 0 = culled) - gsplat uses the box only to pick tiles; restricting pixels to it
  makes the result independent of the tile size;
* blending in increasing depth (ties by index): C += colour alpha T, T *= 1 - alpha, stopping
  (this and all further Gaussians skipped) as soon as the next T would be <= 1e-4;
  render = C + T background, alpha_out = 1 - T.

Two implementations with one signature:

* `rasterize_reference`: pairs (Gaussian, pixel) -> sort -> dense per-pixel cumprod, pure torch
  autograd, any float dtype.  Obviously correct; memory grows with pairs and with pixels x the
  most pairs at one pixel, so it is for tests and small scenes.
* `rasterize_fast`: 16x16 tile binning (counting sort, stable by depth), a numba forward kernel
  parallel over (camera, tile) with early termination, and the standard 3DGS back-to-front
  backward (T reconstructed by division, starting from each pixel's last contributor) in a
  second numba kernel.  Both walk each Gaussian's ellipse rows and evaluate 16 pixels of a row
  at a time in branch-free float32 code that LLVM compiles to SIMD (see `LANES`).  Per-Gaussian
  gradients are written to one slot per (tile, list entry), so threads never race, then summed
  per Gaussian.

Kernels compile on first call and are cached on disk (numba `cache=True`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from numba import njit, prange
from torch import Tensor

from orbitforge.errors import InputError

logger = logging.getLogger(__name__)

ALPHA_MAX = 0.999
"""Alpha clamp, gsplat 1.5's `min(0.999f, ...)` (3DGS used 0.99); no gradient flows through a
clamped alpha."""
ALPHA_MIN = 1.0 / 255.0
"""Below this alpha a Gaussian is skipped at a pixel: invisible in 8-bit output."""
T_MIN = 1e-4
"""Blending stops once the transmittance would fall to this (gsplat's early termination)."""
TILE_SIZE = 16

_F_HALF = np.float32(0.5)
_F_ONE = np.float32(1.0)
_F_ALPHA_MAX = np.float32(ALPHA_MAX)
_F_ALPHA_MIN = np.float32(ALPHA_MIN)
_F_T_MIN = np.float32(T_MIN)


# ---------------------------------------------------------------------------------------------
# shared, non-differentiable set-up: validation, screen boxes, depth order


def _check_inputs(means2d, conics, colors, opacities, depths, radii, width, height, background) -> Tensor:
    """Validate shapes (one actionable error) and return the background [C, D] (zeros if None)."""
    if colors.dim() != 3 or colors.shape[-1] < 1:
        raise InputError(f"colors must be [C, N, D] with D >= 1, got shape {tuple(colors.shape)}")
    C, N, D = colors.shape
    expected = {"means2d": (means2d, (C, N, 2)), "conics": (conics, (C, N, 3)),
                "opacities": (opacities, (C, N)), "depths": (depths, (C, N))}
    for name, (t, shape) in expected.items():
        if tuple(t.shape) != shape:
            raise InputError(f"{name} must be {list(shape)} to match colors [C, N, D], got {list(t.shape)}")
    if tuple(radii.shape) not in ((C, N), (C, N, 2)):
        raise InputError(f"radii must be [C, N] or [C, N, 2] (gsplat's x, y), got {list(radii.shape)}")
    if int(width) < 1 or int(height) < 1:
        raise InputError(f"image size must be positive, got width={width}, height={height}")
    if background is None:
        return colors.new_zeros(C, D).detach()
    if tuple(background.shape) != (C, D):
        raise InputError(f"background must be [C, D] = {[C, D]} (one colour per camera), "
                         f"got {list(background.shape)}; expand a shared colour with .expand(C, -1)")
    return background


def _pixel_boxes(means2d: np.ndarray, radii: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inclusive pixel ranges whose centres lie in [mean - r, mean + r], clipped to the image.

    means2d (C, N, 2) float, radii (C, N) or (C, N, 2) int -> (C, N, 4) int32 (x_min, x_max,
    y_min, y_max); culled (radius <= 0) or off-screen Gaussians get an empty box (0, -1, 0, -1).
    Both rasterisers use this one function, so they agree bit for bit on the pixels a Gaussian
    may touch.  numpy, not torch: torch's thread pool costs milliseconds per small op on a busy
    2-core machine, more than this whole step.
    """
    r = radii.astype(means2d.dtype)
    rx, ry = (r[..., 0], r[..., 1]) if r.ndim == 3 else (r, r)  # [C, N]
    mx, my = means2d[..., 0], means2d[..., 1]
    # centre i + 0.5 in [m - r, m + r]  <=>  i in [m - r - 0.5, m + r - 0.5]
    boxes = np.stack([
        np.clip(np.ceil(mx - rx - 0.5), 0, width), np.clip(np.floor(mx + rx - 0.5), -1, width - 1),
        np.clip(np.ceil(my - ry - 0.5), 0, height), np.clip(np.floor(my + ry - 0.5), -1, height - 1),
    ], axis=-1).astype(np.int32)  # [C, N, 4]
    empty = (rx <= 0) | (ry <= 0) | (boxes[..., 0] > boxes[..., 1]) | (boxes[..., 2] > boxes[..., 3])  # [C, N]
    boxes[empty] = (0, -1, 0, -1)
    return boxes


def _depth_order(depths: np.ndarray) -> np.ndarray:
    """(C, N) Gaussian indices front to back per camera; equal depths keep index order."""
    return np.argsort(depths, axis=-1, kind="stable")


def _to_numpy(t: Tensor) -> np.ndarray:
    """A C-contiguous numpy view or copy (numpy copies single-threaded, see `_pixel_boxes`)."""
    return np.ascontiguousarray(t.detach().cpu().numpy())


# ---------------------------------------------------------------------------------------------
# reference: pure torch autograd


def rasterize_reference(means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, depths: Tensor,
                        radii: Tensor, width: int, height: int, background: Tensor | None = None
                        ) -> tuple[Tensor, Tensor]:
    """Blend projected Gaussians into C images; slow, exact, differentiable by torch autograd.

    The obviously-correct twin of `rasterize_fast` (same arguments, same results), for tests and
    small scenes only: it materialises every (Gaussian, pixel) pair and a dense [C*H*W, K]
    matrix (K = most pairs at one pixel), so memory grows with Gaussians x box area.  Works in
    any float dtype (float64 for `torch.autograd.gradcheck`); CPU tensors.

    Args:
        means2d: [C, N, 2] pixel coordinates (pixel centres at +0.5).
        conics: [C, N, 3] upper triangle (a, b, c) of the inverse 2D covariance, px^-2.
        colors: [C, N, D] features to blend (RGB, optionally a depth channel, ...).
        opacities: [C, N] in (0, 1).
        depths: [C, N] camera z, only for ordering (no gradient).
        radii: [C, N] int screen radius in pixels (or [C, N, 2] x, y); <= 0 culls (no gradient).
        width, height: image size in pixels.
        background: [C, D] colour behind the Gaussians, or None for zeros.

    Returns:
        render [C, H, W, D] and alpha [C, H, W, 1] = 1 - final transmittance.
    """
    background = _check_inputs(means2d, conics, colors, opacities, depths, radii, width, height, background)
    C, N, D = colors.shape
    P = C * height * width
    boxes = torch.from_numpy(_pixel_boxes(_to_numpy(means2d), _to_numpy(radii), width, height)).long()
    order = torch.from_numpy(_depth_order(_to_numpy(depths)))
    cam, gid, pixel, slot = _reference_pairs(boxes, order, width, height)  # [M] each, sorted by (pixel, depth)
    # 1. per-pair alpha, zero where gsplat skips the Gaussian (sigma < 0 or alpha < 1/255)
    centre = torch.stack([pixel % width, pixel // width % height], dim=-1).to(means2d.dtype) + 0.5  # [M, 2]
    dx, dy = (centre - means2d[cam, gid]).unbind(-1)  # [M]
    a, b, c = conics[cam, gid].unbind(-1)
    sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
    alpha = torch.clamp(opacities[cam, gid] * torch.exp(-sigma), max=ALPHA_MAX)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_MIN), alpha, torch.zeros_like(alpha))  # [M]
    # 2. early termination: drop a pair and all behind it once the running product reaches T_MIN
    K = int(slot.max()) + 1 if slot.numel() else 0
    with torch.no_grad():
        running = torch.ones(P, K, dtype=alpha.dtype).index_put((pixel, slot), 1 - alpha).cumprod(dim=1)
        stopped = torch.cumsum(running <= T_MIN, dim=1) > 0  # [P, K]
    alpha = torch.where(stopped[pixel, slot], torch.zeros_like(alpha), alpha)
    # 3. transmittance in front of each pair: exclusive cumulative product per pixel
    t_incl = torch.ones(P, K, dtype=alpha.dtype).index_put((pixel, slot), 1 - alpha).cumprod(dim=1)  # [P, K]
    t_excl = torch.cat([torch.ones(P, 1, dtype=alpha.dtype), t_incl[:, :-1]], dim=1)
    t_final = t_incl[:, -1] if K else torch.ones(P, dtype=alpha.dtype)  # [P]
    # 4. scatter-add the weighted colours, then the background seen through what is left
    weight = alpha * t_excl[pixel, slot]  # [M]
    render = torch.zeros(P, D, dtype=colors.dtype).index_add(0, pixel, weight[:, None] * colors[cam, gid])
    render = render + t_final[:, None] * background.repeat_interleave(height * width, dim=0)  # [P, D]
    return render.reshape(C, height, width, D), (1 - t_final).reshape(C, height, width, 1)


def _reference_pairs(boxes: Tensor, order: Tensor, width: int, height: int
                     ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Every (Gaussian, pixel-in-box) pair, sorted by pixel then depth.

    Args: boxes [C, N, 4] from `_pixel_boxes`; order [C, N] from `_depth_order`.
    Returns int64 [M] each: camera, Gaussian index, flat pixel (c*H + y)*W + x, and slot = the
    pair's rank among the pairs of its pixel (0 = nearest).
    """
    C, N = order.shape
    box_w = (boxes[..., 1] - boxes[..., 0] + 1).clamp(min=0)
    box_h = (boxes[..., 3] - boxes[..., 2] + 1).clamp(min=0)
    count = (box_w * box_h).reshape(-1)  # [C*N]
    owner = torch.repeat_interleave(torch.arange(C * N), count)  # [M]
    local = torch.arange(owner.numel()) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
    bw = box_w.reshape(-1)[owner]
    x = boxes.reshape(-1, 4)[owner, 0] + local % bw
    y = boxes.reshape(-1, 4)[owner, 2] + local // bw
    cam, gid = owner // N, owner % N
    pixel = (cam * height + y) * width + x
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(N).expand(C, N).contiguous())  # [C, N]
    key = pixel * max(N, 1) + rank[cam, gid]
    key, perm = torch.sort(key)
    pixel, cam, gid = pixel[perm], cam[perm], gid[perm]
    per_pixel = torch.bincount(pixel, minlength=C * height * width)
    slot = torch.arange(pixel.numel()) - (torch.cumsum(per_pixel, 0) - per_pixel)[pixel]
    return cam, gid, pixel, slot


# ---------------------------------------------------------------------------------------------
# fast: tile binning + numba kernels


@dataclass(frozen=True)
class _TileBins:
    """Per-(camera, tile) Gaussian lists, front to back.

    boxes (C, N, 4) int32 pixel boxes; offsets (C * n_tiles + 1,) int64: the list of (c, t) is
    ids[offsets[c * n_tiles + t]:offsets[c * n_tiles + t + 1]]; ids (M,) int32 Gaussian indices.
    """

    boxes: np.ndarray
    offsets: np.ndarray
    ids: np.ndarray
    tiles_x: int
    tile_size: int


def rasterize_fast(means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, depths: Tensor,
                   radii: Tensor, width: int, height: int, background: Tensor | None = None,
                   tile_size: int = TILE_SIZE) -> tuple[Tensor, Tensor]:
    """Blend projected Gaussians into C images on the CPU: tiled numba kernels, hand-written backward.

    Same arguments, results and gradients as `rasterize_reference` (see there for shapes), in
    float32 on CPU tensors only.  Differentiable w.r.t. means2d, conics, colors, opacities and
    background; depths and radii only select and order (no gradient), as in gsplat.

    Args:
        tile_size: side of the square tiles that Gaussians are binned into; each (camera, tile)
            is one parallel task.  The result does not depend on it.

    Example:
        >>> C, N = 1, 3
        >>> out, alpha = rasterize_fast(torch.rand(C, N, 2) * 8, torch.tensor([[[1.0, 0.0, 1.0]] * N]),
        ...     torch.rand(C, N, 3), torch.full((C, N), 0.5), torch.rand(C, N),
        ...     torch.full((C, N), 3, dtype=torch.int32), 8, 6)
        >>> tuple(out.shape), tuple(alpha.shape)
        ((1, 6, 8, 3), (1, 6, 8, 1))
    """
    background = _check_inputs(means2d, conics, colors, opacities, depths, radii, width, height, background)
    floats = {"means2d": means2d, "conics": conics, "colors": colors, "opacities": opacities, "background": background}
    for name, t in floats.items():
        if t.dtype != torch.float32 or t.device.type != "cpu":
            raise InputError(f"rasterize_fast needs float32 CPU tensors, got {name} as {t.dtype} on {t.device}; "
                             "use .float().cpu(), gsplat on CUDA, or rasterize_reference for other dtypes")
    if int(tile_size) < 1:
        raise InputError(f"tile_size must be a positive number of pixels, got {tile_size}")
    width, height, tile_size = int(width), int(height), int(tile_size)
    boxes = _pixel_boxes(_to_numpy(means2d), _to_numpy(radii), width, height)
    tiles_x, tiles_y = -(-width // tile_size), -(-height // tile_size)
    offsets, ids = _bin_kernel(boxes, _depth_order(_to_numpy(depths)).astype(np.int32), tile_size, tiles_x, tiles_y)
    bins = _TileBins(boxes, offsets, ids, tiles_x, tile_size)
    return _RasterizeFast.apply(means2d, conics, colors, opacities, background, bins, width, height)


class _RasterizeFast(torch.autograd.Function):
    """Numba forward and backward; the tile lists are computed once outside and kept on ctx.
    Glue stays in numpy (see `_pixel_boxes` for why not torch)."""

    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, background, bins: _TileBins, width: int, height: int):
        arrays = tuple(_to_numpy(t) for t in (means2d, conics, colors, opacities, background))
        render, alpha, t_final, n_contrib = _forward(arrays, bins, width, height)
        ctx.arrays, ctx.bins, ctx.t_final, ctx.n_contrib = arrays, bins, t_final, n_contrib
        return torch.from_numpy(render), torch.from_numpy(alpha)

    @staticmethod
    def backward(ctx, v_render, v_alpha):
        bins, t_final = ctx.bins, ctx.t_final
        C, N, D = ctx.arrays[2].shape
        v_render_np = _to_numpy(v_render)  # [C, H, W, D]
        v_slots = _backward_kernel(*ctx.arrays, bins.boxes, bins.offsets, bins.ids, bins.tiles_x, bins.tile_size,
                                   t_final, ctx.n_contrib, v_render_np, _to_numpy(v_alpha)[..., 0],
                                   _channels(D))  # [M, 6 + D]
        v_gauss = _sum_slots(v_slots, bins.offsets, bins.ids, C, N).reshape(C, N, 6 + D)
        v_means, v_conics, v_opac, v_colors = (torch.from_numpy(np.ascontiguousarray(v_gauss[..., s]))
                                               for s in (slice(0, 2), slice(2, 5), 5, slice(6, None)))
        v_bg = torch.from_numpy(np.einsum("chwd,chw->cd", v_render_np, t_final)) if ctx.needs_input_grad[4] else None
        return v_means, v_conics, v_colors, v_opac, v_bg, None, None, None


def _forward(arrays: tuple, bins: _TileBins, width: int, height: int) -> tuple:
    """`_forward_kernel` over any number D of channels, in groups of 4 (zero-padded): the
    blending (alpha, T, last contributor) is the same for every group."""
    means, conics, colors, opacities, background = arrays
    D = colors.shape[-1]
    pad = -D % 4
    if pad:
        colors = np.pad(colors, ((0, 0), (0, 0), (0, pad)))
        background = np.pad(background, ((0, 0), (0, pad)))
    renders = []
    for g in range(0, D + pad, 4):
        group = (np.ascontiguousarray(colors[..., g:g + 4]), np.ascontiguousarray(background[:, g:g + 4]))
        render, alpha, t_final, n_contrib = _forward_kernel(
            means, conics, group[0], opacities, group[1], bins.boxes, bins.offsets, bins.ids, width, height,
            bins.tiles_x, bins.tile_size)
        renders.append(render)
    render = renders[0] if len(renders) == 1 and not pad else np.ascontiguousarray(np.concatenate(renders, -1)[..., :D])
    return render, alpha, t_final, n_contrib


def _channels(D: int) -> tuple:
    """A tuple of length D: the backward kernel takes it so that numba compiles it per channel
    count, making D a constant that LLVM unrolls (one compile per D, cached on disk)."""
    return (0,) * D


def _sum_slots(v_slots: np.ndarray, offsets: np.ndarray, ids: np.ndarray, C: int, N: int) -> np.ndarray:
    """Sum the per-(tile, list entry) gradient slots (M, K) into per-Gaussian rows (C*N, K)."""
    n_tiles = (offsets.shape[0] - 1) // C
    per_camera = np.diff(offsets[::n_tiles])  # [C] slots of each camera
    owner = np.repeat(np.arange(C, dtype=np.int64) * N, per_camera) + ids  # [M]
    return _sum_rows_kernel(v_slots, owner, C * N)


# ---------------------------------------------------------------------------------------------
# numba kernels (compiled on first call, cached on disk)


@njit(cache=True)
def _bin_kernel(boxes, order, tile_size, tiles_x, tiles_y):  # pragma: no cover - compiled
    """Counting sort of (Gaussian, tile) pairs by (camera, tile); depth order kept by visiting
    Gaussians front to back.  Returns offsets (C * n_tiles + 1,) int64 and ids (M,) int32."""
    C, N = order.shape
    n_tiles = tiles_x * tiles_y
    counts = np.zeros(C * n_tiles + 1, np.int64)
    ids = np.empty(0, np.int32)
    for fill in range(2):  # pass 0 counts, pass 1 writes
        if fill == 1:
            offsets = np.cumsum(counts)
            ids = np.empty(offsets[-1], np.int32)
            cursor = offsets[:-1].copy()
        for c in range(C):
            for r in range(N):
                g = order[c, r]
                x0, x1, y0, y1 = boxes[c, g, 0], boxes[c, g, 1], boxes[c, g, 2], boxes[c, g, 3]
                if x0 > x1 or y0 > y1:
                    continue
                for ty in range(y0 // tile_size, y1 // tile_size + 1):
                    for tx in range(x0 // tile_size, x1 // tile_size + 1):
                        t = c * n_tiles + ty * tiles_x + tx
                        if fill == 0:
                            counts[t + 1] += 1
                        else:
                            ids[cursor[t]] = g
                            cursor[t] += 1
    return offsets, ids


# The blending loops below run over LANES pixels of a tile row at a time, with no branches and
# no calls, so LLVM turns them into SIMD code (AVX2/AVX-512: 8-16 pixels per instruction);
# pixels outside the Gaussian's box or already finished are masked out with selects.  The
# exponential is `_exp_neg` (a Cephes-style polynomial), since libm's expf is a call that stops
# vectorisation.  Hand-written: numba has no vectorised exp without Intel's SVML.
LANES = 16
_F_ZERO = np.float32(0.0)
_F_EXP_LO = np.float32(-10.0)  # exp(-10) * opacity < 1/255: below it the value only has to stay small
_F_LOG2E = np.float32(1.4426950408889634)
_F_LN2_HI = np.float32(0.693359375)  # ln 2 split in two for an exact range reduction (Cephes)
_F_LN2_LO = np.float32(-2.12194440e-4)
_EXP_POLY = tuple(np.float32(v) for v in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3,
                                          4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1))
_F_P0, _F_P1, _F_P2, _F_P3, _F_P4, _F_P5 = _EXP_POLY
_LANE_CENTRES = np.arange(LANES, dtype=np.float32) + _F_HALF  # pixel centres of a chunk, from its left edge


@njit(cache=True, inline="always")
def _exp_neg(sigma):  # pragma: no cover - compiled
    """exp(-sigma) in float32 for sigma >= 0, within ~1 ulp (Cephes expf: x = n ln2 + r,
    |r| <= ln2 / 2, degree-7 polynomial, times 2^n); branch-free so that loops calling it
    vectorise.  sigma is clamped to [0, 10]: a Gaussian is skipped below alpha = 1/255 anyway
    (opacity exp(-10) < 1/255), and sigma < 0 is skipped by the callers."""
    x = min(max(-sigma, _F_EXP_LO), _F_ZERO)
    n = np.floor(x * _F_LOG2E + _F_HALF)
    r = x - n * _F_LN2_HI - n * _F_LN2_LO
    p = (((((_F_P0 * r + _F_P1) * r + _F_P2) * r + _F_P3) * r + _F_P4) * r + _F_P5) * r * r + r + _F_ONE
    m = np.int32(-n)  # 0..15: 2^-m by its binary digits, exact
    p = p * (np.float32(0.5) if m & 1 else _F_ONE) * (np.float32(0.25) if m & 2 else _F_ONE)
    return p * (np.float32(0.0625) if m & 4 else _F_ONE) * (np.float32(0.00390625) if m & 8 else _F_ONE)


@njit(cache=True, inline="always")
def _alpha(dx, dy, ca, cb, cc, opacity):  # pragma: no cover - compiled
    """(dx, sigma, exp(-sigma), raw alpha, clamped alpha) at offset (dx, dy) from the mean.
    The forward and backward kernels share it, so they agree on every float32 rounding."""
    sigma = _F_HALF * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    vis = _exp_neg(sigma)
    raw = opacity * vis
    return dx, sigma, vis, raw, min(_F_ALPHA_MAX, raw)


@njit(cache=True, inline="always")
def _ellipse_rows(my, ca, cb, cc, opacity, y_lo, y_hi):  # pragma: no cover - compiled
    """Rows (first, last) of [y_lo, y_hi] where the Gaussian can reach alpha >= 1/255, plus the
    sigma cut-off and conic determinant that `_ellipse_cols` needs.

    A speed-up only, never a change of result: pixels outside the ellipse sigma <= ln(255 o)
    have alpha < 1/255, and the cut-off is widened by 0.1 % + 1e-3 (float32 sigma rounding) and
    the bounds by 1e-3 px.  A conic that is not positive definite keeps the whole box.
    """
    if opacity * 255.0 < 0.999:  # alpha <= opacity < 1/255 wherever sigma >= 0
        return 1, 0, 0.0, 0.0
    s_cut = math.log(255.0 * opacity)
    s_cut += 1e-3 * (1.0 + abs(s_cut))
    det = np.float64(ca) * cc - np.float64(cb) * cb
    if ca <= 0 or det <= 0:
        return y_lo, y_hi, s_cut, det
    half = math.sqrt(2.0 * ca * s_cut / det) + 1e-3  # max |dy| on the ellipse
    return max(y_lo, math.ceil(my - 0.5 - half)), min(y_hi, math.floor(my - 0.5 + half)), s_cut, det


@njit(cache=True, inline="always")
def _ellipse_cols(py, mx, my, ca, cb, s_cut, det, x_lo, x_hi):  # pragma: no cover - compiled
    """Columns (first, last) of [x_lo, x_hi] inside the widened ellipse on row py (see above)."""
    if ca <= 0 or det <= 0:
        return x_lo, x_hi
    dy = py + 0.5 - np.float64(my)
    disc = 2.0 * ca * s_cut - det * dy * dy
    if disc < 0:
        return 1, 0
    centre = mx - 0.5 - cb * dy / ca  # pixel index of the row's sigma minimum
    half = math.sqrt(disc) / ca + 1e-3
    return max(x_lo, math.ceil(centre - half)), min(x_hi, math.floor(centre + half))


@njit(cache=True, inline="always")
def _tile_rect(ct, n_tiles, tiles_x, tile_size, width, height):  # pragma: no cover - compiled
    """(camera, x0, y0, tile width, tile height) of flat (camera, tile) index ct."""
    c = ct // n_tiles
    t = ct - c * n_tiles
    y0 = (t // tiles_x) * tile_size
    x0 = (t - (t // tiles_x) * tiles_x) * tile_size
    return c, x0, y0, min(tile_size, width - x0), min(tile_size, height - y0)


@njit(cache=True, inline="always")
def _lane_chunks(c_lo, c_hi, x0):  # pragma: no cover - compiled
    """range of the first tile-local column of each LANES-wide chunk that meets [c_lo, c_hi].

    An empty row (c_hi < c_lo, e.g. the (1, 0) of `_ellipse_cols`) must give no chunk: floor
    division of 1 - x0 would otherwise start a chunk at a negative column, and the kernels would
    write outside their tile state (found with NUMBA_BOUNDSCHECK=1 on a 401 x 299 image)."""
    if c_hi < c_lo:
        return range(0, 0, LANES)
    return range((c_lo - x0) // LANES * LANES, c_hi - x0 + 1, LANES)


@njit(cache=True, inline="always")
def _slot(yy, xx, chunks_per_row, field):  # pragma: no cover - compiled
    """(chunk, column) of tile pixel (yy, xx)'s `field` in a tile state array (see `_forward_kernel`)."""
    return yy * chunks_per_row + xx // LANES, field * LANES + xx % LANES


@njit(parallel=True, cache=True)
def _forward_kernel(means, conics, colors, opacities, background, boxes, offsets, ids,
                    width, height, tiles_x, tile_size):  # pragma: no cover - compiled
    """Front-to-back blending per (camera, tile) of exactly 4 colour channels (colors
    (C, N, 4), background (C, 4); `_forward` pads fewer and splits more).

    Returns render (C, H, W, 4), alpha (C, H, W, 1), final transmittance (C, H, W), all float32,
    and per pixel the number of tile-list entries up to and including the last one that
    contributed (C, H, W) int32: the backward walks back from there.

    Tile state is 2D float32 arrays with a row per LANES-pixel chunk of a tile row holding its
    fields side by side (state: [T, last contributing entry, done] x LANES; acc: the 4 blended
    channels x LANES): constant offsets, no inner loops and all float32 is what LLVM's
    vectoriser needs (measured: a loop over D channels inside the pixel loop stopped it).
    """
    C, N, D = colors.shape
    n_tiles = (offsets.shape[0] - 1) // C
    cpr = -(-tile_size // LANES)  # chunks per tile row
    F = 3  # fields: T, last contributing entry (float32), done (0/1)
    render = np.empty((C, height, width, D), np.float32)
    alpha_out = np.empty((C, height, width, 1), np.float32)
    t_final = np.empty((C, height, width), np.float32)
    n_contrib = np.empty((C, height, width), np.int32)
    for ct in prange(C * n_tiles):
        c, x0, y0, tw, th = _tile_rect(ct, n_tiles, tiles_x, tile_size, width, height)
        # 1. tile-local pixel state
        state = np.zeros((th * cpr, F * LANES), np.float32)
        state[:, :LANES] = _F_ONE  # T = 1
        acc = np.zeros((th * cpr, 4 * LANES), np.float32)  # blended colour, same layout
        start = offsets[ct]
        # 2. Gaussians front to back, each over the rows of its ellipse, LANES pixels at a time
        for k in range(start, offsets[ct + 1]):
            if (k - start) % 32 == 31:  # every 32 entries: stop once every pixel has terminated
                finished = True
                for yy in range(th):
                    for xx in range(tw):
                        finished = finished and state[_slot(yy, xx, cpr, 2)] > 0
                if finished:
                    break
            g = ids[k]
            entry = np.float32(k - start + 1)
            mx, my = means[c, g, 0], means[c, g, 1]
            ca, cb, cc, op = conics[c, g, 0], conics[c, g, 1], conics[c, g, 2], opacities[c, g]
            c0, c1, c2, c3 = colors[c, g, 0], colors[c, g, 1], colors[c, g, 2], colors[c, g, 3]
            x_lo, x_hi = max(boxes[c, g, 0], x0), min(boxes[c, g, 1], x0 + tw - 1)
            y_lo, y_hi, s_cut, det = _ellipse_rows(my, ca, cb, cc, op, max(boxes[c, g, 2], y0),
                                                   min(boxes[c, g, 3], y0 + th - 1))
            for py in range(y_lo, y_hi + 1):
                c_lo, c_hi = _ellipse_cols(py, mx, my, ca, cb, s_cut, det, x_lo, x_hi)
                dy = np.float32(py) + _F_HALF - my
                for j0 in _lane_chunks(c_lo, c_hi, x0):
                    chunk = (py - y0) * cpr + j0 // LANES
                    # the box in chunk-local pixel-centre coordinates, float32 like the lanes
                    lo, hi = np.float32(x_lo - x0 - j0), np.float32(x_hi - x0 - j0 + 1)
                    dx0 = np.float32(x0 + j0) - mx
                    for j in range(LANES):  # vectorised: float32 selects, no branches
                        centre = _LANE_CENTRES[j]
                        dx, sigma, vis, raw, alpha = _alpha(dx0 + centre, dy, ca, cb, cc, op)
                        t, last, done = state[chunk, j], state[chunk, LANES + j], state[chunk, 2 * LANES + j]
                        next_t = t * (_F_ONE - alpha)
                        ok = (centre > lo) & (centre < hi) & (sigma >= 0) & (alpha >= _F_ALPHA_MIN) & (done == 0)
                        keep = ok & (next_t > _F_T_MIN)
                        w = alpha * t if keep else _F_ZERO
                        acc[chunk, j] += c0 * w
                        acc[chunk, LANES + j] += c1 * w
                        acc[chunk, 2 * LANES + j] += c2 * w
                        acc[chunk, 3 * LANES + j] += c3 * w
                        state[chunk, j] = next_t if keep else t
                        state[chunk, LANES + j] = entry if keep else last
                        state[chunk, 2 * LANES + j] = _F_ONE if ok & (next_t <= _F_T_MIN) else done
        # 3. background through the remaining transmittance; write the tile out
        for yy in range(th):
            for xx in range(tw):
                T = state[_slot(yy, xx, cpr, 0)]
                for d in range(D):
                    render[c, y0 + yy, x0 + xx, d] = acc[_slot(yy, xx, cpr, d)] + T * background[c, d]
                alpha_out[c, y0 + yy, x0 + xx, 0] = _F_ONE - T
                t_final[c, y0 + yy, x0 + xx] = T
                n_contrib[c, y0 + yy, x0 + xx] = np.int32(state[_slot(yy, xx, cpr, 1)])
    return render, alpha_out, t_final, n_contrib


@njit(cache=True, fastmath=True)
def _lane_sums(lanes, v_slots, k):  # pragma: no cover - compiled
    """v_slots[k, q] = the sum of lanes[q]; fastmath only here, so these sums vectorise (their
    order is free)."""
    for q in range(v_slots.shape[1]):
        s = np.float32(0.0)
        for j in range(LANES):
            s += lanes[q, j]
        v_slots[k, q] = s


@njit(parallel=True, cache=True, error_model="numpy")  # numpy: 1 / 0 is inf, no exception branch
def _backward_kernel(means, conics, colors, opacities, background, boxes, offsets, ids, tiles_x, tile_size,
                     t_final, n_contrib, v_render, v_alpha_out, channels):  # pragma: no cover - compiled
    """Back-to-front gradient walk per (camera, tile) (3DGS / gsplat `rasterize_to_pixels_bwd`).

    Returns v_slots (M, 6 + D) float32, one row per tile-list entry: d mean2d (2), d conic (3),
    d opacity (1), d colour (D).  Rows are private to their tile, so no two threads write the
    same memory; `_sum_slots` adds them up per Gaussian.  Tile state is laid out as in the
    forward, fields [T, buf = (colour blended behind) . v_render, T_final dL/d(1 - T_final),
    last contributing entry, v_render 0 .. D-1]; each entry's gradient sums are kept per SIMD
    lane in `lanes` (6 + D, LANES) and added up once per entry.
    """
    C, N, D = colors.shape
    height, width = t_final.shape[1], t_final.shape[2]
    n_tiles = (offsets.shape[0] - 1) // C
    cpr = -(-tile_size // LANES)
    F = 4  # fields before v_render: T, buf, v_a_final, last
    v_slots = np.zeros((ids.shape[0], 6 + D), np.float32)
    for ct in prange(C * n_tiles):
        c, x0, y0, tw, th = _tile_rect(ct, n_tiles, tiles_x, tile_size, width, height)
        # 1. tile-local state; T starts at its final value and is un-multiplied Gaussian by Gaussian
        state = np.zeros((th * cpr, (F + len(channels)) * LANES), np.float32)
        lanes = np.zeros((6 + len(channels), LANES), np.float32)
        col = np.empty(len(channels), np.float32)
        deepest = 0
        for yy in range(th):
            for xx in range(tw):
                y, x = y0 + yy, x0 + xx
                T = t_final[c, y, x]
                deepest = max(deepest, n_contrib[c, y, x])
                v_a = v_alpha_out[c, y, x]
                for d in range(D):
                    state[_slot(yy, xx, cpr, F + d)] = v_render[c, y, x, d]
                    v_a -= background[c, d] * v_render[c, y, x, d]
                state[_slot(yy, xx, cpr, 0)] = T
                state[_slot(yy, xx, cpr, 2)] = v_a * T
                state[_slot(yy, xx, cpr, 3)] = np.float32(n_contrib[c, y, x])
        start = offsets[ct]
        # 2. Gaussians back to front from the deepest one that contributed anywhere in the tile
        for kk in range(deepest - 1, -1, -1):
            k = start + kk
            g = ids[k]
            entry = np.float32(kk)
            mx, my = means[c, g, 0], means[c, g, 1]
            ca, cb, cc, op = conics[c, g, 0], conics[c, g, 1], conics[c, g, 2], opacities[c, g]
            for d in range(len(channels)):
                col[d] = colors[c, g, d]
            x_lo, x_hi = max(boxes[c, g, 0], x0), min(boxes[c, g, 1], x0 + tw - 1)
            y_lo, y_hi, s_cut, det = _ellipse_rows(my, ca, cb, cc, op, max(boxes[c, g, 2], y0),
                                                   min(boxes[c, g, 3], y0 + th - 1))
            lanes[:] = 0.0
            for py in range(y_lo, y_hi + 1):
                c_lo, c_hi = _ellipse_cols(py, mx, my, ca, cb, s_cut, det, x_lo, x_hi)
                dy = np.float32(py) + _F_HALF - my
                for j0 in _lane_chunks(c_lo, c_hi, x0):
                    chunk = (py - y0) * cpr + j0 // LANES
                    lo, hi = np.float32(x_lo - x0 - j0), np.float32(x_hi - x0 - j0 + 1)
                    dx0 = np.float32(x0 + j0) - mx
                    for j in range(LANES):  # vectorised: float32 selects, no branches
                        centre = _LANE_CENTRES[j]
                        dx, sigma, vis, raw, alpha = _alpha(dx0 + centre, dy, ca, cb, cc, op)
                        # loads first: selects of loaded values vectorise, loads inside branches do not
                        t_behind, buf = state[chunk, j], state[chunk, LANES + j]
                        v_a_final, last = state[chunk, 2 * LANES + j], state[chunk, 3 * LANES + j]
                        col_dot = _F_ZERO
                        for d in range(len(channels)):  # unrolled: D is a compile-time constant
                            col_dot += col[d] * state[chunk, (F + d) * LANES + j]
                        ok = (centre > lo) & (centre < hi) & (sigma >= 0) & (alpha >= _F_ALPHA_MIN) & (entry < last)
                        # undo this Gaussian's transmittance step; colour and alpha gradients:
                        # dL/dalpha = T vr.c - vr.(colour behind) / (1 - alpha)
                        #             + T_final / (1 - alpha) dL/d(1 - T_final)
                        ra = _F_ONE / (_F_ONE - alpha)
                        t = t_behind * ra
                        fac = alpha * t if ok else _F_ZERO
                        v_a = v_a_final * ra + col_dot * t - buf * ra
                        state[chunk, j] = t if ok else t_behind
                        state[chunk, LANES + j] = buf + col_dot * fac
                        # alpha = opacity exp(-sigma) unless clamped (then no gradient)
                        grad = ok & (raw <= _F_ALPHA_MAX)
                        v_sigma = -raw * v_a if grad else _F_ZERO
                        lanes[0, j] -= v_sigma * (ca * dx + cb * dy)  # d sigma / d mean = -(conic @ d)
                        lanes[1, j] -= v_sigma * (cb * dx + cc * dy)
                        lanes[2, j] += _F_HALF * v_sigma * dx * dx
                        lanes[3, j] += v_sigma * dx * dy
                        lanes[4, j] += _F_HALF * v_sigma * dy * dy
                        lanes[5, j] += vis * v_a if grad else _F_ZERO
                        for d in range(len(channels)):
                            lanes[6 + d, j] += fac * state[chunk, (F + d) * LANES + j]
            _lane_sums(lanes, v_slots, k)
    return v_slots


@njit(cache=True)
def _sum_rows_kernel(rows, owner, n_out):  # pragma: no cover - compiled
    """out[owner[i]] += rows[i]: (M, K) -> (n_out, K) float32, sequential (no races)."""
    out = np.zeros((n_out, rows.shape[1]), np.float32)
    for i in range(rows.shape[0]):
        for j in range(rows.shape[1]):
            out[owner[i], j] += rows[i, j]
    return out


# ---------------------------------------------------------------------------------------------
# random scenes for tests and benchmarks


def _random_scene(C: int, N: int, width: int, height: int, D: int, generator: torch.Generator,
                  margin: float = 0.1) -> dict[str, Tensor]:
    """Realistic projected Gaussians: covariances with eigenvalues 0.5-20 px^2 at random angles,
    radii = ceil(3 sqrt(max eigenvalue)), means over the image plus `margin` of its size on
    each side (some partly or fully off-screen), opacities in (0.05, 0.99).

    Returns keyword arguments for the rasterisers (float32, CPU), without width/height.
    """
    rand = lambda *shape: torch.rand(*shape, generator=generator)  # noqa: E731
    eig = 0.5 + 19.5 * rand(C, N, 2)  # [C, N, 2] px^2
    theta = math.pi * rand(C, N)
    cos, sin = torch.cos(theta), torch.sin(theta)
    l1, l2 = eig.unbind(-1)
    cov_xx, cov_xy, cov_yy = l1 * cos**2 + l2 * sin**2, (l1 - l2) * cos * sin, l1 * sin**2 + l2 * cos**2
    det = cov_xx * cov_yy - cov_xy**2
    conics = torch.stack([cov_yy / det, -cov_xy / det, cov_xx / det], dim=-1)  # [C, N, 3]
    size = torch.tensor([width, height], dtype=torch.float32)
    means2d = (rand(C, N, 2) * (1 + 2 * margin) - margin) * size  # [C, N, 2]
    return {
        "means2d": means2d, "conics": conics, "colors": rand(C, N, D),
        "opacities": 0.05 + 0.94 * rand(C, N), "depths": 1 + 10 * rand(C, N),
        "radii": torch.ceil(3 * torch.sqrt(eig.max(dim=-1).values)).to(torch.int32),
    }
