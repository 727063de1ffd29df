"""Runs inside the NeRF environment (.venv-nerf), never inside orbitforge's own.

nerfstudio 1.1.5 cannot share orbitforge's environment (it pins viser 0.2.7 and gsplat 1.4.0 and
needs a torchvision that matches its torch), so `orbitforge.recon.nerf` starts this file with
that environment's Python.  It imports only the standard library, numpy, torch and nerfstudio,
and talks to orbitforge through files:

    python nerf_worker.py train ARGS...            ns-train with ARGS, after the CPU workarounds
    python nerf_worker.py render CONFIG CAMS OUT   colour, ray distance and opacity per camera

CAMS is an .npz with c2w (N, 4, 4) in nerfstudio's axes (OpenGL: x right, y up, z back) and
world, K (N, 3, 3), width, height and background (3,) (NaN: the model's own); OUT is an .npz with rgb (N, H, W, 3) uint8, distance
(N, H, W) float32 along unit rays, and accumulation (N, H, W) float32.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _offline_lpips() -> None:
    """nerfacto builds torchmetrics' LPIPS when it starts, which downloads AlexNet weights from
    the internet.  orbitforge measures PSNR and SSIM itself, so LPIPS becomes a stand-in that
    reports NaN and downloads nothing.  Must run before nerfstudio builds a model."""
    import torch
    import torchmetrics.image.lpip as lpip

    class NoLPIPS(torch.nn.Module):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__()

        def forward(self, *args, **kwargs) -> torch.Tensor:
            return torch.tensor(float("nan"))

    lpip.LearnedPerceptualImagePatchSimilarity = NoLPIPS


def _safe_checkpoint_loading() -> None:
    """nerfstudio's checkpoints hold a few numpy scalars beside the tensors.  torch.load (since
    2.6) only unpickles allow-listed types, and refuses them; allow exactly those types, rather
    than turning the safety off with weights_only=False."""
    import numpy as np
    import torch

    dtypes = [type(np.dtype(t)) for t in (np.float64, np.float32, np.int64, np.int32, np.bool_)]
    torch.serialization.add_safe_globals([np.core.multiarray.scalar, np.dtype, *dtypes])


def train(args: list[str]) -> None:
    _offline_lpips()
    from nerfstudio.scripts.train import entrypoint

    sys.argv = ["ns-train", *args]
    entrypoint()


def render(config_path: Path, cameras_path: Path, out_path: Path) -> None:
    import numpy as np
    import torch
    from nerfstudio.cameras.cameras import Cameras, CameraType
    from nerfstudio.model_components.renderers import background_color_override_context
    from nerfstudio.utils.eval_utils import eval_setup

    _offline_lpips()
    _safe_checkpoint_loading()
    _, pipeline, _, step = eval_setup(config_path, test_mode="inference")
    device = pipeline.device
    cams = np.load(cameras_path)
    c2w, K = cams["c2w"].astype(np.float64), cams["K"].astype(np.float64)
    width, height = int(cams["width"]), int(cams["height"])
    background = torch.tensor(cams["background"], dtype=torch.float32, device=device)
    # nerfstudio's data parser may move and scale the world; it records how, and renders for
    # the caller's world need the same move (orbitforge switches it off, so this is the identity)
    moved = json.loads((config_path.parent / "dataparser_transforms.json").read_text())
    transform = np.eye(4)
    transform[:3, :4] = np.asarray(moved["transform"])
    scale = float(moved["scale"])
    c2w = transform @ c2w
    c2w[:, :3, 3] *= scale
    rgb, distance, accumulation = [], [], []
    for i in range(len(c2w)):
        camera = Cameras(camera_to_worlds=torch.tensor(c2w[i : i + 1, :3, :4], dtype=torch.float32),
                         fx=float(K[i, 0, 0]), fy=float(K[i, 1, 1]), cx=float(K[i, 0, 2]), cy=float(K[i, 1, 2]),
                         width=width, height=height, camera_type=CameraType.PERSPECTIVE).to(device)
        with torch.no_grad():
            if torch.isfinite(background).all():  # the colour the caller measures against
                with background_color_override_context(background):
                    out = pipeline.model.get_outputs_for_camera(camera)
            else:
                out = pipeline.model.get_outputs_for_camera(camera)
        rgb.append((out["rgb"].clamp(0, 1) * 255 + 0.5).byte().cpu().numpy())
        # nerfacto's "depth" is the expected distance along each unit-length ray, in its world
        distance.append((out["depth"][..., 0] / scale).float().cpu().numpy())
        accumulation.append(out["accumulation"][..., 0].float().cpu().numpy())
        print(f"rendered {i + 1}/{len(c2w)}", flush=True)
    np.savez_compressed(out_path, rgb=np.stack(rgb), distance=np.stack(distance),
                        accumulation=np.stack(accumulation), step=step)


def main(argv: list[str]) -> None:
    if not argv or argv[0] not in ("train", "render"):
        sys.exit("usage: nerf_worker.py train ARGS... | render CONFIG CAMERAS OUT")
    if argv[0] == "train":
        train(argv[1:])
    else:
        render(Path(argv[1]), Path(argv[2]), Path(argv[3]))


if __name__ == "__main__":
    main(sys.argv[1:])
