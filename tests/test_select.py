"""Stage `select` (issue 17): RL prompts chosen by the starting model's pass rate, written as
a versioned prompt dataset (manifest and lineage), usable by GRPO, also as a curriculum."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1forge.data.jsonl import read_jsonl, read_manifest
from r1forge.io import sha256_file
from r1forge.stages.select import keep_and_order, pass_rates

from .conftest import ROOT, run_cli


def test_pass_rates_by_hand() -> None:
    assert pass_rates([1, 0, 1, 1, 0, 0, 1, 1, 1], 3) == pytest.approx([2 / 3, 1 / 3, 1.0])
    with pytest.raises(ValueError, match="groups of 2"):
        pass_rates([1, 0, 1], 2)


def test_window_and_orders() -> None:
    rates = [0.0, 0.5, 1.0, 0.25, 0.75, 0.5]
    sometimes = (0.01, 0.99)
    assert keep_and_order(rates, sometimes, "easiest_first", 0) == [4, 1, 5, 3]
    assert keep_and_order(rates, sometimes, "hardest_first", 0) == [3, 1, 5, 4]
    shuffled = keep_and_order(rates, sometimes, "shuffle", 0)
    assert sorted(shuffled) == [1, 3, 4, 5]
    assert shuffled == keep_and_order(rates, sometimes, "shuffle", 0)  # seeded
    assert keep_and_order(rates, (0.0, 1.0), "easiest_first", 0) == [2, 4, 1, 5, 3, 0]
    assert keep_and_order(rates, (0.5, 0.5), "hardest_first", 0) == [1, 5]


@pytest.mark.slow
def test_select_writes_a_versioned_dataset_that_grpo_trains_on_in_order(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    # `selected/` beside `data/`, as the DVC pipeline lays them out
    layout = tmp_path / "ws"
    layout.mkdir()
    (layout / "data").symlink_to(ci_data, target_is_directory=True)
    out = layout / "selected/rl_prompts.jsonl"
    recipe = str(ROOT / "recipes/ci.yaml")
    done = run_cli(
        "select",
        "--recipe",
        recipe,
        "--model",
        str(ci_base),
        "--data",
        str(layout / "data"),
        "--output",
        str(out),
        "--set",
        "select.order=easiest_first",
        "--metrics",
        str(tmp_path / "select.json"),
    )
    assert "kept 16 of 16 prompts" in done.stdout
    records = read_jsonl(out, "prompt")
    rates = [r.meta["pass_rate"] for r in records]
    assert rates == sorted(rates, reverse=True) and len(records) == 16
    manifest = read_manifest(out)
    assert manifest["count"] == 16 and manifest["sha256"] == sha256_file(out)
    source = manifest["source"]
    assert source["stage"] == "select" and source["model_sha256"] == sha256_file(
        ci_base / "model.safetensors"
    )
    assert source["prompts"] == {
        "rl_prompts.jsonl": read_manifest(ci_data / "rl_prompts.jsonl")["sha256"]
    }
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["kept"] == 16 and sum(stats["pass_rate_histogram"].values()) == 16
    assert json.loads((tmp_path / "select.json").read_text())["select"]["kept"] == 16

    # GRPO on the selected prompts, in the file's order (a curriculum)
    run_cli(
        "grpo",
        "--recipe",
        recipe,
        "--data",
        str(layout / "data"),
        "--model",
        str(ci_base),
        "--output",
        str(tmp_path / "grpo"),
        "--set",
        "grpo_reasoning.prompts=[../selected/rl_prompts.jsonl]",
        "--set",
        "grpo_reasoning.prompt_order=file",
        "--set",
        "grpo_reasoning.max_steps=2",
    )
    lineage = json.loads((tmp_path / "grpo/r1forge.json").read_text())["lineage"]
    assert lineage["datasets"] == {"../selected/rl_prompts.jsonl": manifest["sha256"]}

    # a window nothing falls in is a clear error that names the output
    empty = run_cli(
        "select",
        "--recipe",
        recipe,
        "--model",
        str(ci_base),
        "--data",
        str(layout / "data"),
        "--output",
        str(tmp_path / "none.jsonl"),
        "--set",
        "select.pass_rate=[0.6, 0.7]",
        check=False,
    )
    assert (
        empty.returncode == 2
        and "none.jsonl: no prompt has a pass rate in [0.6, 0.7]" in empty.stderr
    )
    assert not (tmp_path / "none.jsonl").exists()
