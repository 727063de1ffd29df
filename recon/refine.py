"""Cameras refined against the pixels after SfM, and frames undistorted for pinhole renderers.

SIFT on a compact object keeps many features on its silhouette, which slide over the surface as
the viewpoint changes, so COLMAP's cameras of a rendered Spot orbit sit ~0.6 deg from the truth
even with the true intrinsics (0.73 deg), and bundle adjustment started at the true cameras
drifts ~0.45 deg away.  Fitting splats and camera corrections together (`splat/camera_opt.py`)
uses every pixel instead, and brings them to 0.18-0.24 deg (0.73 -> 0.22 with the true focal).
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from orbitforge.cameras import Cameras, colmap_camera, colmap_intrinsics
from orbitforge.clip import Clip
from orbitforge.errors import InputError


def undistorted(clip: Clip) -> Clip:
    """The clip as a pinhole camera would have seen it (COLMAP's undistorter, as 3DGS expects).

    Splat and NeRF renderers here are pinhole; frames from a lens with distortion would otherwise
    be fitted with straight rays where the lens bent them.  Without distortion the clip comes
    back as it is.  Masks are warped with the frames.
    """
    cams = clip.cameras
    if cams is None or cams.distortion is None or not np.any(cams.distortion):
        return clip
    import pycolmap

    options = pycolmap.UndistortCameraOptions()
    frames, masks, Ks, size = [], [], [], None
    for i in range(len(clip)):
        camera = colmap_camera(cams.K[i], cams.distortion[i], clip.width, clip.height)
        image, pinhole = pycolmap.undistort_image(options, pycolmap.Bitmap.from_array(np.ascontiguousarray(clip.frames[i])),
                                                  camera)
        frames.append(image.to_array())
        if clip.masks is not None:
            mask = np.repeat(clip.masks[i, ..., None].astype(np.uint8) * 255, 3, axis=-1)
            masks.append(pycolmap.undistort_image(options, pycolmap.Bitmap.from_array(mask), camera)[0].to_array()[..., 0] > 127)
        if size not in (None, (pinhole.width, pinhole.height)):
            raise InputError("frames with different lens distortion undistort to different sizes; "
                             "give every frame one shared camera")
        size = (pinhole.width, pinhole.height)
        Ks.append(colmap_intrinsics(pinhole)[0])
    pinholes = Cameras(np.array(Ks), cams.c2w, size[0], size[1])
    return Clip(np.stack(frames), pinholes, np.stack(masks) if masks else None, fps=clip.fps, source=clip.source)


def downscaled(clip: Clip, max_side: int) -> Clip:
    """The clip with its longer side at most `max_side` (area filter), cameras to match."""
    from PIL import Image

    from orbitforge.recon.ingest import resized_size

    width, height = resized_size(clip.width, clip.height, max_side)
    if (width, height) == (clip.width, clip.height):
        return clip
    frames = np.stack([np.asarray(Image.fromarray(f).resize((width, height), Image.BOX)) for f in clip.frames])
    masks = None
    if clip.masks is not None:
        masks = np.stack([np.asarray(Image.fromarray(m).resize((width, height), Image.NEAREST)) for m in clip.masks])
    cameras = None if clip.cameras is None else clip.cameras.resized(width, height)
    return Clip(frames, cameras, masks, fps=clip.fps, source=clip.source)


def with_refinement(original: Cameras, c2w: np.ndarray, focal_scale: float) -> Cameras:
    """`original` (intrinsics, size and lens kept) with refined poses and focal scale: the
    refinement ran on undistorted, smaller copies of the frames, and these cameras are for the
    frames themselves."""
    K = original.K.copy()
    K[:, :2, :2] *= focal_scale
    return Cameras(K, c2w, original.width, original.height, original.distortion)


def refine_cameras(clip: Clip, points: np.ndarray | None, colours: np.ndarray | None, *, steps: int = 1500,
                   max_side: int = 256, refine_focal: bool = True, seed: int = 0,
                   progress: Callable[[int, dict], None] | None = None) -> tuple[Cameras, dict]:
    """SfM cameras corrected by fitting splats and cameras to every frame together.

    Args:
        clip: frames with their SfM cameras (in any world; the result stays in it).
        points, colours: SfM points to start the splats from.
        steps: joint optimisation steps; max_side: frames are shrunk to this for speed.
        refine_focal: learn one focal scale too (not when the intrinsics are known).

    Returns the refined cameras (the clip's intrinsics, size and distortion kept) and a report.
    The splats' world drifts a little with the cameras during the fit; a robust similarity
    transform takes the refined cameras back into the SfM world, so that the SfM points and the
    normalisation still hold.
    """
    from orbitforge.recon.metrics import pose_errors
    from orbitforge.recon.splat.trainer import SplatConfig, train_splats

    t0 = time.perf_counter()
    small = downscaled(undistorted(clip), max_side)
    config = SplatConfig(steps=steps, refine_cameras=True, holdout_every=0, seed=seed,
                         **({} if refine_focal else {"lr_focal": 0.0}))
    fit = train_splats(small, config, points=points, colours=colours, progress=progress)
    back = pose_errors(fit.cameras, clip.cameras)  # refined, aligned onto the SfM cameras
    focal_scale = float(fit.cameras.K[0, 0, 0] / small.cameras.K[0, 0, 0])
    refined = with_refinement(clip.cameras, back.aligned.c2w, focal_scale)
    report = {"steps": steps, "size": [small.width, small.height], "psnr": fit.metrics["psnr"],
              "focal_scale": round(focal_scale, 5),
              "median_rotation_change_deg": round(float(np.median(back.rotation_deg)), 4),
              "max_rotation_change_deg": round(float(back.rotation_deg.max()), 4),
              "seconds": round(time.perf_counter() - t0, 1)}
    return refined, report
