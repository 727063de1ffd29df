"""Export writers: presets against cameras.FRAMES, SH rotation against the renderer's SH, every
file re-read (trimesh, pygltflib, pxr, plyfile) and passed through its validator."""

from __future__ import annotations

import io
import json
import logging
import zipfile

import numpy as np
import pytest
import torch

from orbitforge import builtin
from orbitforge.cameras import points_to_frame
from orbitforge.errors import InputError
from orbitforge.export import presets
from orbitforge.export.glb import GlbConfig, decimate
from orbitforge.export.splat_formats import (SPLAT_BYTES, Y_DOWN_ROLL, inria_ply_bytes, khr_glb_bytes,
                                             read_splat_bytes, sh_rotation, splat_bytes, transform_scene)
from orbitforge.export.stage import ExportConfig, export_asset
from orbitforge.gaussians import GaussianScene, load_ply
from orbitforge.mesh import load_meshes
from orbitforge.validate import ValidatorUnavailableError, validate_glb

from conftest import data_path


def random_scene(n: int = 300, k: int = 16, seed: int = 0) -> GaussianScene:
    g = torch.Generator().manual_seed(seed)
    return GaussianScene(torch.randn(n, 3, generator=g) * 0.3, torch.randn(n, 3, generator=g) - 4,
                         torch.randn(n, 4, generator=g), torch.randn(n, generator=g) + 1,
                         torch.randn(n, k, 3, generator=g) * 0.2)


def random_rotation(seed: int) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    return Rotation.random(random_state=seed).as_matrix()


@pytest.fixture(scope="module")
def validator_ok():
    try:
        validate_glb(b"glTF")
    except ValidatorUnavailableError as exc:
        pytest.skip(str(exc))


# ------------------------------------------------------------------------------------- presets


@pytest.mark.parametrize("engine", ["gltf", "unity", "unreal"])
@pytest.mark.parametrize("container", ["gltf", "usd"])
def test_importer_of_the_file_sees_the_engine_frame(engine, container):
    """importer(file) == cameras.points_to_frame(asset placed at bottom centre, in metres)."""
    pts = np.random.default_rng(1).normal(size=(50, 3))
    lo, hi = pts.min(0), pts.max(0)
    where = presets.placement(lo, hi, engine, container, height_m=2.0)
    p = presets.preset(engine)
    engine_unit_m = {"m": 1.0, "cm": 0.01}[p.engine_units]
    if container == "gltf":  # glTF importers: fixed matrix and scale (Interchange: x100)
        imp_matrix, imp_scale = p.gltf_importer
        seen = imp_scale * where.points(pts) @ imp_matrix.T
    else:  # USD importers: matrix from upAxis, scale metersPerUnit / engine unit
        imp_matrix, _ = p.usd_importer
        seen = (p.usd_meters_per_unit / engine_unit_m) * where.points(pts) @ imp_matrix.T
    metres = 2.0 / (hi[1] - lo[1])
    expected = points_to_frame(metres * (pts - presets.bottom_centre(lo, hi)), engine)
    np.testing.assert_allclose(seen, expected, atol=1e-9)
    assert np.linalg.det(where.matrix) == pytest.approx(1.0)
    assert where.height_m == pytest.approx(2.0)


def test_presets_reject_bad_input():
    with pytest.raises(InputError, match="unknown engine 'godot'"):
        presets.preset("godot")
    with pytest.raises(InputError, match="positive"):
        presets.placement(np.zeros(3), np.ones(3), "gltf", "gltf", height_m=-1.0)
    with pytest.raises(InputError, match="units"):
        presets.placement(np.zeros(3), np.ones(3), "gltf", "gltf", units="furlong")
    for bad in (dict(engine="godot"), dict(formats=("glb", "webp")), dict(formats=()), dict(faces=2),
                dict(height_m=float("nan"))):
        with pytest.raises(InputError):
            ExportConfig(**bad)


# ------------------------------------------------------------------------------------- splats


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sh_rotation_matches_the_renderer(seed):
    """Colour of the rotated splat seen along R d == colour of the original seen along d."""
    from orbitforge.recon.splat.projection import sh_to_colour

    R = random_rotation(seed)
    scene = random_scene(20, 16, seed)
    moved = transform_scene(scene, R, 1.0, np.zeros(3))
    dirs = torch.nn.functional.normalize(torch.randn(1, 20, 3, generator=torch.Generator().manual_seed(seed)), dim=-1)
    before = sh_to_colour(scene.sh * 0.1, dirs, 3)  # small coefficients: the +0.5 clamp never bites
    after = sh_to_colour(moved.sh * 0.1, dirs @ torch.from_numpy(R.T).float(), 3)
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)


