"""Recaptioning: free text rewritten into the caption space the orbit model was trained on.

The model learned from the synthetic world's captions ("a small red mug with white stripes"),
which name a category, a main colour, a pattern with its colour, and a size.  DALL·E 3 and Sora
rewrite user prompts with a language model into their training-caption style; here the caption
space is small and known, so an offline rewrite does it:

1. exact words: every synonym the world's vocabulary knows (`gen.world.vocabulary`, "crimson"
   -> red, "stripy" -> stripes, "flask" -> bottle) and the size words of `captions.SIZE_WORDS`;
2. nearest words: each remaining content word (and two-word phrase) is embedded with the frozen
   sentence encoder and matched to the nearest vocabulary phrase by cosine similarity, kept only
   above a threshold ("teacup" -> mug, "huge" -> large);
3. if still no category: the category nearest to the whole prompt (the model draws nothing else);
4. the attributes are written back in the canonical word order of the world's first caption:
   "a [size] [colour] CATEGORY [with PATTERN-COLOUR PATTERN]".

Colours attach by position: a colour right before a pattern noun ("white stripes") colours the
pattern, the first other colour is the main one.

    >>> r = recaption("a crimson mug with white stripes")
    >>> r.caption, r.category, r.colour, r.pattern, r.pattern_colour
    ('a red mug with white stripes', 'mug', 'red', 'stripes', 'white')
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Literal

import torch

from orbitforge.errors import InputError
from orbitforge.gen.text import BUNDLED, SentenceEncoder
from orbitforge.gen.world.captions import SIZE_WORDS
from orbitforge.gen.world.vocabulary import (
    CATEGORY_OF_WORD, COLOUR_OF_WORD, PATTERN_ADJECTIVES, PATTERN_NOUNS, PATTERN_OF_WORD,
)

logger = logging.getLogger(__name__)

Kind = Literal["category", "colour", "pattern", "size"]

SIZE_OF_WORD = {w: size for size, words in SIZE_WORDS.items() for w in words if w}
"""Size word -> "small" / "large" ("medium" says nothing in a caption)."""

THRESHOLDS: dict[str, float] = {"category": 0.55, "colour": 0.6, "pattern": 0.6, "size": 0.6}
"""Minimum cosine similarity (all-MiniLM-L6-v2 pooled embeddings) for a word to be read as a
vocabulary entry it does not spell.  Measured: "teacup"/"mug" 0.60, "sofa"/"armchair" 0.64,
"huge"/"big" 0.70; unrelated nouns against the closest category ("banana"/"bowl") stay below 0.5."""

_STOP = frozenset(
    "a an the of with and in on at to for from by or its it this that some one my our your 3d model low-poly "
    "game asset render object made very really please make me show draw create generate pattern patterned "
    "colour coloured color colored".split())
_PATTERN_WITH = {p: (("a " if n.endswith("pattern") else "") + n) for p, nouns in PATTERN_NOUNS.items()
                 for n in nouns[:1]}
"""Canonical "with ..." noun per pattern: "stripes", "dots", "a checker pattern" ..."""
_WORD_RE = re.compile(r"[a-z][a-z\-']*")


def _phrase_re(words) -> re.Pattern:
    alternatives = sorted(words, key=len, reverse=True)  # "dark blue" before "blue"
    return re.compile(r"(?<![\w-])(" + "|".join(re.escape(w) for w in alternatives) + r")s?(?![\w-])")


_EXACT: tuple[tuple[Kind, dict[str, str], re.Pattern], ...] = tuple(
    (kind, table, _phrase_re(table)) for kind, table in (
        ("category", CATEGORY_OF_WORD), ("colour", COLOUR_OF_WORD), ("pattern", PATTERN_OF_WORD),
        ("size", SIZE_OF_WORD)))


@dataclass(frozen=True)
class Match:
    """One piece of the prompt read as an attribute.

    Attributes:
        text: the words of the prompt ("crimson", "teacup").
        kind: "category", "colour", "pattern" or "size".
        value: the attribute ("red", "mug").
        score: 1.0 for a vocabulary word, else the cosine similarity to `nearest`.
        nearest: the vocabulary phrase it matched.
        start: character offset in the lower-cased prompt (orders colours around patterns).
    """

    text: str
    kind: Kind
    value: str
    score: float
    nearest: str
    start: int


@dataclass(frozen=True)
class Recaption:
    """A prompt rewritten into the model's caption space, with the attributes read from it.

    Attributes:
        prompt: the text as given.
        caption: the rewrite the model is conditioned on.
        category, colour, pattern, pattern_colour, size: the parsed attributes (None when the
            prompt gives none; pattern None means plain; size None means medium).
        matches: every word or phrase read as an attribute, in prompt order.
        ignored: content words that matched nothing (they do not reach the model).
    """

    prompt: str
    caption: str
    category: str
    colour: str | None
    pattern: str | None
    pattern_colour: str | None
    size: str | None
    matches: tuple[Match, ...]
    ignored: tuple[str, ...]

    @property
    def attributes(self) -> dict:
        return {"category": self.category, "colour": self.colour, "pattern": self.pattern,
                "pattern_colour": self.pattern_colour, "size": self.size}

    def show(self) -> str:
        """A few lines for `orbitforge generate --show-recaption`."""
        lines = [f'prompt:    "{self.prompt}"', f'recaption: "{self.caption}"']
        for m in self.matches:
            how = "vocabulary" if m.score >= 1.0 else f"nearest '{m.nearest}', similarity {m.score:.2f}"
            lines.append(f"  {m.text!r:<16} -> {m.kind} {m.value} ({how})")
        if self.ignored:
            lines.append(f"  not in the model's vocabulary, dropped: {', '.join(self.ignored)}")
        return "\n".join(lines)


class Recaptioner:
    """Rewrites prompts; holds the sentence encoder and the vocabulary's embeddings.

    Args:
        encoder: the sentence encoder to compare words with; default: the bundled all-MiniLM-L6-v2
            (the thresholds are measured for it).
        thresholds: minimum similarity per kind, see THRESHOLDS.
    """

    def __init__(self, encoder: SentenceEncoder | None = None, thresholds: dict[str, float] | None = None):
        self.encoder = encoder if encoder is not None else SentenceEncoder(BUNDLED)
        self.thresholds = {**THRESHOLDS, **(thresholds or {})}
        self._vocab: list[tuple[Kind, str, str]] = [
            (kind, phrase, value) for kind, table, _ in _EXACT for phrase, value in table.items()]
        self._vocab_emb = self._embed([phrase for _, phrase, _ in self._vocab])  # [V, D]

    def _embed(self, texts: list[str]) -> torch.Tensor:
        return torch.cat([self.encoder.encode(texts[i:i + 256]).pooled.float().cpu() for i in range(0, len(texts), 256)])

    def __call__(self, prompt: str) -> Recaption:
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError(f"the prompt is empty ({prompt!r}); describe the object, e.g. \"a red vase with white stripes\"")
        text = " ".join(prompt.lower().split())
        matches, covered = _exact_matches(text)
        leftovers = [(m.group(0), m.start()) for m in _WORD_RE.finditer(text)
                     if not covered[m.start()] and m.group(0) not in _STOP]
        ignored = []
        if leftovers:
            near = self._nearest(leftovers)
            matches += near
            used = {m.start for m in near}
            ignored = [w for w, s in leftovers if s not in used]
        matches.sort(key=lambda m: m.start)
        return self._compose(prompt, text, matches, ignored)

    def _nearest(self, words: list[tuple[str, int]]) -> list[Match]:
        """Similarity matches for leftover words (one match per word, the best kind above threshold)."""
        emb = self._embed([w for w, _ in words])  # [N, D]
        sim = emb @ self._vocab_emb.T  # [N, V], unit vectors
        out = []
        for (word, start), row in zip(words, sim):
            best: Match | None = None
            for kind in ("category", "colour", "pattern", "size"):
                idx = [i for i, (k, _, _) in enumerate(self._vocab) if k == kind]
                j = idx[int(row[idx].argmax())]
                score = float(row[j])
                if score >= self.thresholds[kind] and (best is None or score > best.score):
                    best = Match(word, kind, self._vocab[j][2], score, self._vocab[j][1], start)
            if best is not None:
                out.append(best)
        return out

    def _compose(self, prompt: str, text: str, matches: list[Match], ignored: list[str]) -> Recaption:
        first = lambda kind: next((m for m in matches if m.kind == kind), None)  # noqa: E731
        category, pattern, size = first("category"), first("pattern"), first("size")
        if category is None:  # the model draws only its categories: take the nearest to the whole prompt
            emb = self._embed([text])[0]
            idx = [i for i, (k, _, _) in enumerate(self._vocab) if k == "category"]
            scores = self._vocab_emb[idx] @ emb
            j = idx[int(scores.argmax())]
            category = Match("(whole prompt)", "category", self._vocab[j][2], float(scores.max()), self._vocab[j][1], len(text))
            matches = [*matches, category]
            logger.info("no category in %r; nearest is %s (%.2f)", prompt, category.value, category.score)
        colours = [m for m in matches if m.kind == "colour"]
        pattern_colour = None
        if pattern is not None and pattern.value != "plain":
            before = [c for c in colours if c.start < pattern.start]
            # a colour right before the pattern word colours the pattern when it is a noun ("white
            # stripes") or when another colour is left for the object ("blue and white striped");
            # "a red striped mug" is red with stripes of no stated colour
            if before and not text[before[-1].start + len(before[-1].text): pattern.start].strip(" ,-"):
                is_noun = pattern.nearest not in PATTERN_ADJECTIVES[pattern.value]
                if is_noun or len(colours) > 1:
                    pattern_colour = before[-1]
            if pattern_colour is None:
                after = [c for c in colours if c.start > pattern.start]
                pattern_colour = after[0] if after and len(colours) > 1 else None
        main = next((c for c in colours if c is not pattern_colour), None)
        pattern_value = pattern.value if pattern is not None and pattern.value != "plain" else None
        words = ["a", size.value if size is not None and size.value != "medium" else "",
                 "" if pattern_value is None or pattern_colour is not None else PATTERN_ADJECTIVES[pattern_value][0],
                 main.value if main is not None else "", category.value]
        caption = " ".join(w for w in words if w)
        if pattern_value is not None and pattern_colour is not None:
            caption += f" with {pattern_colour.value} {_PATTERN_WITH[pattern_value]}"
        caption = re.sub(r"\ba (?=[aeiou])", "an ", caption)
        return Recaption(prompt=prompt, caption=caption, category=category.value,
                         colour=main.value if main is not None else None, pattern=pattern_value,
                         pattern_colour=pattern_colour.value if pattern_colour is not None else None,
                         size=size.value if size is not None else None, matches=tuple(matches),
                         ignored=tuple(ignored))


def _exact_matches(text: str) -> tuple[list[Match], list[bool]]:
    """Vocabulary phrases in `text` (longest first, never overlapping) and the covered characters."""
    covered = [False] * (len(text) + 1)
    out: list[Match] = []
    found = []
    for kind, table, regex in _EXACT:
        for m in regex.finditer(text):
            found.append((m.start(), m.end(), kind, table[m.group(1)], m.group(0), m.group(1)))
    for start, end, kind, value, spelled, phrase in sorted(found, key=lambda f: (-(f[1] - f[0]), f[0])):
        if any(covered[start:end]):
            continue
        covered[start:end] = [True] * (end - start)
        out.append(Match(spelled, kind, value, 1.0, phrase, start))
    return out, covered


def recaption(prompt: str, encoder: SentenceEncoder | None = None) -> Recaption:
    """Rewrite one prompt (builds a `Recaptioner`; keep one to rewrite many)."""
    return Recaptioner(encoder)(prompt)


def recaptioner_for(pipe) -> Recaptioner:
    """The rewriter for an orbit pipeline's prompts: it reuses the pipeline's encoder when that is
    the bundled one the vocabulary thresholds were measured with, else loads the bundled one."""
    return Recaptioner(pipe.text_encoder if pipe.config.text_model == BUNDLED else SentenceEncoder(BUNDLED))
