"""Training the orbit model: tiny VAE and DiT runs on a tiny world dataset, resume, safetensors-only
checkpoints, and `orbitforge generate` end to end with a tiny pipeline.

Everything is tiny (12 assets x 4 views at 32 px, the "tiny" model preset, a 1-layer 16-d BERT
as text encoder), so each test takes seconds on one CPU thread.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from orbitforge.errors import InputError
from orbitforge.gen.train import TrainConfig, learning_rate, train_dit, train_vae

from conftest import make_tiny_bert, make_tiny_orbit_pipeline

PICKLE_SUFFIXES = (".bin", ".pkl", ".pt", ".pth", ".ckpt", ".pickle")
WORDS = ("a an the red blue green golden white black brown gray mug chair vase box sword lamp with stripes dots "
         "small large").split()


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), WORDS)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> str:
    """12 assets x 4 views at 32 px: 8 train, 2 val, 2 test."""
    from orbitforge.gen.world.dataset import DatasetConfig, build_dataset

    root = tmp_path_factory.mktemp("world") / "data"
    build_dataset(root, DatasetConfig(assets=12, views=4, size=32, shard_size=8, val_fraction=0.3, supersample=1),
                  workers=1)
    return str(root)


@pytest.fixture(scope="module")
def config(dataset, text_model) -> TrainConfig:
    return TrainConfig(data=dataset, frames=4, size=32, model="tiny", text_model=text_model, batch_size=4, lr=3e-3,
                       warmup_steps=2, steps=24, checkpoint_every=12, sample_every=12, log_every=4, eval_assets=2,
                       sample_steps=2)


@pytest.fixture(scope="module")
def trained_vae(config, tmp_path_factory):
    out = tmp_path_factory.mktemp("vae_run")
    return train_vae(config, out), out


def _files(folder: Path) -> list[Path]:
    return [p for p in Path(folder).rglob("*") if p.is_file()]


def _assert_no_pickles(folder: Path) -> None:
    pickled = [p for p in _files(folder) if p.suffix in PICKLE_SUFFIXES]
    assert not pickled, pickled


def test_vae_trains_measures_psnr_and_saves_safetensors_only(trained_vae):
    result, out = trained_vae
    log = json.loads((out / "log.json").read_text())
    first, last = log["eval"][0], log["eval"][-1]
    assert first["step"] == 0 and last["step"] == 24
    for split in ("val", "test"):  # held-out reconstruction PSNR rises
        assert last[f"psnr_{split}"] > first[f"psnr_{split}"] + 1.0, (first, last)
    assert log["train"][-1]["loss"] < log["train"][0]["loss"]
    assert result.metrics["scaling_factor"] > 0 and result.output == out / "vae"
    assert json.loads((out / "vae" / "config.json").read_text())["scaling_factor"] == result.metrics["scaling_factor"]
    assert (out / "loss.png").is_file() and (out / "samples" / "step-0000024.png").is_file()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-0000012", "step-0000024"]
    _assert_no_pickles(out)


def test_decoder_fine_tune_keeps_the_latent_space_and_improves_reconstruction(config, trained_vae, tmp_path):
    from orbitforge.gen.train import _psnr, _StoredOrbits, load_trained_vae
    from orbitforge.gen.vae import decode_latents, encode_frames

    base_result, base_run = trained_vae
    tuned = train_vae(replace(config, decoder_from=str(base_run), steps=60, lr=3e-3, ema_decay=0.0,
                                     sample_every=0), tmp_path / "ft")
    base, new = load_trained_vae(base_run), load_trained_vae(tuned.output)
    for name, weight in base.encoder.state_dict().items():  # the encoder and its latents are untouched
        assert torch.equal(weight, new.encoder.state_dict()[name]), name
    assert new.config.scaling_factor == base.config.scaling_factor == tuned.metrics["scaling_factor"]
    assert any(not torch.equal(w, new.decoder.state_dict()[k]) for k, w in base.decoder.state_dict().items())
    frames = _StoredOrbits(config.data, "train", 32, 4).all_orbits().frames.reshape(-1, 32, 32, 3)
    latents = encode_frames(base, frames)
    assert torch.equal(latents, encode_frames(new, frames))

    def psnr(vae) -> float:
        return _psnr(decode_latents(vae, latents), frames)

    assert psnr(new) > psnr(base) + 0.5, (psnr(base), psnr(new))
    assert "--decoder-from" in _train_command(tuned.out_dir)
    with pytest.raises(InputError, match="no trained VAE"):  # one line, and no half-made run folder
        train_vae(replace(config, decoder_from=str(tmp_path / "missing")), tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def _train_command(run: Path) -> str:
    from orbitforge.gen.cli_generate import train_command

    return train_command(json.loads((run / "config.json").read_text()), run)


def test_dit_trains_on_vae_latents_and_saves_a_pipeline(config, trained_vae, tmp_path):
    from orbitforge.gen.pipeline import OrbitVideoPipeline

    out = tmp_path / "dit"
    result = train_dit(replace(config, vae=str(trained_vae[1])), out)
    log = json.loads((out / "log.json").read_text())
    first, last = log["eval"][0], log["eval"][-1]
    for split in ("val", "test"):  # held-out flow loss with fixed noise falls (untrained: ~2)
        assert last[f"loss_{split}"] < 0.8 * first[f"loss_{split}"], (first, last)
    # each caption was encoded once, into the dataset's caption cache
    assert len(list((out / "cache").glob("text-*.safetensors"))) == 1
    assert len(list((out / "cache").glob("latents-*.safetensors"))) == 1
    pipe = OrbitVideoPipeline.from_pretrained(result.output)
    assert pipe.config.default_frames == 4 and pipe.config.default_size == 32
    ema = load_file(out / "checkpoints" / "step-0000024" / "ema.safetensors")
    for name, value in pipe.transformer.state_dict().items():  # the shipped weights are the EMA's
        torch.testing.assert_close(value, ema[name], rtol=0, atol=0)
    assert (out / "samples" / "step-0000024.png").is_file()
    _assert_no_pickles(out)
    # the model card: the commands that re-create it, its data, compute and held-out numbers
    card = (result.output / "README.md").read_text()
    assert f"orbitforge world dataset --assets 12 --views 4 --size 32 --seed 0 --shard-size 8 -o {config.data}" in card
    assert "val_fraction" in card  # a dataset setting without a flag is named, not hidden
    assert f"orbitforge train vae --data {config.data} --frames 4 --size 32 --model tiny" in card
    assert f"orbitforge train dit --data {config.data}" in card and f"--vae {trained_vae[1]} -o {out}" in card
    assert f"flow loss (EMA weights, fixed noise) at step 24: val {last['loss_val']:.4f}" in card
    assert f"reconstruction PSNR at step 24: val {trained_vae[0].metrics['psnr_val']:.2f} dB" in card
    sessions = log["sessions"]
    assert [(s["from_step"], s["to_step"], s["device"]) for s in sessions] == [(0, 24, "cpu")]
    assert f"| 0–24 | {config.data} | cpu | 1 | {torch.get_num_threads()} |" in card
    params = sum(p.numel() for p in pipe.transformer.parameters())
    assert f"| transformer | {params / 1e6:.2f} M |" in card
    for png in ("vae_loss.png", "dit_loss.png", "samples.png"):
        assert (result.output / png).is_file() and f"]({png})" in card


def test_dit_needs_a_trained_vae(config, tmp_path):
    with pytest.raises(InputError, match="train vae"):
        train_dit(config, tmp_path / "a")
    with pytest.raises(InputError, match="no trained VAE"):
        train_dit(replace(config, vae=str(tmp_path / "missing")), tmp_path / "b")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("kind", ["vae", "dit"])
def test_resume_continues_at_the_right_step_with_identical_state(kind, config, trained_vae, tmp_path):
    config = replace(config, steps=8, checkpoint_every=100, sample_every=0, vae=str(trained_vae[1]))
    train = train_vae if kind == "vae" else train_dit
    train(config, tmp_path / "once")
    first = train(config, tmp_path / "twice", stop_at=4)
    assert first.step == 4 and not (tmp_path / "twice" / first.output.name).exists()
    second = train(config, tmp_path / "twice")
    assert (second.resumed_from, second.step) == (4, 8)
    for name in ("model", "ema", "optimizer"):
        a = load_file(tmp_path / "once" / "checkpoints" / "step-0000008" / f"{name}.safetensors")
        b = load_file(tmp_path / "twice" / "checkpoints" / "step-0000008" / f"{name}.safetensors")
        assert a.keys() == b.keys() and len(a) > 0
        for key in a:
            torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=f"{name} {key}")
    steps = [e["step"] for e in json.loads((tmp_path / "twice" / "log.json").read_text())["train"]]
    assert steps == [4, 8]  # one log, no duplicated or lost entries across the resume
    _assert_no_pickles(tmp_path / "twice")


def test_cooldown_decays_the_rate_to_zero_and_can_be_added_on_resume(config, tmp_path):
    schedule = TrainConfig(model="tiny", size=32, lr=1e-3, warmup_steps=10, steps=100, cooldown_steps=40)
    rates = [learning_rate(schedule, s) for s in range(100)]
    assert rates[0] == pytest.approx(1e-4) and rates[9] == rates[60] == pytest.approx(1e-3)  # warm, then flat
    assert all(a > b for a, b in zip(rates[60:], rates[61:])) and rates[99] == pytest.approx(1e-3 / 40)
    assert learning_rate(replace(schedule, cooldown_steps=0), 99) == pytest.approx(1e-3)
    with pytest.raises(InputError, match="cooldown_steps"):
        replace(schedule, cooldown_steps=101)

    config = replace(config, steps=4, sample_every=0, log_every=1)
    train_vae(config, tmp_path / "run")  # a constant-rate run, then resumed with a cooldown for its last stretch
    train_vae(replace(config, steps=8, cooldown_steps=4), tmp_path / "run")
    logged = [e["lr"] for e in json.loads((tmp_path / "run" / "log.json").read_text())["train"]]
    assert logged[:4] == [learning_rate(config, s) for s in range(4)]
    assert logged[4:] == pytest.approx([config.lr * k / 4 for k in (4, 3, 2, 1)])


def test_a_run_goes_on_with_a_larger_dataset_and_its_card_says_which_steps_used_which(config, trained_vae, tmp_path):
    """A larger dataset of the same world keeps the smaller one's held-out assets held out (splits
    are a pure function of seed and index), so a run may resume on it; the card names both."""
    from orbitforge.gen.world.dataset import DatasetConfig, build_dataset

    larger = tmp_path / "larger"
    build_dataset(larger, DatasetConfig(assets=20, views=4, size=32, shard_size=8, val_fraction=0.3, supersample=1),
                  workers=1)
    def splits(folder):
        shards = json.loads((Path(folder) / "dataset.json").read_text())["shards"]
        return {i: shard["split"] for shard in shards for i in shard["indices"]}

    small = splits(config.data)
    assert {i: s for i, s in splits(larger).items() if i < len(small)} == small  # every asset keeps its split

    config = replace(config, steps=4, checkpoint_every=100, sample_every=0, vae=str(trained_vae[1]))
    train_dit(config, tmp_path / "run")
    result = train_dit(replace(config, data=str(larger), steps=8), tmp_path / "run")
    assert result.resumed_from == 4
    sessions = json.loads((tmp_path / "run" / "log.json").read_text())["sessions"]
    assert [(s["from_step"], s["to_step"], s["data"]) for s in sessions] == [(0, 4, config.data), (4, 8, str(larger))]
    card = (result.output / "README.md").read_text()
    assert f"--assets 12 --views 4 --size 32 --seed 0 --shard-size 8 -o {config.data}" in card
    assert f"--assets 20 --views 4 --size 32 --seed 0 --shard-size 8 -o {larger}" in card
    commands = [line for line in card.splitlines() if line.startswith("orbitforge train dit")]
    assert len(commands) == 2  # the stretch on the first dataset, then the resumed run on the larger one
    assert f"--data {config.data} " in commands[0] and "--steps 4 " in commands[0]
    assert f"--data {larger} " in commands[1] and "--steps 8 " in commands[1]
    assert "Training data for steps 0–4:" in card and "Training data for steps 4–8:" in card
    with pytest.raises(InputError, match="lr differ"):  # other settings still may not change
        train_dit(replace(config, data=str(larger), steps=12, lr=1e-4), tmp_path / "run")


def test_sigterm_stops_training_with_a_checkpoint_to_resume_from(config, tmp_path):
    """A scheduler's preemption or `kill` (background jobs ignore Ctrl-C) loses no steps."""
    import os
    import signal

    config = replace(config, steps=6, checkpoint_every=100, sample_every=0)

    def terminate_at_3(step, stats):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        train_vae(config, tmp_path / "run", progress=terminate_at_3)
    assert signal.getsignal(signal.SIGTERM) is previous  # the handler is only there while training
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-0000003"]
    assert train_vae(config, tmp_path / "run").resumed_from == 3


