"""The NeRF backend: nerfstudio trains on the run's posed clip; orbitforge's export makes the asset.

    run_nerf(run, NerfConfig(method="nerfacto", steps=2000))  ->  RUN/nerf/

Some captures (glossy, thin or semi-transparent objects) come out better as a NeRF than as
splats.  orbitforge does not write its own NeRF: it drives nerfstudio 1.1.5, which lives in its
own environment (`scripts/setup-nerf.sh` makes `.venv-nerf`) because it pins viser 0.2.7,
gsplat 1.4.0 and a torchvision matched to its torch, all of which clash with orbitforge's own
viewer and splat stack.  `recon/nerf_worker.py` runs there; the two sides talk through files.

What the stage does, in RUN/nerf/:
1. data/: the posed clip as a nerfstudio dataset: transforms.json from `orbitforge.cameras`
   (the one place that converts cameras), PNG frames (RGBA where the clip has masks, so the
   NeRF learns where the object ends, on a random background as the splat trainer does), and
   the held-out frames named in it (every `holdout_every`-th, the same as the splats').
2. outputs/: `ns-train METHOD` with the world left exactly as orbitforge made it (no re-centring,
   re-orienting or re-scaling, camera optimisation off), so its renders line up with the run.
3. eval.json and renders/: held-out PSNR and SSIM, measured by orbitforge as for the splats.
4. fusion.npz: median ray distance and opacity from the views `export.mesh.fusion_cameras`
   picks; `orbitforge export RUN --from nerf` turns them into the same validated GLB/USD as a
   splat run (TSDF fusion, atlas, bake from the frames).

Workarounds the CPU needs, all applied here or in the worker: the device type is passed
explicitly (nerfstudio assumes CUDA); nerfacto's LPIPS metric would download AlexNet weights at
start, so the worker swaps it for a stand-in that reports NaN; the live viewer (which would
listen on a port) is replaced by TensorBoard event files.  nerfstudio saves its checkpoint with
torch.save and reads it back with torch.load inside its own environment; orbitforge itself never
unpickles it.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from orbitforge.cameras import Cameras, c2w_to_frame, to_transforms_json
from orbitforge.clip import Clip
from orbitforge.errors import InputError, StageError
from orbitforge.recon.logged import ANSI, run_logged
from orbitforge.rundir import RunDir, StageResult

logger = logging.getLogger(__name__)

STAGE = "nerf"
WORKER = Path(__file__).with_name("nerf_worker.py")
METHODS = ("nerfacto", "nerfacto-big", "nerfacto-huge")
"""nerfstudio methods whose outputs (rgb, median depth, accumulation) the export understands."""
ENV_VARIABLE = "ORBITFORGE_NERF_PYTHON"
CPU_DEPTH_SIZE = 64
_SETUP_HINT = ("run `make setup-nerf` (scripts/setup-nerf.sh makes .venv-nerf, about 6 GB) or set "
               f"{ENV_VARIABLE} to a Python that has nerfstudio 1.1.5")


@dataclass(frozen=True)
class NerfConfig:
    """Settings of `orbitforge nerf`; each default is stated here only."""

    method: Literal["nerfacto", "nerfacto-big", "nerfacto-huge"] = "nerfacto"
    """nerfstudio method."""
    steps: int = 2000
    """Training iterations.  On a 2-core CPU nerfacto takes seconds per iteration (a few hundred
    give a recognisable object); on a GPU, nerfstudio's own 30000 is the norm."""
    rays_per_batch: int = 4096
    """Rays per training iteration (nerfstudio's default)."""
    holdout_every: int = 8
    """Every n-th frame is held out for evaluation, as for the splats, so both compare."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """"auto": CUDA when the NeRF environment's torch sees a GPU, else the CPU."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Colour the held-out renders are composed on where the clip has masks (as the splats')."""
    depth_size: int | None = None
    """Longer side in pixels of the depth renders the mesh is fused from.  None: as for splats
    (`export.stage.mesh_config_for`, up to 256) on CUDA, and at most `CPU_DEPTH_SIZE` on a CPU,
    where nerfacto renders 500-1,500 rays a second here (a 64^2 view takes 3-9 s, and 48 views
    of 192^2 took over 20 min)."""
    extra_args: tuple[str, ...] = field(default_factory=tuple)
    """More ns-train options, passed through before the data parser (e.g. "--optimizers...")."""
    seed: int = 42

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InputError(f"unknown NeRF method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.steps < 1:
            raise InputError(f"--steps must be at least 1, got {self.steps}")
        if self.rays_per_batch < 64:
            raise InputError(f"--rays must be at least 64, got {self.rays_per_batch}")
        if self.depth_size is not None and not 16 <= self.depth_size <= 4096:
            raise InputError(f"--depth-size must be in 16..4096 pixels, got {self.depth_size}")


def nerf_python() -> Path:
    """The NeRF environment's Python: $ORBITFORGE_NERF_PYTHON, else .venv-nerf in the working
    folder or beside the orbitforge checkout.  Raises InputError saying how to make one."""
    named = os.environ.get(ENV_VARIABLE)
    if named:
        if not Path(named).is_file():
            raise InputError(f"{ENV_VARIABLE}={named} does not exist; {_SETUP_HINT}")
        return Path(named)
    checkout = Path(__file__).resolve().parents[1]
    for root in (Path.cwd(), checkout):
        candidate = root / ".venv-nerf" / "bin" / "python"
        if candidate.is_file() and (candidate.parent / "ns-train").is_file():
            return candidate
    raise InputError(f"the NeRF backend needs nerfstudio in its own environment, which is not set up: {_SETUP_HINT}")


def write_dataset(clip: Clip, folder: Path, holdout_every: int) -> tuple[list[int], list[int]]:
    """The clip as a nerfstudio dataset in `folder`; returns (train, held-out) frame indices."""
    from PIL import Image

    from orbitforge.recon.splat.trainer import split_frames

    train, test = split_frames(len(clip), holdout_every)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    names = [f"images/{i:05d}.png" for i in range(len(clip))]
    for i, name in enumerate(names):
        image = clip.frames[i]
        if clip.masks is not None:
            image = np.dstack([image, np.where(clip.masks[i], 255, 0).astype(np.uint8)])
        Image.fromarray(image).save(folder / name, compress_level=1)
    data = to_transforms_json(clip.cameras, names)
    data["train_filenames"] = [names[i] for i in train]
    data["val_filenames"] = data["test_filenames"] = [names[i] for i in test]
    (folder / "transforms.json").write_text(json.dumps(data, indent=2))
    return train, test


def train_command(python: Path, config: NerfConfig, device: str) -> list[str]:
    """The ns-train argument list, run with the stage folder as working directory (relative
    paths keep the run folder movable)."""
    big = str(10 * config.steps + 1)  # nerfstudio's periodic evaluations: never, orbitforge evaluates
    return [str(python), str(WORKER), "train", config.method,
            "--data", "data", "--output-dir", "outputs", "--experiment-name", "nerf", "--timestamp", "run",
            "--max-num-iterations", str(config.steps), "--steps-per-save", str(config.steps),
            "--save-only-latest-checkpoint", "True",
            "--steps-per-eval-batch", big, "--steps-per-eval-image", big, "--steps-per-eval-all-images", big,
            "--vis", "tensorboard", "--machine.device-type", device, "--machine.seed", str(config.seed),
            "--pipeline.datamanager.train-num-rays-per-batch", str(config.rays_per_batch),
            "--pipeline.model.camera-optimizer.mode", "off",
            "--pipeline.model.background-color", "random",
            *config.extra_args,
            "nerfstudio-data", "--orientation-method", "none", "--center-method", "none",
            "--auto-scale-poses", "False"]


def run_nerf(run: RunDir, config: NerfConfig = NerfConfig(),
             status: Callable[[str], None] | None = None) -> StageResult:
    """Stage "nerf" over the run's posed clip (see the module docstring)."""
    from orbitforge.export.stage import mesh_config_for
    from orbitforge.recon.stages import posed_clip

    say = status or (lambda text: None)
    python = nerf_python()
    clip, _, _, depends = posed_clip(run)
    settings = {**asdict(config), "worker": WORKER.read_text()}

    # beside the stage folder, not in it: a failed stage's folder is removed, its log must stay
    log = run.root / f"{STAGE}.log"

    def stage(tmp: Path) -> dict:
        tmp = tmp.resolve()  # the worker runs with its own working folder
        t0 = time.perf_counter()
        log.write_text("")
        device = _device(python, config.device)
        train_ids, test_ids = write_dataset(clip, tmp / "data", config.holdout_every)
        say(f"training {config.method} for {config.steps} steps on {device} ({len(train_ids)} frames, "
            f"{len(test_ids)} held out)")
        _run_logged(train_command(python, config, device), tmp, log, say, "ns-train")
        train_seconds = time.perf_counter() - t0
        trained = tmp / "outputs" / "nerf" / config.method / "run" / "config.yml"
        if not trained.is_file():
            raise StageError(f"ns-train finished without {trained.relative_to(tmp)}; see {log}")
        say("rendering held-out frames")
        held_out = render(python, trained, clip.cameras[test_ids], tmp, log, config.background)
        metrics = _held_out_quality(held_out, clip, test_ids, config, tmp / "renders")
        say("rendering depth for the mesh")
        mesh_config = mesh_config_for(clip.width, clip.height, faces=20_000)  # as for splats
        if config.depth_size is not None:
            mesh_config = replace(mesh_config, render_size=config.depth_size)
        elif device == "cpu":
            mesh_config = replace(mesh_config, render_size=min(CPU_DEPTH_SIZE, mesh_config.render_size))
        fusion = fusion_renders(python, trained, clip, mesh_config, tmp, log)
        metrics.update(seconds=round(time.perf_counter() - t0, 1), train_seconds=round(train_seconds, 1),
                       steps=config.steps, method=config.method, device=device,
                       fusion_views=int(len(fusion["c2w"])))
        (tmp / "eval.json").write_text(json.dumps(metrics, indent=2))
        return {k: metrics[k] for k in ("psnr", "ssim", "seconds", "train_seconds", "steps", "method", "device")}

    return run.run_stage(STAGE, stage, config=settings, depends_on=depends, seed=config.seed)


