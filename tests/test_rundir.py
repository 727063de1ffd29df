"""RunDir: atomic stage folders, fingerprint-based skipping, failures that keep earlier work."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orbitforge import rundir
from orbitforge.errors import InputError, StageError
from orbitforge.rundir import RunDir, StageResult


class Counter:
    """A stage function that writes one file and counts its calls."""

    def __init__(self, text: str = "out", metrics: dict | None = None):
        self.calls = 0
        self.text = text
        self.metrics = {"frames": 3} if metrics is None else metrics

    def __call__(self, out: Path) -> dict:
        self.calls += 1
        assert out.is_dir() and not any(out.iterdir()), "stage must get a fresh, empty folder"
        assert out.name.startswith(".") and ".partial-" in out.name
        (out / "data.txt").write_text(self.text)
        return self.metrics


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def run(tmp_path: Path) -> RunDir:
    return RunDir.open(tmp_path / "run")


def test_init_touches_no_disk(tmp_path: Path) -> None:
    RunDir(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_open_creates_manifest_with_versions(tmp_path: Path) -> None:
    run = RunDir.open(tmp_path / "a" / "run")
    m = json.loads((tmp_path / "a" / "run" / "run.json").read_text())
    assert m == run.manifest
    assert m["format"] == rundir.FORMAT_VERSION
    assert m["stages"] == {}
    assert {"python", "platform", "numpy"} <= m["versions"].keys()
    assert m["created"] and m["orbitforge"]
    # Reopening keeps the manifest rather than recreating it.
    run.record(inputs={"asset": "x.glb"})
    assert RunDir.open(run.root, create=False).manifest["inputs"] == {"asset": "x.glb"}


def test_open_file_path_is_one_line_input_error(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("not a folder")
    with pytest.raises(InputError) as info:
        RunDir.open(f)
    assert "\n" not in str(info.value) and str(f) in str(info.value)
    assert isinstance(info.value, ValueError)


def test_open_without_create_needs_a_run_folder(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    with pytest.raises(InputError, match="not a run folder"):
        RunDir.open(tmp_path / "plain", create=False)
    with pytest.raises(InputError, match="not a run folder"):
        RunDir.open(tmp_path / "missing", create=False)
    assert not (tmp_path / "missing").exists()


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_open_read_only_folder_is_input_error(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    try:
        with pytest.raises(InputError, match="writable"):
            RunDir.open(ro / "run")
    finally:
        ro.chmod(0o700)


def test_open_unwritable_folder_is_input_error(tmp_path: Path, monkeypatch) -> None:
    # Works as root too, where permission bits are ignored: pretend the check fails.
    run = RunDir.open(tmp_path / "run")
    monkeypatch.setattr(rundir.os, "access", lambda path, mode: False)
    with pytest.raises(InputError, match="not writable") as info:
        RunDir.open(run.root)
    assert "\n" not in str(info.value)


def test_open_damaged_manifest_is_input_error(tmp_path: Path) -> None:
    run = RunDir.open(tmp_path / "run")
    (run.root / "run.json").write_text("{ half")
    with pytest.raises(InputError, match="not valid JSON"):
        RunDir.open(run.root)


def test_run_stage_writes_outputs_and_records_metrics(run: RunDir) -> None:
    fn = Counter(metrics={"frames": 3, "psnr": 31.25})
    res = run.run_stage("clip", fn, config={"fps": 8}, seed=7)
    assert isinstance(res, StageResult)
    assert res == StageResult("clip", run.root / "clip", False, {"frames": 3, "psnr": 31.25},
                              res.seconds)
    assert run.stage_path("clip") == res.path
    assert (res.path / "data.txt").read_text() == "out"
    st = run.manifest["stages"]["clip"]
    assert st["status"] == "done" and st["error"] is None
    assert st["metrics"] == {"frames": 3, "psnr": 31.25}
    assert st["config"] == {"fps": 8} and st["seed"] == 7
    assert len(st["fingerprint"]) == 64 and st["seconds"] >= 0
    assert st["started"] and st["finished"]
    assert not list(run.root.glob(".*"))  # no temp files or folders left


def test_none_metrics_become_empty_dict(run: RunDir) -> None:
    res = run.run_stage("clip", lambda out: None)
    assert res.metrics == {} and res.path.is_dir()


def test_same_config_and_inputs_skip(run: RunDir, tmp_path: Path) -> None:
    video = tmp_path / "video.mp4"
    video.write_bytes(b"frames")
    fn = Counter()
    first = run.run_stage("clip", fn, config={"fps": 8}, inputs=[video])
    assert run.is_current("clip", config={"fps": 8}, inputs=[video])
    second = run.run_stage("clip", fn, config={"fps": 8}, inputs=[str(video)])
    assert fn.calls == 1
    assert second.skipped and not first.skipped
    assert second.metrics == first.metrics and second.path == first.path


def test_config_change_reruns(run: RunDir) -> None:
    fn = Counter()
    run.run_stage("clip", fn, config={"fps": 8})
    assert not run.is_current("clip", config={"fps": 12})
    assert not run.run_stage("clip", fn, config={"fps": 12}).skipped
    assert fn.calls == 2


def test_seed_change_reruns(run: RunDir) -> None:
    fn = Counter()
    run.run_stage("clip", fn, seed=1)
    run.run_stage("clip", fn, seed=1)
    run.run_stage("clip", fn, seed=2)
    assert fn.calls == 2


def test_input_content_change_reruns(run: RunDir, tmp_path: Path) -> None:
    video = tmp_path / "video.mp4"
    video.write_bytes(b"frames v1")
    fn = Counter()
    run.run_stage("clip", fn, inputs=[video])
    video.write_bytes(b"frames v2")  # same size, different content
    assert not run.is_current("clip", inputs=[video])
    run.run_stage("clip", fn, inputs=[video])
    assert fn.calls == 2


def test_directory_input_change_reruns(run: RunDir, tmp_path: Path) -> None:
    images = tmp_path / "images"
    (images / "sub").mkdir(parents=True)
    (images / "a.png").write_bytes(b"a")
    (images / "sub" / "b.png").write_bytes(b"b")
    fn = Counter()
    run.run_stage("clip", fn, inputs=[images])
    run.run_stage("clip", fn, inputs=[images])
    assert fn.calls == 1
    (images / "sub" / "b.png").rename(images / "sub" / "c.png")  # rename only
    run.run_stage("clip", fn, inputs=[images])
    assert fn.calls == 2


def test_large_file_is_fingerprinted_by_size_and_ends(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:  # sparse: cheap to create
        f.truncate(rundir._HASH_WHOLE_LIMIT + 3 * rundir._HASH_EDGE)
    base = rundir._fingerprint_input(big)
    with open(big, "r+b") as f:
        f.seek(rundir._HASH_WHOLE_LIMIT // 2)
        f.write(b"x")
    assert rundir._fingerprint_input(big) == base  # the documented trade-off
    with open(big, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        f.write(b"y")
    assert rundir._fingerprint_input(big) != base


def test_downstream_reruns_when_upstream_changes(run: RunDir) -> None:
    up, down = Counter(), Counter()
    run.run_stage("poses", up, config={"matcher": "sequential"})
    run.run_stage("splats", down, depends_on=["poses"])
    run.run_stage("poses", up, config={"matcher": "sequential"})
    run.run_stage("splats", down, depends_on=["poses"])
    assert (up.calls, down.calls) == (1, 1)
    run.run_stage("poses", up, config={"matcher": "exhaustive"})
    assert not run.is_current("splats", depends_on=["poses"])
    assert not run.run_stage("splats", down, depends_on=["poses"]).skipped
    assert (up.calls, down.calls) == (2, 2)


def test_failure_keeps_previous_output_and_other_stages(run: RunDir) -> None:
    run.run_stage("clip", Counter("clip v1"))
    run.run_stage("poses", Counter("poses v1"), config={"n": 1}, depends_on=["clip"])
    before = {name: _snapshot(run.root / name) for name in ("clip", "poses")}

    def boom(out: Path) -> dict:
        (out / "half.txt").write_text("half-written")
        raise RuntimeError("COLMAP registered 2 of 48 frames\nsecond line of detail")

    with pytest.raises(StageError) as info:
        run.run_stage("poses", boom, config={"n": 2}, depends_on=["clip"])
    msg = str(info.value)
    assert "stage 'poses' failed: COLMAP registered 2 of 48 frames" in msg
    assert "second line" not in msg and "RuntimeError" not in msg
    assert str(run.root) in msg and "re-run" in msg
    assert isinstance(info.value.__cause__, RuntimeError)

    assert not list(run.root.glob(".*partial*"))
    assert {name: _snapshot(run.root / name) for name in ("clip", "poses")} == before
    m = json.loads((run.root / "run.json").read_text())  # still valid JSON
    assert m["stages"]["poses"]["status"] == "failed"
    assert m["stages"]["poses"]["error"] == "COLMAP registered 2 of 48 frames"
    assert m["stages"]["clip"]["status"] == "done"
    # A failed stage is no longer current, even with its old config.
    assert not run.is_current("poses", config={"n": 1}, depends_on=["clip"])
    # Re-running after fixing the cause resumes: clip is skipped, poses runs.
    clip_again = run.run_stage("clip", Counter("clip v1"))
    assert clip_again.skipped
    res = run.run_stage("poses", Counter("poses v2"), config={"n": 2}, depends_on=["clip"])
    assert (res.path / "data.txt").read_text() == "poses v2"
    assert run.manifest["stages"]["poses"]["status"] == "done"
    assert run.manifest["stages"]["poses"]["error"] is None


def test_failure_without_message_still_gives_a_line(run: RunDir) -> None:
    def boom(out: Path) -> None:
        raise ValueError()

    with pytest.raises(StageError, match="no message"):
        run.run_stage("clip", boom)


def test_non_dict_return_is_a_stage_failure(run: RunDir) -> None:
    with pytest.raises(StageError, match="return a dict"):
        run.run_stage("clip", lambda out: [1, 2])
    assert not (run.root / "clip").exists()


def test_keyboard_interrupt_cleans_up_and_propagates(run: RunDir) -> None:
    run.run_stage("clip", Counter("v1"))

    def interrupted(out: Path) -> dict:
        (out / "half.txt").write_text("x")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run.run_stage("clip", interrupted, config={"changed": True})
    assert not list(run.root.glob(".*partial*"))
    assert (run.root / "clip" / "data.txt").read_text() == "v1"
    json.loads((run.root / "run.json").read_text())


def test_depends_on_missing_stage_is_stage_error(run: RunDir) -> None:
    fn = Counter()
    with pytest.raises(StageError, match="run 'poses' first"):
        run.run_stage("splats", fn, depends_on=["poses"])
    assert fn.calls == 0
    assert not run.is_current("splats", depends_on=["poses"])


def test_depends_on_failed_stage_is_stage_error(run: RunDir) -> None:
    with pytest.raises(StageError):
        run.run_stage("poses", lambda out: 1 / 0)
    with pytest.raises(StageError, match="run 'poses' first"):
        run.run_stage("splats", Counter(), depends_on=["poses"])


def test_missing_input_is_input_error(run: RunDir, tmp_path: Path) -> None:
    fn = Counter()
    missing = tmp_path / "nope.mp4"
    with pytest.raises(InputError, match="nope.mp4"):
        run.run_stage("clip", fn, inputs=[missing])
    assert fn.calls == 0 and not (run.root / "clip").exists()


@pytest.mark.parametrize("name", ["", ".hidden", "a/b", "..", "run.json", "-x"])
def test_bad_stage_names_are_rejected(run: RunDir, name: str) -> None:
    with pytest.raises(InputError):
        run.stage_path(name)


def test_record_merges_top_level_fields_atomically(run: RunDir) -> None:
    run.record(inputs={"asset": "chair.glb"})
    run.record(normalisation={"scale": 0.5, "centre": (0.0, 1.0, 2.0)})
    m = run.manifest
    assert m["inputs"] == {"asset": "chair.glb"}
    assert m["normalisation"] == {"scale": 0.5, "centre": [0.0, 1.0, 2.0]}
    assert m["format"] == rundir.FORMAT_VERSION
    with pytest.raises(InputError):
        run.record(stages={})
    assert sorted(p.name for p in run.root.iterdir()) == ["run.json"]


def test_summary_mentions_each_stage_and_status(run: RunDir) -> None:
    run.record(inputs={"video": "chair.mp4"})
    run.run_stage("clip", Counter(metrics={"frames": 48, "psnr": 31.2345}))

    def boom(out: Path) -> None:
        raise RuntimeError("no frames registered")

    with pytest.raises(StageError):
        run.run_stage("poses", boom, depends_on=["clip"])
    text = run.summary()
    assert str(run.root) in text and "created" in text and "python" in text
    assert "chair.mp4" in text
    clip_line = next(line for line in text.splitlines() if line.strip().startswith("clip"))
    assert "done" in clip_line and "frames=48" in clip_line and "psnr=31.23" in clip_line
    poses_line = next(line for line in text.splitlines() if line.strip().startswith("poses"))
    assert "failed" in poses_line
    assert "error: no frames registered" in text


def test_summary_of_empty_run(run: RunDir) -> None:
    assert "none yet" in run.summary()


def test_stale_partials_are_cleaned_on_open(tmp_path: Path) -> None:
    run = RunDir.open(tmp_path / "run")
    run.run_stage("clip", Counter())
    dead_pid = 2**31 - 1  # larger than any Linux pid_max
    stale = [run.root / f".clip.partial-{dead_pid}", run.root / ".poses.partial-oops"]
    for folder in stale:
        (folder / "deep").mkdir(parents=True)
        (folder / "deep" / "half.bin").write_bytes(b"\0" * 10)
    (run.root / f".run.json.tmp-{dead_pid}").write_text("{")
    live = run.root / f".splats.partial-{os.getpid()}"  # a run still in progress: kept
    live.mkdir()
    RunDir.open(run.root)
    assert not any(p.exists() for p in stale)
    assert not (run.root / f".run.json.tmp-{dead_pid}").exists()
    assert live.exists()
    assert (run.root / "clip" / "data.txt").exists()


def test_stage_moved_aside_by_a_crash_is_restored(tmp_path: Path) -> None:
    run = RunDir.open(tmp_path / "run")
    run.run_stage("clip", Counter("v1"))
    # A crash between moving the old output aside and renaming the new one in.
    os.rename(run.root / "clip", run.root / f".clip.old-{2**31 - 1}")
    RunDir.open(run.root)
    assert (run.root / "clip" / "data.txt").read_text() == "v1"


def test_numpy_metrics_and_dataclass_config_are_recorded_as_json(run: RunDir) -> None:
    import dataclasses

    import numpy as np

    @dataclasses.dataclass(frozen=True)
    class Cfg:
        iters: int = 10
        tags: frozenset = frozenset({"b", "a"})

    res = run.run_stage("splats", lambda out: {"psnr": np.float32(30.5), "hist": np.arange(3)},
                        config={"train": Cfg()})
    assert res.metrics == {"psnr": 30.5, "hist": [0, 1, 2]}
    st = run.manifest["stages"]["splats"]
    assert st["config"] == {"train": {"iters": 10, "tags": ["a", "b"]}}
    assert run.is_current("splats", config={"train": Cfg()})
