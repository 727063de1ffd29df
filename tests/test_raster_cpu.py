"""CPU splat rasterisers: the numba fast path against the pure-torch reference, and both against
hand-computed values and gsplat's rules (alpha clamp and threshold, early termination).

Tolerances: forward atol 1e-5 (float32 blending, different summation order); gradients atol 1e-4,
rtol 1e-3 (the fast backward reconstructs T by division, the reference differentiates a cumprod).
"""

from __future__ import annotations

import math

import pytest
import torch

from orbitforge.errors import InputError
from orbitforge.recon.splat.raster_cpu import _random_scene, rasterize_fast, rasterize_reference

GRAD_INPUTS = ("means2d", "conics", "colors", "opacities")
FWD_TOL = {"atol": 1e-5, "rtol": 1e-5}
GRAD_TOL = {"atol": 1e-4, "rtol": 1e-3}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """The reference is many small ops: on a shared 2-core machine torch's thread pool makes them
    ~10x slower (torch.sort especially), so the suite runs it single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _scene(C, N, width, height, D, seed, ties=False):
    gen = torch.Generator().manual_seed(seed)
    scene = _random_scene(C, N, width, height, D, gen)
    if ties:  # few depth levels: ordering must fall back to the index, identically in both paths
        scene["depths"] = torch.floor(scene["depths"] * 0.5)
    scene["radii"][torch.rand(C, N, generator=gen) < 0.1] = 0  # some culled by projection
    return scene


def _run(fn, scene, width, height, background=None, upstream_seed=0, **kwargs):
    """Forward, then backward of a random linear loss; returns (render, alpha, {name: grad})."""
    inputs = {k: v.clone().requires_grad_(k in GRAD_INPUTS) for k, v in scene.items()}
    bg = None if background is None else background.clone().requires_grad_(True)
    render, alpha = fn(**inputs, width=width, height=height, background=bg, **kwargs)
    gen = torch.Generator().manual_seed(upstream_seed)
    v_render, v_alpha = torch.randn(render.shape, generator=gen), torch.randn(alpha.shape, generator=gen)
    loss = (render * v_render).sum() + (alpha * v_alpha).sum()
    loss.backward()
    grads = {k: inputs[k].grad for k in GRAD_INPUTS}
    if bg is not None:
        grads["background"] = bg.grad
    return render.detach(), alpha.detach(), grads


@pytest.mark.parametrize("with_background", [False, True])
@pytest.mark.parametrize("size", [(31, 17), (64, 48)])
@pytest.mark.parametrize("D", [1, 3, 4])
@pytest.mark.parametrize("N", [1, 50, 300])
@pytest.mark.parametrize("C", [1, 2])
def test_fast_matches_reference(C, N, D, size, with_background):
    width, height = size
    seed = hash((C, N, D, size, with_background)) % 2**31
    scene = _scene(C, N, width, height, D, seed, ties=D != 3)
    bg = torch.rand(C, D, generator=torch.Generator().manual_seed(seed + 1)) if with_background else None
    ref = _run(rasterize_reference, scene, width, height, bg)
    fast = _run(rasterize_fast, scene, width, height, bg)
    assert fast[0].shape == (C, height, width, D) and fast[1].shape == (C, height, width, 1)
    torch.testing.assert_close(fast[0], ref[0], **FWD_TOL)
    torch.testing.assert_close(fast[1], ref[1], **FWD_TOL)
    for name, grad in ref[2].items():
        torch.testing.assert_close(fast[2][name], grad, **GRAD_TOL, msg=lambda m, n=name: f"d/d{n}: {m}")


def test_fast_matches_reference_when_alphas_clamp_and_pixels_terminate():
    # near-opaque Gaussians: many alphas hit the 0.999 clamp (no gradient) and most pixels stop early
    scene = _scene(2, 300, 40, 24, 3, seed=11)
    scene["opacities"] = 0.997 + 0.003 * torch.rand(2, 300, generator=torch.Generator().manual_seed(12))
    bg = torch.rand(2, 3, generator=torch.Generator().manual_seed(13))
    ref = _run(rasterize_reference, scene, 40, 24, bg)
    fast = _run(rasterize_fast, scene, 40, 24, bg)
    assert (ref[1] > 1 - 2e-4).float().mean() > 0.5, "scene meant to terminate most pixels"
    torch.testing.assert_close(fast[0], ref[0], **FWD_TOL)
    for name, grad in ref[2].items():
        torch.testing.assert_close(fast[2][name], grad, **GRAD_TOL, msg=lambda m, n=name: f"d/d{n}: {m}")


@pytest.mark.parametrize("tile_size", [1, 7, 64])
def test_fast_does_not_depend_on_tile_size(tile_size):
    scene = _scene(2, 200, 40, 30, 3, seed=5)
    base = _run(rasterize_fast, scene, 40, 30)
    other = _run(rasterize_fast, scene, 40, 30, tile_size=tile_size)
    torch.testing.assert_close(other[0], base[0], **FWD_TOL)
    for name in GRAD_INPUTS:
        torch.testing.assert_close(other[2][name], base[2][name], **GRAD_TOL)


def test_wide_gaussian_rows_that_miss_its_ellipse_in_a_far_tile():
    """One wide, faint Gaussian whose box reaches tiles far from x = 0 on rows its ellipse misses:
    an empty row once started a chunk at a negative column and wrote outside the tile state
    (a wrong image, then a crash in training on 400 x 300 photos)."""
    scene = _one_gaussian([374.4828, 240.2423], [0.00551435, 0.0, 0.03472151], 0.16974878,
                          [0.33, 0.11, 0.73], radius=41)
    scene = {k: v.repeat(1, 3, *([1] * (v.dim() - 2))) for k, v in scene.items()}
    scene["means2d"][0, 1:] += torch.tensor([[-150.0, -100.0], [-300.0, 20.0]])
    ref = _run(rasterize_reference, scene, 401, 299)
    fast = _run(rasterize_fast, scene, 401, 299)
    torch.testing.assert_close(fast[0], ref[0], **FWD_TOL)
    torch.testing.assert_close(fast[1], ref[1], **FWD_TOL)
    for name, grad in ref[2].items():
        torch.testing.assert_close(fast[2][name], grad, **GRAD_TOL, msg=lambda m, n=name: f"d/d{n}: {m}")


def _one_gaussian(mean, conic, opacity, colour, radius=3):
    return {
        "means2d": torch.tensor([[mean]]), "conics": torch.tensor([[conic]]), "colors": torch.tensor([[colour]]),
        "opacities": torch.tensor([[opacity]]), "depths": torch.ones(1, 1),
        "radii": torch.tensor([[radius]], dtype=torch.int32),
    }


@pytest.mark.parametrize("fn", [rasterize_reference, rasterize_fast])
def test_single_gaussian_pixel_values_by_hand(fn):
    a, b, c, o = 0.5, 0.2, 0.8, 0.8
    colour, bg = [0.2, 0.4, 0.6], torch.tensor([[1.0, 0.5, 0.0]])
    render, alpha = fn(**_one_gaussian([2.5, 1.5], [a, b, c], o, colour), width=6, height=4, background=bg)
    # pixel (col 2, row 1): centre (2.5, 1.5) on the mean, sigma = 0
    torch.testing.assert_close(render[0, 1, 2], 0.8 * torch.tensor(colour) + 0.2 * bg[0])
    # pixel (col 3, row 2): d = (1, 1), sigma = 0.5 (a + c) + b
    al = o * math.exp(-(0.5 * (a + c) + b))
    torch.testing.assert_close(render[0, 2, 3], al * torch.tensor(colour) + (1 - al) * bg[0])
    torch.testing.assert_close(alpha[0, 2, 3, 0], torch.tensor(al))
    # radius 2: pixel (col 4, row 1) is 2 px from the mean, inside the box; col 5 (3 px) is outside
    out, alpha_out = fn(**_one_gaussian([2.5, 1.5], [a, b, c], o, colour, radius=2), width=6, height=4)
    assert alpha_out[0, 1, 5, 0] == 0 and alpha_out[0, 1, 4, 0] > 0


@pytest.mark.parametrize("fn", [rasterize_reference, rasterize_fast])
def test_alpha_clamp_and_threshold(fn):
    # opacity 1 at the centre clamps to 0.999 (gsplat 1.5); a faint Gaussian (alpha < 1/255) is skipped
    scene = _one_gaussian([0.5, 0.5], [1.0, 0.0, 1.0], 1.0, [1.0])
    assert fn(**scene, width=1, height=1)[1].item() == pytest.approx(0.999)
    faint = _one_gaussian([0.5, 0.5], [1.0, 0.0, 1.0], 0.003, [1.0])
    assert fn(**faint, width=1, height=1)[1].item() == 0.0


@pytest.mark.parametrize("fn", [rasterize_reference, rasterize_fast])
def test_opaque_stack_terminates(fn):
    # five alpha-0.95 Gaussians on one pixel: T = 0.05, 0.0025, 1.25e-4, then 6.25e-6 <= 1e-4 -> stop;
    # the fourth and fifth (shuffled depths: order comes from depths, not indices) never contribute
    depth = torch.tensor([[3.0, 0.0, 4.0, 1.0, 2.0]])  # front to back: 1, 3, 4, 0, 2
    scene = {
        "means2d": torch.full((1, 5, 2), 0.5), "conics": torch.tensor([[[1.0, 0.0, 1.0]] * 5]),
        "colors": torch.eye(5)[None], "opacities": torch.full((1, 5), 0.95), "depths": depth,
        "radii": torch.full((1, 5), 2, dtype=torch.int32),
    }
    render, alpha, grads = _run(fn, scene, 1, 1)
    expected = torch.zeros(5)
    expected[[1, 3, 4]] = torch.tensor([0.95, 0.95 * 0.05, 0.95 * 0.0025])
    torch.testing.assert_close(render[0, 0, 0], expected)
    torch.testing.assert_close(alpha[0, 0, 0, 0], torch.tensor(1 - 0.05**3))
    for name in GRAD_INPUTS:
        assert (grads[name][0, [0, 2]] == 0).all(), f"terminated Gaussians got a {name} gradient"
    for name in ("colors", "opacities"):  # (means and conics have zero gradient at dx = dy = 0)
        assert (grads[name][0, [1, 3, 4]].reshape(3, -1).abs().sum(-1) > 0).all()


def test_reference_gradcheck_float64():
    gen = torch.Generator().manual_seed(3)
    scene = {k: v.double() if v.is_floating_point() else v for k, v in _random_scene(2, 4, 7, 5, 2, gen).items()}
    scene["opacities"] = 0.2 + 0.5 * torch.rand(2, 4, generator=gen, dtype=torch.float64)  # away from the clamp
    bg = torch.rand(2, 2, generator=gen, dtype=torch.float64)
    names = (*GRAD_INPUTS, "background")
    leaves = [scene[k].clone().requires_grad_(True) for k in GRAD_INPUTS] + [bg.requires_grad_(True)]

    def render(*tensors):
        kwargs = dict(zip(names, tensors))
        return rasterize_reference(depths=scene["depths"], radii=scene["radii"], width=7, height=5, **kwargs)

    assert torch.autograd.gradcheck(render, leaves, eps=1e-6, atol=1e-5)


@pytest.mark.parametrize("fn", [rasterize_reference, rasterize_fast])
def test_empty_scene_is_background(fn):
    C, D = 2, 3
    scene = {k: v[:, :0] for k, v in _random_scene(C, 1, 20, 10, D, torch.Generator().manual_seed(0)).items()}
    bg = torch.rand(C, D)
    render, alpha, grads = _run(fn, scene, 20, 10, bg)
    torch.testing.assert_close(render, bg[:, None, None, :].expand(C, 10, 20, D))
    assert (alpha == 0).all()
    assert grads["means2d"].shape == (C, 0, 2)
    assert grads["background"].shape == (C, D)


@pytest.mark.parametrize("fn", [rasterize_reference, rasterize_fast])
def test_offscreen_gaussians_touch_nothing(fn):
    scene = _scene(1, 40, 24, 16, 3, seed=9)
    side = torch.rand(1, 40) < 0.5  # left of / below the image, boxes ending just before pixel centres
    scene["means2d"] = torch.where(side[..., None], torch.tensor([-20.0, 8.0]), torch.tensor([12.0, 40.0]))
    scene["radii"] = torch.full((1, 40), 19, dtype=torch.int32)  # reaches x = -1 / y = 21: no centre inside
    render, alpha, grads = _run(fn, scene, 24, 16)
    assert (render == 0).all() and (alpha == 0).all()
    for name in GRAD_INPUTS:
        assert (grads[name] == 0).all()


def test_xy_radii_match_shared_radius():
    scene = _scene(1, 60, 30, 20, 3, seed=2)
    xy = dict(scene, radii=scene["radii"][..., None].expand(-1, -1, 2).contiguous())
    for fn in (rasterize_reference, rasterize_fast):
        torch.testing.assert_close(fn(**xy, width=30, height=20)[0], fn(**scene, width=30, height=20)[0])


def test_bad_inputs_raise_actionable_errors():
    scene = _scene(1, 5, 8, 8, 3, seed=0)
    with pytest.raises(InputError, match="conics must be"):
        rasterize_fast(**dict(scene, conics=scene["conics"][..., :2]), width=8, height=8)
    with pytest.raises(InputError, match="float32 CPU"):
        rasterize_fast(**dict(scene, colors=scene["colors"].double()), width=8, height=8)
    with pytest.raises(InputError, match="background must be"):
        rasterize_reference(**scene, width=8, height=8, background=torch.zeros(3))
