"""The recipe as a DVC pipeline: generated from the stage registry, reruns only what changed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from r1forge.stages import STAGES, dvc_yaml

from .conftest import ROOT, child_env, run_cli


def test_committed_dvc_yaml_is_the_generated_one() -> None:
    committed = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert committed == dvc_yaml("recipes/tiny.yaml")
    assert list(committed["stages"]) == [s.name for s in STAGES]
    printed = run_cli("stages", "dvc-yaml").stdout
    assert yaml.safe_load(printed) == committed


def _run(cmd: list[str], cwd: Path) -> str:
    env = child_env(
        {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1"}
    )
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{cmd} failed\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout + proc.stderr


@pytest.mark.slow
def test_dvc_repro_skips_unchanged_stages(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    shutil.copytree(
        ROOT / "src", ws / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    (ws / "recipes").mkdir()
    recipe = ws / "recipes/ci.yaml"
    shutil.copy(ROOT / "recipes/ci.yaml", recipe)
    (ws / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml("recipes/ci.yaml"), sort_keys=False))
    _run(["git", "init", "-q"], ws)
    _run([sys.executable, "-m", "dvc", "init", "-q"], ws)
    _run([sys.executable, "-m", "dvc", "config", "core.site_cache_dir", str(tmp_path / "site")], ws)

    first = _run([sys.executable, "-m", "dvc", "repro"], ws)
    assert "Running stage 'data'" in first and "Running stage 'base'" in first
    assert (ws / "models/base/model.safetensors").is_file() and (ws / "metrics/base.json").is_file()

    second = _run([sys.executable, "-m", "dvc", "repro"], ws)
    assert "Running stage" not in second
    assert "Stage 'data' didn't change" in second and "Stage 'base' didn't change" in second

    assert (ws / "metrics/eval_grpo_final.json").is_file() and (ws / "synthetic").is_dir()
    # a change to the final RL section reruns only that stage and its evaluation
    text = recipe.read_text()
    changed = text.replace(
        "  max_steps: 2\n  prompts_per_step: 4", "  max_steps: 1\n  prompts_per_step: 4"
    )
    assert changed != text
    recipe.write_text(changed)
    third = _run([sys.executable, "-m", "dvc", "repro"], ws)
    assert "Stage 'base' didn't change" in third and "Stage 'sample' didn't change" in third
    assert "Running stage 'grpo_final'" in third and "Running stage 'eval_grpo_final'" in third

    report = run_cli("report", "--metrics", str(ws / "metrics")).stdout
    assert "checkpoints on the held-out eval sets" in report
    summary = json.loads((ws / "metrics/summary.json").read_text())
    names = [row["name"] for row in summary["checkpoints"]]
    assert names == [
        "sft_cold_start",
        "grpo_reasoning",
        "sft_merged",
        "grpo_final",
        "grpo_student",
        "distill/small",
        "distill/small_kd",
    ]
    for row in summary["checkpoints"]:
        assert set(row) == {
            "name",
            "pass@1",
            "cons@k",
            "greedy_accuracy",
            "format_rate",
            "mean_length",
        }
