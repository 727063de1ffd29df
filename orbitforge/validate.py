"""The Khronos glTF validator, from Python: `validate_glb(data) -> GltfReport`.

The validator is the reference implementation of the glTF 2.0 spec's rules (npm package
`gltf-validator`, compiled from Dart to JavaScript), so it runs under node: `scripts/setup.sh`
installs it into `tools/node_modules` with `npm ci --prefix tools`, and `tools/validate_gltf.mjs`
feeds it the bytes from stdin and prints its report as JSON.  Node and the package are needed only
when this module is used; without them it raises `ValidatorUnavailableError`, naming the fix.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from orbitforge.errors import InputError, OrbitforgeError

logger = logging.getLogger(__name__)

TOOLS_DIR_ENV = "ORBITFORGE_TOOLS_DIR"
"""Environment variable naming a folder with validate_gltf.mjs and node_modules (default: the
checkout's tools/)."""
_RUNNER = "validate_gltf.mjs"
_SEVERITIES = ("error", "warning", "info", "hint")  # the validator's numeric severities 0..3


class ValidatorUnavailableError(OrbitforgeError, ImportError):
    """node or the npm package `gltf-validator` is missing: an optional tool, like a missing extra."""


@dataclass(frozen=True)
class GltfIssue:
    """One message of the validator: a code (e.g. ACCESSOR_INDEX_OOB), text and where it points."""

    code: str
    message: str
    severity: Literal["error", "warning", "info", "hint"]
    pointer: str = ""
    """JSON pointer into the glTF ("/meshes/0/primitives/0") or "@offset" into a GLB; "" if none."""


@dataclass(frozen=True)
class GltfReport:
    """The validator's verdict.  `messages` holds every issue (no truncation)."""

    errors: int
    warnings: int
    infos: int
    hints: int
    messages: tuple[GltfIssue, ...]
    validator_version: str = ""

    @property
    def ok(self) -> bool:
        """No errors (warnings, infos and hints are allowed)."""
        return self.errors == 0

    def summary(self) -> str:
        """One line: counts and the first error's code and text."""
        first = next((m for m in self.messages if m.severity == "error"), None)
        tail = f"; first error {first.code} at {first.pointer or '?'}: {first.message}" if first else ""
        return f"{self.errors} errors, {self.warnings} warnings, {self.infos} infos, {self.hints} hints{tail}"


def validate_glb(data: bytes | Path | str, *, timeout_s: float = 120.0) -> GltfReport:
    """Validate a GLB (or glTF JSON) with the Khronos glTF validator.

    Args:
        data: the file's bytes, or a path to it.
        timeout_s: give up after this many seconds (the validator reads a 10 MB GLB in about one).
    Returns:
        GltfReport with counts and every message.  A file the validator cannot parse at all is
        reported as one error (code "UNPARSEABLE"), not raised, so broken input is a report.
    Raises:
        ValidatorUnavailableError: node or the npm package is missing; run scripts/setup.sh.
        InputError: `data` is a path that does not exist.

    Example:
        >>> from orbitforge import builtin, mesh
        >>> validate_glb(mesh.to_glb_bytes(builtin.load("toy"))).errors
        0
    """
    if isinstance(data, (str, Path)):
        path = Path(data)
        if not path.is_file():
            raise InputError(f"glTF file not found: {path}")
        data = path.read_bytes()
    node, runner = _find_validator()
    try:
        done = subprocess.run([node, str(runner)], input=bytes(data), capture_output=True, timeout=timeout_s,
                              cwd=runner.parent, check=False)
    except subprocess.TimeoutExpired:
        raise OrbitforgeError(f"the glTF validator did not finish within {timeout_s:.0f} s; pass a larger timeout_s") from None
    if done.returncode != 0:
        err = done.stderr.decode(errors="replace").strip().splitlines()
        raise OrbitforgeError(f"the glTF validator failed (exit {done.returncode}): {err[-1] if err else 'no message'}; "
                              "re-run scripts/setup.sh to reinstall it")
    return _parse(json.loads(done.stdout))


def _find_validator() -> tuple[str, Path]:
    """(node executable, runner script), or ValidatorUnavailableError saying how to install them."""
    tools = Path(os.environ.get(TOOLS_DIR_ENV) or Path(__file__).resolve().parents[1] / "tools")
    node = shutil.which("node")
    if node is None:
        raise ValidatorUnavailableError("the glTF validator needs node, which is not on PATH; "
                                        "run scripts/setup.sh (it installs Debian nodejs and npm)")
    runner = tools / _RUNNER
    if not runner.is_file() or not (tools / "node_modules" / "gltf-validator").is_dir():
        raise ValidatorUnavailableError(f"the npm package gltf-validator is not installed in {tools}; "
                                        "run scripts/setup.sh (or: npm ci --prefix tools)")
    return node, runner


def _parse(result: dict) -> GltfReport:
    """The runner's JSON -> GltfReport."""
    if "rejected" in result:  # not even a GLB/glTF container
        issue = GltfIssue("UNPARSEABLE", str(result["rejected"]), "error")
        return GltfReport(1, 0, 0, 0, (issue,))
    report = result["report"]
    issues = report.get("issues", {})
    messages = tuple(
        GltfIssue(m.get("code", ""), m.get("message", ""), _SEVERITIES[int(m.get("severity", 0))],
                  m.get("pointer") or (f"@{m['offset']}" if "offset" in m else ""))
        for m in issues.get("messages", ())
    )
    out = GltfReport(int(issues.get("numErrors", 0)), int(issues.get("numWarnings", 0)), int(issues.get("numInfos", 0)),
                     int(issues.get("numHints", 0)), messages, str(report.get("validatorVersion", "")))
    if not out.ok:
        logger.info("glTF validator: %s", out.summary())
    return out
