"""GaussianScene validation, point-cloud init and the INRIA-layout PLY round trip."""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path

import numpy as np
import plyfile
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from torch.testing import assert_close

from orbitforge.errors import InputError
from orbitforge.gaussians import (
    SH_C0,
    GaussianScene,
    _knn_mean_dist,
    _reference_knn_mean_dist,
    load_ply,
    rgb_to_sh,
    save_ply,
    sh_to_rgb,
    to_ply_bytes,
)

FIELDS = ("means", "log_scales", "quats_wxyz", "logit_opacities", "sh")


def _random_scene(n: int, sh_degree: int, seed: int = 0) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    return GaussianScene(
        means=torch.randn(n, 3, generator=g),
        log_scales=torch.randn(n, 3, generator=g) - 3.0,
        quats_wxyz=torch.randn(n, 4, generator=g),
        logit_opacities=torch.randn(n, generator=g),
        sh=torch.randn(n, k, 3, generator=g),
    )


def _assert_scenes_equal(a: GaussianScene, b: GaussianScene, **tol) -> None:
    for name in FIELDS:
        assert_close(getattr(a, name), getattr(b, name), **tol)


def _write_vertex_ply(path: Path, columns: dict[str, np.ndarray]) -> None:
    rows = np.empty(len(next(iter(columns.values()))), dtype=[(n, "<f4") for n in columns])
    for name, values in columns.items():
        rows[name] = values
    plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex")], byte_order="<").write(str(path))


def _columns_of(scene: GaussianScene) -> dict[str, np.ndarray]:
    vertex = plyfile.PlyData.read(io.BytesIO(to_ply_bytes(scene)))["vertex"]
    return {p.name: np.asarray(vertex[p.name]) for p in vertex.properties}


# --- round trip and layout ---------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 1, 37])
@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_round_trip_is_exact(tmp_path, sh_degree, n):
    scene = _random_scene(n, sh_degree)
    path = tmp_path / "scene.ply"
    save_ply(scene, path)
    loaded = load_ply(path)
    assert loaded.sh_degree == sh_degree and loaded.num_gaussians == n
    _assert_scenes_equal(loaded, scene, rtol=0, atol=0)  # float32 stored as float32: bit exact