def test_run_folder_of_other_settings_is_refused(config, tmp_path):
    train_vae(replace(config, steps=2, sample_every=0), tmp_path / "run")
    with pytest.raises(InputError, match="lr differ"):
        train_vae(replace(config, steps=2, sample_every=0, lr=1e-4), tmp_path / "run")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        train_vae(config, tmp_path / "other")
    with pytest.raises(InputError, match="multiple of 8"):
        TrainConfig(size=20, model="tiny")
    with pytest.raises(InputError, match="world dataset"):
        TrainConfig(data=str(tmp_path / "nothing"))


# --- CLI -------------------------------------------------------------------------------------


def _cli(argv: list[str]) -> int:
    """The commands on a bare parser, as orbitforge.cli wires them."""
    from orbitforge.gen.cli_generate import add_generate_command, add_train_commands

    parser = argparse.ArgumentParser(prog="orbitforge")
    sub = parser.add_subparsers(dest="command", required=True)
    add_generate_command(sub)
    add_train_commands(sub)
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def tiny_pipeline(text_model, tmp_path_factory) -> Path:
    return make_tiny_orbit_pipeline(tmp_path_factory.mktemp("pipe") / "orbit", text_model)


def test_generate_cli_writes_clip_transforms_video_and_previews(tiny_pipeline, tmp_path, capsys):
    from PIL import Image

    run = tmp_path / "run"
    argv = ["generate", "a crimson mug with white stripes", "-o", str(run), "--model", str(tiny_pipeline),
            "--frames", "5", "--size", "24", "--steps", "2", "--elevation", "30", "--show-recaption"]
    assert _cli(argv) == 0
    printed = capsys.readouterr().out
    assert 'recaption: "a red mug with white stripes"' in printed
    frames = sorted((run / "clip" / "frames").glob("*.png"))
    assert len(frames) == 5 and Image.open(frames[0]).size == (24, 24)
    transforms = json.loads((run / "clip" / "transforms.json").read_text())
    assert len(transforms["frames"]) == 5
    assert (run / "clip" / "clip.mp4").stat().st_size > 0
    assert (run / "preview" / "contact_sheet.png").is_file() and (run / "preview" / "turntable.gif").is_file()
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["inputs"]["caption"] == "a red mug with white stripes"
    assert manifest["inputs"]["attributes"]["category"] == "mug"
    assert _cli(argv) == 0 and "skipped" in capsys.readouterr().out  # the same command resumes


