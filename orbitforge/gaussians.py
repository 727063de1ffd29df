"""`GaussianScene`: the 3D Gaussian splatting state every stage passes along, and its PLY IO.

The PLY layout is the one written by the INRIA reference code (Kerbl et al. 2023,
graphdeco-inria/gaussian-splatting, `GaussianModel.save_ply`), so files open in the common
viewers and trainers without conversion.  World convention: right-handed, +Y up, metres.
"""

from __future__ import annotations

import io
import logging
import math
import os
import re
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import plyfile
import torch
from torch import Tensor

from orbitforge.errors import InputError

logger = logging.getLogger(__name__)

SH_C0 = 0.28209479177387814
"""Degree-0 real spherical harmonic, 1 / (2 sqrt(pi)); maps the DC coefficient to RGB."""

_VALID_K = (1, 4, 9, 16)  # SH degrees 0..3, as supported by gsplat and the INRIA rasterizer
_INIT_OPACITY = 0.1  # INRIA init: low enough that densification can still decide what matters
_MIN_SCALE_M = 1e-7  # keeps log() finite when two input points coincide
_KNN_NEIGHBOURS = 3  # as INRIA's distCUDA2
_REQUIRED_PROPS = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                   "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")
_F_REST_RE = re.compile(r"^f_rest_(\d+)$")


