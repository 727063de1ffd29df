"""The synthetic asset world: deterministic, well-formed, framed, truthfully captioned, valid glTF."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orbitforge.errors import InputError
from orbitforge.gen.world import (
    CATEGORY_NAMES, PALETTE, PATTERNS, SIZE_SCALES, categories_in, colours_in, patterns_in, sample_asset, sample_assets,
)
from orbitforge.gen.world import shapes
from orbitforge.gen.world.textures import pattern_texture
from orbitforge.gen.world.vocabulary import CATEGORY_WORDS, COLOUR_WORDS, PATTERN_ADJECTIVES, PATTERN_NOUNS
from orbitforge.mesh import load_meshes_from_glb_bytes
from orbitforge.render import OrbitConfig, RenderConfig, orbit_cameras_for, render

CAPTION_SEEDS = range(300)


def _same_asset(a, b) -> bool:
    if a.captions != b.captions or a.attributes != b.attributes or len(a.parts) != len(b.parts):
        return False
    for p, q in zip(a.parts, b.parts):
        for name in ("vertices", "faces", "normals", "uvs", "base_colour"):
            x, y = getattr(p, name), getattr(q, name)
            if (x is None) != (y is None) or (x is not None and not np.array_equal(x, y)):
                return False
        if p.base_colour_factor != q.base_colour_factor:
            return False
    return True


def test_there_are_at_least_twenty_categories_and_twelve_colours():
    assert len(CATEGORY_NAMES) >= 20 and len(PALETTE) >= 12
    assert set(PATTERNS) == {"plain", "stripes", "checker", "dots", "noise"}


@pytest.mark.parametrize("seed", [0, 1, 17, 123456])
def test_same_seed_gives_the_same_asset(seed):
    a, b = sample_asset(seed), sample_asset(seed)
    assert _same_asset(a, b)
    # naming the category the seed would draw changes nothing
    assert _same_asset(a, sample_asset(seed, a.attributes.category))


@pytest.mark.parametrize("category", CATEGORY_NAMES)
def test_different_seeds_give_different_assets(category):
    assets = [sample_asset(s, category) for s in range(4)]
    for i in range(len(assets)):
        for j in range(i + 1, len(assets)):
            assert not _same_asset(assets[i], assets[j])
            assert assets[i].captions != assets[j].captions


@pytest.mark.parametrize("category", CATEGORY_NAMES)
def test_every_category_renders_inside_the_frame_from_every_view(category):
    asset = sample_asset(5, category)
    config = OrbitConfig(frames=8, size=64, render=RenderConfig(supersample=1))
    out = render(asset.parts, orbit_cameras_for(asset.parts, config), config.render)
    for t, mask in enumerate(out.mask):
        assert mask.sum() > 40, f"{category}: view {t} is (nearly) empty"
        border = np.concatenate([mask[0], mask[-1], mask[:, 0], mask[:, -1]])
        assert not border.any(), f"{category}: view {t} touches the image border"


@pytest.mark.parametrize("category", CATEGORY_NAMES)
def test_assets_stand_on_the_ground_at_their_size(category):
    for seed in range(3):
        asset = sample_asset(seed, category)
        allv = np.concatenate([p.vertices for p in asset.parts])
        lo, hi = allv.min(axis=0), allv.max(axis=0)
        assert abs(lo[1]) < 1e-5, "stands on y = 0"
        assert abs(lo[0] + hi[0]) < 1e-4 and abs(lo[2] + hi[2]) < 1e-4, "centred on x and z"
        low, high = SIZE_SCALES[asset.attributes.size]
        assert low - 1e-4 <= (hi - lo).max() <= high + 1e-4
        np.testing.assert_allclose(hi - lo, asset.attributes.extent_m, atol=1e-4)


@pytest.mark.parametrize("category", CATEGORY_NAMES)
def test_triangles_face_outwards_with_unit_normals(category):
    asset = sample_asset(2, category)
    for part in asset.parts:
        tri = part.vertices[part.faces].astype(np.float64)  # [F, 3, 3]
        face_n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        vertex_n = part.normals[part.faces].mean(axis=1)  # [F, 3]
        assert ((face_n * vertex_n).sum(axis=1) > 0).all(), f"{category}/{part.name}: inward triangles"
        np.testing.assert_allclose(np.linalg.norm(part.normals, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("make", [
    lambda: shapes.cylinder(0.3, 1.0, top=False, bottom=False), lambda: shapes.sphere(0.5), lambda: shapes.torus(0.4, 0.1),
    lambda: shapes.capsule(0.1, 0.6), lambda: shapes.torus(0.3, 0.05, sweep_deg=180),
])
def test_lathe_uvs_never_wrap_across_a_triangle(make):
    shape = make()
    span = np.ptp(shape.uvs[shape.faces][..., 0], axis=1)  # [F] u extent per triangle
    u_total = shape.uvs[:, 0].max()
    assert span.max() <= u_total / 8, "a triangle spans the seam"
    assert float(u_total).is_integer() or u_total == pytest.approx(round(u_total)), "whole tiles round"


def test_flat_caps_are_projected_from_above():
    """A table top's checker stays square: caps take planar (x, z) UVs, not polar ones."""
    shape = shapes.cylinder(0.5, 0.1)
    cap = np.isclose(shape.normals[:, 1], 1.0)
    np.testing.assert_allclose(shape.uvs[cap], shape.vertices[cap][:, [0, 2]] / shapes.UV_TILE_M, atol=1e-9)


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p != "plain"])
def test_pattern_textures_tile_and_use_both_colours(pattern):
    red, white = (200, 30, 30), (240, 240, 240)
    tex = pattern_texture(pattern, red, white, np.random.default_rng(0)).astype(np.int32)
    # the wrap from the last column to the first is no bigger a step than steps inside the tile
    inner_step = max(np.abs(np.diff(tex, axis=0)).max(), np.abs(np.diff(tex, axis=1)).max())
    assert np.abs(tex[:, 0] - tex[:, -1]).max() <= inner_step
    assert np.abs(tex[0] - tex[-1]).max() <= inner_step
    share_white = (np.abs(tex - white).sum(axis=-1) < 30).mean()
    assert 0.1 < share_white < 0.9, "both colours cover a fair share"


