"""A helper process whose output is kept in a log file: COLMAP's steps and nerfstudio run this way.

The output (stdout and stderr together) is appended to the log line by line and handed to an
optional callback (progress, echo); when the caller is interrupted (Ctrl-C, or SIGTERM under
`orbitforge.signals.terminate_as_interrupt`) the helper is stopped with it instead of running on;
a non-zero exit becomes one StageError line with the last line of output that names an error.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Callable

from orbitforge.errors import StageError

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def run_logged(command: list[str], log: Path, failure: str, *, cwd: Path | None = None, env: dict | None = None,
               on_line: Callable[[str], None] | None = None, error_marks: tuple[str, ...] = ("Error", "error")) -> None:
    """Run `command` with its output appended to `log`; a non-zero exit raises
    StageError("{failure} (exit code N): {last line with an error mark}; full log in {log}")."""
    tail: list[str] = []
    with open(log, "a") as out, subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                                 stderr=subprocess.STDOUT, text=True, errors="replace",
                                                 bufsize=1) as proc:
        try:
            for line in proc.stdout:
                out.write(line)
                text = ANSI.sub("", line).strip()
                if text:
                    tail = (tail + [text])[-40:]
                if on_line is not None:
                    on_line(line)
        except BaseException:  # Ctrl-C, SIGTERM: the helper stops with its caller
            proc.terminate()
            raise
        code = proc.wait()
    if code != 0:
        reason = next((t for t in reversed(tail) if any(mark in t for mark in error_marks)),
                      tail[-1] if tail else "no output")
        how = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        raise StageError(f"{failure} ({how}): {reason[:300]}; full log in {log}")
