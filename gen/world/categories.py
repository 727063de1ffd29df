"""The registry of categories: name -> `Category` (builder, colour roles, patterns).

The builders live in four themed modules; this one only gathers them, checks that every
category has caption words, and answers "which categories exist".
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

from orbitforge.errors import InputError
from orbitforge.gen.world import furniture, kitchen, nature, toys
from orbitforge.gen.world.blueprint import Category
from orbitforge.gen.world.vocabulary import CATEGORY_WORDS

REGISTRY: Mapping[str, Category] = MappingProxyType(
    {c.name: c for module in (kitchen, furniture, nature, toys) for c in module.CATEGORIES}
)
CATEGORY_NAMES: tuple[str, ...] = tuple(REGISTRY)
"""Every category, in a fixed order (the order `sample_asset` draws from)."""

assert set(CATEGORY_NAMES) == set(CATEGORY_WORDS), "every category needs caption words, and only those"


def get_category(name: str) -> Category:
    """The category called `name`; an InputError lists the valid names otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown category {name!r}; choose one of: {', '.join(CATEGORY_NAMES)}") from None
