"""Train Gaussian splats on a posed clip: the 3DGS recipe with gsplat's densification strategies.

One trainer for every backend (see `render.py`): gsplat on CUDA, the compiled CPU rasteriser
elsewhere.  Recipe (Kerbl et al. 2023, gsplat's simple_trainer): Adam with per-parameter
learning rates, means' rate scaled by the scene size and decayed 100x; loss
(1 - w) L1 + w (1 - SSIM) with a library SSIM (pytorch-msssim); SH bands raised over time;
every 8th frame held out for evaluation; with masks, a random background each step so the
splats learn where the object ends.  Densification is gsplat's `DefaultStrategy` or
`MCMCStrategy` (`strategy.py`, which also runs MCMC on CPU), its schedule scaled to the number
of steps.
"""

from __future__ import annotations

import logging
import math
import resource
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import Tensor

from orbitforge.atomic import atomic_path
from orbitforge.cameras import Cameras
from orbitforge.clip import Clip
from orbitforge.errors import InputError
from orbitforge.gaussians import GaussianScene, save_ply
from orbitforge.recon.metrics import held_out_quality, psnr
from orbitforge.recon.splat.camera_opt import CameraRefiner
from orbitforge.recon.splat.render import Backend, render_splats, resolve_backend
from orbitforge.recon.splat.strategy import StrategyName, make_strategy, mcmc_regulariser
from orbitforge.signals import terminate_as_interrupt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplatConfig:
    """Training settings; each default is stated here only."""

    steps: int = 3000
    """Optimisation steps (one training frame each)."""
    backend: Backend = "auto"
    """"auto": gsplat on CUDA, else the CPU rasteriser."""
    strategy: StrategyName = "default"
    """gsplat densification: "default" (3DGS clone/split/prune) or "mcmc" (3DGS-MCMC relocation
    plus opacity and scale regularisers, growing 5 % per refinement up to `max_gaussians`).  MCMC
    starts at opacity 0.1 like the default, not gsplat's 0.5: on a 300-step toy run 0.5 reached
    15.2 dB held-out PSNR, 0.1 21.4 dB."""
    sh_degree: int = 3
    """Highest SH band learnt."""
    sh_interval: int = 500
    """One more SH band every this many steps."""
    ssim_weight: float = 0.2
    """w in (1 - w) L1 + w (1 - SSIM), as in 3DGS."""
    holdout_every: int = 8
    """Every n-th frame is held out for evaluation (3DGS/Mip-NeRF 360 convention)."""
    max_gaussians: int = 300_000
    """Hard cap: densification beyond it prunes the least opaque."""
    random_init_points: int = 10_000
    """Gaussians drawn in the ball the cameras look at when the poses stage gave no points."""
    lr_means: float = 1.6e-4
    lr_scales: float = 5e-3
    lr_quats: float = 1e-3
    lr_opacities: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_shN: float = 2.5e-3 / 20
    background: tuple[float, float, float] | None = None
    """Colour behind the splats, (r, g, b) in [0, 1], where the clip has no masks (with masks a
    random colour each step) and in the held-out scores.  None: the clip's backdrop, the median
    colour of its frames' borders (`Clip.backdrop`).  A fixed colour that differs from the
    backdrop makes the splats paint the backdrop in: on Middlebury's black-backdrop temple, white
    cost 11 dB of held-out PSNR at 150 steps and buried the temple in opaque black splats."""
    eval_every: int = 0
    """Evaluate held-out frames every n steps for the training curve (0: only at the end)."""
    checkpoint_every: int = 500
    """Save a resumable checkpoint every n steps (when a checkpoint path is given)."""
    refine_cameras: bool = False
    """Learn a pose correction for every camera together with the splats (`camera_opt.py`):
    for cameras from SfM, which sit ~0.5 deg from what the pixels say.  Off for known cameras
    (generated or rendered clips), which are exact.  Held-out frames are then aligned to the
    finished splats before they are scored, so their PSNR measures the splats, not the poses."""
    lr_cameras: float = 1e-2
    """SparseAdam rate of the camera corrections, decayed 10x by the last step.  On the Spot orbit
    at 128 px (1,500 steps, from COLMAP's 0.59 deg): 3e-3 reached 0.31 deg median rotation error,
    1e-2 0.25 deg, 3e-2 wandered off (1.5 deg) before settling at 0.50."""
    lr_focal: float = 1e-3
    """Adam rate of one focal-length scale shared by every frame, learnt with `refine_cameras`
    (0: the focal stays as given)."""
    refine_cameras_after: float = 0.2
    """Share of the steps trained on the given cameras before they move: the splats need a rough
    shape first for the pixels to say which way a camera should go."""
    align_steps: int = 100
    """Steps that align each held-out camera to the finished splats (with `refine_cameras`)."""
    seed: int = 0