@pytest.mark.parametrize("pattern", [p for p in PATTERNS if p != "plain"])
def test_patterns_show_in_renders(pattern):
    """Unlit, a patterned asset shows both its main and its pattern colour."""
    asset = next(a for s in range(400) if (a := sample_asset(s, "vase")).attributes.pattern == pattern)
    config = OrbitConfig(frames=1, size=96, render=RenderConfig(shading="unlit", supersample=1))
    rgb = render(asset.parts, orbit_cameras_for(asset.parts, config), config.render).rgb[0].astype(np.int32)
    for name in (asset.attributes.main_colour, asset.attributes.pattern_colour):
        near = (np.abs(rgb - np.array(PALETTE[name])).sum(axis=-1) < 40).mean()
        assert near > 0.02, f"{pattern}: {name} covers only {near:.1%} of the view"


def test_synonym_tables_invert_to_one_entry():
    for colour, words in COLOUR_WORDS.items():
        for word in words:
            assert colours_in(f"a {word} mug") == [colour], word
    for pattern in PATTERNS:
        for word in PATTERN_ADJECTIVES[pattern] + PATTERN_NOUNS.get(pattern, ()):
            assert patterns_in(f"a mug with {word}") == [pattern], word
    for category, words in CATEGORY_WORDS.items():
        for word in words:
            assert categories_in(f"a red {word} on a shelf") == [category], word


def test_captions_agree_with_the_attributes():
    for seed in CAPTION_SEEDS:
        asset = sample_asset(seed)
        a = asset.attributes
        assert len(asset.captions) >= 5 and len(set(asset.captions)) == len(asset.captions)
        for caption in asset.captions:
            where = f"seed {seed}: {caption!r}"
            assert set(categories_in(caption)) == {a.category}, where
            colours = colours_in(caption)
            assert a.main_colour in colours and set(colours) <= a.colours, where
            if a.pattern == "plain":
                assert set(patterns_in(caption)) <= {"plain"}, where
            else:
                assert set(patterns_in(caption)) == {a.pattern}, where


