"""Quality measures for reconstructions: pose errors against known cameras, image quality of
held-out renders (the same PSNR and SSIM for splats and NeRFs, so the two compare), and the
surface Chamfer distance of a mesh to the true one.

SfM recovers cameras only up to a similarity (scale, rotation, translation), so estimated poses
are first aligned to the truth with a robust Sim(3) fitted to the camera centres (pycolmap's
LO-RANSAC), and errors are measured after that: a few wrong cameras cannot drag the alignment,
and they show up as the outliers they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orbitforge.cameras import Cameras


def psnr(render, truth) -> float:
    """PSNR in dB of a render against the truth, both float tensors in [0, 1] (render clamped)."""
    import torch

    mse = float(torch.mean((render.clamp(0, 1) - truth) ** 2))
    return 10 * float(np.log10(1.0 / max(mse, 1e-12)))


def surface_chamfer(mesh, truth_parts, samples: int = 30_000) -> float:
    """Symmetric mean surface Chamfer distance of `mesh` (a MeshAsset or a trimesh) to the true
    parts (MeshAssets), as a share of the truth's bounding-box diagonal: points sampled on each
    surface, each one's distance to the nearest sample on the other, averaged both ways."""
    import trimesh
    from scipy.spatial import cKDTree

    truth = trimesh.util.concatenate([p.to_trimesh() for p in truth_parts])
    got = mesh.to_trimesh() if hasattr(mesh, "to_trimesh") else mesh
    a, _ = trimesh.sample.sample_surface(truth, samples, seed=0)
    b, _ = trimesh.sample.sample_surface(got, samples, seed=1)
    d = (cKDTree(b).query(a)[0].mean() + cKDTree(a).query(b)[0].mean()) / 2
    return float(d / np.linalg.norm(truth.bounds[1] - truth.bounds[0]))


def image_quality(render, truth) -> tuple[float, float]:
    """(PSNR dB, SSIM) of an (H, W, 3) float render against the truth; SSIM from pytorch-msssim."""
    from pytorch_msssim import ssim

    image = render.clamp(0, 1)
    s = ssim(image.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None], data_range=1.0)
    return psnr(image, truth), float(s)


def held_out_quality(renders, clip, ids, background) -> tuple[dict, list[np.ndarray]]:
    """Score renders of a clip's held-out frames, the same way for every backend.

    Args:
        renders: one (H, W, 3) float tensor in [0, 1] per frame of `ids`, on any device.
        clip: the posed clip; where it has masks, its frames are composed on `background`, as
            the renders are.
        background: (r, g, b) in [0, 1].
    Returns:
        ({"psnr", "ssim", "psnr_per_frame"}, [truth | render] uint8 pictures, one per frame).
    """
    import torch

    psnrs, ssims, pictures = [], [], []
    for image, i in zip(renders, ids):
        image = image.detach().float().clamp(0, 1)
        colour = torch.tensor(background, dtype=torch.float32, device=image.device)
        truth = torch.as_tensor(clip.frames[i], device=image.device).float() / 255
        if clip.masks is not None:
            m = torch.as_tensor(clip.masks[i], device=image.device).float()[..., None]
            truth = truth * m + colour * (1 - m)
        p, s = image_quality(image, truth)
        psnrs.append(p)
        ssims.append(s)
        pictures.append((torch.cat([truth, image], dim=1).cpu().numpy() * 255).round().astype(np.uint8))
    summary = {"psnr": round(float(np.mean(psnrs)), 3), "ssim": round(float(np.mean(ssims)), 4),
               "psnr_per_frame": [round(p, 3) for p in psnrs]}
    return summary, pictures


