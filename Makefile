# microfit: every routine action has a target here.
#   make demo   set everything up from nothing, then run the default job end to end
#   make test   set up what the tests need, then run them
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Cortex-M toolchain and emulator (the default board is QEMU mps2-an386).
APT_ARM := gcc-arm-none-eabi libnewlib-arm-none-eabi qemu-system-arm
# AVR toolchain, the simavr library the Uno bridge links against, and the
# Arduino AVR core the exported sketch is test-built with (~130 MB).
APT_AVR := gcc-avr avr-libc binutils-avr simavr libsimavr-dev arduino-core-avr
# clang's libFuzzer, for `make fuzz` and the short fuzz run in the tests.
APT_FUZZ := clang libclang-rt-14-dev
JOBS   ?= 2

.PHONY: all demo test setup toolchains lint bench fuzz clean distclean

all: test

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch is pinned in pyproject.toml (a CPU wheel; an unpinned torch pulls CUDA).
	$(BIN)/python -m pip install --quiet -e '.[test,oracles]'
	touch $@

setup: $(BIN)/.installed toolchains

toolchains:
	./scripts/ensure-apt-packages.sh $(APT_ARM) $(APT_AVR) $(APT_FUZZ)

demo: setup
	$(BIN)/microfit run --out runs/demo

test: setup
	$(BIN)/python -m pytest -n $(JOBS) -q

lint: $(BIN)/.installed
	$(BIN)/ruff check pipeline tests

# The device's frame parser and protocol under libFuzzer + ASan + UBSan, 10^6 inputs.
fuzz: $(BIN)/.installed
	./scripts/ensure-apt-packages.sh $(APT_FUZZ)
	$(MAKE) -C fuzz run RUNS=1000000 PYTHON=$(abspath $(BIN))/python

bench: setup
	$(BIN)/python -m pip install --quiet -e '.[bench]'  # peers run side by side
	$(BIN)/python -m bench

clean:
	rm -rf runs build .pytest_cache fuzz/build

distclean: clean
	rm -rf $(VENV) *.egg-info
