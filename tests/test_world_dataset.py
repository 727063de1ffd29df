"""World orbit datasets (deterministic, resumable, held-out splits, readable) and the attribute probe."""

from __future__ import annotations

import json
import os
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from orbitforge.errors import InputError
from orbitforge.gen.world import CATEGORY_NAMES, PALETTE, colours_in, sample_asset
from orbitforge.gen.world.dataset import DatasetConfig, build_dataset, view_angles
from orbitforge.gen.world.shards import MANIFEST, SHARD_DIR, OrbitDataset
from orbitforge.gen.world.splits import MIN_SEEN, SPLITS, all_pairs, holdout_pairs
from orbitforge.mesh import bounding_sphere

# 24 small assets; generous held-out and val shares so every split has a few assets
TINY = DatasetConfig(assets=24, views=3, size=32, shard_size=5, holdout_fraction=0.3, val_fraction=0.2,
                     supersample=1)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("world") / "tiny"
    build_dataset(root, TINY, workers=1)
    return root


# --- dataset ------------------------------------------------------------------------------------


def test_manifest_records_config_splits_and_shards(tiny_dataset):
    manifest = json.loads((tiny_dataset / MANIFEST).read_text())
    assert manifest["complete"] and manifest["config"]["assets"] == TINY.assets
    counts = manifest["counts"]
    assert sum(counts[s] for s in SPLITS) == TINY.assets and counts["frames"] == TINY.assets * TINY.views
    assert all(counts[s] > 0 for s in SPLITS), counts
    for shard in manifest["shards"]:
        assert 1 <= shard["assets"] <= TINY.shard_size
        assert (tiny_dataset / SHARD_DIR / f"{shard['name']}.safetensors").is_file()
        assert (tiny_dataset / SHARD_DIR / f"{shard['name']}.json").is_file()
    assert sorted(i for s in manifest["shards"] for i in s["indices"]) == list(range(TINY.assets))


def test_same_seed_gives_identical_bytes_whatever_the_worker_count(tiny_dataset, tmp_path):
    build_dataset(tmp_path / "two", TINY, workers=2)
    assert _files(tmp_path / "two") == _files(tiny_dataset)
    other = build_dataset(tmp_path / "seed1", replace(TINY, seed=1), workers=1)
    assert other.assets_rendered == TINY.assets
    assert _files(tmp_path / "seed1") != _files(tiny_dataset)


def test_a_rerun_renders_nothing_and_a_lost_shard_is_rendered_again(tiny_dataset, tmp_path):
    root = tmp_path / "copy"
    for name, data in _files(tiny_dataset).items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    mtimes = {p: p.stat().st_mtime_ns for p in (root / SHARD_DIR).iterdir()}
    again = build_dataset(root, TINY, workers=1)
    assert again.shards_rendered == 0 and again.assets_rendered == 0 and again.shards_skipped == len(mtimes) // 2
    assert {p: p.stat().st_mtime_ns for p in (root / SHARD_DIR).iterdir()} == mtimes
    # an interrupted run: one shard missing, a partial file left behind
    lost = root / SHARD_DIR / "train-00001.safetensors"
    lost.unlink()
    (root / SHARD_DIR / ".train-00001.safetensors.partial-123").write_bytes(b"half")
    resumed = build_dataset(root, TINY, workers=1)
    assert resumed.shards_rendered == 1 and resumed.assets_rendered == TINY.shard_size
    assert _files(root) == _files(tiny_dataset)


def test_a_different_config_in_the_same_folder_is_refused(tiny_dataset):
    before = _files(tiny_dataset)
    with pytest.raises(InputError, match="views differ"):
        build_dataset(tiny_dataset, replace(TINY, views=4), workers=1)
    assert _files(tiny_dataset) == before


def test_no_held_out_pair_appears_in_train(tiny_dataset):
    held = {tuple(p) for p in json.loads((tiny_dataset / MANIFEST).read_text())["split"]["holdout_pairs"]}
    assert held == holdout_pairs(TINY.seed, TINY.holdout_fraction)
    pairs = {split: {(s.attributes["main_colour"], s.attributes["category"]) for s in OrbitDataset(tiny_dataset, split)}
             for split in SPLITS}
    assert pairs["test"] and pairs["test"] <= held
    assert not pairs["train"] & held and not pairs["val"] & held


