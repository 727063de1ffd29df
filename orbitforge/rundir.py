"""The run folder: one directory per run, with `run.json` as its manifest.

A run is resumable because every stage is a folder that appears whole or not at all: the stage
writes into `RUN/.<name>.partial-<pid>` and is renamed into place only when it succeeded.  The
manifest records, per stage, a fingerprint of what went in (config, input files, upstream
stages), so re-running the same command skips finished work and redoes only what changed.
One writer per run folder at a time; readers may look at any moment.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from orbitforge.errors import InputError, StageError

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "run.json"
# Versions worth knowing when a result cannot be reproduced; read from package metadata so that
# `orbitforge info` never pays for importing torch.
_VERSIONED_PACKAGES = ("torch", "numpy", "pycolmap", "trimesh", "av", "numba")
# Files up to this size are hashed whole.  Larger ones (a 10-minute 4K video is several GB) are
# fingerprinted by size plus their first and last MiB: hashing them whole on every re-run would
# cost seconds to minutes, and an edit that keeps the size and both ends is rare enough to accept.
_HASH_WHOLE_LIMIT = 64 * 2**20
_HASH_EDGE = 2**20
# Temporary names this module creates: `.<name>.<kind>-<pid>`.
_TEMP_RE = re.compile(r"^\.(?P<name>.+)\.(?P<kind>partial|old|tmp)-(?P<pid>[^.]*)$")
_STAGE_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]*$")


@dataclass(frozen=True)
class StageResult:
    """What `RunDir.run_stage` did for one stage."""

    name: str
    path: Path  # RUN/<name>, the completed stage folder
    skipped: bool  # True when the stage was already complete with the same fingerprint
    metrics: dict  # what the stage returned, or the recorded metrics when skipped
    seconds: float


class RunDir:
    """A run folder: stage folders plus the `run.json` manifest (see DESIGN.md, "Run folder")."""

    def __init__(self, root: Path | str):
        self.root = Path(root)

    @classmethod
    def open(cls, root: Path | str, *, create: bool = True) -> RunDir:
        """Open (or create) a run folder and remove temporary folders left by crashed runs."""
        run = cls(root)
        if run.root.exists() and not run.root.is_dir():
            raise InputError(f"run folder {run.root} is a file; pass a folder (new or existing)")
        if not (run.root / MANIFEST).is_file():
            if not create:
                raise InputError(f"{run.root} is not a run folder (no {MANIFEST}); "
                                 "pass the folder a previous run wrote")
            try:
                run.root.mkdir(parents=True, exist_ok=True)
                run._write(_new_manifest())
            except OSError as exc:
                raise InputError(f"cannot create run folder {run.root}: {exc.strerror or exc}; "
                                 "pick a writable location") from exc
        if not os.access(run.root, os.W_OK | os.X_OK):
            raise InputError(f"run folder {run.root} is not writable; fix its permissions "
                             "or copy it somewhere writable")
        found = run.manifest.get("format")
        if not isinstance(found, int) or found > FORMAT_VERSION:
            raise InputError(f"{run.root / MANIFEST} has format {found!r}; this orbitforge reads "
                             f"format <= {FORMAT_VERSION}: upgrade orbitforge")
        run._clean_temporaries()
        return run

    @property
    def manifest(self) -> dict:
        """The parsed run.json (read fresh on every access)."""
        path = self.root / MANIFEST
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise InputError(f"{self.root} is not a run folder (no {MANIFEST})") from exc
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            # run.json is only ever replaced atomically, so damage came from outside.
            raise InputError(f"{path} is not valid JSON ({exc}); it was edited or damaged "
                             "outside orbitforge: restore it or start a new run folder") from exc

    def stage_path(self, name: str) -> Path:
        """RUN/<name>; the name must be a plain folder name (letters, digits, _ and -)."""
        if not isinstance(name, str) or not _STAGE_NAME_RE.match(name):
            raise InputError(f"stage name {name!r} is not a plain folder name: use letters, "
                             "digits, '_' and '-', not starting with '-'")
        return self.root / name

    def run_stage(self, name: str, fn: Callable[[Path], dict | None], *, config: Mapping = {},
                  inputs: Sequence[Path | str] = (), depends_on: Sequence[str] = (),
                  seed: int | None = None) -> StageResult:
        """Run `fn(tmp_folder)` unless the stage is already done with the same fingerprint.

        `fn` writes its outputs into the folder it is given and returns a dict of metrics (or
        None).  The folder becomes RUN/<name> only if `fn` returns; if it raises, the previous
        RUN/<name> and every other stage stay as they were and StageError says so.
        """
        final = self.stage_path(name)
        fingerprint = self._fingerprint(name, config, inputs, depends_on, seed)
        stages = self.manifest.get("stages", {})
        if self._is_done(name, stages) and stages[name].get("fingerprint") == fingerprint:
            logger.info("stage %s: up to date, skipping", name)
            return StageResult(name, final, True, dict(stages[name].get("metrics") or {}), 0.0)

        entry = {"fingerprint": fingerprint, "config": _jsonable(config), "seed": seed,
                 "inputs": [str(Path(p).absolute()) for p in inputs],
                 "depends_on": list(depends_on), "started": _now()}
        tmp = self.root / f".{name}.partial-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        logger.info("stage %s: running", name)
        t0 = time.perf_counter()
        try:
            try:
                result = fn(tmp)
                if result is not None and not isinstance(result, Mapping):
                    raise TypeError(f"the stage function returned {type(result).__name__}; "
                                    "return a dict of metrics or None")
                metrics = _jsonable(dict(result or {}))
                # Until the done record lands, RUN/<name> must not pass for the old output.
                self._set_stage(name, entry, t0, "failed", {}, "interrupted while moving output")
                _swap_in(tmp, final)
            except Exception as exc:
                msg = _first_line(exc)
                self._set_stage(name, entry, t0, "failed", {}, msg)
                raise StageError(f"stage '{name}' failed: {msg} — earlier stages are kept in "
                                 f"{self.root}; fix the cause and re-run the same command to "
                                 "resume") from exc
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # also on KeyboardInterrupt
        seconds = self._set_stage(name, entry, t0, "done", metrics, None)
        logger.info("stage %s: done in %.1f s", name, seconds)
        return StageResult(name, final, False, metrics, seconds)

    def is_done(self, name: str) -> bool:
        """True when stage `name` finished and its folder is in place."""
        return self._is_done(name, self.manifest.get("stages", {}))

    def is_current(self, name: str, *, config: Mapping = {}, inputs: Sequence[Path | str] = (),
                   depends_on: Sequence[str] = (), seed: int | None = None) -> bool:
        """True when `run_stage` with these arguments would skip the stage."""
        self.stage_path(name)  # validates the name
        stages = self.manifest.get("stages", {})
        if not all(self._is_done(n, stages) for n in (name, *depends_on)):
            return False
        return stages[name]["fingerprint"] == self._fingerprint(name, config, inputs,
                                                                depends_on, seed)

    def record(self, **fields: Any) -> None:
        """Merge top-level fields (inputs, normalisation, ...) into run.json, atomically."""
        reserved = {"format", "stages"} & fields.keys()
        if reserved:
            raise InputError(f"record() cannot set {sorted(reserved)}: they belong to RunDir")
        self._write({**self.manifest, **_jsonable(fields)})

    def summary(self) -> str:
        """A few lines for `orbitforge info RUN`: where, when, with what, and each stage's state."""
        m = self.manifest
        versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
        lines = [f"run folder: {self.root}",
                 f"created:    {m.get('created', '?')}  (orbitforge {m.get('orbitforge', '?')}, "
                 f"format {m.get('format', '?')})",
                 f"versions:   {versions or '?'}"]
        known = {"format", "created", "orbitforge", "versions", "stages"}
        for key in sorted(k for k in m if k not in known):
            lines.append(f"{key + ':':<11} {_shorten(json.dumps(m[key], sort_keys=True))}")
        stages = m.get("stages", {})
        lines.append("stages:" if stages else "stages:     none yet")
        width = max((len(n) for n in stages), default=0)
        for name, st in stages.items():
            status = st.get("status", "?")
            if status == "done" and not (self.root / name).is_dir():
                status = "done (folder missing)"
            line = f"  {name:<{width}}  {status:<6}  {st.get('seconds') or 0.0:8.1f} s"
            scalars = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in (st.get("metrics") or {}).items()
                       if isinstance(v, (int, float, str, bool))]
            if scalars:
                line += "  " + _shorten(" ".join(scalars))
            lines.append(line)
            if st.get("error"):
                lines.append(f"  {'':<{width}}  error: {st['error']}")
        return "\n".join(lines)

    # -- private -------------------------------------------------------------------------------

    def _fingerprint(self, name: str, config: Mapping, inputs: Sequence[Path | str],
                     depends_on: Sequence[str], seed: int | None) -> str:
        stages = self.manifest.get("stages", {})
        deps = []
        for dep in depends_on:
            if not self._is_done(dep, stages):
                raise StageError(f"stage '{name}' depends on stage '{dep}', which has not "
                                 f"completed in {self.root}; run '{dep}' first")
            deps.append(f"{dep}={stages[dep]['fingerprint']}")
        parts = [name, json.dumps(config, sort_keys=True, default=_json_default),
                 *(_fingerprint_input(Path(p)) for p in inputs), *deps]
        if seed is not None:  # seedless runs keep the documented fingerprint recipe exactly
            parts.append(f"seed={seed}")
        return hashlib.sha256(json.dumps(parts).encode()).hexdigest()

    def _is_done(self, name: str, stages: Mapping) -> bool:
        return stages.get(name, {}).get("status") == "done" and (self.root / name).is_dir()

    def _set_stage(self, name: str, entry: dict, t0: float, status: str, metrics: dict,
                   error: str | None) -> float:
        seconds = round(time.perf_counter() - t0, 3)
        m = self.manifest
        m.setdefault("stages", {})[name] = {**entry, "status": status, "finished": _now(),
                                            "seconds": seconds, "metrics": metrics, "error": error}
        self._write(m)
        return seconds

    def _write(self, manifest: Mapping) -> None:
        """Replace run.json atomically: a reader sees the old or the new file, never half."""
        tmp = self.root / f".{MANIFEST}.tmp-{os.getpid()}"
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=2, sort_keys=False)
                f.write("\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.root / MANIFEST)
        finally:
            tmp.unlink(missing_ok=True)

    def _clean_temporaries(self) -> None:
        """Remove what crashed runs left; a stage moved aside but not replaced is put back."""
        removed = 0
        for path in self.root.iterdir():
            found = _TEMP_RE.match(path.name)
            if not found or _pid_alive(found["pid"]):
                continue
            target = self.root / found["name"]
            if found["kind"] == "old" and path.is_dir() and not target.exists():
                os.rename(path, target)
                logger.warning("restored %s, moved aside by a crashed run", target)
                continue
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink()
            removed += 1
        if removed:
            logger.warning("removed %d temporary file(s)/folder(s) left by crashed runs in %s",
                           removed, self.root)


def _swap_in(tmp: Path, final: Path) -> None:
    """Rename the finished temp folder into place, keeping the old one until that worked."""
    old = final.with_name(f".{final.name}.old-{os.getpid()}")
    shutil.rmtree(old, ignore_errors=True)
    if final.exists():
        os.rename(final, old)
    try:
        os.rename(tmp, final)
    except OSError:
        if old.exists():
            os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _fingerprint_input(path: Path) -> str:
    if path.is_file():
        return _fingerprint_file(path)
    if path.is_dir():
        h = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file())
        for p in files:
            h.update(json.dumps([p.relative_to(path).as_posix(), _fingerprint_file(p)]).encode())
        return f"dir:{len(files)}:{h.hexdigest()}"
    raise InputError(f"input {path} does not exist; check the path (relative paths are from "
                     f"{Path.cwd()})")


