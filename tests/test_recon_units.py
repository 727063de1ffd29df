"""Small, exact checks of the pieces behind poses: normalisation, alignment, loop pairs."""

from __future__ import annotations

import numpy as np
import pytest

from orbitforge.cameras import Cameras, orbit
from orbitforge.recon.metrics import pose_errors
from orbitforge.recon.normalise import Similarity, look_at_centre, normalise_world, up_direction
from orbitforge.recon.poses import loop_closure_pairs


def random_similarity(seed: int) -> Similarity:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    q *= np.sign(np.linalg.det(q))
    return Similarity(float(rng.uniform(0.2, 5)), q, rng.normal(size=3) * 3)


@pytest.mark.parametrize("seed", range(5))
def test_normalisation_undoes_an_arbitrary_similarity(seed):
    truth = orbit(24, radius=3.0, elevation_deg=25, width=64, height=64)
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(500, 3)) * 0.3  # an object of radius ~0.6 at the origin
    sim = random_similarity(seed)
    moved, moved_points = sim.apply_cameras(truth), sim.apply_points(points)
    norm = normalise_world(moved, moved_points)
    back = norm.apply_cameras(moved)
    # centred, +Y up, object inside radius 1, first camera towards +Z: the orbit it started as,
    # up to the object-size scale
    np.testing.assert_allclose(look_at_centre(back), 0, atol=1e-9)
    np.testing.assert_allclose(-back.c2w[:, :3, 1].mean(0) / np.linalg.norm(back.c2w[:, :3, 1].mean(0)),
                               -truth.c2w[:, :3, 1].mean(0) / np.linalg.norm(truth.c2w[:, :3, 1].mean(0)), atol=1e-9)
    radius = np.percentile(np.linalg.norm(norm.apply_points(moved_points), axis=1), 95)
    np.testing.assert_allclose(radius, 1.0, rtol=1e-6)
    np.testing.assert_allclose(back.centres[0] / np.linalg.norm(back.centres[0]), truth.centres[0] / 3.0, atol=1e-9)


def test_rolled_photos_of_a_ring_still_stand_the_object_upright():
    """Portrait photos stored sideways (templeRing): every camera rolled 90 deg about its axis.
    The ring above the object decides up, not the cameras' own (sideways) up."""
    truth = orbit(24, radius=3.0, elevation_deg=25, width=64, height=64)
    roll = np.diag([1.0, 1.0, 1.0, 1.0])
    roll[:2, :2] = [[0.0, -1.0], [1.0, 0.0]]  # camera x <- y: a 90 deg roll about the optical axis
    rolled = Cameras(truth.K, truth.c2w @ roll, 64, 64)
    sim = random_similarity(3)
    back = normalise_world(sim.apply_cameras(rolled)).apply_cameras(sim.apply_cameras(rolled))
    # the ring is horizontal again (every camera at the same height) and above the object
    heights = back.centres[:, 1]
    np.testing.assert_allclose(heights, heights.mean(), atol=1e-9)
    assert heights.mean() > 0
    # the same rolled cameras on a ring through the object's centre (a vertical half ring over
    # it, each camera upright in the ring's plane) give no elevation to go by: their own up wins
    half = orbit(12, radius=3.0, elevation_deg=0, width=64, height=64, sweep_deg=180.0)
    over = Cameras(half.K, half.c2w @ roll, 64, 64)
    mean_up = -over.c2w[:, :3, 1].mean(0)
    np.testing.assert_allclose(up_direction(over), mean_up / np.linalg.norm(mean_up), atol=1e-9)


def test_metric_scale_wins():
    cams = orbit(8, radius=2.0, width=32, height=32)
    assert normalise_world(cams, metric_scale=0.01).scale == 0.01


def test_pose_errors_are_zero_after_a_similarity_and_catch_flips():
    truth = orbit(12, radius=3.0, elevation_deg=20, width=64, height=64)
    est = random_similarity(3).apply_cameras(truth)
    errors = pose_errors(est, truth)
    np.testing.assert_allclose(errors.rotation_deg, 0, atol=1e-4)
    np.testing.assert_allclose(errors.centre_error, 0, atol=1e-6)
    c2w = est.c2w.copy()
    flip = np.diag([-1.0, 1, -1])  # camera 5 turned round its up axis
    c2w[5, :3, :3] = c2w[5, :3, :3] @ flip
    errors = pose_errors(Cameras(est.K, c2w, 64, 64), truth)
    assert errors.rotation_deg[5] > 170 and np.delete(errors.rotation_deg, 5).max() < 1e-3


def test_loop_pairs_join_the_end_of_an_orbit_to_its_start():
    rng = np.random.default_rng(0)
    base = rng.random((10, 32))
    # 40 frames around an orbit: frame i looks like base[i // 4], and the last frames wrap round
    hist = np.stack([base[(i // 4) % 10] + 0.01 * rng.random(32) for i in range(36)] + [base[0] + 0.01 * rng.random(32)] * 4)
    hist /= np.linalg.norm(hist, axis=1, keepdims=True)
    names = [f"{i:05d}.png" for i in range(40)]
    pairs = loop_closure_pairs(names, hist, per_frame=2, min_gap=10)
    assert pairs, "no loop pairs found"
    for a, b in pairs:
        assert abs(int(a[:5]) - int(b[:5])) >= 10
    assert any(int(a[:5]) < 4 and int(b[:5]) >= 36 for a, b in pairs)


def test_a_non_positive_reprojection_filter_is_one_clear_line(tmp_path):
    from orbitforge.clip import Clip
    from orbitforge.errors import InputError
    from orbitforge.recon.poses import PosesConfig, estimate_poses

    clip = Clip(np.zeros((3, 16, 16, 3), np.uint8))
    with pytest.raises(InputError, match="filter_max_reprojection_px must be positive") as info:
        estimate_poses(clip, tmp_path, PosesConfig(filter_max_reprojection_px=0.0))
    assert "\n" not in str(info.value)
