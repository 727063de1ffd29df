"""`orbitforge view`: the viser viewer of a run folder, in real headless Chromium, and its follow
mode, host and port handling, and the splat trainer's live snapshot it follows."""

from __future__ import annotations

import dataclasses
import io
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from orbitforge.errors import InputError
from orbitforge.gaussians import GaussianScene, load_ply, save_ply
from orbitforge.viewers.live import LAYERS, LIVE_SNAPSHOT, serve

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
# viser 1.1.1's splat mesh logs this for any Gaussian splats, however finite the data (reproduced
# with 100 well-formed Gaussians and nothing else in the scene): three.js cannot size the
# placeholder geometry the splat shader draws from.  Exactly this text is allowed, nothing else.
VISER_SPLAT_BOUNDS_MESSAGE = ('THREE.BufferGeometry.computeBoundingSphere(): Computed radius is NaN. '
                              'The "position" attribute is likely to have NaN values. Ts')


def _scene(n: int, seed: int = 0, centre=(0.0, 0.0, 0.0), radius: float = 0.5) -> GaussianScene:
    """n fairly opaque, colourful Gaussians on a sphere: plainly visible from the toy's orbit."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=(n, 3))
    points = np.asarray(centre) + radius * direction / np.linalg.norm(direction, axis=1, keepdims=True)
    scene = GaussianScene.from_points(torch.tensor(points, dtype=torch.float32),
                                      torch.tensor(rng.random((n, 3)), dtype=torch.float32), sh_degree=0)
    return dataclasses.replace(scene, logit_opacities=torch.full((n,), 2.0))


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    """A rendered orbit (frames with known cameras), splats where the splat stage puts them and a
    box as the exported mesh."""
    import trimesh

    from orbitforge.cli import main

    run = tmp_path_factory.mktemp("view") / "run"
    assert main(["render-orbit", "builtin:toy", "-o", str(run), "--frames", "8", "--size", "64"]) == 0
    (run / "splats").mkdir()
    save_ply(_scene(3000), run / "splats" / "splats.ply")
    (run / "asset").mkdir()
    trimesh.creation.box(extents=(0.6, 0.6, 0.6)).export(run / "asset" / "asset.glb")
    return run


def _launch_chromium(playwright):
    if not Path(CHROMIUM).is_file():
        pytest.skip("the browser test needs Debian chromium: run `make test`, which installs it")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def _changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """Share of pixels whose colour moved by more than a little (antialiasing noise aside)."""
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1) > 24).mean())


def _settled_view(page, *, differ_from: np.ndarray | None = None, timeout: float = 120.0) -> np.ndarray:
    """The 3D area of the page once two screenshots a second apart agree (and, if asked, once it
    differs from `differ_from`): viser streams the scene over a websocket and software WebGL
    draws it slowly, so poll instead of sleeping a fixed time."""
    from PIL import Image

    deadline, previous = time.monotonic() + timeout, None
    while True:
        shot = np.asarray(Image.open(io.BytesIO(page.screenshot(timeout=90_000))).convert("RGB"))
        view = shot[:, : int(shot.shape[1] * 0.6)]  # the GUI panel sits on the right
        changed = differ_from is None or _changed_fraction(view, differ_from) > 0.01
        if previous is not None and changed and _changed_fraction(view, previous) < 0.002:
            return view
        if time.monotonic() > deadline:
            return view  # the caller's assertion says what did not happen
        previous = view
        time.sleep(1.0)


@pytest.mark.slow  # ~30-40 s: software WebGL on 2 shared cores
def test_viewer_draws_the_run_in_chromium_and_toggles_layers(toy_run, tmp_path):
    """Every layer starts hidden (the empty scene); ticking the four GUI boxes in the browser
    must draw frames, cameras, splats and mesh: many pixels change, and nothing is logged as an
    error and nothing is fetched from anywhere but the viewer."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser test needs playwright")
    from PIL import Image

    with serve(toy_run, port=0, follow=False) as viewer, sync_api.sync_playwright() as playwright:
        assert viewer.splat_count == 3000 and viewer.sources()["mesh"] == toy_run / "asset" / "asset.glb"
        assert viewer.sources()["points"] is None  # a rendered orbit has no sparse model
        for layer in LAYERS:
            viewer.set_visible(layer, False)
        browser = _launch_chromium(playwright)
        page = browser.new_page(viewport={"width": 800, "height": 500})
        errors, foreign = [], []
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
        local = (viewer.url, f"blob:{viewer.url}", "data:")  # the page, and what it makes from it
        page.on("request", lambda r: foreign.append(r.url) if not r.url.startswith(local) else None)
        page.goto(viewer.url)
        page.wait_for_selector("canvas[data-engine]", timeout=60_000)
        deadline = time.monotonic() + 30
        while not viewer.server.get_clients() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert viewer.server.get_clients(), "the page never opened viser's websocket"
        empty = _settled_view(page)

        for label in ("frames and cameras", "Gaussian splats", "exported mesh"):
            page.get_by_role("checkbox", name=label).click()
        drawn = _settled_view(page, differ_from=empty)
        Image.fromarray(np.concatenate([empty, drawn], axis=1)).save(tmp_path / "empty_vs_drawn.png")
        browser.close()

        assert viewer.visible() == {"frames": True, "points": False, "splats": True, "mesh": True}, \
            "the browser's clicks did not reach the server"
        changed = _changed_fraction(drawn, empty)
        assert changed > 0.03, f"only {changed:.1%} of the view changed when the layers were shown " \
                               f"(see {tmp_path / 'empty_vs_drawn.png'})"
        assert [e for e in errors if e != VISER_SPLAT_BOUNDS_MESSAGE] == []
        assert foreign == []