@dataclass(frozen=True)
class PoseErrors:
    """Per-camera errors after alignment.

    Attributes:
        rotation_deg: (N,) angle between aligned and true camera orientations.
        centre_error: (N,) distance between aligned and true centres, as a fraction of the
            true cameras' mean distance from their centroid (scale-free).
        scale: the fitted Sim(3) scale (truth units per estimated unit).
        aligned: the estimated cameras moved into the truth's frame.
    """

    rotation_deg: np.ndarray
    centre_error: np.ndarray
    scale: float
    aligned: Cameras

    def summary(self, threshold_deg: float = 2.0) -> dict:
        """JSON-ready numbers for reports."""
        return {
            "cameras": int(len(self.rotation_deg)),
            "rotation_deg_median": float(np.median(self.rotation_deg)),
            "rotation_deg_max": float(np.max(self.rotation_deg)),
            "centre_error_median": float(np.median(self.centre_error)),
            f"cameras_within_{threshold_deg:g}_deg": int((self.rotation_deg <= threshold_deg).sum()),
        }


def _similarity_from_centres(src: np.ndarray, tgt: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """tgt ~ s R src + t, robustly (pycolmap LO-RANSAC); Umeyama on all points as a fallback."""
    import pycolmap

    spread = np.linalg.norm(tgt - tgt.mean(0), axis=1).mean()
    options = pycolmap.RANSACOptions()
    options.max_error = 0.05 * spread  # a camera more than 5% of the rig size off is an outlier
    found = pycolmap.estimate_sim3d_robust(src, tgt, options) if len(src) >= 3 else None
    sim = found["tgt_from_src"] if found else None  # pycolmap returns a dict, or None on failure
    if sim is not None:
        m = sim.matrix()
        return float(sim.scale), m[:, :3] / sim.scale, m[:, 3]
    # Umeyama (closed form) when RANSAC cannot run, e.g. three cameras in a line
    mu_s, mu_t = src.mean(0), tgt.mean(0)
    cov = (tgt - mu_t).T @ (src - mu_s) / len(src)
    u, d, vt = np.linalg.svd(cov)
    fix = np.diag([1, 1, np.sign(np.linalg.det(u @ vt))])
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(d) @ fix) / ((src - mu_s) ** 2).sum(1).mean())
    return scale, rot, mu_t - scale * rot @ mu_s


def _refine_rotation(rot: np.ndarray, est_rots: np.ndarray, true_rots: np.ndarray, inlier_deg: float = 5.0) -> np.ndarray:
    """The alignment's rotation re-fitted to the orientations of the cameras it already aligns
    within `inlier_deg` (chordal L2 mean): centres alone leave the rotation loose by a fraction
    of a degree when the cameras sit on one small ring, orientations pin it down."""
    rel = np.einsum("nij,nkj->nik", true_rots, rot @ est_rots)  # R_true R_aligned^T, [N, 3, 3]
    angles = np.degrees(np.arccos(np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1, 1)))
    inliers = angles <= inlier_deg
    if inliers.sum() < 2:
        return rot
    u, _, vt = np.linalg.svd(np.einsum("nij,nkj->ik", true_rots[inliers], est_rots[inliers]))
    return u @ np.diag([1, 1, np.sign(np.linalg.det(u @ vt))]) @ vt


def pose_errors(estimated: Cameras, truth: Cameras) -> PoseErrors:
    """Errors of `estimated` against `truth` (same cameras, same order) after a robust Sim(3)."""
    if len(estimated) != len(truth):
        raise ValueError(f"{len(estimated)} estimated cameras for {len(truth)} true ones")
    scale, rot, trans = _similarity_from_centres(estimated.centres, truth.centres)
    rot = _refine_rotation(rot, estimated.c2w[:, :3, :3], truth.c2w[:, :3, :3])
    c2w = estimated.c2w.copy()
    c2w[:, :3, :3] = rot @ c2w[:, :3, :3]
    c2w[:, :3, 3] = scale * estimated.centres @ rot.T + trans
    aligned = Cameras(estimated.K, c2w, estimated.width, estimated.height, estimated.distortion)
    rel = np.einsum("nji,njk->nik", truth.c2w[:, :3, :3], aligned.c2w[:, :3, :3])
    cos = np.clip((np.trace(rel, axis1=1, axis2=2) - 1) / 2, -1.0, 1.0)
    spread = np.linalg.norm(truth.centres - truth.centres.mean(0), axis=1).mean()
    centre_error = np.linalg.norm(aligned.centres - truth.centres, axis=1) / max(spread, 1e-12)
    return PoseErrors(np.degrees(np.arccos(cos)), centre_error, scale, aligned)
