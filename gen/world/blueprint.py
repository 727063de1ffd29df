"""What a category builder returns, and how a category is declared.

A builder is a function `rng -> Blueprint`: geometry per part, which colour *role* each part
takes, and the features it chose (counts, optional parts, styles) together with the phrase that
says each one.  The phrase is written next to the choice that made it, so a caption can never
claim three legs on a four-legged stool.  Colours are assigned afterwards by `assets.py`, from
the roles the `Category` declares, so builders know nothing about palettes or patterns.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from orbitforge.gen.world.palette import COLOUR_NAMES, PALETTE
from orbitforge.gen.world.shapes import Shape
from orbitforge.gen.world.vocabulary import PATTERNS

MAIN = "main"
"""The role of the parts that carry the asset's main colour and pattern."""

_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six", "seven", "eight")


@dataclass(frozen=True)
class PartSpec:
    """One part of a blueprint: geometry plus the colour it takes.

    Attributes:
        name: the noun a caption uses for the part ("handle", "legs"); unique within a blueprint.
        shape: its geometry in the builder's nominal metres.
        colour: "main", another role declared by the category ("accent", "trim"), or a fixed
            palette colour name ("black" for tyres).
        plural: whether `name` is a plural noun ("legs" are, "seat" is not), for grammar only.
    """

    name: str
    shape: Shape
    colour: str = MAIN
    plural: bool = False


@dataclass(frozen=True)
class Feature:
    """A choice a builder made that a caption may state: a count, an optional part or a style.

    `value` is what a probe reads back (3, True, "round"); `phrase` is how a caption says it
    ("three legs", "armrests", "a round top"); an empty phrase means "true but not worth saying".
    The name "group" is reserved for how many of the category's own object stand together
    (three candles on one holder): captions then say "three red candles", not "a red candle".
    """

    name: str
    value: int | bool | str
    phrase: str


@dataclass(frozen=True)
class Blueprint:
    """A built but uncoloured asset: parts, features and shape words ("tall", "squat")."""

    parts: tuple[PartSpec, ...]
    features: tuple[Feature, ...] = ()
    shape_words: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        names = [p.name for p in self.parts]
        assert len(set(names)) == len(names), f"part names must be unique, got {names}"


@dataclass(frozen=True)
class Category:
    """A kind of asset: its builder and the colours and patterns its roles may take.

    Attributes:
        name: canonical name (a key of vocabulary.CATEGORY_WORDS).
        build: `rng -> Blueprint`, deterministic given the generator's state.
        main_colours: colours the main parts may take (a tree's foliage is not blue).
        roles: other colour roles -> the colours each may take.
        patterns: patterns the main parts may take.
    """

    name: str
    build: Callable[[np.random.Generator], Blueprint]
    main_colours: tuple[str, ...] = COLOUR_NAMES
    roles: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    patterns: tuple[str, ...] = PATTERNS

    def __post_init__(self) -> None:
        for colour in self.main_colours + tuple(c for cs in self.roles.values() for c in cs):
            assert colour in PALETTE, f"{self.name}: {colour!r} is not a palette colour"
        assert MAIN not in self.roles and not set(self.roles) & set(PALETTE), f"{self.name}: bad role names"
        assert set(self.patterns) <= set(PATTERNS), f"{self.name}: unknown pattern in {self.patterns}"
        object.__setattr__(self, "roles", MappingProxyType(dict(self.roles)))  # constants stay constant


def count(name: str, n: int, singular: str, plural: str) -> Feature:
    """A counted part: count("legs", 3, "leg", "legs") says "three legs"."""
    return Feature(name, int(n), f"{_NUMBER_WORDS[n]} {singular if n == 1 else plural}")


def flag(name: str, present: bool, with_phrase: str, without_phrase: str = "") -> Feature:
    """An optional part: flag("armrests", True, "armrests", "no armrests")."""
    return Feature(name, bool(present), with_phrase if present else without_phrase)


def style(name: str, value: str, phrase: str) -> Feature:
    """A discrete style: style("top", "round", "a round top")."""
    return Feature(name, value, phrase)


def pick(rng: np.random.Generator, options: tuple | list):
    """One element of `options`, drawn with `rng` (np.random's choice turns tuples into arrays)."""
    return options[int(rng.integers(len(options)))]
