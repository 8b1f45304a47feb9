# s3gen-aot: every target uses the project venv in .venv/ (made by `make setup`).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
ART     ?= artifacts/synthetic
CKPT    ?= artifacts/synthetic.safetensors

.PHONY: setup demo test test-all bench bench-quick serve clean

setup: $(STAMP)

$(STAMP): pyproject.toml bench/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	# torch first and pinned: the CPU wheel that lies on these machines
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[export,bench,test,voice,vocos,serve]'
	$(BIN)/pip install -q -e ./bench
	# vocos without torchaudio/encodec (see the vocos extra in pyproject.toml)
	$(BIN)/pip install -q --no-deps vocos==0.1.0
	touch $(STAMP)

# synthetic checkpoint -> export -> runtime synthesis -> a wav, with timings
demo: setup
	$(BIN)/python scripts/demo.py --workdir artifacts

test: setup
	$(BIN)/python -m pytest -q -m "not slow and not gpu" --durations=20

test-all: setup
	$(BIN)/python -m pytest -q --durations=20

# Triton (PyTriton) on the demo's artifacts, loopback: make demo first
serve: setup
	$(BIN)/s3gen-aot serve $(ART) --host 127.0.0.1

bench: setup
	$(BIN)/python scripts/bench.py --out bench/results

bench-quick: setup
	$(BIN)/python scripts/bench.py --quick --out bench/results/quick

clean:
	rm -rf artifacts .pytest_cache
