# The two commands: `make demo` and `make test`. Each sets up what it needs first (scripts/setup.sh:
# a virtual environment in .venv with torch and the project, and Fashion-MNIST), once; later calls
# skip straight to the command.
#
#   make demo                        # iat demo (17 minutes on 2 cores with AVX-512, 30 with AVX2)
#   make test                        # python -m pytest -q
#   make test-fast                   # python -m pytest -q -m "not slow": the quick subset, under 2 minutes
#   make test-avx2                   # make test on this CPU's AVX2 kernels (as on a CPU without AVX-512)
#   make test ARGS='-x tests/test_attacks.py'     make demo ARGS='--seeds 1'
#   make PYTHON=python3.11 test      # the Python that creates .venv (>= 3.10)
#   make TORCH_PIP_ARGS='--index-url https://download.pytorch.org/whl/cpu' test   # CPU-only torch (smaller)
#   make setup | lint | clean-venv   make data [DATA='cifar10 svhn']  (downloads into ~/.cache/iat/data)

PYTHON ?= python3
VENV ?= .venv
# Optional dependency groups of pyproject.toml installed into .venv; add new ones here.
EXTRAS ?= test,autoattack
TORCH_PIP_ARGS ?=
ARGS ?=
DATA ?= fashion-mnist

BIN := $(VENV)/bin
SETUP := PYTHON='$(PYTHON)' VENV='$(VENV)' EXTRAS='$(EXTRAS)' TORCH_PIP_ARGS='$(TORCH_PIP_ARGS)' scripts/setup.sh

.PHONY: demo test test-fast test-avx2 lint setup data clean-venv help

help:
	@sed -n '1,12p' Makefile | sed 's/^# \{0,1\}//'

setup:
	@$(SETUP)

demo: setup
	$(BIN)/iat demo $(ARGS)

test: setup
	$(BIN)/python -m pytest -q $(ARGS)

# Everything but the tests marked slow (multi-process runs, whole pipelines): for the edit-test loop.
test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

# The suite again on AVX2 kernels (ATen's and oneDNN's), so an AVX-512 machine cannot hide an AVX2 failure
# (docs/reproducibility.md); CI runs both. Its own torch.compile cache: inductor's cache key leaves out
# ATEN_CPU_CAPABILITY, and a kernel cached for AVX-512 fails when loaded under it.
test-avx2: setup
	ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 TORCHINDUCTOR_CACHE_DIR=$${TMPDIR:-/tmp}/iat-inductor-avx2 \
	  $(BIN)/python -m pytest -q $(ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks examples

# Data sets from the internet (torchvision) into $IAT_DATA_DIR (default ~/.cache/iat/data): Fashion-MNIST
# without root, or the paper's: make data DATA='cifar10 svhn'
data: setup
	$(BIN)/python -c "import iat; [iat.load_data(d, s, download=True) for d in '$(DATA)'.split() for s in ('train', 'test')]"

clean-venv:
	rm -rf $(VENV)
