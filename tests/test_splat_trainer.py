"""The splat trainer: it learns, resumes from its checkpoint, and reaches quality on real assets."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from orbitforge import builtin
from orbitforge.clip import Clip
from orbitforge.errors import InputError
from orbitforge.export.mesh import foreground_masks
from orbitforge.gaussians import load_ply, save_ply
from orbitforge.recon.splat.render import render_splats, resolve_backend
from orbitforge.recon.splat.trainer import SplatConfig, split_frames, train_splats
from orbitforge.render import OrbitConfig, RenderConfig, render_orbit

from conftest import data_path


@pytest.fixture(scope="module")
def toy_clip():
    return render_orbit(builtin.load("toy"), OrbitConfig(frames=16, size=48))


def test_split_holds_out_every_eighth_frame():
    train, test = split_frames(17, 8)
    assert test == [0, 8, 16] and len(train) == 14
    with pytest.raises(InputError, match="nothing to train"):
        split_frames(1, 1)


def test_training_learns_and_writes_a_loadable_scene(toy_clip, tmp_path):
    steps = []
    config = SplatConfig(steps=300, sh_degree=1, random_init_points=3000)
    rng = torch.get_rng_state()
    result = train_splats(toy_clip, config, progress=lambda s, stats: steps.append(stats))
    # densification draws from torch's global RNG: the trainer seeds it and gives it back, so a
    # run does not depend on what ran before it, nor change what runs after
    assert torch.equal(torch.get_rng_state(), rng)
    assert result.scene.num_gaussians != 3000  # densification did run
    assert np.mean([s["psnr"] for s in steps[-20:]]) > np.mean([s["psnr"] for s in steps[:20]]) + 6
    assert result.metrics["psnr"] > 18 and result.metrics["held_out_frames"] == [0, 8]
    assert len(result.renders) == 2 and result.renders[0].shape == (48, 96, 3)
    save_ply(result.scene, tmp_path / "s.ply")
    assert load_ply(tmp_path / "s.ply").num_gaussians == result.scene.num_gaussians


def test_without_masks_the_splats_stand_on_the_clips_own_backdrop():
    """A capture on a dark backdrop (a studio, Middlebury's temple) has no masks: splats trained
    against white must paint the backdrop in with opaque dark Gaussians, which then bury the
    object in the mesh.  The default background is the frames' border colour instead."""
    dark = render_orbit(builtin.load("toy"), OrbitConfig(frames=16, size=48, render=RenderConfig(background=(0, 0, 0))))
    capture = Clip(dark.frames, dark.cameras)  # no masks, as from a camera
    assert capture.backdrop == (0.0, 0.0, 0.0)
    config = SplatConfig(steps=150, sh_degree=0, random_init_points=3000)
    auto = train_splats(capture, config)
    white = train_splats(capture, replace(config, background=(1.0, 1.0, 1.0)))
    assert auto.metrics["background"] == [0.0, 0.0, 0.0] and white.metrics["background"] == [1.0, 1.0, 1.0]
    assert auto.metrics["psnr"] > white.metrics["psnr"] + 3, (auto.metrics["psnr"], white.metrics["psnr"])
    # where the frames show backdrop, the auto splats are see-through and the white ones are not
    backdrop = ~foreground_masks(capture)[0]
    opaque = {name: render_splats(result.scene.render_params(), torch.tensor(capture.cameras.w2c[:1], dtype=torch.float32),
                                  torch.tensor(capture.cameras.K[:1], dtype=torch.float32), 48, 48,
                                  sh_degree=0).alpha[0, ..., 0].numpy()[backdrop].mean()
              for name, result in (("auto", auto), ("white", white))}
    assert opaque["auto"] < 0.3 < opaque["white"], opaque


def test_resume_continues_from_the_checkpoint(toy_clip, tmp_path):
    ckpt = tmp_path / "ckpt.safetensors"
    config = SplatConfig(steps=60, sh_degree=0, checkpoint_every=30)
    train_splats(toy_clip, config, checkpoint=ckpt, checkpoint_key="k")
    assert ckpt.is_file()
    seen = []
    train_splats(toy_clip, SplatConfig(steps=80, sh_degree=0, checkpoint_every=30), checkpoint=ckpt,
                 checkpoint_key="k", progress=lambda s, stats: seen.append(s))
    assert seen[0] == 61, "a run with the same key resumes after the saved step"
    seen.clear()
    train_splats(toy_clip, SplatConfig(steps=20, sh_degree=0), checkpoint=ckpt, checkpoint_key="other",
                 progress=lambda s, stats: seen.append(s))
    assert seen[0] == 1, "a checkpoint for other settings is ignored"


def test_sigterm_stops_training_with_a_checkpoint_of_the_steps_done(toy_clip, tmp_path):
    """`kill`, a scheduler's preemption or Ctrl-C loses no steps: the checkpoint is written when
    the run stops, not only every `checkpoint_every` steps."""
    import os
    import signal

    ckpt = tmp_path / "ckpt.safetensors"
    config = SplatConfig(steps=40, sh_degree=0, checkpoint_every=1000)

    def terminate_at_7(step, stats):
        if step == 7:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train_splats(toy_clip, config, checkpoint=ckpt, checkpoint_key="k", progress=terminate_at_7)
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is only there while training
    seen = []
    train_splats(toy_clip, config, checkpoint=ckpt, checkpoint_key="k", progress=lambda s, stats: seen.append(s))
    assert seen[0] == 8 and seen[-1] == 40


def test_backend_choice():
    if not torch.cuda.is_available():
        assert resolve_backend("auto") == "cpu"
        with pytest.raises(InputError, match="needs a CUDA GPU"):
            resolve_backend("gsplat")


def test_cpu_backend_matches_its_exact_reference(toy_clip):
    """The trainer's render path: fast CPU rasteriser vs the exact reference, same params."""
    g = torch.Generator().manual_seed(0)
    n = 200
    params = {"means": torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0, 0.5, 0]),
              "scales": torch.full((n, 3), -3.0), "quats": torch.randn(n, 4, generator=g),
              "opacities": torch.randn(n, generator=g), "sh0": torch.randn(n, 1, 3, generator=g),
              "shN": torch.randn(n, 15, 3, generator=g) * 0.1}
    w2c = torch.tensor(toy_clip.cameras.w2c[:2], dtype=torch.float32)
    Ks = torch.tensor(toy_clip.cameras.K[:2], dtype=torch.float32)
    fast = render_splats(params, w2c, Ks, 48, 48, sh_degree=3, backend="cpu")
    exact = render_splats(params, w2c, Ks, 48, 48, sh_degree=3, backend="reference")
    torch.testing.assert_close(fast.rgb, exact.rgb, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(fast.depth, exact.depth, atol=1e-4, rtol=1e-4)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: compares the CPU backend with gsplat.rasterization")
def test_cpu_backend_matches_gsplat_on_gpu(toy_clip):
    g = torch.Generator().manual_seed(0)
    n = 300
    params = {"means": torch.randn(n, 3, generator=g) * 0.3, "scales": torch.full((n, 3), -3.0),
              "quats": torch.randn(n, 4, generator=g), "opacities": torch.randn(n, generator=g),
              "sh0": torch.randn(n, 1, 3, generator=g), "shN": torch.zeros(n, 15, 3)}
    w2c = torch.tensor(toy_clip.cameras.w2c[:2], dtype=torch.float32)
    Ks = torch.tensor(toy_clip.cameras.K[:2], dtype=torch.float32)
    cpu = render_splats(params, w2c, Ks, 48, 48, sh_degree=0, backend="cpu")
    gpu = render_splats({k: v.cuda() for k, v in params.items()}, w2c.cuda(), Ks.cuda(), 48, 48, sh_degree=0, backend="gsplat")
    torch.testing.assert_close(cpu.rgb, gpu.rgb.cpu(), atol=2e-3, rtol=1e-3)
    torch.testing.assert_close(cpu.alpha, gpu.alpha.cpu(), atol=2e-3, rtol=1e-3)


def test_splat_command_on_a_rendered_orbit(tmp_path, capsys):
    from orbitforge.cli import main

    run = tmp_path / "run"
    assert main(["render-orbit", "builtin:toy", "-o", str(run), "--frames", "9", "--size", "32"]) == 0
    assert main(["splat", str(run), "--steps", "40", "--sh-degree", "0"]) == 0
    for rel in ("splats/splats.ply", "splats/eval.json", "splats/renders/heldout_00000.png", "preview/splat_heldout.png"):
        assert (run / rel).is_file(), rel
    assert not (run / ".checkpoints" / "splats.safetensors").exists()
    assert "held-out PSNR" in capsys.readouterr().out
    assert main(["splat", str(run), "--steps", "40", "--sh-degree", "0"]) == 0
    assert "already complete, skipped" in capsys.readouterr().out
    assert json.loads((run / "splats" / "eval.json").read_text())["background"] == [1.0, 1.0, 1.0]  # the render's
    assert main(["splat", str(run), "--steps", "40", "--sh-degree", "0", "--background", "0.5,0.5,0.5"]) == 0
    assert "already complete" not in capsys.readouterr().out  # another background is another stage
    assert json.loads((run / "splats" / "eval.json").read_text())["background"] == [0.5, 0.5, 0.5]
    assert main(["splat", str(tmp_path / "nothing")]) == 2


def _spot_quality(size: int, steps: int) -> dict:
    from orbitforge.mesh import load_meshes

    clip = render_orbit(load_meshes(data_path("assets/spot/spot_textured.glb")), OrbitConfig(frames=48, size=size))
    return train_splats(clip, SplatConfig(steps=steps)).metrics


@pytest.mark.slow
def test_spot_orbit_quality_128():
    """48 views of Spot with known cameras: held-out PSNR on every 8th frame."""
    metrics = _spot_quality(128, 600)  # measured 31.6 dB at 500 steps, 35.3 at 2000
    assert metrics["psnr"] >= 28.0, metrics


@pytest.mark.full
def test_spot_orbit_quality_256():
    """The issue's setting (256^2); about 10+ minutes on 2 cores, so only in `make test-full`."""
    metrics = _spot_quality(256, 2000)
    assert metrics["psnr"] >= 28.0, metrics


def test_cpu_twins_of_gsplats_mcmc_ops():
    """compute_relocation against a line-by-line transcription of gsplat's CUDA relocation
    kernel; quat_scale_to_covar_preci against gsplat's own pure-torch version."""
    import math

    from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci
    from gsplat.strategy import MCMCStrategy

    from orbitforge.recon.splat.strategy import compute_relocation, quat_scale_to_covar_preci

    g = torch.Generator().manual_seed(0)
    binoms = MCMCStrategy().initialize_state()["binoms"]
    n_max = binoms.shape[0]
    opac = torch.rand(64, generator=g) * 0.98 + 0.01
    scales = torch.rand(64, 3, generator=g) + 0.01
    ratios = torch.randint(1, 60, (64,), generator=g)  # some above n_max: clamped, as gsplat does
    new_o, new_s = compute_relocation(opac, scales, ratios.clone(), binoms)
    for j in range(64):  # RelocationCUDA.cu relocation_kernel, in Python
        n = min(max(int(ratios[j]), 1), n_max)
        o_new = 1.0 - (1.0 - float(opac[j])) ** (1.0 / n)
        denom = sum(float(binoms[i - 1, k]) * (-1.0) ** k / math.sqrt(k + 1) * o_new ** (k + 1)
                    for i in range(1, n + 1) for k in range(i))
        assert new_o[j].item() == pytest.approx(o_new, rel=1e-5)
        torch.testing.assert_close(new_s[j], float(opac[j]) / denom * scales[j], rtol=1e-4, atol=0)
    quats, sc = torch.randn(10, 4, generator=g), torch.rand(10, 3, generator=g) + 0.1
    for triu in (False, True):
        ours, theirs = quat_scale_to_covar_preci(quats, sc, triu=triu), _quat_scale_to_covar_preci(quats, sc, triu=triu)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_mcmc_strategy_trains_on_cpu(toy_clip):
    """gsplat's MCMCStrategy (relocation + noise through the CPU twins) runs on the CPU backend,
    grows towards its cap and learns the toy orbit (measured 21.4 dB at 300 steps; default
    strategy 22.0 dB)."""
    import gsplat.strategy.ops as ops

    before = ops.compute_relocation
    config = SplatConfig(steps=300, sh_degree=1, random_init_points=3000, strategy="mcmc", max_gaussians=6000)
    result = train_splats(toy_clip, config)
    assert result.metrics["psnr"] > 19
    assert 3000 < result.metrics["gaussians"] <= 6000, "MCMC adds 5 % per refinement up to the cap"
    assert ops.compute_relocation is before, "gsplat's ops are restored after each strategy call"


def lego_clip(size: int):
    """`posed/nerf_synthetic_lego_subset` as a Clip: GT cameras (Blender axes converted), RGBA
    resized to size² and composited on white, masks = alpha > 0.5.  (bench/splat.py uses it too;
    a NeRF-synthetic reader belongs in recon.ingest.)"""
    from PIL import Image

    from orbitforge.cameras import from_transforms_json
    from orbitforge.clip import Clip

    folder = data_path("posed/nerf_synthetic_lego_subset")
    cams, paths = from_transforms_json(folder / "transforms_train.json")
    frames, masks = [], []
    for path in paths:
        rgba = np.asarray(Image.open(folder / f"{path}.png").convert("RGBA").resize((size, size), Image.LANCZOS),
                          np.float32) / 255
        frames.append(np.round(255 * (rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:])).astype(np.uint8))
        masks.append(rgba[..., 3] > 0.5)
    return Clip(np.stack(frames), cams.resized(size, size), masks=np.stack(masks))


LEGO_STEPS = 1500


@pytest.mark.full
def test_lego_held_out_quality():
    """20 real NeRF-synthetic views (17 train, frames 0/8/16 held out), 200², known cameras,
    random init: measured 26.4 dB held-out PSNR (SSIM 0.909) at 1500 steps, ~22 min on a
    heavily shared 2-core machine; asserted with a 2 dB margin."""
    metrics = train_splats(lego_clip(200), SplatConfig(steps=LEGO_STEPS)).metrics
    assert metrics["held_out_frames"] == [0, 8, 16]
    assert metrics["psnr"] >= 24.4, metrics
