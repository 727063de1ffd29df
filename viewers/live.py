"""The live viewer: a run folder in the browser through viser, kept up to date while it trains.

`serve(RUN)` starts a viser server (127.0.0.1 unless a host is given) with one toggleable layer
per part of the run: the clip's frames on their camera frustums, the poses stage's sparse
points, the Gaussian splats and the exported mesh.  Parts the run does not have yet are listed
in the GUI instead.  With `follow=True` a background thread polls the run folder and re-sends a
layer whenever its file changes, so a splat stage still training (it writes
`RUN/.splats.partial-<pid>/live.ply` every few seconds) can be watched as it converges.  The
viewer only reads: nothing is written to the run folder.
"""

from __future__ import annotations

import contextlib
import io
import logging
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from orbitforge.errors import InputError, OrbitforgeError
from orbitforge.rundir import MANIFEST

logger = logging.getLogger(__name__)

DEFAULT_PORT = 8080
MAX_SPLATS = 500_000
"""Gaussians sent to the browser by default: 32 bytes each, so 16 MB; viser's websocket takes
messages up to 50 MB and software WebGL slows down well before that."""
MAX_FRUSTUMS = 120
"""Camera frustums drawn at most (evenly subsampled), each with a small copy of its frame."""
THUMBNAIL_SIDE = 160
"""Longest side, in pixels, of the frame images shown on the frustums."""
LIVE_SNAPSHOT = "live.ply"
"""File name of the snapshot the splat stage writes into its partial folder while training."""

LAYERS = ("frames", "points", "splats", "mesh")
_LABELS = {"frames": "frames and cameras", "points": "sparse points", "splats": "Gaussian splats",
           "mesh": "exported mesh"}


@dataclass
class _Layer:
    """One toggleable part of the scene and where it currently comes from."""

    name: str
    checkbox: object = None
    handles: list = field(default_factory=list)
    source: Path | None = None
    signature: tuple | None = None
    checked: bool = False  # whether refresh() has looked for its source yet
    note: str = ""
    updates: int = 0  # times the layer was (re)loaded from a changed file


