"""The `orbitforge` command: parses, builds configs, calls stage functions, shows progress.

Errors from the library arrive as `OrbitforgeError` and are printed here, once, as one line
with a hint; `--debug` shows the full traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from orbitforge import __version__
from orbitforge.errors import InputError, OrbitforgeError
from orbitforge.signals import terminate_as_interrupt

logger = logging.getLogger("orbitforge.cli")

BUILTIN_PREFIX = "builtin:"


def _thread_count(text: str) -> int:
    """At least 1, or -1 for every core."""
    return -1 if text.strip() == "-1" else _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


_NAMED_COLOURS = {"white": (1.0, 1.0, 1.0), "black": (0.0, 0.0, 0.0)}


def _background(text: str) -> tuple[float, float, float] | None:
    """--background: auto (None: the frames' border colour), white, black, or R,G,B in 0-1."""
    if text == "auto" or text in _NAMED_COLOURS:
        return _NAMED_COLOURS.get(text)
    try:
        rgb = tuple(float(c) for c in text.split(","))
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0.0 <= c <= 1.0 for c in rgb):
        raise argparse.ArgumentTypeError(f"expected auto, white, black or R,G,B in 0-1, got {text!r}")
    return rgb


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the full usage is one `--help` away)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(prog="orbitforge", description="Text, an image or a video in; a game-ready 3D asset out.")
    parser.add_argument("--version", action="version", version=f"orbitforge {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug logs)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("render-orbit", help="render a ground-truth orbit clip of a mesh asset")
    p.add_argument("asset", help=f"GLB/glTF/OBJ/PLY file, or {BUILTIN_PREFIX}NAME for a built-in asset (globe, toy)")
    p.add_argument("-o", "--output", required=True, type=Path, help="run folder to create or resume")
    p.add_argument("--frames", type=_positive_int, default=48, help="number of views (default 48)")
    p.add_argument("--size", type=_positive_int, default=256, help="square image side in pixels (default 256)")
    p.add_argument("--elevation", type=float, default=20.0, help="camera elevation in degrees (default 20)")
    p.add_argument("--fov", type=float, default=40.0, help="vertical field of view in degrees (default 40)")
    p.add_argument("--radius", type=float, default=None, help="camera distance (default: frame the asset)")
    p.add_argument("--shading", choices=("lit", "unlit"), default="lit", help="lit (default) or unlit albedo")
    p.add_argument("--supersample", type=_positive_int, default=2, help="antialiasing factor (default 2)")
    p.set_defaults(func=_cmd_render_orbit)

    p = sub.add_parser("poses", help="camera poses of a video, a photo folder or a run's clip (pycolmap)")
    p.add_argument("input", type=Path, help="video file, folder of photos, or a run folder that has a clip")
    p.add_argument("-o", "--output", type=Path, default=None, help="run folder (default: INPUT when it is a run folder)")
    _add_ingest_and_poses_arguments(p)
    p.set_defaults(func=_cmd_poses)

    p = sub.add_parser("splat", help="train Gaussian splats on a run's posed clip (gsplat on CUDA, CPU otherwise)")
    p.add_argument("run", type=Path, help="run folder after `poses`, or after `render-orbit` (known cameras)")
    _add_splat_arguments(p)
    p.set_defaults(func=_cmd_splat)

    p = sub.add_parser("nerf", help="train a NeRF with nerfstudio (its own environment) on a run's posed clip")
    p.add_argument("run", type=Path, help="run folder after `poses`, or after `render-orbit`/`generate` (known cameras)")
    p.add_argument("--method", choices=("nerfacto", "nerfacto-big", "nerfacto-huge"), default="nerfacto",
                   help="nerfstudio method (default nerfacto)")
    p.add_argument("--steps", type=_positive_int, default=2000, help="training iterations (default 2000)")
    p.add_argument("--rays", type=_positive_int, default=4096, help="rays per iteration (default 4096)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="auto: CUDA when visible (default)")
    p.add_argument("--depth-size", type=_positive_int, default=None,
                   help="side of the depth renders the mesh is fused from (default as for splats; smaller is faster on a CPU)")
    p.add_argument("--ns-arg", dest="ns_args", action="append", default=[], metavar="ARG",
                   help="extra ns-train argument, passed through as is; repeat for each and use = for dashes, "
                        "e.g. --ns-arg=--pipeline.model.num-nerf-samples-per-ray --ns-arg=24")
    p.add_argument("--export", action="store_true", help="then export the mesh formats from the NeRF (`export --from nerf`)")
    p.set_defaults(func=_cmd_nerf)

    p = sub.add_parser("export", help="write engine-ready, validated GLB / USD / splat files into RUN/asset")
    p.add_argument("run", type=Path, help="run folder (after `splat` or `nerf`; or any folder when --mesh is given)")
    _add_export_arguments(p)
    p.add_argument("--mesh", type=Path, default=None, help="take the mesh from this file instead of extracting it from the splats")
    # the sources are export.stage.MESH_SOURCES, spelled out to keep the parser's imports light
    p.add_argument("--from", dest="source", choices=("auto", "splats", "nerf", "hull"), default="auto",
                   help="what the mesh is made from: splats, nerf, hull (the clip's silhouettes: solid where views "
                        "disagree, but concavities filled), or auto (hull for a generated clip, else splats when the "
                        "run has them, else nerf)")
    p.set_defaults(func=_cmd_export)

    p = sub.add_parser("reconstruct", help="video or photos to a validated asset: ingest, poses, splats, export")
    p.add_argument("input", type=Path, help="video file, folder of photos, or a run folder that has a clip")
    p.add_argument("-o", "--output", type=Path, default=None, help="run folder (default: INPUT when it is a run folder)")
    _add_ingest_and_poses_arguments(p)
    _add_splat_arguments(p)
    _add_export_arguments(p)
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser("info", help="summarise a run folder")
    p.add_argument("run", type=Path, help="run folder")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("view", help="live 3D viewer of a run in the browser (viser): frames, cameras, points, splats, mesh")
    p.add_argument("run", type=Path, help="run folder, finished or still running (the viewer follows it)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    p.add_argument("--port", type=int, default=8080, help="first port to try; the next free one is taken when busy (default 8080)")
    p.add_argument("--max-splats", type=_positive_int, default=500_000, help="Gaussians sent to the browser, the most opaque first (default 500000)")
    p.add_argument("--no-follow", dest="follow", action="store_false", help="load the run once instead of polling it for changes")
    p.set_defaults(func=_cmd_view)

    p = sub.add_parser("page", help="write RUN/preview/viewer.html: a static page that opens from disk, no server")
    p.add_argument("run", type=Path, help="run folder (any stage: clip, poses, splats and/or asset)")
    p.add_argument("--max-splats", type=_positive_int, default=400_000,
                   help="Gaussians embedded in the page; the most visible are kept (default 400000)")
    p.set_defaults(func=_cmd_page)

    from orbitforge.gen.cli_generate import add_generate_command, add_train_commands
    from orbitforge.gen.world.cli import add_world_commands

    add_generate_command(sub)
    add_train_commands(sub)
    add_world_commands(sub)
    from orbitforge.batch import add_batch_command

    add_batch_command(sub)
    return parser


def _add_ingest_and_poses_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `poses` (and `reconstruct`)."""
    p.add_argument("--frames", type=_positive_int, default=80, help="frames kept from a video (default 80)")
    p.add_argument("--max-side", type=_positive_int, default=1024, help="longer image side after resizing (default 1024)")
    p.add_argument("--matching", choices=("auto", "exhaustive", "sequential"), default="auto",
                   help="auto: exhaustive up to 60 frames, else sequential + loop closure (default)")
    p.add_argument("--mapper", choices=("incremental", "global"), default="incremental", help="COLMAP mapper (default incremental)")
    p.add_argument("--camera-model", choices=("SIMPLE_RADIAL", "PINHOLE", "SIMPLE_PINHOLE", "RADIAL", "OPENCV"),
                   default="SIMPLE_RADIAL", help="shared camera model (default SIMPLE_RADIAL)")
    p.add_argument("--focal", type=float, default=None, help="known focal length in pixels of the resized frames")
    p.add_argument("--scale", type=float, default=None, help="metres per reconstruction unit, if known")
    p.add_argument("--verify", action="store_true", help="for clips with known cameras: also run SfM and report errors")
    p.add_argument("--colmap-threads", type=_thread_count, default=1,
                   help="threads of COLMAP's matching and mapping (default 1: a run repeats exactly; -1: every core, "
                        "faster on large captures, not repeatable)")
    p.add_argument("--refine", action="store_true",
                   help="after SfM, fit splats and camera corrections to the frames together: cameras from every pixel, "
                        "not only SIFT points. For renders and plain objects where SIFT sits on the outline (Spot orbit: "
                        "0.59 -> 0.24 deg, 2.5 min for 48 frames on 2 CPU cores); on sharp, textured photos it cost "
                        "accuracy (Middlebury temple: 0.09 -> 0.34 deg)")


def _add_splat_arguments(p: argparse.ArgumentParser, steps_option: str = "--steps") -> None:
    """Options of `splat` (and `reconstruct`, and `generate --to-asset`, whose own --steps are the
    sampler's, so it names this one --splat-steps)."""
    p.add_argument("--backend", choices=("auto", "gsplat", "cpu"), default="auto", help="auto: gsplat with CUDA, else cpu")
    p.add_argument(steps_option, dest="splat_steps", type=_positive_int, default=3000,
                   help="splat training steps (default 3000)")
    p.add_argument("--max-gaussians", type=_positive_int, default=300_000, help="cap on the number of Gaussians")
    p.add_argument("--sh-degree", type=int, choices=(0, 1, 2, 3), default=3, help="highest SH band (default 3)")
    p.add_argument("--eval-every", type=int, default=0, help="evaluate held-out frames every N steps (curve)")
    p.add_argument("--strategy", choices=("default", "mcmc"), default="default",
                   help="gsplat densification strategy: default (3DGS) or mcmc (default: default)")
    p.add_argument("--background", type=_background, default=None, metavar="auto|white|black|R,G,B",
                   help="colour behind the splats where frames have no masks (default auto: the frames' "
                        "border colour, so a dark studio backdrop is not painted in with splats)")
    p.add_argument("--refine-cameras", action="store_true",
                   help="learn a pose correction per camera (and one focal scale) with the splats, for cameras from "
                        "SfM; held-out frames are aligned to the splats before scoring; writes splats/transforms.json")


def _add_export_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `export` (and `reconstruct`)."""
    p.add_argument("--engine", choices=("gltf", "unity", "unreal"), default="gltf",
                   help="axes/units/pivot preset: gltf and unity = +Y up, metres; unreal = +Z up, cm (default gltf)")
    p.add_argument("--formats", default=None,
                   help="comma list of glb, usdc, usdz, ply, splat, khr (default: all the run's inputs allow)")
    p.add_argument("--faces", type=_positive_int, default=20000, help="face budget of LOD0 (default 20000)")
    p.add_argument("--height", type=float, default=None, help="real height of the asset in metres (video has no scale)")
    p.add_argument("--texture", choices=("png", "jpeg"), default="png", help="embedded texture type (default png; never WebP)")


def _resolve_asset(spec: str):
    """(parts, input file or None, description) for a path or a builtin:NAME."""
    from orbitforge import builtin
    from orbitforge.mesh import load_meshes

    if spec.startswith(BUILTIN_PREFIX):
        return builtin.load(spec[len(BUILTIN_PREFIX):]), None, spec
    path = Path(spec).expanduser()
    return load_meshes(path), path.resolve(), str(path)


def _cmd_render_orbit(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from orbitforge.clip import Clip
    from orbitforge.render import OrbitConfig, RenderConfig, render_orbit
    from orbitforge.rundir import RunDir
    from orbitforge.viewers.preview import contact_sheet, save_image, save_turntable_gif

    # 1. validate everything before anything is written
    config = OrbitConfig(
        frames=args.frames, size=args.size, elevation_deg=args.elevation, fov_deg=args.fov, radius=args.radius,
        render=RenderConfig(shading=args.shading, supersample=args.supersample),
    )
    parts, asset_file, source = _resolve_asset(args.asset)
    run = RunDir.open(args.output)
    run.record(command="render-orbit", inputs={"asset": source})

    # 2. the clip stage: frames, masks, depth, cameras, transforms.json, clip.mp4
    def stage(tmp: Path) -> dict:
        with tqdm(total=config.frames, desc="render-orbit", unit="frame", disable=None) as bar:
            clip = render_orbit(parts, config, source=source, progress=bar.update)
        clip.save(tmp)
        return {"frames": len(clip), "size": config.size, "coverage": float(clip.masks.mean())}

    result = run.run_stage("clip", stage, config=asdict(config), inputs=[asset_file] if asset_file else [])
    # 3. previews, redrawn whenever the clip changed
    sheet_path = run.root / "preview" / "contact_sheet.png"
    gif_path = run.root / "preview" / "turntable.gif"
    if not result.skipped or not (sheet_path.exists() and gif_path.exists()):
        clip = Clip.load(result.path)
        labels = [f"az {a:.0f}" for a in _azimuths(clip)]
        save_image(contact_sheet(clip.frames, labels=labels, tile=min(config.size, 160)), sheet_path)
        save_turntable_gif(clip.frames, gif_path, fps=clip.fps)
    state = "already complete, skipped" if result.skipped else f"done in {result.seconds:.1f} s"
    print(f"clip: {state} -> {result.path}")
    print(f"previews: {sheet_path}, {gif_path}")
    return 0


def _azimuths(clip) -> list[float]:
    """Camera azimuths in degrees around the orbit centre, for labels."""
    import numpy as np

    centres = clip.cameras.centres
    offsets = centres - centres.mean(axis=0)
    return list(np.degrees(np.arctan2(offsets[:, 0], offsets[:, 2])) % 360)


def _cmd_poses(args: argparse.Namespace) -> int:
    _poses_steps(args, command="poses")
    return 0


def _poses_steps(args: argparse.Namespace, command: str):
    """Ingest (unless INPUT is already a run folder) and poses; returns the RunDir."""
    from tqdm import tqdm

    from orbitforge.recon.ingest import IngestConfig
    from orbitforge.recon.poses import PosesConfig
    from orbitforge.recon.stages import is_run_folder, run_ingest, run_poses
    from orbitforge.rundir import RunDir

    _quiet_colmap(args.verbose)
    ingest_config = IngestConfig(target_frames=args.frames, max_side=args.max_side)
    poses_config = PosesConfig(matching=args.matching, mapper=args.mapper, camera_model=args.camera_model,
                               verify_known=args.verify, threads=args.colmap_threads, refine=args.refine)
    if not args.input.exists():
        raise InputError(f"input not found: {args.input}")
    from_run = is_run_folder(args.input)
    output = args.output or (args.input if from_run else None)
    if output is None:
        raise InputError("give a run folder with -o (INPUT is a video or a photo folder, not a run folder)")
    if from_run and args.output is not None and args.output.resolve() != args.input.resolve():
        raise InputError("INPUT is a run folder: omit -o, or pass the same folder")
    run = RunDir.open(output)
    if not from_run:
        run.record(command=command, inputs={"source": str(args.input)})
        with tqdm(desc="ingest", unit="frame", disable=None) as bar:
            clip = run_ingest(run, args.input.resolve(), ingest_config, progress=bar.update)
        print(f"clip: {'already complete, skipped' if clip.skipped else 'done'} -> {clip.path} ({clip.metrics.get('frames')} frames)")
    result = run_poses(run, poses_config, metric_scale=args.scale, focal_px=args.focal,
                       status=lambda text: print(f"poses: {text}", flush=True))
    m = result.metrics
    state = "already complete, skipped" if result.skipped else f"done in {result.seconds:.1f} s"
    print(f"poses: {state}: {m.get('registered')}/{m.get('images')} frames registered, {m.get('points')} points, "
          f"reprojection {m.get('mean_reprojection_px')} px -> {result.path}")
    return run


def _cmd_splat(args: argparse.Namespace) -> int:
    from orbitforge.rundir import RunDir

    _splat_step(RunDir.open(args.run, create=False), args)
    return 0


def _splat_step(run, args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from orbitforge.recon.splat.trainer import SplatConfig
    from orbitforge.recon.stages import run_splat

    config = SplatConfig(steps=args.splat_steps, backend=args.backend, max_gaussians=args.max_gaussians,
                         sh_degree=args.sh_degree, eval_every=args.eval_every, strategy=args.strategy,
                         background=args.background, refine_cameras=args.refine_cameras)
    with tqdm(total=config.steps, desc="splat", unit="step", disable=None) as bar:
        def progress(step: int, stats: dict) -> None:
            bar.n = step
            bar.set_postfix(psnr=f"{stats['psnr']:.2f}", gaussians=stats["gaussians"], refresh=False)
            bar.update(0)

        result = run_splat(run, config, progress=progress)
    m = result.metrics
    state = "already complete, skipped" if result.skipped else f"done in {result.seconds:.1f} s"
    print(f"splats: {state}: held-out PSNR {m['psnr']:.2f} dB, SSIM {m['ssim']:.3f}, {m['gaussians']} Gaussians "
          f"({m['backend']}) -> {result.path / 'splats.ply'}")


def _cmd_export(args: argparse.Namespace) -> int:
    from orbitforge.rundir import RunDir

    config = _export_config(args)  # checked before anything is opened
    if args.mesh is not None and not args.mesh.is_file():
        raise InputError(f"mesh file not found: {args.mesh}")
    run = RunDir.open(args.run, create=args.mesh is not None)
    source = args.source
    if source == "auto":
        from orbitforge.export.stage import mesh_source

        source = mesh_source(run) if args.mesh is None else "splats"
    if source == "nerf" and args.formats is None:
        from orbitforge.export.stage import MESH_FORMATS

        config = replace(config, formats=MESH_FORMATS)  # a NeRF has no splats to write
    _export_step(run, config, mesh_path=args.mesh.resolve() if args.mesh else None, source=source)
    return 0


def _cmd_nerf(args: argparse.Namespace) -> int:
    from orbitforge.recon.nerf import NerfConfig, run_nerf
    from orbitforge.rundir import RunDir

    config = NerfConfig(method=args.method, steps=args.steps, rays_per_batch=args.rays, device=args.device,
                        depth_size=args.depth_size,
                        extra_args=tuple(args.ns_args))
    run = RunDir.open(args.run, create=False)
    result = run_nerf(run, config, status=lambda text: print(f"nerf: {text}", flush=True))
    m = result.metrics
    state = "already complete, skipped" if result.skipped else f"done in {result.seconds:.1f} s"
    print(f"nerf: {state}: {m['method']} {m['steps']} steps on {m['device']}, held-out PSNR {m['psnr']:.2f} dB, "
          f"SSIM {m['ssim']:.3f} -> {result.path}")
    if args.export:
        from orbitforge.export.stage import MESH_FORMATS, ExportConfig

        _export_step(run, ExportConfig(formats=MESH_FORMATS), source="nerf")
    return 0


def _export_config(args: argparse.Namespace):
    """ExportConfig from the export options; without --formats, every format."""
    from orbitforge.export.glb import GlbConfig
    from orbitforge.export.stage import FORMATS, ExportConfig

    if args.formats is None:
        formats = FORMATS
    else:
        formats = tuple(f.strip().lower() for f in args.formats.split(",") if f.strip())
    return ExportConfig(engine=args.engine, formats=formats, faces=args.faces, height_m=args.height,
                        glb=GlbConfig(texture_format=args.texture))


def _export_step(run, config, mesh_path: Path | None = None, source: str = "splats"):
    from orbitforge.export.stage import run_export

    result = run_export(run, config, mesh_path=mesh_path, source=source, status=lambda text: print(f"export: {text}", flush=True))
    m = result.metrics
    state = "already complete, skipped" if result.skipped else f"done in {result.seconds:.1f} s"
    v = m.get("validation", {})
    print(f"export: {state}: {len(m.get('files', {}))} files for {m.get('engine')}, validation "
          f"{v.get('errors', '?')} errors, {v.get('warnings', '?')} warnings -> {result.path}")
    return result


def _cmd_reconstruct(args: argparse.Namespace) -> int:
    """ingest -> poses -> splat -> export in one run folder; every stage resumes on re-run."""
    config = _export_config(args)  # checked before hours of work, not after
    run = _poses_steps(args, command="reconstruct")
    _splat_step(run, args)
    result = _export_step(run, config)
    print(f"asset: {result.path} (previews in {run.root / 'preview'})")
    try:  # the share page costs a second or two; a checkout without the npm bundle just skips it
        from orbitforge.viewers.page import write_page

        _print_page(write_page(run.root))
    except InputError as exc:
        print(f"page: skipped: {exc}")
    return 0


def _quiet_colmap(verbose: int) -> None:
    """COLMAP logs every step at INFO through glog; show that only with -vv (it is always kept in
    RUN/poses/colmap.log)."""
    import pycolmap

    pycolmap.logging.minloglevel = 0 if verbose >= 2 else 2


def _cmd_info(args: argparse.Namespace) -> int:
    from orbitforge.rundir import MANIFEST, RunDir

    if not (args.run / MANIFEST).is_file():
        raise InputError(f"{args.run} is not a run folder (no {MANIFEST}); give the folder passed to -o")
    print(RunDir(args.run).summary())
    return 0


def _cmd_view(args: argparse.Namespace) -> int:
    from orbitforge.viewers.live import run_until_interrupted, serve

    viewer = serve(args.run, host=args.host, port=args.port, follow=args.follow, max_splats=args.max_splats)
    try:
        if args.port and viewer.port != args.port:
            print(f"view: port {args.port} is busy; using {viewer.port}")
        for note in viewer.notes():
            print(f"view: {note}")
        if viewer.host not in ("127.0.0.1", "::1", "localhost"):
            print(f"view: listening on {viewer.host}: other machines can open this machine's address, port {viewer.port}")
        following = "following changes; " if args.follow else ""
        print(f"view: {viewer.url}  ({following}Ctrl-C to stop)", flush=True)
        run_until_interrupted(viewer)
    except KeyboardInterrupt:  # Ctrl-C before the wait began: stop just as cleanly
        viewer.close()
    return 0


def _cmd_page(args: argparse.Namespace) -> int:
    from orbitforge.viewers.page import PageConfig, write_page

    _print_page(write_page(args.run, PageConfig(max_splats=args.max_splats)))
    return 0


def _print_page(result) -> None:
    shown = ", ".join(result.layers) or "no 3D layers yet"
    print(f"page: {result.path.resolve()} ({shown}; {result.frames} frames; {result.bytes / 2**20:.1f} MB)")
    print(f"page: opens from disk with no server and no network: {result.path.resolve().as_uri()}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        with terminate_as_interrupt():  # `kill`, a scheduler's stop: as clean as Ctrl-C
            return args.func(args)
    except OrbitforgeError as exc:
        if args.debug:
            raise
        print(f"orbitforge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM
        print("orbitforge: interrupted; finished stages are kept, re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not a user error: still one line unless --debug
        if args.debug:
            raise
        first = str(exc).splitlines()[0] if str(exc) else ""
        print(f"orbitforge: internal error: {type(exc).__name__}: {first} (re-run with --debug for the traceback and report it)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
