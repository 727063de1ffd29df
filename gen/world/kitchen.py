"""Category builders for things on a shelf or a table: mug, vase, bottle, bowl, teapot, candle,
lamp, lantern.  Mostly lathes (surfaces of revolution) with a few attached parts.

Each builder works in nominal metres at about 1 m tall; `assets.py` rescales.  Front is +Z;
handles and spouts sit on +X or -X so a three-quarter view from the front-right shows them.
"""

from __future__ import annotations

from types import MappingProxyType

import numpy as np

from orbitforge.gen.world import shapes as S
from orbitforge.gen.world.blueprint import MAIN, Blueprint, Category, Feature, PartSpec, count, flag, pick, style

_WARM_LIGHT = ("yellow", "orange", "white")
_METALS = ("black", "gold", "silver", "gray")


def _side_handle(centre_x: float, centre_y: float, reach: float, thickness: float, *, left: bool = False) -> S.Shape:
    """A half ring in the xy plane whose ends meet a wall at x = centre_x (a mug's handle)."""
    ring = S.torus(reach, thickness, 32, 12, sweep_deg=180).rotated("x", 90)
    if left:
        ring = ring.rotated("y", 180)
    return ring.moved(x=-centre_x if left else centre_x, y=centre_y)


def build_mug(rng: np.random.Generator) -> Blueprint:
    radius = rng.uniform(0.3, 0.45)
    top = radius * rng.uniform(1.0, 1.12)
    height, wall = 1.0, 0.045
    body = S.lathe([(0, 0), (radius, 0), (top, height), (top - wall, height), (radius - wall, wall), (0, wall)])
    handle = _side_handle((radius + top) / 2 - 0.02, 0.5 * height, rng.uniform(0.2, 0.28), 0.05)
    parts = [PartSpec("body", body), PartSpec("handle", handle, pick(rng, (MAIN, "accent")))]
    has_saucer = rng.random() < 0.35
    if has_saucer:
        rim = radius * 2.0
        saucer = S.lathe([(0, 0), (rim * 0.55, 0), (rim, 0.07), (rim * 0.96, 0.085), (rim * 0.55, 0.035), (0, 0.035)])
        parts = [PartSpec(p.name, p.shape.moved(y=0.035), p.colour) for p in parts]
        parts.append(PartSpec("saucer", saucer, "accent"))
    ratio = height / (2 * top)
    words = ("tall",) if ratio > 1.4 else ("wide",) if ratio < 1.2 else ()
    return Blueprint(tuple(parts), (flag("saucer", has_saucer, "a saucer"),), words)


_VASE_STYLES = MappingProxyType({
    # style: (control heights, control radii); radii are jittered per asset
    "round": ((0.0, 0.1, 0.4, 0.8, 1.0), (0.2, 0.3, 0.42, 0.13, 0.17)),
    "slender": ((0.0, 0.15, 0.35, 0.8, 1.0), (0.14, 0.18, 0.2, 0.1, 0.16)),
    "amphora": ((0.0, 0.15, 0.55, 0.85, 1.0), (0.1, 0.2, 0.33, 0.11, 0.17)),
    "flared": ((0.0, 0.2, 0.55, 0.85, 1.0), (0.2, 0.16, 0.13, 0.2, 0.3)),
})


def build_vase(rng: np.random.Generator) -> Blueprint:
    kind = pick(rng, tuple(_VASE_STYLES))
    heights, radii = _VASE_STYLES[kind]
    radii = np.asarray(radii) * rng.uniform(0.85, 1.15, len(radii))
    outer = S.smooth_profile(heights, radii)
    wall = 0.03
    # the inner wall follows the outer one down a little way: a vase reads hollow from above
    inner = [(r - wall, y) for r, y in reversed(outer) if y > 0.75]
    body = S.lathe([(0.0, 0.0)] + outer + inner + [(0.0, inner[-1][1])])
    parts = [PartSpec("body", body)]
    handles = 2 if kind == "amphora" and rng.random() < 0.6 else 0
    if handles:  # from the neck down to the shoulder; the lower end sinks into the body
        neck_r = float(np.interp(0.84, [y for _, y in outer], [r for r, _ in outer]))
        ring = [_side_handle(neck_r - 0.01, 0.72, 0.12, 0.025, left=left) for left in (False, True)]
        parts.append(PartSpec("handles", S.merge(ring), MAIN, plural=True))
    words = {"round": ("round",), "slender": ("tall", "slender"), "amphora": (), "flared": ("flared",)}[kind]
    handle_feature = count("handles", handles, "handle", "handles") if handles else Feature("handles", 0, "")
    features = (style("shape", kind, {"amphora": "an amphora shape"}.get(kind, "")), handle_feature)
    return Blueprint(tuple(parts), features, words)