def test_generate_to_asset_goes_on_through_splats_and_export(tiny_pipeline, tmp_path, capsys):
    """The clip's cameras are known, so --to-asset needs no COLMAP: clip -> (splats) -> validated GLB."""
    run = tmp_path / "run"
    argv = ["generate", "a red mug", "-o", str(run), "--model", str(tiny_pipeline), "--frames", "8", "--size", "32",
            "--steps", "2", "--no-recaption", "--to-asset", "--splat-steps", "40", "--faces", "2000", "--formats"]
    assert _cli(argv + ["glb"]) == 0
    manifest = json.loads((run / "run.json").read_text())
    # a generated clip's mesh is its visual hull (export.mesh.mesh_from_silhouettes), not fused splat depth,
    # so a mesh-only export trains no splats at all
    assert {"clip", "asset"} <= set(manifest["stages"]) and not {"poses", "splats"} & set(manifest["stages"])
    assert manifest["stages"]["asset"]["config"]["mesh_source"] == "mesh_from_silhouettes"
    assert manifest["stages"]["asset"]["depends_on"] == ["clip"]
    validation = json.loads((run / "asset" / "validation.json").read_text())
    assert (run / "asset" / "asset.glb").stat().st_size > 0 and validation["errors"] == 0
    printed = capsys.readouterr().out
    assert "splats: not needed" in printed and "asset: " in printed

    assert _cli(argv + ["glb,ply"]) == 0  # a splat format: splats are trained, the asset re-exported
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["stages"]["splats"]["metrics"]["steps"] == 40
    assert manifest["stages"]["asset"]["depends_on"] == ["splats", "clip"]
    assert (run / "asset" / "splats.ply").stat().st_size > 0
    capsys.readouterr()
    assert _cli(argv + ["glb,ply"]) == 0 and capsys.readouterr().out.count("skipped") == 3  # all three resume


