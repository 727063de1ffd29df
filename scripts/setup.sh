#!/usr/bin/env bash
# Sets up orbitforge from nothing on a fresh Debian machine with Python 3.11:
# Debian packages (when root), a virtual environment in .venv, the CPU build of torch first,
# then the project with every later install held to that torch by a constraints file.
# Idempotent: a second run only checks.  Usage: scripts/setup.sh [EXTRAS], e.g. "dev" or "dev,bench"
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="${1:-}"
VENV="${VENV:-.venv}"
PY="${PYTHON:-python3.11}"
command -v "$PY" >/dev/null || PY=python3

# 1. Debian packages, by what is being installed; this script is the one place that installs them.
APT_PACKAGES=(libusb-1.0-0)  # open3d's wheel links libusb
case ",$EXTRAS," in *,bench,*) APT_PACKAGES+=(libegl1 libegl-mesa0 libgl1-mesa-dri) ;; esac  # Mesa EGL: GL peer in bench/render.py
# real importers for the export tests: Blender's glTF importer (needs Debian's numpy) and Godot
case ",$EXTRAS," in *,dev,*) APT_PACKAGES+=(blender python3-numpy godot3-server) ;; esac
# headless Chromium for the viewer and page tests (driven by Playwright, which never downloads its own)
case ",$EXTRAS," in *,dev,*) APT_PACKAGES+=(chromium fonts-dejavu-core) ;; esac
# node runs the Khronos glTF validator (orbitforge/validate.py), for every install: tests and export use it
command -v node >/dev/null || APT_PACKAGES+=(nodejs npm)
if [ ${#APT_PACKAGES[@]} -gt 0 ]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
    else
      echo "setup: please install Debian packages: ${missing[*]} (sudo apt-get install ...)" >&2
      exit 1
    fi
  fi
fi

# 2. Virtual environment.
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# 3. torch first: the CPU build of 2.13.0 that lies on this machine's disk.  A plain `torch`
#    requirement would pull a multi-GB CUDA build, so every later install runs under
#    constraints.txt, which holds torch at this version.
"$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
  || "${PIP[@]}" install torch==2.13.0

# 4. The project itself, editable, with extras.
spec="."
[ -n "$EXTRAS" ] && spec=".[$EXTRAS]"
"${PIP[@]}" install -c constraints.txt -e "$spec"

# 5. Node tools, pinned by tools/package-lock.json: the Khronos glTF validator (npm `gltf-validator`)
#    and, for `orbitforge page`, three.js + Spark bundled by esbuild from viewers/web into one
#    classic script (viewers/web/dist/orbitforge-page.js, package data of orbitforge.viewers; a file:// page
#    can load nothing else).
#    Rebuilt whenever a source under viewers/web is newer than the bundle.
[ -d tools/node_modules/gltf-validator ] && [ -d tools/node_modules/@sparkjsdev/spark ] && [ -x tools/node_modules/.bin/esbuild ] \
  || npm ci --prefix tools --include=dev --no-audit --no-fund
if [ ! -f viewers/web/dist/orbitforge-page.js ] || [ -n "$(find viewers/web tools/package-lock.json -newer viewers/web/dist/orbitforge-page.js -type f -not -path "*/dist/*" | head -1)" ]; then
  npm run build --prefix tools --silent
fi
"$VENV/bin/python" -c "import orbitforge; print('orbitforge', orbitforge.__version__, 'ready in $VENV')"
