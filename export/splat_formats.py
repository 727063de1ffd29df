"""Gaussian splat files: INRIA 3DGS PLY, antimatter15 `.splat`, and glTF `KHR_gaussian_splatting`.

* PLY: the INRIA property order (`x y z nx ny nz f_dc_0..2 f_rest_0..44 opacity scale_0..2
  rot_0..3`, float32 little-endian) with SH always padded to degree 3.  aras-p
  UnityGaussianSplatting (`GaussianFileReader.cs`) reads f_rest as 15 coefficients per channel
  whatever the file holds, and older versions demand the 248-byte vertex, so a degree-1 file
  would get its colours scrambled there.  SuperSplat reads any order.
* `.splat` (antimatter15/splat `convert.py`): 32 bytes per splat, position 3 x f32, linear scale
  3 x f32, RGBA u8 (DC colour, sigmoid opacity), quaternion u8 x 4 (w, x, y, z mapped by
  q * 128 + 128), sorted by size x opacity, largest first.
* KHR_gaussian_splatting (ratified Khronos extension): a POINTS primitive with POSITION and
  `KHR_gaussian_splatting:ROTATION` (VEC4 xyzw unit quaternion), `:SCALE` (VEC3 linear),
  `:OPACITY` (SCALAR, sigmoid applied), `:SH_DEGREE_l_COEF_n` (VEC3, raw coefficients as in the
  PLY), COLOR_0 as the point-cloud fallback, and `{"kernel": "ellipse", "colorSpace":
  "srgb_rec709_display"}`.  Listed in extensionsUsed only, so viewers without it still see points.

Frames: KHR GLB content is glTF (+Y up).  PLY and `.splat` consumers (SuperSplat, the
antimatter15 viewer) assume the COLMAP/INRIA habit of a Y-down world and roll what they load by
180 degrees about Z, so those files are written rolled (`SplatConfig.ply_up = "y_down"`), which
puts the asset upright in them.  Every frame change rotates positions, quaternions *and* the SH
coefficients (`sh_rotation`), so view-dependent colour turns with the splat.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from orbitforge.errors import InputError
from orbitforge.gaussians import SH_C0, GaussianScene, to_ply_bytes

logger = logging.getLogger(__name__)

SPLAT_BYTES = 32
"""Bytes per splat in antimatter15's .splat layout."""
KHR_EXT = "KHR_gaussian_splatting"
_FLOAT = 5126  # glTF componentType FLOAT
_UINT = 5125  # UNSIGNED_INT
_ARRAY_BUFFER = 34962
_POINTS = 0
Y_DOWN_ROLL = np.diag([-1.0, -1.0, 1.0])
"""180 degrees about Z: the roll SuperSplat and antimatter15 apply to PLY/.splat on load."""
Y_DOWN_ROLL.setflags(write=False)


@dataclass(frozen=True)
class SplatConfig:
    """Options for the splat files."""

    ply_up: Literal["y_down", "y_up"] = "y_down"
    """Frame of PLY and .splat: "y_down" shows upright in SuperSplat / antimatter15 viewers (they
    roll files 180 degrees); "y_up" keeps orbitforge's +Y-up world unchanged."""
    min_opacity: float = 0.0
    """Drop splats below this opacity (0 keeps all)."""


# ---------------------------------------------------------------------------------------------
# frame changes
# ---------------------------------------------------------------------------------------------


def _sh_basis(dirs: np.ndarray, degree: int) -> list[np.ndarray]:
    """Real SH basis per degree 1..degree at unit `dirs` (M, 3): list of (M, 2l+1) arrays, in the
    3DGS / gsplat order and signs (recon.splat.projection.sh_to_colour)."""
    from orbitforge.recon.splat.projection import SH_C1, SH_C2, SH_C3

    x, y, z = dirs[:, 0], dirs[:, 1], dirs[:, 2]
    out = []
    if degree >= 1:
        out.append(SH_C1 * np.stack([-y, z, -x], 1))
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        out.append(np.stack([c * b for c, b in zip(SH_C2, (x * y, y * z, 2 * zz - xx - yy, x * z, xx - yy))], 1))
    if degree >= 3:
        xx, yy, zz = x * x, y * y, z * z
        b3 = (y * (3 * xx - yy), x * y * z, y * (4 * zz - xx - yy), z * (2 * zz - 3 * xx - 3 * yy),
              x * (4 * zz - xx - yy), z * (xx - yy), x * (xx - 3 * yy))
        out.append(np.stack([c * b for c, b in zip(SH_C3, b3)], 1))
    return out