def test_y_down_roll_is_a_sign_pattern():
    """For the 180-degree roll about Z the Wigner matrices are diagonal +-1 (x, y flip)."""
    d = sh_rotation(Y_DOWN_ROLL, 3)
    expected = [[-1, 1, -1], [1, -1, 1, -1, 1], [-1, 1, -1, 1, -1, 1, -1]]
    for m, signs in zip(d, expected):
        np.testing.assert_allclose(m, np.diag(signs), atol=1e-9)


def test_transform_moves_means_scales_and_orientation():
    from scipy.spatial.transform import Rotation

    scene = random_scene(50, 1)
    R, s, pivot = random_rotation(7), 2.5, np.array([0.1, -0.2, 0.3])
    moved = transform_scene(scene, R, s, pivot)
    np.testing.assert_allclose(moved.means.numpy(), s * (scene.means.numpy() - pivot) @ R.T, atol=1e-5)
    np.testing.assert_allclose(moved.log_scales.numpy(), scene.log_scales.numpy() + np.log(s), atol=1e-5)
    q = scene.quats_wxyz.numpy()
    q2 = moved.quats_wxyz.numpy()
    before = Rotation.from_quat(q[:, [1, 2, 3, 0]]).as_matrix()
    after = Rotation.from_quat(q2[:, [1, 2, 3, 0]]).as_matrix()
    np.testing.assert_allclose(after, R @ before, atol=1e-5)


def test_ply_is_inria_order_padded_to_degree_3_and_round_trips(tmp_path):
    import plyfile

    scene = random_scene(40, 4)  # degree 1 in, degree 3 out
    data = inria_ply_bytes(scene)
    ply = plyfile.PlyData.read(io.BytesIO(data))
    names = [p.name for p in ply["vertex"].properties]
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[9:54] == [f"f_rest_{i}" for i in range(45)]
    assert names[54:] == ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    assert len(names) * 4 == 248  # aras-p UnityGaussianSplatting's expected vertex size
    (tmp_path / "s.ply").write_bytes(data)
    back = load_ply(tmp_path / "s.ply")
    torch.testing.assert_close(back.sh[:, :4], scene.sh)
    assert back.sh[:, 4:].abs().max() == 0
    torch.testing.assert_close(back.means, scene.means)
    # channel-major f_rest: f_rest_0..14 are red (INRIA), so red degree-1 coefficient 0 is f_rest_0
    np.testing.assert_allclose(ply["vertex"]["f_rest_0"], scene.sh[:, 1, 0].numpy())
    np.testing.assert_allclose(ply["vertex"]["f_rest_15"], scene.sh[:, 1, 1].numpy())


def test_splat_file_is_32_bytes_per_splat_sorted_and_decodable():
    scene = random_scene(64, 1)
    data = splat_bytes(scene)
    assert len(data) == 64 * SPLAT_BYTES
    rows = read_splat_bytes(data)
    key = rows["scales"].prod(1) * rows["rgba"][:, 3] / 255.0
    assert (np.diff(key) <= 1e-6).all()  # largest x most opaque first
    # every input splat is there (match by position)
    src = scene.means.numpy()
    order = np.lexsort(src.T)
    got = rows["positions"][np.lexsort(rows["positions"].T)]
    np.testing.assert_allclose(got, src[order], atol=1e-6)
    q = rows["quats_wxyz"]
    assert np.allclose(np.linalg.norm(q, axis=1), 1, atol=0.03)
    with pytest.raises(InputError, match="multiple of 32"):
        read_splat_bytes(data[:-1])


