"""Sample a synthetic asset: build a category's blueprint, colour it, scale it, caption it.

`sample_asset(seed)` is the one entry point; everything it returns is a pure function of the
seed (and of the category when given).  Three independent random streams are derived from the
seed, so that an asset drawn with `category=None` equals the same seed drawn with its category
named, and changing caption templates never moves a vertex:

    [seed, 0]                 -> which category (only when none is given)
    [seed, 1, crc32(category)] -> geometry, colours, pattern, size
    [seed, 2, crc32(category)] -> captions

Assets stand on y = 0, centred on x and z (the pivot at the bottom centre, as the glTF/Unity
engine preset expects), front +Z, +Y up, and fit a cube of side about 1 m (0.8 to 1.3 m by size).
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from orbitforge.errors import InputError
from orbitforge.gen.world.blueprint import MAIN, Blueprint, Category, Feature, pick
from orbitforge.gen.world.captions import make_captions
from orbitforge.gen.world.categories import CATEGORY_NAMES, get_category
from orbitforge.gen.world.palette import distinct_from, srgb
from orbitforge.gen.world.textures import pattern_texture
from orbitforge.mesh import MeshAsset, to_glb_bytes

logger = logging.getLogger(__name__)

SIZE_SCALES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"small": (0.8, 0.9), "medium": (0.95, 1.05), "large": (1.15, 1.3)}
)
"""Size word -> range of the asset's largest side in metres.  Gaps between the ranges keep the
word unambiguous: a probe that reads the size back never sits on a boundary."""


@dataclass(frozen=True)
class AssetAttributes:
    """What an asset is, as structured data: the ground truth behind its captions.

    Attributes:
        category: a name from `CATEGORY_NAMES`.
        main_colour: palette colour of the main parts (what "a red chair" means).
        pattern: "plain", "stripes", "checker", "dots" or "noise", on the main parts.
        pattern_colour: palette colour of the stripes/checks/dots/blotches; None when plain.
        part_colours: (part name, palette colour, plural noun?) per part, in the order of
            `WorldAsset.parts`.
        size: "small", "medium" or "large" (see SIZE_SCALES).
        shape_words: words about proportions that hold for this asset ("tall", "squat").
        features: counts, optional parts and styles the builder chose.
        extent_m: (3,) width, height, depth of the bounding box in metres.
    """

    category: str
    main_colour: str
    pattern: str
    pattern_colour: str | None
    part_colours: tuple[tuple[str, str, bool], ...]
    size: str
    shape_words: tuple[str, ...]
    features: tuple[Feature, ...]
    extent_m: tuple[float, float, float]

    def feature(self, name: str) -> int | bool | str | None:
        """The value of feature `name`, or None when the category has no such feature."""
        return next((f.value for f in self.features if f.name == name), None)

    @property
    def colours(self) -> frozenset[str]:
        """Every palette colour that appears on the asset (what a caption may name)."""
        return frozenset([self.main_colour] + [c for _, c, _ in self.part_colours]
                         + ([self.pattern_colour] if self.pattern_colour else []))

    def to_dict(self) -> dict:
        """JSON-ready form (assets.json)."""
        return {
            "category": self.category, "main_colour": self.main_colour, "pattern": self.pattern,
            "pattern_colour": self.pattern_colour, "size": self.size, "shape_words": list(self.shape_words),
            "part_colours": {name: colour for name, colour, _ in self.part_colours},
            "features": {f.name: f.value for f in self.features},
            "extent_m": [round(v, 4) for v in self.extent_m],
        }


@dataclass(frozen=True)
class WorldAsset:
    """A sampled asset: mesh parts (one material each), their attributes and captions."""

    seed: int
    parts: tuple[MeshAsset, ...]
    attributes: AssetAttributes
    captions: tuple[str, ...]

    def to_glb_bytes(self) -> bytes:
        """The asset as a binary glTF, one node per part."""
        return to_glb_bytes(self.parts)

    def to_dict(self) -> dict:
        return {"seed": self.seed, "attributes": self.attributes.to_dict(), "captions": list(self.captions)}


def sample_asset(seed: int, category: str | None = None) -> WorldAsset:
    """One procedural asset, a pure function of `seed` (and `category`).

    Args:
        seed: any non-negative integer; nearby seeds give unrelated assets.
        category: one of `CATEGORY_NAMES`, or None to draw one uniformly from the seed.
    Raises:
        InputError: for a negative seed or an unknown category (the message lists the valid ones).

    Example:
        >>> asset = sample_asset(7, "mug")
        >>> asset.attributes.category, len(asset.captions) >= 5
        ('mug', True)
    """
    if not isinstance(seed, (int, np.integer)) or seed < 0:
        raise InputError(f"seed must be a non-negative integer, got {seed!r}")
    if category is None:
        category = CATEGORY_NAMES[int(np.random.default_rng([seed, 0]).integers(len(CATEGORY_NAMES)))]
    spec = get_category(category)
    key = zlib.crc32(category.encode())
    rng = np.random.default_rng([seed, 1, key])
    blueprint = spec.build(rng)
    parts, attributes = _colour_and_scale(spec, blueprint, rng)
    captions = make_captions(attributes, np.random.default_rng([seed, 2, key]))
    return WorldAsset(int(seed), parts, attributes, captions)


def sample_assets(n: int, seed: int = 0, category: str | None = None) -> tuple[WorldAsset, ...]:
    """`n` assets with seeds seed, seed + 1, ... (so shard k of size n can start at seed k * n)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise InputError(f"number of assets must be at least 1, got {n!r}; use --n 1 or more")
    if category is not None:
        get_category(category)  # an unknown name fails before any work
    return tuple(sample_asset(seed + i, category) for i in range(n))


