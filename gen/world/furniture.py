"""Category builders for furniture and props: table, chair, stool, crate, barrel, chest.

Boxes and rods on a floor plan, in nominal metres (a chair's seat at 0.45 m); `assets.py`
rescales.  Front is +Z: a chair's back and a chest's hinge are at -Z, its lock at +Z.
"""

from __future__ import annotations

import numpy as np

from orbitforge.gen.world import shapes as S
from orbitforge.gen.world.blueprint import MAIN, Blueprint, Category, PartSpec, count, flag, pick, style

_WOODS = ("brown", "beige", "black", "white", "gray", "dark green", "navy", "red")
_METALS = ("black", "gray", "silver", "gold")


def _leg(kind: str, x: float, z: float, height: float, thickness: float) -> S.Shape:
    """A straight leg from the floor to `height`: a round rod or a square post."""
    if kind == "round":
        return S.cylinder(thickness / 2, height, 16).moved(x=x, z=z)
    return S.box(thickness, height, thickness).moved(x=x, z=z)


def build_table(rng: np.random.Generator) -> Blueprint:
    top_kind = pick(rng, ("round", "rectangular"))
    height, thick = rng.uniform(0.7, 0.8), 0.05
    leg_kind = pick(rng, ("round", "square"))
    if top_kind == "round":
        radius = rng.uniform(0.45, 0.6)
        top = S.cylinder(radius, thick, 56)
        legs_n = pick(rng, (1, 3, 4))
        angles = np.radians(90 + 360 * np.arange(legs_n) / legs_n)
        spots = [(0.7 * radius * np.cos(a), 0.7 * radius * np.sin(a)) for a in angles]
    else:
        width, depth = rng.uniform(1.0, 1.5), rng.uniform(0.6, 0.85)
        top = S.box(width, thick, depth)
        legs_n = 4
        spots = [(sx * (width / 2 - 0.08), sz * (depth / 2 - 0.08)) for sx in (-1, 1) for sz in (-1, 1)]
    if legs_n == 1:  # a pedestal: one thick column on a foot
        legs = S.merge([S.cylinder(0.06, height, 24), S.frustum(0.3, 0.08, 0.08, 32)])
        legs_feature = style("legs", "pedestal", "a pedestal base")
    else:
        legs = S.merge([_leg(leg_kind, x, z, height - thick, 0.07) for x, z in spots])
        legs_feature = count("legs", legs_n, "leg", "legs")
    parts = (PartSpec("top", top.moved(y=height - thick)),
             PartSpec("legs", legs, pick(rng, (MAIN, "accent")), plural=True))
    features = (style("top", top_kind, f"a {top_kind} top"), legs_feature)
    words = ("round",) if top_kind == "round" else ("long",) if parts[0].shape.vertices[:, 0].max() > 0.65 else ()
    return Blueprint(parts, features, words)


def _chair_back(kind: str, width: float, z: float, y0: float, y1: float, rng) -> tuple[S.Shape, int]:
    """The backrest between the rear posts: a solid panel, vertical slats or horizontal rails."""
    inner = width - 0.1
    if kind == "panel":
        return S.box(inner, (y1 - y0) * 0.55, 0.035).moved(y=y1 - (y1 - y0) * 0.6, z=z), 0
    n = int(rng.integers(2, 5)) if kind == "slats" else int(rng.integers(2, 4))
    if kind == "slats":
        xs = np.linspace(-inner / 2, inner / 2, n + 2)[1:-1]
        pieces = [S.box(0.05, y1 - y0 - 0.05, 0.03).moved(x=x, y=y0, z=z) for x in xs]
        pieces.append(S.box(inner, 0.06, 0.035).moved(y=y1 - 0.06, z=z))  # top rail holds the slats
    else:
        ys = np.linspace(y0 + 0.1, y1 - 0.06, n)
        pieces = [S.box(inner, 0.06, 0.035).moved(y=y, z=z) for y in ys]
    return S.merge(pieces), n


