"""The export stage: mesh parts and/or Gaussian splats in, engine-ready validated files out.

`export_asset` is the one entry point over typed objects; `run_export` runs it as the run
folder's "asset" stage (RUN/asset/), which `orbitforge export` calls.

Files (names fixed so engines' re-imports find them again):
    asset.glb, asset_lod1.glb, asset_lod2.glb, collision.glb     formats "glb"
    asset.usdc (+ textures/), asset.usdz                          formats "usdc", "usdz"
    splats.ply, splats.splat, splats_khr.glb                      formats "ply", "splat", "khr"
    validation.json                                               always
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from orbitforge.errors import InputError
from orbitforge.export import presets
from orbitforge.export.glb import GlbConfig, convex_hull, decimate, lods, mesh_glb_bytes
from orbitforge.export.presets import ENGINES, Engine
from orbitforge.export.splat_formats import (SplatConfig, Y_DOWN_ROLL, check_scene, inria_ply_bytes, khr_glb_bytes,
                                             splat_bytes, transform_scene)
from orbitforge.export.usd import write_usd
from orbitforge.export.validation import raise_on_errors, validate_outputs
from orbitforge.gaussians import GaussianScene
from orbitforge.mesh import MeshAsset

logger = logging.getLogger(__name__)

MESH_FORMATS = ("glb", "usdc", "usdz")
SPLAT_FORMATS = ("ply", "splat", "khr")
FORMATS = MESH_FORMATS + SPLAT_FORMATS
STAGE = "asset"


@dataclass(frozen=True)
class ExportConfig:
    """What `orbitforge export` writes."""

    engine: Engine = "gltf"
    """Axes, units and pivot preset: "gltf" | "unity" | "unreal" (see export.presets)."""
    formats: tuple[str, ...] = FORMATS
    """Any of glb, usdc, usdz (mesh) and ply, splat, khr (splats)."""
    faces: int = 20_000
    """Face budget of LOD0 (the mesh is decimated when it has more)."""
    height_m: float | None = None
    """Real height of the asset in metres; None keeps the mesh's recorded units (reconstructions
    from video have an arbitrary scale, so give this for them)."""
    name: str = "asset"
    """Node / prim name inside the files."""
    glb: GlbConfig = field(default_factory=GlbConfig)
    splats: SplatConfig = field(default_factory=SplatConfig)

    def __post_init__(self) -> None:
        presets.preset(self.engine)  # one-line error for an unknown engine
        unknown = [f for f in self.formats if f not in FORMATS]
        if unknown or not self.formats:
            raise InputError(f"unknown export format(s) {', '.join(unknown) or '(none given)'}; "
                             f"choose from {', '.join(FORMATS)}")
        if self.faces < 4:
            raise InputError(f"--faces must be at least 4, got {self.faces}")
        if self.height_m is not None and not (np.isfinite(self.height_m) and self.height_m > 0):
            raise InputError(f"--height must be a positive number of metres, got {self.height_m}")


def export_asset(parts: Sequence[MeshAsset] | None, scene: GaussianScene | None, out_dir: Path,
                 config: ExportConfig = ExportConfig(), *, validate: bool = True,
                 status: Callable[[str], None] | None = None) -> dict:
    """Write every requested format into `out_dir` (which must exist), validate them all, and
    write `out_dir/validation.json`.

    Args:
        parts: mesh parts, orbitforge world (+Y up, `units`), or None for splat-only export.
        scene: Gaussians, orbitforge world, or None for mesh-only export.
    Returns:
        metrics: files with sizes, seconds per format, placement, face counts, validation summary.
    Raises:
        InputError: a requested format lacks its input (e.g. ply without splats).
        ExportValidationError: a file failed validation (validation.json is written first).
    """
    out_dir = Path(out_dir)
    say = status or (lambda text: None)
    wants_mesh = [f for f in config.formats if f in MESH_FORMATS]
    wants_splats = [f for f in config.formats if f in SPLAT_FORMATS]
    if wants_mesh and not parts:
        raise InputError(f"formats {','.join(wants_mesh)} need a mesh; pass --mesh PATH")
    if wants_splats and scene is None:
        raise InputError(f"formats {','.join(wants_splats)} need splats (RUN/splats/splats.ply); "
                         "run `orbitforge splat RUN` first or drop them from --formats")
    if scene is not None:
        scene = check_scene(scene, config.splats.min_opacity)

    # 1. one bounding box for mesh and splats, so both land on the same pivot and scale; taken
    #    after decimation so that the written LOD0 is exactly `height_m` tall and stands on y = 0
    lod0 = _fit_budget(parts, config.faces) if parts else None
    lo, hi = presets.parts_bounds(lod0) if lod0 else _splat_bounds(scene)
    units = parts[0].units if parts else "m"
    extras = {"engine": config.engine, "height_m": None, "pivot": "bottom centre"}
    written: list[Path] = []
    seconds: dict[str, float] = {}
    metrics: dict = {"engine": config.engine, "formats": list(config.formats)}

    # 2. mesh formats
    if wants_mesh:
        metrics["faces"] = int(sum(len(p.faces) for p in lod0))
        if "glb" in wants_mesh:
            t0 = time.perf_counter()
            where = presets.placement(lo, hi, config.engine, "gltf", units=units, height_m=config.height_m)
            extras.update(height_m=round(where.height_m, 6), units="m", up="+Y (glTF); importer converts")
            say("writing GLB, LODs and collision")
            levels = [lods(p, config.glb.lod_fractions) for p in lod0]  # [part][lod]
            lod_faces = []
            for i in range(len(config.glb.lod_fractions)):
                level = [presets.place_mesh(p[i], where) for p in levels]
                name = config.name if i == 0 else f"{config.name}_LOD{i}"
                path = out_dir / (f"{config.name}.glb" if i == 0 else f"{config.name}_lod{i}.glb")
                path.write_bytes(mesh_glb_bytes(level, name, config.glb, extras={**extras, "lod": i}))
                written.append(path)
                lod_faces.append(int(sum(len(p.faces) for p in level)))
            metrics["lod_faces"] = lod_faces
            if config.glb.collision == "convex_hull":
                hull = presets.place_mesh(convex_hull(lod0, f"UCX_{config.name}"), where)
                path = out_dir / "collision.glb"
                path.write_bytes(mesh_glb_bytes([hull], f"UCX_{config.name}", config.glb, extras=extras))
                written.append(path)
                metrics["collision_faces"] = int(len(hull.faces))
            metrics["placement_gltf"] = where.to_json()
            seconds["glb"] = time.perf_counter() - t0
        for fmt in (f for f in ("usdc", "usdz") if f in wants_mesh):
            t0 = time.perf_counter()
            say(f"writing {fmt}")
            p = presets.preset(config.engine)
            where = presets.placement(lo, hi, config.engine, "usd", units=units, height_m=config.height_m)
            placed = [presets.place_mesh(part, where) for part in lod0]
            written += write_usd(placed, out_dir / f"{config.name}.{fmt}", name=config.name, up_axis=p.usd_up_axis,
                                 meters_per_unit=p.usd_meters_per_unit,
                                 extras={**extras, "height_m": round(where.height_m, 6)})
            metrics["placement_usd"] = where.to_json()
            seconds[fmt] = time.perf_counter() - t0

    # 3. splat formats (always glTF-framed for the chosen engine; PLY/.splat optionally rolled)
    if wants_splats:
        where = presets.placement(lo, hi, config.engine, "gltf", units=units, height_m=config.height_m)
        placed = transform_scene(scene, where.matrix, where.scale, where.pivot)
        metrics["splats"] = placed.num_gaussians
        metrics["placement_gltf"] = where.to_json()  # the GLB's too (same box): viewers undo it to place files
        rolled = placed
        if config.splats.ply_up == "y_down" and ("ply" in wants_splats or "splat" in wants_splats):
            rolled = transform_scene(placed, Y_DOWN_ROLL, 1.0, np.zeros(3))
        for fmt, fname, make in (("ply", "splats.ply", lambda: inria_ply_bytes(rolled)),
                                 ("splat", "splats.splat", lambda: splat_bytes(rolled)),
                                 ("khr", "splats_khr.glb", lambda: khr_glb_bytes(placed, f"{config.name}_splats",
                                                                                 extras=extras))):
            if fmt in wants_splats:
                t0 = time.perf_counter()
                say(f"writing {fname}")
                (out_dir / fname).write_bytes(make())
                written.append(out_dir / fname)
                seconds[fmt] = time.perf_counter() - t0

    # 4. validation of everything written
    metrics["files"] = {str(p.relative_to(out_dir)): p.stat().st_size for p in written}
    metrics["seconds"] = {k: round(v, 3) for k, v in seconds.items()}
    if validate:
        say("validating")
        t0 = time.perf_counter()
        report = validate_outputs([p for p in written if p.suffix in (".glb", ".usdc", ".usdz", ".ply", ".splat")],
                                  out_dir)
        report["config"] = json.loads(json.dumps(asdict(config), default=str))
        report["seconds"] = round(time.perf_counter() - t0, 3)
        (out_dir / "validation.json").write_text(json.dumps(report, indent=2))
        metrics["validation"] = {k: report[k] for k in ("ok", "errors", "warnings", "waived")}
        raise_on_errors(report)
    return metrics


def _fit_budget(parts: Sequence[MeshAsset], faces: int) -> list[MeshAsset]:
    """Decimate parts so their total stays within `faces`, shared in proportion to their size."""
    total = sum(len(p.faces) for p in parts)
    if total <= faces:
        return list(parts)
    return [decimate(p, max(4, int(faces * len(p.faces) / total))) for p in parts]


def _splat_bounds(scene: GaussianScene) -> tuple[np.ndarray, np.ndarray]:
    """A robust box around the visible splats: 1st-99th percentile of fairly opaque means."""
    means = scene.means.detach().cpu().double().numpy()
    solid = scene.opacities.detach().cpu().numpy() > 0.5
    pts = means[solid] if solid.sum() >= 10 else means
    return np.percentile(pts, 1, axis=0), np.percentile(pts, 99, axis=0)


# ---------------------------------------------------------------------------------------------
# the run-folder stage
# ---------------------------------------------------------------------------------------------


MESH_SOURCES = ("splats", "nerf", "hull")
"""What a mesh can be made from: splat depth, NeRF depth, or the clip's silhouettes (export.mesh)."""


