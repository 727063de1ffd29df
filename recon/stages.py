"""The reconstruction stages as run-folder steps: what `orbitforge poses` (and later batch runs)
call.  Each function runs one stage through `RunDir.run_stage`, so it is skipped when its inputs
and config are unchanged and it appears in the run folder whole or not at all.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

from orbitforge.clip import Clip
from orbitforge.errors import InputError, StageError
from orbitforge.recon.ingest import IngestConfig, ingest
from orbitforge.recon.poses import PosesConfig, estimate_poses, write_outputs
from orbitforge.recon.splat.trainer import SplatConfig
from orbitforge.rundir import MANIFEST, RunDir, StageResult

logger = logging.getLogger(__name__)


def is_run_folder(path: Path) -> bool:
    return (Path(path) / MANIFEST).is_file()


def run_ingest(run: RunDir, source: Path, config: IngestConfig = IngestConfig(),
               progress: Callable[[int], None] | None = None) -> StageResult:
    """Stage "clip": frames chosen from a video or photo folder, plus ingest.json and a contact
    sheet in RUN/preview."""
    from orbitforge.viewers.preview import contact_sheet, save_image

    def stage(tmp: Path) -> dict:
        got = ingest(source, config, progress=progress)
        got.clip.save(tmp)
        info = {"focal_px": got.focal_px, "source_indices": got.source_indices.tolist(),
                "sharpness": [round(float(s), 2) for s in got.sharpness], "names": list(got.names)}
        (tmp / "ingest.json").write_text(json.dumps(info, indent=2))
        labels = [n.removeprefix("frame_") for n in got.names]
        save_image(contact_sheet(got.clip.frames, labels=labels, tile=140), run.root / "preview" / "contact_sheet.png")
        return {"frames": len(got.clip), "width": got.clip.width, "height": got.clip.height,
                "focal_px_exif": got.focal_px}

    return run.run_stage("clip", stage, config=asdict(config), inputs=[source])


def run_poses(run: RunDir, config: PosesConfig = PosesConfig(), *, metric_scale: float | None = None,
              focal_px: float | None = None, status: Callable[[str], None] | None = None) -> StageResult:
    """Stage "poses" over RUN/clip.  Raises StageError with the report's one-line problem after
    the outputs (model, report, picture) are safely in RUN/poses."""
    from orbitforge.viewers.preview import save_image

    clip_dir = run.stage_path("clip")
    if not (clip_dir / "clip.json").is_file():
        raise InputError(f"{run.root} has no clip yet; give a video or an image folder as INPUT")

    def stage(tmp: Path) -> dict:
        clip = Clip.load(clip_dir)
        focal = focal_px
        if focal is None and (clip_dir / "ingest.json").is_file():
            focal = json.loads((clip_dir / "ingest.json").read_text()).get("focal_px")
        result = estimate_poses(clip, tmp, config, focal_px=focal, metric_scale=metric_scale, status=status)
        write_outputs(result, tmp)
        keys = ("registered", "images", "points", "mean_reprojection_px", "mean_track_length", "problem")
        return {k: result.report.get(k) for k in keys}

    settings = {**asdict(config), "metric_scale": metric_scale, "focal_px": focal_px}
    result = run.run_stage("poses", stage, config=settings, depends_on=["clip"], seed=config.seed)
    if (result.path / "camera_path.png").is_file():
        from PIL import Image

        save_image(Image.open(result.path / "camera_path.png"), run.root / "preview" / "camera_path.png")
    problem = result.metrics.get("problem")
    if problem:
        raise StageError(f"poses: {problem} (report kept in {result.path / 'report.json'})")
    return result


def posed_clip(run: RunDir) -> tuple[Clip, np.ndarray | None, np.ndarray | None, list[str]]:
    """The clip to splat (poses stage output, else a clip with known cameras), seed points and
    colours from the poses stage's model when there is one, and the stages it depends on.

    Frames from SfM with lens distortion come undistorted (COLMAP's undistorter): the splat
    renderer is a pinhole camera, and would otherwise fit straight rays where the lens bent them.
    """
    from orbitforge.recon.refine import undistorted

    poses_dir = run.stage_path("poses")
    if (poses_dir / "clip.json").is_file():
        clip = Clip.load(poses_dir)
        # masks live with the clip stage; keep them for the registered frames
        full = Clip.load(run.stage_path("clip"))
        report = json.loads((poses_dir / "report.json").read_text())
        if full.masks is not None:
            clip = Clip(clip.frames, clip.cameras, full.masks[report["registered_frames"]], fps=clip.fps, source=clip.source)
        points, colours = _model_points(poses_dir / "sparse" / "0")
        return undistorted(clip), points, colours, ["poses"]
    clip_dir = run.stage_path("clip")
    if not (clip_dir / "clip.json").is_file():
        raise InputError(f"{run.root} has no clip: run `orbitforge poses` or `orbitforge render-orbit` first")
    clip = Clip.load(clip_dir)
    if clip.cameras is None:
        raise InputError(f"the clip in {run.root} has no cameras: run `orbitforge poses {run.root}` first")
    return clip, None, None, ["clip"]


def _model_points(model: Path):
    import pycolmap

    if not (model / "points3D.bin").is_file():
        return None, None
    rec = pycolmap.Reconstruction(str(model))
    pts = list(rec.points3D.values())
    if not pts:
        return None, None
    return np.array([p.xyz for p in pts]), np.array([p.color for p in pts], np.uint8)


def _write_refined_cameras(run: RunDir, trained, refined, path: Path) -> None:
    """transforms.json (nerfstudio) of the refined cameras for the frames in the clip stage: the
    refined poses and focal scale, with the lens model of the cameras the frames were taken with
    (the splats may have trained on undistorted copies)."""
    from orbitforge.cameras import write_transforms_json
    from orbitforge.recon.refine import with_refinement

    poses_dir = run.stage_path("poses")
    if (poses_dir / "clip.json").is_file():
        original = Clip.load(poses_dir).cameras
        index = json.loads((poses_dir / "report.json").read_text())["registered_frames"]
    else:
        original, index = trained, range(len(refined))
    cameras = with_refinement(original, refined.c2w, refined.K[0, 0, 0] / trained.K[0, 0, 0])
    write_transforms_json(path, cameras, [f"../clip/frames/{i:05d}.png" for i in index])


def run_splat(run: RunDir, config: SplatConfig, progress: Callable[[int, dict], None] | None = None) -> StageResult:
    """Stage "splats": Gaussians trained on the posed clip; splats.ply, eval.json, held-out
    renders beside the truth, the training curve, and a resumable checkpoint in RUN/.checkpoints."""
    import hashlib

    from PIL import Image

    from orbitforge.gaussians import save_ply
    from orbitforge.viewers.preview import contact_sheet
    from orbitforge.recon.splat.trainer import train_splats
    from orbitforge.viewers.live import LIVE_SNAPSHOT
    from orbitforge.viewers.preview import save_image, training_curve

    clip, points, colours, depends = posed_clip(run)
    settings = asdict(config)
    key = hashlib.sha256(json.dumps([settings, depends, run.manifest["stages"][depends[0]]["fingerprint"]],
                                    sort_keys=True, default=str).encode()).hexdigest()
    checkpoint = run.root / ".checkpoints" / "splats.safetensors"

    def stage(tmp: Path) -> dict:
        # the live snapshot sits in the partial folder, so it goes away with it (`orbitforge view`)
        result = train_splats(clip, config, points=points, colours=colours, progress=progress,
                              checkpoint=checkpoint, checkpoint_key=key, snapshot=tmp / LIVE_SNAPSHOT)
        (tmp / LIVE_SNAPSHOT).unlink(missing_ok=True)  # not part of the finished stage
        save_ply(result.scene, tmp / "splats.ply")
        (tmp / "eval.json").write_text(json.dumps(result.metrics, indent=2))
        (tmp / "renders").mkdir()
        for i, image in zip(result.metrics["held_out_frames"], result.renders):
            Image.fromarray(image).save(tmp / "renders" / f"heldout_{i:05d}.png")
        if result.cameras is not None:  # refined with the splats: the cameras they agree with
            _write_refined_cameras(run, clip.cameras, result.cameras, tmp / "transforms.json")
        if result.curve:
            (tmp / "curve.json").write_text(json.dumps(result.curve, indent=2))
            save_image(training_curve({"held-out": result.curve}), run.root / "preview" / "splat_curve.png")
        if result.renders:
            save_image(contact_sheet(np.stack(result.renders), columns=2), run.root / "preview" / "splat_heldout.png")
        return {k: result.metrics[k] for k in ("psnr", "ssim", "gaussians", "seconds", "backend", "steps")}

    result = run.run_stage("splats", stage, config=settings, depends_on=depends, seed=config.seed)
    checkpoint.unlink(missing_ok=True)  # the stage is complete: nothing left to resume
    return result
