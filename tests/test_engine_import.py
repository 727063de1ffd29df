"""Real importers: each preset's GLB goes through Blender 3.4's glTF importer and Godot 3.2's
scene importer, and what arrives is checked: one mesh, the face count, a texture bound to the
material, the size in metres, which way is up, the pivot at the bottom centre, and where the
asset's front points.

Unity and Unreal cannot run here; their importers' axis maps (export/presets.py) are applied on
top of what a spec-conformant importer sees, which Blender (Z-up: glTF (x, y, z) -> (x, -z, y))
and Godot (glTF axes as-is) show.  Skips, naming the Debian package, where they are missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from orbitforge.export.stage import ExportConfig, export_asset
from orbitforge.mesh import load_meshes

from conftest import data_path

ENGINES = ("gltf", "unity", "unreal")
HEIGHT_M = 1.5
FACES = 4000

_BLENDER_SCRIPT = r'''
import json, sys
import numpy
numpy.bool = bool  # Debian numpy 1.24 dropped the alias that Blender 3.4's glTF importer uses
import bpy

args = sys.argv[sys.argv.index("--") + 1:]
results = {}
for path in args[1:]:
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=path)
    meshes = []
    for obj in bpy.context.scene.objects:
        if obj.type != "MESH":
            continue
        pts = [obj.matrix_world @ v.co for v in obj.data.vertices]
        textured = any(link.from_node.type == "TEX_IMAGE" and link.from_node.image is not None
                       and link.to_socket.name == "Base Color"
                       for slot in obj.material_slots if slot.material and slot.material.use_nodes
                       for link in slot.material.node_tree.links)
        meshes.append({"name": obj.name, "faces": sum(len(p.vertices) - 2 for p in obj.data.polygons),
                       "lo": [min(p[i] for p in pts) for i in range(3)],
                       "hi": [max(p[i] for p in pts) for i in range(3)], "textured": textured})
    results[path] = meshes
with open(args[0], "w") as f:
    json.dump(results, f)
'''

_GODOT_SCRIPT = r'''
extends SceneTree

func _walk(node, xform, out):
    var t = xform
    if node is Spatial:
        t = xform * node.transform
    if node is MeshInstance:
        var arrays = node.mesh.surface_get_arrays(0)
        var lo = Vector3(1e9, 1e9, 1e9)
        var hi = Vector3(-1e9, -1e9, -1e9)
        for v in arrays[Mesh.ARRAY_VERTEX]:
            var w = t.xform(v)
            lo = Vector3(min(lo.x, w.x), min(lo.y, w.y), min(lo.z, w.z))
            hi = Vector3(max(hi.x, w.x), max(hi.y, w.y), max(hi.z, w.z))
        var mat = node.mesh.surface_get_material(0)
        var textured = mat != null and mat is SpatialMaterial and mat.albedo_texture != null
        var normals = arrays[Mesh.ARRAY_NORMAL]
        out.append({"name": node.name, "faces": arrays[Mesh.ARRAY_INDEX].size() / 3,
            "surfaces": node.mesh.get_surface_count(), "lo": [lo.x, lo.y, lo.z], "hi": [hi.x, hi.y, hi.z],
            "textured": textured, "normals": normals != null and normals.size() == arrays[Mesh.ARRAY_VERTEX].size()})
    for c in node.get_children():
        _walk(c, t, out)

func _init():
    var results = {}
    for engine in ["gltf", "unity", "unreal"]:
        var scene = load("res://asset_%s.glb" % engine)
        var out = []
        if scene != null:
            _walk(scene.instance(), Transform(), out)
        results[engine] = out
    print("RESULT " + to_json(results))
    quit()
'''


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> dict[str, Path]:
    """spot, exported for every preset (GLB only), 1.5 m tall, 4000 faces."""
    parts = load_meshes(data_path("assets/spot/spot_textured.glb"))
    out = {}
    for engine in ENGINES:
        folder = tmp_path_factory.mktemp(f"spot_{engine}")
        export_asset(parts, None, folder, ExportConfig(engine=engine, formats=("glb",), faces=FACES, height_m=HEIGHT_M),
                     validate=False)
        out[engine] = folder / "asset.glb"
    return out


def _check(meshes: list[dict], engine: str, up: int, front: dict[str, int]) -> None:
    """Shared assertions; `up` is the importer's up-axis index, `front` maps engine -> axis index
    of the asset's long (front-back) side."""
    assert len(meshes) == 1, meshes
    m = meshes[0]
    assert m["faces"] == FACES
    assert m["textured"], "base-colour texture not bound to the material"
    lo, hi = np.array(m["lo"]), np.array(m["hi"])
    size = hi - lo
    assert size[up] == pytest.approx(HEIGHT_M, rel=1e-3), f"height {size[up]} m along the up axis"
    assert lo[up] == pytest.approx(0.0, abs=1e-4), "pivot is not at the bottom"
    ground = [i for i in range(3) if i != up]
    assert np.allclose((lo + hi)[ground] / 2, 0, atol=1e-4), "pivot is not centred"
    assert int(np.argmax(size * (np.arange(3) != up))) == front[engine], f"front-back axis is {size}"


