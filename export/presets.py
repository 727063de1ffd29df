"""Engine presets: where an exported asset's axes, units and pivot land in each engine.

orbitforge's world is right-handed, +Y up, metres, front +Z (glTF's own convention; see
`orbitforge.cameras`).  `orbitforge.cameras.FRAMES` says where that world goes in each engine
(`points_to_frame(p, "unreal")` is Unreal's +Z-up, +X-forward centimetres).  What this module adds
is the other half: what each engine's *importer* does to a file, so that we can write the file
such that importer(file) == FRAMES[engine](asset).  Writing engine axes straight into a GLB
would be converted a second time by the importer (the classic "lying on its back, 100x too big"
import, glTFast#438).

Importer maps (file coordinates -> engine coordinates), from the importers' source:

* Unity glTFast: glTF (x, y, z) -> Unity (-x, y, z), metres (= FRAMES["unity"], so GLB == glTF).
* Unreal Interchange glTF (GLTFCore `FGLTFCoreUtilities::ConvertVector`): glTF (x, y, z) ->
  UE (x, z, y) * 100.  A standard GLB therefore arrives Z-up in centimetres, facing UE +Y; the
  Unreal preset yaws the asset 90 degrees so that its front lands on UE +X (FRAMES["unreal"]).
* Unreal USD importer (`UsdUtils::ConvertAxes`): a Z-up stage maps (x, y, z) -> (x, -y, z),
  a Y-up stage swaps y and z; lengths are scaled by metersPerUnit / 0.01.

Pivot: every preset puts the pivot at the bottom centre (centre of the bounding box in the ground
plane, lowest point), so the asset stands on the origin.  `height_m` rescales reconstructions,
which have no metric scale, to a real size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Sequence, get_args

import numpy as np

from orbitforge.cameras import FRAMES
from orbitforge.errors import InputError
from orbitforge.mesh import MeshAsset

logger = logging.getLogger(__name__)

Engine = Literal["gltf", "unity", "unreal"]
ENGINES: tuple[str, ...] = get_args(Engine)
Container = Literal["gltf", "usd"]

UNIT_METRES = {"m": 1.0, "cm": 0.01, "mm": 0.001, "km": 1000.0}
"""Length units a MeshAsset may record, in metres."""


def _ro(a) -> np.ndarray:
    a = np.array(a, dtype=np.float64)
    a.setflags(write=False)
    return a


# Importer maps: (3x3 matrix, length scale) taking file coordinates to engine coordinates.
_GLTFAST = (_ro(np.diag([-1.0, 1.0, 1.0])), 1.0)
_UE_INTERCHANGE_GLTF = (_ro([[1.0, 0, 0], [0, 0, 1], [0, 1, 0]]), 100.0)
_UE_USD_Z_UP_CM = (_ro(np.diag([1.0, -1.0, 1.0])), 1.0)  # metersPerUnit 0.01: no length scale
_IDENTITY = (_ro(np.eye(3)), 1.0)


@dataclass(frozen=True)
class EnginePreset:
    """How files are written for one engine.  Every field is documentation as well as data."""

    name: str
    description: str
    engine_up: str
    """Up axis inside the engine after import."""
    engine_units: str
    """Length unit inside the engine after import."""
    usd_up_axis: Literal["Y", "Z"]
    usd_meters_per_unit: float
    gltf_importer: tuple[np.ndarray, float]
    """(matrix, scale): what the engine's glTF importer does to file coordinates."""
    usd_importer: tuple[np.ndarray, float]
    """(matrix, scale): what the engine's USD importer does to stage coordinates (in stage units)."""


PRESETS: dict[str, EnginePreset] = {
    "gltf": EnginePreset("gltf", "glTF 2.0 as specified: +Y up, metres, front +Z", "+Y", "m", "Y", 1.0,
                         _IDENTITY, _IDENTITY),
    "unity": EnginePreset("unity", "Unity (glTFast / USD package): +Y up, metres; glTFast mirrors x on import",
                          "+Y", "m", "Y", 1.0, _GLTFAST, _GLTFAST),
    "unreal": EnginePreset("unreal", "Unreal (Interchange glTF / USD): +Z up, centimetres, front +X",
                           "+Z", "cm", "Z", 0.01, _UE_INTERCHANGE_GLTF, _UE_USD_Z_UP_CM),
}


def preset(engine: str) -> EnginePreset:
    """The preset for `engine`, or a one-line InputError naming the choices."""
    try:
        return PRESETS[engine]
    except KeyError:
        raise InputError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}") from None


