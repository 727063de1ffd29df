"""`orbitforge batch`: many prompts or captures, each the full pipeline in its own run folder.

    orbitforge batch prompts.txt|manifest.csv|manifest.jsonl|FOLDER -o OUT [--set KEY=VALUE ...]
        [--workers N] [--address ADDR] [--retries 2] [--cpus-per-task 1] [--gpus-per-task 0]

Each item is a chain of the ordinary CLI steps, so a batch item and a single run can never drift
apart: a prompt runs `generate` -> `splat` -> `export`, a video or photo folder runs `poses`
(ingest + COLMAP) -> `splat` -> `export`, all into OUT/items/<name>/; `splat` is left out when
the export reads no splats (a prompt's hull mesh with only mesh formats, e.g. formats=glb).
Every step is one Ray task with its own resources (the GPU steps, generate and splat, ask for
--gpus-per-task; poses and export are CPU-only), so on a cluster COLMAP and mesh export never hold
a GPU.  The driver submits an item's next step when the previous one finished.  A step that
raises `InputError` (bad input, also when a stage wraps it) fails its item at once; any other
error, and a worker that dies, is retried by Ray (`max_retries`, `retry_exceptions`) up to
--retries times.  A failing item never stops the others.

Resume is two-layered: an item whose asset is validated and whose settings are unchanged is
skipped before anything is scheduled, and an item that stopped half-way resumes inside its run
folder, where `RunDir` skips the finished stages.  OUT/index.json and OUT/index.html (a static
gallery: thumbnails, prompts or sources, metrics, GLB/USDZ links, failures with their one-line
reasons) are rewritten after every item, so they are current even after a crash or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import html
import json
import logging
import os
import re
import secrets
import shlex
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from orbitforge.errors import InputError, OrbitforgeError

logger = logging.getLogger(__name__)

INDEX_FORMAT = 1
ITEM_KEYS = ("name", "prompt", "path")
"""Manifest columns that say what an item is; every other column is a setting."""
# Settings the batch owns (where each item's run folder is, what it is made from) or that make no
# sense per item.
_RESERVED_DESTS = {"help", "output", "input", "prompt", "run", "to_asset", "mesh", "show_recaption"}
_STEPS = {"prompt": ("generate", "splat", "export"), "capture": ("poses", "splat", "export")}
_GPU_STEPS = {"generate", "splat"}
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"", "0", "false", "no", "off"}
_THUMBNAILS = ("preview/asset_sheet.png", "preview/contact_sheet.png")


@dataclass(frozen=True)
class BatchItem:
    """One line of the batch: a prompt or a capture (video / photo folder), plus its settings."""

    name: str  # folder name under OUT/items, unique in the batch
    kind: str  # "prompt" or "capture"
    source: str  # the prompt text, or the capture's absolute path
    settings: dict[str, str]  # option dest (e.g. "splat_steps") -> value as text, from its own row
    origin: str  # where it was read from, for messages: "prompts.txt line 3"
    defaults: dict[str, str] = field(default_factory=dict)  # --set: applied where the item's steps take them


@dataclass(frozen=True)
class BatchOptions:
    """How the batch runs (`orbitforge batch --help`)."""

    address: str | None = None  # Ray cluster address; None starts a local Ray
    workers: int | None = None  # CPUs of the local Ray (None: all)
    retries: int = 2  # extra attempts after a crash; bad input is never retried
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0  # for the GPU steps (generate, splat)


@dataclass
class _ItemState:
    item: BatchItem
    steps: list[list[str]] = field(default_factory=list)  # argv per step
    status: str = "pending"  # pending | running | done | skipped | failed | cancelled
    reason: str | None = None
    failed_step: str | None = None
    next_step: int = 0
    started: float | None = None
    seconds: float | None = None


# ---------------------------------------------------------------------------------------------
# command line
# ---------------------------------------------------------------------------------------------


def add_batch_command(subparsers: argparse._SubParsersAction) -> None:
    """Register `batch` on the main parser's subcommands (called from orbitforge.cli)."""
    from orbitforge.cli import _positive_int

    p = subparsers.add_parser("batch",
                              help="many prompts, videos or photo folders to assets, as Ray tasks, with an index")
    p.add_argument("input", type=Path,
                   help="a .txt of prompts (one a line), a .csv/.jsonl manifest (columns: prompt or path, optional "
                        "name, any generate/poses/splat/export setting), or a folder of videos and photo folders")
    p.add_argument("-o", "--output", required=True, type=Path,
                   help="batch folder: items/<name>/ run folders, logs/, index.json, index.html")
    p.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                   help="a setting for every item, named like a manifest column (e.g. splat_steps=1000, "
                        "engine=unity, model=DIR); a manifest cell overrides it")
    p.add_argument("--address", default=None,
                   help="Ray cluster to run on (e.g. auto, or ray://HEAD:10001); default: a local Ray on 127.0.0.1")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="CPUs of the local Ray, i.e. steps at once with --cpus-per-task 1 (default: all cores; "
                        "a cluster's own with --address)")
    p.add_argument("--retries", type=int, default=2,
                   help="extra attempts after a crash; bad input is final (default 2)")
    p.add_argument("--cpus-per-task", type=float, default=1.0, help="CPUs each step reserves (default 1)")
    p.add_argument("--gpus-per-task", type=float, default=0.0,
                   help="GPUs the generate and splat steps reserve (default 0: CPU only)")
    p.set_defaults(func=_cmd_batch)


