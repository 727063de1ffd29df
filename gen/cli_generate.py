"""`orbitforge generate` and `orbitforge train vae|dit`: the orbit model on the command line.

    orbitforge generate "a red vase with white stripes" -o RUN [--model DIR] [--image PATH]
        [--elevation 20] [--frames T] [--size S] [--steps 25] [--guidance 3] [--guidance-rescale 0] [--seed 0]
        [--show-recaption] [--no-recaption] [--to-asset [--splat-steps N] [--engine unity] ...]
    orbitforge train vae --data DIR|procedural -o OUT [--model cpu] [--size 64] [--steps N] ...
    orbitforge train dit --data DIR|procedural --vae VAE_OUT -o OUT [...]

`generate` writes RUN/clip (frames, transforms.json with the known cameras, clip.mp4) through
`RunDir.run_stage`, so re-running the same command skips the work, and RUN/preview (contact
sheet, turntable GIF).  The prompt is first rewritten into the model's caption space
(`gen.recaption`).  `train` is a thin shell over `gen.train`; re-running it resumes.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import asdict, fields
from pathlib import Path

# one definition of the CLI's number checks and of the splat/export options and steps
from orbitforge.cli import (_add_export_arguments, _add_splat_arguments, _export_config, _export_step,
                            _positive_int, _splat_step)
from orbitforge.errors import InputError

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / "checkpoints" / "orbit-starter"
"""Where the starter checkpoint lives in a checkout; $ORBITFORGE_MODEL overrides it."""
MODEL_ENV = "ORBITFORGE_MODEL"


def add_generate_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `generate` on the main parser's subcommands (called from orbitforge.cli)."""
    p = subparsers.add_parser("generate", help="text (and optionally an image) to an orbit clip with known cameras")
    p.add_argument("prompt", help='what to make, e.g. "a red vase with white stripes"')
    p.add_argument("-o", "--output", required=True, type=Path, help="run folder to create or resume")
    p.add_argument("--model", type=Path, default=None,
                   help=f"orbit pipeline folder (a `train dit` output works); default ${MODEL_ENV} or {DEFAULT_MODEL}")
    p.add_argument("--image", type=Path, default=None, help="image of the object, seen from the first camera (image-to-3D)")
    p.add_argument("--elevation", type=float, default=20.0, help="camera elevation in degrees (default 20)")
    p.add_argument("--frames", type=_positive_int, default=None, help="views in the orbit (default: the model's)")
    p.add_argument("--size", type=_positive_int, default=None, help="square frame side in pixels (default: the model's)")
    p.add_argument("--steps", type=_positive_int, default=25, help="sampler steps (default 25)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance on the text (default 3)")
    p.add_argument("--guidance-rescale", type=float, default=0.0,
                   help="0-1: pull strongly guided colours back toward the unguided spread (default 0: off)")
    p.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--show-recaption", action="store_true", help="print how the prompt was rewritten for the model")
    p.add_argument("--no-recaption", action="store_true", help="condition on the prompt exactly as given")
    p.add_argument("--to-asset", action="store_true",
                   help="go on to splats (with the clip's known cameras) and a validated export in RUN/asset")
    group = p.add_argument_group("with --to-asset: splats and export")
    _add_splat_arguments(group, steps_option="--splat-steps")
    _add_export_arguments(group)
    p.set_defaults(func=_cmd_generate)


def resolve_model(path: Path | None) -> Path:
    """The pipeline folder to load: --model, else $ORBITFORGE_MODEL, else the starter checkpoint."""
    chosen = path or (Path(os.environ[MODEL_ENV]) if os.environ.get(MODEL_ENV) else DEFAULT_MODEL)
    for candidate in (chosen, chosen / "pipeline"):
        if (candidate / "model_index.json").is_file():
            return candidate
    raise InputError(f"no orbit model at {chosen} (no model_index.json); train one with `orbitforge train vae` then "
                     f"`orbitforge train dit` and pass its output with --model, or put a checkpoint at {DEFAULT_MODEL}")


def _read_image(path: Path):
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))  # writable: torch warns on read-only arrays
    except (FileNotFoundError, IsADirectoryError):
        raise InputError(f"image not found: {path}") from None
    except UnidentifiedImageError:
        raise InputError(f"{path} is not an image Pillow can read; pass a PNG or JPEG") from None


