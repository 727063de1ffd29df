"""Runs one COLMAP step of the poses stage in a process of its own.

    python -m orbitforge.recon.colmap_worker JOB.json

JOB.json holds {"step": "extract" | "match" | "map" | "triangulate", "result": PATH, "config": the
PosesConfig as a dict, ...the step's own arguments}; the step's return value (a JSON-ready dict)
is written to PATH.  `orbitforge.recon.poses.run_step` writes the job and reads the result; see
there for why every COLMAP step gets a fresh process.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from orbitforge.recon import poses

STEPS = {"extract": poses._extract, "match": poses._match, "map": poses._map, "triangulate": poses._triangulate_known}
PATH_ARGUMENTS = ("db", "images", "workdir", "out", "masks")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m orbitforge.recon.colmap_worker JOB.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[1]).read_text())
    step, result = job.pop("step"), Path(job.pop("result"))
    if "config" in job:
        job["config"] = poses.PosesConfig(**job["config"])
    for key in PATH_ARGUMENTS:
        if job.get(key) is not None:
            job[key] = Path(job[key])
    result.write_text(json.dumps(STEPS[step](**job) or {}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
