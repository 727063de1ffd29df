"""Clip folders: nerfstudio-ready layout, exact round trip, a playable video."""

from __future__ import annotations

import json

import numpy as np
import pytest

from orbitforge import builtin
from orbitforge.clip import Clip
from orbitforge.errors import InputError
from orbitforge.render import OrbitConfig, RenderConfig, render_orbit
from orbitforge.video import read_video_frames


@pytest.fixture(scope="module")
def clip() -> Clip:
    return render_orbit(builtin.load("toy"), OrbitConfig(frames=6, size=48, render=RenderConfig()), source="builtin:toy")


def test_clip_round_trip(clip, tmp_path):
    clip.save(tmp_path)
    back = Clip.load(tmp_path)
    np.testing.assert_array_equal(back.frames, clip.frames)
    np.testing.assert_array_equal(back.masks, clip.masks)
    np.testing.assert_array_equal(back.depths, clip.depths)
    np.testing.assert_allclose(back.cameras.c2w, clip.cameras.c2w, atol=1e-9)
    np.testing.assert_allclose(back.cameras.K, clip.cameras.K, atol=1e-9)
    assert back.source == "builtin:toy" and back.fps == clip.fps


def test_clip_folder_is_nerfstudio_ready(clip, tmp_path):
    clip.save(tmp_path)
    data = json.loads((tmp_path / "transforms.json").read_text())
    for frame in data["frames"]:
        for key in ("file_path", "mask_path", "depth_file_path"):
            assert (tmp_path / frame[key]).is_file()
    video = read_video_frames(tmp_path / "clip.mp4")
    assert video.shape == clip.frames.shape
    # lossy but close: H.264 at crf 18 stays within a few levels on average
    assert np.abs(video.astype(int) - clip.frames.astype(int)).mean() < 4


def test_odd_sized_video_is_padded(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (3, 9, 11, 3), dtype=np.uint8)
    Clip(frames).save(tmp_path)
    assert read_video_frames(tmp_path / "clip.mp4").shape == (3, 10, 12, 3)


def test_clip_rejects_inconsistent_parts(clip):
    with pytest.raises(InputError, match="at least one frame"):
        Clip(np.zeros((0, 4, 4, 3), np.uint8))
    with pytest.raises(InputError, match="cameras"):
        Clip(clip.frames[:3], clip.cameras)
    with pytest.raises(InputError, match="masks"):
        Clip(clip.frames, masks=clip.masks[:, :2])
    with pytest.raises(InputError, match="not a clip folder"):
        Clip.load(".")
