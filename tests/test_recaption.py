"""Recaptioning free text into the world's caption space, with the bundled sentence encoder."""

from __future__ import annotations

import pytest
import torch

from orbitforge.errors import InputError
from orbitforge.gen.recaption import Recaptioner
from orbitforge.gen.world.vocabulary import categories_in, colours_in, patterns_in


@pytest.fixture(scope="module")
def recaptioner():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield Recaptioner()
    torch.set_num_threads(threads)


def test_synonyms_map_to_attributes_in_canonical_order(recaptioner):
    r = recaptioner("a crimson mug with white stripes")
    assert (r.category, r.colour, r.pattern, r.pattern_colour, r.size) == ("mug", "red", "stripes", "white", None)
    assert r.caption == "a red mug with white stripes"
    r = recaptioner("Stripes of WHITE? no: a big mug, scarlet, with white stripes")
    assert (r.category, r.colour, r.pattern, r.pattern_colour, r.size) == ("mug", "red", "stripes", "white", "large")
    assert r.caption == "a large red mug with white stripes"
    # the rewrite reads back to the same attributes through the world's own vocabulary
    assert categories_in(r.caption) == ["mug"] and colours_in(r.caption) == ["red", "white"]
    assert patterns_in(r.caption) == ["stripes"]


@pytest.mark.parametrize("prompt, expected", [
    ("a red striped vase", dict(category="vase", colour="red", pattern="stripes", pattern_colour=None)),
    ("wooden barrel with gold checkered pattern", dict(category="barrel", colour="brown", pattern="checker",
                                                        pattern_colour="gold")),
    ("A huge teacup, blue with yellow polka dots", dict(category="mug", colour="blue", pattern="dots",
                                                        pattern_colour="yellow", size="large")),
    ("a tiny dark blue lamp", dict(category="lamp", colour="navy", size="small", pattern=None)),
])
def test_nearest_attributes(recaptioner, prompt, expected):
    r = recaptioner(prompt)
    assert {k: r.attributes[k] for k in expected} == expected, r.show()


def test_unknown_words_are_dropped_and_a_category_is_always_chosen(recaptioner):
    r = recaptioner("a scarlet xyzzy frobnicator")
    assert r.colour == "red" and r.category is not None
    assert "xyzzy" in r.ignored and "frobnicator" in r.ignored
    assert r.caption.endswith(r.category) and "red" in r.caption
    text = r.show()
    assert "recaption:" in text and "dropped: xyzzy" in text


def test_empty_prompt_is_one_line_input_error(recaptioner):
    for prompt in ("", "   "):
        with pytest.raises(InputError) as excinfo:
            recaptioner(prompt)
        assert "\n" not in str(excinfo.value) and "prompt is empty" in str(excinfo.value)