def render(python: Path, trained: Path, cams: Cameras, workdir: Path, log: Path,
           background: tuple[float, float, float] | None = None) -> dict:
    """rgb, distance and accumulation of `cams` (orbitforge convention) from a trained NeRF."""
    request, answer = workdir / "render_request.npz", workdir / "render_answer.npz"
    np.savez(request, c2w=c2w_to_frame(cams.c2w, "nerfstudio"), K=cams.K, width=cams.width, height=cams.height,
             background=np.asarray(background if background is not None else (np.nan,) * 3, np.float32))
    try:
        _run_logged([str(python), str(WORKER), "render", str(trained), str(request), str(answer)],
                    workdir, log, None, "nerf render")
        with np.load(answer, allow_pickle=False) as got:
            return {k: got[k] for k in got.files}
    finally:
        request.unlink(missing_ok=True)
        answer.unlink(missing_ok=True)


def fusion_renders(python: Path, trained: Path, clip: Clip, mesh_config, folder: Path, log: Path) -> dict:
    """Render the mesh's fusion views (`export.mesh.fusion_cameras` for `mesh_config`) and save
    them as folder/fusion.npz (K, c2w in orbitforge's convention, width, height, distance,
    accumulation)."""
    from orbitforge.export.mesh import fusion_cameras
    from orbitforge.recon.normalise import look_at_centre

    cams = fusion_cameras(clip.cameras, look_at_centre(clip.cameras), mesh_config)
    got = render(python, trained, cams, folder, log)
    fusion = {"K": cams.K, "c2w": cams.c2w, "width": cams.width, "height": cams.height,
              "distance": got["distance"].astype(np.float32), "accumulation": got["accumulation"].astype(np.float16)}
    np.savez_compressed(folder / "fusion.npz", **fusion)
    return fusion