def _cmd_generate(args: argparse.Namespace) -> int:
    import torch

    from orbitforge.clip import Clip
    from orbitforge.gen.pipeline import OrbitSettings, OrbitVideoPipeline
    from orbitforge.rundir import RunDir
    from orbitforge.viewers.preview import contact_sheet, save_image, save_turntable_gif

    # 1. everything that can fail on bad input, before the run folder is touched
    if not args.prompt.strip():
        raise InputError('the prompt is empty; describe the object, e.g. "a red vase with white stripes"')
    model = resolve_model(args.model)
    export_config = _export_config(args) if args.to_asset else None  # checked before the clip, not after
    image = _read_image(args.image) if args.image is not None else None
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    pipe = OrbitVideoPipeline.from_pretrained(model).to(device)
    pipe.set_progress_bar_config(desc="generate", unit="step", disable=None)
    settings = OrbitSettings(elevation_deg=args.elevation)
    frames = args.frames or pipe.config.default_frames
    size = args.size or pipe.config.default_size
    caption, attributes = args.prompt, None
    if not args.no_recaption:
        from orbitforge.gen.recaption import recaptioner_for

        rewrite = recaptioner_for(pipe)(args.prompt)
        caption, attributes = rewrite.caption, rewrite.attributes
        if args.show_recaption:
            print(rewrite.show())
    if size % pipe.spatial_multiple:  # checked before any file is written
        m = pipe.spatial_multiple
        raise InputError(f"--size {size} is not a multiple of {m} px (this model's VAE x patch); try "
                         f"{max(m, size // m * m)} or {size // m * m + m}")

    # 2. the clip stage: frames, transforms.json (known cameras), clip.mp4
    run = RunDir.open(args.output)
    run.record(command="generate", inputs={"prompt": args.prompt, "caption": caption, "attributes": attributes,
                                           "model": str(model.resolve()),
                                           "image": str(args.image.resolve()) if args.image else None})
    config = {"caption": caption, "elevation_deg": args.elevation, "frames": frames, "size": size,
              "steps": args.steps, "guidance": args.guidance,
              "guidance_rescale": args.guidance_rescale, "model": str(model.resolve())}
    weights = sorted(str(p) for p in model.rglob("*.safetensors"))

    def stage(tmp: Path) -> dict:
        out = pipe(caption, image=image, cameras=settings, num_frames=frames, height=size, width=size,
                   num_inference_steps=args.steps, guidance_scale=args.guidance,
                   guidance_rescale=args.guidance_rescale, generator=torch.Generator(device).manual_seed(args.seed))
        clip = out.clip
        Clip(clip.frames, clip.cameras, fps=clip.fps, source=args.prompt).save(tmp)
        return {"frames": len(clip), "size": size, "caption": caption}

    inputs = weights + ([str(args.image)] if args.image is not None else [])
    result = run.run_stage("clip", stage, config=config, inputs=inputs, seed=args.seed)
    # 3. previews, redrawn whenever the clip changed
    sheet_path, gif_path = run.root / "preview" / "contact_sheet.png", run.root / "preview" / "turntable.gif"
    if not result.skipped or not (sheet_path.exists() and gif_path.exists()):
        clip = Clip.load(result.path)
        save_image(contact_sheet(clip.frames, labels=[caption] + [""] * (len(clip) - 1), tile=max(96, min(size, 160))),
                   sheet_path)
        save_turntable_gif(clip.frames, gif_path, fps=clip.fps)
    state = "already complete, skipped" if result.skipped else f"done in {result.seconds:.1f} s"
    print(f"clip: {state} -> {result.path} ({frames} frames, {size} px, \"{caption}\")")
    print(f"previews: {sheet_path}, {gif_path}")
    if args.to_asset:  # the clip's cameras are known: no COLMAP
        from orbitforge.export.stage import mesh_source, needs_splats

        source = mesh_source(run)  # the visual hull (export.mesh)
        if needs_splats(source, export_config.formats):
            _splat_step(run, args)
        else:
            print("splats: not needed for --formats " + ",".join(export_config.formats) + " (the mesh is the "
                  "clip's visual hull); skipped")
        asset = _export_step(run, export_config, source=source)
        print(f"asset: {asset.path} (previews in {run.root / 'preview'})")
    return 0


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

_TRAIN_FLAGS = ("data", "frames", "size", "model", "text_model", "batch_size", "lr", "warmup_steps", "steps",
                "cooldown_steps", "ema_decay", "mixed_precision", "checkpoint_every", "sample_every", "log_every", "seed",
                "workers", "eval_assets")
"""TrainConfig fields exposed as --flags (their help is the field's docstring default)."""


