"""`orbitforge poses`: end to end on real photos, resume, and a failure that keeps its report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from orbitforge.cli import main

from conftest import data_path


@pytest.mark.slow
def test_poses_on_photos_then_resume(tmp_path, capsys):
    run = tmp_path / "kermit"
    assert main(["poses", str(data_path("multiview/bundler_kermit")), "-o", str(run)]) == 0
    for rel in ("clip/clip.json", "clip/ingest.json", "poses/transforms.json", "poses/report.json",
                "poses/sparse/0/images.bin", "poses/camera_path.png", "preview/contact_sheet.png", "preview/camera_path.png"):
        assert (run / rel).is_file(), rel
    report = json.loads((run / "poses" / "report.json").read_text())
    assert report["registered"] >= 10 and report["intrinsics"] == "exif"
    transforms = json.loads((run / "poses" / "transforms.json").read_text())
    for frame in transforms["frames"]:
        assert (run / "poses" / frame["file_path"]).is_file()  # nerfstudio resolves paths from here
    capsys.readouterr()
    assert main(["poses", str(run)]) == 0  # a run folder as INPUT resumes it
    assert "already complete, skipped" in capsys.readouterr().out
    from orbitforge.clip import Clip

    posed = Clip.load(run / "poses")
    assert posed.cameras is not None and len(posed) == report["registered"]


def test_poses_failure_keeps_the_report_and_says_why(tmp_path, capsys):
    photos = tmp_path / "noise"
    photos.mkdir()
    rng = np.random.default_rng(2)
    for i in range(5):
        Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(photos / f"{i}.png")
    run = tmp_path / "run"
    assert main(["poses", str(photos), "-o", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "report kept" in err[0]
    assert (run / "poses" / "report.json").is_file() and (run / "clip" / "clip.json").is_file()


def test_poses_argument_errors(tmp_path, capsys):
    assert main(["poses", str(tmp_path / "missing.mp4"), "-o", str(tmp_path / "r")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["poses", str(tmp_path)]) == 2  # a plain folder without -o
    assert "-o" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