def _blender() -> str:
    exe = shutil.which("blender")
    if exe is None:
        pytest.skip("Blender is not installed (Debian: apt-get install blender python3-numpy)")
    return exe


def _godot() -> str:
    exe = shutil.which("godot3-server")
    if exe is None:
        pytest.skip("Godot 3 is not installed (Debian: apt-get install godot3-server)")
    return exe


@pytest.fixture(scope="module")
def blender_results(exported, tmp_path_factory) -> dict:
    exe = _blender()
    work = tmp_path_factory.mktemp("blender")
    script, out = work / "check.py", work / "out.json"
    script.write_text(_BLENDER_SCRIPT)
    files = [str(exported[e]) for e in ENGINES]
    done = subprocess.run([exe, "-b", "--factory-startup", "--python-exit-code", "1", "--python", str(script), "--",
                           str(out), *files], capture_output=True, text=True)
    assert done.returncode == 0 and out.is_file(), done.stdout[-2000:] + done.stderr[-2000:]
    got = json.loads(out.read_text())
    return {e: got[str(exported[e])] for e in ENGINES}


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_blender_sees_the_asset_upright_in_metres(blender_results, engine):
    # Blender is Z-up; glTF +Z (the asset's front) arrives as Blender -Y, glTF +X stays +X.
    _check(blender_results[engine], engine, up=2, front={"gltf": 1, "unity": 1, "unreal": 0})
    assert blender_results[engine][0]["name"] == "asset"


def _import_godot_project(exe: str, project: Path) -> None:
    """Run the editor once so it imports every .glb; it may not exit by itself (Godot 3.2
    headless), so stop it, by its own pid, once every import has its .md5 stamp."""
    proc = subprocess.Popen([exe, "--path", str(project), "-e", "--quit"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        expected = len(list(project.glob("*.glb")))
        while proc.poll() is None:
            stamps = list((project / ".import").glob("*.glb-*.md5")) if (project / ".import").is_dir() else []
            if len(stamps) >= expected and len(list(project.glob("*.glb.import"))) >= expected:
                time.sleep(1.0)  # let the editor finish writing the .scn it stamped
                break
            time.sleep(0.5)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@pytest.fixture(scope="module")
def godot_results(exported, tmp_path_factory) -> dict:
    exe = _godot()
    project = tmp_path_factory.mktemp("godot")
    (project / "project.godot").write_text('config_version=4\n\n[application]\n\nconfig/name="orbitforge-check"\n')
    for engine in ENGINES:
        shutil.copy(exported[engine], project / f"asset_{engine}.glb")
    (project / "check.gd").write_text(_GODOT_SCRIPT)
    _import_godot_project(exe, project)
    done = subprocess.run([exe, "--path", str(project), "-s", "check.gd"], capture_output=True, text=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert line is not None, done.stdout[-2000:] + done.stderr[-2000:]
    return json.loads(line[len("RESULT "):])


@pytest.mark.slow
@pytest.mark.parametrize("engine", ENGINES)
def test_godot_sees_the_asset_upright_in_metres(godot_results, engine):
    # Godot keeps glTF's axes: +Y up; the front stays on +Z except for the Unreal yaw (+X).
    meshes = godot_results[engine]
    _check(meshes, engine, up=1, front={"gltf": 2, "unity": 2, "unreal": 0})
    assert meshes[0]["surfaces"] == 1 and meshes[0]["normals"]
