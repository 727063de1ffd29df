"""`orbitforge page RUN`: the static share page, checked in real headless Chromium opened from
file:// — it draws the run's 3D content, logs no errors, makes no network requests, and its
layer toggles change the picture.  Plus the Python side: data in the run's world, bad input."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from orbitforge import builtin
from orbitforge.cli import main
from orbitforge.errors import InputError
from orbitforge.gaussians import GaussianScene, save_ply
from orbitforge.mesh import load_meshes_from_glb_bytes, to_glb_bytes
from orbitforge.rundir import RunDir
from orbitforge.viewers import page as page_module

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run"]
VIEWPORT = {"width": 640, "height": 480}
# a pixel counts as changed when a channel moves by more than this (0..255), which ignores
# dithering and swiftshader rounding
PIXEL_TOLERANCE = 12


def _needs_bundle() -> None:
    if not page_module.BUNDLE.is_file():
        pytest.skip(f"needs the page's viewer bundle {page_module.BUNDLE}: run `make setup` (scripts/setup.sh builds it)")


def _toy_run(root: Path, *, asset: bool = True, splats: bool = True) -> Path:
    """A tiny run: an 8-frame orbit of the built-in toy (clip + known cameras), optionally the toy
    exported as RUN/asset/asset.glb at 2 m tall (a real placement: scale and pivot) and a splats
    stage of bright Gaussians on the toy's surface."""
    assert main(["render-orbit", "builtin:toy", "-o", str(root), "--frames", "8", "--size", "64"]) == 0
    parts = builtin.load("toy")
    if asset:
        glb = root.parent / f"{root.name}_toy.glb"
        glb.write_bytes(to_glb_bytes(parts))
        assert main(["export", str(root), "--mesh", str(glb), "--formats", "glb", "--height", "2"]) == 0
    if splats:
        import trimesh

        surface = trimesh.util.concatenate([p.to_trimesh() for p in parts])
        points, _ = trimesh.sample.sample_surface(surface, 3000, seed=0)
        scene = GaussianScene.from_points(torch.as_tensor(points, dtype=torch.float32),
                                          torch.tensor([[0.2, 0.9, 0.3]]).expand(len(points), 3), sh_degree=1)
        scene = GaussianScene(scene.means, scene.log_scales, scene.quats_wxyz,
                              torch.full_like(scene.logit_opacities, 3.0), scene.sh)  # opaque, so they show
        RunDir.open(root).run_stage("splats", lambda tmp: save_ply(scene, tmp / "splats.ply") or {"gaussians": len(points)})
    return root


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> Path:
    _needs_bundle()
    return _toy_run(tmp_path_factory.mktemp("page") / "toy")


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.is_file():
        pytest.skip("needs Debian chromium: run `make test`, which installs it")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("needs playwright (the dev extra): run `make test`, which installs it")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class OpenedPage:
    """A page loaded from file:// with its console messages and requests recorded."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport=VIEWPORT)
        self.console: list[tuple[str, str]] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: self.console.append((m.type, m.text)))
        self.page.on("pageerror", lambda e: self.console.append(("pageerror", str(e))))
        self.page.on("request", lambda r: self.requests.append(r.url))
        self.page.goto(url)
        self.page.wait_for_function("window.orbitforgeReady === true || window.orbitforgeError !== undefined",
                                    timeout=90_000)
        assert self.page.evaluate("window.orbitforgeError") is None

    def canvas(self) -> np.ndarray:
        """The 3D canvas as an (H, W, 3) uint8 array."""
        png = self.page.locator("#viewport canvas").screenshot()
        return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))

    def toggle(self, layer: str) -> None:
        """Click a layer's checkbox and wait until the page has drawn the frames it asked for."""
        drawn = self.page.evaluate("window.orbitforgeFrames")
        self.page.click(f"#layer-{layer}")
        self.page.wait_for_function(f"window.orbitforgeFrames >= {drawn + 6}", timeout=30_000)

    def errors(self) -> list[tuple[str, str]]:
        return [(kind, text) for kind, text in self.console if kind in ("error", "pageerror")]

    def close(self) -> None:
        self.page.close()


def _changed_fraction(a: np.ndarray, b: np.ndarray) -> float:
    assert a.shape == b.shape
    return float((np.abs(a.astype(np.int16) - b.astype(np.int16)).max(axis=-1) > PIXEL_TOLERANCE).mean())


