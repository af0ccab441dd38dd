# tellme: two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
# pytest workers: CI and this project's machines have 2 cores. worksteal: a worker that runs
# dry takes tests queued for the other (the default hands the last tests out in batches, so one
# worker could build a dozen designs alone while the other idled).
JOBS   ?= 2

.PHONY: all setup demo test test-all regress bench clean info

all: test

# The virtualenv is (re)built whenever the project's dependency list changes.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip setuptools wheel
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/tellme demo

test: $(STAMP)
	$(BIN)/pytest -n $(JOBS) --dist worksteal -m "not slow" --durations=25

# Everything, slow sweeps included.
test-all: $(STAMP)
	$(BIN)/pytest -n $(JOBS) --dist worksteal

# The nightly job: randomized cases of every unit and the top level against the golden model for
# REGRESS_MINUTES, then the malformed-input fuzzers and the formal proofs;
# bench/results/reliability.json. Replay a case: python -m bench.regress --only UNIT --seed SEED --cases 1
REGRESS_MINUTES ?= 30
regress: $(STAMP)
	$(BIN)/python -m bench.regress --minutes $(REGRESS_MINUTES)

bench: $(STAMP)
	$(BIN)/python -m bench

info: $(STAMP)
	$(BIN)/tellme info

clean:
	rm -rf build out .pytest_cache
