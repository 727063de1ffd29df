"""The stage folders import as one `orbitforge` namespace, editable and from a built wheel."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import orbitforge

REPO = Path(__file__).resolve().parents[1]
STAGES = ("gen", "recon", "export", "viewers")


def test_editable_install_maps_stage_folders():
    import importlib

    for stage in STAGES:
        module = importlib.import_module(f"orbitforge.{stage}")
        assert Path(module.__file__).resolve() == REPO / stage / "__init__.py"


@pytest.mark.slow
def test_built_wheel_imports_the_same_way(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("orbitforge-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "orbitforge/recon/__init__.py" in names and "orbitforge/viewers/preview.py" in names
    assert not any(n.split("/")[0] in STAGES for n in names), "stage folders must not install top-level"
    # the static page travels with the wheel: its template always, its bundle once setup built it
    assert "orbitforge/viewers/web/viewer.html" in names
    if (REPO / "viewers" / "web" / "dist" / "orbitforge-page.js").is_file():
        assert "orbitforge/viewers/web/dist/orbitforge-page.js" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    code = (
        "import orbitforge, orbitforge.cli, orbitforge.gen, orbitforge.recon, orbitforge.export, orbitforge.viewers;"
        "import importlib.util as u; print(orbitforge.recon.__file__); print(u.find_spec('recon'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, check=True, timeout=120,
    ).stdout.split()
    assert Path(out[0]).resolve() == (site / "orbitforge" / "recon" / "__init__.py").resolve()
    assert out[1] == "None"


def test_version_is_single_sourced():
    import importlib.metadata

    assert importlib.metadata.version("orbitforge") == orbitforge.__version__
