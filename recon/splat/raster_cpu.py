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
  backward (T reconstructed by division) in a second numba kernel.  Per-Gaussian gradients are
  written to one slot per (tile, list entry), so threads never race, then summed per Gaussian.

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
        render, alpha, t_final, n_contrib = _forward_kernel(
            *arrays, bins.boxes, bins.offsets, bins.ids, width, height, bins.tiles_x, bins.tile_size)
        ctx.arrays, ctx.bins, ctx.t_final, ctx.n_contrib = arrays, bins, t_final, n_contrib
        return torch.from_numpy(render), torch.from_numpy(alpha)

    @staticmethod
    def backward(ctx, v_render, v_alpha):
        bins, t_final = ctx.bins, ctx.t_final
        C, N, D = ctx.arrays[2].shape
        v_render_np = _to_numpy(v_render)  # [C, H, W, D]
        v_slots = _backward_kernel(*ctx.arrays, bins.boxes, bins.offsets, bins.ids, bins.tiles_x, bins.tile_size,
                                   t_final, ctx.n_contrib, v_render_np, _to_numpy(v_alpha)[..., 0])  # [M, 6 + D]
        v_gauss = _sum_slots(v_slots, bins.offsets, bins.ids, C, N).reshape(C, N, 6 + D)
        v_means, v_conics, v_opac, v_colors = (torch.from_numpy(np.ascontiguousarray(v_gauss[..., s]))
                                               for s in (slice(0, 2), slice(2, 5), 5, slice(6, None)))
        v_bg = torch.from_numpy(np.einsum("chwd,chw->cd", v_render_np, t_final)) if ctx.needs_input_grad[4] else None
        return v_means, v_conics, v_colors, v_opac, v_bg, None, None, None


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


@njit(cache=True, inline="always")
def _gauss_alpha(px, py, mx, my, ca, cb, cc, opacity):  # pragma: no cover - compiled
    """(dx, dy, vis, raw alpha, alpha) at pixel (px, py); alpha < 0 means 'skipped here'.
    The forward and backward kernels share it, so they agree on every float32 rounding."""
    dx = np.float32(px) + _F_HALF - mx
    dy = np.float32(py) + _F_HALF - my
    sigma = _F_HALF * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    vis = math.exp(-sigma)
    raw = opacity * vis
    alpha = min(_F_ALPHA_MAX, raw)
    if sigma < 0 or alpha < _F_ALPHA_MIN:
        alpha = np.float32(-1.0)
    return dx, dy, vis, raw, alpha


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


