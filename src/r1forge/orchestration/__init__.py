"""Running the recipe on Kubernetes: Kubeflow Pipelines tasks and distributed training jobs."""

from r1forge import __version__

IMAGE_REPOSITORY = "ghcr.io/r1forge"
TRAIN_IMAGE = f"{IMAGE_REPOSITORY}/r1forge-train:{__version__}"
"""The one image every pipeline task runs in (CUDA, torch, DeepSpeed, kfp, the project)."""
