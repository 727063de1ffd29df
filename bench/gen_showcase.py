"""The README's picture of the orbit model: a few prompts, each taken by `orbitforge generate
--to-asset --formats glb` (exactly what a user runs) to a generated orbit and a validated GLB
(the clip's visual hull, textured from its frames; no splats are trained for a mesh-only
export); each row shows the generated frames beside the exported GLB, read back from disk and
rendered unlit by orbitforge's renderer around the same orbit.

Run:  .venv/bin/python bench/gen_showcase.py [--model checkpoints/orbit-starter] [-o runs/showcase]
      [--picture docs/images/gen_showcase.png] [--seed 0]
Every run folder stays under -o (clip, asset, previews), so any row can be opened in
`orbitforge view` or imported into an engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

PROMPTS = (
    "a red mug with white stripes",
    "a crimson vase with golden dots",        # free text: recaptioned into the world's words
    "a small green cactus in a pot",
    "a blue barrel",                          # a (colour, category) pair the training split held out
    "a wooden treasure chest",
    "a white snowman",
)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=REPO / "checkpoints" / "orbit-starter")
    parser.add_argument("-o", "--output", type=Path, default=REPO / "runs" / "showcase")
    parser.add_argument("--picture", type=Path, default=REPO / "docs" / "images" / "gen_showcase.png")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from orbitforge.cli import main as orbitforge
    from orbitforge.clip import Clip
    from orbitforge.mesh import load_meshes
    from orbitforge.render import OrbitConfig, RenderConfig, render_orbit
    from orbitforge.viewers.preview import contact_sheet, save_image

    rows, labels, report = [], [], []
    for i, prompt in enumerate(PROMPTS):
        run = args.output / f"{i:02d}"
        t0 = time.perf_counter()
        orbitforge(["generate", prompt, "-o", str(run), "--model", str(args.model), "--seed", str(args.seed),
                    "--to-asset", "--formats", "glb"])
        seconds = time.perf_counter() - t0
        clip = Clip.load(run / "clip")
        back = render_orbit(load_meshes(run / "asset" / "asset.glb"),
                            OrbitConfig(frames=len(clip), size=clip.width, elevation_deg=20,
                                        render=RenderConfig(shading="unlit")))
        manifest = json.loads((run / "run.json").read_text())
        caption = manifest["inputs"].get("caption", prompt)
        rows += [clip.frames, back.frames]
        rewrite = [] if caption == prompt else [f"as: {caption}"]  # the recaption, under the next tile
        labels += ([prompt] + rewrite + [""] * (len(clip) - 1 - len(rewrite)) + ["asset.glb, rendered back"]
                   + [""] * (len(back) - 1))
        report.append({"prompt": prompt, "caption": caption, "seconds": round(seconds, 1),
                       "faces": manifest["stages"]["asset"]["metrics"].get("faces")})
        print(f"[{i + 1}/{len(PROMPTS)}] {seconds:.0f} s  {prompt} (as: {caption})", flush=True)
    frames = np.concatenate(rows)
    columns = 2 * len(rows[0])
    args.picture.parent.mkdir(parents=True, exist_ok=True)
    save_image(contact_sheet(frames, labels=labels, columns=columns, max_frames=len(frames),
                             tile=max(96, rows[0].shape[1]), label_lines=3), args.picture)
    (args.output / "showcase.json").write_text(json.dumps(report, indent=1))
    print(f"wrote {args.picture} and {args.output / 'showcase.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