def test_held_out_pairs_leave_every_colour_and_category_seen():
    pairs = all_pairs()
    held = holdout_pairs(0, 0.1)
    assert held == holdout_pairs(0, 0.1) and held != holdout_pairs(1, 0.1)
    assert abs(len(held) - 0.1 * len(pairs)) <= 1
    seen = [p for p in pairs if p not in held]
    per_category, per_colour = Counter(c for _, c in seen), Counter(c for c, _ in seen)
    assert set(per_category) == set(CATEGORY_NAMES) and set(per_colour) == set(PALETTE)
    assert min(per_category.values()) >= min(MIN_SEEN, 1) and min(per_colour.values()) >= MIN_SEEN


def test_reader_round_trip(tiny_dataset):
    data = OrbitDataset(tiny_dataset, "train")
    samples = list(data)
    assert len(samples) == len(data) > 0
    for k, sample in enumerate(samples):
        assert sample.frames.shape == (TINY.views, TINY.size, TINY.size, 3) and sample.frames.dtype == np.uint8
        assert sample.masks.shape == (TINY.views, TINY.size, TINY.size) and sample.masks.dtype == bool
        asset = sample_asset(sample.seed)
        assert sample.captions == asset.captions and sample.attributes == asset.attributes.to_dict()
        # the cameras look at the asset: its centre projects to the image centre, in front
        centre, _ = bounding_sphere(asset.parts)
        uv, z = sample.cameras.project(centre[None])
        np.testing.assert_allclose(uv[:, 0], TINY.size / 2, atol=0.01)
        assert (z > 0).all()
        elevation, _ = view_angles(TINY, int(sample.seed - TINY.seed))
        assert TINY.elevation_range_deg[0] <= elevation <= TINY.elevation_range_deg[1]
        for t in range(TINY.views):
            assert sample.masks[t].sum() > 20, "the object covers a fair share of each view"
            assert (sample.frames[t][~sample.masks[t]] == 255).all(), "white background outside the mask"
        if k < 2:
            assert data[k].seed == sample.seed  # random access agrees with iteration
    clip = samples[0].to_clip()
    assert len(clip.frames) == TINY.views and clip.source == samples[0].captions[0]


@pytest.mark.parametrize("fields, message", [
    ({"assets": 0}, "at least 1 asset"),
    ({"size": 15}, "16 to 512"),
    ({"size": 513}, "16 to 512"),
    ({"views": 0}, "at least 1 view"),
])
def test_bad_config_is_refused(fields, message):
    with pytest.raises(InputError, match=message):
        replace(TINY, **fields)


def test_the_reader_refuses_a_missing_dataset_or_split(tmp_path, tiny_dataset):
    with pytest.raises(InputError, match="not a world dataset"):
        OrbitDataset(tmp_path, "train")
    with pytest.raises(InputError, match="unknown split"):
        OrbitDataset(tiny_dataset, "holdout")


@pytest.mark.parametrize("args, message", [
    (["--assets", "0"], "at least 1 asset"),
    (["--size", "8"], "16 to 512"),
    (["--size", "1024"], "16 to 512"),
    (["--file"], "is a file"),
])
def test_cli_dataset_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    from orbitforge.cli import main

    out = tmp_path / "out"
    if args == ["--file"]:
        out.write_text("not a folder")
        args = []
    before = sorted(tmp_path.rglob("*"))
    assert main(["world", "dataset", "-o", str(out), "--assets", "2", "--size", "32", *args]) == 2
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in lines[0]
    assert sorted(tmp_path.rglob("*")) == before


def test_cli_dataset_renders_then_resumes(tmp_path, capsys):
    from orbitforge.cli import main

    args = ["world", "dataset", "--assets", "3", "--views", "2", "--size", "16", "-o", str(tmp_path / "d"),
            "--workers", "1", "--shard-size", "2"]
    assert main(args) == 0
    assert "rendered" in capsys.readouterr().out
    assert main(args) == 0
    assert "rendered 0 shard(s)" in capsys.readouterr().out


# --- probe --------------------------------------------------------------------------------------

TINY_PROBE = None  # built lazily so that collecting this file does not import torch


