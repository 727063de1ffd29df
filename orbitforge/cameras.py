"""Cameras: the one place in orbitforge that knows coordinate conventions.

Internal convention, used by every stage:

* camera axes are OpenCV's: x right, y down, z forward (the camera looks along +z);
* poses are camera-to-world (`c2w`, (N, 4, 4) float64);
* the world is right-handed with +Y up, in metres (or a scale recorded in run.json), and the
  front of an asset faces +Z, as in glTF;
* pixel (col i, row j) covers [i, i+1) x [j, j+1) and its centre is at (i + 0.5, j + 0.5), the
  COLMAP / nerfstudio / gsplat convention, so a centred principal point is (W/2, H/2).

Everything else (nerfstudio `transforms.json`, COLMAP, Blender/NeRF-synthetic, glTF, Unity,
Unreal) is converted at the edges by the functions here, and nowhere else.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from orbitforge.errors import InputError

if TYPE_CHECKING:  # pycolmap is heavy; import it only where a COLMAP model is touched
    import pycolmap

logger = logging.getLogger(__name__)

MAX_IMAGE_SIDE = 16384
"""Larger images are refused: a 16k side already needs ~1 GB per RGB float frame."""

# --------------------------------------------------------------------------------------------
# Frames: (world change W, camera axes A, unit scale).  For a frame F, a pose converts as
#   R_F = W @ R @ A,   t_F = scale * W @ t
# where W maps orbitforge world coordinates to F's world coordinates and the columns of A are
# F's camera axes written in OpenCV camera coordinates.
# --------------------------------------------------------------------------------------------

Frame = Literal["opencv", "opengl", "nerfstudio", "blender", "gltf", "unity", "unreal"]

_I3 = np.eye(3)
_OPENGL_AXES = np.diag([1.0, -1.0, -1.0])  # x right, y up, z backward
# Blender and NeRF-synthetic: right-handed, +Z up.  Ours (x, y, z) -> Blender (x, -z, y).
_BLENDER_WORLD = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
# Unity: left-handed, +Y up, +Z forward.  glTFast imports glTF by negating x.
_UNITY_WORLD = np.diag([-1.0, 1.0, 1.0])
_UNITY_AXES = np.diag([1.0, -1.0, 1.0])  # camera: x right, y up, z forward
# Unreal: left-handed, +Z up, +X forward, +Y right, centimetres.  An asset's front (+Z in glTF)
# becomes +X, its right (-X in glTF) becomes +Y and its up (+Y) becomes +Z.
_UNREAL_WORLD = np.array([[0.0, 0, 1], [-1, 0, 0], [0, 1, 0]])
_UNREAL_AXES = np.array([[0.0, 1, 0], [0, 0, -1], [1, 0, 0]])  # columns: forward, right, up

FRAMES: dict[str, tuple[np.ndarray, np.ndarray, float]] = {
    "opencv": (_I3, _I3, 1.0),
    "opengl": (_I3, _OPENGL_AXES, 1.0),
    "nerfstudio": (_I3, _OPENGL_AXES, 1.0),  # transforms.json keeps our world, OpenGL camera axes
    "gltf": (_I3, _OPENGL_AXES, 1.0),  # glTF cameras look down -Z, +Y up, metres
    "blender": (_BLENDER_WORLD, _OPENGL_AXES, 1.0),
    "unity": (_UNITY_WORLD, _UNITY_AXES, 1.0),
    "unreal": (_UNREAL_WORLD, _UNREAL_AXES, 100.0),
}
for _w, _a, _s in FRAMES.values():
    _w.setflags(write=False)
    _a.setflags(write=False)


def _frame(name: str) -> tuple[np.ndarray, np.ndarray, float]:
    try:
        return FRAMES[name]
    except KeyError:
        raise InputError(f"unknown frame {name!r}; expected one of {sorted(FRAMES)}") from None


def c2w_to_frame(c2w: np.ndarray, frame: Frame) -> np.ndarray:
    """Convert orbitforge camera-to-world poses (..., 4, 4) to another frame's convention."""
    world, axes, scale = _frame(frame)
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[..., :3, :3] = world @ out[..., :3, :3] @ axes
    out[..., :3, 3] = scale * (out[..., :3, 3] @ world.T)
    return out


