# orbitforge: `make demo` sets up and turns a prompt into a game-ready asset; `make test` sets up and runs the tests.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup setup-dev setup-nerf demo test test-full bench clean

setup:
	VENV=$(VENV) bash scripts/setup.sh

setup-dev:
	VENV=$(VENV) bash scripts/setup.sh dev

# optional: nerfstudio in its own environment (.venv-nerf, ~6 GB) for `orbitforge nerf`
setup-nerf:
	bash scripts/setup-nerf.sh

# the headline: a prompt through the starter orbit model (checkpoints/orbit-starter) to a validated GLB
demo: setup
	$(BIN)/orbitforge generate "a red vase with white stripes" -o runs/demo --to-asset --show-recaption --splat-steps 1000
	@echo "open runs/demo/preview/contact_sheet.png, runs/demo/preview/asset_turntable.gif and runs/demo/asset/asset.glb"

test: setup-dev
	bash scripts/test.sh $(BIN)/python

test-full: setup-dev setup-nerf
	bash scripts/test.sh $(BIN)/python -m "full or not full"

bench:
	VENV=$(VENV) bash scripts/setup.sh dev,bench
	$(BIN)/python bench/render.py

clean:
	rm -rf runs build dist *.egg-info .pytest_cache