def build_chair(rng: np.random.Generator) -> Blueprint:
    width, depth, seat_h = rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.52), 0.45
    back_h = rng.uniform(0.85, 1.05)
    leg_kind, back_kind = pick(rng, ("round", "square")), pick(rng, ("panel", "slats", "rails"))
    has_arms = rng.random() < 0.35
    x, z_front, z_back = width / 2 - 0.04, depth / 2 - 0.04, -depth / 2 + 0.04
    legs = [_leg(leg_kind, sx * x, z_front, seat_h - 0.05, 0.05) for sx in (-1, 1)]
    legs += [S.box(0.05, back_h, 0.05).moved(x=sx * x, z=z_back) for sx in (-1, 1)]  # rear legs rise into posts
    back, n_back = _chair_back(back_kind, width, z_back, seat_h, back_h, rng)
    parts = [PartSpec("seat", S.box(width, 0.05, depth).moved(y=seat_h - 0.05)), PartSpec("backrest", back)]
    frame_colour = pick(rng, (MAIN, "accent"))
    if has_arms:
        arm_y = seat_h + 0.22
        arms = [S.box(0.05, 0.04, depth - 0.02).moved(x=sx * x, y=arm_y) for sx in (-1, 1)]
        arms += [S.box(0.04, arm_y - seat_h, 0.04).moved(x=sx * x, y=seat_h, z=z_front) for sx in (-1, 1)]
        parts.append(PartSpec("armrests", S.merge(arms), frame_colour, plural=True))
    parts.append(PartSpec("legs", S.merge(legs), frame_colour, plural=True))
    back_feature = {"panel": style("back", "panel", "a solid back"),
                    "slats": count("back slats", n_back, "back slat", "back slats"),
                    "rails": count("back rails", n_back, "back rail", "back rails")}[back_kind]
    features = (flag("armrests", has_arms, "armrests", "no armrests"), back_feature,
                style("legs", leg_kind, f"{leg_kind} legs"))
    return Blueprint(tuple(parts), features, ("high-backed",) if back_h > 0.98 else ())


def build_stool(rng: np.random.Generator) -> Blueprint:
    height, radius = rng.uniform(0.45, 0.85), rng.uniform(0.17, 0.24)
    legs_n = pick(rng, (3, 4))
    spread_top, spread_floor = radius * 0.65, radius * 1.15
    angles = np.radians(30 + 360 * np.arange(legs_n) / legs_n)
    legs = [S.rod((spread_floor * np.cos(a), 0.0, spread_floor * np.sin(a)),
                  (spread_top * np.cos(a), height - 0.04, spread_top * np.sin(a)), 0.022, 12) for a in angles]
    seat = S.lathe([(0, 0), (radius, 0), (radius, 0.045), (radius * 0.94, 0.06), (0, 0.06)]).moved(y=height - 0.05)
    leg_colour = pick(rng, (MAIN, "accent"))
    parts = [PartSpec("seat", seat), PartSpec("legs", S.merge(legs), leg_colour, plural=True)]
    has_footrest = height > 0.6 and rng.random() < 0.7
    if has_footrest:
        ring_y = height * 0.35
        ring_r = spread_floor + (spread_top - spread_floor) * ring_y / (height - 0.04)
        parts.append(PartSpec("footrest", S.torus(ring_r, 0.014, 48, 10).moved(y=ring_y), leg_colour))
    features = (count("legs", legs_n, "leg", "legs"), flag("footrest", has_footrest, "a footrest ring"))
    words = ("tall",) if height > 0.68 else ("low",) if height < 0.55 else ()
    return Blueprint(tuple(parts), features, words)


def build_crate(rng: np.random.Generator) -> Blueprint:
    width, height, depth = rng.uniform(0.8, 1.3), rng.uniform(0.7, 0.95), rng.uniform(0.75, 0.95)
    t = 0.07
    panels = S.box(width - 0.02, height - 0.02, depth - 0.02).moved(y=0.01)
    beams = []
    for sx in (-1, 1):
        for sz in (-1, 1):
            beams.append(S.box(t, height, t).moved(x=sx * (width - t) / 2, z=sz * (depth - t) / 2))
    for y in (0.0, height - t):
        beams += [S.box(width, t, t).moved(y=y, z=sz * (depth - t) / 2) for sz in (-1, 1)]
        beams += [S.box(t, t, depth).moved(x=sx * (width - t) / 2, y=y) for sx in (-1, 1)]
    has_braces = rng.random() < 0.5
    if has_braces:  # one diagonal across the front and the back
        angle = np.degrees(np.arctan2(height - 2 * t, width - 2 * t))
        length = np.hypot(width - 2 * t, height - 2 * t)
        for sz in (-1, 1):
            brace = S.box(length, t * 0.8, t * 0.5).moved(y=-t * 0.4).rotated("z", angle)
            beams.append(brace.moved(y=height / 2, z=sz * (depth / 2 - t * 0.2)))
    parts = (PartSpec("panels", panels, plural=True), PartSpec("frame", S.merge(beams), "frame"))
    words = ("long",) if width > 1.15 else ("cubic",) if abs(width - depth) < 0.08 and abs(height - depth) < 0.1 else ()
    return Blueprint(parts, (flag("braces", has_braces, "diagonal braces"),), words)