@dataclass
class TrainResult:
    """A trained scene and how it got there."""

    scene: GaussianScene
    metrics: dict
    curve: list[dict] = field(default_factory=list)
    renders: list[np.ndarray] = field(default_factory=list)  # held-out [truth | render] images
    cameras: Cameras | None = None  # every frame's camera after `refine_cameras`, else None


def split_frames(n: int, holdout_every: int) -> tuple[list[int], list[int]]:
    """(train, test) indices: every `holdout_every`-th frame is a test frame."""
    test = [i for i in range(n) if holdout_every > 0 and i % holdout_every == 0]
    train = [i for i in range(n) if i not in test]
    if not train:
        raise InputError(f"{n} frame(s) leave nothing to train on after holding out every {holdout_every}th")
    return train, test


def _init_params(points: np.ndarray | None, colours: np.ndarray | None, config: SplatConfig,
                 generator: torch.Generator, cameras) -> dict[str, Tensor]:
    if points is None or len(points) < 4:
        # uniform in the ball the cameras look at: the unit sphere of a normalised world, and
        # the framed region of an orbit around an asset in its own units
        from orbitforge.recon.normalise import look_at_centre

        centre = torch.as_tensor(look_at_centre(cameras), dtype=torch.float32)
        distance = float(np.median(np.linalg.norm(cameras.centres - centre.numpy(), axis=1)))
        extent = distance * float(np.tan(np.radians(cameras.fov_y_deg.mean()) / 2))
        n = config.random_init_points
        direction = torch.nn.functional.normalize(torch.randn(n, 3, generator=generator), dim=-1)
        radius = extent * torch.rand(n, 1, generator=generator) ** (1 / 3)
        pts, cols = centre + direction * radius, torch.rand(n, 3, generator=generator)
        logger.info("no seed points: starting from %d random Gaussians in a ball of radius %.3g", n, extent)
    else:
        pts = torch.as_tensor(points, dtype=torch.float32)
        cols = torch.as_tensor(colours, dtype=torch.float32) / 255.0
    return GaussianScene.from_points(pts, cols, sh_degree=config.sh_degree).render_params()


def _optimizers(params: torch.nn.ParameterDict, config: SplatConfig, scene_scale: float) -> dict:
    rates = {"means": config.lr_means * scene_scale, "scales": config.lr_scales, "quats": config.lr_quats,
             "opacities": config.lr_opacities, "sh0": config.lr_sh0, "shN": config.lr_shN}
    return {name: torch.optim.Adam([{"params": params[name], "lr": lr, "name": name}], eps=1e-15, foreach=True)
            for name, lr in rates.items()}


def to_scene(params: dict[str, Tensor]) -> GaussianScene:
    """The trained parameters as a GaussianScene (detached, on the CPU)."""
    p = {k: v.detach().cpu().float() for k, v in params.items()}
    return GaussianScene(p["means"], p["scales"], p["quats"], p["opacities"], torch.cat([p["sh0"], p["shN"]], dim=1))


