"""The splat trainer: it learns, resumes from its checkpoint, and reaches quality on real assets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orbitforge import builtin
from orbitforge.errors import InputError
from orbitforge.gaussians import load_ply, save_ply
from orbitforge.recon.splat.render import render_splats, resolve_backend
from orbitforge.recon.splat.trainer import SplatConfig, split_frames, train_splats
from orbitforge.render import OrbitConfig, render_orbit

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
    result = train_splats(toy_clip, config, progress=lambda s, stats: steps.append(stats))
    assert np.mean([s["psnr"] for s in steps[-20:]]) > np.mean([s["psnr"] for s in steps[:20]]) + 6
    assert result.metrics["psnr"] > 18 and result.metrics["held_out_frames"] == [0, 8]
    assert len(result.renders) == 2 and result.renders[0].shape == (48, 96, 3)
    save_ply(result.scene, tmp_path / "s.ply")
    assert load_ply(tmp_path / "s.ply").num_gaussians == result.scene.num_gaussians


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