def test_generate_cli_errors_are_one_line(tiny_pipeline, tmp_path, monkeypatch):
    monkeypatch.delenv("ORBITFORGE_MODEL", raising=False)
    with pytest.raises(InputError) as excinfo:
        _cli(["generate", "a mug", "-o", str(tmp_path / "run"), "--model", str(tmp_path / "none")])
    message = str(excinfo.value)
    assert "\n" not in message and "orbitforge train dit" in message and "--model" in message
    assert not (tmp_path / "run").exists()
    with pytest.raises(InputError, match="image not found"):
        _cli(["generate", "a mug", "-o", str(tmp_path / "run"), "--model", str(tiny_pipeline),
              "--image", str(tmp_path / "no.png")])
    with pytest.raises(InputError, match="multiple of 8"):
        _cli(["generate", "a mug", "-o", str(tmp_path / "run"), "--model", str(tiny_pipeline), "--size", "20"])


def test_generate_cli_takes_an_image(tiny_pipeline, tmp_path):
    from PIL import Image

    image = tmp_path / "object.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(image)
    argv = ["generate", "a vase", "-o", str(tmp_path / "run"), "--model", str(tiny_pipeline), "--image", str(image),
            "--steps", "1", "--no-recaption"]
    assert _cli(argv) == 0
    assert len(list((tmp_path / "run" / "clip" / "frames").glob("*.png"))) == 4


