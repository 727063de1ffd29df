"""Normalise a reconstructed world: object at the origin, +Y up, object inside radius 1.

SfM returns an arbitrary frame.  Everything after poses (splats, export, viewers) wants the
object centred, upright and of a known size, and every normalisation must be reversible, so the
result is one similarity transform, recorded in the report and in run.json.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from orbitforge.cameras import Cameras


@dataclass(frozen=True)
class Similarity:
    """x_new = scale * rotation @ x + translation."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) homogeneous form."""
        m = np.eye(4)
        m[:3, :3] = self.scale * self.rotation
        m[:3, 3] = self.translation
        return m

    def apply_points(self, points: np.ndarray) -> np.ndarray:
        return self.scale * np.asarray(points) @ self.rotation.T + self.translation

    def apply_cameras(self, cameras: Cameras) -> Cameras:
        c2w = cameras.c2w.copy()
        c2w[:, :3, :3] = self.rotation @ c2w[:, :3, :3]
        c2w[:, :3, 3] = self.apply_points(cameras.centres)
        return Cameras(cameras.K, c2w, cameras.width, cameras.height, cameras.distortion)

    def to_json(self) -> dict:
        return {"scale": self.scale, "rotation": self.rotation.tolist(), "translation": self.translation.tolist(),
                "matrix": self.matrix.tolist()}


def look_at_centre(cameras: Cameras) -> np.ndarray:
    """The point closest (least squares) to every camera's optical axis."""
    dirs = cameras.c2w[:, :3, 2]
    centres = cameras.centres
    proj = np.eye(3)[None] - dirs[:, :, None] * dirs[:, None, :]  # [N, 3, 3] projectors off each axis
    A = proj.sum(0)
    b = np.einsum("nij,nj->i", proj, centres)
    if np.linalg.cond(A) > 1e8:  # parallel axes (a camera sliding sideways): use the centroid
        return centres.mean(0)
    return np.linalg.solve(A, b)


def up_direction(cameras: Cameras) -> np.ndarray:
    """+Y of the new world.

    A walk-around orbit lies in a plane whose normal is the cameras' up: then that normal,
    signed like the cameras' mean up (-y in OpenCV axes), is the most precise estimate.  When
    the cameras' ups lie in the ring's plane instead, the photos were taken rolled by 90 deg
    (portrait photos stored sideways, as in Middlebury's templeRing) or the ring is vertical.
    A rolled walk-around still looks down at the object from above the ring's centre, so when
    the ring sits clearly above the point the cameras look at (more than 3 deg of elevation),
    the normal pointing to that side is up; otherwise (a vertical ring over the object, a
    free-hand sweep) the mean camera up is used.
    """
    ups = -cameras.c2w[:, :3, 1]
    mean_up = ups.mean(0)
    mean_up /= max(np.linalg.norm(mean_up), 1e-12)
    centres = cameras.centres - cameras.centres.mean(0)
    if len(centres) >= 3:
        _, s, vt = np.linalg.svd(centres)
        normal = vt[2]
        planar = s[1] > 1e-9 and s[2] < 0.5 * s[1]
        if planar and np.median(np.abs(ups @ normal)) > 0.7:
            return normal * np.sign(normal @ mean_up)
        if planar and np.median(np.abs(ups @ normal)) < 0.3:
            height = (cameras.centres.mean(0) - look_at_centre(cameras)) @ normal
            radius = np.median(np.linalg.norm(centres, axis=1))
            if abs(height) > np.tan(np.radians(3.0)) * radius:
                return normal * np.sign(height)
    return mean_up


def normalise_world(cameras: Cameras, points: np.ndarray | None = None, metric_scale: float | None = None) -> Similarity:
    """The similarity that centres, uprights and scales a reconstruction.

    Scale: the object (sparse points within the cameras' median distance of the centre, 95th
    percentile radius) fits in radius 1; without points, the cameras sit at distance 3.
    `metric_scale` (world units per reconstruction unit, e.g. from a known object size) wins.
    """
    centre = look_at_centre(cameras)
    up = up_direction(cameras)
    # rotation taking `up` to +Y, keeping the first camera's horizontal heading towards +Z
    forward = cameras.centres[0] - centre
    forward -= (forward @ up) * up
    if np.linalg.norm(forward) < 1e-9:
        forward = np.cross(up, [1.0, 0, 0]) if abs(up[0]) < 0.9 else np.cross(up, [0, 0, 1.0])
    forward /= np.linalg.norm(forward)
    right = np.cross(up, forward)
    rotation = np.stack([right, up, forward])  # rows: new x, y, z in old coordinates
    if metric_scale is not None:
        scale = float(metric_scale)
    else:
        cam_dist = np.median(np.linalg.norm(cameras.centres - centre, axis=1))
        radius = None
        if points is not None and len(points):
            d = np.linalg.norm(np.asarray(points) - centre, axis=1)
            near = d[d < cam_dist]
            if len(near) >= 10:
                radius = float(np.percentile(near, 95))
        scale = 1.0 / radius if radius else 3.0 / max(cam_dist, 1e-12)
    return Similarity(scale, rotation, -scale * rotation @ centre)
