# The two commands a user needs: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
PYTEST_ARGS ?=

.PHONY: env tools demo test test-all bench bench-extract bench-train bench-startup bench-scale bench-cpu table1 downstream clean

env: $(STAMP) tools

# Debian bio tools the project runs (MMseqs2 for fairseq-esm-make-uniref-splits and fairseq-esm-build-msas, DSSP
# for fairseq-esm-structure-labels, HMMER for the remote-homology baseline); idempotent
tools:
	bash preprocess/install_tools.sh mmseqs2 dssp hmmer

# torch first, pinned: a bare `torch` requirement would otherwise pull a multi-GB CUDA build.
$(STAMP): setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip wheel setuptools
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(STAMP)

demo: env
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/pretrain_demo.sh

test: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

test-all: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

table1: env
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/table1_small.sh

# the structure tables (probes, SS8/contact heads, MSA avg) from the table1 model; HOMOLOGY=1 adds Table 2
downstream: env
	PATH="$(CURDIR)/$(BIN):$$PATH" bash examples/downstream_small.sh

bench: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/binarize_speed.py

bench-extract: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/extract_speed.py --threads 1

bench-startup: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/startup.py

# time and peak RSS per stage against N, fitted and extrapolated to UniRef50/100 (docs/results.md, "Scale");
# minutes on 2 cores. The 1M run (about 15 min): make bench-scale SCALE_SIZES=100000,1000000
SCALE_SIZES ?= 20000,100000
bench-scale: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/scale.py --sizes $(SCALE_SIZES)

bench-train: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/train_speed.py --sizes small --repeats 3 --fairseq-train --generations esm1b,esm2

# fraction of the CPU's own matmul peak reached by extraction and a training step (fp32 / bf16 / int8), against
# HuggingFace and fair-esm on the same batches; then where the time goes (several minutes on 2 cores)
bench-cpu: env
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/cpu_limit.py
	PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python benchmarks/cpu_profile.py --width 1280 --layers 2 --dtypes fp32,bf16,int8

clean:
	rm -rf runs .pytest_cache