def _fingerprint_file(path: Path) -> str:
    size = path.stat().st_size
    with open(path, "rb") as f:
        if size <= _HASH_WHOLE_LIMIT:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        else:  # see _HASH_WHOLE_LIMIT for why large files are only sampled
            h = hashlib.sha256(f.read(_HASH_EDGE))
            f.seek(size - _HASH_EDGE)
            h.update(f.read(_HASH_EDGE))
            digest = "edges-" + h.hexdigest()
    return f"file:{size}:{digest}"


def _pid_alive(pid_text: str) -> bool:
    try:
        os.kill(int(pid_text), 0)  # signal 0: existence check only
    except (ValueError, OverflowError, ProcessLookupError):
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def _new_manifest() -> dict:
    from orbitforge import __version__  # lazy: orbitforge/__init__ may import this module

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for dist in _VERSIONED_PACKAGES:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return {"format": FORMAT_VERSION, "created": _now(), "orbitforge": __version__,
            "versions": versions, "stages": {}}


def _json_default(obj: Any) -> Any:
    """JSON for configs and metrics: dataclasses, numpy/torch scalars and arrays, paths, sets."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, (set, frozenset)):
        return sorted(obj, key=str)  # str(set) order varies between processes
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=_json_default))


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0].strip() if lines else f"{type(exc).__name__} with no message"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _shorten(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