def test_captions_state_counted_features_truthfully():
    numbers = {"three": 3, "four": 4}
    said = set()
    for seed in range(60):
        asset = sample_asset(seed, "stool")
        for caption in asset.captions:
            words = caption.replace(",", "").split()
            for k, word in enumerate(words[1:], 1):
                if word == "legs" and words[k - 1] in numbers:
                    assert numbers[words[k - 1]] == asset.attributes.feature("legs"), caption
                    said.add(words[k - 1])
    assert said == {"three", "four"}, "stool captions mention both leg counts somewhere"
    for seed in range(40):
        asset = sample_asset(seed, "chair")
        arms = asset.attributes.feature("armrests")
        for caption in asset.captions:
            assert ("armchair" not in caption) or arms, caption
            assert ("no armrests" not in caption) or not arms, caption


@pytest.mark.parametrize("category", CATEGORY_NAMES)
def test_every_category_passes_the_khronos_validator(category):
    from orbitforge.validate import ValidatorUnavailableError, validate_glb

    glb = sample_asset(3, category).to_glb_bytes()
    try:
        report = validate_glb(glb)
    except ValidatorUnavailableError as exc:
        pytest.skip(str(exc))
    assert report.errors == 0, report.summary()


def test_glb_round_trip_keeps_parts_textures_and_colours():
    asset = next(a for s in range(50) if (a := sample_asset(s, "mug")).attributes.pattern != "plain")
    back = {q.name: q for q in load_meshes_from_glb_bytes(asset.to_glb_bytes())}  # trimesh may reorder nodes
    assert sorted(back) == sorted(p.name for p in asset.parts)
    for p in asset.parts:
        q = back[p.name]
        np.testing.assert_allclose(q.vertices, p.vertices, atol=1e-6)
        np.testing.assert_array_equal(q.faces, p.faces)
        if p.base_colour is not None:
            np.testing.assert_array_equal(q.base_colour[..., :3], p.base_colour[..., :3])
            np.testing.assert_allclose(q.uvs, p.uvs, atol=1e-6)
        else:
            np.testing.assert_allclose(q.base_colour_factor, p.base_colour_factor, atol=1 / 255)


def test_library_refuses_bad_input():
    with pytest.raises(InputError, match="mug"):  # the message lists the valid categories
        sample_asset(0, "spaceship-factory")
    with pytest.raises(InputError, match="at least 1"):
        sample_assets(0)
    with pytest.raises(InputError, match="non-negative"):
        sample_asset(-1)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).with_name("orbitforge")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)


def test_cli_world_sample_writes_assets_captions_and_a_sheet(tmp_path):
    out = tmp_path / "world"
    result = run_cli("world", "sample", "--n", "3", "-o", str(out), "--seed", "7")
    assert result.returncode == 0, result.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["asset_000.glb", "asset_001.glb", "asset_002.glb", "assets.json", "contact_sheet.png"]
    records = json.loads((out / "assets.json").read_text())["assets"]
    assert [r["seed"] for r in records] == [7, 8, 9]
    for record in records:
        expected = sample_asset(record["seed"])
        assert record["captions"] == list(expected.captions)
        assert record["attributes"]["category"] == expected.attributes.category
        parts = load_meshes_from_glb_bytes((out / record["file"]).read_bytes())
        assert len(parts) == len(expected.parts)
    sheet = np.asarray(Image.open(out / "contact_sheet.png"))
    assert sheet.shape[1] >= 3 * 160 and sheet.std() > 10


def test_cli_world_sample_with_a_category(tmp_path):
    from orbitforge.cli import main

    assert main(["world", "sample", "--n", "2", "-o", str(tmp_path / "w"), "--category", "pine tree"]) == 0
    records = json.loads((tmp_path / "w" / "assets.json").read_text())["assets"]
    assert {r["attributes"]["category"] for r in records} == {"pine tree"}


@pytest.mark.parametrize("args, message", [
    (["--category", "dragon"], "unknown category 'dragon'; choose one of: mug"),
    (["--n", "0"], "at least 1"),
    (["--n", "-3"], "at least 1"),
    (["--seed", "-1"], "non-negative"),
])
def test_cli_world_sample_bad_input_gives_one_line_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "out"
    result = run_cli("world", "sample", "-o", str(out), *args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not out.exists()
