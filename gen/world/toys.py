"""Category builders for game-world set pieces: rocket, car, house, robot, sword.

Boxes, prisms and lathes in nominal metres; `assets.py` rescales.  Front is +Z: a car drives
towards +Z, a house's door, a robot's face and a rocket's windows look that way.
"""

from __future__ import annotations

import numpy as np

from orbitforge.gen.world import shapes as S
from orbitforge.gen.world.blueprint import MAIN, Blueprint, Category, PartSpec, count, flag, pick, style

_METALS = ("silver", "gray", "black", "gold", "white")
_GLASS = ("teal", "blue", "navy", "black", "white", "yellow")


def _porthole(radius: float, x: float, y: float, z: float) -> tuple[S.Shape, S.Shape]:
    """(glass disc, rim ring) facing +Z, centred at (x, y, z)."""
    glass = S.cylinder(radius, 0.02, 24).rotated("x", 90).moved(x, y, z)
    rim = S.torus(radius, radius * 0.22, 24, 8).rotated("x", 90).moved(x, y, z + 0.01)
    return glass, rim


def build_rocket(rng: np.random.Generator) -> Blueprint:
    radius, nozzle_h = rng.uniform(0.12, 0.17), 0.08
    shoulder = rng.uniform(0.55, 0.68)
    t = np.linspace(0.0, 1.0, 12)
    body = S.lathe([(0.0, nozzle_h), (radius * 0.8, nozzle_h), (radius, nozzle_h + 0.1), (radius, shoulder), (0.0, shoulder)])
    nose = S.lathe([(radius * np.cos(a * np.pi / 2) ** 0.7, shoulder + (1.0 - shoulder) * a) for a in t])
    nozzle = S.frustum(radius * 0.65, radius * 0.45, nozzle_h + 0.02, 24)
    fins_n = pick(rng, (3, 4))
    fin_w, fin_h = rng.uniform(0.1, 0.16), rng.uniform(0.25, 0.35)
    outline = [(radius * 0.8, 0.0), (radius + fin_w, 0.0), (radius + fin_w * 0.7, fin_h * 0.35), (radius * 0.8, fin_h)]
    fin = S.prism(outline, 0.03)
    fins = S.merge([fin.rotated("y", 45 + 360 * k / fins_n) for k in range(fins_n)])
    windows_n = pick(rng, (1, 2))
    ys = [shoulder - 0.12] if windows_n == 1 else [shoulder - 0.1, shoulder - 0.3]
    glass, rims = zip(*[_porthole(radius * 0.38, 0.0, y, radius) for y in ys])
    parts = (PartSpec("body", body), PartSpec("nose cone", nose, pick(rng, (MAIN, "accent"))),
             PartSpec("fins", fins, "accent", plural=True), PartSpec("nozzle", nozzle, "gray"),
             PartSpec("windows", S.merge(glass), "window", plural=True), PartSpec("window rims", S.merge(rims), "silver", plural=True))
    features = (count("fins", fins_n, "fin", "fins"), count("windows", windows_n, "round window", "round windows"))
    return Blueprint(parts, features, ("slender",) if radius < 0.14 else ())


def build_car(rng: np.random.Generator) -> Blueprint:
    length, width = rng.uniform(1.0, 1.25), rng.uniform(0.5, 0.58)
    wheel_r = rng.uniform(0.11, 0.14)
    clearance, body_h = wheel_r * 0.7, rng.uniform(0.2, 0.26)
    body = S.box(width, body_h, length).moved(y=clearance)
    kind = pick(rng, ("sedan", "hatchback", "pickup"))
    back, front = {"sedan": (-0.28, 0.12), "hatchback": (-0.45, 0.1), "pickup": (-0.1, 0.22)}[kind]
    cabin_h, roof_y = rng.uniform(0.16, 0.2), clearance + body_h
    # cabin profile in (z, y); prism extrudes along z, so build it in x and turn it
    profile = [(back * length, 0.0), (front * length, 0.0), ((front - 0.1) * length, cabin_h), ((back + 0.05) * length, cabin_h)]
    cabin = S.prism([(-z, y) for z, y in profile], width * 0.9).rotated("y", 90).moved(y=roof_y)
    roof = S.box(width * 0.92, 0.025, (front - back - 0.15) * length).moved(y=roof_y + cabin_h, z=(front + back - 0.05) / 2 * length)
    wheels = [S.cylinder(wheel_r, 0.09, 32).rotated("z", 90).moved(x=sx * (width / 2 + 0.045), y=wheel_r, z=sz * length * 0.32)
              for sx in (-1, 1) for sz in (-1, 1)]
    lamp_y, half_l = clearance + body_h * 0.6, length / 2
    headlights = [S.sphere(0.035, 12, 6).moved(x=sx * width * 0.32, y=lamp_y, z=half_l) for sx in (-1, 1)]
    taillights = [S.box(0.08, 0.04, 0.02).moved(x=sx * width * 0.32, y=lamp_y, z=-half_l) for sx in (-1, 1)]
    parts = [PartSpec("body", body), PartSpec("roof", roof), PartSpec("windows", cabin, "glass", plural=True),
             PartSpec("wheels", S.merge(wheels), "black", plural=True),
             PartSpec("headlights", S.merge(headlights), "yellow", plural=True),
             PartSpec("taillights", S.merge(taillights), "red", plural=True)]
    has_spoiler = kind != "pickup" and rng.random() < 0.35
    if has_spoiler:
        wing = S.box(width * 0.95, 0.025, 0.1).moved(y=roof_y + 0.07, z=-half_l + 0.06)
        posts = [S.box(0.03, 0.07, 0.03).moved(x=sx * width * 0.3, y=roof_y, z=-half_l + 0.06) for sx in (-1, 1)]
        parts.append(PartSpec("spoiler", S.merge([wing] + posts), "accent"))
    features = (style("type", kind, {"pickup": "an open truck bed"}.get(kind, "")),
                flag("spoiler", has_spoiler, "a spoiler"), flag("big wheels", wheel_r > 0.13, "big wheels"))
    return Blueprint(tuple(parts), features, ("long",) if length > 1.18 else ())