def build_bottle(rng: np.random.Generator) -> Blueprint:
    radius = rng.uniform(0.16, 0.26)
    shoulder = rng.uniform(0.45, 0.65)
    neck_r = radius * rng.uniform(0.3, 0.42)
    neck_top = 0.95
    curve = S.smooth_profile((shoulder, shoulder + 0.1, shoulder + 0.22), (radius, radius * 0.8, neck_r), 10)
    body = S.lathe([(0, 0), (radius, 0)] + curve + [(neck_r, neck_top), (neck_r - 0.02, neck_top), (neck_r - 0.02, neck_top - 0.08), (0, neck_top - 0.08)])
    parts = [PartSpec("body", body)]
    has_cap, has_label = rng.random() < 0.7, rng.random() < 0.5
    if has_cap:
        parts.append(PartSpec("cap", S.cylinder(neck_r * 1.25, 0.09, 24).moved(y=neck_top - 0.04), "accent"))
    if has_label:
        low, high = 0.15 * shoulder, 0.8 * shoulder
        band = S.cylinder(radius * 1.015, high - low, top=False, bottom=False).moved(y=low)
        parts.append(PartSpec("label", band, "label"))
    features = (flag("cap", has_cap, "a cap", "no cap"), flag("label", has_label, "a label"))
    words = ("slim",) if radius < 0.19 else ("stout",) if radius > 0.23 else ()
    return Blueprint(tuple(parts), features, words)


def build_bowl(rng: np.random.Generator) -> Blueprint:
    rim, depth, wall = 0.5, rng.uniform(0.22, 0.42), 0.035
    has_foot = rng.random() < 0.5
    foot_r, foot_h = (0.22, 0.05) if has_foot else (0.2, 0.0)
    a = np.linspace(0.0, np.pi / 2, 14)
    outer = [(foot_r + (rim - foot_r) * np.sin(t), foot_h + (depth - foot_h) * (1 - np.cos(t))) for t in a]
    inner = [((rim - wall) * np.sin(t), foot_h + wall + (depth - foot_h - wall) * (1 - np.cos(t))) for t in a[::-1]]
    profile = [(0.0, 0.0), (foot_r, 0.0)] + outer + inner
    body = S.lathe(profile, 56)
    words = ("deep",) if depth > 0.34 else ("shallow",) if depth < 0.28 else ()
    return Blueprint((PartSpec("bowl", body),), (flag("foot", has_foot, "a foot ring"),), words)


def build_teapot(rng: np.random.Generator) -> Blueprint:
    radius, height = rng.uniform(0.36, 0.46), rng.uniform(0.5, 0.65)
    outline = S.smooth_profile((0.0, 0.12, 0.45, 0.85, 1.0), np.array((0.62, 0.9, 1.0, 0.72, 0.5)) * radius, 20)
    outline = [(r, y * height) for r, y in outline]
    body = S.lathe([(0.0, 0.0)] + outline + [(0.0, height)])
    lid_r = outline[-1][0] * 1.05
    lid = S.dome(lid_r, 0.12, rings=8).moved(y=height)
    spout_len = rng.uniform(0.38, 0.5)
    spout = S.frustum(0.08, 0.035, spout_len, 20, bottom=False).rotated("z", -50).moved(x=radius * 0.7, y=height * 0.3)
    handle = _side_handle(radius * 0.9, height * 0.5, height * 0.3, 0.04, left=True)
    parts = [PartSpec("body", body), PartSpec("lid", lid), PartSpec("spout", spout),
             PartSpec("handle", handle, pick(rng, (MAIN, "accent")))]
    has_knob = rng.random() < 0.7
    if has_knob:
        parts.append(PartSpec("knob", S.sphere(0.055, 16, 8).moved(y=height + 0.15), "accent"))
    words = ("round",) if height / radius < 1.3 else ()
    return Blueprint(tuple(parts), (flag("knob", has_knob, "a knob on the lid"),), words)


def build_candle(rng: np.random.Generator) -> Blueprint:
    n = pick(rng, (1, 1, 3))
    has_holder = n == 3 or rng.random() < 0.5
    lift = 0.06 if has_holder else 0.0
    candles, wicks, flames = [], [], []
    spots = [(0.0, 0.0)] if n == 1 else [(-0.2, -0.05), (0.2, -0.05), (0.0, 0.12)]
    for k, (x, z) in enumerate(spots):
        radius = rng.uniform(0.1, 0.16) if n == 1 else rng.uniform(0.07, 0.09)
        height = rng.uniform(0.45, 0.75) * (1.0 if k != 2 else 1.25)
        candles.append(S.cylinder(radius, height, 32).moved(x, lift, z))
        wicks.append(S.cylinder(0.01, 0.06, 8).moved(x, lift + height, z))
        flames.append(S.ellipsoid(0.04, 0.13, 16, 8).moved(x, lift + height + 0.11, z))
    plural = n > 1
    parts = [PartSpec("candles" if plural else "candle", S.merge(candles), MAIN, plural),
             PartSpec("wicks" if plural else "wick", S.merge(wicks), "black", plural),
             PartSpec("flames" if plural else "flame", S.merge(flames), "flame", plural)]
    if has_holder:
        rim = 0.34 if plural else 0.26
        plate = S.lathe([(0, 0), (rim, 0), (rim, 0.07), (rim - 0.02, 0.07), (rim - 0.02, lift), (0, lift)])
        parts.append(PartSpec("holder", plate, "holder"))
    features = (count("group", n, "candle", "candles"), flag("holder", has_holder, "a holder"))
    return Blueprint(tuple(parts), features)


