"""Gaussian splatting: projection, rasterisers (gsplat on CUDA, CPU twins), trainer."""
