"""The CPU renderer against independent references: ray casting, OpenCV polygon fill, planes."""

from __future__ import annotations

import numpy as np
import pytest

from orbitforge import builtin, cameras as C
from orbitforge.errors import InputError
from orbitforge.mesh import MeshAsset, load_meshes, load_meshes_from_glb_bytes, to_glb_bytes
from orbitforge.render import OrbitConfig, RenderConfig, orbit_cameras_for, reference_render, render


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


@pytest.mark.parametrize("name", builtin.NAMES)
def test_rasteriser_matches_ray_casting_reference(name):
    parts = builtin.load(name)
    cams = orbit_cameras_for(parts, OrbitConfig(frames=5, size=96, elevation_deg=25))
    fast, ref = render(parts, cams), reference_render(parts, cams)
    for t in range(len(cams)):
        assert iou(fast.mask[t], ref.mask[t]) >= 0.995
    both = fast.mask & ref.mask
    np.testing.assert_allclose(fast.depth[both], ref.depth[both], rtol=1e-4)
    colour_error = np.abs(fast.rgb[both].astype(int) - ref.rgb[both].astype(int))
    assert colour_error.mean() < 0.5 and np.quantile(colour_error, 0.99) <= 2


def test_spot_silhouette_matches_projected_triangles(spot_glb):
    """Renderer and camera convention agree: the rendered mask equals the union of the
    asset's triangles projected by `Cameras.project` and filled by OpenCV, frame by frame."""
    import cv2

    parts = load_meshes(spot_glb)
    cams = orbit_cameras_for(parts, OrbitConfig(frames=12, size=256, elevation_deg=20))
    out = render(parts, cams, RenderConfig(supersample=1))
    verts = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, np.cumsum([0] + [len(p.vertices) for p in parts]))])
    uv, z = cams.project(verts)
    shift = 8  # sub-pixel precision bits for OpenCV; its pixel centres sit at integers, ours at +0.5
    for t in range(len(cams)):
        silhouette = np.zeros((256, 256), np.uint8)
        pts = np.round((uv[t] - 0.5) * (1 << shift)).astype(np.int32)
        for tri in faces[(z[t][faces] > 0).all(axis=1)]:
            cv2.fillConvexPoly(silhouette, pts[tri], 1, lineType=cv2.LINE_8, shift=shift)
        score = iou(out.mask[t], silhouette.astype(bool))
        assert score >= 0.97, f"frame {t}: IoU {score:.4f}"
        assert out.mask[t].sum() > 1000


def test_depth_of_a_plane_facing_the_camera():
    quad = MeshAsset([[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]])
    cams = C.Cameras(C.intrinsics_from_fov(40, 32, 32), C.look_at([0, 0, 2], [0, 0, 0]), 32, 32)
    out = render(quad, cams)
    assert out.mask.all()
    np.testing.assert_allclose(out.depth, 2.0, rtol=1e-5)


def test_texture_is_upright_after_a_glb_round_trip():
    """glTF stores UVs with a top-left origin; the top of the image must stay on top."""
    tex = np.zeros((8, 8, 3), np.uint8)
    tex[:4] = (255, 0, 0)  # top half red
    tex[4:] = (0, 0, 255)  # bottom half blue
    quad = MeshAsset(
        [[-1, -1, 0], [1, -1, 0], [1, 1, 0], [-1, 1, 0]], [[0, 1, 2], [0, 2, 3]],
        uvs=[[0, 0], [1, 0], [1, 1], [0, 1]], base_colour=tex, name="quad",
    )
    (loaded,) = load_meshes_from_glb_bytes(to_glb_bytes([quad]))
    cams = C.Cameras(C.intrinsics_from_fov(30, 32, 32), C.look_at([0, 0, 3], [0, 0, 0]), 32, 32)
    for mesh in (quad, loaded):
        rgb = render(mesh, cams, RenderConfig(shading="unlit")).rgb[0]
        assert (rgb[:12, :, 0] > 200).all() and (rgb[:12, :, 2] < 50).all(), "top should be red"
        assert (rgb[-12:, :, 2] > 200).all() and (rgb[-12:, :, 0] < 50).all(), "bottom should be blue"


def test_lighting_is_the_same_from_every_view():
    """A world-fixed light: the same surface point has the same colour in every frame."""
    (globe,) = builtin.load("globe")
    plain = MeshAsset(globe.vertices, globe.faces, normals=globe.normals, name="plain")
    cams = C.orbit(2, radius=3.0, elevation_deg=0, width=64, height=64, target=(0, 0.5, 0), start_azimuth_deg=-10, sweep_deg=20)
    out = render(plain, cams)
    point = np.array([[0.0, 0.5, 0.5]])  # front of the sphere, seen by both cameras
    uv, _ = cams.project(point)
    colours = [out.rgb[t, int(uv[t, 0, 1]), int(uv[t, 0, 0])].astype(int) for t in range(2)]
    assert np.abs(colours[0] - colours[1]).max() <= 3


def test_supersampling_keeps_the_silhouette():
    parts = builtin.load("toy")
    cams = orbit_cameras_for(parts, OrbitConfig(frames=2, size=64))
    plain, smooth = render(parts, cams), render(parts, cams, RenderConfig(supersample=3))
    assert smooth.rgb.shape == plain.rgb.shape
    assert iou(plain.mask, smooth.mask) > 0.95
    edge_values = np.unique(smooth.rgb.reshape(-1, 3), axis=0)
    assert len(edge_values) > len(np.unique(plain.rgb.reshape(-1, 3), axis=0))  # blended edge colours


def test_render_rejects_nothing_to_render():
    cams = C.orbit(1, radius=3.0, width=8, height=8)
    with pytest.raises(InputError, match="zero cameras"):
        render(builtin.load("toy"), cams[np.array([], dtype=int)])
    with pytest.raises(InputError, match="no mesh parts"):
        render([], cams)
