"""Camera poses on real and rendered data, against ground truth (skips without ../shared/data)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orbitforge.cameras import Cameras, from_colmap, from_transforms_json
from orbitforge.clip import Clip
from orbitforge.recon.ingest import ingest
from orbitforge.recon.metrics import pose_errors
from orbitforge.recon.poses import PosesConfig, estimate_poses, write_outputs

from conftest import data_path

pytestmark = pytest.mark.slow


def middlebury_cameras(par_file) -> tuple[list[str], Cameras]:
    """Middlebury `*_par.txt`: per image `name K(9) R(9) t(3)`, P = K [R | t], OpenCV axes."""
    names, Ks, c2ws = [], [], []
    for line in par_file.read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) != 22:
            continue
        values = np.array(fields[1:], dtype=np.float64)
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = values[9:18].reshape(3, 3), values[18:21]
        names.append(fields[0])
        Ks.append(values[:9].reshape(3, 3))
        c2ws.append(np.linalg.inv(w2c))
    return names, Cameras(np.array(Ks), np.array(c2ws), 640, 480)


@pytest.fixture(scope="module")
def temple():
    folder = data_path("multiview/middlebury_templeRing")
    names, truth = middlebury_cameras(folder / "templeR_par.txt")
    return ingest(folder), names, truth


def _truth_for(result, got, names, truth) -> Cameras:
    order = [names.index(got.names[i]) for i in result.report["registered_frames"]]
    return truth[order]


@pytest.mark.parametrize("known_intrinsics", [True, False], ids=["known-K", "unknown-K"])
def test_temple_ring(temple, known_intrinsics, tmp_path):
    got, names, truth = temple
    K = truth.K[0] if known_intrinsics else None
    result = estimate_poses(got.clip, tmp_path, PosesConfig(), intrinsics=K)
    report = result.report
    assert result.problem is None
    assert report["registered"] >= 45
    assert report["mean_reprojection_px"] <= 0.6
    errors = pose_errors(result.clip.cameras, _truth_for(result, got, names, truth))
    median = float(np.median(errors.rotation_deg))
    # measured 0.14-0.23 (known K) and 0.54-0.63 (unknown K) with affine SIFT and the 1 px filter
    assert median <= (0.35 if known_intrinsics else 1.0), f"median rotation error {median:.3f} deg"
    if not known_intrinsics:
        focal = result.clip.cameras.K[0, 0, 0]
        assert abs(focal / truth.K[0, 0, 0] - 1) <= 0.05, f"focal {focal:.1f} vs {truth.K[0, 0, 0]:.1f}"
    # the normalised world: object at the origin inside radius ~1, cameras looking at it
    centres = result.clip.cameras.centres
    assert np.linalg.norm(np.median(centres, axis=0)) < 0.5 * np.median(np.linalg.norm(centres, axis=1))
    assert report["normalisation"]["scale"] > 0
    # upright although the photos are stored sideways: the ring is level and above the temple
    # (measured: heights 0.398 +- 0.003 at radius 2.97, 7.6 deg of elevation)
    heights, radii = centres[:, 1], np.linalg.norm(centres[:, [0, 2]], axis=1)
    assert heights.std() < 0.02 * radii.mean() and heights.mean() > 0.05 * radii.mean()


def test_kermit_uses_exif_focal(tmp_path):
    got = ingest(data_path("multiview/bundler_kermit"))
    assert got.focal_px is not None
    result = estimate_poses(got.clip, tmp_path, PosesConfig(), focal_px=got.focal_px)
    assert result.report["registered"] >= 10
    refined = result.clip.cameras.K[0, 0, 0]
    assert abs(got.focal_px / refined - 1) <= 0.15, f"EXIF {got.focal_px:.1f} px vs refined {refined:.1f} px"


def _lego_clip() -> Clip:
    from PIL import Image

    folder = data_path("posed/nerf_synthetic_lego_subset")
    cams, paths = from_transforms_json(folder / "transforms_train.json")
    frames = []
    for path in paths:
        rgba = np.asarray(Image.open(folder / f"{path}.png").convert("RGBA"), np.float32) / 255
        frames.append(np.round(255 * (rgba[..., :3] * rgba[..., 3:] + 1 - rgba[..., 3:])).astype(np.uint8))
    return Clip(np.stack(frames), cams)


def test_lego_flips_are_detected_not_reported_as_success(tmp_path):
    """A near-symmetric object: SfM finds a self-consistent but partly flipped solution.  With
    known cameras, orbitforge measures how many SfM cameras are right and reports a problem."""
    clip = _lego_clip()
    result = estimate_poses(clip, tmp_path, PosesConfig(verify_known=True))
    verify = result.report["verify"]
    right = verify["cameras_within_2_deg"]
    # runs repeat exactly: 9 of 20 registered, 8 of them right (mapper, matching and SIFT settings
    # tried: a 4 px filter, 15-inlier registration and guided matching all stay at 8 right)
    assert 5 <= right <= verify["registered"] < 12
    assert result.problem is not None and f"only {right} of 20 cameras were recovered" in result.problem
    # triangulation from the known cameras still gives usable seed points
    assert result.report["points"] >= 300 and result.report["mean_reprojection_px"] <= 1.0


@pytest.fixture(scope="module")
def spot_orbit(tmp_path_factory):
    from orbitforge.mesh import load_meshes
    from orbitforge.render import OrbitConfig, render_orbit

    parts = load_meshes(data_path("assets/spot/spot_textured.glb"))
    clip = render_orbit(parts, OrbitConfig(frames=48, size=256, elevation_deg=20))
    folder = tmp_path_factory.mktemp("spot")
    clip.save(folder)
    return clip, folder / "clip.mp4"


def test_spot_orbit_video_through_ingest(spot_orbit, tmp_path):
    truth, video = spot_orbit
    got = ingest(video)
    assert len(got.clip) == 48 and list(got.source_indices) == list(range(48))
    result = estimate_poses(got.clip, tmp_path, PosesConfig())
    assert result.report["registered"] == 48, result.problem
    errors = pose_errors(result.clip.cameras, truth.cameras[got.source_indices[result.report["registered_frames"]]])
    # measured 0.46-0.59 deg median over 5 runs (max 0.95-1.3) with affine SIFT and the 1 px
    # mapping filter; 1.05-1.7 with COLMAP's defaults.  The 0.3 is below what these
    # features allow: bundle adjustment started AT the true cameras with the true K settles
    # 0.42-0.48 deg away (SIFT on the silhouettes of a 256 px render); `refine` gets there (next test).
    median = float(np.median(errors.rotation_deg))
    assert median <= 0.8, f"median rotation error {median:.3f} deg"
    assert (errors.rotation_deg <= 2.5).all(), f"max rotation error {errors.rotation_deg.max():.2f} deg"
    # a second run repeats the first exactly (images numbered in name order, seeded RANSAC,
    # single-threaded matching, every COLMAP step in a fresh process): before, the same video gave
    # medians of 0.52-1.05 deg and maxima of 0.96-2.91 over 12 runs
    again = estimate_poses(got.clip, tmp_path / "again", PosesConfig())
    np.testing.assert_array_equal(again.clip.cameras.c2w, result.clip.cameras.c2w)


def test_spot_orbit_cameras_refined_against_the_pixels(spot_orbit, tmp_path):
    """The issue's 0.3 deg on the Spot video: SIFT alone stops at ~0.6 deg (see above); fitting
    splats and camera corrections to every frame together (`--refine`) gets below."""
    truth, video = spot_orbit
    got = ingest(video)
    result = estimate_poses(got.clip, tmp_path, PosesConfig(refine=True))
    assert result.report["registered"] == 48, result.problem
    errors = pose_errors(result.clip.cameras, truth.cameras[got.source_indices[result.report["registered_frames"]]])
    median = float(np.median(errors.rotation_deg))
    refinement = result.report["refinement"]
    # measured 0.24 deg median (max 0.86) with refinement, against 0.59 (max 1.18) from COLMAP alone;
    # 0.18-0.24 over the refinement's settings tried at this size (see recon/refine.py)
    assert median <= 0.3, f"median rotation error {median:.3f} deg ({refinement})"
    assert (errors.rotation_deg <= 1.2).all(), f"max rotation error {errors.rotation_deg.max():.2f} deg"
    assert refinement["median_rotation_change_deg"] > 0.1 and "refinement" in result.report["seconds"]
    # the refined cameras stay in the SfM world (COLMAP's model in sparse/0, normalised): the
    # splats' drift during the fit is taken out, so SfM points and refined cameras still agree
    sfm, _ = from_colmap(tmp_path / "sparse" / "0")
    shift = np.linalg.norm(sfm.centres - result.clip.cameras.centres, axis=1)
    assert np.median(shift) < 0.02 * np.median(np.linalg.norm(sfm.centres, axis=1)), np.median(shift)


def test_spot_orbit_with_sequential_matching_closes_the_loop(spot_orbit, tmp_path):
    """Sequential matching (what "auto" picks for long videos) plus bag-of-words loop pairs: the
    pairs join the orbit's last frames to its first, and the cameras come out as right as with
    exhaustive matching (measured 0.60 deg median)."""
    truth, video = spot_orbit
    got = ingest(video)
    result = estimate_poses(got.clip, tmp_path, PosesConfig(matching="sequential"))
    assert result.report["matching"] == "sequential" and result.report["registered"] == 48, result.problem
    pairs = [tuple(int(name[:5]) for name in line.split()) for line in (tmp_path / "loop_pairs.txt").read_text().splitlines()]
    across_the_seam = [(i, j) for i, j in pairs if j - i > 24 and 48 - (j - i) <= 6]
    assert len(across_the_seam) >= 10, pairs
    errors = pose_errors(result.clip.cameras, truth.cameras[got.source_indices[result.report["registered_frames"]]])
    assert float(np.median(errors.rotation_deg)) <= 0.8 and (errors.rotation_deg <= 2.5).all()


def test_spot_known_camera_triangulation(spot_orbit, tmp_path):
    truth, _ = spot_orbit
    said = []
    result = estimate_poses(truth, tmp_path, PosesConfig(refine=True), status=said.append)
    assert result.problem is None
    assert any("not refined" in line for line in said), said  # --refine on known cameras says why it does nothing
    np.testing.assert_array_equal(result.clip.cameras.c2w, truth.cameras.c2w)
    assert result.report["points"] >= 1000
    assert result.report["mean_reprojection_px"] <= 1.0
    write_outputs(result, tmp_path)
    transforms = json.loads((tmp_path / "transforms.json").read_text())
    assert len(transforms["frames"]) == 48
    assert (tmp_path / "camera_path.png").is_file() and (tmp_path / "sparse" / "0" / "points3D.bin").is_file()


# ---------------------------------------------------------------------------------------------
# bad input: one line saying what happened and what to try
# ---------------------------------------------------------------------------------------------


def _write_video(path, frames):
    from orbitforge.video import write_video

    write_video(path, np.asarray(frames, np.uint8), fps=10)
    return path


@pytest.mark.parametrize("case", ["garbage", "empty", "truncated", "one-frame", "black", "textureless-images",
                                  "mixed-sizes", "missing", "not-media"])
def test_bad_input_is_one_clear_line(case, tmp_path):
    from PIL import Image

    from orbitforge.errors import InputError

    rng = np.random.default_rng(0)
    textured = rng.integers(0, 255, (12, 64, 64, 3))
    if case == "garbage":
        path = tmp_path / "v.mp4"
        path.write_bytes(b"\x00not a video" * 100)
        expect = "cannot read video"
    elif case == "empty":
        path = tmp_path / "v.mp4"
        path.write_bytes(b"")
        expect = "cannot read video"
    elif case == "truncated":
        full = _write_video(tmp_path / "full.mp4", textured)
        path = tmp_path / "v.mp4"
        path.write_bytes(full.read_bytes()[:600])
        expect = "video"
    elif case == "one-frame":
        path = _write_video(tmp_path / "v.mp4", textured[:1])
        expect = "need at least 3"
    elif case == "black":
        path = _write_video(tmp_path / "v.mp4", np.zeros((12, 64, 64, 3)))
        expect = "textureless"
    elif case == "textureless-images":
        path = tmp_path / "imgs"
        path.mkdir()
        for i in range(4):
            Image.fromarray(np.full((48, 48, 3), 128, np.uint8)).save(path / f"{i}.png")
        expect = "textureless"
    elif case == "mixed-sizes":
        path = tmp_path / "imgs"
        path.mkdir()
        for i, size in enumerate((48, 48, 64)):
            Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path / f"{i}.png")
        expect = "different sizes"
    elif case == "missing":
        path, expect = tmp_path / "nothing.mp4", "not found"
    else:
        path = tmp_path / "notes.txt"
        path.write_text("hi")
        expect = "neither a video"
    with pytest.raises(InputError) as info:
        ingest(path)
    message = str(info.value)
    assert expect in message and "\n" not in message


def test_unmatchable_frames_report_a_problem_and_keep_the_report(tmp_path):
    """Random noise frames share no structure: the stage says so, and report.json stays."""
    rng = np.random.default_rng(1)
    clip = Clip(rng.integers(0, 255, (6, 96, 96, 3), dtype=np.uint8))
    result = estimate_poses(clip, tmp_path, PosesConfig())
    assert result.problem is not None
    assert any(word in result.problem for word in ("registered", "matched"))
    assert "try" in result.problem or "texture" in result.problem
    write_outputs(result, tmp_path)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["problem"] == result.problem and "seconds" in report


def test_a_failing_colmap_step_is_one_line_naming_the_step_and_its_log(tmp_path):
    """COLMAP runs in a process of its own: when it stops, the user's process gets one line with
    COLMAP's own reason and the path of the full log, not a crash."""
    from orbitforge.errors import StageError
    from orbitforge.recon.poses import run_step

    with pytest.raises(StageError) as caught:
        run_step("map", tmp_path, db=tmp_path / "no.db", images=tmp_path, out=tmp_path / "model",
                 config=PosesConfig(), fixed_intrinsics=False)
    message = str(caught.value)
    assert "\n" not in message and "COLMAP stopped during map" in message
    assert "no.db" in message and "does not exist" in message  # COLMAP's reason, from its log
    assert str(tmp_path / "colmap.log") in message and (tmp_path / "colmap.log").is_file()
    assert not list(tmp_path.glob(".colmap_*"))  # job and result files are cleaned up