class LiveViewer:
    """A running viewer; `close()` (or leaving a `with` block) stops the server and the poller."""

    def __init__(self, run: Path, server, *, follow: bool, poll_seconds: float, max_splats: int):
        import viser

        self.run = run
        self.server: viser.ViserServer = server
        self.max_splats = max_splats
        self.splat_count = 0  # Gaussians shown now
        self.splat_total = 0  # Gaussians in the file they came from
        self._lock = threading.RLock()
        self._scale = 1.0  # a typical scene length, for frustum and point sizes
        self._camera_placed = False
        self._stop = threading.Event()
        self._layers = {name: _Layer(name) for name in LAYERS}

        server.scene.set_up_direction("+y")
        server.gui.add_markdown(f"**orbitforge** · `{run.name}`")
        with server.gui.add_folder("Layers"):
            for layer in self._layers.values():
                layer.checkbox = server.gui.add_checkbox(_LABELS[layer.name], True)
                layer.checkbox.on_update(self._toggle_callback(layer))
        self._notes = server.gui.add_markdown("")
        self.refresh()
        self._poller = None
        if follow:
            self._poller = threading.Thread(target=self._poll, args=(poll_seconds,), name="orbitforge-view-poll",
                                            daemon=True)
            self._poller.start()

    # -- public ------------------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return self.server.get_host()

    @property
    def port(self) -> int:
        return self.server.get_port()

    @property
    def url(self) -> str:
        """Where to open it on this machine (an all-interfaces host is shown as loopback)."""
        shown = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(self.host, self.host)
        return f"http://[{shown}]:{self.port}" if ":" in shown else f"http://{shown}:{self.port}"

    @property
    def following(self) -> bool:
        return self._poller is not None and self._poller.is_alive()

    def sources(self) -> dict[str, Path | None]:
        """The file each layer shows now (None: the run has no such part yet)."""
        with self._lock:
            return {name: layer.source for name, layer in self._layers.items()}

    def updates(self) -> dict[str, int]:
        """How many times each layer was loaded; grows when follow mode picks up a change."""
        with self._lock:
            return {name: layer.updates for name, layer in self._layers.items()}

    def notes(self) -> list[str]:
        """The lines the GUI shows under the layer toggles (what is missing, what was capped)."""
        with self._lock:
            return [layer.note for layer in self._layers.values() if layer.note]

    def visible(self) -> dict[str, bool]:
        """Each layer's GUI checkbox, as the browser last set it."""
        return {name: bool(layer.checkbox.value) for name, layer in self._layers.items()}

    def set_visible(self, name: str, visible: bool) -> None:
        """Show or hide a layer, as its GUI checkbox does (and tick the box to match)."""
        layer = self._layers[name]
        with self._lock:
            layer.checkbox.value = visible
            for handle in layer.handles:
                handle.visible = visible

    def refresh(self) -> list[str]:
        """Reload every layer whose source file appeared, changed or went away; the names reloaded."""
        changed = []
        with self._lock:
            for layer in self._layers.values():
                source = _LOCATORS[layer.name](self.run)
                signature = _signature(source)
                if layer.checked and signature == layer.signature:
                    continue
                try:
                    self._load(layer, source)
                except (OrbitforgeError, OSError, ValueError) as exc:  # one bad file keeps the rest
                    layer.note = f"{_LABELS[layer.name]}: could not load {source}: {exc}"
                    logger.warning("live viewer: %s", layer.note)
                layer.signature, layer.checked = signature, True
                changed.append(layer.name)
            if changed:
                self._notes.content = "\n\n".join(f"- {n}" for n in self.notes()) or ""
        return changed

    def close(self) -> None:
        """Stop polling and serving; safe to call twice."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        if self.server is not None:
            with contextlib.redirect_stdout(io.StringIO()):  # viser's "Server stopped"
                self.server.stop()
            self.server = None  # type: ignore[assignment]

    def __enter__(self) -> LiveViewer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- private -----------------------------------------------------------------------------------

    def _toggle_callback(self, layer: _Layer) -> Callable:
        def toggle(_event) -> None:
            with self._lock:
                for handle in layer.handles:
                    handle.visible = layer.checkbox.value
        return toggle

    def _poll(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            try:
                changed = self.refresh()
            except Exception as exc:  # a file replaced mid-read: keep what is shown, try next time
                logger.warning("live viewer: could not reload (%s); retrying", exc)
                continue
            if changed:
                logger.info("live viewer: reloaded %s", ", ".join(changed))

    def _load(self, layer: _Layer, source: Path | None) -> None:
        for handle in layer.handles:
            handle.remove()
        layer.handles, layer.source = [], source
        if layer.name == "splats":
            self.splat_count = self.splat_total = 0
        if source is None:
            layer.note = f"{_LABELS[layer.name]}: not in this run (yet)"
            layer.checkbox.disabled = True
            return
        layer.handles, layer.note = _ADDERS[layer.name](self, source)
        layer.updates += 1
        layer.checkbox.disabled = False
        for handle in layer.handles:
            handle.visible = layer.checkbox.value

    def _place_camera(self, target: np.ndarray, eye: np.ndarray) -> None:
        """Start browsers looking where the run's cameras look, from a little further out."""
        if self._camera_placed:
            return
        self._camera_placed = True
        initial = self.server.initial_camera
        initial.position = tuple(float(v) for v in eye)
        initial.look_at = tuple(float(v) for v in target)
        initial.up = (0.0, 1.0, 0.0)
        initial.near = 0.01 * self._scale
        initial.far = 1000.0 * self._scale


def serve(run: Path | str, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT, follow: bool = True,
          poll_seconds: float = 2.0, max_splats: int = MAX_SPLATS) -> LiveViewer:
    """Serve a run folder in the browser; returns at once with the viewer running in threads.

    Args:
        run: a run folder (one with run.json), complete or still being worked on.
        host: interface to listen on; 127.0.0.1 keeps the viewer on this machine, "0.0.0.0"
            exposes it to the network.
        port: the first port tried; when it is busy the next free one is taken (see `.port`).
            0 lets the system pick one.
        follow: poll the run folder every `poll_seconds` and reload changed layers.
        max_splats: send at most this many Gaussians (the most opaque), so large scenes stay
            responsive in the browser.
    """
    import viser

    run = Path(run)
    if not (run / MANIFEST).is_file():
        raise InputError(f"{run} is not a run folder (no {MANIFEST}); give the folder passed to -o")
    if not 0 <= port <= 65535:
        raise InputError(f"port must be in 0..65535, got {port}")
    if max_splats < 1:
        raise InputError(f"max_splats must be at least 1, got {max_splats}")
    _check_host(host)
    with contextlib.redirect_stdout(io.StringIO()):  # viser prints its own banner; the CLI says the URL
        server = viser.ViserServer(host=host, port=port, label=f"orbitforge · {run.name}", verbose=False)
    # Nothing leaves this machine: hide viser's share button and refuse its public share tunnel,
    # which a client could otherwise ask for with a message.
    server.gui.configure_theme(show_share_button=False)
    server.request_share_url = _no_share_url  # type: ignore[method-assign]
    try:
        return LiveViewer(run, server, follow=follow, poll_seconds=poll_seconds, max_splats=max_splats)
    except BaseException:
        with contextlib.redirect_stdout(io.StringIO()):
            server.stop()
        raise