def rgb_to_sh(rgb: Tensor) -> Tensor:
    """RGB in [0, 1] (any shape) to the DC SH coefficient that renders back as that colour."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh_dc: Tensor) -> Tensor:
    """Inverse of `rgb_to_sh`: DC SH coefficient (any shape) to RGB, unclamped."""
    return sh_dc * SH_C0 + 0.5


@dataclass(frozen=True, eq=False)
class GaussianScene:
    """N anisotropic 3D Gaussians, stored in the unconstrained form the optimiser works in.

    Fields (all float32, one device; frozen so a validated scene stays valid, `eq=False`
    because tensor equality is elementwise):
        means:           (N, 3) world positions, metres, right-handed, +Y up.
        log_scales:      (N, 3) natural log of the per-axis standard deviation, metres.
        quats_wxyz:      (N, 4) rotation quaternions, w first; need not be normalised.
        logit_opacities: (N,)   sigmoid gives opacity in (0, 1).
        sh:              (N, K, 3) SH coefficients per RGB channel, K = (degree + 1)^2 in
                         {1, 4, 9, 16}; sh[:, 0, :] is the DC term (see `rgb_to_sh`).
    """

    means: Tensor
    log_scales: Tensor
    quats_wxyz: Tensor
    logit_opacities: Tensor
    sh: Tensor

    def __post_init__(self) -> None:
        """Fail here, with the offending field named, rather than deep inside a rasterizer."""
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, Tensor):
                raise InputError(f"GaussianScene.{f.name}: expected a torch.Tensor, "
                                 f"got {type(value).__name__}; wrap it with torch.as_tensor(...)")
            if value.dtype != torch.float32:
                raise InputError(f"GaussianScene.{f.name}: expected float32, got {value.dtype}; "
                                 f"convert with .float()")
        if self.means.ndim != 2 or self.means.shape[1] != 3:
            raise InputError(f"GaussianScene.means: expected shape (N, 3), "
                             f"got {tuple(self.means.shape)}")
        n = self.means.shape[0]
        k = self.sh.shape[1] if self.sh.ndim == 3 else -1
        expected = {"log_scales": (n, 3), "quats_wxyz": (n, 4), "logit_opacities": (n,),
                    "sh": (n, k if k in _VALID_K else "K", 3)}
        for name, shape in expected.items():
            got = tuple(getattr(self, name).shape)
            if got != shape:
                hint = " with K in (1, 4, 9, 16)" if name == "sh" else ""
                raise InputError(f"GaussianScene.{name}: expected shape {shape}{hint} "
                                 f"(N={n} from means), got {got}")
        devices = {f.name: getattr(self, f.name).device for f in fields(self)}
        if len(set(devices.values())) > 1:
            raise InputError(f"GaussianScene: expected all tensors on one device, got {devices}; "
                             f"build the scene, then call .to(device)")

    @property
    def num_gaussians(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return math.isqrt(self.sh.shape[1]) - 1

    @property
    def opacities(self) -> Tensor:
        """(N,) opacity in (0, 1)."""
        return torch.sigmoid(self.logit_opacities)

    @property
    def scales(self) -> Tensor:
        """(N, 3) per-axis standard deviation, metres."""
        return torch.exp(self.log_scales)

    def render_params(self) -> dict[str, Tensor]:
        """The scene as the parameter dict `render_splats` and the trainer take (gsplat's names:
        means, scales (log), quats (wxyz), opacities (logit), sh0 [N, 1, 3], shN [N, K-1, 3]),
        detached float32 copies."""
        params = {"means": self.means, "scales": self.log_scales, "quats": self.quats_wxyz,
                  "opacities": self.logit_opacities, "sh0": self.sh[:, :1], "shN": self.sh[:, 1:]}
        return {k: v.detach().float().contiguous() for k, v in params.items()}

    def to(self, device: torch.device | str) -> GaussianScene:
        """A new scene on `device`; this one is left untouched."""
        return GaussianScene(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    @classmethod
    def from_points(cls, points: Tensor, colors: Tensor, sh_degree: int = 3,
                    scale: float | None = None) -> GaussianScene:
        """Initialise one Gaussian per point, as the INRIA trainer does from an SfM cloud.

        Args:
            points: (N, 3) float, world positions in metres.
            colors: (N, 3) RGB, float in [0, 1] or uint8 in [0, 255].
            sh_degree: 0..3; only the DC term is set, higher bands start at zero.
            scale: isotropic standard deviation in metres for every Gaussian.  None uses the
                mean distance to the 3 nearest neighbours, so dense regions get small splats.
        Returns:
            A scene on the device of `points`, opacity 0.1 and identity rotations.
        """
        points = torch.as_tensor(points)
        colors = torch.as_tensor(colors, device=points.device)
        if points.ndim != 2 or points.shape[1] != 3 or tuple(colors.shape) != tuple(points.shape):
            raise InputError(f"from_points: expected points (N, 3) and colors (N, 3), got "
                             f"{tuple(points.shape)} and {tuple(colors.shape)}")
        if sh_degree not in range(len(_VALID_K)):
            raise InputError(f"from_points: expected sh_degree in 0..3, got {sh_degree}")
        n = points.shape[0]
        points = points.float()
        rgb = colors.float() / 255.0 if colors.dtype == torch.uint8 else colors.float()

        if scale is not None:
            if not scale > 0:
                raise InputError(f"from_points: expected scale > 0 metres, got {scale}")
            dist = torch.full((n,), float(scale))
        elif n < 2:
            raise InputError(f"from_points: need at least 2 points to estimate scales from "
                             f"neighbours, got {n}; pass scale=<metres>")
        else:
            dist = _knn_mean_dist(points.detach().cpu(), min(_KNN_NEIGHBOURS, n - 1))
        log_scales = torch.log(dist.clamp_min(_MIN_SCALE_M))[:, None].expand(n, 3)  # [N, 3]

        sh = torch.zeros(n, (sh_degree + 1) ** 2, 3, device=points.device)  # [N, K, 3]
        sh[:, 0, :] = rgb_to_sh(rgb)
        quats = torch.zeros(n, 4, device=points.device)
        quats[:, 0] = 1.0
        logit = math.log(_INIT_OPACITY / (1.0 - _INIT_OPACITY))
        return cls(means=points.clone(), log_scales=log_scales.contiguous().to(points.device),
                   quats_wxyz=quats, logit_opacities=torch.full((n,), logit, device=points.device),
                   sh=sh)

    def save_ply(self, path: str | os.PathLike) -> None:
        """Thin alias of the module-level `save_ply`."""
        save_ply(self, path)

    @classmethod
    def load_ply(cls, path: str | os.PathLike) -> GaussianScene:
        """Thin alias of the module-level `load_ply`."""
        return load_ply(path)


def _knn_mean_dist(points: Tensor, k: int) -> Tensor:
    """(N, 3) CPU float32 -> (N,) mean distance to the k nearest other points; scipy if present."""
    try:
        from scipy.spatial import cKDTree
    except ImportError:
        return _reference_knn_mean_dist(points, k)
    pts = points.double().numpy()
    dist, _ = cKDTree(pts).query(pts, k=k + 1)  # [N, k+1]; column 0 is the point itself
    return torch.from_numpy(dist[:, 1:].mean(axis=1)).float()


def _reference_knn_mean_dist(points: Tensor, k: int, max_elems: int = 1 << 24) -> Tensor:
    """Pure-torch twin of `_knn_mean_dist`; chunked so each distance block has <= `max_elems`."""
    n = points.shape[0]
    chunk = max(1, max_elems // max(n, 1))
    out = []
    for start in range(0, n, chunk):
        d = torch.cdist(points[start:start + chunk].double(), points.double())  # [c, N]
        rows = torch.arange(d.shape[0])
        d[rows, rows + start] = float("inf")  # exclude self, keep coincident neighbours
        out.append(d.topk(k, dim=1, largest=False).values.mean(dim=1))  # [c]
    return torch.cat(out).float() if out else torch.zeros(0)


def _ply_property_names(k: int) -> tuple[str, ...]:
    """Vertex property order of INRIA's `construct_list_of_attributes` for K SH coefficients."""
    rest = tuple(f"f_rest_{i}" for i in range(3 * (k - 1)))
    return (("x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2") + rest
            + ("opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"))


