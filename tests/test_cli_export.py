"""`orbitforge export`: a run folder in, RUN/asset with validated files out; one line per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from orbitforge.cli import main
from orbitforge.gaussians import GaussianScene, save_ply
from orbitforge.rundir import RunDir
from orbitforge.validate import ValidatorUnavailableError, validate_glb

from conftest import data_path


@pytest.fixture
def validator_ok():
    try:
        validate_glb(b"glTF")
    except ValidatorUnavailableError as exc:
        pytest.skip(str(exc))


def _run_with_splats(root: Path) -> Path:
    """A run folder whose splats stage is done (a small random scene stands in for training)."""
    run = RunDir.open(root)
    g = torch.Generator().manual_seed(3)
    scene = GaussianScene(torch.randn(200, 3, generator=g) * 0.05, torch.randn(200, 3, generator=g) - 5,
                          torch.randn(200, 4, generator=g), torch.randn(200, generator=g) + 2,
                          torch.randn(200, 4, 3, generator=g) * 0.2)
    run.run_stage("splats", lambda tmp: save_ply(scene, tmp / "splats.ply") or {"gaussians": 200})
    return root


def test_export_writes_every_format_and_resumes(tmp_path, capsys, validator_ok):
    run = _run_with_splats(tmp_path / "run")
    avocado = data_path("assets/Avocado.glb")
    args = ["export", str(run), "--engine", "unreal", "--formats", "glb,usdz,usdc,ply,splat,khr", "--faces", "500",
            "--height", "0.2", "--mesh", str(avocado)]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "0 errors" in out
    asset = run / "asset"
    for name in ("asset.glb", "asset_lod1.glb", "asset_lod2.glb", "collision.glb", "asset.usdc", "asset.usdz",
                 "splats.ply", "splats.splat", "splats_khr.glb", "validation.json"):
        assert (asset / name).is_file(), name
    report = json.loads((asset / "validation.json").read_text())
    assert report["ok"] and report["config"]["engine"] == "unreal"
    manifest = json.loads((run / "run.json").read_text())
    metrics = manifest["stages"]["asset"]["metrics"]
    assert metrics["placement_usd"]["height_m"] == pytest.approx(0.2)
    assert metrics["lod_faces"][0] <= 500
    assert main(args) == 0
    assert "skipped" in capsys.readouterr().out


def test_splat_only_export(tmp_path, validator_ok):
    run = _run_with_splats(tmp_path / "run")
    assert main(["export", str(run), "--formats", "ply,splat,khr"]) == 0
    assert sorted(p.name for p in (run / "asset").iterdir()) == ["splats.ply", "splats.splat", "splats_khr.glb",
                                                                   "validation.json"]
    # the placement is recorded without a mesh too, so viewers can put the exported file back in the run's world
    from scipy.spatial import cKDTree

    from orbitforge.gaussians import load_ply
    from orbitforge.viewers.live import _placement_back_to_run

    rotation, scale, offset = _placement_back_to_run(run, splat_ply=True)
    exported = load_ply(run / "asset" / "splats.ply").means.numpy().astype(np.float64)
    original = load_ply(run / "splats" / "splats.ply").means.numpy().astype(np.float64)
    back = offset + scale * exported @ rotation.T
    distance, _ = cKDTree(original).query(back)
    assert distance.max() < 1e-4 * np.ptp(original, axis=0).max()


def test_mesh_from_the_clips_silhouettes(tmp_path, capsys, validator_ok):
    """`--from hull` needs no splats: a rendered clip straight to a validated GLB of its visual hull."""
    from orbitforge.cli import _build_parser
    from orbitforge.export.stage import MESH_SOURCES
    from orbitforge.mesh import load_meshes

    run = tmp_path / "run"
    assert main(["render-orbit", "builtin:globe", "-o", str(run), "--frames", "12", "--size", "64"]) == 0
    assert main(["export", str(run), "--from", "hull", "--formats", "glb", "--faces", "1500"]) == 0
    assert "0 errors" in capsys.readouterr().out
    stage = json.loads((run / "run.json").read_text())["stages"]["asset"]
    assert stage["config"]["mesh_source"] == "mesh_from_silhouettes" and stage["depends_on"] == ["clip"]
    (mesh,) = load_meshes(run / "asset" / "asset.glb")
    extent = np.ptp(mesh.vertices, axis=0)
    assert len(mesh.faces) <= 1500 and np.allclose(extent, extent.mean(), rtol=0.1)  # a ball, not a fragment
    # the parser takes every source the stage knows
    for source in MESH_SOURCES:
        assert _build_parser().parse_args(["export", str(run), "--from", source]).source == source


@pytest.mark.parametrize("args, message", [
    (["--formats", "glb,webp"], "unknown export format(s) webp"),
    (["--mesh", "/no/such/mesh.glb"], "mesh file not found"),
    (["--height", "-2", "--mesh", "MESH"], "--height must be a positive"),
    (["--formats", "ply", "--mesh", "MESH"], "no finished splats stage"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    mesh = str(data_path("assets/Avocado.glb"))
    code = main(["export", str(tmp_path / "run"), *[mesh if a == "MESH" else a for a in args]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_not_a_run_folder(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    assert "not a run folder" in capsys.readouterr().err


def test_validation_failure_is_loud_and_keeps_the_report(tmp_path, capsys, monkeypatch, validator_ok):
    from orbitforge.export import stage

    def broken(parts, name, config, extras=None):
        return b"glTF\x02\x00\x00\x00" + b"\x00" * 8  # a GLB header promising nothing
    monkeypatch.setattr(stage, "mesh_glb_bytes", broken)
    code = main(["export", str(tmp_path / "run"), "--formats", "glb", "--mesh", str(data_path("assets/Avocado.glb"))])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "failed validation" in err[0], err
    assert not (tmp_path / "run" / "asset").exists()
    report = json.loads((tmp_path / "run" / "asset.validation.json").read_text())
    assert report["errors"] >= 1 and not report["ok"]
