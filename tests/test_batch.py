"""`orbitforge batch`: items from prompt lists, manifests and folders; each item's CLI steps as Ray
tasks on a local 2-CPU Ray; the index; resume.

The end-to-end test uses a tiny random orbit pipeline (as test_gen_train does), so a prompt goes
generate -> splats -> validated GLB in seconds and needs no COLMAP; the bad item is a "video"
of random bytes, which fails at ingest with a one-line reason.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from orbitforge.batch import BatchItem, item_record, is_finished, parse_settings, plan_steps, read_items
from orbitforge.cli import main
from orbitforge.errors import InputError

from conftest import make_tiny_bert, make_tiny_orbit_pipeline


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory) -> Path:
    text_model = make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), "a red blue green mug vase box".split())
    return make_tiny_orbit_pipeline(tmp_path_factory.mktemp("pipe") / "orbit", text_model)


# -- items and settings (no Ray) ---------------------------------------------------------------


def test_prompt_list_csv_jsonl_and_folder_give_items(tmp_path):
    (tmp_path / "prompts.txt").write_text("# props\na red mug\n\n  a red mug  \nA Blue Vase!\n")
    items = read_items(tmp_path / "prompts.txt")
    assert [(i.name, i.kind, i.source) for i in items] == [("a-red-mug", "prompt", "a red mug"),
                                                           ("a-red-mug-2", "prompt", "a red mug"),
                                                           ("a-blue-vase", "prompt", "A Blue Vase!")]
    assert items[2].origin == "prompts.txt line 5"

    (tmp_path / "m.csv").write_text("prompt,path,Seed,splat-steps,name\na mug,,3,40,\n,clips/spin.mp4,,100,spin\n")
    mug, spin = read_items(tmp_path / "m.csv")
    assert mug.settings == {"seed": "3", "splat_steps": "40"}
    assert (spin.kind, spin.source, spin.name) == ("capture", str(tmp_path / "clips" / "spin.mp4"), "spin")

    (tmp_path / "m.jsonl").write_text('{"prompt": "a box", "seed": 1, "no_recaption": true, "height": null}\n\n'
                                      '{"path": "photos", "engine": "unreal"}\n')
    box, photos = read_items(tmp_path / "m.jsonl")
    assert box.settings == {"seed": "1", "no_recaption": "true"} and photos.settings == {"engine": "unreal"}

    captures = tmp_path / "captures"
    (captures / "mug_photos").mkdir(parents=True)
    (captures / "mug_photos" / "0001.jpg").write_bytes(b"")
    (captures / "empty_folder").mkdir()
    for name in ("b.mp4", "a.MOV", "notes.txt"):
        (captures / name).write_bytes(b"")
    assert [i.name for i in read_items(captures)] == ["a", "b", "mug-photos"]


@pytest.mark.parametrize("content, message", [
    ("prompt,colour\na mug,red\n", "unknown setting(s) 'colour'"),
    ("prompt,path\na mug,mug.mp4\n", "not both"),
    ("seed\n3\n", "give a prompt or a path"),
    ("prompt,seed\n", "no items"),
    ("\n", "no header row"),
])
def test_bad_manifests_are_one_line(tmp_path, content, message):
    (tmp_path / "m.csv").write_text(content)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")) as excinfo:
        read_items(tmp_path / "m.csv")
    assert "\n" not in str(excinfo.value)


def test_bad_inputs_are_one_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"prompt": "a mug"}\n{"prompt": oops}\n')
    with pytest.raises(InputError, match="bad.jsonl line 2 is not JSON"):
        read_items(tmp_path / "bad.jsonl")
    with pytest.raises(InputError, match="not a batch input"):
        read_items(_touch(tmp_path / "list.xlsx"))
    with pytest.raises(InputError, match="one video"):
        read_items(_touch(tmp_path / "clip.mp4"))
    with pytest.raises(InputError, match="KEY=VALUE"):
        parse_settings(["splat_steps"])
    with pytest.raises(InputError, match="unknown setting"):
        parse_settings(["colour=red"])


def _touch(path: Path) -> Path:
    path.write_bytes(b"")
    return path


def test_settings_go_to_the_step_that_takes_them(tmp_path):
    run = tmp_path / "run"
    prompt = BatchItem("mug", "prompt", "-1 mug", {"seed": "4", "steps": "2", "splat_steps": "40", "engine": "unity",
                                                   "no_recaption": "true", "verify": "false"}, "m.csv line 2")
    with pytest.raises(InputError, match="'verify' does not apply to a prompt item"):
        plan_steps(prompt, run)
    prompt.settings.pop("verify")
    generate, splat, export = plan_steps(prompt, run)
    assert generate == ["generate", "-o", str(run), "--seed", "4", "--steps", "2", "--no-recaption", "--", "-1 mug"]
    assert splat == ["splat", str(run), "--steps", "40"] and export == ["export", str(run), "--engine", "unity"]
    # a prompt's mesh is its clip's visual hull: with mesh formats only, the splats are not trained
    for formats, commands in (("glb,usdz", ["generate", "export"]), ("glb,ply", ["generate", "splat", "export"])):
        steps = plan_steps(BatchItem("mug", "prompt", "a mug", {"formats": formats}, "x"), run)
        assert [argv[0] for argv in steps] == commands
    steps = plan_steps(BatchItem("mug", "prompt", "a mug", {"formats": "glb", "source": "splats"}, "x"), run)
    assert [argv[0] for argv in steps] == ["generate", "splat", "export"]

    # a --set for prompts is left out of a capture's steps; its own row's settings are checked
    capture = BatchItem("spin", "capture", "/data/spin.mp4", {"max_side": "400"}, "m.csv line 3",
                        defaults={"model": "/models/orbit", "faces": "3000"})
    poses, _, export = plan_steps(capture, run)
    assert poses == ["poses", "-o", str(run), "--max-side", "400", "--", "/data/spin.mp4"]
    assert export == ["export", str(run), "--faces", "3000"]
    for settings, message in (({"faces": "many"}, "^export: argument --faces: expected a whole number, got 'many'$"),
                              ({"formats": "glb,webp"}, "webp"), ({"verify": "maybe"}, "on/off"),
                              ({"seed": "1"}, "'seed' does not apply to a video / photos item")):
        with pytest.raises(InputError, match=message):
            plan_steps(BatchItem("spin", "capture", "/data/spin.mp4", settings, "x"), run)


def test_finished_needs_a_validated_asset_made_with_the_same_settings(tmp_path):
    from orbitforge.rundir import RunDir

    item = BatchItem("mug", "prompt", "a mug", {}, "x")
    record = item_record(item, plan_steps(item, tmp_path))
    run = RunDir.open(tmp_path)
    assert not is_finished(tmp_path, record)
    run.run_stage("asset", lambda tmp: {"validation": {"errors": 0}})
    (tmp_path / "asset" / "validation.json").write_text(json.dumps({"ok": True, "errors": 0}))
    assert not is_finished(tmp_path, record)  # no batch record yet: it was not this batch's item
    run.record(batch=record)
    assert is_finished(tmp_path, record)
    changed = item_record(item, [*record["steps"][:2], [*record["steps"][2], "--faces", "100"]])
    assert not is_finished(tmp_path, changed)
    (tmp_path / "asset" / "validation.json").write_text(json.dumps({"ok": False, "errors": 2}))
    assert not is_finished(tmp_path, record)


def test_a_step_fails_on_bad_input_and_raises_anything_else_for_ray_to_retry(tmp_path, monkeypatch):
    from orbitforge import batch, cli

    log = tmp_path / "item.log"
    result = batch._run_step(["export", str(tmp_path / "missing")], str(log))
    assert result["ok"] is False and "is not a run folder" in result["reason"] and "\n" not in result["reason"]
    monkeypatch.setattr(cli, "_cmd_info", lambda args: 1 / 0)  # a bug or a crash, not the user's input
    with pytest.raises(ZeroDivisionError):
        batch._run_step(["info", str(tmp_path)], str(log))
    text = log.read_text()
    assert "$ orbitforge export" in text and "is not a run folder" in text and "$ orbitforge info" in text


def test_an_items_last_step_records_it_as_finished_in_the_worker(tmp_path):
    """Not the driver: a driver killed before it hears back must not lose the finished item."""
    from orbitforge import batch
    from orbitforge.rundir import RunDir

    RunDir.open(tmp_path / "run")
    record = {"kind": "prompt", "source": "a mug", "source_stat": None, "steps": [["info"]]}
    failed = batch._run_step(["export", str(tmp_path / "run")], str(tmp_path / "log"), (str(tmp_path / "run"), record))
    assert failed["ok"] is False and "batch" not in json.loads((tmp_path / "run" / "run.json").read_text())
    done = batch._run_step(["info", str(tmp_path / "run")], str(tmp_path / "log"), (str(tmp_path / "run"), record))
    assert done["ok"] and json.loads((tmp_path / "run" / "run.json").read_text())["batch"] == record


# -- end to end on a local Ray -----------------------------------------------------------------


@pytest.mark.slow
def test_batch_on_local_ray_three_assets_one_failure_and_resume(tiny_pipeline, tmp_path, capsys):
    (tmp_path / "broken.mp4").write_bytes(bytes(range(256)) * 20)  # not a video
    manifest = tmp_path / "manifest.jsonl"
    rows = [{"prompt": "a red mug", "seed": 0},
            {"prompt": "a blue vase", "seed": 1, "engine": "unity", "formats": "glb,ply"},
            {"name": "broken clip", "path": "broken.mp4"}, {"prompt": "a green box", "seed": 2, "formats": "glb,usdz"}]
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    argv = ["batch", str(manifest), "-o", str(out), "--workers", "2", "--retries", "1",
            "--set", f"model={tiny_pipeline}", "--set", "frames=8", "--set", "size=32", "--set", "steps=2",
            "--set", "no_recaption=true", "--set", "splat_steps=40", "--set", "faces=2000", "--set", "formats=glb"]
    assert main(argv) == 1, capsys.readouterr().err  # 1: an item failed; the others still ran
    printed = capsys.readouterr().out
    assert "4 items: 0 finished earlier, skipped; 4 to run or resume" in printed
    assert "3 of 4 assets ready (3 made now, 0 finished earlier), 1 failed" in printed

    index = json.loads((out / "index.json").read_text())
    by_name = {item["name"]: item for item in index["items"]}
    assert list(by_name) == ["a-red-mug", "a-blue-vase", "broken-clip", "a-green-box"]
    good = [by_name[n] for n in ("a-red-mug", "a-blue-vase", "a-green-box")]
    for item in good:
        run = out / item["run"]
        validation = json.loads((run / "asset" / "validation.json").read_text())
        assert item["status"] == "done" and validation["ok"] and validation["errors"] == 0
        assert item["metrics"]["validation_errors"] == 0
        assert (out / item["files"]["glb"]).stat().st_size > 0 and (out / item["thumbnail"]).is_file()
        splats = json.loads((run / "run.json").read_text())["stages"].get("splats")
        if item["name"] == "a-blue-vase":  # the one asking for a splat format
            assert splats["metrics"]["steps"] == 40 and item["metrics"]["psnr"] > 0
        else:
            assert splats is None and "psnr" not in item["metrics"]
    assert not (out / ".ray").exists()  # Ray's temporary folder goes with the session
    assert "usdz" in by_name["a-green-box"]["files"] and "usdz" not in by_name["a-red-mug"]["files"]
    vase = json.loads((out / "items/a-blue-vase/run.json").read_text())
    assert vase["stages"]["asset"]["metrics"]["engine"] == "unity"

    broken = by_name["broken-clip"]
    assert broken["status"] == "failed" and broken["failed_step"] == "poses"
    assert "cannot read video" in broken["reason"] and "\n" not in broken["reason"]
    assert "cannot read video" in (out / broken["log"]).read_text()
    assert f"broken-clip (manifest.jsonl line 3): {broken['reason']}" in printed

    page = (out / "index.html").read_text()
    for item in good:
        assert f'href="{item["files"]["glb"]}"' in page and f'src="{item["thumbnail"]}"' in page
    assert "Failures" in page and "cannot read video" in page

    # the re-run skips the finished items before scheduling anything: their stages stay untouched
    def stage_times() -> dict:
        return {item["name"]: {name: (st["started"], st["finished"]) for name, st in json.loads(
            (out / item["run"] / "run.json").read_text())["stages"].items()} for item in good}

    before = stage_times()
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "4 items: 3 finished earlier, skipped; 1 to run or resume" in printed
    assert "3 of 4 assets ready (0 made now, 3 finished earlier), 1 failed" in printed
    assert stage_times() == before
    statuses = {item["name"]: item["status"] for item in json.loads((out / "index.json").read_text())["items"]}
    assert statuses == {"a-red-mug": "skipped", "a-blue-vase": "skipped", "broken-clip": "failed",
                        "a-green-box": "skipped"}


def test_ray_keeps_its_temporary_files_in_the_output_folder_and_removes_them(tmp_path, monkeypatch):
    import orbitforge.batch as batch

    monkeypatch.setattr(batch, "_SOCKET_PATH_MAX", 4096)  # whatever pytest's tmp_path depth
    with batch._ray_temp_dir(tmp_path / "out") as folder:
        assert folder == (tmp_path / "out" / ".ray").resolve() and folder.is_dir()
        (folder / "session").mkdir()
    assert not folder.exists() and (tmp_path / "out").is_dir()

    monkeypatch.setattr(batch, "_SOCKET_PATH_MAX", 107)
    deep = tmp_path / ("d" * 60) / "out"  # Ray's socket paths would pass 107 bytes: a private folder instead
    with batch._ray_temp_dir(deep) as folder:
        assert folder.is_dir() and folder.name.startswith("orbitforge-ray-") and not deep.exists()
        assert len(os.fsencode(folder)) + batch._RAY_SESSION_SUFFIX <= 107
    assert not folder.exists()


@pytest.mark.slow
def test_local_ray_listens_on_loopback_only_and_checks_resources(tmp_path, capsys, monkeypatch):
    psutil = pytest.importorskip("psutil")
    from orbitforge.batch import BatchOptions, _ray_session

    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a local Ray writes nothing there (no ~/.ray)
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)

    with _ray_session(BatchOptions(workers=1), gpus_needed=False, out=tmp_path) as ray:
        session = Path(ray._private.worker._global_node.get_session_dir_path())
        temp = session.parent  # OUT/.ray, or a private folder when tmp_path is too deep for Ray's sockets
        assert temp == (tmp_path / ".ray").resolve() or temp.name.startswith("orbitforge-ray-"), session
        assert {node["NodeManagerAddress"] for node in ray.nodes()} == {"127.0.0.1"}
        tree = [psutil.Process(), *psutil.Process().children(recursive=True)]  # the driver, gcs_server, raylet, …
        listening = [c.laddr.ip for p in tree for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        assert len(listening) >= 3 and all(_loopback(ip) for ip in listening), listening
        with pytest.raises(InputError, match="--gpus-per-task 1000 but Ray sees"):
            with _ray_session(BatchOptions(gpus_per_task=1000), gpus_needed=True, out=tmp_path):
                pass
        with pytest.raises(InputError, match="more than the 1 CPUs"):
            with _ray_session(BatchOptions(cpus_per_task=2), gpus_needed=False, out=tmp_path):
                pass
    assert not ray.is_initialized() and not temp.exists() and not (tmp_path / "home").exists()
    assert "batch: Ray (local, on 127.0.0.1): 1 CPUs, 0 GPUs" in capsys.readouterr().out


def _loopback(ip: str) -> bool:
    import ipaddress

    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback
