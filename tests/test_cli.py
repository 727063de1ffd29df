"""The `orbitforge` command: the demo path, resume, and one clear line for every bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orbitforge.cli import main


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).with_name("orbitforge")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600)


def test_render_orbit_writes_a_complete_clip_and_resumes(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["render-orbit", "builtin:toy", "-o", str(run), "--frames", "6", "--size", "48"]) == 0
    for rel in ("run.json", "clip/clip.mp4", "clip/transforms.json", "clip/frames/00005.png", "preview/contact_sheet.png", "preview/turntable.gif"):
        assert (run / rel).is_file(), rel
    sheet = Image.open(run / "preview" / "contact_sheet.png")
    assert sheet.width > 2 * 48 and np.asarray(sheet).std() > 10
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["stages"]["clip"]["status"] == "done"
    assert manifest["stages"]["clip"]["metrics"]["frames"] == 6
    mtime = (run / "clip" / "clip.mp4").stat().st_mtime_ns
    capsys.readouterr()
    assert main(["render-orbit", "builtin:toy", "-o", str(run), "--frames", "6", "--size", "48"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (run / "clip" / "clip.mp4").stat().st_mtime_ns == mtime
    # a changed setting redoes the stage
    assert main(["render-orbit", "builtin:toy", "-o", str(run), "--frames", "4", "--size", "48"]) == 0
    assert len(list((run / "clip" / "frames").iterdir())) == 4
    assert main(["info", str(run)]) == 0
    assert "clip" in capsys.readouterr().out


def test_render_orbit_of_a_real_asset(spot_glb, tmp_path):
    assert main(["render-orbit", str(spot_glb), "-o", str(tmp_path / "r"), "--frames", "4", "--size", "64"]) == 0
    frames = np.stack([np.asarray(Image.open(p)) for p in sorted((tmp_path / "r" / "clip" / "frames").iterdir())])
    assert (frames < 250).any(axis=-1).mean() > 0.1  # the cow covers a good part of each frame


@pytest.fixture
def faceless_obj(tmp_path) -> Path:
    path = tmp_path / "points.obj"
    path.write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\n")
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["render-orbit", "missing.glb"], "asset not found"),
        (["render-orbit", "FACELESS"], "no triangle faces"),
        (["render-orbit", "builtin:nope"], "unknown built-in asset"),
        (["render-orbit", "builtin:toy", "--frames", "0"], "must be at least 1"),
        (["render-orbit", "builtin:toy", "--size", "0"], "must be at least 1"),
        (["render-orbit", "builtin:toy", "--size", "100000"], "limit"),
        (["render-orbit", "builtin:toy", "--size", "10000", "--supersample", "2"], "lower --supersample"),
        (["render-orbit", "builtin:toy", "--size", "16000", "--supersample", "1"], "GiB in memory"),
        (["render-orbit", "builtin:toy", "--fov", "0"], "field of view"),
        (["info", "."], "not a run folder"),
        (["splat", ".", "--background", "2,0,0"], "R,G,B in 0-1"),
        (["splat", ".", "--background", "red"], "auto, white, black"),
        (["poses", "missing.mp4", "--colmap-threads", "0"], "must be at least 1"),
    ],
)
def test_bad_input_gives_one_line_and_writes_nothing(args, message, tmp_path, faceless_obj):
    out = tmp_path / "out"
    args = [str(faceless_obj) if a == "FACELESS" else a for a in args]
    if args[0] == "render-orbit":
        args += ["-o", str(out)]
    result = run_cli(*args)
    assert result.returncode != 0
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert lines and message in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert len(lines) == 1
    assert not out.exists(), "nothing may be written for a bad input"


def test_output_that_is_a_file_is_refused(tmp_path):
    target = tmp_path / "taken"
    target.write_text("keep me")
    result = run_cli("render-orbit", "builtin:toy", "-o", str(target), "--frames", "2", "--size", "16")
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert target.read_text() == "keep me"


def test_debug_shows_the_traceback(tmp_path):
    result = run_cli("--debug", "render-orbit", "missing.glb", "-o", str(tmp_path / "o"))
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_a_failing_stage_keeps_earlier_work(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert main(["render-orbit", "builtin:toy", "-o", str(run), "--frames", "3", "--size", "32"]) == 0
    before = {p: p.read_bytes() for p in (run / "clip").rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr("orbitforge.clip.Clip.save", broken)
    assert main(["render-orbit", "builtin:toy", "-o", str(run), "--frames", "5", "--size", "32"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "disk full" in err[0] and "re-run" in err[0]
    assert {p: p.read_bytes() for p in (run / "clip").rglob("*") if p.is_file()} == before
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_sigterm_stops_a_long_splat_run_cleanly_with_its_steps_kept(tmp_path):
    """`kill`, a scheduler's preemption or a container stop (background jobs ignore Ctrl-C) ends a
    run the way Ctrl-C does: one line, exit code 130, a checkpoint of the steps done for the next
    run to resume from, and no half-written stage folder."""
    import signal
    import time

    from orbitforge.viewers.live import LIVE_SNAPSHOT

    run = tmp_path / "run"
    assert main(["render-orbit", "builtin:toy", "-o", str(run), "--frames", "6", "--size", "32"]) == 0
    exe = Path(sys.executable).with_name("orbitforge")
    proc = subprocess.Popen([str(exe), "splat", str(run), "--steps", "1000000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    give_up = time.monotonic() + 600  # not a speed limit: only so that a broken run cannot hang the suite
    while not list(run.glob(f".splats.partial-*/{LIVE_SNAPSHOT}")):  # written after the first step
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < give_up, "splat training never started"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert (run / ".checkpoints" / "splats.safetensors").is_file()
    assert not list(run.glob(".splats.partial-*"))