def _no_share_url(*_args, **_kwargs) -> None:
    logger.warning("live viewer: share links are disabled (they relay the scene through a public server)")
    return None


def _check_host(host: str) -> None:
    """Fail in one line on a host this machine cannot listen on (viser would retry forever)."""
    try:
        infos = socket.getaddrinfo(host, 0, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, address = infos[0]
        with socket.socket(family, kind, proto) as probe:
            probe.bind(address)
    except OSError as exc:
        raise InputError(f"cannot listen on host {host!r} ({exc.strerror or exc}); use 127.0.0.1, "
                         "0.0.0.0 or an address of this machine") from exc


# -- where each layer comes from -------------------------------------------------------------------


def _signature(path: Path | None) -> tuple | None:
    if path is None:
        return None
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (str(path), stat.st_mtime_ns, stat.st_size)


def _locate_frames(run: Path) -> Path | None:
    """The posed frames' transforms.json: the poses stage's, else a clip with known cameras."""
    for stage in ("poses", "clip"):
        path = run / stage / "transforms.json"
        if path.is_file():
            return path
    return None


def _locate_points(run: Path) -> Path | None:
    path = run / "poses" / "sparse" / "0" / "points3D.bin"
    return path if path.is_file() else None


def _locate_splats(run: Path) -> Path | None:
    """A training run's newest live snapshot, else the splat stage's output, else the exported
    PLY (which `_add_splats` places back into the run's world)."""
    live = [(signature[1], path) for path in run.glob(f".splats.partial-*/{LIVE_SNAPSHOT}")
            if (signature := _signature(path)) is not None]
    if live:
        return max(live)[1]  # the most recently written, should two trainers ever overlap
    for rel in ("splats/splats.ply", "asset/splats.ply"):
        if (run / rel).is_file():
            return run / rel
    return None


def _locate_mesh(run: Path) -> Path | None:
    path = run / "asset" / "asset.glb"
    return path if path.is_file() else None


_LOCATORS: dict[str, Callable[[Path], Path | None]] = {
    "frames": _locate_frames, "points": _locate_points, "splats": _locate_splats, "mesh": _locate_mesh}


# -- what each layer draws ------------------------------------------------------------------------


def _add_frames(viewer: LiveViewer, transforms: Path) -> tuple[list, str]:
    """A frustum per camera (at most MAX_FRUSTUMS) with a thumbnail of its frame on it."""
    from PIL import Image
    from viser.transforms import SO3

    from orbitforge.cameras import from_transforms_json
    from orbitforge.recon.normalise import look_at_centre

    cameras, paths = from_transforms_json(transforms)
    target = look_at_centre(cameras)
    distance = float(np.median(np.linalg.norm(cameras.centres - target, axis=1))) or 1.0
    viewer._scale = distance
    picked = np.unique(np.linspace(0, len(cameras) - 1, min(MAX_FRUSTUMS, len(cameras))).round().astype(int))
    fov_y = 2 * np.arctan(cameras.height / (2 * cameras.K[:, 1, 1]))
    aspect = cameras.width / cameras.height
    # viser draws every frustum with the same volume (its client divides by the cube root of
    # tan(fov/2)^2 * aspect / 3), so a narrow lens becomes a long spike; size each one instead so
    # that it reaches a fifth of the way to the object whatever its lens.
    half_height = np.tan(fov_y / 2)
    frustum_scale = 0.2 * distance * np.cbrt(half_height * half_height * aspect / 3.0)
    handles = []
    for i in picked:
        image_path = (transforms.parent / paths[i]).resolve()
        image = None
        if image_path.is_file():
            with Image.open(image_path) as im:
                im = im.convert("RGB")
                im.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
                image = np.asarray(im)
        c2w = cameras.c2w[i]
        handles.append(viewer.server.scene.add_camera_frustum(
            f"/frames/{i:05d}", fov=float(fov_y[i]), aspect=aspect,
            scale=float(frustum_scale[i]), thickness=0.003 * distance, color=(255, 140, 40), image=image, format="jpeg",
            wxyz=SO3.from_matrix(c2w[:3, :3]).wxyz, position=c2w[:3, 3]))
    viewer._place_camera(target, _overview_eye(cameras.centres, target, distance))
    shown = f"{len(picked)} of {len(cameras)}" if len(picked) < len(cameras) else f"{len(cameras)}"
    return handles, f"frames: {shown} cameras from {transforms.relative_to(viewer.run)}"


def _add_points(viewer: LiveViewer, points3d: Path) -> tuple[list, str]:
    import pycolmap

    model = pycolmap.Reconstruction(str(points3d.parent))
    points = list(model.points3D.values())
    if not points:
        return [], "sparse points: the model has none"
    xyz = np.array([p.xyz for p in points], np.float32)
    rgb = np.array([p.color for p in points], np.uint8)
    handle = viewer.server.scene.add_point_cloud("/points", xyz, rgb, point_size=0.003 * viewer._scale,
                                                 precision="float32")
    return [handle], f"sparse points: {len(xyz):,}"


def _add_splats(viewer: LiveViewer, ply: Path) -> tuple[list, str]:
    """The most opaque `max_splats` Gaussians, as viser's splats (centres, covariances, colour)."""
    from scipy.spatial.transform import Rotation
    from viser.transforms import SO3

    from orbitforge.gaussians import SH_C0

    splats = _read_splat_ply(ply)
    total = len(splats["x"])
    opacity = 1.0 / (1.0 + np.exp(-splats["opacity"].astype(np.float64)))
    keep = np.arange(total)
    if total > viewer.max_splats:
        keep = np.sort(np.argpartition(-opacity, viewer.max_splats - 1)[: viewer.max_splats])
    column = lambda *names: np.stack([splats[n][keep] for n in names], axis=1).astype(np.float64)  # noqa: E731
    centres = column("x", "y", "z")
    wxyz = column("rot_0", "rot_1", "rot_2", "rot_3")
    wxyz /= np.maximum(np.linalg.norm(wxyz, axis=1, keepdims=True), 1e-12)
    rotation = Rotation.from_quat(wxyz, scalar_first=True).as_matrix()  # (N, 3, 3)
    variance = np.exp(2.0 * column("scale_0", "scale_1", "scale_2"))
    covariance = np.einsum("nij,nj,nkj->nik", rotation, variance, rotation)
    rgb = np.clip(column("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5, 0.0, 1.0)
    exported = ply.parent.name == "asset"
    to_world, scale, offset = (_placement_back_to_run(viewer.run, splat_ply=True) if exported
                               else (np.eye(3), 1.0, np.zeros(3)))
    handle = viewer.server.scene.add_gaussian_splats(
        "/splats", centers=centres.astype(np.float32), covariances=covariance.astype(np.float32),
        rgbs=rgb.astype(np.float32), opacities=opacity[keep, None].astype(np.float32), scale=scale,
        wxyz=SO3.from_matrix(to_world).wxyz, position=offset)
    viewer.splat_count, viewer.splat_total = len(keep), total
    if not viewer._camera_placed and not exported:  # no cameras in the run: frame the splats
        centre, size = np.median(centres, axis=0), _extent(centres)
        viewer._scale = size
        viewer._place_camera(centre, centre + np.array([0.0, 0.5, 2.0]) * size)
    where = "training, live snapshot" if ply.name == LIVE_SNAPSHOT else str(ply.relative_to(viewer.run))
    capped = f" (the {len(keep):,} most opaque of {total:,})" if len(keep) < total else ""
    return [handle], f"splats: {len(keep):,} Gaussians{capped} from {where}"


_SPLAT_COLUMNS = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
                  "rot_0", "rot_1", "rot_2", "rot_3")


def _read_splat_ply(path: Path) -> dict[str, np.ndarray]:
    """The columns the viewer draws from a 3DGS PLY, through plyfile's memory-mapped reader (57k
    Gaussians in ~20 ms); the columns are copied before the file is closed, so a trainer may
    replace it right after.  `gaussians.load_ply` now reads the same way and could serve here."""
    import plyfile

    with open(path, "rb") as f:
        try:
            vertex = plyfile.PlyData.read(f, mmap="c")["vertex"]
        except (KeyError, ValueError, plyfile.PlyParseError) as exc:
            raise InputError(f"could not read splats from {path}: {exc}") from exc
        missing = [name for name in _SPLAT_COLUMNS if name not in (vertex.data.dtype.names or ())]
        if missing:
            raise InputError(f"{path} is not a 3D Gaussian splatting PLY (no {', '.join(missing)})")
        return {name: np.array(vertex[name], dtype=np.float32) for name in _SPLAT_COLUMNS}


def _add_mesh(viewer: LiveViewer, glb: Path) -> tuple[list, str]:
    """The exported GLB, moved from its engine placement back into the run's world."""
    from viser.transforms import SO3

    to_world, scale, offset = _placement_back_to_run(viewer.run)
    handle = viewer.server.scene.add_glb("/mesh", glb.read_bytes(), scale=scale,
                                         wxyz=SO3.from_matrix(to_world).wxyz, position=offset)
    return [handle], f"mesh: {glb.relative_to(viewer.run)} ({glb.stat().st_size / 2**20:.1f} MiB)"


_ADDERS: dict[str, Callable[[LiveViewer, Path], tuple[list, str]]] = {
    "frames": _add_frames, "points": _add_points, "splats": _add_splats, "mesh": _add_mesh}


def _placement_back_to_run(run: Path, *, splat_ply: bool = False) -> tuple[np.ndarray, float, np.ndarray]:
    """(rotation, scale, offset) taking the export stage's file coordinates back to the run's
    world: the inverse of `file = scale * matrix @ (p - pivot)` recorded in run.json, after
    undoing the y-down roll the export applies to a splat PLY when asked to."""
    import json

    from orbitforge.export.presets import Placement
    from orbitforge.export.splat_formats import Y_DOWN_ROLL

    try:
        stage = json.loads((run / MANIFEST).read_text(encoding="utf-8")).get("stages", {}).get("asset", {})
    except (OSError, ValueError):
        stage = {}
    placement = (stage.get("metrics") or {}).get("placement_gltf")
    if not placement:
        return np.eye(3), 1.0, np.zeros(3)
    where = Placement.from_json(placement)
    rotation = where.matrix.T
    rolled = ((stage.get("config") or {}).get("splats") or {}).get("ply_up") == "y_down"
    if splat_ply and rolled:
        rotation = rotation @ Y_DOWN_ROLL.T  # the roll is applied last, so undone first
    return rotation, 1.0 / where.scale, where.pivot


def _overview_eye(centres: np.ndarray, target: np.ndarray, distance: float) -> np.ndarray:
    """A viewpoint that shows the camera path as a ring, not edge-on: behind the first camera,
    raised towards the normal of the plane the cameras lie in (+Y for a level orbit)."""
    normal = np.array([0.0, 1.0, 0.0])
    if len(centres) >= 3:
        _, _, axes = np.linalg.svd(centres - centres.mean(0))
        normal = axes[2] if axes[2] @ normal >= 0 else -axes[2]
    behind = centres[0] - target
    behind = behind / (np.linalg.norm(behind) or 1.0)
    direction = behind + 0.8 * normal
    return target + 1.6 * distance * direction / (np.linalg.norm(direction) or 1.0)


def _extent(points: np.ndarray) -> float:
    """A robust size of a point set: the spread of its 5th-95th percentile box."""
    if len(points) == 0:
        return 1.0
    lo, hi = np.percentile(points, [5, 95], axis=0)
    return float(np.linalg.norm(hi - lo)) or 1.0


def run_until_interrupted(viewer: LiveViewer, *, tick: float = 0.5) -> None:
    """Block (for the CLI) until Ctrl-C or SIGTERM, then close the viewer.  SIGTERM gets a
    handler of its own: pycolmap's glog would otherwise answer it with a stack dump."""
    import signal

    stop = threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        while not stop.wait(tick):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        viewer.close()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
