"""The benchmark scripts still run end to end (tiny CPU sizes; no timing is asserted here)."""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import ROOT


def run_benchmark(script: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    """`python benchmarks/SCRIPT ARGS`, as a user would run it."""
    command = [sys.executable, str(ROOT / "benchmarks" / script), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_sft_throughput_smoke(tmp_path: Path) -> None:
    out = tmp_path / "sft.json"
    proc = run_benchmark("sft_throughput.py", "--tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for side in ("trl", "r1forge"):
        steps = report[side]["step_tokens_per_s"]
        assert report[side]["tokens_per_s"] > 0 and steps and all(x > 0 for x in steps)
    assert report["ratio_vs_trl"] == pytest.approx(
        report["r1forge"]["tokens_per_s"] / report["trl"]["tokens_per_s"]
    )
    assert "ratio r1forge / TRL" in proc.stdout


@pytest.mark.slow
def test_grpo_step_smoke(tmp_path: Path) -> None:
    out = tmp_path / "grpo.json"
    proc = run_benchmark("grpo_step.py", "--tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["ratio_vs_trl"] == pytest.approx(
        report["trl"]["seconds_per_step"] / report["r1forge"]["seconds_per_step"]
    )
    gen = report["generation"]
    assert gen["greedy_token_agreement"] == 1.0  # fp32 on CPU: the engine is exact
    for side in ("transformers_static_compiled", "r1forge_static_engine"):
        assert gen[side]["tokens_per_s"] > 0 and gen[side]["decode_ms_per_step"] > 0
    assert "ratio r1forge / TRL" in proc.stdout


@pytest.mark.slow
def test_grpo_step_at_drawn_lengths_smoke(tmp_path: Path) -> None:
    """--lengths: both sides generate exactly the drawn lengths (TRL made to emit EOS there)."""
    out = tmp_path / "grpo.json"
    proc = run_benchmark(
        "grpo_step.py", "--tiny", "--lengths", "--only", "r1forge,trl", "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    lengths = report["config"]["forced_lengths"]
    assert (
        len(lengths) == 8 and len(set(lengths)) > 1 and not report["config"]["forced_full_length"]
    )
    mean = sum(lengths) / len(lengths)
    assert report["r1forge"]["completion_length"] == pytest.approx(mean)
    assert report["trl"]["completion_length"] == pytest.approx(mean)
    assert report["parts_order"] == ["r1forge", "trl"]  # as --only names them


def test_grpo_step_parts_run_in_the_order_only_names_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A short device call names the faster side first, so a cut run still keeps it; an unknown
    part is refused before any work."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from grpo_step import parts_to_run

    parts = ["trl", "r1forge", "generation"]
    assert parts_to_run(None, parts) == parts
    assert parts_to_run("r1forge,trl", parts) == ["r1forge", "trl"]
    assert parts_to_run(" generation , r1forge,generation", parts) == ["generation", "r1forge"]
    with pytest.raises(SystemExit, match="unknown part"):
        parts_to_run("r1forge,vllm", parts)


def test_grpo_step_a_cut_run_keeps_the_parts_that_finished(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The JSON is written after every part, so a call stopped during the second part (here an
    interrupt, as a device call's time limit would) still holds the first part's figures."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import grpo_step

    def interrupted(*_: object) -> dict:
        raise KeyboardInterrupt

    monkeypatch.setattr(grpo_step, "run_r1forge", lambda *_: {"seconds_per_step": 0.5})
    monkeypatch.setattr(grpo_step, "run_trl", interrupted)
    out = tmp_path / "grpo.json"
    argv = ["grpo_step.py", "--tiny", "--only", "r1forge,trl", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(KeyboardInterrupt):
        grpo_step.main()
    report = json.loads(out.read_text())
    assert report["r1forge"] == {"seconds_per_step": 0.5} and "trl" not in report
    assert report["parts_order"] == ["r1forge", "trl"]
    assert [p.name for p in tmp_path.iterdir()] == ["grpo.json"]  # no temp file left


@pytest.mark.slow
def test_rollout_lengths_smoke(tmp_path: Path) -> None:
    """All three sides on the same drawn lengths; the engine now and the engine before the change
    (from git history) report the log-probs a plain forward gives, fp32 on CPU."""
    previous = tmp_path / "static_previous.py"
    show = subprocess.run(
        ["git", "show", "29fa76b:src/r1forge/rollout/static.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if show.returncode != 0:
        pytest.skip(f"the previous engine's commit is not in this clone: {show.stderr}")
    previous.write_text(show.stdout)
    out = tmp_path / "rollout.json"
    proc = run_benchmark(
        "rollout_lengths.py", "--tiny", "--previous-engine", str(previous), "--out", str(out)
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    for key in ("config", "versions", "gpu", "lengths", "ratio_vs_transformers"):
        assert key in report
    sides = ("r1forge_static_engine", "previous_engine", "transformers_static_compiled")
    for side in sides:
        assert report[side]["useful_tokens_per_s"] > 0
    useful = sum(report["lengths"]["values"])
    assert report["ratio_vs_previous_engine"] == pytest.approx(
        report["previous_engine"]["seconds"] / report["r1forge_static_engine"]["seconds"]
    )
    assert report["r1forge_static_engine"]["useful_tokens_per_s"] == pytest.approx(
        useful / report["r1forge_static_engine"]["seconds"]
    )
    for side in sides[:2]:
        check = report["checks"][side]
        assert check["greedy_agreement_with_transformers"] == 1.0
        assert check["sampled_logprob_gap_max"] < 1e-4


@pytest.mark.slow
def test_recipe_quality_smoke(tmp_path: Path) -> None:
    out = tmp_path / "quality.json"

    def bench() -> dict:
        proc = run_benchmark(
            "recipe_quality.py",
            "--recipe",
            str(ROOT / "recipes/ci.yaml"),
            "--seeds",
            "3",
            "--workdir",
            str(tmp_path / "work"),
            "--out",
            str(out),
            timeout=900,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(out.read_text())

    report = bench()
    seed = report["seeds"]["3"]
    assert seed["grpo_steps"] == 4 and "arithmetic/greedy" in seed["eval"]
    e = seed["eval"]["arithmetic/greedy"]
    assert e["gain_points"] == pytest.approx(100 * (e["grpo"] - e["sft"]))
    assert report["summary"]["arithmetic/greedy"]["gain_points_min"] == pytest.approx(
        e["gain_points"]
    )
    curve = seed["eval_curve"]
    assert curve[0]["step"] == 0 and curve[-1]["step"] == 4
    assert curve[0]["eval/arithmetic/greedy"] == e["sft"]
    assert curve[-1]["eval/arithmetic/greedy"] == e["grpo"]
    # run again in the same work folder: every stage is already finished, nothing is redone
    log = tmp_path / "work/seed3/log.txt"
    logged = log.read_text()
    again = bench()
    assert log.read_text() == logged
    assert again["seeds"]["3"]["eval"] == seed["eval"]


@pytest.mark.slow
def test_multi_gpu_scaling_smoke(tmp_path: Path) -> None:
    """The DeepSpeed launcher with 1 and 2 gloo ranks: same losses, rewards and weights."""
    out = tmp_path / "multi.json"
    proc = run_benchmark("multi_gpu_scaling.py", "--tiny", "--out", str(out), timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    sft, grpo = report["sft"], report["grpo"]
    assert (
        sft["runs"]["2"]["rank_check"]["ranks"] == 2
        and grpo["runs"]["2"]["rank_check"]["ranks"] == 2
    )
    assert sft["runs"]["2"]["max_loss_diff_vs_1"] < 1e-5  # fp32 on CPU
    assert grpo["runs"]["2"]["max_reward_diff_vs_1"] < 1e-6
    assert grpo["runs"]["2"]["weights_vs_1"]["max_abs"] < 1e-6
    for part in (sft, grpo):
        resume = part["kill_and_resume"]
        assert resume["resumed_from_step"] == resume["killed_after_step"] > 0
        assert resume["weights_vs_uninterrupted"]["max_abs"] <= 1e-6
        assert all(r["scaling_efficiency"] > 0 for r in part["runs"].values())
    assert grpo["kill_and_resume"]["weights_moved"]["max_abs"] > 1e-5
    assert report["scaling"]["sft"]["scaling_efficiency"]["1"] == 1.0
    assert set(report["scaling"]["grpo"]["by_gpus"]) == {"1", "2"}


def _quality_report(seeds: dict[str, tuple[float, float]], recipe: str = "name: r\n") -> dict:
    """A recipe_quality report with greedy (sft, grpo) pass@1 per seed."""
    return {
        "benchmark": "recipe_quality",
        "date": "2026-11-30",
        "gpu": "NVIDIA H200",
        "recipe": "recipes/r.yaml",
        "recipe_text": recipe,
        "seeds": {
            seed: {"eval": {"a/greedy": {"sft": b, "grpo": a, "gain_points": 100 * (a - b)}}}
            for seed, (b, a) in seeds.items()
        },
        "total_seconds": 100.0,
    }


def test_recipe_quality_merges_runs_of_disjoint_seeds(tmp_path: Path) -> None:
    first, second = tmp_path / "01.json", tmp_path / "23.json"
    first.write_text(json.dumps(_quality_report({"0": (0.5, 0.75), "1": (0.25, 0.75)})))
    second.write_text(json.dumps(_quality_report({"2": (0.5, 0.625)})))
    out = tmp_path / "all.json"
    proc = run_benchmark("recipe_quality.py", "--merge", str(first), str(second), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    merged = json.loads(out.read_text())
    assert sorted(merged["seeds"]) == ["0", "1", "2"]
    summary = merged["summary"]["a/greedy"]
    assert summary["sft_mean"] == pytest.approx(1.25 / 3)
    assert summary["grpo_mean"] == pytest.approx(2.125 / 3)
    assert summary["gain_points_min"] == pytest.approx(12.5)
    assert summary["gain_points_mean"] == pytest.approx((25 + 50 + 12.5) / 3)
    assert summary["gain_points_by_seed"] == pytest.approx({"0": 25, "1": 50, "2": 12.5})
    assert [run["seeds"] for run in merged["runs"]] == [["0", "1"], ["2"]]
    assert merged["total_seconds"] == 200.0

    other_recipe = tmp_path / "other.json"
    other_recipe.write_text(json.dumps(_quality_report({"4": (0.0, 1.0)}, recipe="name: s\n")))
    same_seed = tmp_path / "again.json"
    same_seed.write_text(json.dumps(_quality_report({"1": (0.0, 1.0)})))
    for bad, message in ((other_recipe, "different recipes"), (same_seed, "seed 1")):
        proc = run_benchmark(
            "recipe_quality.py", "--merge", str(first), str(bad), "--out", str(out)
        )
        assert proc.returncode != 0 and message in proc.stderr
    assert json.loads(out.read_text()) == merged  # a refused merge leaves the file as it was


def _rl_report(seed: str, sft: float, rl: float, lr: float = 1e-5) -> dict:
    """An rl_quality report of one seed (one device call)."""
    block = {"pass@1": rl, "greedy_accuracy": rl, "format_rate": 1.0}
    return {
        "recipe_text": "name: r\n",
        "eval_sets": ["a"],
        "in_distribution": "a",
        "config": {"grpo_reasoning": {"lr": lr}},
        "versions": {"trl": "1.16.0"},
        "gpu": "NVIDIA H100 80GB HBM3",
        "date": "2026-12-05",
        "seconds": 300.0,
        "seeds": {
            seed: {
                "sft": {"a": {**block, "pass@1": sft}},
                "r1forge": {"a": block},
                "trl": {"a": block},
                "gain_points": {
                    "a": {"r1forge_pass@1": 100 * (rl - sft), "trl_pass@1": 100 * (rl - sft)}
                },
            }
        },
    }


def test_rl_quality_merges_one_seed_per_call(tmp_path: Path) -> None:
    """Issue 17 asks for two seeds; a device call fits one, so the two reports are merged,
    and reports of other settings or the same seed are refused without touching --out."""
    paths = []
    for name, report in {
        "s0": _rl_report("0", 0.5, 0.75),
        "s1": _rl_report("1", 0.25, 0.5),
        "s1again": _rl_report("1", 0.0, 1.0),
        "other_lr": _rl_report("2", 0.0, 1.0, lr=5e-5),
    }.items():
        paths.append(tmp_path / f"{name}.json")
        paths[-1].write_text(json.dumps(report))
    out = tmp_path / "rl.json"
    script = str(ROOT / "benchmarks/rl_quality.py")

    def merge(*files: Path) -> subprocess.CompletedProcess:
        cmd = [sys.executable, script, "--merge", *map(str, files), "--out", str(out)]
        return subprocess.run(cmd, capture_output=True, text=True)

    proc = merge(paths[0], paths[1])
    assert proc.returncode == 0, proc.stderr
    merged = json.loads(out.read_text())
    assert sorted(merged["seeds"]) == ["0", "1"]
    assert merged["seeds"]["1"]["sft"]["a"]["pass@1"] == 0.25
    assert [run["seeds"] for run in merged["runs"]] == [["0"], ["1"]]
    assert merged["seconds"] == 600.0 and merged["in_distribution"] == "a"
    assert "+25.0 / +25.0" in proc.stdout
    for bad, message in ((paths[2], "seed 1"), (paths[3], "different config")):
        proc = merge(paths[0], paths[1], bad)
        assert proc.returncode != 0 and message in proc.stderr
    assert json.loads(out.read_text()) == merged


def test_rl_quality_curves_against_samples(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--plot` draws each arm's curves against samples drawn: r1forge's start after its
    selection pass and count its refills, TRL's count one batch a step."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import rl_quality

    report = _rl_report("0", 0.5, 0.75)
    report["recipe"] = "recipes/x.yaml"
    report["config"]["grpo_reasoning"] |= {"prompts_per_step": 2, "group_size": 4}
    seed = report["seeds"]["0"]
    seed["samples"] = {"r1forge_selection": 10}
    seed["r1forge_run"] = {
        "curve": [
            {"step": 0, "eval/a/greedy": 0.5},
            {"step": 1, "reward": 0.5, "entropy": 0.1, "zero_std_fraction": 0.0},
            {"step": 2, "reward": 0.7, "dynamic/draws": 2.0, "zero_std_fraction": 0.5},
        ]
    }
    seed["trl_run"] = {"curve": [{"step": 1, "reward": 0.4, "frac_reward_zero_std": 0.25}]}
    assert [x for x, _ in rl_quality.samples_curve(report, "0", "r1forge")] == [18, 34]
    assert [x for x, _ in rl_quality.samples_curve(report, "0", "trl")] == [8]
    path = rl_quality.plot_report(report, tmp_path / "curves.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def rl_quality_args(recipe: str, arm: list[str]) -> argparse.Namespace:
    """`rl_quality.py`'s parsed arguments for one recipe and one extra r1forge arm."""
    return argparse.Namespace(
        recipe=ROOT / recipe, set=[], trl_set=[], trl_equal_samples=False, arm=[arm]
    )


def test_rl_quality_extra_arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--arm NAME KEY=VALUE` adds an r1forge GRPO run from the same cold start with overrides
    of its own, evaluated like the recipe's arm; the recipe's arm keeps the recipe; a taken
    name or a bad override is refused before any work."""
    from r1forge.config import load_recipe

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import rl_quality

    args = rl_quality_args("recipes/ci.yaml", ["hold", "grpo_reasoning.entropy.target=0.1"])
    work = tmp_path / "seed0"
    script = rl_quality.seed_script(args, load_recipe(args.recipe, []), tmp_path / "data", work, 0)
    grpo = [line for line in script.split("( ") if "'grpo'" in line]
    assert len(grpo) == 2
    ours, hold = sorted(grpo, key=lambda line: "hold" in line)
    assert f"'{work}/r1forge'" in ours and "entropy.target" not in ours
    assert f"'{work}/hold'" in hold and "'grpo_reasoning.entropy.target=0.1'" in hold
    assert f"'{work}/eval_hold'" in hold and f"test -f {work}/eval_hold/metrics.json" in script
    for arm, message in (
        (["trl", "grpo_reasoning.lr=1e-6"], "a new identifier"),
        (["samples", "grpo_reasoning.lr=1e-6"], "a new identifier"),
        (["hold", "lr"], "KEY=VALUE"),
        (["hold", "grpo_reasoning.nosuch=1"], "nosuch"),
    ):
        proc = run_benchmark(
            "rl_quality.py",
            "--recipe",
            str(ROOT / "recipes/ci.yaml"),
            "--workdir",
            str(tmp_path / "refused"),
            "--arm",
            *arm,
            timeout=120,
        )
        assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "refused").exists()


def test_rl_quality_trl_does_not_wait_for_the_selection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a selection pass (quality-h200 recipe), the pass runs side by side with TRL, which
    reads the whole pool, and only r1forge's arms (and their evaluations) wait for it."""
    from r1forge.config import load_recipe

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import rl_quality

    args = rl_quality_args("recipes/quality-h200.yaml", ["mu2", "grpo_reasoning.mu=2"])
    recipe = load_recipe(args.recipe, [])
    assert rl_quality.uses_selection(recipe)
    work = tmp_path / "seed0"
    lines = rl_quality.seed_script(args, recipe, tmp_path / "data", work, 0).splitlines()
    parallel = next(line for line in lines if line.endswith(" & wait"))
    assert not any("'select'" in line for line in lines if line != parallel)
    chains, depth = [[]], 0  # the line's top-level jobs, split at the `&` outside parentheses
    for token in shlex.split(parallel.removesuffix(" & wait")):
        depth += (token == "(") - (token == ")")
        if token == "&" and depth == 0:
            chains.append([])
        else:
            chains[-1].append(f"'{token}'")
    chains = [" ".join(chain) for chain in chains]
    assert len(chains) == 3  # the SFT's evaluation, select then r1forge's arms, TRL
    sft_eval, ours, trl = chains
    assert f"'{work}/eval_sft'" in sft_eval and "'select'" not in sft_eval
    assert ours.index("'select'") < ours.index(f"'{work}/r1forge'") < ours.index(f"'{work}/mu2'")
    assert f"'{work}/eval_mu2'" in ours
    assert "'select'" not in trl and f"'{work}/trl'" in trl and f"'{work}/eval_trl'" in trl


def test_rl_quality_equal_samples_count_the_selection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """TRL's equal-samples steps cover r1forge's GRPO draws plus k samples of every prompt the
    selection pass reads: all of the file's prompts when `select.limit` is unset (the tiny
    recipe), at most `limit` of them when it is set."""
    from r1forge.config import load_recipe

    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import rl_quality

    (tmp_path / "rl_prompts.jsonl").write_text('{"prompt": "1+1"}\n' * 50 + "\n")
    tiny = load_recipe(ROOT / "recipes/tiny.yaml", [])
    assert tiny.select.limit is None and tiny.select.k == 4
    cfg = tiny.grpo_reasoning  # 80 steps x 2 draws x 32 prompts x 8 samples
    per_step = cfg.prompts_per_step * cfg.group_size
    assert rl_quality.selection_prompts(tiny, tmp_path) == 50
    assert rl_quality.r1forge_sample_bound(tiny, tmp_path) == 80 * 2 * 256 + 50 * 4
    assert (
        rl_quality.equal_sample_steps(tiny, tmp_path)
        == 160 + 1
        == -(-(160 * 256 + 200) // per_step)
    )
    limited = load_recipe(ROOT / "recipes/tiny.yaml", ["select.limit=30"])
    assert rl_quality.selection_prompts(limited, tmp_path) == 30
    assert rl_quality.r1forge_sample_bound(limited, tmp_path) == 80 * 2 * 256 + 30 * 4


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_rl_quality_smoke(tmp_path: Path) -> None:
    """The RL-quality benchmark at ci size: one cold start, r1forge GRPO (on prompts from the
    `select` stage) and TRL GRPOTrainer side by side, all three evaluated by `r1forge
    evaluate`; the report has the fields issue 17 names."""
    out = tmp_path / "rl.json"
    proc = run_benchmark(
        "rl_quality.py",
        "--recipe",
        str(ROOT / "recipes/ci.yaml"),
        "--seeds",
        "0",
        "--workdir",
        str(tmp_path / "work"),
        "--set",
        "grpo_reasoning.prompts=[../selected/rl_prompts.jsonl]",
        "--trl-equal-samples",
        "--out",
        str(out),
        timeout=1100,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["in_distribution"] == "arithmetic"
    assert {"config", "versions", "gpu"} <= set(report)
    assert report["versions"]["trl"] == "1.16.0"
    seed = report["seeds"]["0"]
    for arm in ("sft", "r1forge", "trl", "trl_equal"):
        assert set(seed[arm]) == {"arithmetic", "countdown"}
        for block in seed[arm].values():
            assert set(block) == {"pass@1", "greedy_accuracy", "format_rate"}
    assert seed["samples"]["trl"] == 4 * 4 * 4  # steps x prompts x samples, as r1forge's
    assert seed["samples"]["r1forge_selection"] == 16 * 2  # the select pass: 16 prompts x k=2
    assert seed["selection"]["kept"] == 16
    # TRL at equal samples: 6 steps of 16 cover r1forge's 4 x 16 plus the 32 of selection
    assert (
        seed["samples"]["trl_equal"] == 6 * 16 == report["config"]["trl_equal_samples_steps"] * 16
    )
    assert seed["trl_equal_run"]["steps"] == 6
    assert "trl_equal_pass@1" in seed["gain_points"]["arithmetic"]
    assert (
        "arithmetic" in report["config"]["trl_overrides"] or report["config"]["trl_overrides"] == []
    )
    assert "seed 0" in proc.stdout and "countdown" in proc.stdout


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_one_update_equals_trls_term_by_term(tmp_path: Path, ci_data: Path, ci_base: Path) -> None:
    """Issue 17, step 1: on one batch of the same completions and advantages, r1forge's
    update phase and TRL's GRPOTrainer loss give the same log-probs and the same gradient
    for every loss type (a length reward, so the untrained ci model's groups differ)."""
    out = tmp_path / "parity.json"
    proc = run_benchmark(
        "rl_parity.py",
        "--recipe",
        str(ROOT / "recipes/ci.yaml"),
        "--model",
        str(ci_base),
        "--data",
        str(ci_data),
        "--set",
        "grpo_reasoning.rewards={length: 1.0}",
        "--set",
        "grpo_reasoning.reward_params={length: {max_length: 24, cache_length: 16}}",
        "--out",
        str(out),
        timeout=800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["zero_std_groups"] < 4  # the batch carries a gradient
    for loss_type, row in report["loss_types"].items():
        assert row["grad_norm_trl"] > 0, loss_type
        assert row["grad_cosine"] == pytest.approx(1.0, abs=1e-4), loss_type
        assert row["grad_norm_ratio"] == pytest.approx(1.0, abs=1e-4), loss_type
        assert row["max_abs_logp_diff_r1forge_vs_trl"] < 1e-4
    # the transformers engine samples with the trained module itself: no mismatch
    assert report["rollout_vs_trainer"]["mismatch_kl_k3"] < 1e-6


@pytest.mark.slow
def test_multi_gpu_scaling_grpo_async_smoke(tmp_path: Path) -> None:
    """Issue 21's part on CPU: synchronous ZeRO-3 on 2 gloo ranks against a trainer and its
    rollout worker at staleness 1 (the speed figure means something only on 2 GPUs)."""
    out = tmp_path / "multi.json"
    proc = run_benchmark(
        "multi_gpu_scaling.py", "--tiny", "--parts", "grpo_async", "--out", str(out), timeout=900
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    block = json.loads(out.read_text())["grpo_async"]
    assert block["speedup_vs_sync"] > 0
    assert block["async"]["staleness"] == [0, 1, 1]
    assert block["sync"]["samples"] == block["async"]["samples"] == 3 * 4 * 4
    for mode in ("sync", "async"):
        assert set(block[mode]["heldout_pass_at_1"]) == {"arithmetic"}


def test_triton_decode_attention_matches_the_reference_on_cpu() -> None:
    """The static engine's Triton decode-attention kernel (`r1forge.rollout.decode_attention`)
    through its diagnostic's check, run by Triton's interpreter on the CPU (its GPU timing
    needs a GPU): within 1e-4 of float32 softmax attention, for grouped and ungrouped heads
    and a head size that is not a power of two."""
    import os

    command = [sys.executable, str(ROOT / "benchmarks/diagnostics/decode_attention.py"), "--check"]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    errors = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(errors) == {"5x14/2x64", "3x4/4x8", "2x6/2x80"}
    assert max(errors.values()) < 1e-4