@njit(parallel=True, cache=True)
def _forward_kernel(means, conics, colors, opacities, background, boxes, offsets, ids,
                    width, height, tiles_x, tile_size):  # pragma: no cover - compiled
    """Front-to-back blending per (camera, tile).

    Returns render (C, H, W, D), alpha (C, H, W, 1), final transmittance (C, H, W), all float32,
    and per pixel the number of tile-list entries up to and including the last one that
    contributed (C, H, W) int32: the backward walks back from there.
    """
    C, N, D = colors.shape
    n_tiles = (offsets.shape[0] - 1) // C
    render = np.empty((C, height, width, D), np.float32)
    alpha_out = np.empty((C, height, width, 1), np.float32)
    t_final = np.empty((C, height, width), np.float32)
    n_contrib = np.empty((C, height, width), np.int32)
    for ct in prange(C * n_tiles):
        c, x0, y0, tw, th = _tile_rect(ct, n_tiles, tiles_x, tile_size, width, height)
        # 1. tile-local pixel state
        T = np.ones(tw * th, np.float32)
        acc = np.zeros((tw * th, D), np.float32)
        last = np.zeros(tw * th, np.int32)
        done = np.zeros(tw * th, np.bool_)
        col = np.empty(D, np.float32)  # the current Gaussian's colour, copied once per list entry
        alive = tw * th
        start = offsets[ct]
        # 2. Gaussians front to back, each over its ellipse within box and tile
        for k in range(start, offsets[ct + 1]):
            if alive == 0:
                break
            g = ids[k]
            mx, my = means[c, g, 0], means[c, g, 1]
            ca, cb, cc, op = conics[c, g, 0], conics[c, g, 1], conics[c, g, 2], opacities[c, g]
            for d in range(D):
                col[d] = colors[c, g, d]
            x_lo, x_hi = max(boxes[c, g, 0], x0), min(boxes[c, g, 1], x0 + tw - 1)
            y_lo, y_hi, s_cut, det = _ellipse_rows(my, ca, cb, cc, op, max(boxes[c, g, 2], y0),
                                                   min(boxes[c, g, 3], y0 + th - 1))
            for py in range(y_lo, y_hi + 1):
                c_lo, c_hi = _ellipse_cols(py, mx, my, ca, cb, s_cut, det, x_lo, x_hi)
                for px in range(c_lo, c_hi + 1):
                    p = (py - y0) * tw + (px - x0)
                    if done[p]:
                        continue
                    dx, dy, vis, raw, alpha = _gauss_alpha(px, py, mx, my, ca, cb, cc, op)
                    if alpha < 0:
                        continue
                    next_t = T[p] * (_F_ONE - alpha)
                    if next_t <= _F_T_MIN:
                        done[p] = True
                        alive -= 1
                        continue
                    w = alpha * T[p]
                    for d in range(D):
                        acc[p, d] += col[d] * w
                    T[p] = next_t
                    last[p] = k - start + 1
        # 3. background through the remaining transmittance; write the tile out
        for p in range(tw * th):
            y = y0 + p // tw
            x = x0 + p - (p // tw) * tw
            for d in range(D):
                render[c, y, x, d] = acc[p, d] + T[p] * background[c, d]
            alpha_out[c, y, x, 0] = _F_ONE - T[p]
            t_final[c, y, x] = T[p]
            n_contrib[c, y, x] = last[p]
    return render, alpha_out, t_final, n_contrib


@njit(parallel=True, cache=True)
def _backward_kernel(means, conics, colors, opacities, background, boxes, offsets, ids, tiles_x, tile_size,
                     t_final, n_contrib, v_render, v_alpha_out):  # pragma: no cover - compiled
    """Back-to-front gradient walk per (camera, tile) (3DGS / gsplat `rasterize_to_pixels_bwd`).

    Returns v_slots (M, 6 + D) float32, one row per tile-list entry: d mean2d (2), d conic (3),
    d opacity (1), d colour (D).  Rows are private to their tile, so no two threads write the
    same memory; `_sum_slots` adds them up per Gaussian.
    """
    C, N, D = colors.shape
    height, width = t_final.shape[1], t_final.shape[2]
    n_tiles = (offsets.shape[0] - 1) // C
    v_slots = np.zeros((ids.shape[0], 6 + D), np.float32)
    for ct in prange(C * n_tiles):
        c, x0, y0, tw, th = _tile_rect(ct, n_tiles, tiles_x, tile_size, width, height)
        # 1. tile-local state; T starts at its final value and is un-multiplied Gaussian by Gaussian
        T = np.empty(tw * th, np.float32)
        last = np.empty(tw * th, np.int32)
        vr = np.empty((tw * th, D), np.float32)
        v_a_final = np.empty(tw * th, np.float32)  # T_final * d loss / d (1 - T_final)
        buf = np.zeros(tw * th, np.float32)  # (colour blended behind) . v_render
        col = np.empty(D, np.float32)  # the current Gaussian's colour, copied once per list entry
        v_col = np.empty(D, np.float32)
        for p in range(tw * th):
            y = y0 + p // tw
            x = x0 + p - (p // tw) * tw
            T[p] = t_final[c, y, x]
            last[p] = n_contrib[c, y, x]
            v_a_final[p] = v_alpha_out[c, y, x]
            for d in range(D):
                vr[p, d] = v_render[c, y, x, d]
                v_a_final[p] -= background[c, d] * v_render[c, y, x, d]
            v_a_final[p] *= T[p]
        start = offsets[ct]
        # 2. Gaussians back to front from the deepest one that contributed anywhere in the tile
        for kk in range(last.max() - 1, -1, -1):
            k = start + kk
            g = ids[k]
            mx, my = means[c, g, 0], means[c, g, 1]
            ca, cb, cc, op = conics[c, g, 0], conics[c, g, 1], conics[c, g, 2], opacities[c, g]
            x_lo, x_hi = max(boxes[c, g, 0], x0), min(boxes[c, g, 1], x0 + tw - 1)
            y_lo, y_hi, s_cut, det = _ellipse_rows(my, ca, cb, cc, op, max(boxes[c, g, 2], y0),
                                                   min(boxes[c, g, 3], y0 + th - 1))
            v_mx = v_my = v_ca = v_cb = v_cc = v_op = np.float32(0.0)
            for d in range(D):
                col[d] = colors[c, g, d]
                v_col[d] = 0.0
            for py in range(y_lo, y_hi + 1):
                c_lo, c_hi = _ellipse_cols(py, mx, my, ca, cb, s_cut, det, x_lo, x_hi)
                for px in range(c_lo, c_hi + 1):
                    p = (py - y0) * tw + (px - x0)
                    if kk >= last[p]:
                        continue
                    dx, dy, vis, raw, alpha = _gauss_alpha(px, py, mx, my, ca, cb, cc, op)
                    if alpha < 0:
                        continue
                    # 2a. undo this Gaussian's transmittance step; colour and alpha gradients:
                    # dL/dalpha = T vr.c - vr.(colour behind) / (1 - alpha) + T_final / (1 - alpha) dL/d(1 - T_final)
                    ra = _F_ONE / (_F_ONE - alpha)
                    T[p] *= ra
                    fac = alpha * T[p]
                    v_a = v_a_final[p] * ra  # through T_final = prod(1 - alpha): alpha_out and background
                    col_dot = np.float32(0.0)
                    for d in range(D):
                        v_col[d] += fac * vr[p, d]
                        col_dot += col[d] * vr[p, d]
                    v_a += col_dot * T[p] - buf[p] * ra
                    buf[p] += col_dot * fac
                    # 2b. alpha = opacity exp(-sigma) unless clamped
                    if raw <= _F_ALPHA_MAX:
                        v_sigma = -raw * v_a
                        v_ca += _F_HALF * v_sigma * dx * dx
                        v_cb += v_sigma * dx * dy
                        v_cc += _F_HALF * v_sigma * dy * dy
                        v_mx -= v_sigma * (ca * dx + cb * dy)  # d sigma / d mean = -(conic @ d)
                        v_my -= v_sigma * (cb * dx + cc * dy)
                        v_op += vis * v_a
            v_slots[k, 0] = v_mx
            v_slots[k, 1] = v_my
            v_slots[k, 2] = v_ca
            v_slots[k, 3] = v_cb
            v_slots[k, 4] = v_cc
            v_slots[k, 5] = v_op
            for d in range(D):
                v_slots[k, 6 + d] = v_col[d]
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
