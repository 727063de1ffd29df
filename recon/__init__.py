"""Reconstruction: ingest of videos and photos, camera poses with pycolmap, Gaussian splatting,
the nerfstudio bridge and quality metrics."""