def to_ply_bytes(scene: GaussianScene) -> bytes:
    """Serialise to a binary little-endian INRIA-layout PLY; rows holding NaN/inf are dropped."""
    n, k = scene.num_gaussians, scene.sh.shape[1]
    sh = scene.sh.detach().cpu()
    # INRIA stores features_rest [N, K-1, 3] transposed to [N, 3, K-1]: all red, then green, blue.
    f_rest = sh[:, 1:, :].transpose(1, 2).reshape(n, 3 * (k - 1))  # [N, 3*(K-1)]
    columns = torch.cat([scene.means.detach().cpu(), torch.zeros(n, 3), sh[:, 0, :], f_rest,
                         scene.logit_opacities.detach().cpu()[:, None],
                         scene.log_scales.detach().cpu(), scene.quats_wxyz.detach().cpu()], dim=1)
    finite = torch.isfinite(columns).all(dim=1)  # [N]
    if not bool(finite.all()):
        logger.warning("Dropped %d of %d gaussians holding NaN/inf while writing PLY",
                       int((~finite).sum()), n)
        columns = columns[finite]  # [N', P]
    names = _ply_property_names(k)
    assert columns.shape[1] == len(names)
    rows = np.empty(columns.shape[0], dtype=[(name, "<f4") for name in names])
    for i, name in enumerate(names):
        rows[name] = columns[:, i].numpy()
    buffer = io.BytesIO()
    plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex")], text=False,
                    byte_order="<").write(buffer)
    return buffer.getvalue()


def save_ply(scene: GaussianScene, path: str | os.PathLike) -> None:
    """Write `scene` to `path` atomically: a temp file in the same folder, then os.replace."""
    path = Path(path)
    if not path.parent.is_dir():
        raise InputError(f"save_ply: expected an existing folder for {path}, "
                         f"got missing {path.parent}; create it first")
    data = to_ply_bytes(scene)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except Exception:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_ply(path: str | os.PathLike) -> GaussianScene:
    """Read an INRIA-layout 3DGS PLY; property order is free and K follows from the f_rest count."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"load_ply: expected a 3D Gaussian splatting .ply file, "
                         f"got missing path {path}")
    try:
        # Memory-mapped: plyfile's only fast path (without mmap it reads property by property,
        # ~20 s per 50k Gaussians).  `stack` below copies every column, so the map is released
        # when this function returns and the file is not held open.
        with path.open("rb") as stream:
            ply = plyfile.PlyData.read(stream, mmap="c")
    except (plyfile.PlyParseError, ValueError, UnicodeDecodeError) as e:
        raise InputError(f"load_ply: expected a PLY file, could not parse {path}: {e}") from e
    if "vertex" not in ply:
        raise InputError(f"load_ply: expected a 'vertex' element in {path}, got elements "
                         f"{[el.name for el in ply.elements]}")
    vertex = ply["vertex"]
    present = [p.name for p in vertex.properties]
    rest_ids = sorted(int(m.group(1)) for m in map(_F_REST_RE.match, present) if m)
    k = len(rest_ids) // 3 + 1
    missing = [name for name in _REQUIRED_PROPS if name not in present]
    if len(rest_ids) % 3 or k not in _VALID_K:
        missing.append(f"f_rest_* count divisible by 3 with K in {_VALID_K} "
                       f"(found {len(rest_ids)})")
    elif rest_ids != list(range(len(rest_ids))):
        missing += [f"f_rest_{i}" for i in sorted(set(range(len(rest_ids))) - set(rest_ids))]
    if missing:
        raise InputError(f"load_ply: {path} is not a 3DGS PLY; missing or bad vertex properties: "
                         f"{', '.join(missing)}")

    def stack(names: list[str] | tuple[str, ...]) -> Tensor:
        cols = [np.asarray(vertex[name], dtype=np.float32) for name in names]
        return torch.from_numpy(np.stack(cols, axis=1) if cols else np.zeros((vertex.count, 0),
                                                                           np.float32))

    n = vertex.count
    f_rest = stack([f"f_rest_{i}" for i in rest_ids])  # [N, 3*(K-1)], channel-major
    sh_rest = f_rest.reshape(n, 3, k - 1).transpose(1, 2)  # [N, K-1, 3]
    sh = torch.cat([stack(("f_dc_0", "f_dc_1", "f_dc_2"))[:, None, :], sh_rest], dim=1)
    return GaussianScene(means=stack(("x", "y", "z")),
                         log_scales=stack(("scale_0", "scale_1", "scale_2")),
                         quats_wxyz=stack(("rot_0", "rot_1", "rot_2", "rot_3")),
                         logit_opacities=stack(("opacity",))[:, 0].contiguous(),
                         sh=sh.contiguous())