def _cmd_batch(args: argparse.Namespace) -> int:
    if args.retries < 0:
        raise InputError(f"--retries must be 0 or more, got {args.retries}")
    if args.cpus_per_task <= 0 or args.gpus_per_task < 0:
        raise InputError("--cpus-per-task must be above 0 and --gpus-per-task 0 or more")
    shared = parse_settings(args.settings)
    items = read_items(args.input, shared, out=args.output)
    options = BatchOptions(address=args.address, workers=args.workers, retries=args.retries,
                           cpus_per_task=args.cpus_per_task, gpus_per_task=args.gpus_per_task)
    summary = run_batch(items, args.output, options)
    return 0 if summary["failed"] == 0 else 1


def parse_settings(pairs: list[str]) -> dict[str, str]:
    """--set KEY=VALUE pairs -> {dest: value}; keys are checked with the manifest's columns."""
    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {pair!r} is not KEY=VALUE, e.g. --set splat_steps=1000")
        settings[_column(key)] = value.strip()
    _check_columns(settings, "--set")
    return settings


# ---------------------------------------------------------------------------------------------
# items
# ---------------------------------------------------------------------------------------------


def read_items(source: Path, shared: dict[str, str] | None = None, *, out: Path | None = None) -> list[BatchItem]:
    """The items of a prompt list, a CSV/JSONL manifest or a folder of captures.

    Paths in a manifest (the path column, and path-valued settings such as model) are relative
    to the manifest's folder.  A malformed manifest or an unknown column raises InputError naming
    it; a bad value in one row only fails that item when it runs.
    """
    from orbitforge.recon.ingest import VIDEO_SUFFIXES

    source = Path(source)
    shared = dict(shared or {})
    if not source.exists():
        raise InputError(f"batch input not found: {source}")
    if source.is_dir():
        rows = list(_folder_rows(source, out))
        base = Path.cwd()
    elif source.suffix.lower() == ".txt":
        rows = list(_prompt_rows(source))
        base = source.parent
    elif source.suffix.lower() == ".csv":
        rows = list(_csv_rows(source))
        base = source.parent
    elif source.suffix.lower() in (".jsonl", ".ndjson"):
        rows = list(_jsonl_rows(source))
        base = source.parent
    elif source.suffix.lower() in VIDEO_SUFFIXES:
        raise InputError(f"{source} is one video: use `orbitforge reconstruct`, or give the folder holding the videos")
    else:
        raise InputError(f"{source} is not a batch input: give a .txt of prompts, a .csv or .jsonl manifest, "
                         "or a folder of videos and photo folders")
    if not rows:
        raise InputError(f"{source} holds no items (blank lines and # comments are ignored)")
    _check_columns({k: v for _, row in rows for k, v in row.items() if k not in ITEM_KEYS},
                   source.name)
    path_dests = _path_dests()
    shared = {k: str(Path(v).expanduser().resolve()) if k in path_dests and v else v for k, v in shared.items()}
    items, taken = [], set()
    for origin, row in rows:
        prompt, path = row.get("prompt", "").strip(), row.get("path", "").strip()
        if bool(prompt) == bool(path):
            raise InputError(f"{origin}: give a prompt or a path (a video or photo folder), "
                             f"{'not both' if prompt else 'one of them'}")
        settings = {}
        for key, value in row.items():
            if key not in ITEM_KEYS and value.strip():
                value = value.strip()
                if key in path_dests and not Path(value).expanduser().is_absolute():
                    value = str((base / value).resolve())
                settings[key] = value
        kind = "prompt" if prompt else "capture"
        text = prompt if prompt else str((base / Path(path).expanduser()).resolve())
        name = _unique(_slug(row.get("name") or (prompt or Path(path).stem or Path(path).name)), taken)
        items.append(BatchItem(name, kind, text, settings, origin, shared))
    return items


