# r1forge serving image: vLLM's own CUDA image (pinned tag), the model fetcher (r1forge installed
# without its dependencies, plus fsspec/s3fs/gcsfs/DVC pinned), a non-root user (uid 1000).
# Tagged r1forge.orchestration.SERVE_IMAGE. Build from the repo root (docker/README.md):
#   docker build -f docker/serve.Dockerfile \
#     -t "$(python3 -c 'from r1forge.orchestration import SERVE_IMAGE; print(SERVE_IMAGE)')" .
# The model is not in the image: it is fetched at start, by the Helm chart's init container
# (`python3 -m r1forge.serving.fetch ...`) or, under `docker run`, by docker/serve-entrypoint.sh
# when MODEL_URI is set.
#
# v0.30.0: CUDA 13.0 build (NVIDIA driver 580 or newer); vLLM publishes a -cu129 variant of the
# same tag for CUDA 12 drivers.
FROM vllm/vllm-openai:v0.30.0

SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# The fetcher's storage back ends (s3://, gs://, dvc://), into vLLM's own Python (vLLM's docs
# install extras with `uv pip install --system`).
RUN uv pip install --system --no-cache \
      fsspec==2026.9.0 \
      s3fs==2026.9.0 \
      gcsfs==2026.10.1 \
      "dvc[s3,gs]==3.67.1" \
      dvc-s3==3.3.0 \
      dvc-gs==3.1.0

# r1forge itself without its dependencies: the fetcher needs only the stdlib and fsspec, and
# vLLM's image already has torch and transformers.
COPY pyproject.toml README.md /tmp/r1forge/
COPY src /tmp/r1forge/src
COPY components /tmp/r1forge/components
COPY pipelines /tmp/r1forge/pipelines
RUN uv pip install --system --no-cache --no-deps /tmp/r1forge \
 && rm -rf /tmp/r1forge \
 && python3 -m r1forge.serving.fetch --help > /dev/null

COPY docker/serve-entrypoint.sh /usr/local/bin/r1forge-serve-entrypoint

# A non-root user with uid 1000 (the chart's runAsUser/fsGroup), reusing the base's uid-1000 user
# if it has one; /models (the fetched model) and the home (vLLM, Hugging Face and compile
# caches) belong to it.
RUN if ! getent group 1000 > /dev/null; then groupadd --gid 1000 vllm; fi \
 && if ! getent passwd 1000 > /dev/null; then \
      useradd --uid 1000 --gid 1000 --no-create-home --shell /bin/bash vllm; fi \
 && install -d -o 1000 -g 1000 /models /home/vllm /home/vllm/.cache
ENV HOME=/home/vllm \
    HF_HOME=/home/vllm/.cache/huggingface
USER 1000:1000
WORKDIR /home/vllm

EXPOSE 8000
# curl-free: Python's urllib asks /health (200 once the engine is up; never behind the API key).
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

ENTRYPOINT ["/bin/sh", "/usr/local/bin/r1forge-serve-entrypoint"]
CMD []
