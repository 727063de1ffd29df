"""An attribute probe: a small CNN that reads category and main colour back from rendered frames.

It answers "does this clip show what its prompt asked for?" for the orbit model: `score_clip`
runs the probe on a clip's frames and reports the share whose predicted category and main colour
match the prompt.  It is trained on a world dataset's `train` split and measured on `val` (seen
colour-category pairs, new assets) and `test` (colour-category pairs training never saw).

The network (`probe_net.ProbeNet`) reads category from shape and main colour from the pixels of
the part an attention map picks, which is what lets it name colours on categories it never saw
in that colour; `probe_train.py` trains and evaluates it.  This module imports torch only when a
probe is built, loaded or run, so the CLI and the configs stay light.

Weights are saved with `safetensors.torch.save_file`, the vocabularies and config in its metadata;
loading never unpickles anything.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, NamedTuple, Sequence

import numpy as np

from orbitforge.errors import InputError
from orbitforge.gen.world.categories import CATEGORY_NAMES
from orbitforge.gen.world.palette import COLOUR_NAMES

if TYPE_CHECKING:
    from orbitforge.gen.world.probe_net import ProbeNet

logger = logging.getLogger(__name__)

PROBE_FORMAT = "orbitforge-world-probe"
PROBE_VERSION = 1

Progress = Callable[[str, int, int], None]
"""progress(stage, done, total): stage "train" (counted in batches)."""


@dataclass(frozen=True)
class ProbeNetConfig:
    """Shape of the network; saved with the weights so `AttributeProbe.load` can rebuild it."""

    image_size: int = 64
    """Frames are area-resized to this square side before the network (a multiple of 16)."""
    width: int = 16
    """Channels of the first stage; later stages use 2x, 4x and 8x."""
    attention_heads: int = 4
    """Colour read-out maps, each pooling its own histogram (a part, its lit side, its pattern...)."""
    colour_features: int = 32
    """Learned colour prototypes: each pixel is softly assigned to them, and each attention map
    pools the assignments into a histogram."""


@dataclass(frozen=True)
class ProbeConfig:
    """How to train the probe (the network's shape is `net`)."""

    epochs: int = 10
    """Passes over the train assets (each shown `views_per_asset` times per pass)."""
    views_per_asset: int = 2
    """Times each train asset is shown per epoch, in views drawn afresh each epoch from its orbit."""
    batch_size: int = 64
    """Frames per optimiser step."""
    learning_rate: float = 3e-3
    """Peak of the one-cycle schedule (AdamW)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    max_shift_px: int = 4
    """Random translation (wrapping) of each batch, in pixels at `net.image_size`: framing varies."""
    ema_decay: float | None = 0.998
    """The probe keeps an exponential moving average of the weights (and BatchNorm statistics)
    with this decay per step; None keeps the last step's weights.  Measured neutral on held-out
    accuracy at the default settings (one run each way); kept so that the result depends less on
    the last few batches."""
    seed: int = 0
    """Initial weights, batch order and augmentation all derive from it."""
    threads: int | None = 1
    """torch CPU threads while training; None keeps torch's default (one per core).  1 by default:
    these convolutions are small, and on a busy 2-core machine two OpenMP threads that wait for
    each other at every barrier measured 10-30x slower than one thread."""
    net: ProbeNetConfig = field(default_factory=ProbeNetConfig)
    """The network's shape."""

    def __post_init__(self) -> None:
        for name in ("epochs", "views_per_asset", "batch_size"):
            if getattr(self, name) < 1:
                raise InputError(f"probe {name} must be at least 1, got {getattr(self, name)}")
        if self.net.image_size % 16 or self.net.image_size < 16:
            raise InputError(f"probe image size must be a multiple of 16, got {self.net.image_size}")


class ProbePrediction(NamedTuple):
    """What the probe sees in one frame, with softmax confidences in [0, 1]."""

    category: str
    colour: str
    confidences: tuple[float, float]
    """(category confidence, colour confidence)."""


class ClipScore(NamedTuple):
    """Share of a clip's frames whose prediction matches the prompt."""

    category: float
    colour: float
    both: float


class AttributeProbe:
    """A trained probe: the network plus its label vocabularies.

    Attributes:
        net: the ProbeNet, in eval mode, on the CPU.
        categories, colours: label names, in the order of the heads' outputs.
        config: the network's shape.
    """

    def __init__(self, net: "ProbeNet", categories: Sequence[str], colours: Sequence[str], config: ProbeNetConfig):
        self.net = net.eval()
        self.categories = tuple(categories)
        self.colours = tuple(colours)
        self.config = config

    def probabilities(self, frames: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """Softmax outputs of both heads.

        Args:
            frames: (N, H, W, 3) uint8 sRGB renders on a white background, square; any size
                (area-resized to the probe's image size).
        Returns:
            (category probabilities (N, len(categories)), colour probabilities (N, len(colours))),
            float32, in the order of `categories` and `colours`.
        """
        import torch

        from orbitforge.gen.world.probe_net import to_input

        frames = _check_frames(frames)
        cat_probs, col_probs = [], []
        for start in range(0, len(frames), batch_size):
            with torch.no_grad():
                cat_logits, col_logits = self.net(to_input(frames[start:start + batch_size], self.config.image_size))
            cat_probs.append(cat_logits.softmax(-1).numpy())
            col_probs.append(col_logits.softmax(-1).numpy())
        return np.concatenate(cat_probs), np.concatenate(col_probs)

    def predict(self, frames: np.ndarray, batch_size: int = 256) -> list[ProbePrediction]:
        """Category and main colour of each frame ((N, H, W, 3) uint8, as for `probabilities`).

        Returns:
            N ProbePrediction(category, colour, (category confidence, colour confidence)).
        """
        cat_probs, col_probs = self.probabilities(frames, batch_size)
        cats, cols = cat_probs.argmax(1), col_probs.argmax(1)  # [N], [N]
        return [ProbePrediction(self.categories[c], self.colours[o], (float(cat_probs[k, c]), float(col_probs[k, o])))
                for k, (c, o) in enumerate(zip(cats, cols))]

    def score_clip(self, frames: np.ndarray, target) -> ClipScore:
        """Whether a clip follows its prompt: see `score_clip`."""
        category, colour = _expected(target)
        predictions = self.predict(frames)
        cat_ok = np.array([p.category == category for p in predictions])
        col_ok = np.array([p.colour == colour for p in predictions])
        return ClipScore(float(cat_ok.mean()), float(col_ok.mean()), float((cat_ok & col_ok).mean()))

    def save(self, path: Path | str) -> None:
        """Write the weights as safetensors, the vocabularies and net config in its metadata."""
        from safetensors.torch import save_file

        info = {"format": PROBE_FORMAT, "version": PROBE_VERSION, "categories": list(self.categories),
                "colours": list(self.colours), "net": asdict(self.config)}
        path = Path(path)
        tmp = path.with_name(f".{path.name}.partial")
        state = {k: v.detach().contiguous() for k, v in self.net.state_dict().items()}
        save_file(state, str(tmp), metadata={"orbitforge": json.dumps(info, sort_keys=True)})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path | str) -> AttributeProbe:
        """Read a probe written by `save`.  Only safetensors is accepted (no pickle, no torch.load)."""
        from safetensors import SafetensorError, safe_open

        from orbitforge.gen.world.probe_net import ProbeNet

        path = Path(path)
        if not path.is_file():
            raise InputError(f"probe file not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                metadata = f.metadata() or {}
                state = {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise InputError(f"{path} is not a safetensors file ({exc}); give a probe written by "
                             "`orbitforge world probe` (pickled checkpoints are never loaded)") from None
        info = json.loads(metadata.get("orbitforge", "{}"))
        if info.get("format") != PROBE_FORMAT:
            raise InputError(f"{path} is a safetensors file but not an orbitforge probe (no {PROBE_FORMAT!r} metadata)")
        config = ProbeNetConfig(**info["net"])
        net = ProbeNet(config, len(info["categories"]), len(info["colours"]))
        net.load_state_dict(state)
        return cls(net, info["categories"], info["colours"], config)


def train_probe(dataset_dir: Path | str, config: ProbeConfig = ProbeConfig(), *,
                progress: Progress | None = None) -> tuple[AttributeProbe, dict]:
    """Train a probe on a dataset's train split and measure it on val and test.

    See `probe_train.train_probe` for the arguments and the metrics returned."""
    from orbitforge.gen.world.probe_train import train_probe as _train

    return _train(dataset_dir, config, progress=progress)


def score_clip(frames: np.ndarray, target, *, probe: AttributeProbe) -> ClipScore:
    """Whether a clip follows its prompt: the share of frames whose predicted category, main
    colour, and both, match `target`.

    Args:
        frames: (T, H, W, 3) uint8 sRGB frames of one clip.
        target: an `AssetAttributes`, its `to_dict()` form, or a caption.  A caption must name
            exactly one category; its first colour word is the main colour (world captions
            always name the main colour first).
        probe: a trained AttributeProbe.
    """
    return probe.score_clip(frames, target)


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim == 3:
        frames = frames[None]
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"frames must be (N, H, W, 3) uint8, got {frames.shape} {frames.dtype}")
    return frames


def _expected(target) -> tuple[str, str]:
    """(category, main colour) a clip should show, from attributes or a caption."""
    from orbitforge.gen.world.vocabulary import categories_in, colours_in

    if isinstance(target, str):
        categories, colours = sorted(set(categories_in(target))), colours_in(target)
        if len(categories) != 1 or not colours:
            raise InputError(f"caption must name one category and a colour, found categories {categories} and "
                             f"colours {colours} in {target!r}")
        return categories[0], colours[0]
    if isinstance(target, dict):
        return target["category"], target["main_colour"]
    return target.category, target.main_colour


def default_vocabularies() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(categories, colours) in the world's fixed order: the probe's output labels."""
    return CATEGORY_NAMES, COLOUR_NAMES
