"""gsplat's densification strategies on every device: CPU twins of the two CUDA ops MCMC calls.

gsplat's `DefaultStrategy` is plain torch and runs anywhere.  Its `MCMCStrategy` (Kheradmand et
al. 2024, "3D Gaussian Splatting as Markov Chain Monte Carlo") calls two CUDA-only ops through
`gsplat.strategy.ops`: `compute_relocation` (the relocation kernel, Eq. 9 of the paper) and
`quat_scale_to_covar_preci` (for the position noise).  This module has exact torch twins of
both and swaps them into `gsplat.strategy.ops` - the one place that names them, and only while
a strategy hook runs on CPU tensors (`strategy_ops_for`).  gsplat offers no injection point, so
the swap is the smallest change that lets its own strategy code run unmodified; on CUDA
nothing is touched.

`make_strategy` builds either strategy with gsplat's 30k-step schedule scaled to a shorter run,
and `StrategyHooks` hides the two strategies' different hook signatures from the trainer.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
from torch import Tensor

from orbitforge.errors import InputError
from orbitforge.recon.splat.projection import quat_to_rotmat

StrategyName = Literal["default", "mcmc"]


# ---------------------------------------------------------------------------------------------
# torch twins of gsplat's CUDA ops (hand-written: gsplat ships these only as CUDA kernels)


def compute_relocation(opacities: Tensor, scales: Tensor, ratios: Tensor, binoms: Tensor) -> tuple[Tensor, Tensor]:
    """Torch twin of `gsplat.relocation.compute_relocation` (same arguments and results).

    Splitting one Gaussian into n copies keeps what the image sees (Eq. 9 of 3DGS-MCMC, as in
    gsplat's `relocation_kernel`): new opacity o' = 1 - (1 - o)^(1/n), new scales s' = s o / d with
        d = sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k / sqrt(k+1) o'^(k+1).

    Args:
        opacities: [N] in (0, 1).  scales: [N, 3] (linear, not log).
        ratios: [N] copies per Gaussian; clamped to [1, n_max] in place, as gsplat does.
        binoms: [n_max, n_max] binomial coefficients C(n, k) (zero above the diagonal), from
            `MCMCStrategy.initialize_state`.

    Returns:
        new opacities [N] and new scales [N, 3], in the input dtype.  The alternating sum is
        evaluated in float64 (the CUDA kernel uses float32; the two agree to float32 rounding).
    """
    n_max = binoms.shape[0]
    ratios.clamp_(min=1, max=n_max)
    n = ratios.long()  # [N]
    o = opacities.double()
    new_o = 1.0 - torch.pow(1.0 - o, 1.0 / n.double())  # [N]
    k = torch.arange(n_max, dtype=torch.float64, device=o.device)  # [n_max]
    term = (-1.0) ** k / torch.sqrt(k + 1.0) * new_o[:, None] ** (k + 1.0)  # [N, n_max]
    coeff = torch.cumsum(binoms.double(), dim=0)  # [n_max, n_max]: row n-1 = sum_{i<=n} C(i-1, k)
    denom = (coeff[n - 1] * term).sum(dim=1)  # [N]
    new_scales = (o / denom)[:, None] * scales.double()  # [N, 3]
    return new_o.to(opacities.dtype), new_scales.to(scales.dtype)


def quat_scale_to_covar_preci(quats: Tensor, scales: Tensor, compute_covar: bool = True,
                              compute_preci: bool = True, triu: bool = False
                              ) -> tuple[Tensor | None, Tensor | None]:
    """Torch twin of `gsplat.quat_scale_to_covar_preci`: covariances R S S^T R^T and precisions
    R S^-1 S^-1 R^T of Gaussians from [..., 4] wxyz quaternions (normalised here) and [..., 3]
    linear scales; [..., 3, 3] each, or their upper triangles [..., 6] (xx, xy, xz, yy, yz, zz)
    when `triu`."""
    batch = quats.shape[:-1]
    R = quat_to_rotmat(quats.reshape(-1, 4)).reshape(*batch, 3, 3)

    def gram(m: Tensor) -> Tensor:
        out = m @ m.transpose(-1, -2)  # [..., 3, 3]
        if triu:
            flat = out.reshape(*batch, 9)
            out = (flat[..., [0, 1, 2, 4, 5, 8]] + flat[..., [0, 3, 6, 4, 7, 8]]) / 2.0  # [..., 6]
        return out

    covars = gram(R * scales[..., None, :]) if compute_covar else None
    precis = gram(R / scales[..., None, :]) if compute_preci else None
    return covars, precis


@contextlib.contextmanager
def strategy_ops_for(device: torch.device | str) -> Iterator[None]:
    """While a strategy hook runs on a CPU device, `gsplat.strategy.ops` uses the twins above.

    The names are restored afterwards (also on error), so gsplat is unchanged for everything
    else in the process; on CUDA this does nothing.
    """
    if torch.device(device).type == "cuda":
        yield
        return
    from gsplat.strategy import ops

    saved = ops.compute_relocation, ops.quat_scale_to_covar_preci
    ops.compute_relocation, ops.quat_scale_to_covar_preci = compute_relocation, quat_scale_to_covar_preci
    try:
        yield
    finally:
        ops.compute_relocation, ops.quat_scale_to_covar_preci = saved


# ---------------------------------------------------------------------------------------------
# building the strategies and calling their hooks


@dataclass
class StrategyHooks:
    """One of gsplat's strategies with one calling convention for the trainer.

    `DefaultStrategy` wants the projected means' gradients (`step_pre_backward`) and `packed`;
    `MCMCStrategy` wants the means' learning rate for its position noise.  Both run inside
    `strategy_ops_for`, so MCMC works on CPU.
    """

    name: StrategyName
    strategy: Any
    state: dict

    @property
    def per_gaussian_state(self) -> dict:
        """The running state indexed by Gaussian (for `gsplat.strategy.ops.remove`): all of
        DefaultStrategy's; none of MCMC's (its one tensor is the binomial table)."""
        return self.state if self.name == "default" else {}

    def pre_backward(self, params, optimizers, step: int, info: dict) -> None:
        if self.name == "default":
            self.strategy.step_pre_backward(params, optimizers, self.state, step, info)

    def post_backward(self, params, optimizers, step: int, info: dict, means_lr: float) -> None:
        with strategy_ops_for(params["means"].device):
            if self.name == "default":
                self.strategy.step_post_backward(params, optimizers, self.state, step, info, packed=False)
            else:
                self.strategy.step_post_backward(params, optimizers, self.state, step, info, lr=means_lr)


MCMC_REG = 0.01
"""Opacity and scale regularisers of MCMC runs (gsplat simple_trainer's `mcmc` preset), which let
unused Gaussians fade to the relocation threshold."""


def make_strategy(name: StrategyName, steps: int, scene_scale: float, cap: int, params, optimizers) -> StrategyHooks:
    """gsplat's strategy `name` with its 30k-step schedule scaled to `steps`, checked against
    the parameters.  `cap` bounds MCMC's Gaussian count (MCMC grows 5 % per refinement up to it).
    """
    if name == "default":
        from gsplat.strategy import DefaultStrategy

        strategy = DefaultStrategy(refine_start_iter=max(50, steps // 30), refine_stop_iter=int(steps * 0.5),
                                   reset_every=max(1000, steps // 3), refine_every=max(25, steps // 60), verbose=False)
        strategy.check_sanity(params, optimizers)
        return StrategyHooks(name, strategy, strategy.initialize_state(scene_scale=scene_scale))
    if name == "mcmc":
        from gsplat.strategy import MCMCStrategy

        # gsplat: refine from 500 to 25k of 30k steps, every 100; kept in proportion
        strategy = MCMCStrategy(cap_max=cap, refine_start_iter=max(50, steps // 60),
                                refine_stop_iter=int(steps * 25 / 30), refine_every=max(25, steps // 300),
                                verbose=False)
        strategy.check_sanity(params, optimizers)
        return StrategyHooks(name, strategy, strategy.initialize_state())
    raise InputError(f"unknown densification strategy {name!r}; choose 'default' or 'mcmc'")


def mcmc_regulariser(params) -> Tensor:
    """0.01 mean opacity + 0.01 mean scale (gsplat simple_trainer, MCMC preset)."""
    return MCMC_REG * torch.sigmoid(params["opacities"]).mean() + MCMC_REG * torch.exp(params["scales"]).mean()

