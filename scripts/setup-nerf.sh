#!/usr/bin/env bash
# Optional: the NeRF backend's own environment, .venv-nerf, with nerfstudio 1.1.5.
# nerfstudio pins viser==0.2.7 and gsplat==1.4.0 and needs torchvision, which clash with
# orbitforge's viewer and splat stack, so it lives apart and orbitforge drives it through its CLI
# (`orbitforge nerf RUN`).  Idempotent.  About 6 GB (torch 2.14.1 with its matching torchvision).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${NERF_VENV:-.venv-nerf}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)
if ! "$VENV/bin/ns-train" --help >/dev/null 2>&1; then
  "${PIP[@]}" install -c scripts/nerf-constraints.txt torch torchvision
  "${PIP[@]}" install -c scripts/nerf-constraints.txt nerfstudio
fi
"$VENV/bin/python" -c "import nerfstudio, torch, torchvision; print('nerfstudio ready in $VENV (torch', torch.__version__ + ')')"