def build_house(rng: np.random.Generator) -> Blueprint:
    storeys = pick(rng, (1, 1, 2))
    width, depth = rng.uniform(0.8, 1.1), rng.uniform(0.7, 0.9)
    wall_h = rng.uniform(0.45, 0.55) * (1.0 if storeys == 1 else 1.7)
    roof_kind, roof_h, eave = pick(rng, ("gable", "pyramid")), rng.uniform(0.3, 0.42), 0.06
    if roof_kind == "gable":  # ridge along x; the gable ends face the sides
        roof = S.prism([(-(depth / 2 + eave), 0.0), (depth / 2 + eave, 0.0), (0.0, roof_h)], width + 2 * eave).rotated("y", 90)
    else:
        roof = S.pyramid(width + 2 * eave, depth + 2 * eave, roof_h)
    front = depth / 2 + 0.005
    door = S.box(0.17, 0.32, 0.02).moved(z=front)
    slots = [(-width * 0.3, 0.18), (width * 0.3, 0.18)]
    if storeys == 2:
        upper = wall_h * 0.62
        slots += [(x, upper) for x in pick(rng, ([0.0], [-width * 0.3, width * 0.3], [-width * 0.3, 0.0, width * 0.3]))]
    windows_n = len(slots) if storeys == 2 else pick(rng, (1, 2))
    windows = [S.box(0.15, 0.15, 0.02).moved(x=x, y=y, z=front) for x, y in slots[:windows_n]]
    parts = [PartSpec("walls", S.box(width, wall_h, depth), plural=True), PartSpec("roof", roof.moved(y=wall_h), "roof"),
             PartSpec("door", door, "door"), PartSpec("windows", S.merge(windows), "glass", plural=True)]
    has_chimney = rng.random() < 0.5
    if has_chimney:
        parts.append(PartSpec("chimney", S.box(0.1, roof_h * 0.9, 0.1).moved(x=width * 0.28, y=wall_h + roof_h * 0.3, z=-depth * 0.15), "gray"))
    features = (count("storeys", storeys, "storey", "storeys"), count("windows", windows_n, "window", "windows"),
                flag("chimney", has_chimney, "a chimney"), style("roof", roof_kind, f"a {roof_kind} roof"))
    return Blueprint(tuple(parts), features, ("tall",) if storeys == 2 else ())


