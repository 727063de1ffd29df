"""Category builders for living and seasonal things: mushroom, tree, pine tree, cactus, snowman.

Blobs and capsules on a stem, in nominal metres at about 1 m tall; `assets.py` rescales.
The face of a snowman and a cactus's flower look towards +Z, the front.
"""

from __future__ import annotations

import numpy as np

from orbitforge.gen.world import shapes as S
from orbitforge.gen.world.blueprint import MAIN, Blueprint, Category, Feature, PartSpec, count, flag, pick, style

_FOLIAGE = ("green", "dark green", "yellow", "orange", "red", "pink", "teal", "purple")


def _mushroom(rng: np.random.Generator, scale: float, cap_kind: str) -> tuple[S.Shape, S.Shape]:
    """(stem, cap) of one mushroom whose cap top is at about `scale` metres."""
    stem_h, stem_r = 0.62 * scale, rng.uniform(0.08, 0.11) * scale
    outline = S.smooth_profile((0.0, 0.15 * stem_h, stem_h), (stem_r * 1.35, stem_r, stem_r * 0.85), 8)
    stem = S.lathe([(0.0, 0.0)] + outline + [(0.0, stem_h)])
    cap_r = rng.uniform(0.3, 0.42) * scale
    cap_h = {"round": 0.42, "flat": 0.22, "pointed": 0.55}[cap_kind] * scale
    a = np.linspace(0.0, np.pi / 2, 12)
    if cap_kind == "pointed":
        dome = [(cap_r * np.cos(t) ** 1.5, cap_h * np.sin(t)) for t in a]
    else:
        dome = [(cap_r * np.cos(t), cap_h * np.sin(t)) for t in a]
    # underside (gills) from the stem out to the rim, then over the top
    cap = S.lathe([(stem_r * 0.8, -0.03 * scale), (cap_r * 0.98, -0.02 * scale)] + dome, 48)
    return stem, cap.moved(y=stem_h - 0.02 * scale)


def build_mushroom(rng: np.random.Generator) -> Blueprint:
    n = pick(rng, (1, 1, 2, 3))
    cap_kind = pick(rng, ("round", "flat", "pointed"))
    stems, caps = [], []
    spots = [(0.0, 0.0, 1.0), (0.38, 0.18, 0.55), (-0.32, 0.22, 0.45)][:n]
    for x, z, scale in spots:
        stem, cap = _mushroom(rng, scale, cap_kind)
        stems.append(stem.moved(x=x, z=z))
        caps.append(cap.moved(x=x, z=z))
    plural = n > 1
    parts = (PartSpec("caps" if plural else "cap", S.merge(caps), MAIN, plural),
             PartSpec("stems" if plural else "stem", S.merge(stems), "stem", plural))
    features = (count("group", n, "mushroom", "mushrooms"), style("cap", cap_kind, f"a {cap_kind} cap" if n == 1 else f"{cap_kind} caps"))
    return Blueprint(parts, features)


def build_tree(rng: np.random.Generator) -> Blueprint:
    trunk_h, trunk_r = rng.uniform(0.35, 0.5), rng.uniform(0.06, 0.09)
    trunk = S.frustum(trunk_r * 1.3, trunk_r * 0.8, trunk_h + 0.15, 24)
    blobs_n = int(rng.integers(2, 5))
    crown_y = trunk_h + 0.25
    blobs = []
    for k in range(blobs_n):  # a ring of blobs round the crown's centre, the first one on top
        angle = 2 * np.pi * k / max(blobs_n - 1, 1) + rng.uniform(-0.3, 0.3)
        radius = rng.uniform(0.22, 0.3) if k else rng.uniform(0.28, 0.34)
        offset = 0.0 if k == 0 else rng.uniform(0.16, 0.22)
        lift = 0.14 if k == 0 else rng.uniform(-0.08, 0.06)
        blobs.append(S.ellipsoid(radius, radius * 1.8, 32, 16).moved(offset * np.sin(angle), crown_y + lift, offset * np.cos(angle)))
    parts = (PartSpec("foliage", S.merge(blobs)), PartSpec("trunk", trunk, "trunk"))
    features = (count("foliage clumps", blobs_n, "clump of leaves", "clumps of leaves"),)
    return Blueprint(parts, features, ("tall",) if trunk_h > 0.45 else ())


def build_pine_tree(rng: np.random.Generator) -> Blueprint:
    tiers = int(rng.integers(2, 5))
    trunk_h = rng.uniform(0.26, 0.34)  # tall enough to show under the lowest tier from 20-30 degrees up
    trunk = S.cylinder(0.06, trunk_h + 0.1, 20)
    base_width = rng.uniform(0.3, 0.4)
    tier_h = (1.0 - trunk_h) / (0.55 * tiers + 0.45)  # each tier overlaps the one below by 45%
    cones = [S.frustum(base_width * 0.78**k, 0.0, tier_h, 40).moved(y=trunk_h + 0.55 * tier_h * k) for k in range(tiers)]
    top = 1.0
    parts = [PartSpec("needles", S.merge(cones), MAIN, plural=True), PartSpec("trunk", trunk, "trunk")]
    has_star = rng.random() < 0.3
    if has_star:
        parts.append(PartSpec("star", S.sphere(0.06, 16, 8).moved(y=top + 0.04), "star"))
    features = (count("tiers", tiers, "tier", "tiers"), flag("star", has_star, "a star on top"))
    return Blueprint(tuple(parts), features, ("slender",) if base_width < 0.33 else ())