def _tiny_probe_config():
    from orbitforge.gen.world.probe import ProbeConfig, ProbeNetConfig

    return ProbeConfig(epochs=60, views_per_asset=3, batch_size=16, learning_rate=2e-2, max_shift_px=1, threads=1,
                       net=ProbeNetConfig(image_size=32, width=8, colour_features=16))


@pytest.fixture(scope="module")
def tiny_probe(tiny_dataset):
    from orbitforge.gen.world.probe import train_probe

    return train_probe(tiny_dataset, _tiny_probe_config())


def test_probe_learns_above_chance(tiny_probe, tiny_dataset):
    from orbitforge.gen.world.probe_train import evaluate_probe

    probe, metrics = tiny_probe
    assert set(metrics["heldout"]) == {"val", "test"} and metrics["train_assets"] > 0
    fit = evaluate_probe(probe, tiny_dataset, "train")
    # chance is 1/24 for category and 1/17 for colour; a few hundred steps on a few dozen frames
    # must do far better on what it was shown
    assert fit["category_accuracy"] > 0.5 and fit["colour_accuracy"] > 0.5, fit


def test_probe_round_trips_through_safetensors(tiny_probe, tiny_dataset, tmp_path):
    from orbitforge.gen.world.probe import AttributeProbe

    probe, _ = tiny_probe
    path = tmp_path / "probe.safetensors"
    probe.save(path)
    frames = np.concatenate([s.frames for s in OrbitDataset(tiny_dataset, "test")])
    loaded = AttributeProbe.load(path)
    assert loaded.categories == probe.categories and loaded.colours == probe.colours
    assert loaded.predict(frames) == probe.predict(frames)
    assert path.read_bytes()[8:9] == b"{", "a safetensors header, not a pickle"


def test_probe_loading_refuses_other_files(tmp_path):
    import torch
    from safetensors.torch import save_file

    from orbitforge.gen.world.probe import AttributeProbe

    pickled = tmp_path / "probe.pt"
    torch.save({"weight": torch.zeros(2)}, pickled)
    with pytest.raises(InputError, match="not a safetensors file"):
        AttributeProbe.load(pickled)
    foreign = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(foreign))
    with pytest.raises(InputError, match="not an orbitforge probe"):
        AttributeProbe.load(foreign)
    with pytest.raises(InputError, match="not found"):
        AttributeProbe.load(tmp_path / "missing.safetensors")


def test_score_clip_reads_prompts_from_captions_and_attributes(tiny_probe, tiny_dataset):
    from orbitforge.gen.world.probe import score_clip

    probe, _ = tiny_probe
    sample = OrbitDataset(tiny_dataset, "train")[0]
    by_caption = score_clip(sample.frames, sample.captions[0], probe=probe)
    by_attributes = score_clip(sample.frames, sample.attributes, probe=probe)
    assert by_caption == by_attributes
    assert 0.0 <= by_caption.both <= min(by_caption.category, by_caption.colour) <= 1.0
    predicted = probe.predict(sample.frames)[0]
    assert score_clip(sample.frames[:1], f"a {predicted.colour} {predicted.category}", probe=probe).both == 1.0
    with pytest.raises(InputError, match="one category"):
        score_clip(sample.frames, "something red", probe=probe)


def test_captions_name_the_main_colour_first():
    """score_clip reads a caption's first colour as the main one; seed 853 once said "a deep
    green bowl" (a deep bowl, green) and "deep green" was a synonym of dark green."""
    for seed in list(range(120)) + [853]:
        asset = sample_asset(seed)
        for caption in asset.captions:
            assert colours_in(caption)[0] == asset.attributes.main_colour, (seed, caption)


def test_cli_probe_trains_and_reports(tiny_dataset, tmp_path, capsys):
    from orbitforge.cli import main

    out = tmp_path / "probe.safetensors"
    assert main(["world", "probe", str(tiny_dataset), "-o", str(out), "--epochs", "1", "--views", "1"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "test" in text and "main colour" in text
    assert main(["world", "probe", str(tiny_dataset), "-o", str(tmp_path / "probe.pt")]) == 2
    assert not (tmp_path / "probe.pt").exists()
    assert os.listdir(tmp_path) == ["probe.safetensors"]