def _prompt_rows(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if line.strip() and not line.lstrip().startswith("#"):
            yield f"{path.name} line {number}", {"prompt": line.strip()}


def _csv_rows(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    reader = csv.DictReader(_read_text(path).splitlines())
    if not reader.fieldnames:
        raise InputError(f"{path} has no header row; start it with e.g. prompt,seed,engine")
    columns = [_column(c or "") for c in reader.fieldnames]
    if "" in columns or len(set(columns)) != len(columns):
        raise InputError(f"{path}: the header has an empty or repeated column: {','.join(reader.fieldnames)}")
    for row in reader:
        extra = row.get(None)
        if extra:
            raise InputError(f"{path.name} line {reader.line_num}: more cells than header columns ({len(columns)})")
        yield f"{path.name} line {reader.line_num}", {_column(k): v or "" for k, v in row.items()}


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        origin = f"{path.name} line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputError(f"{origin} is not JSON ({exc.msg}); each line must be one object, "
                             'e.g. {"prompt": "a red mug", "seed": 1}') from None
        if not isinstance(row, dict):
            raise InputError(f"{origin} is a JSON {type(row).__name__}, not an object like "
                             '{"prompt": "a red mug"}')
        cells = {}
        for key, value in row.items():
            if isinstance(value, (dict, list)):
                raise InputError(f"{origin}: {key!r} must be a plain value, not a JSON {type(value).__name__}")
            if value is not None:
                cells[_column(key)] = str(value).lower() if isinstance(value, bool) else str(value)
        yield origin, cells


def _folder_rows(folder: Path, out: Path | None) -> Iterator[tuple[str, dict[str, str]]]:
    """Videos and photo folders directly inside FOLDER (sorted by name)."""
    from orbitforge.recon.ingest import IMAGE_SUFFIXES, VIDEO_SUFFIXES

    def images_in(path: Path) -> bool:
        return any(p.suffix.lower() in IMAGE_SUFFIXES for p in path.iterdir() if not p.name.startswith("."))

    skip = out.resolve() if out is not None else None
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith(".") and p.resolve() != skip)
    found = False
    for entry in entries:
        if entry.is_file() and entry.suffix.lower() in VIDEO_SUFFIXES or entry.is_dir() and images_in(entry):
            found = True
            yield f"{folder.name}/{entry.name}", {"path": str(entry.resolve())}
    if not found and images_in(folder):
        raise InputError(f"{folder} is one photo set: use `orbitforge reconstruct`, or give the folder that "
                         "holds one subfolder per capture")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path} is not UTF-8 text; save it as UTF-8") from None


def _column(key: str) -> str:
    return key.strip().lower().replace("-", "_")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:48].strip("-") or "item"


def _unique(name: str, taken: set[str]) -> str:
    candidate, n = name, 1
    while candidate in taken:
        n += 1
        candidate = f"{name}-{n}"
    taken.add(candidate)
    return candidate


# ---------------------------------------------------------------------------------------------
# settings -> argv of the CLI steps
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _subcommand_parsers() -> dict[str, argparse.ArgumentParser]:
    from orbitforge.cli import _build_parser

    parser = _build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise RuntimeError("the orbitforge parser has no subcommands")


def _step_options(command: str) -> dict[str, argparse.Action]:
    """{dest: action} of the settings a step command takes (the batch's own excluded)."""
    parser = _subcommand_parsers()[command]
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in _RESERVED_DESTS}


def _known_settings() -> dict[str, set[str]]:
    """{dest: commands that take it} over every step command."""
    known: dict[str, set[str]] = {}
    for command in {c for steps in _STEPS.values() for c in steps}:
        for dest in _step_options(command):
            known.setdefault(dest, set()).add(command)
    return known


def _check_columns(settings: dict[str, str], where: str) -> None:
    known = _known_settings()
    unknown = sorted(k for k in settings if k not in known)
    if unknown:
        examples = ", ".join(sorted(known)[:12])
        raise InputError(f"{where}: unknown setting(s) {', '.join(repr(u) for u in unknown)}; use prompt or path, "
                         f"name, and settings of generate/poses/splat/export such as {examples} …")


