"""A synthetic asset world: seeded procedural 3D assets with structured attributes and captions.

Twenty-four categories a game artist asks for (mugs to swords), each a parametric composition of
mesh primitives with real UVs, coloured from a named palette with plain, striped, checkered,
dotted or mottled textures, and described by several truthful captions.  It is the training
world of the orbit-video model: render any asset with `orbitforge.render.render_orbit`.

    >>> from orbitforge.gen.world import sample_asset
    >>> asset = sample_asset(3)
    >>> asset.parts, asset.attributes, asset.captions   # MeshAsset parts, ground truth, text

Modules: palette (colour names), vocabulary (words and their inverse), textures (patterns),
shapes (primitives with UVs), blueprint (what builders return), kitchen / furniture / nature /
toys (the builders), categories (the registry), captions, assets (sampling), cli.
"""

from orbitforge.gen.world.assets import SIZE_SCALES, AssetAttributes, WorldAsset, sample_asset, sample_assets
from orbitforge.gen.world.blueprint import Feature
from orbitforge.gen.world.categories import CATEGORY_NAMES
from orbitforge.gen.world.palette import PALETTE
from orbitforge.gen.world.vocabulary import PATTERNS, categories_in, colours_in, patterns_in

__all__ = [
    "AssetAttributes", "CATEGORY_NAMES", "Feature", "PALETTE", "PATTERNS", "SIZE_SCALES", "WorldAsset",
    "categories_in", "colours_in", "patterns_in", "sample_asset", "sample_assets",
]
