"""MeshAsset IO through trimesh: real assets load right, bad files fail in one line."""

from __future__ import annotations

import numpy as np
import pytest

from orbitforge import builtin
from orbitforge.errors import InputError
from orbitforge.mesh import MeshAsset, bounding_sphere, load_meshes, load_meshes_from_glb_bytes, to_glb_bytes

from conftest import data_path


def test_spot_glb_loads_with_its_texture(spot_glb):
    (spot,) = load_meshes(spot_glb)
    assert spot.faces.shape == (5856, 3)
    assert spot.base_colour is not None and spot.base_colour.shape[:2] == (1024, 1024)
    assert spot.uvs.shape == (len(spot.vertices), 2)
    assert ((spot.uvs >= 0) & (spot.uvs <= 1)).all(axis=1).mean() > 0.99  # the source has a few UVs just below 0


def test_avocado_keeps_its_centimetre_scale():
    (avocado,) = load_meshes(data_path("assets/Avocado.glb"))
    centre, radius = bounding_sphere([avocado])
    assert 0.02 < radius < 0.06  # about 6 cm tall, in metres


def test_obj_without_material_loads():
    (teapot,) = load_meshes(data_path("assets/teapot.obj"))
    assert len(teapot.faces) == 6320 and teapot.base_colour is None


@pytest.mark.parametrize("name", builtin.NAMES)
def test_builtin_glb_round_trip(name):
    parts = builtin.load(name)
    back = load_meshes_from_glb_bytes(to_glb_bytes(parts))
    assert len(back) == len(parts)
    for a, b in zip(sorted(parts, key=lambda p: p.name), sorted(back, key=lambda p: p.name)):
        np.testing.assert_allclose(np.sort(a.vertices, axis=0), np.sort(b.vertices, axis=0), atol=1e-6)
        assert len(a.faces) == len(b.faces)
        assert (a.base_colour is None) == (b.base_colour is None)


def test_globe_is_the_benchmark_mesh():
    (globe,) = builtin.load("globe")
    assert len(globe.faces) == 10_000


def test_bad_mesh_files_fail_in_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_meshes(tmp_path / "missing.glb")
    with pytest.raises(InputError, match="is a folder"):
        load_meshes(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match="unsupported type"):
        load_meshes(tmp_path / "notes.txt")
    (tmp_path / "broken.glb").write_bytes(b"glTF\x02\x00\x00\x00garbage")
    with pytest.raises(InputError, match="could not read"):
        load_meshes(tmp_path / "broken.glb")
    (tmp_path / "points.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    with pytest.raises(InputError, match="no triangle faces"):
        load_meshes(tmp_path / "points.obj")
    for err in (InputError,):
        with pytest.raises(err) as info:
            load_meshes(tmp_path / "broken.glb")
        assert "\n" not in str(info.value)


def test_mesh_asset_validates_its_arrays():
    with pytest.raises(InputError, match="no triangle faces"):
        MeshAsset(np.zeros((3, 3)), np.zeros((0, 3)))
    with pytest.raises(InputError, match="out of range"):
        MeshAsset(np.zeros((3, 3)), [[0, 1, 3]])
    with pytest.raises(InputError, match="NaN"):
        MeshAsset([[0, 0, np.nan], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]])
    with pytest.raises(InputError, match="no UVs"):
        MeshAsset(np.eye(3), [[0, 1, 2]], base_colour=np.zeros((2, 2, 3), np.uint8))
