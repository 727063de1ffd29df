"""Words for colours, patterns and categories, and their inverse: words found in a caption.

Captions pick a synonym at random; tests and the attribute probe read captions back through
`colours_in`, `patterns_in` and `categories_in`.  Every synonym belongs to exactly one entry,
which `_invert` checks at import, so a caption word always maps back to one palette colour,
pattern or category.
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Mapping

from orbitforge.gen.world.palette import COLOUR_NAMES

COLOUR_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "red": ("red", "crimson", "scarlet", "cherry-red"),
    "orange": ("orange", "tangerine", "amber"),
    "yellow": ("yellow", "lemon-yellow", "sunny yellow", "mustard"),
    "green": ("green", "grass-green", "leafy green", "emerald"),
    "dark green": ("dark green", "forest-green", "pine-green", "hunter green"),  # not "deep": a deep bowl
    "teal": ("teal", "turquoise", "blue-green"),
    "blue": ("blue", "cobalt", "royal blue", "azure"),
    "navy": ("navy", "navy blue", "dark blue", "midnight blue"),
    "purple": ("purple", "violet", "plum"),
    "pink": ("pink", "rose", "bubblegum pink", "rosy"),
    "brown": ("brown", "wooden-brown", "chocolate", "chestnut"),
    "beige": ("beige", "tan", "sand-coloured", "cream"),
    "black": ("black", "jet-black", "ebony", "coal-black"),
    "white": ("white", "snow-white", "ivory", "pure white"),
    "gray": ("gray", "grey", "slate", "ash-grey"),
    "silver": ("silver", "steel", "metallic silver", "chrome"),
    "gold": ("gold", "golden", "brass"),
})
"""Palette colour -> words that name it (the first is the plain name)."""

PATTERNS: tuple[str, ...] = ("plain", "stripes", "checker", "dots", "noise")
"""Surface patterns of an asset's main parts; textures.py draws each."""

PATTERN_ADJECTIVES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "plain": ("plain", "solid-coloured", "single-colour"),
    "stripes": ("striped", "stripy", "banded"),
    "checker": ("checkered", "chequered", "checkerboard"),
    "dots": ("polka-dot", "dotted", "spotted"),
    "noise": ("mottled", "speckled", "blotchy"),
})
"""Pattern -> adjectives ("a striped vase")."""

PATTERN_NOUNS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "stripes": ("stripes", "bands"),
    "checker": ("checks", "checker pattern", "checkerboard pattern"),
    "dots": ("dots", "spots", "polka dots"),
    "noise": ("speckles", "mottling", "blotches"),
})
"""Pattern -> nouns for "with white stripes" ("with a white checker pattern"); plain has none."""

CATEGORY_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "mug": ("mug", "coffee mug", "tea mug"),
    "vase": ("vase", "flower vase", "urn"),
    "bottle": ("bottle", "flask"),
    "bowl": ("bowl", "dish", "serving bowl"),
    "teapot": ("teapot", "tea pot"),
    "candle": ("candle", "wax candle"),
    "table": ("table", "side table"),
    "chair": ("chair", "dining chair", "armchair"),
    "stool": ("stool", "bar stool", "footstool"),
    "lamp": ("lamp", "table lamp", "desk lamp"),
    "lantern": ("lantern", "oil lantern", "camping lantern"),
    "barrel": ("barrel", "cask", "keg"),
    "crate": ("crate", "wooden crate", "box"),
    "chest": ("treasure chest", "chest", "loot chest"),
    "mushroom": ("mushroom", "toadstool"),
    "tree": ("tree", "leafy tree", "deciduous tree"),
    "pine tree": ("pine tree", "fir tree", "conifer"),
    "cactus": ("cactus in a pot", "potted cactus", "cactus"),
    "snowman": ("snowman", "snow figure"),
    "rocket": ("rocket", "spaceship", "rocket ship"),
    "car": ("car", "toy car", "automobile"),
    "house": ("house", "cottage", "cabin"),
    "robot": ("robot", "toy robot", "droid"),
    "sword": ("sword", "blade", "longsword"),
})
"""Category -> nouns; the first is the canonical name.  Some are true only sometimes ("armchair"
needs armrests): captions.py holds those conditions."""


def _invert(table: Mapping[str, tuple[str, ...]], kind: str) -> dict[str, str]:
    inverse: dict[str, str] = {}
    for key, words in table.items():
        for word in words:
            if inverse.setdefault(word, key) != key:
                raise AssertionError(f"{kind} word {word!r} names both {inverse[word]!r} and {key!r}")
    return inverse


COLOUR_OF_WORD: Mapping[str, str] = MappingProxyType(_invert(COLOUR_WORDS, "colour"))
PATTERN_OF_WORD: Mapping[str, str] = MappingProxyType(
    _invert({p: PATTERN_ADJECTIVES[p] + PATTERN_NOUNS.get(p, ()) for p in PATTERNS}, "pattern")
)
CATEGORY_OF_WORD: Mapping[str, str] = MappingProxyType(_invert(CATEGORY_WORDS, "category"))
assert set(COLOUR_WORDS) == set(COLOUR_NAMES), "every palette colour needs words, and only those"


def _finder(words) -> re.Pattern:
    # longest first, so "dark blue" wins over "blue" and "pine tree" over "tree"
    alternatives = sorted(words, key=len, reverse=True)
    # an optional plural "s" ("three mushrooms"), but never a word inside a longer one
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in alternatives) + r")s?(?![\w-])", re.IGNORECASE)


_COLOUR_RE = _finder(COLOUR_OF_WORD)
_PATTERN_RE = _finder(PATTERN_OF_WORD)
_CATEGORY_RE = _finder(CATEGORY_OF_WORD)


def colours_in(text: str) -> list[str]:
    """Palette colours named in `text`, in order of appearance ("crimson mug" -> ["red"])."""
    return [COLOUR_OF_WORD[m.group(1).lower()] for m in _COLOUR_RE.finditer(text)]


def patterns_in(text: str) -> list[str]:
    """Patterns named in `text` ("with white stripes" -> ["stripes"])."""
    return [PATTERN_OF_WORD[m.group(1).lower()] for m in _PATTERN_RE.finditer(text)]


def categories_in(text: str) -> list[str]:
    """Categories named in `text` ("a potted cactus" -> ["cactus"])."""
    return [CATEGORY_OF_WORD[m.group(1).lower()] for m in _CATEGORY_RE.finditer(text)]
