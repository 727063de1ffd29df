"""Camera conventions: round trips between every frame, orbit geometry, rays, real poses."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orbitforge import cameras as C
from orbitforge.errors import InputError

from conftest import data_path

finite = st.floats(-10, 10, allow_nan=False)


@st.composite
def poses(draw, n_max: int = 6) -> np.ndarray:
    """Random (N, 4, 4) rigid camera-to-world transforms."""
    n = draw(st.integers(1, n_max))
    q = np.array(draw(st.lists(st.floats(-1, 1), min_size=4 * n, max_size=4 * n))).reshape(n, 4)
    q[np.linalg.norm(q, axis=1) < 1e-3] = [1, 0, 0, 0]
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    w, x, y, z = q.T
    R = np.stack([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]).transpose(2, 0, 1)
    c2w = np.tile(np.eye(4), (n, 1, 1))
    c2w[:, :3, :3] = R
    c2w[:, :3, 3] = np.array(draw(st.lists(finite, min_size=3 * n, max_size=3 * n))).reshape(n, 3)
    return c2w


@st.composite
def camera_sets(draw) -> C.Cameras:
    c2w = draw(poses())
    w, h = draw(st.integers(8, 2000)), draw(st.integers(8, 2000))
    f = draw(st.floats(10, 5000))
    K = np.array([[f, 0, draw(st.floats(0, w))], [0, f * draw(st.floats(0.5, 2)), draw(st.floats(0, h))], [0, 0, 1]])
    return C.Cameras(K, c2w, w, h)


@settings(max_examples=60, deadline=None)
@given(c2w=poses(), frame=st.sampled_from(sorted(C.FRAMES)))
def test_frame_round_trip(c2w, frame):
    there = C.c2w_to_frame(c2w, frame)
    np.testing.assert_allclose(C.c2w_from_frame(there, frame), c2w, atol=1e-9)
    # every frame's poses stay proper rotations, even in the left-handed engines
    assert np.allclose(np.linalg.det(there[:, :3, :3]), 1.0)
    pts = c2w[:, :3, 3]
    np.testing.assert_allclose(C.points_from_frame(C.points_to_frame(pts, frame), frame), pts, atol=1e-9)


@settings(max_examples=40, deadline=None)
@given(cams=camera_sets())
def test_transforms_json_round_trip(cams):
    data = json.loads(json.dumps(C.to_transforms_json(cams, [f"frames/{i:05d}.png" for i in range(len(cams))])))
    back, paths = C.from_transforms_json(data)
    np.testing.assert_allclose(back.c2w, cams.c2w, atol=1e-9)
    np.testing.assert_allclose(back.K, cams.K, atol=1e-9)
    assert (back.width, back.height) == (cams.width, cams.height)
    assert paths[0] == "frames/00000.png"


@settings(max_examples=40, deadline=None)
@given(cams=camera_sets())
def test_colmap_round_trip_in_memory(cams):
    back, names = C.from_colmap(C.to_colmap(cams, [f"{i:05d}.png" for i in range(len(cams))]))
    np.testing.assert_allclose(back.c2w, cams.c2w, atol=1e-9)
    np.testing.assert_allclose(back.K, cams.K, atol=1e-9)


def test_engine_frames_put_the_asset_the_right_way_up():
    # asset front (+Z), up (+Y) and right (-X, glTF) in orbitforge's world
    front, up, right = np.eye(3)[2], np.eye(3)[1], -np.eye(3)[0]
    np.testing.assert_allclose(C.points_to_frame(up, "unreal"), [0, 0, 100])  # +Z up, centimetres
    np.testing.assert_allclose(C.points_to_frame(front, "unreal"), [100, 0, 0])  # +X forward
    np.testing.assert_allclose(C.points_to_frame(right, "unreal"), [0, 100, 0])  # +Y right
    np.testing.assert_allclose(C.points_to_frame(up, "unity"), [0, 1, 0])
    np.testing.assert_allclose(C.points_to_frame(front, "unity"), [0, 0, 1])
    np.testing.assert_allclose(C.points_to_frame(up, "blender"), [0, 0, 1])


def test_engine_cameras_look_where_ours_look():
    c2w = C.look_at([0, 1, 4], [0, 1, 0])  # looking along -Z, level
    forward = np.array([0, 0, -1.0])
    gl = C.c2w_to_frame(c2w, "gltf")
    np.testing.assert_allclose(-gl[:3, 2], forward, atol=1e-12)  # glTF cameras look down -Z
    np.testing.assert_allclose(gl[:3, 1], [0, 1, 0], atol=1e-12)
    unity = C.c2w_to_frame(c2w, "unity")
    np.testing.assert_allclose(unity[:3, 2], C.points_to_frame(forward, "unity"), atol=1e-12)  # +Z forward
    ue = C.c2w_to_frame(c2w, "unreal")
    np.testing.assert_allclose(ue[:3, 0], C.points_to_frame(forward, "unreal") / 100, atol=1e-12)  # +X forward
    np.testing.assert_allclose(ue[:3, 2], [0, 0, 1], atol=1e-12)  # +Z up
    np.testing.assert_allclose(ue[:3, 3], [400, 0, 100], atol=1e-9)  # in front of the asset, 1 m up


def test_orbit_geometry():
    cams = C.orbit(12, radius=3.0, elevation_deg=30, fov_deg=50, width=64, height=48, target=(1, 2, 3))
    offsets = cams.centres - [1, 2, 3]
    np.testing.assert_allclose(np.linalg.norm(offsets, axis=1), 3.0)
    np.testing.assert_allclose(np.degrees(np.arcsin(offsets[:, 1] / 3.0)), 30.0)
    np.testing.assert_allclose(offsets[0] / np.linalg.norm(offsets[0]), [0, 0.5, np.sqrt(3) / 2], atol=1e-12)
    uv, z = cams.project([[1, 2, 3]])
    np.testing.assert_allclose(uv[:, 0], np.tile([32, 24], (12, 1)))  # target at the principal point
    above, _ = cams.project([[1, 2.5, 3]])
    assert (above[:, 0, 1] < 24).all(), "up in the world must be up in the image (smaller row)"
    np.testing.assert_allclose(cams.fov_y_deg, 50.0)
    # azimuth increases counter-clockwise seen from above: the second camera sits towards +X
    assert offsets[1, 0] > 0


def test_rays_pass_through_pixel_centres():
    cams = C.orbit(3, radius=2.0, width=7, height=5)
    origins, dirs = cams.rays()
    uv, z = cams.project((origins + 1.7 * dirs)[1].reshape(-1, 3))
    j, i = np.meshgrid(np.arange(5) + 0.5, np.arange(7) + 0.5, indexing="ij")
    np.testing.assert_allclose(uv[1].reshape(5, 7, 2), np.stack([i, j], -1), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(dirs, axis=-1), 1.0, atol=1e-6)


def test_plucker_moment_is_the_same_anywhere_on_the_ray():
    cams = C.orbit(2, radius=2.0, width=6, height=4)
    rays = C.plucker_rays(cams)
    assert rays.shape == (2, 4, 6, 6)
    origins, dirs = cams.rays()
    np.testing.assert_allclose(rays[..., 3:], np.cross(origins + 3.0 * dirs, dirs), atol=1e-5)
    np.testing.assert_allclose((rays[..., :3] * rays[..., 3:]).sum(-1), 0.0, atol=1e-5)


def test_nerf_synthetic_poses_land_in_our_world():
    path = data_path("posed/nerf_synthetic_lego_subset/transforms_train.json")
    cams, paths = C.from_transforms_json(path)
    assert len(cams) == 20 and (cams.width, cams.height) == (800, 800)
    # NeRF-synthetic cameras sit on the upper hemisphere (Blender +Z up) about 4 units out and
    # look at the origin: in our +Y-up world they must be above and see the origin near the centre.
    assert (cams.centres[:, 1] > 0).all()
    np.testing.assert_allclose(np.linalg.norm(cams.centres, axis=1), 4.03, atol=0.05)
    uv, z = cams.project([[0, 0, 0]])
    assert (z > 0).all()
    assert np.abs(uv[:, 0] - 400).max() < 40
    np.testing.assert_allclose(cams.K[0, 0, 0], 0.5 * 800 / np.tan(0.5 * 0.6911112070083618), rtol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_frames=0, radius=1.0), "at least 1 frame"),
        (dict(num_frames=4, radius=-1.0), "radius"),
        (dict(num_frames=4, radius=1.0, width=0), "at least 1x1"),
        (dict(num_frames=4, radius=1.0, width=100000), "limit"),
        (dict(num_frames=4, radius=1.0, fov_deg=180), "field of view"),
        (dict(num_frames=4, radius=1.0, elevation_deg=90), "elevation"),
    ],
)
def test_orbit_rejects_bad_settings(kwargs, message):
    with pytest.raises(InputError, match=message):
        C.orbit(**kwargs)


def test_cameras_reject_bad_poses():
    K = C.intrinsics_from_fov(40, 32, 32)
    bad = np.eye(4)
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="NaN"):
        C.Cameras(K, bad, 32, 32)
    with pytest.raises(InputError, match="proper rotations"):
        C.Cameras(K, np.diag([1.0, 1, -1, 1]), 32, 32)  # a mirror, e.g. a missed axis flip
    with pytest.raises(InputError, match="unknown frame"):
        C.c2w_to_frame(np.eye(4), "maya")