def test_methods_delegate_and_save_leaves_no_temp_files(tmp_path):
    path = tmp_path / "scene.ply"
    path.write_bytes(b"old contents")
    scene = _random_scene(5, 2)
    scene.save_ply(path)
    _assert_scenes_equal(GaussianScene.load_ply(path), scene, rtol=0, atol=0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["scene.ply"]


def test_written_property_order_and_format(tmp_path):
    path = tmp_path / "scene.ply"
    save_ply(_random_scene(3, 1), path)
    ply = plyfile.PlyData.read(str(path))
    assert ply.byte_order == "<" and not ply.text
    assert [el.name for el in ply.elements] == ["vertex"]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                + [f"f_rest_{i}" for i in range(9)]
                + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    vertex = ply["vertex"]
    assert [p.name for p in vertex.properties] == expected
    assert all(vertex.data.dtype[name] == np.dtype("<f4") for name in expected)
    for normal in ("nx", "ny", "nz"):
        assert np.all(vertex[normal] == 0)


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_f_rest_count_follows_degree(sh_degree):
    names = _columns_of(_random_scene(2, sh_degree)).keys()
    assert sum(name.startswith("f_rest_") for name in names) == 3 * ((sh_degree + 1) ** 2 - 1)


def test_f_rest_is_channel_major():
    # sh[0, k, c] = 10 * c + k: red coefficients 1..3 must come first, then green, then blue.
    k = torch.arange(4, dtype=torch.float32)[:, None]
    c = torch.arange(3, dtype=torch.float32)[None, :]
    scene = _random_scene(1, 1)
    scene = GaussianScene(scene.means, scene.log_scales, scene.quats_wxyz,
                          scene.logit_opacities, (10 * c + k)[None])
    cols = _columns_of(scene)
    assert [float(cols[f"f_dc_{i}"][0]) for i in range(3)] == [0, 10, 20]
    assert [float(cols[f"f_rest_{i}"][0]) for i in range(9)] == [1, 2, 3, 11, 12, 13, 21, 22, 23]
    # Opacity/scales/rotation are stored raw (logit, log, wxyz), as the INRIA trainer does.
    assert float(cols["opacity"][0]) == float(scene.logit_opacities[0])
    assert [float(cols[f"rot_{i}"][0]) for i in range(4)] == scene.quats_wxyz[0].tolist()


def test_load_accepts_shuffled_property_order(tmp_path):
    scene = _random_scene(6, 3)
    cols = _columns_of(scene)
    names = list(cols)
    np.random.default_rng(0).shuffle(names)
    path = tmp_path / "shuffled.ply"
    _write_vertex_ply(path, {name: cols[name] for name in names})
    _assert_scenes_equal(load_ply(path), scene, rtol=0, atol=0)


def test_load_accepts_float64_and_no_normals(tmp_path):
    scene = _random_scene(4, 0)
    cols = {k: v for k, v in _columns_of(scene).items() if k not in ("nx", "ny", "nz")}
    rows = np.empty(4, dtype=[(n, "<f8") for n in cols])
    for name, values in cols.items():
        rows[name] = values
    path = tmp_path / "f64.ply"
    plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex")]).write(str(path))
    _assert_scenes_equal(load_ply(path), scene, rtol=0, atol=0)


# --- NaN handling ------------------------------------------------------------------------------


def test_nan_rows_are_dropped_with_warning(tmp_path, caplog):
    scene = _random_scene(5, 1)
    scene.means[1, 0] = float("nan")
    scene.sh[3, 2, 1] = float("inf")
    path = tmp_path / "scene.ply"
    with caplog.at_level(logging.WARNING, logger="orbitforge.gaussians"):
        save_ply(scene, path)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "Dropped 2 of 5" in warnings[0].getMessage()
    loaded = load_ply(path)
    keep = torch.tensor([0, 2, 4])
    for name in FIELDS:
        assert_close(getattr(loaded, name), getattr(scene, name)[keep], rtol=0, atol=0)


def test_finite_scene_logs_nothing(tmp_path, caplog):
    with caplog.at_level(logging.DEBUG, logger="orbitforge.gaussians"):
        save_ply(_random_scene(3, 0), tmp_path / "scene.ply")
    assert caplog.records == []


# --- bad inputs --------------------------------------------------------------------------------


def test_load_missing_file(tmp_path):
    with pytest.raises(InputError, match="missing path .*nope.ply"):
        load_ply(tmp_path / "nope.ply")


@pytest.mark.parametrize("data", [b"", b"\x00\xffgarbage" * 20, b"ply\nformat ascii 1.0\nbogus\n"])
def test_load_non_ply(tmp_path, data):
    path = tmp_path / "garbage.ply"
    path.write_bytes(data)
    with pytest.raises(InputError, match="expected a PLY file") as info:
        load_ply(path)
    assert "\n" not in str(info.value)


def test_load_ply_missing_opacity_names_it(tmp_path):
    cols = _columns_of(_random_scene(2, 1))
    del cols["opacity"], cols["rot_3"]
    path = tmp_path / "no_opacity.ply"
    _write_vertex_ply(path, cols)
    with pytest.raises(InputError, match="opacity, rot_3$"):
        load_ply(path)


def test_load_ply_with_gap_in_f_rest_names_it(tmp_path):
    cols = _columns_of(_random_scene(2, 1))
    cols["f_rest_20"] = cols.pop("f_rest_4")
    path = tmp_path / "gap.ply"
    _write_vertex_ply(path, cols)
    with pytest.raises(InputError, match="f_rest_4$"):
        load_ply(path)


def test_load_ply_with_bad_f_rest_count(tmp_path):
    cols = _columns_of(_random_scene(2, 1))
    del cols["f_rest_8"]
    path = tmp_path / "odd.ply"
    _write_vertex_ply(path, cols)
    with pytest.raises(InputError, match=r"f_rest_\* count .*found 8"):
        load_ply(path)


def test_save_into_missing_folder(tmp_path):
    with pytest.raises(InputError, match="existing folder"):
        save_ply(_random_scene(1, 0), tmp_path / "missing" / "scene.ply")


def _replace(scene: GaussianScene, **changes) -> dict:
    return {name: changes.get(name, getattr(scene, name)) for name in FIELDS}


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"means": torch.zeros(4, 2)}, r"means: expected shape \(N, 3\)"),
        ({"log_scales": torch.zeros(3, 3)}, r"log_scales: expected shape \(4, 3\).*got \(3, 3\)"),
        ({"quats_wxyz": torch.zeros(4, 3)}, r"quats_wxyz: expected shape \(4, 4\)"),
        ({"logit_opacities": torch.zeros(4, 1)}, r"logit_opacities: expected shape \(4,\)"),
        ({"sh": torch.zeros(4, 5, 3)}, r"sh: expected shape \(4, 'K', 3\) with K in"),
        ({"sh": torch.zeros(4, 3)}, r"sh: expected shape"),
        ({"means": torch.zeros(4, 3, dtype=torch.float64)}, "means: expected float32"),
        ({"sh": np.zeros((4, 1, 3), np.float32)}, "sh: expected a torch.Tensor, got ndarray"),
        ({"sh": torch.zeros(4, 1, 3, device="meta")}, "expected all tensors on one device"),
    ],
)
def test_constructor_rejects_inconsistent_fields(changes, match):
    with pytest.raises(InputError, match=match) as info:
        GaussianScene(**_replace(_random_scene(4, 0), **changes))
    assert "\n" not in str(info.value)


# --- properties, device, init from points ------------------------------------------------------


