"""Which assets of a world dataset train, validate or test: a held-out split of unseen combinations.

A model that learned "red" on mugs and "chair" on blue chairs should draw a red chair it never
saw.  To measure that, a deterministic set of (main colour, category) pairs is held out: assets
whose pair is held out go to the `test` split and never to `train`.  The `val` split holds a
random share of the remaining assets: combinations that training has seen, rendered from assets
it has not.  Comparing the two separates "did not generalise to new combinations" from "did not
generalise at all".

The held-out pairs are chosen so that every category and every colour still appears in
training (at least `MIN_SEEN` times each), otherwise "unseen combination" would degrade into
"unseen colour" or "unseen category", which no model can name.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Literal

import numpy as np

from orbitforge.gen.world.categories import CATEGORY_NAMES, get_category

logger = logging.getLogger(__name__)

Split = Literal["train", "val", "test"]
SPLITS: tuple[Split, ...] = ("train", "val", "test")

MIN_SEEN = 2
"""Each category keeps at least this many seen main colours, and each colour at least this many
seen categories, after the held-out pairs are removed."""

_HOLDOUT_STREAM = 101
"""Random-stream tags: the held-out pairs and the val draw never share numbers with assets."""
_VAL_STREAM = 102


def all_pairs() -> tuple[tuple[str, str], ...]:
    """Every (main colour, category) pair the world can produce, in a fixed order."""
    return tuple((colour, name) for name in CATEGORY_NAMES for colour in get_category(name).main_colours)


def holdout_pairs(seed: int, fraction: float) -> frozenset[tuple[str, str]]:
    """A deterministic set of about `fraction` of all (main colour, category) pairs to hold out.

    Pairs are visited in a seeded random order and taken while every category and colour keeps
    `MIN_SEEN` seen partners, so the result may fall a little short of `fraction` for a large one.
    """
    pairs = list(all_pairs())
    target = int(round(fraction * len(pairs)))
    order = np.random.default_rng([_HOLDOUT_STREAM, seed]).permutation(len(pairs))
    per_category = Counter(name for _, name in pairs)
    per_colour = Counter(colour for colour, _ in pairs)
    held: set[tuple[str, str]] = set()
    for k in order:
        if len(held) >= target:
            break
        colour, name = pairs[k]
        if per_category[name] > MIN_SEEN and per_colour[colour] > MIN_SEEN:
            held.add((colour, name))
            per_category[name] -= 1
            per_colour[colour] -= 1
    if len(held) < target:
        logger.warning("held out %d pairs instead of %d: more would leave a colour or category unseen",
                       len(held), target)
    return frozenset(held)


def assign_split(index: int, colour: str, category: str, *, seed: int, held_out: frozenset[tuple[str, str]],
                 val_fraction: float) -> Split:
    """The split of asset `index` of a dataset: `test` for a held-out pair, else `val` with
    probability `val_fraction` (a pure function of seed and index), else `train`."""
    if (colour, category) in held_out:
        return "test"
    if np.random.default_rng([_VAL_STREAM, seed, index]).random() < val_fraction:
        return "val"
    return "train"
