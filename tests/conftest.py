"""Shared fixtures: the third-party data beside the checkout (../shared/data), small assets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ORBITFORGE_TEST_DATA", REPO.parent / "shared" / "data"))


def data_path(relative: str) -> Path:
    """A file under ../shared/data, or a skip that says where it was looked for."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"needs the shared test data: {path} not found (set ORBITFORGE_TEST_DATA to its folder)")
    return path


@pytest.fixture
def spot_glb() -> Path:
    return data_path("assets/spot/spot_textured.glb")


def make_tiny_bert(folder: Path, words: list[str], *, max_positions: int = 64) -> str:
    """A 1-layer, 16-d BERT with a word-level tokenizer over `words`, saved with safetensors:
    a local text model for tests (the product never downloads one)."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizer

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *words]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizer(vocab_file=str(folder / "vocab.txt")).save_pretrained(folder)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=max_positions)).save_pretrained(folder)
    return str(folder)


def make_tiny_orbit_pipeline(folder: Path, text_model: str) -> Path:
    """A 2-layer orbit DiT with random (perturbed) weights and the tiny VAE, saved to `folder`:
    its clips are noise, but every stage after generation runs on them."""
    import torch
    from diffusers import FlowMatchEulerDiscreteScheduler

    from orbitforge.gen.dit import OrbitDiT
    from orbitforge.gen.pipeline import OrbitVideoPipeline
    from orbitforge.gen.vae import make_vae

    torch.manual_seed(0)
    transformer = OrbitDiT(in_channels=4, patch_size=1, width=32, num_layers=2, num_heads=2, text_dim=16)
    with torch.no_grad():
        for p in transformer.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    pipe = OrbitVideoPipeline(transformer, make_vae("tiny"), FlowMatchEulerDiscreteScheduler(), text_model=text_model,
                              default_frames=4, default_size=16)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread; on a busy 2-core machine two threads spin-wait
    on each other (a pipeline call took ~2 s with 2 threads, ~0.1 s with 1)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