def test_train_cli_runs_and_resumes(dataset, text_model, tmp_path, capsys):
    argv = ["train", "vae", "--data", dataset, "-o", str(tmp_path / "vae"), "--model", "tiny", "--size", "32",
            "--frames", "4", "--text-model", text_model, "--batch-size", "2", "--steps", "2", "--sample-every", "0",
            "--eval-assets", "1", "--checkpoint-every", "1"]
    assert _cli(argv + ["--stop-at", "1"]) == 0
    out = capsys.readouterr().out
    assert "stopped at step 1 of 2" in out
    assert "train vae: step 1 of 2, loss " in out  # not a terminal: a line per checkpoint instead of a bar
    assert _cli(argv) == 0
    assert "from step 1" in capsys.readouterr().out
    assert (tmp_path / "vae" / "vae" / "diffusion_pytorch_model.safetensors").is_file()
    sessions = json.loads((tmp_path / "vae" / "log.json").read_text())["sessions"]
    assert [(s["from_step"], s["to_step"]) for s in sessions] == [(0, 1), (1, 2)]  # each invocation's compute


def test_procedural_data_trains_without_a_dataset(text_model, tmp_path):
    from orbitforge.gen.train import _ProceduralOrbits

    source = _ProceduralOrbits(16, 2)
    a, b = source.batch(5, 2, seed=0), source.batch(5, 2, seed=0)
    np.testing.assert_array_equal(a.frames, b.frames)  # a pure function of (seed, batch index)
    assert a.captions == b.captions and a.frames.shape == (2, 2, 16, 16, 3)
    assert not np.array_equal(source.batch(6, 2, seed=0).frames, a.frames)
    config = TrainConfig(frames=2, size=16, model="tiny", text_model=text_model, batch_size=2, steps=2,
                         sample_every=0, eval_assets=1, warmup_steps=1)
    result = train_vae(config, tmp_path / "vae")
    assert result.step == 2 and "psnr_heldout" in result.metrics


@pytest.mark.slow  # a spawned worker imports torch and diffusers afresh: ~30 s on a busy 2-core machine
def test_procedural_batches_from_worker_processes_match_inline_ones():
    from orbitforge.gen.train import _batches, _ProceduralOrbits

    config = TrainConfig(frames=2, size=16, model="tiny", batch_size=2, workers=1)
    source = _ProceduralOrbits(config.size, config.frames)
    inline = _batches(source, 3, replace(config, workers=0), 2, rank=0, world=1)
    spawned = _batches(source, 3, config, 2, rank=0, world=1)
    for _ in range(2):
        a, b = next(inline), next(spawned)
        np.testing.assert_array_equal(a.frames, b.frames)
        assert a.captions == b.captions