def test_follow_mode_picks_up_new_and_live_splats(toy_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run, ignore=shutil.ignore_patterns("splats"))
    with serve(run, port=0, follow=True, poll_seconds=0.1) as viewer:
        assert viewer.following and viewer.splat_count == 0 and viewer.sources()["splats"] is None
        assert any("Gaussian splats: not in this run" in note for note in viewer.notes())

        def wait_for(condition, what: str) -> None:
            deadline = time.monotonic() + 20
            while not condition():
                assert time.monotonic() < deadline, f"follow mode did not pick up {what}"
                time.sleep(0.05)

        (run / "splats").mkdir()
        save_ply(_scene(500, seed=1), run / "splats" / "splats.ply")
        wait_for(lambda: viewer.splat_count == 500, "the finished splat stage")
        partial = run / ".splats.partial-4242"  # what a training `orbitforge splat` writes
        partial.mkdir()
        save_ply(_scene(700, seed=2), partial / LIVE_SNAPSHOT)
        wait_for(lambda: viewer.splat_count == 700, "a live training snapshot")
        assert viewer.sources()["splats"] == partial / LIVE_SNAPSHOT
        save_ply(_scene(900, seed=3), partial / LIVE_SNAPSHOT)  # the trainer's next snapshot
        wait_for(lambda: viewer.splat_count == 900, "a rewritten snapshot")
        shutil.rmtree(partial)  # the stage finished: back to its output
        wait_for(lambda: viewer.splat_count == 500, "the snapshot going away")
        assert viewer.updates()["splats"] == 4 and viewer.updates()["frames"] == 1
    assert not viewer.following


def test_large_splat_files_are_capped_to_the_most_opaque(toy_run):
    with serve(toy_run, port=0, follow=False, max_splats=100) as viewer:
        assert (viewer.splat_count, viewer.splat_total) == (100, 3000)
        assert any("the 100 most opaque of 3,000" in note for note in viewer.notes())


def test_an_unreadable_part_is_noted_and_the_rest_still_shown(toy_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    (run / "splats" / "splats.ply").write_bytes(b"not a ply at all")
    with serve(run, port=0, follow=False) as viewer:
        assert viewer.splat_count == 0 and viewer.updates()["frames"] == 1
        assert any(note.startswith("Gaussian splats: could not load") for note in viewer.notes()), viewer.notes()


def test_default_host_is_loopback_and_bad_input_is_one_clear_line(toy_run, tmp_path, capsys):
    import inspect

    from orbitforge.cli import _build_parser, main

    assert inspect.signature(serve).parameters["host"].default == "127.0.0.1"
    assert _build_parser().parse_args(["view", "RUN"]).host == "127.0.0.1"
    with serve(toy_run, port=0, follow=False) as viewer:
        assert viewer.host == "127.0.0.1" and re.fullmatch(r"http://127\.0\.0\.1:\d+", viewer.url)
        socket.create_connection(("127.0.0.1", viewer.port), timeout=5).close()

    (tmp_path / "not_a_run").mkdir()
    with pytest.raises(InputError, match="is not a run folder"):
        serve(tmp_path / "not_a_run")
    with pytest.raises(InputError, match="cannot listen on host"):
        serve(toy_run, host="203.0.113.7")  # TEST-NET-3: never an address of this machine
    assert main(["view", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("orbitforge: error: ") and "not a run folder" in err and "\n" not in err


def test_view_command_takes_the_next_port_when_busy_and_stops_on_ctrl_c(toy_run):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        command = [sys.executable, "-m", "orbitforge.cli", "view", str(toy_run), "--port", str(port), "--no-follow"]
        proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
        watchdog = threading.Timer(180, proc.kill)  # a hung viewer fails the test instead of the suite
        watchdog.start()
        try:
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if "Ctrl-C" in line:
                    break
            text = "".join(lines)
            found = re.search(r"view: (http://127\.0\.0\.1:(\d+))", text)
            assert found, text
            assert int(found[2]) != port and f"port {port} is busy; using {found[2]}" in text
            assert "view: splats: 3,000 Gaussians from splats/splats.ply" in text
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        rest = proc.stdout.read()
        assert "Traceback" not in rest and "interrupted" not in rest, rest


def test_splat_training_writes_a_live_snapshot_only_while_it_runs(toy_run, tmp_path):
    from orbitforge.clip import Clip
    from orbitforge.cli import main
    from orbitforge.recon.splat.trainer import SplatConfig, train_splats

    clip = Clip.load(toy_run / "clip")
    snapshot = tmp_path / LIVE_SNAPSHOT
    seen = []
    result = train_splats(clip, SplatConfig(steps=4, sh_degree=0, random_init_points=300), snapshot=snapshot,
                          snapshot_every_s=0.0, progress=lambda step, stats: seen.append(snapshot.stat().st_mtime_ns))
    assert len(seen) == 4 and load_ply(snapshot).num_gaussians == result.scene.num_gaussians
    rare, seen = tmp_path / "rare.ply", []
    train_splats(clip, SplatConfig(steps=4, sh_degree=0, random_init_points=300), snapshot=rare,
                 snapshot_every_s=3600.0, progress=lambda step, stats: seen.append(rare.stat().st_mtime_ns))
    assert len(seen) == 4 and len(set(seen)) == 1  # the first step writes one, then none for an hour

    run = tmp_path / "run"
    shutil.copytree(toy_run, run, ignore=shutil.ignore_patterns("splats"))
    assert main(["splat", str(run), "--steps", "3", "--sh-degree", "0"]) == 0
    assert (run / "splats" / "splats.ply").is_file() and not (run / "splats" / LIVE_SNAPSHOT).exists()
    assert not list(run.glob(".splats.partial-*"))