def c2w_from_frame(c2w: np.ndarray, frame: Frame) -> np.ndarray:
    """Inverse of `c2w_to_frame`: another frame's camera-to-world poses back to orbitforge."""
    world, axes, scale = _frame(frame)
    out = np.array(c2w, dtype=np.float64, copy=True)
    out[..., :3, :3] = world.T @ out[..., :3, :3] @ axes.T
    out[..., :3, 3] = (out[..., :3, 3] @ world) / scale
    return out


def points_to_frame(points: np.ndarray, frame: Frame) -> np.ndarray:
    """Convert world points (..., 3) from orbitforge to another frame's world and units."""
    world, _, scale = _frame(frame)
    return scale * (np.asarray(points, dtype=np.float64) @ world.T)


def points_from_frame(points: np.ndarray, frame: Frame) -> np.ndarray:
    """Convert world points (..., 3) from another frame's world and units to orbitforge."""
    world, _, scale = _frame(frame)
    return (np.asarray(points, dtype=np.float64) @ world) / scale


# --------------------------------------------------------------------------------------------
# Cameras
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Cameras:
    """N pinhole cameras sharing one image size.

    Attributes:
        K: (N, 3, 3) float64 intrinsics in pixels (pixel centres at +0.5).
        c2w: (N, 4, 4) float64 camera-to-world, OpenCV camera axes, world +Y up.
        width, height: image size in pixels.
        distortion: optional (N, 4) float64 OpenCV k1, k2, p1, p2; None means none.
    """

    K: np.ndarray
    c2w: np.ndarray
    width: int
    height: int
    distortion: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        K = np.array(self.K, dtype=np.float64)
        c2w = np.array(self.c2w, dtype=np.float64)
        if K.ndim == 2:
            K = K[None]
        if c2w.ndim == 2:
            c2w = c2w[None]
        if c2w.shape[1:] == (3, 4):
            c2w = np.concatenate([c2w, np.broadcast_to([0.0, 0, 0, 1], (len(c2w), 1, 4))], axis=1)
        if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
            raise InputError(f"c2w must have shape (N, 4, 4), got {c2w.shape}")
        if K.shape[1:] != (3, 3):
            raise InputError(f"K must have shape (N, 3, 3) or (3, 3), got {K.shape}")
        if len(K) == 1 and len(c2w) > 1:
            K = np.repeat(K, len(c2w), axis=0)
        if len(K) != len(c2w):
            raise InputError(f"K has {len(K)} cameras but c2w has {len(c2w)}")
        if not (np.isfinite(K).all() and np.isfinite(c2w).all()):
            raise InputError("camera intrinsics or poses contain NaN or inf")
        if len(c2w):
            rot = c2w[:, :3, :3]
            ortho = np.abs(rot @ rot.transpose(0, 2, 1) - np.eye(3)).max()
            if ortho > 1e-4 or (np.linalg.det(rot) < 0).any():
                raise InputError(
                    "c2w rotations must be proper rotations (orthonormal, det +1); "
                    f"max |R R^T - I| = {ortho:.2g}: check the source's axis convention"
                )
        width, height = int(self.width), int(self.height)
        check_image_size(width, height)
        dist = None
        if self.distortion is not None:
            dist = np.array(self.distortion, dtype=np.float64).reshape(-1, 4)
            if len(dist) == 1:
                dist = np.repeat(dist, len(c2w), axis=0)
            if len(dist) != len(c2w):
                raise InputError(f"distortion has {len(dist)} rows for {len(c2w)} cameras")
            if not dist.any():
                dist = None
        for name, value in (("K", K), ("c2w", c2w), ("width", width), ("height", height)):
            object.__setattr__(self, name, value)
        object.__setattr__(self, "distortion", dist)
        for arr in (K, c2w, dist):
            if arr is not None:
                arr.setflags(write=False)

    def __len__(self) -> int:
        return len(self.c2w)

    def __getitem__(self, index: int | slice | np.ndarray | Sequence[int]) -> "Cameras":
        idx = np.arange(len(self))[index]
        idx = np.atleast_1d(idx)
        dist = None if self.distortion is None else self.distortion[idx]
        return Cameras(self.K[idx], self.c2w[idx], self.width, self.height, dist)

    @property
    def w2c(self) -> np.ndarray:
        """(N, 4, 4) world-to-camera, computed in closed form (R^T, -R^T t)."""
        out = np.zeros_like(self.c2w)
        rot_t = self.c2w[:, :3, :3].transpose(0, 2, 1)
        out[:, :3, :3] = rot_t
        out[:, :3, 3] = -np.einsum("nij,nj->ni", rot_t, self.c2w[:, :3, 3])
        out[:, 3, 3] = 1.0
        return out

    @property
    def centres(self) -> np.ndarray:
        """(N, 3) camera centres in the world."""
        return self.c2w[:, :3, 3].copy()

    @property
    def fov_y_deg(self) -> np.ndarray:
        """(N,) vertical field of view in degrees."""
        return np.degrees(2 * np.arctan(self.height / (2 * self.K[:, 1, 1])))

    def resized(self, width: int, height: int) -> "Cameras":
        """The same cameras for images resampled to (width, height)."""
        sx, sy = width / self.width, height / self.height
        K = self.K.copy()
        K[:, 0] *= sx
        K[:, 1] *= sy
        return Cameras(K, self.c2w, width, height, self.distortion)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Project world points into every camera.

        Args:
            points: (P, 3) world points.
        Returns:
            uv: (N, P, 2) pixel coordinates (centres at +0.5), distortion applied.
            depth: (N, P) z in camera coordinates (positive in front of the camera).
        """
        pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        w2c = self.w2c
        cam = np.einsum("nij,pj->npi", w2c[:, :3, :3], pts) + w2c[:, None, :3, 3]  # [N, P, 3]
        z = cam[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = cam[..., :2] / z[..., None]
        if self.distortion is not None:
            xy = _distort(xy, self.distortion)
        uv = np.einsum("nij,npj->npi", self.K[:, :2, :2], xy) + self.K[:, None, :2, 2]
        return uv, z

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """World rays through every pixel centre.

        Returns:
            origins: (N, H, W, 3) float32 camera centres.
            directions: (N, H, W, 3) float32 unit directions.
        """
        if self.distortion is not None:
            raise InputError("rays need undistorted cameras; undistort the images first")
        j, i = np.meshgrid(np.arange(self.height) + 0.5, np.arange(self.width) + 0.5, indexing="ij")
        pix = np.stack([i, j, np.ones_like(i)], axis=-1)  # [H, W, 3]
        cam_dirs = np.einsum("nij,hwj->nhwi", np.linalg.inv(self.K), pix)  # [N, H, W, 3]
        dirs = np.einsum("nij,nhwj->nhwi", self.c2w[:, :3, :3], cam_dirs)
        dirs /= np.linalg.norm(dirs, axis=-1, keepdims=True)
        origins = np.broadcast_to(self.c2w[:, None, None, :3, 3], dirs.shape)
        return origins.astype(np.float32), dirs.astype(np.float32)


def check_image_size(width: int, height: int) -> None:
    """Refuse image sizes that are empty or too large to hold, with one clear line."""
    if width < 1 or height < 1:
        raise InputError(f"image size must be at least 1x1 pixels, got {width}x{height}")
    if max(width, height) > MAX_IMAGE_SIDE:
        raise InputError(
            f"image size {width}x{height} exceeds the {MAX_IMAGE_SIDE}-pixel limit per side; "
            "use a smaller --size"
        )


def _distort(xy: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """OpenCV radial-tangential distortion of normalised coordinates (N, P, 2)."""
    k1, k2, p1, p2 = (dist[:, i, None] for i in range(4))
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    radial = 1 + k1 * r2 + k2 * r2 * r2
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> np.ndarray:
    """(3, 3) K with square pixels, a centred principal point and the given vertical fov."""
    if not 0.0 < fov_y_deg < 180.0:
        raise InputError(f"field of view must be in (0, 180) degrees, got {fov_y_deg}")
    focal = height / (2.0 * math.tan(math.radians(fov_y_deg) / 2.0))
    return np.array([[focal, 0, width / 2.0], [0, focal, height / 2.0], [0, 0, 1]])


def look_at(eye: Sequence[float], target: Sequence[float], up: Sequence[float] = (0, 1, 0)) -> np.ndarray:
    """(4, 4) OpenCV camera-to-world for a camera at `eye` looking at `target`, `up` kept up."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    forward = target - eye
    if np.linalg.norm(forward) < 1e-12:
        raise InputError("look_at needs the eye and the target to differ")
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, up)  # OpenCV: x = z cross (-y) with y pointing down
    if np.linalg.norm(right) < 1e-9:
        raise InputError("look_at: the view direction is parallel to `up`; pick another up")
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, down, forward, eye
    return c2w


def orbit(
    num_frames: int,
    *,
    radius: float,
    elevation_deg: float = 20.0,
    fov_deg: float = 40.0,
    width: int = 256,
    height: int = 256,
    target: Sequence[float] = (0.0, 0.0, 0.0),
    start_azimuth_deg: float = 0.0,
    sweep_deg: float = 360.0,
) -> Cameras:
    """Cameras evenly spaced on a circle around `target`, all looking at it, +Y up.

    Azimuth 0 looks at the asset's front (the camera sits on +Z) and increases counter-clockwise
    seen from above.  A full 360 degree sweep does not repeat the first view at the end.
    """
    if num_frames < 1:
        raise InputError(f"an orbit needs at least 1 frame, got {num_frames}")
    if not radius > 0:
        raise InputError(f"orbit radius must be positive, got {radius}")
    if not -90.0 < elevation_deg < 90.0:
        raise InputError(f"elevation must be in (-90, 90) degrees, got {elevation_deg}")
    check_image_size(width, height)
    closed = abs(abs(sweep_deg) - 360.0) < 1e-9
    steps = num_frames if closed else max(num_frames - 1, 1)
    azimuths = np.radians(start_azimuth_deg + sweep_deg * np.arange(num_frames) / steps)
    elev = math.radians(elevation_deg)
    offsets = radius * np.stack(
        [np.sin(azimuths) * math.cos(elev), np.full_like(azimuths, math.sin(elev)), np.cos(azimuths) * math.cos(elev)],
        axis=-1,
    )
    tgt = np.asarray(target, dtype=np.float64)
    c2w = np.stack([look_at(tgt + off, tgt) for off in offsets])
    return Cameras(intrinsics_from_fov(fov_deg, width, height), c2w, width, height)


