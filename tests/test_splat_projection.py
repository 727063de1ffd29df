"""Projection and SH colour against gsplat's own PyTorch reference (its `_torch_impl`).

gsplat's private functions may move between releases (pyproject pins gsplat < 1.6); these
tests skip, saying so, if they are gone, and the CPU rasteriser parity tests still stand.
"""

from __future__ import annotations

import pytest
import torch

from orbitforge.cameras import orbit
from orbitforge.recon.splat.projection import covariances_3d, project_gaussians, sh_to_colour

torch_impl = pytest.importorskip("gsplat.cuda._torch_impl", reason="gsplat's PyTorch reference is not importable")


@pytest.fixture
def scene():
    g = torch.Generator().manual_seed(0)
    n = 400
    means = torch.randn(n, 3, generator=g) * 0.6
    quats = torch.randn(n, 4, generator=g)
    log_scales = torch.randn(n, 3, generator=g) * 0.5 - 3
    cams = orbit(3, radius=2.5, width=64, height=48, elevation_deg=30)
    return means, quats, log_scales, torch.tensor(cams.w2c, dtype=torch.float32), torch.tensor(cams.K, dtype=torch.float32)


def test_covariances_match_gsplat(scene):
    means, quats, log_scales, *_ = scene
    theirs, _ = torch_impl._quat_scale_to_covar_preci(quats, torch.exp(log_scales), triu=False, compute_preci=False)
    torch.testing.assert_close(covariances_3d(quats, log_scales), theirs, atol=1e-6, rtol=1e-5)


def test_projection_matches_gsplat(scene):
    means, quats, log_scales, w2c, Ks = scene
    ours = project_gaussians(means, quats, log_scales, w2c, Ks, 64, 48)
    radii, means2d, depths, conics, _ = torch_impl._fully_fused_projection(
        means, covariances_3d(quats, log_scales), w2c, Ks, 64, 48)
    assert torch.equal(ours.radii, radii.to(torch.int32))
    visible = (radii > 0).all(dim=-1)  # culled Gaussians (behind the camera) need not agree
    torch.testing.assert_close(ours.means2d[visible], means2d[visible], atol=1e-4, rtol=1e-5)
    torch.testing.assert_close(ours.conics[visible], conics[visible], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ours.depths, depths)
    assert (ours.radii > 0).any() and (ours.radii == 0).any()


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colour_matches_gsplat(degree):
    g = torch.Generator().manual_seed(degree)
    sh = torch.randn(50, 16, 3, generator=g) * 0.5
    dirs = torch.nn.functional.normalize(torch.randn(2, 50, 3, generator=g), dim=-1)
    theirs = torch_impl._spherical_harmonics(degree, dirs, sh[None].expand(2, -1, -1, -1))
    torch.testing.assert_close(sh_to_colour(sh, dirs, degree), torch.clamp_min(theirs + 0.5, 0.0), atol=1e-5, rtol=1e-5)
