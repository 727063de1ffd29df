# orbitforge: `make demo` sets up and renders the built-in demo; `make test` sets up and runs the tests.
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

demo: setup
	$(BIN)/orbitforge render-orbit builtin:toy -o runs/demo --frames 48 --size 256 --elevation 20
	@echo "open runs/demo/preview/contact_sheet.png and runs/demo/clip/clip.mp4"

test: setup-dev
	bash scripts/test.sh $(BIN)/python

test-full: setup-dev setup-nerf
	bash scripts/test.sh $(BIN)/python -m "full or not full"

bench:
	VENV=$(VENV) bash scripts/setup.sh dev,bench
	$(BIN)/python bench/render.py

clean:
	rm -rf runs build dist *.egg-info .pytest_cache
