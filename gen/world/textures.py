"""Pattern textures drawn with numpy: stripes, checker, dots and noise in two palette colours.

Every texture is one seamless tile: shapes.py lays UVs out in tile units (one unit of u or v is
`shapes.UV_TILE_M` metres) and rounds each closed loop to whole tiles, so a pattern repeats with
glTF's default REPEAT sampler and never shows a seam.  Edges are antialiased over about one
texel, so patterns do not shimmer when the renderer samples them bilinearly at small sizes.

The ground colour (the asset's main colour) always covers clearly more of a tile than the pattern
colour (at most about a third is pattern, see `MAX_PATTERN_SHARE`): "a red mug with white checks" must
look mostly red, or a probe that reads the main colour back from renders, and a viewer, could not
tell the main colour from the pattern colour.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

TEXTURE_SIZE = 128
"""Texels per tile side: enough for crisp edges at contact-sheet sizes, small in a GLB."""
MAX_PATTERN_SHARE = 0.34
"""Upper bound on the pattern colour's share of any tile; the ground colour keeps the majority."""
CHECK_INSET = 0.6
"""Side of a pattern-coloured check relative to its cell: the checks sit on ground-coloured grout,
so a checkerboard is 0.5 * 0.6^2 = 18% pattern colour instead of an ambiguous 50%."""
NOISE_THRESHOLD = 0.8
"""Blotches are where the smoothed noise exceeds this many standard deviations (about a fifth of
the surface), so mottling reads as spots on a ground colour, not as two equal colours."""
NOISE_EDGE_SHARPNESS = 8.0
"""Coverage ramps from 0 to 1 over 1/8 of a standard deviation of the smoothed noise: about one
texel at the blob sizes drawn."""


def pattern_texture(
    pattern: str,
    colour: tuple[int, int, int],
    pattern_colour: tuple[int, int, int],
    rng: np.random.Generator,
    size: int = TEXTURE_SIZE,
) -> np.ndarray:
    """One seamless tile of `pattern` ((size, size, 3) uint8 sRGB).

    `colour` is the ground, `pattern_colour` the stripes, checks, dots or blotches; `rng` picks the
    pattern's frequency (and the noise itself), so the same seed gives the same texture.
    """
    coverage = _COVERAGE[pattern](size, rng)  # [size, size] in 0..1: share of pattern colour
    a = np.asarray(colour, dtype=np.float32)
    b = np.asarray(pattern_colour, dtype=np.float32)
    img = a + (b - a) * coverage[..., None]
    return np.round(img).astype(np.uint8)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Texel-centre coordinates (u, v) in [0, 1), v up (row 0 is the top of the image)."""
    t = (np.arange(size) + 0.5) / size
    v, u = np.meshgrid(1.0 - t, t, indexing="ij")
    return u, v


def _edge(signed_distance_texels: np.ndarray) -> np.ndarray:
    """Antialiased step: 1 inside (negative distance), 0 outside, linear over one texel."""
    return np.clip(0.5 - signed_distance_texels, 0.0, 1.0)


def _stripes(size: int, rng: np.random.Generator) -> np.ndarray:
    """Horizontal bands (constant v), so they circle lathe shapes and run level on boxes."""
    per_tile = int(rng.choice([1, 2]))
    duty = float(rng.uniform(0.2, 0.33))  # share of the period in the pattern colour
    _, v = _grid(size)
    phase = (v * per_tile) % 1.0  # 0..1 within one stripe period
    distance = np.abs(phase - 0.5) - duty / 2  # in periods; < 0 inside the band
    return _edge(distance * size / per_tile)


def _checker(size: int, rng: np.random.Generator) -> np.ndarray:
    """Alternate cells hold a check of the pattern colour, inset by grout (see CHECK_INSET)."""
    per_tile = int(rng.choice([1, 1, 2]))  # checker periods per tile (2 or 4 cells per side); fine ones alias
    u, v = _grid(size)
    cu, cv = (u * per_tile) % 1.0, (v * per_tile) % 1.0
    inside = (cu < 0.5) ^ (cv < 0.5)  # the cells that carry a check
    # Chebyshev distance from the centre of the texel's cell (cells are half a period wide)
    half_cell = 0.25
    from_centre = np.maximum(np.abs(cu % 0.5 - half_cell), np.abs(cv % 0.5 - half_cell))
    distance_texels = (from_centre - half_cell * CHECK_INSET) * size / per_tile
    return np.where(inside, _edge(distance_texels), 0.0)


def _dots(size: int, rng: np.random.Generator) -> np.ndarray:
    """Round dots on a staggered 2x2 lattice per tile (periodic, so it tiles)."""
    radius = float(rng.uniform(0.1, 0.16))  # in tiles: 4 dots cover 13% to 32% of a tile
    u, v = _grid(size)
    centres = ((0.25, 0.25), (0.75, 0.25), (0.0, 0.75), (0.5, 0.75))
    nearest = np.full(u.shape, np.inf)
    for cu, cv in centres:
        du = np.abs(u - cu)
        dv = np.abs(v - cv)
        du, dv = np.minimum(du, 1 - du), np.minimum(dv, 1 - dv)  # periodic distance
        nearest = np.minimum(nearest, np.hypot(du, dv))
    return _edge((nearest - radius) * size)


def _noise(size: int, rng: np.random.Generator) -> np.ndarray:
    """Blotches: white noise low-passed in Fourier space (periodic by construction), thresholded softly."""
    blobs_per_tile = float(rng.uniform(2.0, 4.0))
    white = rng.standard_normal((size, size))
    f = np.fft.fftfreq(size) * size  # cycles per tile
    radius2 = f[:, None] ** 2 + f[None, :] ** 2
    smooth = np.fft.ifft2(np.fft.fft2(white) * np.exp(-radius2 / (2 * blobs_per_tile**2))).real
    smooth = (smooth - smooth.mean()) / (smooth.std() + 1e-12)
    # crisp edges (about a texel wide, like the other patterns): a soft ramp paints a wide band of
    # in-between colours, and red blotches fading into silver read as pink
    return np.clip(0.5 + NOISE_EDGE_SHARPNESS * (smooth - NOISE_THRESHOLD), 0.0, 1.0)  # about 20% blotches


def _plain(size: int, rng: np.random.Generator) -> np.ndarray:
    return np.zeros((size, size))


_COVERAGE = MappingProxyType({"plain": _plain, "stripes": _stripes, "checker": _checker, "dots": _dots, "noise": _noise})