def build_cactus(rng: np.random.Generator) -> Blueprint:
    pot_r, pot_h = rng.uniform(0.2, 0.26), rng.uniform(0.22, 0.3)
    pot = S.lathe([(0, 0), (pot_r * 0.8, 0), (pot_r, pot_h), (pot_r * 1.08, pot_h), (pot_r * 1.08, pot_h + 0.05),
                   (pot_r * 0.95, pot_h + 0.05), (pot_r * 0.95, pot_h - 0.02), (0, pot_h - 0.02)])
    soil = S.cylinder(pot_r * 0.95, 0.01, 32).moved(y=pot_h - 0.02)
    body_r, body_h = rng.uniform(0.085, 0.11), rng.uniform(0.6, 0.75)
    stems = [S.capsule(body_r, body_h, 24).moved(y=pot_h - 0.06)]
    arms_n = pick(rng, (0, 1, 2, 2))
    for k, side in enumerate((1, -1)[:arms_n]):  # an elbow: out sideways, then up
        arm_y = pot_h + body_h * rng.uniform(0.25, 0.4) + 0.1 * k
        reach, arm_r = rng.uniform(0.2, 0.26), body_r * 0.7
        stems.append(S.capsule(arm_r, reach + arm_r, 16).rotated("z", -90 * side).moved(y=arm_y))
        stems.append(S.capsule(arm_r, rng.uniform(0.24, 0.34), 16).moved(x=side * reach, y=arm_y - arm_r))
    parts = [PartSpec("cactus", S.merge(stems)), PartSpec("pot", pot, "pot"), PartSpec("soil", soil, "brown")]
    has_flower = rng.random() < 0.4
    if has_flower:
        top = pot_h - 0.06 + body_h
        petals = [S.ellipsoid(0.035, 0.03, 12, 6).moved(0.04 * np.sin(a), top + 0.005, 0.04 * np.cos(a))
                  for a in np.linspace(0, 2 * np.pi, 6, endpoint=False)]
        parts.append(PartSpec("flower", S.merge(petals), "flower"))
    features = (count("arms", arms_n, "arm", "arms"), flag("flower", has_flower, "a flower on top"))
    return Blueprint(tuple(parts), features)


def build_snowman(rng: np.random.Generator) -> Blueprint:
    balls_n = pick(rng, (2, 3))
    radii = [0.3, 0.22, 0.16][:balls_n] if balls_n == 3 else [0.32, 0.22]
    balls, y = [], 0.0
    for r in radii:
        balls.append(S.sphere(r, 40, 20).moved(y=y + r * 0.92))
        y += r * 1.75
    head_r, head_y = radii[-1], y - radii[-1] * 0.83
    front = head_r * 0.95
    eyes = [S.sphere(0.025, 12, 6).moved(dx * head_r * 0.35, head_y + head_r * 0.25, front * 0.92) for dx in (-1, 1)]
    nose = S.frustum(0.035, 0.0, 0.16, 16).rotated("x", 90).moved(y=head_y, z=front * 0.9)
    parts = [PartSpec("body", S.merge(balls)), PartSpec("eyes", S.merge(eyes), "black", plural=True),
             PartSpec("nose", nose, "orange")]
    buttons_n = int(rng.integers(2, 4))
    body_r, body_y = radii[-2], sum(r * 1.75 for r in radii[:-2]) + radii[-2] * 0.92
    buttons = [S.sphere(0.022, 12, 6).moved(y=body_y + dy, z=np.sqrt(max(body_r**2 - dy**2, 0)) * 0.99)
               for dy in np.linspace(-0.4, 0.4, buttons_n) * body_r]
    parts.append(PartSpec("buttons", S.merge(buttons), "black", plural=True))
    has_hat, has_scarf = rng.random() < 0.6, rng.random() < 0.5
    if has_hat:
        hat_y = head_y + head_r * 0.75
        hat = S.merge([S.cylinder(head_r * 1.0, 0.02, 32), S.cylinder(head_r * 0.65, head_r * 1.0, 32)])
        parts.append(PartSpec("hat", hat.moved(y=hat_y), "accent"))
    if has_scarf:
        parts.append(PartSpec("scarf", S.torus(head_r * 0.85, 0.04, 40, 10).moved(y=head_y - head_r * 0.85), "accent"))
    features = (Feature("balls", balls_n, f"{'two' if balls_n == 2 else 'three'} stacked snowballs"), flag("hat", has_hat, "a top hat"),
                flag("scarf", has_scarf, "a scarf"), count("buttons", buttons_n, "button", "buttons"))
    return Blueprint(tuple(parts), features, ("tall",) if balls_n == 3 else ("chubby",))


CATEGORIES = (
    Category("mushroom", build_mushroom, main_colours=("red", "orange", "yellow", "brown", "beige", "purple", "pink", "blue", "white"),
             roles={"stem": ("white", "beige")}, patterns=("plain", "dots", "dots", "noise", "stripes")),  # dots twice: toadstools
    Category("tree", build_tree, main_colours=_FOLIAGE, roles={"trunk": ("brown", "gray", "beige", "black")},
             patterns=("plain", "noise", "dots", "stripes")),
    Category("pine tree", build_pine_tree, main_colours=("green", "dark green", "teal", "blue", "white", "purple"),
             roles={"trunk": ("brown", "gray", "beige"), "star": ("gold", "yellow", "red", "silver")},
             patterns=("plain", "noise", "dots", "stripes")),
    Category("cactus", build_cactus, main_colours=("green", "dark green", "teal", "yellow", "purple", "blue"),
             roles={"pot": ("orange", "white", "red", "blue", "beige", "black", "gray", "pink"),
                    "flower": ("pink", "red", "yellow", "white", "orange", "purple")},
             patterns=("plain", "stripes", "dots", "noise")),
    Category("snowman", build_snowman, main_colours=("white",), roles={"accent": ("red", "blue", "black", "green", "purple", "navy", "orange")},
             patterns=("plain", "noise", "dots")),
)