def build_barrel(rng: np.random.Generator) -> Blueprint:
    height, r_end = rng.uniform(0.9, 1.1), rng.uniform(0.3, 0.38)
    r_mid = r_end * rng.uniform(1.12, 1.25)

    def radius_at(y):
        return r_end + (r_mid - r_end) * np.sin(np.pi * y / height)

    ys = np.linspace(0, height, 17)
    lip, sink = 0.035, 0.04
    profile = [(0.0, 0.0)] + [(radius_at(y), y) for y in ys] + [(r_end - lip, height), (r_end - lip, height - sink), (0.0, height - sink)]
    body = S.lathe(profile, 56)
    hoops_n = pick(rng, (2, 3, 4))
    centres = {2: (0.2, 0.8), 3: (0.12, 0.5, 0.88), 4: (0.1, 0.3, 0.7, 0.9)}[hoops_n]
    hoops = []
    for c in centres:
        y0, y1 = c * height - 0.03, c * height + 0.03
        hoops.append(S.lathe([(radius_at(y0) + 0.012, y0), (radius_at(y1) + 0.012, y1)], 56))
    parts = (PartSpec("staves", body, plural=True), PartSpec("hoops", S.merge(hoops), "hoops", plural=True))
    words = ("stout",) if r_mid / height > 0.42 else ()
    return Blueprint(parts, (count("hoops", hoops_n, "hoop", "hoops"),), words)


def build_chest(rng: np.random.Generator) -> Blueprint:
    width, height, depth = rng.uniform(0.9, 1.1), rng.uniform(0.42, 0.52), rng.uniform(0.55, 0.65)
    lid_kind = pick(rng, ("rounded", "flat"))
    body = S.box(width, height, depth)
    r = depth / 2
    if lid_kind == "rounded":  # a half cylinder lying along x
        lid = S.lathe([(0, 0), (r, 0), (r, width), (0, width)], 40, sweep_deg=180).rotated("z", 90).moved(x=width / 2, y=height)
        lid_top = height + r
    else:
        lid = S.box(width + 0.03, 0.12, depth + 0.03).moved(y=height)
        lid_top = height + 0.12
    straps_n = pick(rng, (2, 3))
    straps = []
    for x in np.linspace(-width * 0.32, width * 0.32, straps_n):
        straps.append(S.box(0.07, height + 0.01, depth + 0.02).moved(x=x))
        if lid_kind == "rounded":
            straps.append(S.torus(r + 0.006, 0.012, 24, 8, sweep_deg=180).rotated("z", 90).moved(x=x, y=height))
        else:
            straps.append(S.box(0.07, 0.125, depth + 0.05).moved(x=x, y=height))
    parts = [PartSpec("box", body), PartSpec("lid", lid), PartSpec("straps", S.merge(straps), "trim", plural=True)]
    has_lock = rng.random() < 0.7
    if has_lock:
        parts.append(PartSpec("lock", S.box(0.1, 0.13, 0.03).moved(y=height - 0.08, z=depth / 2 + 0.01), "trim"))
    features = (style("lid", lid_kind, f"a {lid_kind} lid"), count("straps", straps_n, "metal strap", "metal straps"),
                flag("lock", has_lock, "a lock"))
    return Blueprint(tuple(parts), features, ("tall",) if lid_top > 0.95 * width else ())


CATEGORIES = (
    Category("table", build_table, roles={"accent": _WOODS + _METALS}),
    Category("chair", build_chair, roles={"accent": _WOODS + _METALS}),
    Category("stool", build_stool, roles={"accent": _WOODS + _METALS}),
    Category("crate", build_crate, roles={"frame": ("brown", "beige", "black", "gray", "dark green", "red", "navy")}),
    Category("barrel", build_barrel, roles={"hoops": _METALS}),
    Category("chest", build_chest, roles={"trim": ("gold", "silver", "black", "gray")}),
)
