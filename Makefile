# MedTrans: `make demo` and `make test` set everything up themselves (venv in .venv/, pip, apt packages).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYRADPLAN_VERSION := 0.5.0
# Debian packages: chromium for the browser tests, Mesa's EGL/OSMesa for off-screen VTK rendering.
APT_PACKAGES := chromium libegl1 libegl-mesa0 libgl1-mesa-dri libglu1-mesa libxrender1 libxt6
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# VTK/MRML reset the C locale when imported; UTF-8 mode keeps Python's text I/O independent of it.
export PYTHONUTF8 := 1

.PHONY: demo test test-fast web lint format system-deps clean

$(STAMP): pyproject.toml training/pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned to the CPU build in pyproject.toml (a bare `torch` would pull a multi-GB CUDA build).
	$(BIN)/python -m pip install -q -e ".[web,test,dose,cbct]" -e ./training
	# pyRadPlan without its declared dependencies: the `dose` extra lists the ones it uses (pyproject.toml says why).
	$(BIN)/python -m pip install -q --no-deps pyRadPlan==$(PYRADPLAN_VERSION)
	@touch $(STAMP)

system-deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: $(STAMP)
	$(BIN)/medtrans demo --out medtrans-demo

test: $(STAMP) system-deps
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

web: $(STAMP) system-deps
	$(BIN)/medtrans web

lint format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

clean:
	rm -rf $(VENV) medtrans-demo Testing/artifacts .pytest_cache