@dataclass(frozen=True)
class Placement:
    """A similarity transform from orbitforge world (in the asset's units) to a file's coordinates:
    `file = scale * matrix @ (p - pivot)`.  `matrix` is a proper rotation (det +1), so winding
    and normals only rotate."""

    matrix: np.ndarray  # (3, 3) float64 rotation
    scale: float  # file units per asset unit
    pivot: np.ndarray  # (3,) float64, asset units, orbitforge world
    height_m: float  # asset height after placement, metres

    def points(self, p: np.ndarray) -> np.ndarray:
        """(..., 3) points -> file coordinates, float64."""
        return self.scale * ((np.asarray(p, np.float64) - self.pivot) @ self.matrix.T)

    def directions(self, d: np.ndarray) -> np.ndarray:
        """(..., 3) unit vectors (normals) -> file axes, float64."""
        return np.asarray(d, np.float64) @ self.matrix.T

    def file_to_world(self) -> np.ndarray:
        """(4, 4) the inverse: file coordinates back into orbitforge's world, asset units."""
        m = np.eye(4)
        m[:3, :3] = self.matrix.T / self.scale
        m[:3, 3] = self.pivot
        return m

    def to_json(self) -> dict:
        """What the export stage records in run.json (metrics placement_gltf / placement_usd)."""
        return {"matrix": self.matrix.round(9).tolist(), "scale": self.scale, "pivot": self.pivot.tolist(),
                "height_m": self.height_m}

    @classmethod
    def from_json(cls, data: dict) -> "Placement":
        return cls(np.asarray(data["matrix"], np.float64), float(data["scale"]),
                   np.asarray(data["pivot"], np.float64), float(data["height_m"]))


def world_scale(units: str, height_m: float | None, extent_y: float) -> float:
    """Metres per asset unit: from `height_m` when given, else from the recorded units."""
    if units not in UNIT_METRES:
        raise InputError(f"mesh units {units!r} are not known; expected one of {', '.join(UNIT_METRES)}")
    if height_m is None:
        return UNIT_METRES[units]
    if not np.isfinite(height_m) or height_m <= 0:
        raise InputError(f"height must be a positive number of metres, got {height_m}")
    if extent_y <= 0:
        raise InputError("the asset is flat (zero height), so --height cannot size it; omit --height")
    return float(height_m) / extent_y


def bottom_centre(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Pivot at the bottom centre of an axis-aligned box: centre in x and z, lowest y."""
    return np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2], dtype=np.float64)


def placement(lo: np.ndarray, hi: np.ndarray, engine: str, container: Container, *, units: str = "m",
              height_m: float | None = None) -> Placement:
    """The transform that makes `engine`'s importer of `container` files see the asset in
    `FRAMES[engine]`, sized in metres and standing on the origin.

    Args:
        lo, hi: (3,) bounding box of the asset in orbitforge world, asset units.
        engine: "gltf" | "unity" | "unreal".
        container: "gltf" (GLB, KHR splat GLB) or "usd" (.usdc / .usdz, in the preset's stage units).
        units: the asset's recorded length unit.
        height_m: rescale so the asset is this tall (metres); None keeps `units`.
    """
    p = preset(engine)
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    metres = world_scale(units, height_m, float(hi[1] - lo[1]))
    world, _, engine_scale = FRAMES[p.name]
    importer_matrix, importer_scale = p.gltf_importer if container == "gltf" else p.usd_importer
    # importer(file) == engine frame:  M_imp @ (s_imp * file) == s_eng * W @ p_metres
    matrix = importer_matrix.T @ world  # importer matrices are orthonormal: inverse == transpose
    if container == "gltf":
        scale = metres * engine_scale / importer_scale  # glTF files are always metres
    else:
        scale = metres / p.usd_meters_per_unit  # USD stage units
    assert abs(np.linalg.det(matrix) - 1.0) < 1e-9, "a preset must not mirror the asset"
    return Placement(_ro(matrix), float(scale), bottom_centre(lo, hi), float(metres * (hi[1] - lo[1])))


def place_mesh(part: MeshAsset, where: Placement) -> MeshAsset:
    """One part moved into file coordinates (normals rotated, not recomputed)."""
    from dataclasses import replace

    normals = part.vertex_normals
    return replace(part, vertices=where.points(part.vertices).astype(np.float32),
                   normals=where.directions(normals).astype(np.float32), _cache={})


def parts_bounds(parts: Sequence[MeshAsset]) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) over all parts, float64."""
    allv = np.concatenate([p.vertices for p in parts]).astype(np.float64)
    return allv.min(axis=0), allv.max(axis=0)
