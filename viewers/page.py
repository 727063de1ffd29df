"""The static share page: `RUN/preview/viewer.html`, a folder that opens from disk in a browser
with no server and no network.

It shows the run's exported mesh (RUN/asset/asset.glb) with its texture, its Gaussian splats
(RUN/splats/splats.ply, drawn by Spark), the cameras as frustums and the clip as a strip of
thumbnails.  A file:// page can neither fetch() files nor load ES modules from other files, so
the viewer is one classic script bundled at setup time (viewers/web/dist/orbitforge-page.js, from
viewers/web/ by esbuild; `scripts/setup.sh` builds it) and the run's data is embedded in a
classic `viewer_data.js` (base64 GLB and splat bytes, frustums, JPEG thumbnails).

Everything lives in one world: orbitforge's (+Y up, as three.js).  Cameras and splats are
already there; the GLB was placed by the export presets (pivot, scale), so the page gets the
inverse placement as the mesh's matrix.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from orbitforge.atomic import atomic_path, write_bytes_atomic
from orbitforge.errors import InputError
from orbitforge.rundir import MANIFEST, RunDir

logger = logging.getLogger(__name__)

BUNDLE = Path(__file__).resolve().parent / "web" / "dist" / "orbitforge-page.js"
"""Built by `scripts/setup.sh` (esbuild, tools/package.json) beside the page template, so that a
wheel built after setup carries both as package data."""
TEMPLATE = Path(__file__).resolve().parent / "web" / "viewer.html"
PAGE_NAME = "viewer.html"
DATA_NAME = "viewer_data.js"
BUNDLE_NAME = "orbitforge-page.js"


@dataclass(frozen=True)
class PageConfig:
    """Bounds that keep the page folder small enough to share."""

    max_thumbnails: int = 48
    """Clip frames in the strip, evenly subsampled."""
    thumbnail_side: int = 160
    """Longer side of a thumbnail in pixels."""
    max_splats: int = 400_000
    """Gaussians embedded (32 bytes each); beyond this the most visible ones are kept."""
    max_mesh_mb: float = 64.0
    """A larger asset.glb is left out (with a warning) rather than embedded."""

    def __post_init__(self) -> None:
        if self.max_thumbnails < 0 or self.thumbnail_side < 8 or self.max_splats < 1 or self.max_mesh_mb <= 0:
            raise InputError("page limits must be positive (thumbnails >= 0, thumbnail side >= 8, splats >= 1)")


@dataclass(frozen=True)
class PageResult:
    """What `write_page` wrote and what the page shows."""

    path: Path  # RUN/preview/viewer.html
    layers: tuple[str, ...]  # of "mesh", "splats", "cameras"
    frames: int  # thumbnails in the strip
    bytes: int  # size of the page folder's three files
    warnings: tuple[str, ...]


def bundle_path() -> Path:
    """The bundled viewer script; InputError with the fix when setup has not built it."""
    if not BUNDLE.is_file():
        raise InputError(f"the page's viewer script {BUNDLE} is missing: run `make setup` "
                         "(or scripts/setup.sh), which builds it from viewers/web with npm")
    return BUNDLE


def write_page(run_root: Path | str, config: PageConfig = PageConfig()) -> PageResult:
    """Write RUN/preview/viewer.html, viewer_data.js and orbitforge-page.js (each atomically).

    Whatever the run lacks (mesh, splats, cameras, frames) is left out of the page.
    Raises InputError when RUN is not a run folder or the viewer bundle was never built.
    """
    root = Path(run_root)
    if not (root / MANIFEST).is_file():
        raise InputError(f"{root} is not a run folder (no {MANIFEST}); give the folder passed to -o")
    bundle = bundle_path()
    run = RunDir(root)
    manifest = run.manifest
    stages = manifest.get("stages", {})
    warnings: list[str] = []

    cameras, frame_files = _cameras_and_frames(run)
    data: dict = {"name": root.resolve().name, "metrics": _metric_lines(stages)}
    glb = root / "asset" / "asset.glb"
    if glb.is_file():
        if glb.stat().st_size > config.max_mesh_mb * 2**20:
            warnings.append(f"{glb} is {glb.stat().st_size / 2**20:.0f} MB, over the page's {config.max_mesh_mb:.0f} MB "
                            "limit: left out (share asset_lod1.glb instead)")
        else:
            placement = stages.get("asset", {}).get("metrics", {}).get("placement_gltf")
            data["mesh"] = {"glb": _b64(glb.read_bytes()), "toWorld": _mesh_to_world(placement)}
    splat_file = root / "splats" / "splats.ply"
    splat_box = None
    if splat_file.is_file():
        data["splats"], splat_box, kept, total = _splat_data(splat_file, config.max_splats)
        if kept < total:
            warnings.append(f"the page keeps the {kept:,} most visible of {total:,} Gaussians (limit {config.max_splats:,})")
    if cameras is not None:
        data["cameras"] = _camera_data(cameras)
    data["frames"] = _thumbnails(frame_files, config, has_cameras=cameras is not None)
    data["view"] = _initial_view(data, cameras, run, splat_box)
    # mesh and splats fill the same space; the exported asset is the product, so it shows first
    first = ("mesh", "cameras") if "mesh" in data else ("splats", "cameras")
    data["defaultLayers"] = [name for name in first if name in data]

    out = root / "preview"
    try:
        out.mkdir(parents=True, exist_ok=True)
        script = b"window.ORBITFORGE_DATA = " + json.dumps(data, separators=(",", ":")).encode() + b";\n"
        write_bytes_atomic(out / DATA_NAME, script)
        with atomic_path(out / BUNDLE_NAME) as tmp:
            shutil.copyfile(bundle, tmp)
        write_bytes_atomic(out / PAGE_NAME, TEMPLATE.read_bytes())
    except OSError as exc:
        raise InputError(f"cannot write the page into {out}: {exc.strerror or exc}; "
                         "copy the run somewhere writable") from exc
    for text in warnings:
        logger.warning(text)
    return PageResult(path=out / PAGE_NAME, layers=tuple(n for n in ("mesh", "splats", "cameras") if n in data),
                      frames=len(data["frames"]), bytes=sum((out / n).stat().st_size for n in (PAGE_NAME, DATA_NAME, BUNDLE_NAME)),
                      warnings=tuple(warnings))


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _cameras_and_frames(run: RunDir):
    """(Cameras or None, frame image paths): from poses/transforms.json (registered frames),
    else clip/transforms.json (known cameras), else the clip's frames without cameras."""
    from orbitforge.cameras import from_transforms_json

    for stage in ("poses", "clip"):
        transforms = run.root / stage / "transforms.json"
        if transforms.is_file():
            cameras, paths = from_transforms_json(transforms)
            return cameras, [transforms.parent / p for p in paths]
    return None, sorted((run.root / "clip" / "frames").glob("*.png"))