def train_splats(clip: Clip, config: SplatConfig = SplatConfig(), *, points: np.ndarray | None = None,
                 colours: np.ndarray | None = None, device: str | None = None,
                 progress: Callable[[int, dict], None] | None = None,
                 checkpoint: Path | None = None, checkpoint_key: str = "",
                 snapshot: Path | None = None, snapshot_every_s: float = 10.0) -> TrainResult:
    """Fit Gaussians to a clip with known cameras.

    Args:
        clip: frames with cameras (from poses or a generator); masks are used when present.
        points, colours: (P, 3) seed points and (P, 3) uint8 colours, e.g. the poses stage's.
        device: "cuda" or "cpu"; default follows the backend.
        progress: called after each step with (step, stats) for a progress bar.
        checkpoint: a safetensors file to resume from (when its `checkpoint_key` matches) and
            to save to every `config.checkpoint_every` steps and when interrupted (Ctrl-C or
            SIGTERM), so an interrupted run continues where it stopped.
        snapshot: a PLY rewritten (atomically) after the first step and then at most every
            `snapshot_every_s` seconds, for `orbitforge view` to follow the training; time-based
            so that its cost stays a small share however fast the steps are.
    """
    if clip.cameras is None:
        raise InputError("splatting needs cameras: run `orbitforge poses` first")
    if config.background is None:
        config = replace(config, background=clip.backdrop)
    backend = resolve_backend(config.backend)
    if backend == "gsplat":
        with terminate_as_interrupt():
            return _train(clip, config, backend, points, colours, device, progress, checkpoint, checkpoint_key,
                          snapshot, snapshot_every_s)
    # On the CPU the rasteriser's numba kernels carry the parallelism; torch's own threads on the
    # many small ops around them (projection, SSIM, Adam) only contend with them and with other
    # processes: one torch thread measured 4x faster per step on a 2-core machine.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    # gsplat's densification draws from torch's global RNG (split Gaussians sample new means), so
    # `_train` seeds it too; fork_rng hands the caller its own RNG state back afterwards.  Without
    # this a run depended on whatever ran before it in the process (a 150-step templeRing run gave
    # a 3,000-face mesh alone and a 121-face fragment after other tests).
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda), terminate_as_interrupt():
            return _train(clip, config, backend, points, colours, device, progress, checkpoint, checkpoint_key,
                          snapshot, snapshot_every_s)
    finally:
        torch.set_num_threads(threads)