def build_lamp(rng: np.random.Generator) -> Blueprint:
    base_kind, shade_kind = pick(rng, ("round", "square")), pick(rng, ("drum", "cone"))
    stem_h = rng.uniform(0.35, 0.6)
    base = (S.lathe([(0, 0), (0.22, 0), (0.2, 0.05), (0.08, 0.1), (0, 0.1)]) if base_kind == "round"
            else S.box(0.36, 0.08, 0.36))
    stem = S.cylinder(0.03, stem_h, 16).moved(y=0.06)
    shade_h = rng.uniform(0.3, 0.42)
    r_bottom = rng.uniform(0.26, 0.34)
    r_top = r_bottom * (rng.uniform(0.85, 0.95) if shade_kind == "drum" else rng.uniform(0.45, 0.6))
    shade = S.lathe([(r_bottom, 0.0), (r_top, shade_h)], 48).moved(y=stem_h - 0.1)
    parts = (PartSpec("shade", shade), PartSpec("base", base, "accent"), PartSpec("stem", stem, "accent"),
             PartSpec("bulb", S.sphere(0.07, 16, 8).moved(y=stem_h - 0.02), "white"))
    features = (style("base", base_kind, f"a {base_kind} base"),
                style("shade", shade_kind, "a drum shade" if shade_kind == "drum" else "a conical shade"))
    return Blueprint(parts, features, ("tall",) if stem_h > 0.52 else ())


def build_lantern(rng: np.random.Generator) -> Blueprint:
    kind = pick(rng, ("square", "round"))
    width, glass_h = rng.uniform(0.36, 0.46), rng.uniform(0.45, 0.6)
    base_h, post_r = 0.08, 0.025
    if kind == "square":
        base = S.box(width, base_h, width)
        glass = S.box(width * 0.85, glass_h, width * 0.85).moved(y=base_h)
        corners = [(sx * width * 0.44, sz * width * 0.44) for sx in (-1, 1) for sz in (-1, 1)]
        roof = S.pyramid(width * 1.1, width * 1.1, width * 0.5).moved(y=base_h + glass_h)
    else:
        base = S.cylinder(width / 2, base_h)
        glass = S.cylinder(width * 0.42, glass_h).moved(y=base_h)
        corners = [(width * 0.47 * np.sin(a), width * 0.47 * np.cos(a)) for a in np.radians([45, 165, 285])]
        roof = S.frustum(width * 0.56, 0.03, width * 0.5).moved(y=base_h + glass_h)
    posts = S.merge([S.rod((x, base_h, z), (x, base_h + glass_h, z), post_r, 10) for x, z in corners])
    top = base_h + glass_h + width * 0.5
    parts = [PartSpec("base", base), PartSpec("roof", roof), PartSpec("frame", posts),
             PartSpec("glass", glass, "glass")]
    has_handle = rng.random() < 0.75
    if has_handle:
        ring = S.torus(0.09, 0.018, 32, 10).rotated("x", 90).moved(y=top + 0.07)
        parts.append(PartSpec("handle", ring))
    features = (style("shape", kind, f"a {kind} frame"), flag("handle", has_handle, "a ring handle"))
    return Blueprint(tuple(parts), features)


_ANY_BUT_WHITE = ("red", "orange", "yellow", "green", "teal", "blue", "navy", "purple", "pink", "brown", "black", "gray", "gold")

CATEGORIES = (
    Category("mug", build_mug, roles={"accent": ("white", "black", "gray", "beige", "brown", "red", "blue", "yellow")}),
    Category("vase", build_vase),
    Category("bottle", build_bottle, roles={"accent": _METALS + ("red", "white", "blue"),
                                            "label": ("white", "beige", "yellow", "red", "black")}),
    Category("bowl", build_bowl),
    Category("teapot", build_teapot, roles={"accent": ("white", "black", "gold", "brown", "silver")}),
    Category("candle", build_candle, main_colours=("white", "beige", "red", "yellow", "pink", "purple", "blue", "green"),
             roles={"flame": ("yellow", "orange"), "holder": ("gold", "silver", "brown", "black", "gray")},
             patterns=("plain", "stripes", "dots", "noise")),
    Category("lamp", build_lamp, roles={"accent": ("black", "white", "gold", "silver", "brown", "gray")}),
    Category("lantern", build_lantern, main_colours=_ANY_BUT_WHITE, roles={"glass": _WARM_LIGHT},
             patterns=("plain", "stripes", "noise")),
)