def build_robot(rng: np.random.Generator) -> Blueprint:
    leg_h, torso_h = rng.uniform(0.25, 0.32), rng.uniform(0.32, 0.4)
    torso_w, torso_d = rng.uniform(0.38, 0.46), 0.26
    legs = S.merge([S.box(0.12, leg_h, 0.15).moved(x=sx * torso_w * 0.25) for sx in (-1, 1)])
    torso_y = leg_h
    torso = S.box(torso_w, torso_h, torso_d).moved(y=torso_y)
    head_kind = pick(rng, ("square", "round"))
    neck_y = torso_y + torso_h
    if head_kind == "square":
        head_h = 0.22
        head = S.box(0.28, head_h, 0.24).moved(y=neck_y + 0.03)
        face_z = 0.12
    else:
        head_h = 0.2
        head = S.merge([S.cylinder(0.14, head_h * 0.6, 32), S.dome(0.14, head_h * 0.4).moved(y=head_h * 0.6)]).moved(y=neck_y + 0.03)
        face_z = 0.135
    eye_y = neck_y + 0.03 + head_h * 0.5
    eyes = S.merge([S.sphere(0.032, 12, 6).moved(x=sx * 0.06, y=eye_y, z=face_z) for sx in (-1, 1)])
    shoulder_y = neck_y - 0.06
    arms = [S.rod((sx * torso_w / 2, shoulder_y, 0.0), (sx * (torso_w / 2 + 0.08), shoulder_y - 0.3, 0.05), 0.035, 12)
            for sx in (-1, 1)]
    hands = [S.sphere(0.05, 16, 8).moved(x=sx * (torso_w / 2 + 0.08), y=shoulder_y - 0.32, z=0.05) for sx in (-1, 1)]
    neck = S.cylinder(0.05, 0.04, 16).moved(y=neck_y)
    parts = [PartSpec("torso", torso), PartSpec("head", head, pick(rng, (MAIN, "accent"))),
             PartSpec("eyes", eyes, "eyes", plural=True), PartSpec("legs", legs, "accent", plural=True),
             PartSpec("arms", S.merge(arms + hands + [neck]), "accent", plural=True)]
    has_antenna, has_panel = rng.random() < 0.6, rng.random() < 0.5
    top = neck_y + 0.03 + head_h
    if has_antenna:
        parts.append(PartSpec("antenna", S.merge([S.rod((0, top - 0.01, 0), (0, top + 0.12, 0), 0.012, 8),
                                                   S.sphere(0.03, 12, 6).moved(y=top + 0.13)]), "eyes"))
    if has_panel:
        panel = S.box(torso_w * 0.5, torso_h * 0.35, 0.02).moved(y=torso_y + torso_h * 0.4, z=torso_d / 2)
        parts.append(PartSpec("control panel", panel, "accent"))
    features = (style("head", head_kind, f"a {head_kind} head"), flag("antenna", has_antenna, "an antenna"),
                flag("panel", has_panel, "a control panel"))
    return Blueprint(tuple(parts), features, ("chunky",) if torso_w > 0.43 else ())


def build_sword(rng: np.random.Generator) -> Blueprint:
    pommel_r, grip_len = rng.uniform(0.035, 0.05), rng.uniform(0.14, 0.2)
    grip_y0 = pommel_r * 1.6
    guard_y = grip_y0 + grip_len
    blade_w, blade_y = rng.uniform(0.045, 0.07), guard_y + 0.04
    length = 1.0 - blade_y
    blade = S.prism([(-blade_w, 0.0), (blade_w, 0.0), (blade_w * 0.85, length * 0.86), (0.0, length),
                     (-blade_w * 0.85, length * 0.86)], 0.022).moved(y=blade_y)
    guard_kind = pick(rng, ("straight", "round"))
    if guard_kind == "straight":
        guard = S.box(rng.uniform(0.26, 0.36), 0.045, 0.06).moved(y=guard_y)
    else:
        guard = S.cylinder(rng.uniform(0.08, 0.1), 0.035, 32).moved(y=guard_y + 0.005)
    grip = S.cylinder(0.026, grip_len + 0.01, 16).moved(y=grip_y0 - 0.005)
    pommel = S.sphere(pommel_r, 16, 8).moved(y=pommel_r)
    parts = [PartSpec("blade", blade), PartSpec("guard", guard, "trim"), PartSpec("grip", grip, "grip"),
             PartSpec("pommel", pommel, "trim")]
    has_gem = rng.random() < 0.4
    if has_gem:
        parts.append(PartSpec("gem", S.sphere(0.025, 12, 6).moved(y=guard_y + 0.022, z=0.03), "gem"))
    features = (style("guard", guard_kind, "a straight crossguard" if guard_kind == "straight" else "a round guard"),
                flag("gem", has_gem, "a gem in the hilt"))
    return Blueprint(tuple(parts), features, ("broad",) if blade_w > 0.062 else ())


CATEGORIES = (
    Category("rocket", build_rocket, roles={"accent": ("red", "white", "blue", "orange", "black", "silver", "yellow"),
                                            "window": ("teal", "blue", "navy", "yellow")}),
    Category("car", build_car, roles={"glass": ("teal", "navy", "black", "blue"), "accent": ("black", "silver", "red", "white")}),
    Category("house", build_house, main_colours=("white", "beige", "yellow", "red", "blue", "pink", "gray", "brown", "green", "teal", "orange"),
             roles={"roof": ("red", "brown", "gray", "dark green", "navy", "black", "orange"), "door": ("brown", "red", "blue", "green", "black"),
                    "glass": ("teal", "blue", "navy", "yellow")}),
    Category("robot", build_robot, roles={"accent": _METALS + ("red", "blue", "yellow"), "eyes": ("yellow", "red", "teal", "blue", "white")}),
    Category("sword", build_sword, main_colours=("silver", "gray", "gold", "black", "white", "blue", "red", "teal", "purple"),
             roles={"trim": ("gold", "silver", "black", "gray", "brown"), "grip": ("brown", "black", "red", "navy", "purple", "dark green"),
                    "gem": ("red", "blue", "green", "purple", "teal")},
             patterns=("plain", "noise", "stripes", "dots")),
)
