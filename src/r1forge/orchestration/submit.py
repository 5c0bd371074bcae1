"""Uploading and starting a compiled pipeline with the KFP client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from r1forge.config import Recipe


def submit(
    host: str,
    package: Path,
    recipe: Recipe,
    experiment: str,
    run_name: str | None = None,
    token: str | None = None,
    client: Any | None = None,
) -> str:
    """Upload the package as a new version of the recipe's pipeline and start a run; its id."""
    import time

    if client is None:
        import kfp

        client = kfp.Client(host=host, existing_token=token, namespace=recipe.pipeline.namespace)
    version = time.strftime("%Y%m%d-%H%M%S")
    name = recipe.pipeline.name
    try:
        pipeline_id = client.get_pipeline_id(name)
    except Exception:  # an unknown name raises in some client versions
        pipeline_id = None
    if pipeline_id is None:
        client.upload_pipeline(str(package), pipeline_name=name, description=recipe.description)
    else:
        client.upload_pipeline_version(
            str(package), pipeline_version_name=f"{name}-{version}", pipeline_id=pipeline_id
        )
    run = client.create_run_from_pipeline_package(
        str(package),
        arguments={},
        run_name=run_name or f"{recipe.name}-{version}",
        experiment_name=experiment,
        namespace=recipe.pipeline.namespace,
    )
    return run.run_id