def test_khr_glb_attributes_and_validator(validator_ok):
    import pygltflib

    from orbitforge.export.validation import validate_file

    scene = random_scene(100, 16)
    data = khr_glb_bytes(scene, "splats")
    gltf = pygltflib.GLTF2.load_from_bytes(data)
    prim = gltf.meshes[0].primitives[0]
    assert prim.mode == 0 and "KHR_gaussian_splatting" in gltf.extensionsUsed
    assert not gltf.extensionsRequired
    assert prim.extensions["KHR_gaussian_splatting"] == {"kernel": "ellipse", "colorSpace": "srgb_rec709_display"}
    attrs = json.loads(gltf.to_json())["meshes"][0]["primitives"][0]["attributes"]
    blob = gltf.binary_blob()

    def read(name, width):
        acc = gltf.accessors[attrs[name]]
        view = gltf.bufferViews[acc.bufferView]
        return np.frombuffer(blob, "<f4", acc.count * width, view.byteOffset).reshape(acc.count, width)

    q = scene.quats_wxyz.numpy() / np.linalg.norm(scene.quats_wxyz.numpy(), axis=1, keepdims=True)
    np.testing.assert_allclose(read("KHR_gaussian_splatting:ROTATION", 4), q[:, [1, 2, 3, 0]], atol=1e-6)  # xyzw
    np.testing.assert_allclose(read("KHR_gaussian_splatting:SCALE", 3), scene.scales.numpy(), rtol=1e-5)  # linear
    np.testing.assert_allclose(read("KHR_gaussian_splatting:OPACITY", 1)[:, 0], scene.opacities.numpy(), rtol=1e-5)
    np.testing.assert_allclose(read("KHR_gaussian_splatting:SH_DEGREE_2_COEF_3", 3), scene.sh[:, 7].numpy())
    assert sum(k.startswith("KHR_gaussian_splatting:SH_DEGREE_") for k in attrs) == 16
    tmp = validate_glb(data)
    assert {m.code for m in tmp.messages if m.severity == "error"} <= {"MESH_PRIMITIVE_INVALID_ATTRIBUTE"}


# ------------------------------------------------------------------------------------- meshes


def test_decimate_keeps_uvs_and_meets_the_budget():
    globe = builtin.load("globe")[0]
    small = decimate(globe, 2500)
    assert 1500 <= len(small.faces) <= 2600
    assert small.uvs is not None and small.uvs.shape == (len(small.vertices), 2)
    assert len(np.unique(small.faces)) == len(small.vertices)  # no unreferenced vertices
    assert decimate(globe, 10**6) is globe


@pytest.fixture(scope="module")
def spot_unity(tmp_path_factory, validator_ok):
    out = tmp_path_factory.mktemp("spot_unity")
    parts = load_meshes(data_path("assets/spot/spot_textured.glb"))
    scene = random_scene(500, 16)
    metrics = export_asset(parts, scene, out, ExportConfig(engine="unity", faces=4000, height_m=1.5))
    return out, metrics


def test_every_file_is_written_and_validates(spot_unity):
    out, metrics = spot_unity
    report = json.loads((out / "validation.json").read_text())
    names = {f["file"] for f in report["files"]}
    assert names == {"asset.glb", "asset_lod1.glb", "asset_lod2.glb", "collision.glb", "asset.usdc", "asset.usdz",
                     "splats.ply", "splats.splat", "splats_khr.glb"}
    assert report["ok"] and report["errors"] == 0, report
    for f in report["files"]:
        assert f["errors"] == 0, f
        if f["waived"]:
            assert f["file"] == "splats_khr.glb"
            assert all("MESH_PRIMITIVE_INVALID_ATTRIBUTE" in m for m in f["messages"] if m.startswith("waived"))
    assert metrics["lod_faces"][0] == 4000 and metrics["lod_faces"][1] < 1500 and metrics["lod_faces"][2] < 600


def test_glb_reads_back_with_trimesh_and_pygltflib(spot_unity):
    import pygltflib
    import trimesh

    out, _ = spot_unity
    gltf = pygltflib.GLTF2().load(str(out / "asset.glb"))
    assert [n.name for n in gltf.nodes] == ["asset"]
    assert gltf.images[0].mimeType == "image/png"
    mat = gltf.materials[0]
    assert mat.pbrMetallicRoughness.baseColorTexture is not None and mat.pbrMetallicRoughness.metallicFactor == 0
    assert "NORMAL" in json.loads(gltf.to_json())["meshes"][0]["primitives"][0]["attributes"]
    assert gltf.asset.extras["engine"] == "unity"
    mesh = trimesh.load(str(out / "asset.glb"), force="mesh", process=False)
    lo, hi = mesh.bounds
    assert hi[1] - lo[1] == pytest.approx(1.5, rel=1e-4) and lo[1] == pytest.approx(0, abs=1e-6)  # metres, on y=0
    assert abs(lo[0] + hi[0]) < 1e-5 and abs(lo[2] + hi[2]) < 1e-5  # bottom centre pivot
    assert len(mesh.faces) == 4000
    hull = trimesh.load(str(out / "collision.glb"), force="mesh", process=False)
    assert hull.is_convex and hull.is_watertight
    assert pygltflib.GLTF2().load(str(out / "collision.glb")).nodes[0].name == "UCX_asset"


