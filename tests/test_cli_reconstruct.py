"""`orbitforge reconstruct`: ingest -> poses -> splats -> export in one run folder, end to end.

Small settings (a 96 px orbit, a 200 px photo set, a few hundred CPU steps) keep these in the
default suite; the quality of each stage is measured by its own tests and benches.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import trimesh
from scipy.spatial import cKDTree

from orbitforge.cli import main
from orbitforge.export.presets import Placement
from orbitforge.recon.stages import posed_clip
from orbitforge.rundir import RunDir

from conftest import data_path

pytestmark = pytest.mark.slow


def _validation(run) -> dict:
    return json.loads((run / "asset" / "validation.json").read_text())


def test_rendered_orbit_to_unity_asset_and_resume(tmp_path, capsys):
    run = tmp_path / "spot"
    assert main(["render-orbit", str(data_path("assets/spot/spot_textured.glb")), "-o", str(run),
                 "--frames", "24", "--size", "96"]) == 0
    args = ["reconstruct", str(run), "--steps", "300", "--faces", "4000", "--engine", "unity",
            "--formats", "glb,usdz", "--height", "0.8"]
    assert main(args) == 0
    assert "validation 0 errors" in capsys.readouterr().out and _validation(run)["errors"] == 0
    for name in ("asset.glb", "asset_lod1.glb", "collision.glb", "asset.usdz", "validation.json"):
        assert (run / "asset" / name).is_file(), name
    for name in ("asset_turntable.gif", "asset_sheet.png", "camera_path.png"):
        assert (run / "preview" / name).is_file(), name
    mesh = trimesh.load(run / "asset" / "asset.glb", force="mesh")
    lo, hi = mesh.bounds
    assert 1000 <= len(mesh.faces) <= 4000
    assert hi[1] - lo[1] == pytest.approx(0.8, rel=1e-3) and abs(lo[1]) < 1e-4  # --height, standing on y = 0
    assert np.abs((lo + hi)[[0, 2]] / 2).max() < 0.05  # pivot at the bottom centre
    # every stage is recorded, and a second run redoes nothing
    stages = json.loads((run / "run.json").read_text())["stages"]
    assert all(stages[s]["status"] == "done" for s in ("clip", "poses", "splats", "asset"))
    assert main(args) == 0
    assert capsys.readouterr().out.count("already complete, skipped") == 3


def test_real_photos_to_validated_glb_and_usdz(tmp_path, capsys):
    """Middlebury templeRing: 47 real photos, unknown cameras."""
    run = tmp_path / "temple"
    code = main(["reconstruct", str(data_path("multiview/middlebury_templeRing")), "-o", str(run),
                 "--max-side", "200", "--steps", "150", "--faces", "3000", "--formats", "glb,usdz,ply"])
    assert code == 0, capsys.readouterr().err
    report = _validation(run)
    assert report["ok"] and report["errors"] == 0
    assert {f["file"] for f in report["files"]} >= {"asset.glb", "asset.usdz"}
    poses = json.loads((run / "poses" / "report.json").read_text())
    assert poses["registered"] >= 45
    # the photos stand on a black backdrop: splats trained against it (the default, the frames'
    # border colour) score 25 dB at 150 steps; against white they painted it in (14.6 dB) and
    # the mesh became a slab of backdrop or a 34-face fragment
    splats = json.loads((run / "splats" / "eval.json").read_text())
    assert splats["background"] == [0.0, 0.0, 0.0]
    assert splats["psnr"] >= 20.0
    # the GLB is the temple: SfM's sparse points (on its surface) lie on the mesh, and the mesh on them
    mesh = trimesh.load(run / "asset" / "asset.glb", force="mesh")
    placement = Placement.from_json(json.loads((run / "run.json").read_text())["stages"]["asset"]["metrics"]["placement_gltf"])
    mesh.apply_transform(placement.file_to_world())
    points = posed_clip(RunDir(run))[1]  # the poses stage's sparse points, in the world the mesh is in
    size = np.linalg.norm(np.subtract(*np.percentile(points, [98, 2], axis=0)))
    surface = mesh.sample(50_000)  # ~1% of the size apart: nearest samples stand in for the surface
    near_mesh = cKDTree(surface).query(points)[0] < 0.05 * size
    near_points = cKDTree(points).query(surface)[0] < 0.05 * size
    assert len(mesh.faces) >= 1000
    assert near_mesh.mean() >= 0.8, f"{near_mesh.mean():.0%} of the sparse points lie on the mesh"  # measured 94%
    assert near_points.mean() >= 0.7, f"{near_points.mean():.0%} of the mesh lies near the sparse points"  # 89%


def test_missing_input_is_one_line(tmp_path, capsys):
    assert main(["reconstruct", str(tmp_path / "no_such_video.mp4"), "-o", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "input not found" in err[0]


def test_bad_export_options_fail_before_any_work(tmp_path, capsys):
    video_dir = data_path("multiview/middlebury_templeRing")
    assert main(["reconstruct", str(video_dir), "-o", str(tmp_path / "run"), "--formats", "glb,webp"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "webp" in err[0]
    assert not (tmp_path / "run").exists()


def test_splats_refine_sfm_cameras_and_write_them_for_the_clip_frames(tmp_path, capsys):
    """`splat --refine-cameras` on a poses run: the refined cameras go to splats/transforms.json
    for the clip stage's frames, with the lens COLMAP found (the splats trained on undistorted
    copies), and eval.json says how far the cameras moved."""
    rendered, run = tmp_path / "rendered", tmp_path / "video"
    assert main(["render-orbit", str(data_path("assets/spot/spot_textured.glb")), "-o", str(rendered),
                 "--frames", "36", "--size", "128"]) == 0
    assert main(["poses", str(rendered / "clip" / "clip.mp4"), "-o", str(run), "--frames", "36"]) == 0
    assert main(["splat", str(run), "--steps", "300", "--sh-degree", "1", "--refine-cameras"]) == 0
    metrics = json.loads((run / "splats" / "eval.json").read_text())
    assert metrics["camera_refinement"]["max_rotation_deg"] > 0
    poses = json.loads((run / "poses" / "transforms.json").read_text())
    refined = json.loads((run / "splats" / "transforms.json").read_text())
    assert [f["file_path"] for f in refined["frames"]] == [f["file_path"] for f in poses["frames"]]
    assert refined["k1"] == poses["k1"] and (refined["w"], refined["h"]) == (128, 128)
    assert refined["fl_x"] != poses["fl_x"]  # the learnt focal scale
    moved = [np.abs(np.subtract(a["transform_matrix"], b["transform_matrix"])).max()
             for a, b in zip(refined["frames"], poses["frames"])]
    assert max(moved) > 1e-4
