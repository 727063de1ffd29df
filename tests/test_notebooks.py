"""The notebooks in notebooks/ run end to end at their small settings, so they never rot.

Each notebook is executed top to bottom by nbclient in a fresh `python3` kernel (the venv's
ipykernel), with `ORBITFORGE_NOTEBOOK_SMALL=1` and its outputs sent to a temporary folder; the
test then checks the files the notebook promises its reader. The notebooks are committed
without outputs, which the last test checks.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from conftest import DATA, REPO, data_path

pytestmark = pytest.mark.slow

NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 600
"""Per cell; at small settings the slowest cell (splats + mesh export) takes well under a minute."""


def _nbclient():
    try:
        import nbclient
        import nbformat
        from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel
    except ImportError as exc:
        pytest.skip(f"needs nbclient, nbformat and ipykernel ({exc.name} missing): run `make test`, which installs "
                    "the dev extras")
    try:
        KernelSpecManager().get_kernel_spec("python3")
    except NoSuchKernel:
        pytest.skip("needs the python3 Jupyter kernel (ipykernel): run `make test`, which installs the dev extras")
    return nbclient, nbformat


def _execute(name: str, out: Path, monkeypatch):
    """Run notebooks/NAME in a fresh kernel at small settings; the executed notebook."""
    nbclient, nbformat = _nbclient()
    monkeypatch.setenv("ORBITFORGE_NOTEBOOK_SMALL", "1")
    monkeypatch.setenv("ORBITFORGE_NOTEBOOK_OUT", str(out))
    monkeypatch.setenv("ORBITFORGE_TEST_DATA", str(DATA))
    monkeypatch.delenv("ORBITFORGE_NOTEBOOK_VIDEO", raising=False)
    monkeypatch.delenv("ORBITFORGE_MODEL", raising=False)
    monkeypatch.setenv("TQDM_DISABLE", "1")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    client = nbclient.NotebookClient(notebook, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(NOTEBOOKS)}})
    t0 = time.perf_counter()
    try:
        client.execute()  # raises CellExecutionError, with the cell and its traceback, on any failure
    finally:
        nbformat.write(notebook, out / name)  # the executed copy, outputs and all, to look at
    print(f"{name}: {time.perf_counter() - t0:.1f} s at small settings")
    return notebook


def _pictures_shown(notebook) -> int:
    """Images the reader sees inline (PNG, JPEG or GIF outputs)."""
    return sum(any(k.startswith("image/") for k in output.get("data", {}))
               for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs)


def _files_exist(root: Path, names: list[str]) -> None:
    missing = [n for n in names if not (root / n).is_file() or (root / n).stat().st_size == 0]
    assert not missing, f"missing or empty under {root}: {missing}"


def test_video_to_asset(tmp_path, monkeypatch):
    data_path("assets/spot/spot_textured.glb")  # the stand-in video's subject (the toy is too symmetric for SfM)
    notebook = _execute("01_video_to_asset.ipynb", tmp_path, monkeypatch)
    assert _pictures_shown(notebook) >= 5  # frames, camera path, held-out renders, turntable, asset sheet
    run = tmp_path / "video_to_asset"
    _files_exist(run, ["asset/asset.glb", "asset/asset.usdz", "asset/splats.ply", "asset/validation.json",
                       "splats/splats.ply", "poses/sparse/0/cameras.bin",
                       "preview/contact_sheet.png", "preview/camera_path.png", "preview/splat_heldout.png",
                       "preview/asset_turntable.gif"])
    validation = json.loads((run / "asset" / "validation.json").read_text())
    assert validation["ok"] and validation["errors"] == 0
    stages = json.loads((run / "run.json").read_text())["stages"]
    assert all(stages[s]["status"] == "done" for s in ("clip", "poses", "splats", "asset"))
    assert stages["poses"]["metrics"]["registered"] >= 0.9 * stages["clip"]["metrics"]["frames"]


def test_text_to_asset(tmp_path, monkeypatch):
    notebook = _execute("02_text_to_asset.ipynb", tmp_path, monkeypatch)
    assert _pictures_shown(notebook) >= 3  # generated orbit, held-out renders, turntable
    run = tmp_path / "text_to_asset"
    _files_exist(run, ["clip/transforms.json", "clip/clip.mp4", "splats/splats.ply", "asset/asset.glb",
                       "asset/splats.splat", "asset/validation.json", "preview/contact_sheet.png"])
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["inputs"]["caption"] == "a red mug with white stripes"  # recaptioned from "crimson"
    assert Path(manifest["inputs"]["model"]) == REPO / "checkpoints" / "orbit-starter"  # the shipped model
    assert "poses" not in manifest["stages"]  # known cameras: no SfM
    assert json.loads((run / "asset" / "validation.json").read_text())["errors"] == 0


def test_train_your_own_orbit_model(tmp_path, monkeypatch):
    notebook = _execute("03_train_your_own_orbit_model.ipynb", tmp_path, monkeypatch)
    assert _pictures_shown(notebook) >= 6  # dataset, two loss curves, two sample grids, the generated orbit
    root = tmp_path / "train_your_own"
    _files_exist(root, ["world/dataset.json", "vae/loss.png", "vae/vae/config.json", "dit/loss.png",
                        "dit/pipeline/model_index.json", "generated/contact_sheet.png"])
    assert list((root / "vae" / "samples").glob("step-*.png")) and list((root / "dit" / "samples").glob("step-*.png"))


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_committed_without_outputs(path):
    _, nbformat = _nbclient()
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and not any(cell.outputs or cell.execution_count for cell in code), \
        f"{path.name} has outputs: clear them before committing (jupyter nbconvert --clear-output --inplace)"
    assert 'os.environ.get("ORBITFORGE_NOTEBOOK_SMALL") == "1"' in code[0].source
