# Two commands on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export DATA_DIR ?= ./data

.PHONY: demo test lint lock bench cross-check system-deps clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# The demo converts the default base to int8 on first use, so it installs the converter too.
# Every dependency comes from a lock with sha256 hashes (`make lock` makes them from pyproject.toml).
$(VENV)/.installed: $(BIN)/python requirements.txt requirements-convert.txt pyproject.toml
	$(BIN)/pip install --quiet --require-hashes -r requirements-convert.txt
	$(BIN)/pip install --quiet --no-deps -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install --quiet --require-hashes -r requirements-dev.txt
	touch $@

# The locks, compiled from pyproject.toml (+ requirements-dev.in) for Linux and macOS on any CPU
# (--universal), Python 3.11. Versions already pinned stay unless an input asks otherwise.
LOCK := $(BIN)/uv pip compile --universal --python-version 3.11 --generate-hashes --quiet \
	--custom-compile-command "make lock" pyproject.toml
lock: $(VENV)/.installed-dev
	$(LOCK) --extra serve --extra s3 -o requirements.txt
	$(LOCK) --extra serve --extra s3 --extra ray -o requirements-ray.txt
	$(LOCK) --extra serve --extra s3 --extra convert -o requirements-convert.txt
	$(LOCK) requirements-dev.in --extra serve --extra s3 --extra convert --extra ray -o requirements-dev.txt

# Train on the bundled example images, label the held-out ones, print the hashes.
demo: $(VENV)/.installed
	@echo "== training on example-data/train.csv (store: $(DATA_DIR))" >&2
	@$(BIN)/stl train example-data/train.csv | tee $(VENV)/demo-train.json
	@model=$$($(BIN)/python -c "import json;print(json.load(open('$(VENV)/demo-train.json'))['model_sha1'])"); \
	echo "== labelling example-data/infer/*.png with model $$model" >&2; \
	$(BIN)/stl infer --model $$model example-data/infer/checks.png example-data/infer/dots.png example-data/infer/stripes.png

# Headless Chromium for the browser test, qemu-user for the emulated-CPU tests, unshare + ip
# for the loopback-only namespace tests, Node.js + npm for the js-ipfs node the store tests run
# against, and Debian's Docker engine + debootstrap for the container tests (Debian/Ubuntu, as
# root); elsewhere a note says what to install.
system-deps:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ] || ! command -v qemu-x86_64 >/dev/null \
	    || ! command -v unshare >/dev/null || ! command -v ip >/dev/null || ! command -v npm >/dev/null \
	    || ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    pkgs="chromium chromium-driver qemu-user util-linux iproute2 docker.io debootstrap"; \
	    command -v npm >/dev/null || pkgs="$$pkgs nodejs npm"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$pkgs >/dev/null; \
	  else echo "note: install chromium, chromium-driver, qemu-user, util-linux, iproute2, nodejs, npm, docker.io and debootstrap for the browser, emulated-CPU, namespace, IPFS and container tests" >&2; fi; \
	fi

# js-ipfs, an IPFS node independent of Kubo, at the versions and integrity hashes of the lock file.
# Not `npm ci`: it insists on an optional WebRTC dependency that only GitHub serves. Optional
# dependencies (WebRTC, Electron) and install scripts are left out: the RPC API needs neither.
IPFS_NODE := tests/ipfs-node/node_modules/.installed
$(IPFS_NODE): tests/ipfs-node/package-lock.json | system-deps
	npm install --prefix tests/ipfs-node --omit=optional --ignore-scripts --no-audit --no-fund --loglevel=error
	touch $@

test: $(VENV)/.installed-dev system-deps $(IPFS_NODE)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q --durations=25

bench: $(VENV)/.installed-dev
	$(BIN)/python bench/bench_core.py
	$(BIN)/python bench/bench_models.py

# Train the example request on emulated aarch64 (debootstrap + qemu-user-static, as root).
cross-check: $(VENV)/.installed
	bash bench/cross_check_aarch64.sh

clean:
	rm -rf $(VENV) data tests/ipfs-node/node_modules