def test_usd_reads_back_with_pxr(spot_unity):
    from pxr import Usd, UsdGeom, UsdShade

    out, _ = spot_unity
    for name in ("asset.usdc", "asset.usdz"):
        stage = Usd.Stage.Open(str(out / name))
        assert UsdGeom.GetStageUpAxis(stage) == "Y" and UsdGeom.GetStageMetersPerUnit(stage) == 1.0
        root = stage.GetDefaultPrim()
        assert root.GetPath() == "/asset" and Usd.ModelAPI(root).GetKind() == "component"
        mesh = UsdGeom.Mesh(stage.GetPrimAtPath("/asset/geom/asset"))
        assert len(mesh.GetFaceVertexCountsAttr().Get()) == 4000
        assert mesh.GetNormalsAttr().Get() is not None
        st = UsdGeom.PrimvarsAPI(mesh).GetPrimvar("st")
        assert st and st.GetInterpolation() == "vertex"
        material, _ = UsdShade.MaterialBindingAPI(mesh).ComputeBoundMaterial()
        surface = material.ComputeSurfaceSource()[0]
        assert surface.GetIdAttr().Get() == "UsdPreviewSurface"
        texture = surface.GetInput("diffuseColor").GetConnectedSources()[0][0].source
        tex = UsdShade.Shader(texture.GetPrim())
        assert tex.GetIdAttr().Get() == "UsdUVTexture" and tex.GetInput("sourceColorSpace").Get() == "sRGB"
        reader = UsdShade.Shader(tex.GetInput("st").GetConnectedSources()[0][0].source.GetPrim())
        assert reader.GetIdAttr().Get() == "UsdPrimvarReader_float2" and reader.GetInput("varname").Get() == "st"
        pts = np.asarray(mesh.GetPointsAttr().Get())
        assert pts[:, 1].max() - pts[:, 1].min() == pytest.approx(1.5, rel=1e-4)
    with zipfile.ZipFile(out / "asset.usdz") as z:
        assert any(n.endswith(".png") for n in z.namelist())


def test_unreal_usd_is_z_up_centimetres(tmp_path):
    from pxr import Usd, UsdGeom

    from orbitforge.export.validation import validate_file

    parts = builtin.load("globe")
    export_asset(parts, None, tmp_path, ExportConfig(engine="unreal", formats=("usdc",), height_m=2.0), validate=False)
    stage = Usd.Stage.Open(str(tmp_path / "asset.usdc"))
    assert UsdGeom.GetStageUpAxis(stage) == "Z" and UsdGeom.GetStageMetersPerUnit(stage) == pytest.approx(0.01)
    pts = np.asarray(UsdGeom.Mesh(stage.GetPrimAtPath("/asset/geom/asset")).GetPointsAttr().Get())
    assert pts[:, 2].min() == pytest.approx(0, abs=1e-4) and pts[:, 2].max() == pytest.approx(200, rel=1e-4)
    report = validate_file(tmp_path / "asset.usdc")
    assert report.errors == 0, report.messages


def test_jpeg_textures_and_never_webp(tmp_path, validator_ok):
    import pygltflib

    parts = load_meshes(data_path("assets/Avocado.glb"))
    export_asset(parts, None, tmp_path, ExportConfig(formats=("glb",), glb=GlbConfig(texture_format="jpeg")))
    gltf = pygltflib.GLTF2().load(str(tmp_path / "asset.glb"))
    assert {i.mimeType for i in gltf.images} == {"image/jpeg"}
    assert not gltf.extensionsUsed or "EXT_texture_webp" not in gltf.extensionsUsed
    with pytest.raises(InputError, match="never WebP"):
        GlbConfig(texture_format="webp")


def test_bad_splats_are_dropped_with_a_warning_or_refused(tmp_path, caplog):
    scene = random_scene(10, 1)
    means = scene.means.clone()
    means[0, 0] = float("nan")
    bad = GaussianScene(means, scene.log_scales, scene.quats_wxyz, scene.logit_opacities, scene.sh)
    with caplog.at_level(logging.WARNING):
        m = export_asset(None, bad, tmp_path, ExportConfig(formats=("splat",)), validate=False)
    assert m["splats"] == 9 and "dropped 1 of 10" in caplog.text
    all_bad = GaussianScene(torch.full_like(means, float("nan")), scene.log_scales, scene.quats_wxyz,
                            scene.logit_opacities, scene.sh)
    with pytest.raises(InputError, match="no usable Gaussians"):
        export_asset(None, all_bad, tmp_path, ExportConfig(formats=("splat",)))
    with pytest.raises(InputError, match="need splats"):
        export_asset(builtin.load("globe"), None, tmp_path, ExportConfig(formats=("glb", "ply")))
    with pytest.raises(InputError, match="need a mesh"):
        export_asset(None, scene, tmp_path, ExportConfig(formats=("usdz",)))