def test_derived_properties():
    scene = _random_scene(7, 2)
    assert scene.num_gaussians == 7 and scene.sh_degree == 2
    assert_close(scene.opacities, torch.sigmoid(scene.logit_opacities))
    assert_close(scene.scales, torch.exp(scene.log_scales))


def test_to_returns_new_scene_on_device():
    scene = _random_scene(3, 1)
    moved = scene.to("meta")  # any non-CPU device proves every field moves; no GPU needed
    assert moved is not scene and all(getattr(moved, f).device.type == "meta" for f in FIELDS)
    assert all(getattr(scene, f).device.type == "cpu" for f in FIELDS)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_cuda_and_back_round_trips():
    scene = _random_scene(3, 3)
    _assert_scenes_equal(scene.to("cuda").to("cpu"), scene, rtol=0, atol=0)


def test_rgb_sh_helpers_are_inverse():
    rgb = torch.rand(10, 3, generator=torch.Generator().manual_seed(1))
    assert_close(sh_to_rgb(rgb_to_sh(rgb)), rgb)
    assert_close(rgb_to_sh(torch.tensor([0.5])), torch.tensor([0.0]))
    assert_close(sh_to_rgb(torch.tensor([1.0])), torch.tensor([0.5 + SH_C0]))


@pytest.mark.parametrize("sh_degree", [0, 3])
def test_from_points_colours_and_init(sh_degree):
    g = torch.Generator().manual_seed(2)
    points, colors = torch.randn(20, 3, generator=g), torch.rand(20, 3, generator=g)
    scene = GaussianScene.from_points(points, colors, sh_degree=sh_degree)
    assert scene.sh_degree == sh_degree
    assert_close(sh_to_rgb(scene.sh[:, 0, :]), colors, rtol=0, atol=1e-6)
    assert torch.all(scene.sh[:, 1:, :] == 0)
    assert_close(scene.opacities, torch.full((20,), 0.1))
    assert_close(scene.quats_wxyz, torch.tensor([[1.0, 0, 0, 0]]).expand(20, 4))
    assert_close(scene.means, points, rtol=0, atol=0)


def test_from_points_uint8_colours_and_fixed_scale():
    colors = torch.tensor([[0, 128, 255], [255, 0, 64]], dtype=torch.uint8)
    scene = GaussianScene.from_points(torch.zeros(2, 3), colors, sh_degree=1, scale=0.02)
    assert_close(sh_to_rgb(scene.sh[:, 0, :]), colors.float() / 255, rtol=0, atol=1e-6)
    assert_close(scene.scales, torch.full((2, 3), 0.02))


def test_from_points_scales_from_neighbours():
    # On a lattice with 0.5 m spacing every point has at least 3 neighbours at exactly 0.5 m.
    axis = torch.arange(3, dtype=torch.float32) * 0.5
    points = torch.cartesian_prod(axis, axis, axis)  # [27, 3]
    scene = GaussianScene.from_points(points, torch.rand(27, 3))
    assert_close(scene.scales, torch.full((27, 3), 0.5))


def test_from_points_rejects_bad_input():
    with pytest.raises(InputError, match="pass scale="):
        GaussianScene.from_points(torch.zeros(1, 3), torch.zeros(1, 3))
    with pytest.raises(InputError, match=r"colors \(N, 3\)"):
        GaussianScene.from_points(torch.zeros(4, 3), torch.zeros(3, 3))
    with pytest.raises(InputError, match="sh_degree in 0..3"):
        GaussianScene.from_points(torch.zeros(4, 3), torch.zeros(4, 3), sh_degree=4)
    with pytest.raises(InputError, match="scale > 0"):
        GaussianScene.from_points(torch.zeros(4, 3), torch.zeros(4, 3), scale=0.0)


@pytest.mark.parametrize("n", [2, 4, 301])
def test_knn_matches_reference(n):
    points = torch.randn(n, 3, generator=torch.Generator().manual_seed(n))
    points[-1] = points[0]  # coincident points must count as zero-distance neighbours
    k = min(3, n - 1)
    expected = _reference_knn_mean_dist(points, k, max_elems=1000)  # forces several chunks
    assert_close(_knn_mean_dist(points, k), expected, rtol=1e-6, atol=1e-7)


# --- property-based round trip -----------------------------------------------------------------


_F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)


@st.composite
def _scenes(draw) -> GaussianScene:
    n, k = draw(st.integers(0, 5)), draw(st.sampled_from([1, 4, 9, 16]))

    def arr(*shape):
        return torch.from_numpy(draw(hnp.arrays(np.float32, shape, elements=_F32)))

    return GaussianScene(arr(n, 3), arr(n, 3), arr(n, 4), arr(n), arr(n, k, 3))


@settings(max_examples=40, deadline=None)
@given(scene=_scenes())
def test_round_trip_property(scene):
    with tempfile.TemporaryDirectory() as folder:  # tmp_path is per-test, not per-example
        path = Path(folder) / "scene.ply"
        save_ply(scene, path)
        _assert_scenes_equal(load_ply(path), scene, rtol=0, atol=0)