def _path_dests() -> set[str]:
    return {dest for command in ("generate", "poses", "splat", "export")
            for dest, action in _step_options(command).items() if action.type is Path}


def plan_steps(item: BatchItem, run: Path) -> list[list[str]]:
    """The argv of each CLI step of an item; raises InputError when a setting does not fit it.

    A setting goes to the step whose command defines it (splat settings to `splat`, export ones
    to `export`, the rest to `generate` or `poses`); every argv is parsed here, before any work.
    """
    from orbitforge.cli import _export_config
    from orbitforge.export.stage import needs_splats

    commands = _STEPS[item.kind]
    options = {c: _step_options(c) for c in commands}
    routed: dict[str, list[str]] = {c: [] for c in commands}
    for dest, value in {**item.defaults, **item.settings}.items():
        owner = next((c for c in ("splat", "export", commands[0]) if dest in options[c]), None)
        if owner is None and dest not in item.settings:
            continue  # a --set for the other kind of item (e.g. model=DIR in a batch of prompts and videos)
        if owner is None:
            what = "prompt" if item.kind == "prompt" else "video / photos"
            raise InputError(f"setting {dest!r} does not apply to a {what} item")
        action = options[owner][dest]
        flag = next((s for s in action.option_strings if s.startswith("--")), action.option_strings[0])
        if action.nargs == 0:  # an on/off flag
            if value.lower() not in _TRUE | _FALSE:
                raise InputError(f"setting {dest!r} is on/off: use true or false, not {value!r}")
            routed[owner] += [flag] if value.lower() in _TRUE else []
        else:
            routed[owner] += [flag, value]
    # "--" ends the options, so a prompt such as "-1 scale model" stays a prompt
    first = (["generate", "-o", str(run), *routed["generate"], "--", item.source] if item.kind == "prompt"
             else ["poses", "-o", str(run), *routed["poses"], "--", item.source])
    steps = [first, ["splat", str(run), *routed["splat"]], ["export", str(run), *routed["export"]]]
    parsers = _subcommand_parsers()
    for argv in steps:
        parsed = _parse_quietly(parsers[argv[0]], argv[1:], argv[0])
        if argv[0] == "export":
            config = _export_config(parsed)  # formats, engine, faces: checked now, not after the splats
    # a generated clip's mesh is its visual hull ("auto"): without splat formats, no splats to train
    source = ("file" if parsed.mesh is not None else
              "hull" if item.kind == "prompt" and parsed.source == "auto" else parsed.source)
    if not needs_splats(source, config.formats):
        del steps[1]
    return steps


def _parse_quietly(parser: argparse.ArgumentParser, argv: list[str], command: str) -> argparse.Namespace:
    """argparse, but an error comes back as InputError instead of exiting the batch."""
    import io

    message = io.StringIO()
    try:
        with contextlib.redirect_stderr(message):
            return parser.parse_args(argv)
    except SystemExit:
        lines = message.getvalue().strip().splitlines()
        text = lines[-1] if lines else "invalid settings"
        text = text.removeprefix(f"{parser.prog}: error: ").removesuffix(f" (see {parser.prog} --help)")
        raise InputError(f"{command}: {text}") from None


def item_record(item: BatchItem, steps: list[list[str]]) -> dict:
    """What a finished item is recorded with in its run.json: a changed record means re-run it."""
    return {"kind": item.kind, "source": item.source, "source_stat": _stat_signature(item), "steps": steps}


def _stat_signature(item: BatchItem) -> list | None:
    """Sizes and modification times of a capture's files: cheap, and changes when they are replaced."""
    if item.kind != "capture":
        return None
    path = Path(item.source)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
    return [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in files]