def orbit_radius_to_fit(bound_radius: float, fov_deg: float, margin: float = 1.15) -> float:
    """Distance at which a sphere of `bound_radius` fills the view with `margin` to spare."""
    return margin * bound_radius / math.sin(math.radians(fov_deg) / 2.0)


def plucker_rays(cameras: Cameras) -> np.ndarray:
    """Per-pixel Plücker coordinates (direction, moment = origin x direction).

    Returns (N, H, W, 6) float32; the moment is invariant to where on the ray the origin sits,
    which is why video models condition on it rather than on raw origins.
    """
    origins, dirs = cameras.rays()
    return np.concatenate([dirs, np.cross(origins, dirs)], axis=-1).astype(np.float32)


# --------------------------------------------------------------------------------------------
# nerfstudio transforms.json and Blender / NeRF-synthetic
# --------------------------------------------------------------------------------------------


def to_transforms_json(cameras: Cameras, file_paths: Sequence[str], *, frame: Frame = "nerfstudio") -> dict:
    """nerfstudio `transforms.json` content (OpenGL camera axes).

    Shared intrinsics are written once at the top level; cameras whose intrinsics differ get
    them per frame, as nerfstudio's format allows.
    """
    if len(file_paths) != len(cameras):
        raise InputError(f"{len(file_paths)} file paths for {len(cameras)} cameras")
    c2w = c2w_to_frame(cameras.c2w, frame)
    shared = bool(np.allclose(cameras.K, cameras.K[:1]))
    dist = cameras.distortion
    shared_dist = dist is None or bool(np.allclose(dist, dist[:1]))

    def intrinsics(i: int) -> dict:
        K = cameras.K[i]
        d = {"fl_x": K[0, 0], "fl_y": K[1, 1], "cx": K[0, 2], "cy": K[1, 2]}
        if dist is not None:
            d.update(zip(("k1", "k2", "p1", "p2"), dist[i]))
        return {k: float(v) for k, v in d.items()}

    out: dict = {"camera_model": "OPENCV", "w": cameras.width, "h": cameras.height}
    if shared and shared_dist and len(cameras):
        out.update(intrinsics(0))
    frames = []
    for i, path in enumerate(file_paths):
        entry = {"file_path": str(path), "transform_matrix": c2w[i].tolist()}
        if not (shared and shared_dist):
            entry.update(intrinsics(i))
        frames.append(entry)
    out["frames"] = frames
    out["orbitforge_frame"] = frame
    return out


