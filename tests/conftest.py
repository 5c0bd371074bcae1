"""Shared fixtures: the repo root, small recipes, and a CLI runner that checks exit codes."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


DIST_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """This environment for a child process, minus any process-group variables."""
    env = {k: v for k, v in os.environ.items() if k not in DIST_VARS}
    return {**env, **(extra or {})}


def run_cli(
    *args: str, cwd: Path | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run `python -m r1forge.cli ARGS` in a subprocess, as a user would run `r1forge`."""
    proc = subprocess.run(
        [sys.executable, "-m", "r1forge.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env=child_env(),
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"r1forge {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture(scope="session")
def ci_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The datasets of recipes/ci.yaml, built once for the session."""
    from r1forge.config import load_recipe
    from r1forge.stages import data

    out = tmp_path_factory.mktemp("ci") / "data"
    data.build_datasets(load_recipe(ROOT / "recipes/ci.yaml"), out)
    return out


@pytest.fixture(scope="session")
def ci_base(tmp_path_factory: pytest.TempPathFactory, ci_data: Path) -> Path:
    """The ci recipe's base model (a seconds-long pretraining), built once for the session."""
    from r1forge.config import load_recipe
    from r1forge.stages import base

    out = tmp_path_factory.mktemp("ci") / "base"
    base.build_base(load_recipe(ROOT / "recipes/ci.yaml"), ci_data, out)
    return out


def run_in(cmd: list[str], cwd: Path, timeout: int = 1800) -> str:
    """Run a command in `cwd` with the venv's tools first on PATH; its output, checked."""
    env = child_env(
        {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    )
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


def dvc_workspace(root: Path, recipe: str) -> Path:
    """A git + DVC workspace holding the code, the chart and one recipe, as a user's clone
    would (`dvc.yaml` generated for that recipe); not yet reproduced."""
    from r1forge.stages import dvc_yaml

    ws = root / "ws"
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    shutil.copytree(ROOT / "src", ws / "src", ignore=ignore)
    shutil.copytree(ROOT / "helm", ws / "helm", ignore=ignore)
    (ws / "recipes").mkdir()
    shutil.copy(ROOT / recipe, ws / recipe)
    (ws / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml(recipe), sort_keys=False))
    run_in(["git", "init", "-q"], ws)
    run_in([sys.executable, "-m", "dvc", "init", "-q"], ws)
    run_in([sys.executable, "-m", "dvc", "config", "core.site_cache_dir", str(root / "site")], ws)
    return ws
