"""Poses benchmark: registration, accuracy and time of each matching/mapping choice, on real data.

For every data set in ../shared/data that has ground truth (Middlebury templeRing with known and
unknown intrinsics, the NeRF-synthetic lego subset, a rendered 48-frame Spot orbit) plus the
kermit photos (no ground truth), runs `orbitforge.recon.poses.estimate_poses` with

* matching: exhaustive, or sequential + bag-of-words loop-closure pairs;
* mapper: COLMAP incremental, or global (GLOMAP);
* and exhaustive + incremental followed by photometric refinement (`PosesConfig.refine`: splats
  and camera corrections fitted to the frames together);

and reports registered frames, mean reprojection error, median rotation error after a robust
Sim(3) alignment, cameras within 2 degrees of the truth, and seconds per step.  All
configurations run in the same process on the same machine, so their times compare directly.

Run:  .venv/bin/python bench/poses.py [--sets temple kermit lego spot] [--out bench/results/poses.json]
(--sets with a subset re-measures those sets and keeps the other sets' rows of --out; each row
records the feature/filter defaults it was measured with.)
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the tests' data loaders, so both read data one way

from conftest import DATA  # noqa: E402
from test_poses import _lego_clip, middlebury_cameras  # noqa: E402

from orbitforge.recon.ingest import ingest  # noqa: E402
from orbitforge.recon.metrics import pose_errors  # noqa: E402
from orbitforge.recon.poses import PosesConfig, estimate_poses  # noqa: E402

CONFIGS = [(m, mp, False) for m in ("exhaustive", "sequential") for mp in ("incremental", "global")]
CONFIGS.append(("exhaustive", "incremental", True))


def load_sets(names: list[str]) -> dict:
    """name -> (clip, truth cameras or None, intrinsics or None, focal prior or None)."""
    sets = {}
    if "temple" in names:
        folder = DATA / "multiview" / "middlebury_templeRing"
        got = ingest(folder)
        order, truth = middlebury_cameras(folder / "templeR_par.txt")
        truth = truth[[order.index(n) for n in got.names]]
        sets["temple (known K)"] = (got.clip, truth, truth.K[0], None)
        sets["temple (unknown K)"] = (got.clip, truth, None, None)
    if "kermit" in names:
        got = ingest(DATA / "multiview" / "bundler_kermit")
        sets["kermit (EXIF focal)"] = (got.clip, None, None, got.focal_px)
    if "lego" in names:
        clip = _lego_clip()
        sets["lego (unknown poses)"] = (type(clip)(clip.frames), clip.cameras, clip.cameras.K[0], None)
    if "spot" in names:
        from orbitforge.mesh import load_meshes
        from orbitforge.render import OrbitConfig, render_orbit

        clip = render_orbit(load_meshes(DATA / "assets" / "spot" / "spot_textured.glb"), OrbitConfig(frames=48, size=256))
        with tempfile.TemporaryDirectory() as tmp:
            clip.save(tmp)
            got = ingest(Path(tmp) / "clip.mp4")
        sets["spot orbit via mp4"] = (got.clip, clip.cameras[got.source_indices], None, None)
    return sets


def run_one(clip, truth, intrinsics, focal, matching: str, mapper: str, refine: bool = False) -> dict:
    config = PosesConfig(matching=matching, mapper=mapper, min_registered_fraction=0.0, max_reprojection_px=99,
                         refine=refine)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        result = estimate_poses(clip, Path(tmp), config, intrinsics=intrinsics, focal_px=focal)
        total = time.perf_counter() - t0
    report = result.report
    row = {"registered": report.get("registered", 0), "frames": len(clip),
           "reprojection_px": report.get("mean_reprojection_px"), "seconds": round(total, 2),
           "seconds_per_step": report.get("seconds", {}), "loop_pairs": report.get("loop_pairs", 0)}
    if "refinement" in report:
        row["refinement"] = report["refinement"]
    if truth is not None and result.clip is not None and row["registered"] >= 3:
        errors = pose_errors(result.clip.cameras, truth[report["registered_frames"]])
        row.update(rotation_deg_median=round(float(np.median(errors.rotation_deg)), 3),
                   within_2_deg=int((errors.rotation_deg <= 2.0).sum()))
        if intrinsics is None:  # how far the self-calibrated focal length is from the truth
            focal_err = result.clip.cameras.K[0, 0, 0] / truth.K[0, 0, 0] - 1
            row["focal_error_pct"] = round(100 * float(focal_err), 2)
    # the feature/filter defaults this row was measured with, so rows from older runs show as such
    row["defaults"] = {"affine_shape": config.affine_shape,
                       "filter_max_reprojection_px": config.filter_max_reprojection_px}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["temple", "kermit", "lego", "spot"])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "poses.json")
    args = parser.parse_args()
    import pycolmap

    pycolmap.logging.minloglevel = 2
    if not DATA.exists():
        sys.exit(f"bench/poses.py needs the shared data at {DATA}")
    # --sets runs a subset: the other sets' rows are kept from the existing file
    results = json.loads(args.out.read_text()).get("results", {}) if args.out.exists() else {}
    print("| data set | matching | mapper | registered | reproj px | rot. err. median deg | within 2 deg | seconds (features / matching / mapping [/ refinement]) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (clip, truth, K, focal) in load_sets(args.sets).items():
        results[name] = {}
        for matching, mapper, refine in CONFIGS:
            row = run_one(clip, truth, K, focal, matching, mapper, refine)
            mapper = f"{mapper}+refine" if refine else mapper
            results[name][f"{matching}+{mapper}"] = row
            s = row["seconds_per_step"]
            refining = f" / {s['refinement']:.1f}" if "refinement" in s else ""
            print(f"| {name} | {matching} | {mapper} | {row['registered']}/{row['frames']} | {row['reprojection_px']} | "
                  f"{row.get('rotation_deg_median', '-')} | {row.get('within_2_deg', '-')} | "
                  f"{row['seconds']} ({s.get('features', 0):.1f} / {s.get('matching', 0):.1f} / {s.get('mapping', 0):.1f}"
                  f"{refining}) |",
                  flush=True)
    meta = {"machine": {"cpus": __import__("os").cpu_count(), "platform": platform.platform(),
                        "pycolmap": pycolmap.__version__}, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(meta, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