def train_command(recorded: dict, output: str | Path) -> str:
    """The `orbitforge train` command line that re-creates a run from its recorded config.json:
    the flags that differ from the defaults, plus the ones a reader always wants to see."""
    from orbitforge.gen.config import TrainConfig

    default = asdict(TrainConfig())
    always = ("data", "size", "frames", "model", "steps")
    parts = ["orbitforge", "train", recorded["kind"]]
    for name in _TRAIN_FLAGS:
        if name in recorded and (name in always or recorded[name] != default[name]):
            parts += ["--" + name.replace("_", "-"), str(recorded[name])]
    for name in ("vae", "decoder_from"):
        if recorded.get(name):
            parts += ["--" + name.replace("_", "-"), str(recorded[name])]
    return shlex.join(parts + ["-o", str(output)])


def add_train_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register `train vae` and `train dit` on the main parser's subcommands."""
    train = subparsers.add_parser("train", help="train the orbit model's VAE or transformer (resumable)")
    sub = train.add_subparsers(dest="train_command", required=True, metavar="TRAIN_COMMAND")
    for kind, text in (("vae", "train the per-frame VAE on world renders -> OUT/vae"),
                       ("dit", "train the orbit transformer on a VAE's latents -> OUT/pipeline")):
        p = sub.add_parser(kind, help=text)
        _add_train_arguments(p, kind)
        p.set_defaults(func=_cmd_train, train_kind=kind)


def _field_docs(cls) -> dict[str, str]:
    """The docstring under each dataclass field, first sentence: the one place a field is described."""
    import ast
    import inspect

    body = ast.parse(inspect.getsource(cls)).body[0].body
    docs = {}
    for node, after in zip(body, body[1:]):
        if isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant):
            docs[node.target.id] = " ".join(str(after.value.value).split()).split("; ")[0].split(". ")[0].rstrip(".")
    return docs


def _add_train_arguments(p: argparse.ArgumentParser, kind: str) -> None:
    from orbitforge.gen.config import MODEL_PRESETS, TrainConfig  # light: no torch at parse time

    d = TrainConfig()
    types = {f.name: f.type for f in fields(TrainConfig)}
    docs = _field_docs(TrainConfig)
    p.add_argument("-o", "--output", required=True, type=Path, help="run folder to create or resume")
    for name in _TRAIN_FLAGS:
        flag = "--" + name.replace("_", "-")
        default = getattr(d, name)
        kwargs = {"default": default, "help": f"{docs.get(name, '')} (default {default})".replace("%", "%%")}
        if name == "model":
            kwargs["choices"] = tuple(MODEL_PRESETS)
        elif name == "mixed_precision":
            kwargs["choices"] = ("auto", "no", "bf16")
        elif isinstance(default, bool) or "int" in str(types[name]):
            kwargs["type"] = int
        elif isinstance(default, float):
            kwargs["type"] = float
        p.add_argument(flag, **kwargs)
    if kind == "dit":
        p.add_argument("--vae", required=True, help="a `train vae` output folder (or its vae/ folder)")
    else:
        p.add_argument("--decoder-from", default=None, metavar="VAE",
                       help=f"{docs['decoder_from'].removeprefix('VAE only: ')}; e.g. a pipeline's vae/ folder (default: train a new VAE)")
    p.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--stop-at", type=_positive_int, default=None,
                   help="stop with a checkpoint at this step (a time-boxed chunk); re-run to go on")


def _cmd_train(args: argparse.Namespace) -> int:
    import torch
    from tqdm import tqdm

    from orbitforge.gen.train import TrainConfig, train_dit, train_vae

    if args.threads:
        torch.set_num_threads(args.threads)
    values = {name: getattr(args, name) for name in _TRAIN_FLAGS}
    extra = {"vae": args.vae} if args.train_kind == "dit" else {"decoder_from": args.decoder_from}
    config = TrainConfig(**values, **extra)
    train = train_vae if args.train_kind == "vae" else train_dit
    with tqdm(total=config.steps, desc=f"train {args.train_kind}", unit="step", disable=None) as bar:
        def progress(step: int, stats: dict) -> None:
            bar.n = step
            bar.set_postfix(loss=f"{stats['loss']:.4f}", refresh=False)
            bar.update(0)
            if bar.disable and step % config.checkpoint_every == 0:  # a log file, not a terminal: a line now and then
                print(f"train {args.train_kind}: step {step} of {config.steps}, loss {stats['loss']:.4f}, "
                      f"learning rate {stats['lr']:.3g}", flush=True)

        result = train(config, args.output, progress=progress, stop_at=args.stop_at)
    metrics = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in result.metrics.items())
    if result.step < config.steps:
        print(f"train {args.train_kind}: stopped at step {result.step} of {config.steps} (checkpoint in "
              f"{result.out_dir / 'checkpoints'}); re-run the same command to go on. {metrics}")
    else:
        print(f"train {args.train_kind}: {config.steps} steps done (from step {result.resumed_from}) -> "
              f"{result.output}; held-out: {metrics}")
    return 0
