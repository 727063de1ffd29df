"""The orbit's transforms.json and COLMAP model, written to disk and read back, agree."""

from __future__ import annotations

import numpy as np

from orbitforge import cameras as C


def test_transforms_json_and_colmap_model_on_disk_give_the_same_cameras(tmp_path):
    cams = C.orbit(24, radius=2.7, elevation_deg=25, fov_deg=35, width=320, height=240, target=(0.1, 0.4, -0.2))
    names = [f"{i:05d}.png" for i in range(len(cams))]
    C.write_transforms_json(tmp_path / "transforms.json", cams, [f"frames/{n}" for n in names])
    model = tmp_path / "sparse" / "0"
    model.mkdir(parents=True)
    C.to_colmap(cams, names).write(str(model))
    assert {p.name for p in model.iterdir()} >= {"cameras.bin", "images.bin", "points3D.bin"}

    from_ns, paths = C.from_transforms_json(tmp_path / "transforms.json")
    from_colmap, colmap_names = C.from_colmap(model)
    assert [p.split("/")[-1] for p in paths] == colmap_names == names
    for back in (from_ns, from_colmap):
        np.testing.assert_allclose(back.c2w, cams.c2w, atol=1e-5)
        np.testing.assert_allclose(back.K, cams.K, atol=1e-5)
        assert (back.width, back.height) == (320, 240)
    np.testing.assert_allclose(from_ns.c2w, from_colmap.c2w, atol=1e-5)


def test_transforms_json_follows_the_nerfstudio_format(tmp_path):
    """The fields nerfstudio's dataparser reads (docs: 'nerfstudio data conventions')."""
    import json

    cams = C.orbit(3, radius=2.0, width=64, height=48)
    C.write_transforms_json(tmp_path / "transforms.json", cams, ["a.png", "b.png", "c.png"])
    data = json.loads((tmp_path / "transforms.json").read_text())
    for key in ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_model", "frames"):
        assert key in data
    assert data["camera_model"] == "OPENCV"
    m = np.array(data["frames"][0]["transform_matrix"])
    assert m.shape == (4, 4) and np.allclose(m[3], [0, 0, 0, 1])
    # OpenGL axes: the camera's -Z column points at the orbit target (the origin)
    centre = m[:3, 3]
    np.testing.assert_allclose(-m[:3, 2], -centre / np.linalg.norm(centre), atol=1e-9)
