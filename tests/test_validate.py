"""The Khronos glTF validator wrapper: clean files pass, broken ones report errors, a missing
validator names scripts/setup.sh."""

from __future__ import annotations

import json
import struct

import pytest

from orbitforge import builtin
from orbitforge.errors import InputError
from orbitforge.mesh import to_glb_bytes
from orbitforge.validate import TOOLS_DIR_ENV, ValidatorUnavailableError, validate_glb


@pytest.fixture(scope="module")
def toy_glb() -> bytes:
    return to_glb_bytes(builtin.load("toy"))


@pytest.fixture
def validator(toy_glb):
    """Skip (naming the fix) where node or the npm package is not installed."""
    try:
        validate_glb(toy_glb)
    except ValidatorUnavailableError as exc:
        pytest.skip(str(exc))


def _with_json(glb: bytes, edit) -> bytes:
    """The GLB with its JSON chunk edited by `edit(dict)`, lengths and padding kept valid."""
    json_len = struct.unpack_from("<I", glb, 12)[0]
    doc = json.loads(glb[20 : 20 + json_len])
    edit(doc)
    text = json.dumps(doc).encode()
    text += b" " * (-len(text) % 4)  # chunks are 4-byte aligned, JSON padded with spaces
    body = struct.pack("<I", len(text)) + glb[16:20] + text + glb[20 + json_len :]
    return glb[:8] + struct.pack("<I", 12 + len(body)) + body


def test_builtin_assets_pass(validator, toy_glb):
    report = validate_glb(toy_glb)
    assert report.ok and report.errors == 0, report.summary()
    assert report.validator_version
    globe = validate_glb(to_glb_bytes(builtin.load("globe")))
    assert globe.errors == 0, globe.summary()


def test_a_path_is_read(validator, toy_glb, tmp_path):
    path = tmp_path / "toy.glb"
    path.write_bytes(toy_glb)
    assert validate_glb(path).errors == 0
    with pytest.raises(InputError, match="not found"):
        validate_glb(tmp_path / "missing.glb")


def _accessor_past_its_buffer(doc: dict) -> None:
    doc["accessors"][0]["count"] += 1000


def _index_out_of_range(doc: dict) -> None:
    doc["meshes"][0]["primitives"][0]["indices"] = 999


@pytest.mark.parametrize("break_it, code", [
    (lambda glb: glb[:100], "GLB_UNEXPECTED_END_OF_CHUNK_DATA"),
    (lambda glb: b"not a glb at all", None),
    (lambda glb: _with_json(glb, _accessor_past_its_buffer), "ACCESSOR_TOO_LONG"),
    (lambda glb: _with_json(glb, _index_out_of_range), "UNRESOLVED_REFERENCE"),
])
def test_broken_files_report_errors(validator, toy_glb, break_it, code):
    report = validate_glb(break_it(toy_glb))
    assert not report.ok and report.errors >= 1
    assert sum(m.severity == "error" for m in report.messages) == report.errors
    if code:
        assert code in {m.code for m in report.messages}, report.summary()


def test_a_missing_package_names_the_setup_script(tmp_path, monkeypatch, toy_glb):
    monkeypatch.setenv(TOOLS_DIR_ENV, str(tmp_path))
    with pytest.raises(ValidatorUnavailableError, match="scripts/setup.sh") as info:
        validate_glb(toy_glb)
    assert isinstance(info.value, ImportError)


def test_missing_node_names_the_setup_script(monkeypatch, toy_glb):
    monkeypatch.setenv("PATH", "")
    with pytest.raises(ValidatorUnavailableError, match="scripts/setup.sh"):
        validate_glb(toy_glb)


# --- export.validation: the per-file validators behind RUN/asset/validation.json -------------


def test_export_validation_counts_real_errors_and_waives_only_khr_semantics(validator, toy_glb, tmp_path):
    from orbitforge.export.validation import ExportValidationError, raise_on_errors, validate_outputs

    good = tmp_path / "good.glb"
    good.write_bytes(toy_glb)
    broken = tmp_path / "broken.glb"
    broken.write_bytes(_with_json(toy_glb, _index_out_of_range))
    # a custom semantic that is not KHR_gaussian_splatting's stays an error
    other = tmp_path / "other.glb"
    other.write_bytes(_with_json(toy_glb, lambda d: d["meshes"][0]["primitives"][0]["attributes"].update(
        {"EXT_foo:BAR": d["meshes"][0]["primitives"][0]["attributes"]["POSITION"]})))
    report = validate_outputs([good, broken, other], tmp_path)
    files = {f["file"]: f for f in report["files"]}
    assert files["good.glb"]["errors"] == 0 and files["broken.glb"]["errors"] >= 1
    assert files["other.glb"]["errors"] >= 1 and files["other.glb"]["waived"] == 0
    with pytest.raises(ExportValidationError) as info:
        raise_on_errors(report)
    assert "\n" not in str(info.value) and "broken.glb" in str(info.value)


def test_export_validation_checks_khr_rules_itself(validator, tmp_path):
    import torch

    from orbitforge.export.splat_formats import _pack_glb, khr_glb_bytes
    from orbitforge.export.validation import validate_file
    from orbitforge.gaussians import GaussianScene

    g = torch.Generator().manual_seed(0)
    scene = GaussianScene(torch.randn(20, 3, generator=g), torch.randn(20, 3, generator=g), torch.randn(20, 4, generator=g),
                          torch.randn(20, generator=g), torch.randn(20, 4, 3, generator=g))
    path = tmp_path / "s.glb"
    path.write_bytes(khr_glb_bytes(scene))
    ok = validate_file(path)
    assert ok.errors == 0 and ok.waived == 7  # ROTATION, SCALE, OPACITY, 1 + 3 SH (glTF-Validator#252)
    bad = _with_json(path.read_bytes(), lambda d: d["meshes"][0]["primitives"][0].update(mode=4))
    path.write_bytes(bad)
    assert any("mode POINTS" in m for m in validate_file(path).messages)


def test_export_validation_of_usd_ply_and_splat(tmp_path):
    import numpy as np
    import plyfile
    from pxr import Usd, UsdGeom

    from orbitforge.export.validation import validate_file

    stage = Usd.Stage.CreateNew(str(tmp_path / "bare.usda"))
    UsdGeom.Xform.Define(stage, "/root")
    stage.GetRootLayer().Save()
    report = validate_file(tmp_path / "bare.usda")
    assert report.errors >= 3 and any("upAxis" in m for m in report.messages)

    rows = np.zeros(3, dtype=[(n, "<f4") for n in ("x", "y", "z", "opacity")])
    plyfile.PlyData([plyfile.PlyElement.describe(rows, "vertex")]).write(str(tmp_path / "short.ply"))
    assert validate_file(tmp_path / "short.ply").errors >= 1

    (tmp_path / "bad.splat").write_bytes(b"\0" * 33)
    assert validate_file(tmp_path / "bad.splat").errors == 1
