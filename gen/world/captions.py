"""Natural captions from an asset's structured attributes: varied templates, random synonyms.

Truthful by construction: every word that names a colour, a pattern or a category comes from
the tables in `vocabulary.py` for the attribute it describes, feature phrases come from the
builder that made the choice, and every caption names the category, the main colour and (when
there is one) the pattern.  The first caption is always the plain canonical form
("a tall red vase with white stripes"); the rest are drawn from the other templates.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Mapping

import numpy as np

from orbitforge.gen.world.blueprint import pick
from orbitforge.gen.world.vocabulary import CATEGORY_WORDS, COLOUR_WORDS, PATTERN_ADJECTIVES, PATTERN_NOUNS

if TYPE_CHECKING:
    from orbitforge.gen.world.assets import AssetAttributes

CAPTIONS_PER_ASSET = 6
"""Captions per asset: the canonical one plus five drawn from the other templates."""

SIZE_WORDS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"small": ("small", "little", "mini"), "medium": ("",), "large": ("large", "big", "oversized")}
)
"""Size -> words ("" says nothing: a medium asset is just "a vase")."""

_NUMBER_WORDS = ("no", "one", "two", "three", "four", "five", "six")
_ADJECTIVE_ONLY = frozenset({"rosy", "golden", "sand-coloured"})
"""Colour words that cannot stand as a noun ("a lamp in rosy")."""

_NOUN_CONDITIONS: Mapping[str, Callable[["AssetAttributes"], bool]] = MappingProxyType({
    "armchair": lambda a: a.feature("armrests") is True,
    "wooden crate": lambda a: a.main_colour == "brown",
    "bar stool": lambda a: "tall" in a.shape_words,
    "footstool": lambda a: "low" in a.shape_words,
})
"""Category words that are true only for some assets of the category."""


@dataclass(frozen=True)
class _Words:
    """One draw of synonyms for one caption; templates only arrange these."""

    lead: str  # "a", "an" or a number word for a group ("three")
    noun: str  # category word, plural for a group
    colour: str
    colour_noun: str  # the same colour, a word that also works as a noun ("in crimson", never "in rosy")
    size: str  # "" for medium
    shape: str  # "" or one shape word
    pattern_adj: str  # "" when plain
    pattern_with: str  # "with white stripes", "" when plain
    pattern_colour: str  # "" when plain
    features: str  # "three legs and armrests", "" when none
    accents: str  # "a black handle and gold hoops", "" when none

    def np(self, *adjectives: str) -> str:
        """A noun phrase: lead, adjectives, noun ("a" becomes "an" later, in `_fix_articles`)."""
        return " ".join([self.lead] + [w for w in adjectives if w] + [self.noun])


def _canonical(w: _Words) -> str:
    return _join(w.np(w.size, w.shape, w.colour), w.pattern_with)


def _comma_tail(w: _Words) -> str:
    tail = ", ".join(x for x in (w.size, w.shape) if x)
    head = " ".join(x for x in (w.pattern_adj, w.colour, w.noun) if x)
    return f"{head}, {tail}" if tail else head


def _in_colour(w: _Words) -> str:
    return _join(w.np(w.size), "in", w.colour_noun, w.pattern_with)


def _with_features(w: _Words) -> str | None:
    return _join(w.np(w.size, w.pattern_adj, w.colour), "with", w.features) if w.features else None


def _with_accents(w: _Words) -> str | None:
    return _join(w.np(w.pattern_adj, w.colour), "with", w.accents) if w.accents else None


def _tags(w: _Words) -> str:
    return ", ".join(x for x in (w.noun, w.colour, w.pattern_adj or "plain", w.size, w.shape) if x)


def _two_colour(w: _Words) -> str:
    if not w.pattern_adj:
        return _join(w.np(w.shape, w.colour), "with no pattern")
    return w.np(w.size, f"{w.colour} and {w.pattern_colour}", w.pattern_adj)


def _model_of(w: _Words) -> str:
    return _join("3D model of", w.np(w.shape, w.colour), w.pattern_with)


def _game_asset(w: _Words) -> str:
    return _join("low-poly", w.colour, w.noun, w.pattern_with) + ", game asset"


_OTHER_TEMPLATES = (_comma_tail, _in_colour, _with_features, _with_accents, _tags, _two_colour, _model_of, _game_asset)


def make_captions(attributes: "AssetAttributes", rng: np.random.Generator, n: int = CAPTIONS_PER_ASSET) -> tuple[str, ...]:
    """`n` distinct captions of the asset, the canonical one first, drawn with `rng`.

    Seven templates always apply and two more when the asset has features or accent parts, so
    any n <= 7 is always met."""
    captions = [_fix_articles(_canonical(_draw_words(attributes, rng)))]
    order = rng.permutation(len(_OTHER_TEMPLATES))
    for k in order:
        text = _OTHER_TEMPLATES[k](_draw_words(attributes, rng))
        if text and _fix_articles(text) not in captions:
            captions.append(_fix_articles(text))
        if len(captions) == n:
            break
    return tuple(captions)


def _draw_words(a: "AssetAttributes", rng: np.random.Generator) -> _Words:
    """Pick a synonym for everything a template may say, each true of `a`."""
    nouns = tuple(w for w in CATEGORY_WORDS[a.category] if _NOUN_CONDITIONS.get(w, lambda _: True)(a))
    group = a.feature("group")
    noun = pick(rng, nouns)
    lead = "a"
    if isinstance(group, int) and group > 1:
        lead, noun = _NUMBER_WORDS[group], noun + "s"
    patterned = a.pattern != "plain"
    pattern_colour = pick(rng, COLOUR_WORDS[a.pattern_colour]) if patterned else ""
    pattern_with = ""
    if patterned:
        pattern_noun = pick(rng, PATTERN_NOUNS[a.pattern])
        article = "a " if pattern_noun.endswith("pattern") else ""  # "a white checker pattern", "white dots"
        pattern_with = f"with {article}{pattern_colour} {pattern_noun}"
    phrases = [f.phrase for f in a.features if f.phrase and f.name != "group"]
    rng.shuffle(phrases)
    return _Words(
        lead=lead, noun=noun, colour=pick(rng, COLOUR_WORDS[a.main_colour]),
        colour_noun=pick(rng, tuple(w for w in COLOUR_WORDS[a.main_colour] if w not in _ADJECTIVE_ONLY)),
        size=pick(rng, SIZE_WORDS[a.size]), shape=pick(rng, a.shape_words) if a.shape_words else "",
        pattern_adj=pick(rng, PATTERN_ADJECTIVES[a.pattern]) if patterned else "",
        pattern_with=pattern_with, pattern_colour=pattern_colour,
        features=_and(phrases[:2]), accents=_and(_accent_phrases(a, rng)[:2]),
    )


def _accent_phrases(a: "AssetAttributes", rng: np.random.Generator) -> list[str]:
    """"a black handle", "gold hoops": parts whose colour differs from the main one, shuffled."""
    out = []
    for part, colour, plural in a.part_colours:
        if colour == a.main_colour:
            continue
        word = pick(rng, COLOUR_WORDS[colour])
        out.append(f"{word} {part}" if plural else f"a {word} {part}")
    rng.shuffle(out)
    return out


def _and(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1] if items else ""


def _join(*pieces: str) -> str:
    return " ".join(p for p in pieces if p)


_A_BEFORE_VOWEL = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def _fix_articles(text: str) -> str:
    """"a orange mug" -> "an orange mug", wherever the words landed."""
    return _A_BEFORE_VOWEL.sub(lambda m: m.group(1) + "n ", text)