def _train(clip, config, backend, points, colours, device, progress, checkpoint, checkpoint_key,
           snapshot=None, snapshot_every_s=10.0) -> TrainResult:
    device = device or ("cuda" if backend == "gsplat" else "cpu")
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)  # the global RNG, for gsplat's densification (see train_splats)
    train_ids, test_ids = split_frames(len(clip), config.holdout_every)
    frames = torch.as_tensor(clip.frames, device=device).float() / 255.0  # [T, H, W, 3]
    masks = None if clip.masks is None else torch.as_tensor(clip.masks, device=device).float()[..., None]
    w2c = torch.tensor(clip.cameras.w2c, dtype=torch.float32, device=device)
    Ks = torch.tensor(clip.cameras.K, dtype=torch.float32, device=device)
    centres = clip.cameras.centres
    scene_scale = 1.1 * float(np.linalg.norm(centres - centres.mean(0), axis=1).max() or 1.0)

    resumed = load_checkpoint(checkpoint, checkpoint_key, device) if checkpoint else None
    initial = resumed[0] if resumed else _init_params(points, colours, config, generator, clip.cameras)
    learnt = (initial.pop(CAMERA_DELTAS, None), initial.pop(CAMERA_FOCAL, None))
    refiner = _camera_refiner(clip, w2c, *learnt) if config.refine_cameras else None
    params = torch.nn.ParameterDict({k: torch.nn.Parameter(v.to(device)) for k, v in initial.items()})
    optimizers = _optimizers(params, config, scene_scale)
    start = 0
    if resumed:
        start = _restore_optimizers(optimizers, params, resumed[1], resumed[2])
        generator.manual_seed(config.seed + start)
        torch.manual_seed(config.seed + start)
        logger.info("resumed from %s at step %d", checkpoint, start)
    hooks = make_strategy(config.strategy, config.steps, scene_scale, config.max_gaussians, params, optimizers)
    decay = 0.01 ** (1.0 / max(config.steps, 1))
    scheduler = torch.optim.lr_scheduler.ExponentialLR(optimizers["means"], gamma=decay)
    for group in optimizers["means"].param_groups:
        group["lr"] = config.lr_means * scene_scale * decay**start
    background = torch.tensor(config.background, device=device)
    if refiner is not None:
        camera_opts = refiner.optimizers(config.lr_cameras, config.lr_focal)
        refine_from = int(config.refine_cameras_after * config.steps)
        camera_decay = CAMERA_LR_END ** (1.0 / max(config.steps - refine_from, 1))
    curve, skipped, t0 = [], 0, time.perf_counter()
    last_snapshot = -math.inf
    done = start  # steps whose update is complete
    try:
        for step in range(start, config.steps):
            i = train_ids[int(torch.randint(len(train_ids), (1,), generator=generator))]
            bg = torch.rand(3, generator=generator).to(device) if masks is not None else background
            truth = frames[i] if masks is None else frames[i] * masks[i] + bg * (1 - masks[i])
            moving = refiner is not None and step >= refine_from
            view = refiner(torch.tensor([i], device=device)) if moving else w2c[i : i + 1]
            K = refiner.intrinsics(Ks[i : i + 1]) if moving else Ks[i : i + 1]
            if backend == "gsplat":
                K = K.detach()  # gsplat differentiates the view matrices, not the intrinsics: focal kept
            out = render_splats(params, view, K, clip.width, clip.height,
                                sh_degree=min(step // config.sh_interval, config.sh_degree), background=bg[None],
                                backend=backend)
            loss = _loss(out.rgb[0], truth, config.ssim_weight)
            if masks is not None:
                loss = loss + 0.1 * torch.abs(out.alpha[0] - masks[i]).mean()
            if config.strategy == "mcmc":
                loss = loss + mcmc_regulariser(params)
            if not torch.isfinite(loss):
                skipped += 1
                for opt in [*optimizers.values(), *(camera_opts if refiner is not None else [])]:
                    opt.zero_grad(set_to_none=True)
                logger.warning("step %d: non-finite loss, step skipped (%d so far)", step, skipped)
                continue
            hooks.pre_backward(params, optimizers, step, out.info)
            loss.backward()
            for opt in optimizers.values():
                opt.step()
                opt.zero_grad(set_to_none=True)
            if moving:
                for opt, lr in zip(camera_opts, (config.lr_cameras, config.lr_focal)):
                    for group in opt.param_groups:
                        group["lr"] = lr * camera_decay ** (step - refine_from)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
            means_lr = optimizers["means"].param_groups[0]["lr"]  # this step's, before the decay
            scheduler.step()
            hooks.post_backward(params, optimizers, step, out.info, means_lr)
            _enforce_guards(params, optimizers, hooks.per_gaussian_state, config.max_gaussians)
            done = step + 1
            stats = {"loss": float(loss.detach()), "psnr": psnr(out.rgb[0].detach(), truth),
                     "gaussians": len(params["means"])}
            if config.eval_every and (step + 1) % config.eval_every == 0 and test_ids:
                ev = evaluate(params, clip, test_ids, config, backend)
                curve.append({"step": step + 1, "seconds": time.perf_counter() - t0, **ev["summary"]})
            if checkpoint and config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
                save_checkpoint(checkpoint, _with_cameras(params, refiner), optimizers, step + 1, checkpoint_key)
            if snapshot is not None and time.perf_counter() - last_snapshot >= snapshot_every_s:
                save_ply(to_scene(params), snapshot)
                last_snapshot = time.perf_counter()  # from the end of the write: its cost stays bounded
            if progress is not None:
                progress(step + 1, stats)
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM under terminate_as_interrupt: keep the steps done
        if checkpoint and done > start:
            logger.warning("interrupted after step %d: writing a checkpoint to resume from", done)
            save_checkpoint(checkpoint, _with_cameras(params, refiner), optimizers, done, checkpoint_key)
        raise
    seconds = time.perf_counter() - t0
    refined = None
    if refiner is not None:
        _align_cameras(params, refiner, frames, masks, Ks, test_ids, clip, config, backend)
        refined_w2c = refiner.refined()
        c2w = np.linalg.inv(refined_w2c.double().cpu().numpy())
        K = refiner.intrinsics(torch.tensor(clip.cameras.K, device=Ks.device)).detach().cpu().numpy()
        refined = Cameras(K, c2w, clip.width, clip.height, clip.cameras.distortion)
        clip = Clip(clip.frames, refined, clip.masks, fps=clip.fps, source=clip.source)
    result = evaluate(params, clip, test_ids or train_ids[:1], config, backend)
    metrics = {**result["summary"], "steps": config.steps, "seconds": round(seconds, 2), "backend": backend,
               "gaussians": len(params["means"]), "skipped_steps": skipped, "held_out_frames": test_ids,
               "background": [round(c, 4) for c in config.background],
               "peak_memory_mb": _peak_memory_mb(device)}
    if refined is not None:
        metrics["camera_refinement"] = _camera_changes(w2c, refined_w2c)
    return TrainResult(to_scene(params), metrics, curve, result["renders"], refined)


# ---------------------------------------------------------------------------------------------
# camera refinement (camera_opt.py)
# ---------------------------------------------------------------------------------------------

CAMERA_LR_END = 0.1  # the camera rate ends at this share of `lr_cameras`
CAMERA_DELTAS = "camera_deltas"  # the refiner's corrections, kept in checkpoints beside the splats
CAMERA_FOCAL = "camera_log_focal"


def _camera_refiner(clip: Clip, w2c: Tensor, deltas: Tensor | None, log_focal: Tensor | None) -> CameraRefiner:
    """Corrections that turn each camera about the object's centre (its look-at point)."""
    from orbitforge.recon.normalise import look_at_centre

    centre = torch.tensor([*look_at_centre(clip.cameras), 1.0], dtype=w2c.dtype, device=w2c.device)
    refiner = CameraRefiner(w2c, (w2c @ centre)[:, 2])
    with torch.no_grad():
        if deltas is not None:
            refiner.deltas.weight.copy_(deltas.to(w2c.device))
        if log_focal is not None:
            refiner.log_focal.copy_(log_focal.reshape(()).to(w2c.device))
    return refiner


def _with_cameras(params, refiner: CameraRefiner | None) -> dict:
    if refiner is None:
        return dict(params)
    return {**params, CAMERA_DELTAS: refiner.deltas.weight, CAMERA_FOCAL: refiner.log_focal.reshape(1)}


def _align_cameras(params, refiner: CameraRefiner, frames: Tensor, masks: Tensor | None, Ks: Tensor,
                   ids: list[int], clip: Clip, config: SplatConfig, backend: str) -> None:
    """Fit the held-out cameras to the finished (frozen) splats, as NeRF evaluations with pose
    refinement do (BARF, nerfstudio): the splats' world drifted with the trained cameras, and a
    held-out frame scored at its SfM pose would measure that drift, not the splats."""
    frozen = {k: v.detach() for k, v in params.items()}
    optimizer = refiner.optimizers(config.lr_cameras, 0.0)[0]  # the focal is one for all: kept
    decay = 0.1 ** (1.0 / max(config.align_steps, 1))
    background = torch.tensor(config.background, device=Ks.device)
    for i in ids:
        view = torch.tensor([i], device=Ks.device)
        truth = frames[i] if masks is None else frames[i] * masks[i] + background * (1 - masks[i])
        for step in range(config.align_steps):
            for group in optimizer.param_groups:
                group["lr"] = config.lr_cameras * decay**step
            out = render_splats(frozen, refiner(view), refiner.intrinsics(Ks[i : i + 1]).detach(), clip.width, clip.height,
                                sh_degree=config.sh_degree, background=background[None], backend=backend)
            _loss(out.rgb[0], truth, config.ssim_weight).backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)