def write_transforms_json(path: Path | str, cameras: Cameras, file_paths: Sequence[str]) -> None:
    Path(path).write_text(json.dumps(to_transforms_json(cameras, file_paths), indent=2))


def from_transforms_json(data: dict | Path | str, *, frame: Frame | None = None) -> tuple[Cameras, list[str]]:
    """Read nerfstudio `transforms.json` or a NeRF-synthetic `transforms_*.json`.

    `frame` defaults to what the file says it is: orbitforge writes `orbitforge_frame`; a file
    with `camera_angle_x` is NeRF-synthetic (Blender world, +Z up); anything else is taken as
    nerfstudio (OpenGL camera axes, world kept as is).  Image size comes from `w`/`h` or, when
    absent, from the first image on disk.
    """
    base = None
    if not isinstance(data, dict):
        path = Path(data)
        if not path.is_file():
            raise InputError(f"transforms file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{path} is not valid JSON ({exc}); re-export it") from None
        base = path.parent
    frames = data.get("frames")
    if not frames:
        raise InputError("transforms.json has no frames")
    if frame is None:
        frame = data.get("orbitforge_frame") or ("blender" if "camera_angle_x" in data else "nerfstudio")
    width, height = data.get("w"), data.get("h")
    if width is None or height is None:
        width, height = _image_size(frames[0]["file_path"], base)
    Ks, dists = [], []
    for f in frames:
        get = lambda key: f.get(key, data.get(key))  # noqa: E731  per-frame overrides shared
        if get("fl_x") is not None:
            fx, fy = float(get("fl_x")), float(get("fl_y") or get("fl_x"))
        elif get("camera_angle_x") is not None:
            fx = fy = 0.5 * width / math.tan(0.5 * float(get("camera_angle_x")))
        else:
            raise InputError("transforms.json gives neither fl_x nor camera_angle_x")
        cx = float(get("cx")) if get("cx") is not None else width / 2.0
        cy = float(get("cy")) if get("cy") is not None else height / 2.0
        Ks.append([[fx, 0, cx], [0, fy, cy], [0, 0, 1]])
        dists.append([float(get(k) or 0.0) for k in ("k1", "k2", "p1", "p2")])
    c2w = c2w_from_frame(np.array([f["transform_matrix"] for f in frames], dtype=np.float64), frame)
    cams = Cameras(np.array(Ks), c2w, int(width), int(height), np.array(dists))
    return cams, [f["file_path"] for f in frames]


def _image_size(file_path: str, base: Path | None) -> tuple[int, int]:
    from PIL import Image

    path = Path(file_path) if base is None else base / file_path
    candidates = [path] + [path.with_name(path.name + ext) for ext in (".png", ".jpg")]
    for cand in candidates:
        if cand.is_file():
            with Image.open(cand) as im:
                return im.size
    raise InputError(f"transforms.json has no w/h and its first image {path} was not found")


# --------------------------------------------------------------------------------------------
# COLMAP, through pycolmap objects
# --------------------------------------------------------------------------------------------