def is_finished(run: Path, record: dict) -> bool:
    """True when RUN holds this item's validated asset, made with these settings."""
    try:
        manifest = json.loads((run / "run.json").read_text(encoding="utf-8"))
        validation = json.loads((run / "asset" / "validation.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    asset = manifest.get("stages", {}).get("asset", {})
    return (manifest.get("batch") == record and asset.get("status") == "done" and validation.get("ok") is True
            and validation.get("errors") == 0)


# ---------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------


def _run_step(argv: list[str], log_path: str, finished: tuple[str, dict] | None = None) -> dict:
    """One CLI step inside a Ray worker; its output goes to the item's log.

    Bad input comes back as a final failure; any other error is raised so that Ray retries it.
    `finished` (run folder, item record) comes with an item's last step: the worker records the
    item as finished itself, so a driver killed before it hears back does not lose that.
    """
    from orbitforge.cli import main

    handler = logging.FileHandler(log_path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)  # also makes main()'s logging.basicConfig a no-op in this reused worker
    try:
        with open(log_path, "a", encoding="utf-8") as log, contextlib.redirect_stdout(log), \
                contextlib.redirect_stderr(log):
            print(f"$ orbitforge {shlex.join(argv)}", flush=True)
            try:
                code = main(["--debug", *argv])
            except OrbitforgeError as exc:
                print(f"orbitforge: error: {exc}", flush=True)
                bad_input = _input_error(exc)
                if bad_input is None:
                    raise
                return {"ok": False, "reason": _one_line(bad_input)}
            if code != 0:
                return {"ok": False, "reason": "interrupted" if code == 130 else f"exit status {code}"}
            if finished is not None:
                from orbitforge.rundir import RunDir

                RunDir(Path(finished[0])).record(batch=finished[1])
            return {"ok": True}
    finally:
        root.removeHandler(handler)
        handler.close()


def _input_error(exc: BaseException | None) -> InputError | None:
    """The InputError that caused `exc`, if any (a stage wraps it in a StageError)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, InputError):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _failure_reason(exc: BaseException) -> str:
    """One line for a step that failed after its retries (Ray wraps the worker's exception)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        inner = _input_error(cause)
        return _one_line(inner or cause)
    import ray.exceptions

    if isinstance(exc, ray.exceptions.WorkerCrashedError):
        return "the worker process died (out of memory or a crash in native code); see the item's log"
    if isinstance(exc, ray.exceptions.OutOfMemoryError):
        return "out of memory: Ray stopped the step; give it fewer workers or more memory"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds on a HOST:PORT nobody listens on (ray.init waits minutes for it)."""
    import socket

    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not port.isdigit():
        return  # "auto", or an address Ray resolves itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise InputError(f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); start it with "
                         "`ray start --head` on the head node, or check --address") from None


_LOCAL_RAY_TOKEN = secrets.token_hex(32)
"""The access token of the private local Ray: one per process, since Ray caches the first it reads."""
_SOCKET_PATH_MAX = 107
"""AF_UNIX socket paths stop at 107 bytes; a local Ray puts its sockets in its temporary folder."""
_RAY_SESSION_SUFFIX = len("/session_2026-11-30_16-55-05_234859_4194304/sockets/plasma_store")


@contextlib.contextmanager
def _ray_temp_dir(out: Path) -> Iterator[Path]:
    """The folder a local Ray keeps its sockets, logs and object spill in, removed afterwards.

    It is OUT/.ray, inside the folder the user named (Ray's default, /tmp/ray, keeps every session
    and is shared by all users).  When OUT is too deep for Ray's socket paths it is a private
    temporary folder instead, which holds no result and is removed just the same.
    """
    inside = out.resolve() / ".ray"
    fits = len(os.fsencode(inside)) + _RAY_SESSION_SUFFIX <= _SOCKET_PATH_MAX
    if fits:
        inside.mkdir(parents=True, exist_ok=True)
    folder = inside if fits else Path(tempfile.mkdtemp(prefix="orbitforge-ray-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def _ray_session(options: BatchOptions, gpus_needed: bool, out: Path) -> Iterator[Any]:
    """ray.init for the batch, shut down afterwards (unless Ray was already running here).

    A local Ray listens on 127.0.0.1 only, sends no usage statistics and keeps its temporary files
    in OUT/.ray (see _ray_temp_dir).  Ray 2.60's `_node_ip_address="127.0.0.1"` is turned back into
    the machine's address, and its gRPC servers then listen on every interface; with
    ENABLE_RAY_CLUSTER off (what Ray does on macOS and Windows) the node address is the loopback
    one and every server binds there.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray._private import ray_constants

    owned = not ray.is_initialized()
    with contextlib.ExitStack() as cleanup:
        if owned:
            _ray_init(ray, ray_constants, options, cleanup, out)
        try:
            total = ray.cluster_resources()
            where = options.address or "local, on 127.0.0.1"
            print(f"batch: Ray ({where}): {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs", flush=True)
            if total.get("CPU", 0) < options.cpus_per_task:
                raise InputError(f"--cpus-per-task {options.cpus_per_task:g} is more than the "
                                 f"{total.get('CPU', 0):g} CPUs Ray has: lower it, or give more --workers")
            if gpus_needed and total.get("GPU", 0) < options.gpus_per_task:
                raise InputError(f"--gpus-per-task {options.gpus_per_task:g} but Ray sees {total.get('GPU', 0):g} "
                                 "GPUs; run where there are GPUs (--address) or drop --gpus-per-task")
            yield ray
        finally:
            if owned:
                ray.shutdown()  # before its temporary folder goes (the ExitStack)


def _ray_init(ray, ray_constants, options: BatchOptions, cleanup: contextlib.ExitStack, out: Path) -> None:
    """Connect to the cluster at --address, or start the private local Ray (its folder goes with `cleanup`)."""
    kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if options.address is not None:
        try:
            ray.init(address=options.address, **kwargs)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            auth = ("" if os.environ.get("RAY_AUTH_MODE") else
                    "; a cluster with token authentication (Ray's default for `ray start` since 2.59) "
                    "also needs RAY_AUTH_MODE=token here, with its token in RAY_AUTH_TOKEN or ~/.ray/auth_token")
            raise InputError(f"cannot reach the Ray cluster at {options.address}: {_one_line(exc)}; "
                             f"start it with `ray start --head` or check --address{auth}") from None
        return
    temp_dir = cleanup.enter_context(_ray_temp_dir(out))
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        # Ray's token authentication (on by default) would otherwise write ~/.ray/auth_token
        os.environ["RAY_AUTH_TOKEN"] = _LOCAL_RAY_TOKEN
    saved = (os.environ.get(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR), ray_constants.ENABLE_RAY_CLUSTER)
    os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = "0"  # for the processes Ray starts
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:  # never an existing cluster
        ray.init(address="local", num_cpus=options.workers, _temp_dir=str(temp_dir), **kwargs)
    finally:
        if saved[0] is None:
            os.environ.pop(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR, None)
        else:
            os.environ[ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR] = saved[0]
        ray_constants.ENABLE_RAY_CLUSTER = saved[1]


def run_batch(items: list[BatchItem], out: Path, options: BatchOptions = BatchOptions()) -> dict:
    """Run every item that is not finished yet; write OUT/index.json and OUT/index.html.

    Returns the counts ({"done", "skipped", "failed", "cancelled", "items"}).  Ctrl-C cancels the
    steps in flight (their stages clean up), writes the index, and re-raises KeyboardInterrupt.
    """
    from tqdm import tqdm

    out = Path(out)
    if options.address:
        _check_reachable(options.address)
    try:
        (out / "items").mkdir(parents=True, exist_ok=True)
        (out / "logs").mkdir(exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create batch folder {out}: {exc.strerror or exc}; pick a writable location") from None
    states = []
    for item in items:
        state = _ItemState(item)
        run = out / "items" / item.name
        try:
            state.steps = plan_steps(item, run.resolve())
        except InputError as exc:
            state.status, state.reason, state.failed_step = "failed", str(exc), "settings"
        else:
            if is_finished(run, item_record(item, state.steps)):
                state.status = "skipped"
        states.append(state)
    todo = [s for s in states if s.status == "pending"]
    skipped = sum(s.status == "skipped" for s in states)
    print(f"batch: {len(states)} items: {skipped} finished earlier, skipped; {len(todo)} to run or resume"
          + (f"; {len(states) - skipped - len(todo)} with bad settings" if len(states) - skipped - len(todo) else ""),
          flush=True)
    write_index(out, states)
    if todo:
        gpus_needed = options.gpus_per_task > 0
        with _ray_session(options, gpus_needed, out) as ray:
            with tqdm(total=len(states), initial=len(states) - len(todo), desc="batch", unit="item",
                      disable=None) as bar:
                _schedule(ray, todo, out, options, states, bar)
    counts = {k: sum(s.status == k for s in states) for k in ("done", "skipped", "failed", "cancelled")}
    write_index(out, states)
    for state in states:
        if state.status == "failed":
            print(f"batch: failed: {state.item.name} ({state.item.origin}): {state.reason}")
    print(f"batch: {counts['done'] + counts['skipped']} of {len(states)} assets ready ({counts['done']} made now, "
          f"{counts['skipped']} finished earlier), {counts['failed']} failed -> {(out / 'index.html').resolve()}",
          flush=True)
    return {**counts, "items": len(states)}


def _schedule(ray, todo: list[_ItemState], out: Path, options: BatchOptions, states: list[_ItemState], bar) -> None:
    """The driver loop: submit each item's next step when its previous one finished."""
    remote = ray.remote(_run_step)
    in_flight: dict[Any, _ItemState] = {}

    def submit(state: _ItemState) -> None:
        argv = state.steps[state.next_step]
        gpu = argv[0] in _GPU_STEPS and options.gpus_per_task > 0
        task = remote.options(num_cpus=options.cpus_per_task, num_gpus=options.gpus_per_task if gpu else 0,
                              max_retries=options.retries, retry_exceptions=True, name=f"{state.item.name}:{argv[0]}")
        last = state.next_step == len(state.steps) - 1
        finished = (str((out / "items" / state.item.name).resolve()), item_record(state.item, state.steps))
        ref = task.remote(argv, str(_log_path(out, state.item).resolve()), finished if last else None)
        in_flight[ref] = state

    for state in todo:
        with open(_log_path(out, state.item), "a", encoding="utf-8") as log:  # earlier attempts stay above
            log.write(f"# {datetime.now(timezone.utc).isoformat(timespec='seconds')} batch: "
                      f"{state.item.origin}: {state.item.source}\n")
        state.status, state.started = "running", time.monotonic()
        submit(state)
    _show(bar, states)
    try:
        while in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=1.0)
            for ref in ready:
                state = in_flight.pop(ref)
                step = state.steps[state.next_step][0]
                try:
                    result = ray.get(ref)
                except ray.exceptions.TaskCancelledError:
                    result = {"ok": False, "reason": "cancelled", "cancelled": True}
                except ray.exceptions.RayError as exc:
                    result = {"ok": False, "reason": _failure_reason(exc)}
                if result["ok"] and state.next_step + 1 < len(state.steps):
                    state.next_step += 1
                    submit(state)
                    continue
                state.seconds = round(time.monotonic() - state.started, 1)
                if result["ok"]:  # the worker recorded the item as finished (_run_step)
                    state.status = "done"
                    bar.write(f"batch: {state.item.name}: done in {state.seconds:.0f} s")
                else:
                    state.status = "cancelled" if result.get("cancelled") else "failed"
                    state.reason, state.failed_step = result["reason"], step
                    bar.write(f"batch: {state.item.name}: {state.status} at {step}: {state.reason}")
                bar.update(1)
                _show(bar, states)
                write_index(out, states)
    except KeyboardInterrupt:
        for ref, state in in_flight.items():
            ray.cancel(ref)
            state.status, state.reason = "cancelled", "interrupted (Ctrl-C); re-run the same command to resume"
        if in_flight:  # give the cancelled stages a moment to remove their temporary folders
            ray.wait(list(in_flight), num_returns=len(in_flight), timeout=15.0)
        write_index(out, states)
        raise


def _show(bar, states: list[_ItemState]) -> None:
    running: dict[str, int] = {}
    for s in states:
        if s.status == "running":
            step = s.steps[s.next_step][0]
            running[step] = running.get(step, 0) + 1
    bar.set_postfix_str(", ".join([f"{sum(s.status in ('done', 'skipped') for s in states)} ok",
                                   f"{sum(s.status == 'failed' for s in states)} failed",
                                   *(f"{n} {step}" for step, n in sorted(running.items()))]))


def _log_path(out: Path, item: BatchItem) -> Path:
    return out / "logs" / f"{item.name}.log"


# ---------------------------------------------------------------------------------------------
# index
# ---------------------------------------------------------------------------------------------


def _item_entry(out: Path, state: _ItemState) -> dict:
    item = state.item
    run = out / "items" / item.name
    entry: dict[str, Any] = {"name": item.name, "kind": item.kind,
                             ("prompt" if item.kind == "prompt" else "source"): item.source,
                             "origin": item.origin, "status": state.status, "reason": state.reason,
                             "failed_step": state.failed_step, "settings": {**item.defaults, **item.settings},
                             "run": f"items/{item.name}", "log": f"logs/{item.name}.log", "seconds": state.seconds}
    try:
        stages = json.loads((run / "run.json").read_text(encoding="utf-8")).get("stages", {})
    except (OSError, ValueError):
        stages = {}

    def metric(stage: str, key: str):
        return (stages.get(stage, {}).get("metrics") or {}).get(key)

    metrics = {"psnr": metric("splats", "psnr"), "ssim": metric("splats", "ssim"),
               "gaussians": metric("splats", "gaussians"), "frames": metric("clip", "frames"),
               "registered": metric("poses", "registered"), "faces": metric("asset", "faces")}
    validation = metric("asset", "validation") or {}
    metrics["validation_errors"] = validation.get("errors")
    metrics["validation_warnings"] = validation.get("warnings")
    entry["metrics"] = {k: v for k, v in metrics.items() if v is not None}
    entry["stages"] = {name: st.get("status") for name, st in stages.items()}
    files = {"glb": "asset/asset.glb", "usdz": "asset/asset.usdz", "usdc": "asset/asset.usdc",
             "splat": "asset/splats.splat", "validation": "asset/validation.json", "page": "preview/viewer.html"}
    entry["files"] = {k: f"items/{item.name}/{v}" for k, v in files.items() if (run / v).is_file()}
    thumbnail = next((t for t in _THUMBNAILS if (run / t).is_file()), None)
    entry["thumbnail"] = f"items/{item.name}/{thumbnail}" if thumbnail else None
    return entry


def write_index(out: Path, states: list[_ItemState]) -> dict:
    """OUT/index.json and OUT/index.html, each replaced atomically."""
    from orbitforge.atomic import atomic_path

    entries = [_item_entry(out, s) for s in states]
    counts = {k: sum(e["status"] == k for e in entries)
              for k in ("done", "skipped", "failed", "cancelled", "running", "pending")}
    index = {"format": INDEX_FORMAT, "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
             "counts": {k: v for k, v in counts.items() if v}, "items": entries}
    with atomic_path(out / "index.json") as tmp:
        tmp.write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    with atomic_path(out / "index.html") as tmp:
        tmp.write_text(_index_html(index), encoding="utf-8")
    return index


def _index_html(index: dict) -> str:
    e = html.escape
    cards, failures = [], []
    for item in index["items"]:
        title = item.get("prompt") or Path(item.get("source", "")).name
        if item["status"] in ("failed", "cancelled"):
            cells = [e(item["name"]), e(title), e(item.get("failed_step") or ""), e(item.get("reason") or ""),
                     f"<a href=\"{e(item['log'])}\">log</a>"]
            failures.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            continue
        m = item["metrics"]
        facts = []
        if "psnr" in m:
            facts.append(f"PSNR {m['psnr']:.1f} dB" + (f", SSIM {m['ssim']:.3f}" if "ssim" in m else ""))
        if "faces" in m:
            facts.append(f"{m['faces']:,} faces")
        if "validation_errors" in m:
            facts.append(f"validator: {m['validation_errors']} errors, {m.get('validation_warnings', 0)} warnings")
        links = [f"<a href=\"{e(path)}\">{e(label)}</a>"
                 for label, key in (("GLB", "glb"), ("USDZ", "usdz"), ("viewer", "page"), ("validation", "validation"))
                 if (path := item["files"].get(key))]
        links += [f"<a href=\"{e(item['run'])}/run.json\">run.json</a>", f"<a href=\"{e(item['log'])}\">log</a>"]
        thumb = (f"<img src=\"{e(item['thumbnail'])}\" alt=\"{e(title)}\" loading=\"lazy\">" if item["thumbnail"]
                 else "<div class=\"none\">no preview yet</div>")
        cards.append(f"<figure class=\"{e(item['status'])}\">{thumb}<figcaption><b>{e(title)}</b>"
                     f"<span class=\"status\">{e(item['status'])}</span><br>{e(' · '.join(facts))}<br>"
                     f"{' · '.join(links)}</figcaption></figure>")
    counts = ", ".join(f"{v} {k}" for k, v in index["counts"].items())
    failed = ("<h2>Failures</h2><table><tr><th>item</th><th>prompt or source</th><th>step</th><th>reason</th>"
              f"<th></th></tr>{''.join(failures)}</table>" if failures else "")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>orbitforge batch</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }}
.grid {{ display: grid; grid-template-columns: repeat(auto-fill, minmax(260px, 1fr)); gap: 1em; }}
figure {{ margin: 0; border: 1px solid #ddd; border-radius: 6px; overflow: hidden; }}
figure img, .none {{ width: 100%; aspect-ratio: 4 / 3; object-fit: contain; background: #f4f4f4; display: block; }}
.none {{ display: flex; align-items: center; justify-content: center; color: #888; }}
figcaption {{ padding: .5em .7em; }}
.status {{ float: right; color: #666; font-size: 12px; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ddd; padding: .3em .6em; text-align: left; }}
</style></head><body>
<h1>orbitforge batch</h1>
<p>{e(counts)} · updated {e(index['updated'])} · <a href="index.json">index.json</a></p>
<div class="grid">{''.join(cards)}</div>
{failed}
</body></html>
"""