def load_fusion(folder: Path) -> tuple[np.ndarray, np.ndarray, Cameras]:
    """(distance, accumulation, cameras) from a finished nerf stage's fusion.npz."""
    with np.load(Path(folder) / "fusion.npz", allow_pickle=False) as f:
        cams = Cameras(f["K"], f["c2w"], int(f["width"]), int(f["height"]))
        return f["distance"].astype(np.float32), f["accumulation"].astype(np.float32), cams


def _held_out_quality(rendered: dict, clip: Clip, ids: list[int], config: NerfConfig, folder: Path) -> dict:
    """PSNR and SSIM of the held-out renders, measured as for the splats, and [truth | render]
    pictures in `folder`."""
    import torch
    from PIL import Image

    from orbitforge.recon.metrics import held_out_quality

    images = [torch.from_numpy(rgb.astype(np.float32) / 255) for rgb in rendered["rgb"]]
    summary, pictures = held_out_quality(images, clip, ids, config.background)
    folder.mkdir(parents=True, exist_ok=True)
    for i, picture in zip(ids, pictures):
        Image.fromarray(picture).save(folder / f"heldout_{i:05d}.png")
    return {**summary, "held_out_frames": list(ids)}


def _device(python: Path, wanted: str) -> str:
    if wanted != "auto":
        return wanted
    probe = subprocess.run([str(python), "-c", "import torch; print(torch.cuda.is_available())"],
                           capture_output=True, text=True)
    return "cuda" if probe.stdout.strip() == "True" else "cpu"


_PROGRESS_ROW = re.compile(r"^(\d+) \(\d+\.\d+%\)")


def _run_logged(command: list[str], cwd: Path, log: Path, say: Callable[[str], None] | None, what: str) -> None:
    """Run `command`, its output into `log`, with nerfstudio's progress passed to `say`; a failure
    raises StageError with the last line that says something."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TERM": "dumb", "COLUMNS": "120"}
    env.pop("PYTHONPATH", None)  # orbitforge's own packages must not leak into the other environment
    logger.info("running %s", " ".join(command))
    last_report, last_step = 0.0, -1

    def progress(line: str) -> None:
        nonlocal last_report, last_step
        text = ANSI.sub("", line).strip()
        row = _PROGRESS_ROW.match(text)
        if say and row and int(row[1]) > last_step and time.monotonic() - last_report > 10:
            # nerfstudio redraws its whole table of rows (step (% done), time per step, ETA)
            last_report, last_step = time.monotonic(), int(row[1])
            say(f"{what}: step {' '.join(text.split())}")

    run_logged(command, log, f"{what} failed", cwd=cwd, env=env, on_line=progress)


__all__ = ["NerfConfig", "METHODS", "run_nerf", "nerf_python", "load_fusion", "write_dataset", "train_command"]