def to_colmap(cameras: Cameras, names: Sequence[str]) -> "pycolmap.Reconstruction":
    """A pycolmap Reconstruction holding these cameras as registered images (no points).

    One COLMAP camera per distinct intrinsics; PINHOLE without distortion, OPENCV with it.
    """
    import pycolmap

    if len(names) != len(cameras):
        raise InputError(f"{len(names)} image names for {len(cameras)} cameras")
    rec = pycolmap.Reconstruction()
    camera_ids: dict[bytes, int] = {}
    w2c = cameras.w2c
    for i, name in enumerate(names):
        K = cameras.K[i]
        dist = None if cameras.distortion is None else cameras.distortion[i]
        key = K.tobytes() + (b"" if dist is None else dist.tobytes())
        if key not in camera_ids:
            camera_ids[key] = len(camera_ids) + 1
            rec.add_camera_with_trivial_rig(colmap_camera(K, dist, cameras.width, cameras.height, camera_ids[key]))
        image = pycolmap.Image(name=str(name), camera_id=camera_ids[key], image_id=i + 1)
        pose = pycolmap.Rigid3d(w2c[i, :3, :4])
        rec.add_image_with_trivial_frame(image, pose)
    return rec


def colmap_camera(K: np.ndarray, dist: np.ndarray | None, width: int, height: int,
                  camera_id: int | None = None) -> "pycolmap.Camera":
    """A pycolmap camera for K (3, 3) and OpenCV distortion (4,): PINHOLE without, OPENCV with."""
    import pycolmap

    params = [K[0, 0], K[1, 1], K[0, 2], K[1, 2]] + ([] if dist is None else list(dist))
    extra = {} if camera_id is None else {"camera_id": camera_id}
    return pycolmap.Camera(model="PINHOLE" if dist is None else "OPENCV", width=width, height=height,
                           params=params, **extra)


def colmap_intrinsics(camera: "pycolmap.Camera") -> tuple[np.ndarray, np.ndarray]:
    """K (3, 3) and OpenCV distortion (4,) from a COLMAP camera model."""
    model = camera.model.name
    p = list(camera.params)
    dist = np.zeros(4)
    if model == "SIMPLE_PINHOLE":
        fx = fy = p[0]
        cx, cy = p[1], p[2]
    elif model == "PINHOLE":
        fx, fy, cx, cy = p[:4]
    elif model == "SIMPLE_RADIAL":
        fx = fy = p[0]
        cx, cy, dist[0] = p[1], p[2], p[3]
    elif model == "RADIAL":
        fx = fy = p[0]
        cx, cy, dist[0], dist[1] = p[1:5]
    elif model == "OPENCV":
        fx, fy, cx, cy = p[:4]
        dist[:] = p[4:8]
    else:
        raise InputError(
            f"COLMAP camera model {model} is not supported; re-run COLMAP with PINHOLE, "
            "SIMPLE_RADIAL, RADIAL or OPENCV"
        )
    return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]]), dist


def from_colmap(rec: "pycolmap.Reconstruction | Path | str") -> tuple[Cameras, list[str]]:
    """Cameras of a COLMAP reconstruction's registered images, sorted by image name.

    COLMAP stores world-to-camera poses in OpenCV camera axes, so only an inversion is needed.
    """
    import pycolmap

    if not isinstance(rec, pycolmap.Reconstruction):
        path = Path(rec)
        if not path.is_dir():
            raise InputError(f"COLMAP model folder not found: {path}")
        try:
            rec = pycolmap.Reconstruction(str(path))
        except Exception as exc:  # pycolmap raises plain RuntimeError/ValueError for bad folders
            raise InputError(f"{path} is not a readable COLMAP model ({exc})") from None
    images = sorted((img for img in rec.images.values() if img.has_pose), key=lambda img: img.name)
    if not images:
        raise InputError("the COLMAP model has no registered images")
    sizes = {(img.camera.width, img.camera.height) for img in images}
    if len(sizes) > 1:
        raise InputError(f"images have different sizes {sorted(sizes)}; orbitforge needs one size per clip")
    Ks, dists, c2ws = [], [], []
    for img in images:
        K, dist = colmap_intrinsics(img.camera)
        w2c = np.eye(4)
        w2c[:3, :4] = img.cam_from_world().matrix()
        Ks.append(K)
        dists.append(dist)
        c2ws.append(np.linalg.inv(w2c))
    width, height = sizes.pop()
    return Cameras(np.array(Ks), np.array(c2ws), width, height, np.array(dists)), [img.name for img in images]
