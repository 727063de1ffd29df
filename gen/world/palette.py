"""The named colours of the synthetic world: every material colour is one of these names.

Captions describe colours by name, so a colour the palette cannot name never reaches an asset.
The names are ordinary words an artist would use; `vocabulary.py` adds their synonyms.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping

import numpy as np

PALETTE: Mapping[str, tuple[int, int, int]] = MappingProxyType({
    "red": (200, 35, 35),
    "orange": (235, 125, 25),
    "yellow": (245, 205, 40),
    "green": (70, 160, 60),
    "dark green": (30, 95, 45),
    "teal": (20, 145, 150),
    "blue": (40, 95, 205),
    "navy": (28, 38, 100),
    "purple": (120, 55, 170),
    "pink": (240, 130, 175),
    "brown": (115, 70, 35),
    "beige": (215, 190, 140),
    "black": (30, 30, 33),
    "white": (242, 242, 236),
    "gray": (128, 128, 132),
    "silver": (192, 197, 204),
    "gold": (212, 165, 45),
})
"""Colour name -> sRGB (0-255).  Insertion order is the sampling order, so never reorder."""

COLOUR_NAMES: tuple[str, ...] = tuple(PALETTE)


def srgb(name: str) -> tuple[int, int, int]:
    """The sRGB triple of a palette colour; KeyError names the valid colours."""
    try:
        return PALETTE[name]
    except KeyError:
        raise KeyError(f"unknown colour {name!r}; palette colours: {', '.join(COLOUR_NAMES)}") from None


def distinct_from(name: str, candidates: tuple[str, ...] = COLOUR_NAMES, min_distance: float = 110.0) -> tuple[str, ...]:
    """Colours from `candidates` at least `min_distance` away from `name` in sRGB (0-255 units).

    A pattern or a second part drawn in a colour too close to the main one would vanish in a
    render, and a caption naming it would no longer describe what a viewer sees.  110 keeps red
    apart from orange and pink, and navy apart from black, yet leaves every colour several partners.
    """
    base = np.asarray(srgb(name), dtype=np.float64)
    return tuple(
        other for other in candidates
        if other != name and np.linalg.norm(np.asarray(srgb(other), dtype=np.float64) - base) >= min_distance
    )
