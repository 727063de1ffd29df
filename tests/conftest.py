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
