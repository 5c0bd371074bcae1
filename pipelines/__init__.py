"""Kubeflow pipelines of the recipe (see `pipelines.r1_pipeline`)."""
