# s3gen-aot: every target uses the project venv in .venv/ (made by `make setup`).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
UPSTREAM := $(VENV)/.upstream
ART     ?= artifacts/synthetic
CKPT    ?= artifacts/synthetic.safetensors

.PHONY: setup setup-upstream demo test test-all bench bench-quick serve clean

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

# Upstream chatterbox-tts for the drop-in's tests (s3gen_chatterbox), never a dependency
# of s3gen-aot: its wheel without its pins (torch 2.6, torchaudio, gradio...), plus what the imported modules
# need; and the wheel of every release the drop-in claims (the tests unpack each in a fresh interpreter).
setup-upstream: $(UPSTREAM)

$(UPSTREAM): $(STAMP)
	$(BIN)/pip install -q 'numpy<2' einops==0.8.2 omegaconf==2.4.0 conformer==0.3.2 diffusers==0.29.0 \
		librosa==0.11.0 transformers==5.2.0 resemble-perth==1.0.1
	$(BIN)/pip install -q --no-deps chatterbox-tts==0.1.7 s3tokenizer==0.3.0
	$(BIN)/pip download -q --no-deps chatterbox-tts==0.1.6 -d $(VENV)/upstream-wheels
	$(BIN)/pip download -q --no-deps chatterbox-tts==0.1.7 -d $(VENV)/upstream-wheels
	touch $(UPSTREAM)

# synthetic checkpoint -> export -> runtime synthesis -> a wav, with timings
demo: setup
	$(BIN)/python scripts/demo.py --workdir artifacts

test: setup setup-upstream
	S3GEN_REQUIRE_UPSTREAM=1 $(BIN)/python -m pytest -q -m "not slow and not gpu" --durations=20

test-all: setup setup-upstream
	S3GEN_REQUIRE_UPSTREAM=1 $(BIN)/python -m pytest -q --durations=20

# Triton (PyTriton) on the demo's artifacts, loopback: make demo first
serve: setup
	$(BIN)/s3gen-aot serve $(ART) --host 127.0.0.1

bench: setup
	$(BIN)/python scripts/bench.py --out bench/results

bench-quick: setup
	$(BIN)/python scripts/bench.py --quick --out bench/results/quick

clean:
	rm -rf artifacts .pytest_cache