def _metric_lines(stages: dict) -> list[str]:
    """Short lines for the header from the manifest's recorded stage metrics."""
    lines = []
    clip = stages.get("clip", {}).get("metrics", {})
    if clip.get("frames"):
        size = f", {clip['width']}×{clip['height']}" if clip.get("width") else (f", {clip['size']}²" if clip.get("size") else "")
        lines.append(f"clip: {clip['frames']} frames{size}")
    poses = stages.get("poses", {}).get("metrics", {})
    if poses.get("registered") is not None:
        lines.append(f"poses: {poses['registered']}/{poses.get('images', '?')} registered, "
                     f"{poses.get('mean_reprojection_px', '?')} px reprojection")
    splats = stages.get("splats", {}).get("metrics", {})
    if splats.get("psnr") is not None:
        lines.append(f"splats: {splats['psnr']:.2f} dB PSNR, SSIM {splats.get('ssim', float('nan')):.3f} held out, "
                     f"{splats.get('gaussians', 0):,} Gaussians")
    asset = stages.get("asset", {}).get("metrics", {})
    if asset.get("faces") is not None:
        errors = asset.get("validation", {}).get("errors", "?")
        lines.append(f"mesh: {asset['faces']:,} faces, {errors} validator errors")
    return lines


def _mesh_to_world(placement: dict | None) -> list[float]:
    """Column-major 4x4 taking the GLB's coordinates back into the run's world (the inverse of
    the export placement); identity when none was recorded."""
    from orbitforge.export.presets import Placement

    m = Placement.from_json(placement).file_to_world() if placement else np.eye(4)
    return m.T.ravel().tolist()


def _splat_data(path: Path, max_splats: int) -> tuple[dict, np.ndarray, int, int]:
    """antimatter15 .splat bytes of the run's splats in world coordinates (largest x most
    opaque first, so the cut keeps the most visible), a robust (2, 3) box around them, and the
    kept and total counts."""
    from orbitforge.export.splat_formats import splat_bytes
    from orbitforge.gaussians import load_ply

    scene = load_ply(path)
    raw = splat_bytes(scene)
    total = scene.num_gaussians
    kept = min(total, max_splats)
    means = scene.means.detach().cpu().numpy().astype(np.float64)
    box = np.percentile(means, [5, 95], axis=0)
    return {"bytes": _b64(raw[: 32 * kept]), "count": kept}, box, kept, total