def sh_rotation(matrix: np.ndarray, degree: int) -> list[np.ndarray]:
    """Per-degree matrices D_l ((2l+1) x (2l+1)) such that coefficients c (rows = basis index)
    of a colour function f become D_l @ c for f rotated by `matrix`: f'(d) = f(R^T d).

    Computed by least squares on sampled directions, exact to float precision because each
    degree's span is closed under rotation (a Wigner-D matrix in the real basis).
    """
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(64, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rotated = dirs @ np.asarray(matrix, np.float64)  # R^T d for each row d
    out = []
    for b, b_rot in zip(_sh_basis(dirs, degree), _sh_basis(rotated, degree)):
        # b_rot = b @ M  =>  f'(d) = sum_i c_i Y_i(R^T d) = sum_j (M @ c)_j Y_j(d)
        m, *_ = np.linalg.lstsq(b, b_rot, rcond=None)
        out.append(m)
    return out


def _matrix_to_quat_wxyz(m: np.ndarray) -> np.ndarray:
    from scipy.spatial.transform import Rotation

    x, y, z, w = Rotation.from_matrix(m).as_quat()
    return np.array([w, x, y, z])


def _quat_mul_wxyz(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product a * b for (4,) a and (N, 4) b, both wxyz."""
    w1, x1, y1, z1 = a
    w2, x2, y2, z2 = b.T
    return np.stack([w1 * w2 - x1 * x2 - y1 * y2 - z1 * z2, w1 * x2 + x1 * w2 + y1 * z2 - z1 * y2,
                     w1 * y2 - x1 * z2 + y1 * w2 + z1 * x2, w1 * z2 + x1 * y2 - y1 * x2 + z1 * w2], 1)


def transform_scene(scene: GaussianScene, matrix: np.ndarray, scale: float, pivot: np.ndarray) -> GaussianScene:
    """Apply `p' = scale * matrix @ (p - pivot)` to every Gaussian (matrix a proper rotation):
    means, log-scales, quaternions and SH coefficients all follow."""
    matrix = np.asarray(matrix, np.float64)
    if abs(np.linalg.det(matrix) - 1) > 1e-6:
        raise InputError("splat transforms must be proper rotations (no mirroring)")
    means = scene.means.detach().cpu().double().numpy()
    new_means = scale * (means - np.asarray(pivot, np.float64)) @ matrix.T  # [N, 3]
    quats = _quat_mul_wxyz(_matrix_to_quat_wxyz(matrix), scene.quats_wxyz.detach().cpu().double().numpy())
    sh = scene.sh.detach().cpu().double().numpy().copy()  # [N, K, 3]
    for l, d in enumerate(sh_rotation(matrix, scene.sh_degree), start=1):
        sl = slice(l * l, (l + 1) * (l + 1))
        sh[:, sl, :] = np.einsum("ij,njc->nic", d, sh[:, sl, :])
    f = lambda a: torch.from_numpy(np.ascontiguousarray(a, np.float32))  # noqa: E731
    return GaussianScene(means=f(new_means), log_scales=f(scene.log_scales.detach().cpu().double().numpy() + math.log(scale)),
                         quats_wxyz=f(quats), logit_opacities=scene.logit_opacities.detach().cpu().float().clone(),
                         sh=f(sh))


def check_scene(scene: GaussianScene, min_opacity: float = 0.0) -> GaussianScene:
    """Drop non-finite (and, if asked, faint) splats with a warning; refuse an empty scene."""
    cols = [scene.means, scene.log_scales, scene.quats_wxyz, scene.logit_opacities[:, None], scene.sh.flatten(1)]
    keep = torch.isfinite(torch.cat([c.detach().cpu() for c in cols], 1)).all(1)
    keep &= scene.quats_wxyz.detach().cpu().norm(dim=1) > 0
    if min_opacity > 0:
        keep &= scene.opacities.detach().cpu() >= min_opacity
    if not bool(keep.all()):
        logger.warning("dropped %d of %d splats (NaN/inf, zero quaternion or opacity < %g)",
                       int((~keep).sum()), len(keep), min_opacity)
    if not bool(keep.any()):
        raise InputError("the splat scene has no usable Gaussians (all NaN, or all below the opacity cut)")
    return GaussianScene(*(getattr(scene, n).detach().cpu()[keep] for n in
                           ("means", "log_scales", "quats_wxyz", "logit_opacities", "sh")))


def pad_sh(scene: GaussianScene, degree: int = 3) -> GaussianScene:
    """The scene with zero SH coefficients added up to `degree`."""
    k = (degree + 1) ** 2
    if scene.sh.shape[1] >= k:
        return scene
    sh = torch.zeros(scene.num_gaussians, k, 3)
    sh[:, :scene.sh.shape[1]] = scene.sh.detach().cpu()
    return GaussianScene(scene.means, scene.log_scales, scene.quats_wxyz, scene.logit_opacities, sh)


# ---------------------------------------------------------------------------------------------
# serialisers
# ---------------------------------------------------------------------------------------------


def inria_ply_bytes(scene: GaussianScene) -> bytes:
    """INRIA-layout binary PLY, SH padded to degree 3 (62 float32 per splat, 248 bytes)."""
    return to_ply_bytes(pad_sh(scene, 3))


def _dc_rgb(scene: GaussianScene) -> np.ndarray:
    """(N, 3) sRGB-encoded base colour in [0, 1] from the DC SH term."""
    return np.clip(scene.sh[:, 0, :].detach().cpu().double().numpy() * SH_C0 + 0.5, 0.0, 1.0)


def splat_bytes(scene: GaussianScene) -> bytes:
    """antimatter15 `.splat`: 32 bytes per splat, largest x most opaque first."""
    n = scene.num_gaussians
    log_s = scene.log_scales.detach().cpu().double().numpy()
    opacity = scene.opacities.detach().cpu().double().numpy()
    order = np.argsort(-np.exp(log_s.sum(1)) * opacity, kind="stable")  # convert.py's sort key
    rows = np.zeros(n, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    rows["pos"] = scene.means.detach().cpu().numpy()
    rows["scale"] = np.exp(log_s)
    rows["rgba"][:, :3] = np.clip(np.round(_dc_rgb(scene) * 255), 0, 255)
    rows["rgba"][:, 3] = np.clip(np.round(opacity * 255), 0, 255)
    q = scene.quats_wxyz.detach().cpu().double().numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    rows["rot"] = np.clip(np.round(q * 128 + 128), 0, 255)
    assert rows.dtype.itemsize == SPLAT_BYTES
    return rows[order].tobytes()


def read_splat_bytes(data: bytes) -> dict[str, np.ndarray]:
    """Inverse of `splat_bytes` (for checks): positions, scales, rgba (uint8), quats_wxyz."""
    if len(data) % SPLAT_BYTES:
        raise InputError(f".splat data must be a multiple of {SPLAT_BYTES} bytes, got {len(data)}")
    rows = np.frombuffer(data, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    return {"positions": rows["pos"].copy(), "scales": rows["scale"].copy(), "rgba": rows["rgba"].copy(),
            "quats_wxyz": (rows["rot"].astype(np.float64) - 128) / 128}


def _srgb_to_linear(c: np.ndarray) -> np.ndarray:
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def khr_glb_bytes(scene: GaussianScene, name: str = "splats", extras: dict | None = None) -> bytes:
    """A GLB holding the scene as one KHR_gaussian_splatting POINTS primitive (glTF frame)."""
    q = scene.quats_wxyz.detach().cpu().double().numpy()
    q = q / np.linalg.norm(q, axis=1, keepdims=True)
    sh = scene.sh.detach().cpu().numpy()  # [N, K, 3]
    attrs: list[tuple[str, np.ndarray, str]] = [
        ("POSITION", scene.means.detach().cpu().numpy(), "VEC3"),
        ("COLOR_0", np.concatenate([_srgb_to_linear(_dc_rgb(scene)),
                                    scene.opacities.detach().cpu().double().numpy()[:, None]], 1), "VEC4"),
        (f"{KHR_EXT}:ROTATION", q[:, [1, 2, 3, 0]], "VEC4"),  # glTF quaternions are xyzw
        (f"{KHR_EXT}:SCALE", np.exp(scene.log_scales.detach().cpu().double().numpy()), "VEC3"),
        (f"{KHR_EXT}:OPACITY", scene.opacities.detach().cpu().double().numpy(), "SCALAR"),
    ]
    for l in range(scene.sh_degree + 1):
        for n in range(2 * l + 1):
            attrs.append((f"{KHR_EXT}:SH_DEGREE_{l}_COEF_{n}", sh[:, l * l + n, :], "VEC3"))
    blob, views, accessors, attributes = bytearray(), [], [], {}
    for semantic, values, kind in attrs:
        arr = np.ascontiguousarray(values, dtype="<f4")
        acc = {"bufferView": len(views), "componentType": _FLOAT, "count": int(len(arr)), "type": kind}
        if semantic == "POSITION":  # the spec requires min/max on POSITION
            acc["min"] = [float(x) for x in arr.min(0)]
            acc["max"] = [float(x) for x in arr.max(0)]
        views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": arr.nbytes, "target": _ARRAY_BUFFER})
        blob += arr.tobytes()
        blob += b"\0" * (-len(blob) % 4)
        attributes[semantic] = len(accessors)
        accessors.append(acc)
    doc = {
        "asset": {"version": "2.0", "generator": "orbitforge", **({"extras": extras} if extras else {})},
        "extensionsUsed": [KHR_EXT],
        "scene": 0, "scenes": [{"nodes": [0]}],
        "nodes": [{"name": name, "mesh": 0}],
        "meshes": [{"name": name, "primitives": [{"attributes": attributes, "mode": _POINTS, "extensions": {
            KHR_EXT: {"kernel": "ellipse", "colorSpace": "srgb_rec709_display"}}}]}],
        "accessors": accessors, "bufferViews": views, "buffers": [{"byteLength": len(blob)}],
    }
    return _pack_glb(doc, bytes(blob))


def _pack_glb(doc: dict, blob: bytes) -> bytes:
    """GLB container: 12-byte header, JSON chunk (space padded), BIN chunk (zero padded)."""
    text = json.dumps(doc, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 4)
    blob = blob + b"\0" * (-len(blob) % 4)
    body = struct.pack("<II", len(text), 0x4E4F534A) + text + struct.pack("<II", len(blob), 0x004E4942) + blob
    return struct.pack("<4sII", b"glTF", 2, 12 + len(body)) + body