def _colour_and_scale(spec: Category, blueprint: Blueprint, rng: np.random.Generator):
    """Draw colours, pattern and size; return the MeshAsset parts and the attributes."""
    # 1. colours: every role is drawn, used or not, so the stream never depends on which parts exist
    main = pick(rng, spec.main_colours)
    pattern = pick(rng, spec.patterns)
    pattern_colour = pick(rng, distinct_from(main))
    roles = {MAIN: main}
    for role, choices in spec.roles.items():
        roles[role] = pick(rng, distinct_from(main, choices) or choices)
    texture = pattern_texture(pattern, srgb(main), srgb(pattern_colour), rng)
    size = pick(rng, tuple(SIZE_SCALES))
    # 2. scale: largest side -> the size's range; pivot at the bottom centre
    lo = np.min([p.shape.vertices.min(axis=0) for p in blueprint.parts], axis=0)
    hi = np.max([p.shape.vertices.max(axis=0) for p in blueprint.parts], axis=0)
    scale = rng.uniform(*SIZE_SCALES[size]) / float((hi - lo).max())
    shift = -np.array([(lo[0] + hi[0]) / 2, lo[1], (lo[2] + hi[2]) / 2])
    parts, part_colours = [], []
    for spec_part in blueprint.parts:
        colour = roles.get(spec_part.colour, spec_part.colour)
        srgb(colour)  # a fixed colour must be a palette colour
        shape = spec_part.shape
        vertices = (shape.vertices + shift) * scale
        common = dict(vertices=vertices, faces=shape.faces, normals=shape.normals, name=spec_part.name)
        if spec_part.colour == MAIN and pattern != "plain":
            parts.append(MeshAsset(**common, uvs=shape.uvs, base_colour=texture))
        else:
            parts.append(MeshAsset(**common, base_colour_factor=(*np.asarray(srgb(colour)) / 255.0, 1.0)))
        part_colours.append((spec_part.name, colour, spec_part.plural))
    attributes = AssetAttributes(
        category=spec.name, main_colour=main, pattern=pattern,
        pattern_colour=pattern_colour if pattern != "plain" else None, part_colours=tuple(part_colours),
        size=size, shape_words=blueprint.shape_words, features=blueprint.features,
        extent_m=tuple(float(v) for v in (hi - lo) * scale),
    )
    return tuple(parts), attributes