def _camera_changes(before: Tensor, after: Tensor) -> dict:
    """How far the refinement moved the cameras: rotation in degrees, centre in world units."""
    before, after = before.double().cpu(), after.double().cpu()
    rel = after[:, :3, :3] @ before[:, :3, :3].transpose(1, 2)
    cos = ((rel.diagonal(dim1=1, dim2=2).sum(-1) - 1) / 2).clamp(-1, 1)
    degrees = torch.rad2deg(torch.arccos(cos))
    shift = (torch.linalg.inv(after)[:, :3, 3] - torch.linalg.inv(before)[:, :3, 3]).norm(dim=-1)
    return {"median_rotation_deg": round(float(degrees.median()), 4), "max_rotation_deg": round(float(degrees.max()), 4),
            "median_centre_shift": round(float(shift.median()), 5)}


def _loss(render: Tensor, truth: Tensor, ssim_weight: float) -> Tensor:
    from pytorch_msssim import ssim

    l1 = torch.abs(render - truth).mean()
    s = ssim(render.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None], data_range=1.0, size_average=True)
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - s)


@torch.no_grad()
def _enforce_guards(params, optimizers, state, max_gaussians: int) -> None:
    """Drop Gaussians with NaN/Inf parameters and keep the count under the cap."""
    from gsplat.strategy.ops import remove

    bad = torch.zeros(len(params["means"]), dtype=torch.bool, device=params["means"].device)
    for value in params.values():
        bad |= ~torch.isfinite(value.reshape(len(value), -1)).all(dim=1)
    excess = len(params["means"]) - int(bad.sum()) - max_gaussians
    if excess > 0:
        opacity = torch.where(bad, torch.full_like(params["opacities"], -1e9), params["opacities"])
        bad[torch.argsort(opacity)[: int(bad.sum()) + excess]] = True
    if bad.any():
        if (~torch.isfinite(params["means"])).any():
            logger.warning("dropped %d Gaussian(s) with NaN/Inf parameters", int(bad.sum()))
        remove(params=params, optimizers=optimizers, state=state, mask=bad)