def mesh_source(run) -> str:
    """What `export` makes the mesh from when not told: "hull" for a generated clip (its views do
    not agree closely enough for depth fusion, see export.mesh), else "splats" when the run has
    finished splats, else "nerf" when it has a finished NeRF, else "splats" (whose error says
    what to run)."""
    if _generated(run):
        return "hull"
    if run.is_done("splats"):
        return "splats"
    return "nerf" if run.is_done("nerf") else "splats"


def needs_splats(source: str, formats) -> bool:
    """Whether an export from mesh `source` ("file" for --mesh) writing `formats` reads the splats:
    a hull or NeRF mesh without splat formats does not, so its run can skip training them."""
    return source == "splats" or any(f in SPLAT_FORMATS for f in formats)


def _generated(run) -> bool:
    """Whether RUN's clip came from the orbit model (`orbitforge generate` records its model)."""
    clip = run.manifest.get("stages", {}).get("clip", {})
    return clip.get("status") == "done" and "model" in (clip.get("config") or {})


def run_export(run, config: ExportConfig, *, mesh_path: Path | None = None, source: str = "splats",
               status: Callable[[str], None] | None = None):
    """Stage "asset" over a run folder: RUN/asset/ with every format and validation.json.

    The mesh comes from `mesh_path` when given, else from `source`: "splats" (mesh_from_splats
    over RUN/splats and the posed clip), "nerf" (RUN/nerf's depth renders through
    mesh_from_depths) or "hull" (mesh_from_silhouettes over the posed clip); splat formats always
    come from RUN/splats/splats.ply.
    On a validation failure the report is kept as RUN/asset.validation.json (the stage folder is
    not created) and ExportValidationError says so in one line.
    """
    from orbitforge.gaussians import load_ply
    from orbitforge.mesh import load_meshes

    if source not in MESH_SOURCES:
        raise InputError(f"unknown mesh source {source!r}; choose {', '.join(MESH_SOURCES)}")
    splat_file = run.stage_path("splats") / "splats.ply"
    has_splats = splat_file.is_file() and run.is_done("splats")
    mesh_from = "file" if mesh_path is not None else source
    if mesh_from == "nerf" and not run.is_done("nerf"):
        raise InputError(f"{run.root} has no finished nerf stage, needed for a mesh from the NeRF; "
                         f"run `orbitforge nerf {run.root}`")
    wants_splats = needs_splats(mesh_from, config.formats)
    if wants_splats and not has_splats:
        want = "splat formats" if mesh_from != "splats" else "a mesh from splats (or pass --mesh PATH, or --from nerf)"
        raise InputError(f"{run.root} has no finished splats stage, needed for {want}; run `orbitforge splat {run.root}`")
    parts = load_meshes(mesh_path) if mesh_path is not None else None
    depends = (["splats"] if has_splats and wants_splats else []) + (["nerf"] if mesh_from == "nerf" else [])
    if mesh_from == "hull":  # the silhouettes and cameras of the posed clip
        depends.append("poses" if run.is_done("poses") else "clip")
    settings = asdict(config)
    settings["mesh_source"] = {"file": "file", "splats": "mesh_from_splats", "nerf": "nerf",
                               "hull": "mesh_from_silhouettes"}[mesh_from]
    failed_report = run.root / f"{STAGE}.validation.json"

    def stage(tmp: Path) -> dict:
        scene = load_ply(splat_file) if wants_splats else None
        mesh = parts
        if mesh is None and any(f in MESH_FORMATS for f in config.formats):
            mesh = [_run_mesh(run, mesh_from, scene, config.faces)]
        try:
            metrics = export_asset(mesh, scene, tmp, config, status=status)
        except Exception:
            if (tmp / "validation.json").is_file():
                failed_report.write_bytes((tmp / "validation.json").read_bytes())
            raise
        failed_report.unlink(missing_ok=True)
        return metrics

    result = run.run_stage(STAGE, stage, config=settings, inputs=[mesh_path] if mesh_path else [],
                           depends_on=depends)
    glb = result.path / "asset.glb"
    if glb.is_file():
        _asset_previews(glb, run.root / "preview", redraw=not result.skipped)
    return result


