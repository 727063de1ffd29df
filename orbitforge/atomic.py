"""Atomic file writes: write under a temporary name beside the target, then rename over it.

Readers and resumed runs never see half a file; a failure leaves the old file (or none) and no
temporary behind.  `RunDir` does the same for whole stage folders.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """Yield a temporary path (same folder, same suffix, so format detection works) that
    replaces `path` when the block succeeds; it is removed when the block raises."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial-{os.getpid()}{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes_atomic(path: Path | str, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
