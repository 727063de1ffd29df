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