@torch.no_grad()
def evaluate(params, clip: Clip, ids: list[int], config: SplatConfig, backend: str) -> dict:
    """PSNR and SSIM (pytorch-msssim) on the given frames, with [truth | render] images."""
    device = params["means"].device
    background = torch.tensor(config.background, device=device)
    images = []
    for i in ids:
        w2c = torch.tensor(clip.cameras.w2c[i : i + 1], dtype=torch.float32, device=device)
        K = torch.tensor(clip.cameras.K[i : i + 1], dtype=torch.float32, device=device)
        out = render_splats(params, w2c, K, clip.width, clip.height, sh_degree=config.sh_degree,
                            background=background[None], backend=backend)
        images.append(out.rgb[0])
    summary, renders = held_out_quality(images, clip, ids, config.background)
    return {"summary": summary, "renders": renders}


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # Linux reports KiB


# ---------------------------------------------------------------------------------------------
# resumable checkpoints (safetensors: parameters and Adam moments, never pickle)
# ---------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, params, optimizers: dict, step: int, key: str) -> None:
    """Parameters and Adam state at `step`, atomically (temp file + rename)."""
    from safetensors.torch import save_file

    tensors = {}
    for name, param in params.items():
        tensors[f"param.{name}"] = param.detach().cpu().contiguous()
        state = optimizers[name].state.get(param, {}) if name in optimizers else {}
        for moment in ("exp_avg", "exp_avg_sq"):
            if moment in state:
                tensors[f"adam.{name}.{moment}"] = state[moment].detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"step": str(step), "key": key, "format": "orbitforge-splat-1"})


def load_checkpoint(path: Path, key: str, device: str):
    """(params, adam moments, step) from a checkpoint made with the same key, else None."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                logger.info("checkpoint %s is for other settings; starting afresh", path)
                return None
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # a torn or foreign file: safetensors raises SafetensorError/OSError
        logger.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
        return None
    params = {n.split(".", 1)[1]: t.to(device) for n, t in tensors.items() if n.startswith("param.")}
    moments = {n.split(".", 1)[1]: t.to(device) for n, t in tensors.items() if n.startswith("adam.")}
    return params, moments, int(meta.get("step", 0))


def _restore_optimizers(optimizers: dict, params, moments: dict, step: int) -> int:
    for name, param in params.items():
        avg, avg_sq = moments.get(f"{name}.exp_avg"), moments.get(f"{name}.exp_avg_sq")
        if avg is not None and avg_sq is not None:
            optimizers[name].state[param] = {"step": torch.tensor(float(step)), "exp_avg": avg, "exp_avg_sq": avg_sq}
    return step