def _asset_previews(glb: Path, folder: Path, *, redraw: bool, frames: int = 24, size: int = 256) -> None:
    """RUN/preview/asset_turntable.gif and asset_sheet.png: the exported GLB itself, read back and
    rendered unlit by the CPU renderer (its texture already carries the capture's lighting)."""
    from orbitforge.mesh import load_meshes
    from orbitforge.render import OrbitConfig, RenderConfig, render_orbit
    from orbitforge.viewers.preview import contact_sheet, save_image, save_turntable_gif

    gif, sheet = folder / "asset_turntable.gif", folder / "asset_sheet.png"
    if not redraw and gif.is_file() and sheet.is_file():
        return
    clip = render_orbit(load_meshes(glb), OrbitConfig(frames=frames, size=size, elevation_deg=20,
                                                      render=RenderConfig(shading="unlit")))
    save_turntable_gif(clip.frames, gif, fps=12)
    save_image(contact_sheet(clip.frames[::3], tile=size // 2), sheet)


def _run_mesh(run, source: str, scene: GaussianScene | None, faces: int) -> MeshAsset:
    """The textured mesh of RUN's posed clip from `source` (export/mesh.py): fused splat depth,
    fused NeRF depth (RUN/nerf's renders) or the clip's visual hull."""
    from orbitforge.export import mesh as meshing
    from orbitforge.recon.stages import posed_clip

    clip = posed_clip(run)[0]
    config = mesh_config_for(clip.width, clip.height, faces)
    if source == "hull":
        return meshing.mesh_from_silhouettes(clip, config)
    if source == "nerf":
        from orbitforge.recon.nerf import load_fusion

        distance, accumulation, cams = load_fusion(run.stage_path("nerf"))
        depth = meshing.depth_from_ray_distance(distance, accumulation, cams, config)
        return meshing.mesh_from_depths(depth, cams, clip, config)
    return meshing.mesh_from_splats(scene, clip, config)


def mesh_config_for(width: int, height: int, faces: int):
    """MeshConfig sized to the input frames: frames of side s carry no more detail than a texture
    of about 8 s texels, nor depth renders of more than 2 s pixels.  Clips of 128 px and more get
    the full 1024^2 texture and 256 px depth renders; a 32 px generated clip gets 256^2 and 64 px,
    several times faster with nothing lost."""
    from orbitforge.export.mesh import MeshConfig

    side = max(width, height)
    texture = int(min(1024, max(256, 2 ** math.ceil(math.log2(8 * side)))))
    return MeshConfig(faces=faces, texture_size=texture, render_size=int(min(256, max(64, 2 * side))))


__all__ = ["ExportConfig", "export_asset", "run_export", "mesh_source", "needs_splats", "MESH_SOURCES", "FORMATS",
           "ENGINES"]