def _camera_data(cameras) -> list[dict]:
    """Per camera: frustum corners in world coordinates (depth scaled to the rig), a short
    up-tick, and the pose in OpenGL axes (column-major) with the vertical fov, for 'look through'."""
    from orbitforge.cameras import c2w_to_frame

    centres = cameras.centres
    spread = np.linalg.norm(centres - centres.mean(axis=0), axis=1)
    depth = 0.12 * float(np.median(spread)) if len(cameras) > 1 and np.median(spread) > 0 else 0.1
    w, h = cameras.width, cameras.height
    corners_px = np.array([[0, 0], [w, 0], [w, h], [0, h], [w / 2, 0]], np.float64)
    out = []
    gl = c2w_to_frame(cameras.c2w, "opengl")
    for i in range(len(cameras)):
        K, c2w = cameras.K[i], cameras.c2w[i]
        rays = np.stack([(corners_px[:, 0] - K[0, 2]) / K[0, 0], (corners_px[:, 1] - K[1, 2]) / K[1, 1],
                         np.ones(len(corners_px))], axis=1) * depth
        world = rays @ c2w[:3, :3].T + c2w[:3, 3]
        top = world[4]
        up_tip = top - c2w[:3, 1] * 0.25 * depth  # OpenCV y points down in the image
        out.append({
            "frustum": np.round(np.vstack([c2w[:3, 3], world[:4]]), 6).tolist(),
            "up": np.round([top, up_tip], 6).tolist(),
            "c2wGl": np.round(gl[i].T.ravel(), 6).tolist(),
            "fovY": float(cameras.fov_y_deg[i]),
        })
    return out


def _thumbnails(files: list[Path], config: PageConfig, *, has_cameras: bool) -> list[dict]:
    """Up to `max_thumbnails` evenly spaced frames as small JPEG data URLs."""
    from PIL import Image

    if not files or config.max_thumbnails == 0:
        return []
    pick = np.unique(np.linspace(0, len(files) - 1, min(config.max_thumbnails, len(files))).round().astype(int))
    thumbs = []
    for i in pick:
        path = files[i]
        if not path.is_file():
            continue
        with Image.open(path) as im:
            im = im.convert("RGB")
            im.thumbnail((config.thumbnail_side, config.thumbnail_side), Image.Resampling.LANCZOS)
            buffer = io.BytesIO()
            im.save(buffer, format="JPEG", quality=80)
        thumbs.append({"thumb": "data:image/jpeg;base64," + _b64(buffer.getvalue()),
                       "label": f"frame {i}: {path.name}", "camera": int(i) if has_cameras else None})
    return thumbs


def _initial_view(data: dict, cameras, run: RunDir, splat_box: np.ndarray | None) -> dict:
    """Orbit target, eye and clip planes: aimed at the object (the mesh's box, else the cameras'
    common look-at point, else the splats' box), from outside the camera rig so it is in view."""
    placement = run.manifest.get("stages", {}).get("asset", {}).get("metrics", {}).get("placement_gltf")
    if "mesh" in data and placement:
        # the placed GLB's box is (0 ± x, 0..height, 0 ± z) around the pivot; its world centre:
        height = float(placement.get("height_m") or 1.0)
        rotation, scale = np.asarray(placement["matrix"], np.float64), float(placement["scale"])
        target = np.asarray(placement["pivot"], np.float64) + rotation.T @ np.array([0.0, height / 2, 0.0]) / scale
        radius = height / scale
    elif cameras is not None and len(cameras) > 1:
        target, radius = _look_at_point(cameras), None
    elif splat_box is not None:
        target, radius = splat_box.mean(axis=0), float(np.linalg.norm(splat_box[1] - splat_box[0])) / 2 or 1.0
    else:
        target, radius = np.zeros(3), 1.0
    if cameras is not None and len(cameras):
        eye, distance = _eye_over_rig(cameras.centres, target)
        radius = radius or distance
    else:
        eye = target + np.array([0.0, 0.6, 1.6]) * radius * 1.6
    far = float(np.linalg.norm(eye - target)) * 20 + 10 * radius
    return {"target": np.round(target, 6).tolist(), "eye": np.round(eye, 6).tolist(),
            "near": round(far / 20000, 6), "far": round(far, 3)}


def _eye_over_rig(centres: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, float]:
    """An eye outside the camera rig, raised off the rig's plane (about 30 degrees for an
    orbit), so the frustums read as a ring around the object rather than a line; and the rig's
    median distance from the target."""
    offsets = centres - target
    distance = float(np.median(np.linalg.norm(offsets, axis=1))) or 1.0
    side = offsets[0] / (np.linalg.norm(offsets[0]) or 1.0)
    if len(centres) >= 3:
        normal = np.linalg.svd(centres - centres.mean(axis=0))[2][2]
        normal = normal if normal[1] >= 0 else -normal  # the side of the rig that is up
        side = side - normal * (side @ normal)
        side = side / (np.linalg.norm(side) or 1.0)
        direction = 0.85 * side + 0.5 * normal
    else:
        direction = side + np.array([0.0, 0.4, 0.0])
    return target + direction / np.linalg.norm(direction) * 1.8 * distance, distance


def _look_at_point(cameras) -> np.ndarray:
    """The point nearest to every camera's optical axis (least squares): an orbit's centre."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c2w in cameras.c2w:
        d = c2w[:3, 2] / np.linalg.norm(c2w[:3, 2])
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ c2w[:3, 3]
    if np.linalg.cond(A) > 1e8:
        return cameras.centres.mean(axis=0)
    return np.linalg.solve(A, b)


__all__ = ["PageConfig", "PageResult", "write_page", "bundle_path"]