def test_page_draws_the_run_offline_and_its_toggles_change_the_canvas(toy_run, browser, capsys):
    assert main(["page", str(toy_run)]) == 0
    out = capsys.readouterr().out
    viewer = (toy_run / "preview" / "viewer.html").resolve()
    assert viewer.as_uri() in out and "no server" in out
    preview = viewer.parent

    everything = OpenedPage(browser, viewer.as_uri() + "?show=mesh,splats,cameras")
    empty = OpenedPage(browser, viewer.as_uri() + "?show=none")
    try:
        full, blank = everything.canvas(), empty.canvas()
        # the empty scene is one flat colour; the run's content covers a real part of the view
        assert _changed_fraction(blank, np.broadcast_to(blank[0, 0], blank.shape)) < 0.001
        assert _changed_fraction(full, blank) > 0.02
        for opened in (everything, empty):
            assert opened.errors() == [], opened.errors()
            for url in opened.requests:  # only the page folder itself, and in-memory blobs/data
                assert url.startswith(("data:", "blob:")) or \
                    Path(url.removeprefix("file://").split("?")[0]).parent == preview, url
        assert {Path(u.removeprefix("file://").split("?")[0]).name for u in everything.requests
                if u.startswith("file:")} == {"viewer.html", "viewer_data.js", "orbitforge-page.js"}
        header = everything.page.inner_text("#header")
        assert "toy" in header and "clip: 8 frames" in header
        assert everything.page.locator("#frames img").count() == 8

        # a thumbnail looks through its camera: a different picture, the thumbnail marked
        drawn = everything.page.evaluate("window.orbitforgeFrames")
        everything.page.locator("#frames img").nth(2).click()
        everything.page.wait_for_function(f"window.orbitforgeFrames >= {drawn + 2}", timeout=30_000)
        assert "selected" in everything.page.locator("#frames img").nth(2).get_attribute("class")
        assert _changed_fraction(everything.canvas(), full) > 0.02
        drawn = everything.page.evaluate("window.orbitforgeFrames")
        everything.page.click("#reset-view")  # back to the first view
        everything.page.wait_for_function(f"window.orbitforgeFrames >= {drawn + 2}", timeout=30_000)
        assert _changed_fraction(everything.canvas(), full) < 0.002

        # the toggles: all off gives the empty scene; each layer alone draws something
        for layer in ("mesh", "splats", "cameras"):
            everything.toggle(layer)
        assert _changed_fraction(everything.canvas(), blank) < 0.002
        for layer, least in (("mesh", 0.01), ("splats", 0.01), ("cameras", 0.002)):  # frustums are thin lines
            everything.toggle(layer)
            assert _changed_fraction(everything.canvas(), blank) > least, layer
            everything.toggle(layer)
            assert _changed_fraction(everything.canvas(), blank) < 0.002, layer
        assert everything.errors() == [], everything.errors()
    finally:
        everything.close()
        empty.close()


def test_page_of_a_clip_only_run_shows_cameras_and_frames(tmp_path, browser):
    _needs_bundle()
    run = _toy_run(tmp_path / "cliponly", asset=False, splats=False)
    result = page_module.write_page(run)
    assert result.layers == ("cameras",) and result.frames == 8
    opened = OpenedPage(browser, result.path.resolve().as_uri())
    try:
        assert opened.page.locator("#layer-mesh").count() == 0
        assert opened.page.locator("#layer-cameras").is_checked()
        canvas = opened.canvas()
        assert _changed_fraction(canvas, np.broadcast_to(canvas[0, 0], canvas.shape)) > 0.002  # frustums drawn
        assert opened.errors() == [], opened.errors()
    finally:
        opened.close()


def _page_data(run: Path) -> dict:
    text = (run / "preview" / "viewer_data.js").read_text()
    return json.loads(re.fullmatch(r"window\.ORBITFORGE_DATA = (.*);\n", text, re.S).group(1))


def test_page_data_puts_mesh_splats_and_cameras_in_one_world(toy_run):
    """The exported GLB (placed 2 m tall on its pivot) maps back onto the toy where the cameras
    looked at it; frustums start at the camera centres and their corners project to the image
    corners; thumbnails stay small."""
    from orbitforge.cameras import from_transforms_json

    page_module.write_page(toy_run)
    data = _page_data(toy_run)
    toy = np.concatenate([p.vertices for p in builtin.load("toy")])
    placed = np.concatenate([p.vertices for p in load_meshes_from_glb_bytes(
        base64.b64decode(data["mesh"]["glb"]))])
    assert placed[:, 1].min() == pytest.approx(0, abs=1e-4) and placed[:, 1].max() == pytest.approx(2, rel=1e-4)
    to_world = np.asarray(data["mesh"]["toWorld"]).reshape(4, 4).T  # column-major in the page
    back = placed @ to_world[:3, :3].T + to_world[:3, 3]
    np.testing.assert_allclose(back.min(0), toy.min(0), atol=1e-4)
    np.testing.assert_allclose(back.max(0), toy.max(0), atol=1e-4)

    cameras, _ = from_transforms_json(toy_run / "clip" / "transforms.json")
    assert len(data["cameras"]) == len(cameras)
    for i, cam in enumerate(data["cameras"]):
        frustum = np.asarray(cam["frustum"])
        np.testing.assert_allclose(frustum[0], cameras.centres[i], atol=1e-5)
        pixels, depth = cameras[i].project(frustum[1:][None])
        np.testing.assert_allclose(pixels[0], [[0, 0], [64, 0], [64, 64], [0, 64]], atol=1e-3)
        assert (depth > 0).all()
    assert data["splats"]["count"] == 3000 and len(base64.b64decode(data["splats"]["bytes"])) == 3000 * 32
    thumb = Image.open(io.BytesIO(base64.b64decode(data["frames"][0]["thumb"].split(",", 1)[1])))
    assert thumb.format == "JPEG" and max(thumb.size) <= 160


def test_page_limits_embedded_splats(toy_run):
    result = page_module.write_page(toy_run, page_module.PageConfig(max_splats=500))
    assert _page_data(toy_run)["splats"]["count"] == 500
    assert any("500" in w for w in result.warnings)


def test_page_bad_input_is_one_line(tmp_path, capsys):
    (tmp_path / "not_a_run").mkdir()
    assert main(["page", str(tmp_path / "not_a_run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "is not a run folder" in err
    assert not (tmp_path / "not_a_run" / "preview").exists()
    assert main(["page", str(tmp_path / "missing")]) == 2
    assert "is not a run folder" in capsys.readouterr().err


def test_page_without_the_bundle_says_to_run_setup(tmp_path, monkeypatch, capsys):
    run = RunDir.open(tmp_path / "run").root
    monkeypatch.setattr(page_module, "BUNDLE", tmp_path / "nowhere" / "orbitforge-page.js")
    with pytest.raises(InputError, match="make setup"):
        page_module.write_page(run)
    assert main(["page", str(run)]) == 2
    assert "make setup" in capsys.readouterr().err
    assert not (run / "preview").exists()
