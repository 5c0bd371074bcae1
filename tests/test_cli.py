"""The r1forge command: help that explains, clean errors with exit code 2, nothing half-written."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT, child_env, run_cli


def test_help_lists_stage_commands() -> None:
    out = run_cli("--help").stdout
    for command in ("data", "base", "stages", "report"):
        assert command in out
    assert "--set" in run_cli("base", "--help").stdout


def test_data_stage_writes_datasets_and_metrics(tmp_path: Path) -> None:
    proc = run_cli(
        "data",
        "--recipe",
        str(ROOT / "recipes/ci.yaml"),
        "--set",
        "data.cold_start_size=10",
        "--output",
        str(tmp_path / "data"),
        "--metrics",
        str(tmp_path / "m.json"),
    )
    assert "cold_start=10" in proc.stdout
    assert json.loads((tmp_path / "m.json").read_text())["data"]["cold_start"] == 10
    config = (tmp_path / "data/config.yaml").read_text()
    assert "cold_start_size: 10" in config


def test_bad_recipe_exits_2_and_keeps_previous_output(tmp_path: Path) -> None:
    out = tmp_path / "data"
    run_cli("data", "--recipe", str(ROOT / "recipes/ci.yaml"), "--output", str(out))
    before = (out / "cold_start.jsonl").read_bytes()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ndata:\n  cold_start_size: many\n")
    proc = run_cli("data", "--recipe", str(bad), "--output", str(out), check=False)
    assert proc.returncode == 2
    assert f"{bad}:3: field 'data.cold_start_size'" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert (out / "cold_start.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.yaml", "data"]


def test_base_without_data_names_the_missing_file(tmp_path: Path) -> None:
    proc = run_cli(
        "base",
        "--recipe",
        str(ROOT / "recipes/ci.yaml"),
        "--data",
        str(tmp_path / "none"),
        "--output",
        str(tmp_path / "base"),
        check=False,
    )
    assert proc.returncode == 2
    assert "file not found" in proc.stderr and "eval" in proc.stderr
    assert not (tmp_path / "base").exists()
    assert list(tmp_path.iterdir()) == []


def test_unknown_override_is_an_error(tmp_path: Path) -> None:
    proc = run_cli(
        "data",
        "--recipe",
        str(ROOT / "recipes/ci.yaml"),
        "--set",
        "data.sizes=3",
        "--output",
        str(tmp_path / "d"),
        check=False,
    )
    assert proc.returncode == 2 and "field 'data.sizes': unknown field" in proc.stderr


def test_report_shows_held_out_accuracy_before_and_after(tmp_path: Path) -> None:

    (tmp_path / "grpo_reasoning.json").write_text(
        json.dumps(
            {
                "grpo_reasoning": {
                    "steps": 3,
                    "eval_before": {"eval/arithmetic/greedy": 0.5},
                    "eval_after": {"eval/arithmetic/greedy": 0.6},
                }
            }
        )
    )
    out = run_cli("report", "--metrics", str(tmp_path)).stdout
    assert "held-out pass@1 before and after RL" in out and "+10.0" in out
    assert "steps=3" in out and "not run" in out


def test_plugins_register_rewards_a_recipe_can_name(tmp_path: Path) -> None:
    (tmp_path / "my_rewards.py").write_text(
        "from r1forge.rewards import register\n\n"
        "@register('always_one')\n"
        "def always_one(completions, examples, **params):\n"
        "    return [1.0] * len(completions)\n"
    )
    args = [
        "data",
        "--recipe",
        str(ROOT / "recipes/ci.yaml"),
        "--set",
        "grpo_reasoning.rewards={always_one: 1.0}",
        "--set",
        "data.cold_start_size=10",
        "--output",
        str(tmp_path / "data"),
    ]

    def run(plugins: str | None) -> subprocess.CompletedProcess[str]:
        env = {"PYTHONPATH": str(tmp_path)} | ({"R1FORGE_PLUGINS": plugins} if plugins else {})
        return subprocess.run(
            [sys.executable, "-m", "r1forge.cli", *args],
            capture_output=True,
            text=True,
            timeout=300,
            env=child_env(env),
        )

    unknown = run(None)
    assert unknown.returncode == 2 and "unknown reward(s) ['always_one']" in unknown.stderr
    assert run("my_rewards").returncode == 0
    missing = run("my_rewards, not_a_module")
    assert missing.returncode == 2
    assert "R1FORGE_PLUGINS: cannot import 'not_a_module'" in missing.stderr
