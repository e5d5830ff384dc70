# microfit: every routine action has a target here.
#   make demo   set everything up from nothing, then run the default job end to end
#   make test   set up what the tests need, then run them
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Cortex-M toolchain and emulator (the default board is QEMU mps2-an386).
APT_ARM := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
JOBS   ?= 2

.PHONY: all demo test setup toolchains lint bench clean distclean

all: test

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned in pyproject.toml (a CPU wheel; an unpinned torch pulls CUDA).
	$(BIN)/python -m pip install --quiet -e '.[test,oracles]'
	touch $@

setup: $(BIN)/.installed toolchains

toolchains:
	./scripts/ensure-apt-packages.sh $(APT_ARM)

demo: setup
	$(BIN)/microfit run --out runs/demo

test: setup
	$(BIN)/python -m pytest -n $(JOBS) -q

lint: $(BIN)/.installed
	$(BIN)/ruff check pipeline tests

bench: setup
	$(BIN)/python -m bench

clean:
	rm -rf runs build .pytest_cache

distclean: clean
	rm -rf $(VENV) *.egg-info
