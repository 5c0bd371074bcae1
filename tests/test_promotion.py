"""Promotion: the gate against hand-made metrics, the registry's pure functions, the model
fetcher, and the promote stage end to end with real helm (render mode; the cluster mode
against a recording stand-in for helm, since no Kubernetes API server can run here)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
import yaml

from r1forge.config import PromoteConfig, load_recipe
from r1forge.errors import ConfigError, DataError
from r1forge.io import folder_sha256
from r1forge.promotion import best_candidate, gate, lineage_chain, model_card
from r1forge.registry import crown, load_registry, next_version, rollback
from r1forge.serving.fetch import FetchError, fetch_model, publish_model

from .conftest import ROOT, run_cli

EVAL_SETS = {"arithmetic": "a" * 64}


def metrics(pass_at_1: float, format_rate: float = 1.0, eval_sets: dict | None = None) -> dict:
    return {
        "pass@1": pass_at_1,
        "cons@k": pass_at_1,
        "k": 4,
        "greedy_accuracy": pass_at_1,
        "format_rate": format_rate,
        "language_rate": 1.0,
        "mean_length": 20.0,
        "n_prompts": 10,
        "eval_sets": EVAL_SETS if eval_sets is None else eval_sets,
    }


# --- the gate ------------------------------------------------------------------------------


def test_gate_thresholds_and_champion_margin() -> None:
    cfg = PromoteConfig(min_pass_at_1=0.3, min_format_rate=0.9, champion_margin=0.05)
    assert gate("c", metrics(0.5), None, cfg).passed  # no champion: thresholds only
    low = gate("c", metrics(0.25, format_rate=0.8), None, cfg)
    assert not low.passed and len(low.reasons) == 2
    assert "pass@1 0.2500 is below 0.3000" in low.reasons[0]
    assert "format rate 0.8000 is below 0.9000" in low.reasons[1]
    # the champion's 0.40 + margin 0.05 = 0.45 is needed
    assert gate("c", metrics(0.45), metrics(0.40), cfg).passed
    worse = gate("c", metrics(0.44), metrics(0.40), cfg)
    assert not worse.passed and worse.checks["champion"]["needed"] == pytest.approx(0.45)
    # a champion measured on other eval sets is no yardstick
    other = gate("c", metrics(0.9), metrics(0.1, eval_sets={"arithmetic": "b" * 64}), cfg)
    assert not other.passed and "other eval sets" in other.reasons[0]


def test_best_candidate_by_pass_at_1_then_cons_then_order() -> None:
    assert best_candidate({"a": metrics(0.2), "b": metrics(0.4), "c": metrics(0.3)}) == "b"
    tie = {"a": {**metrics(0.4), "cons@k": 0.3}, "b": {**metrics(0.4), "cons@k": 0.5}}
    assert best_candidate(tie) == "b"
    assert best_candidate({"first": metrics(0.4), "second": metrics(0.4)}) == "first"


def test_lineage_chain_and_model_card() -> None:
    lineage = {
        "stage": "grpo_final",
        "datasets": {"rl_prompts.jsonl": "1" * 64},
        "init_model": "models/sft_merged",
        "code_revision": "abc",
        "parent": {"stage": "base", "datasets": {"cold_start.jsonl": "2" * 64}},
    }
    assert [n["stage"] for n in lineage_chain(lineage)] == ["base", "grpo_final"]
    entry = {
        "name": "m",
        "version": 2,
        "sha256": "f" * 64,
        "uri": "file:///x",
        "lineage": lineage,
        "metrics": {**metrics(0.5), "per_task": {"arithmetic": metrics(0.5)}},
        "recipe": {"name": "tiny"},
        "created": "2026-11-29T00:00:00+00:00",
        "source": "grpo_final",
    }
    cfg = PromoteConfig()
    card = model_card(entry, gate("grpo_final", entry["metrics"], None, cfg), cfg)
    for part in (
        "# m v2",
        "## Data",
        "`rl_prompts.jsonl`",
        "## Stages",
        "1. `base`",
        "2. `grpo_final`",
    ):
        assert part in card, part
    for part in ("## Metrics", "| all | 10 | 0.500", "## Intended use", "## Limits", "passed"):
        assert part in card, part


# --- the registry --------------------------------------------------------------------------


def entry(version: int, name: str = "m") -> dict[str, Any]:
    return {
        "name": name,
        "version": version,
        "sha256": f"{version:064x}",
        "uri": f"file:///store/{name}/{version}",
        "lineage": {},
        "metrics": metrics(0.1 * version),
        "recipe": {},
        "created": "2026-11-29T00:00:00+00:00",
        "champion": True,
    }


def test_registry_crown_rollback_and_versions() -> None:
    entries: list[dict[str, Any]] = []
    for version in (1, 2, 3):
        assert next_version(entries, "m") == version
        entries = crown(entries, entry(version))
    entries = crown(entries, entry(1, name="other"))
    assert [(e["name"], e["version"]) for e in entries if e["champion"]] == [("m", 3), ("other", 1)]
    back, restored = rollback(entries, "m")
    assert restored["version"] == 2 and entries[2]["champion"]  # the input is not changed
    assert [(e["version"], e["champion"], e["status"]) for e in back[:3]] == [
        (1, False, "active"),
        (2, True, "active"),
        (3, False, "rolled_back"),
    ]
    twice, restored = rollback(back, "m")  # skips nothing rolled back: v1 next
    assert restored["version"] == 1
    with pytest.raises(ConfigError, match="first champion"):
        rollback(twice, "m")
    with pytest.raises(ConfigError, match="no champion"):
        rollback(twice, "absent")
    assert next_version(twice, "m") == 4  # versions are never reused


def test_registry_file_errors_name_the_file_and_field(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    assert load_registry(path) == []
    path.write_text("[\n{\n")
    with pytest.raises(DataError, match=r"models.json:3: not JSON"):
        load_registry(path)
    broken = {k: v for k, v in entry(1).items() if k != "sha256"}
    path.write_text(json.dumps([entry(1), broken]))
    with pytest.raises(DataError, match="field 'sha256': entry 1 lacks sha256"):
        load_registry(path)


# --- fetching and publishing ---------------------------------------------------------------


def model_folder(path: Path, weights: bytes = b"weights") -> Path:
    path.mkdir(parents=True)
    (path / "config.json").write_text("{}")
    (path / "model.safetensors").write_bytes(weights)
    (path / "sub").mkdir()
    (path / "sub/tokenizer.json").write_text("{}")
    return path


def test_folder_sha256_is_a_content_id(tmp_path: Path) -> None:
    a = model_folder(tmp_path / "a")
    b = model_folder(tmp_path / "b")
    assert folder_sha256(a) == folder_sha256(b)  # same files, any place
    (b / "sub/tokenizer.json").write_text("{ }")
    assert folder_sha256(a) != folder_sha256(b)
    (b / "sub/tokenizer.json").write_text("{}")
    (b / "sub/tokenizer.json").rename(b / "tokenizer.json")
    assert folder_sha256(a) != folder_sha256(b)  # paths count too


def test_fetch_checks_the_sha256_and_keeps_the_previous_copy(tmp_path: Path) -> None:
    source = model_folder(tmp_path / "src")
    digest = folder_sha256(source)
    store = (tmp_path / "store/m/1").as_uri()
    publish_model(source, store)
    dest = tmp_path / "served"
    assert fetch_model(store, dest, digest) == dest and folder_sha256(dest) == digest
    assert fetch_model(str(tmp_path / "store/m/1"), tmp_path / "plain", digest)  # a plain path
    # pvc://CLAIM/PATH reads the claim where the chart mounts it
    assert fetch_model("pvc://model-cache/m/1", tmp_path / "pvc", digest, tmp_path / "store")
    with pytest.raises(FetchError, match="is not the registry's"):
        fetch_model(store, dest, "0" * 64)
    assert folder_sha256(dest) == digest  # a failed fetch leaves the old copy intact
    with pytest.raises(FetchError, match="unsupported scheme"):
        fetch_model("ftp://x/y", tmp_path / "x", digest)
    with pytest.raises(FetchError, match="no such model folder"):
        fetch_model((tmp_path / "nothing").as_uri(), tmp_path / "y", digest)


# --- the promote stage, with real helm -----------------------------------------------------


def candidate(ws: Path, name: str, pass_at_1: float, weights: bytes) -> None:
    """models/<name> and eval/<name>/metrics.json, as the recipe's stages leave them."""
    model = model_folder(ws / "models" / name, weights)
    (model / "r1forge.json").write_text(
        json.dumps({"lineage": {"stage": name, "datasets": {"rl_prompts.jsonl": "1" * 64}}})
    )
    (model / "wandb").mkdir()  # run folders are not published
    (model / "wandb/run.log").write_text("x")
    (ws / "eval" / name).mkdir(parents=True)
    (ws / "eval" / name / "metrics.json").write_text(json.dumps(metrics(pass_at_1)))


def promote(ws: Path, *args: str, check: bool = True) -> Any:
    return run_cli(
        "promote",
        "--recipe",
        str(ROOT / "recipes/tiny.yaml"),
        "--models",
        str(ws / "models"),
        "--evals",
        str(ws / "eval"),
        "--registry",
        str(ws / "registry"),
        "--output",
        str(ws / "deploy"),
        "--metrics",
        str(ws / "promote.json"),
        *args,
        check=check,
    )


def test_promote_gate_registry_card_release_and_rollback(tmp_path: Path) -> None:
    ws = tmp_path
    candidate(ws, "grpo_final", 0.5, b"v1")
    first = promote(ws, "--candidate", "grpo_final")
    assert "promoted grpo_final as r1forge-tiny v1" in first.stdout
    (v1,) = load_registry(ws / "registry/models.json")
    for key in ("name", "version", "sha256", "uri", "lineage", "metrics", "recipe", "created"):
        assert v1[key], key
    assert v1["champion"] is True and v1["source"] == "grpo_final"
    assert v1["recipe"]["name"] == "tiny" and v1["lineage"]["stage"] == "grpo_final"
    published = Path(v1["uri"].removeprefix("file://"))
    assert published == ws / "registry/store/r1forge-tiny/1"
    assert folder_sha256(published) == v1["sha256"]
    assert (published / "README.md").read_text().startswith("# r1forge-tiny v1")
    assert not (published / "wandb").exists()
    assert "## Limits" in Path(v1["card"]).read_text()
    values = yaml.safe_load((ws / "deploy/values.yaml").read_text())
    assert values["model"] == {
        "name": "r1forge-tiny",
        "version": "1",
        "uri": v1["uri"],
        "revision": v1["sha256"],
    }
    assert values["mode"] == "cpu"  # the recipe's own values ride along
    kinds = {d["kind"] for d in yaml.safe_load_all((ws / "deploy/manifests.yaml").read_text()) if d}
    assert {"Deployment", "Service"} <= kinds
    assert (
        v1["sha256"] in (ws / "deploy/manifests.yaml").read_text()
    )  # the init container checks it

    # a worse candidate is refused: exit 3, nothing published, registered or re-released;
    # release.json says that nothing was deployed, and why
    candidate(ws, "sft_merged", 0.3, b"worse")

    def snapshot() -> dict[Path, bytes]:
        return {
            p: p.read_bytes()
            for p in [*ws.glob("deploy/**/*"), *ws.glob("registry/**/*")]
            if p.is_file() and p.name != "release.json"
        }

    before = snapshot()
    released = json.loads((ws / "deploy/release.json").read_text())
    assert released["deployed"] is True and released["version"] == 1
    refused = promote(ws, "--candidate", "sft_merged", check=False)
    assert refused.returncode == 3 and "no candidate passed the gate" in refused.stderr
    assert "the champion stays v1" in refused.stderr
    assert "sft_merged" in refused.stdout and "refused: pass@1" in refused.stdout
    assert snapshot() == before
    release = json.loads((ws / "deploy/release.json").read_text())
    assert release["deployed"] is False and release["champion"]["version"] == 1
    assert release["current_release"] == released  # what is still deployed
    assert any("sft_merged: pass@1 vs the champion" in r for r in release["reasons"])
    decision = json.loads((ws / "promote.json").read_text())["promote"]
    assert decision["promoted"] is False and decision["champion_version"] == 1
    assert decision["candidate"] is None and decision["best"] == "sft_merged"
    assert decision["candidates"]["sft_merged"]["passed"] is False
    # without --fail-on-refusal (as the DVC stage runs it) the refusal is recorded, exit 0
    assert promote(ws, "--candidate", "sft_merged", "--no-fail-on-refusal").returncode == 0
    assert snapshot() == before

    # a better one becomes v2; the best of several candidates is the one that faces the gate
    candidate(ws, "grpo_reasoning", 0.6, b"v2")
    promote(ws, "--candidate", "sft_merged", "--candidate", "grpo_reasoning")
    entries = load_registry(ws / "registry/models.json")
    assert [(e["version"], e["champion"], e["source"]) for e in entries] == [
        (1, False, "grpo_final"),
        (2, True, "grpo_reasoning"),
    ]
    v2_values = (ws / "deploy/values.yaml").read_text()
    assert entries[1]["sha256"] in v2_values
    assert json.loads((ws / "deploy/release.json").read_text())["deployed"] is True
    assert sorted(p.name for p in (ws / "deploy/history").iterdir()) == [
        "values-v1.yaml",
        "values-v2.yaml",
    ]

    # rollback restores the previous champion and its values
    done = run_cli(
        "rollback",
        "--recipe",
        str(ROOT / "recipes/tiny.yaml"),
        "--registry",
        str(ws / "registry"),
        "--output",
        str(ws / "deploy"),
    )
    assert "v2 rolled back, v1 restored" in done.stdout
    assert (ws / "deploy/values.yaml").read_text() == (
        ws / "deploy/history/values-v1.yaml"
    ).read_text()
    assert (
        yaml.safe_load((ws / "deploy/values.yaml").read_text())["model"]["revision"] == v1["sha256"]
    )
    entries = load_registry(ws / "registry/models.json")
    assert [(e["version"], e["champion"], e["status"]) for e in entries] == [
        (1, True, "active"),
        (2, False, "rolled_back"),
    ]
    again = run_cli(
        "rollback", "--registry", str(ws / "registry"), "--output", str(ws / "deploy"), check=False
    )
    assert again.returncode == 2 and "nothing to roll back to" in again.stderr
    # what `r1forge serve` serves by default: the champion (v1 again), fetched and checked
    from r1forge.stages.promote import fetch_champion

    recipe = load_recipe(ROOT / "recipes/tiny.yaml")
    folder, name = fetch_champion(recipe, ws / "registry", ws / "cache")
    assert (name, folder.name) == ("r1forge-tiny", "r1forge-tiny-v1")
    assert folder_sha256(folder) == v1["sha256"]


def test_the_best_that_passes_is_promoted_when_the_best_fails_the_format_rule(
    tmp_path: Path,
) -> None:
    """Issue 16: the highest pass@1 fails the format rule, the second passes: the second is
    promoted, and every candidate is listed with its pass@1, format rate and verdict."""
    ws = tmp_path
    candidate(ws, "grpo_reasoning", 0.51, b"best but unformatted")
    candidate(ws, "sft_merged", 0.50, b"second")
    candidate(ws, "sft_cold_start", 0.1, b"weak")
    bad = json.loads((ws / "eval/grpo_reasoning/metrics.json").read_text())
    (ws / "eval/grpo_reasoning/metrics.json").write_text(json.dumps({**bad, "format_rate": 0.44}))
    done = promote(
        ws, *(f"--candidate={n}" for n in ("sft_cold_start", "grpo_reasoning", "sft_merged"))
    )
    assert "promoted sft_merged as r1forge-tiny v1" in done.stdout
    assert "format rate 0.4400 is below 0.8000" in done.stdout
    decision = json.loads((ws / "promote.json").read_text())["promote"]
    assert decision["promoted"] and decision["candidate"] == "sft_merged"
    assert decision["best"] == "grpo_reasoning"
    rows = decision["candidates"]
    assert list(rows) == ["grpo_reasoning", "sft_merged", "sft_cold_start"]  # best first
    assert rows["grpo_reasoning"] == {
        "rank": 1,
        "pass@1": 0.51,
        "format_rate": 0.44,
        "passed": False,
        "reasons": ["format rate 0.4400 is below 0.8000"],
    }
    assert rows["sft_merged"]["passed"] and rows["sft_merged"]["reasons"] == []
    assert rows["sft_cold_start"]["reasons"] == ["pass@1 0.1000 is below 0.2000"]
    (entry,) = load_registry(ws / "registry/models.json")
    assert entry["source"] == "sft_merged" and entry["champion"]


def test_nothing_passes_on_a_first_run_all_outputs_are_still_written(tmp_path: Path) -> None:
    """No champion yet and no candidate passes: exit 0 without --fail-on-refusal, and both
    declared outputs exist: release.json (nothing deployed, why) and an empty registry."""
    candidate(tmp_path, "grpo_final", 0.05, b"weak")
    done = promote(tmp_path, "--candidate", "grpo_final", "--no-fail-on-refusal")
    assert "there is no champion yet" in done.stderr
    release = json.loads((tmp_path / "deploy/release.json").read_text())
    assert release["deployed"] is False and release["champion"] is None
    assert release["reasons"] == ["grpo_final: pass@1 0.0500 is below 0.2000"]
    assert load_registry(tmp_path / "registry/models.json") == []
    assert not (tmp_path / "registry/store").exists()


def test_promote_names_a_missing_evaluation(tmp_path: Path) -> None:
    model_folder(tmp_path / "models/grpo_final")
    proc = promote(tmp_path, "--candidate", "grpo_final", check=False)
    assert proc.returncode == 2
    assert "eval/grpo_final/metrics.json: candidate 'grpo_final': not evaluated" in proc.stderr


def fake_helm(bin_dir: Path, fail_on: str | None = None) -> Path:
    """A stand-in for helm that records its arguments: `upgrade --install` needs a
    Kubernetes API server, which cannot run here (the render path uses real helm)."""
    log = bin_dir / "helm.log"
    script = bin_dir / "helm"
    bin_dir.mkdir(parents=True, exist_ok=True)
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {log}\n'
        f'[ "$1" = "{fail_on}" ] && {{ echo "Error: cluster unreachable" >&2; exit 1; }}\n'
        'if [ "$1" = template ]; then printf "kind: Deployment\\n"; fi\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return log


def test_cluster_mode_runs_helm_upgrade_install_and_fails_cleanly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from r1forge.errors import R1ForgeError
    from r1forge.stages import promote as stage

    recipe = load_recipe(
        ROOT / "recipes/tiny.yaml", ["promote.deploy=cluster", "promote.namespace=serving"]
    )
    candidate(tmp_path, "grpo_final", 0.5, b"v1")
    found = stage.load_candidates(["grpo_final"], tmp_path / "models", tmp_path / "eval")
    log = fake_helm(tmp_path / "bin")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    summary = stage.promote_candidates(recipe, found, tmp_path / "registry", tmp_path / "deploy")
    assert summary["promoted"] and "upgraded release r1forge" in summary["release"]["action"]
    calls = log.read_text().splitlines()
    assert calls[0].startswith("template r1forge ") and "--namespace serving" in calls[0]
    assert calls[1].startswith("upgrade --install r1forge ")
    assert "--wait" in calls[1] and "values.yaml" in calls[1]
    # a failed upgrade leaves the registry and the release folder as they were
    registry_before = (tmp_path / "registry/models.json").read_text()
    values_before = (tmp_path / "deploy/values.yaml").read_text()
    log.unlink()
    fake_helm(tmp_path / "bin", fail_on="upgrade")
    candidate(tmp_path, "grpo_reasoning", 0.9, b"v2")
    better = stage.load_candidates(["grpo_reasoning"], tmp_path / "models", tmp_path / "eval")
    with pytest.raises(R1ForgeError, match="helm upgrade failed: Error: cluster unreachable"):
        stage.promote_candidates(recipe, better, tmp_path / "registry", tmp_path / "deploy")
    assert (tmp_path / "registry/models.json").read_text() == registry_before
    assert (tmp_path / "deploy/values.yaml").read_text() == values_before


@pytest.mark.slow
def test_champion_measured_on_other_sets_is_fetched_and_evaluated_again(
    ci_data: Path, tmp_path: Path
) -> None:
    """A real (ci-sized) model: the champion is fetched by URI, sha256-checked and evaluated
    on the candidate's eval sets before the two are compared."""
    from r1forge.stages import base, evaluate
    from r1forge.stages import promote as stage

    recipe = load_recipe(ROOT / "recipes/ci.yaml")
    model = tmp_path / "models/grpo_final"
    base.build_base(recipe, ci_data, model)
    (model / "r1forge.json").write_text(json.dumps({"lineage": {"stage": "base"}}))
    files = evaluate.eval_files(recipe.evaluate, ci_data)
    report = evaluate.evaluate_model(recipe, model, files, tmp_path / "eval/grpo_final")
    stale = {**report, "pass@1": 0.0, "eval_sets": {"arithmetic": "0" * 64}}
    old = stage.Candidate("grpo_final", model, stale)
    registry = tmp_path / "registry"
    assert stage.promote_candidates(recipe, [old], registry, tmp_path / "deploy", data=ci_data)[
        "promoted"
    ]
    # the same model, measured on today's sets: the champion is re-measured, not trusted
    new = stage.Candidate("grpo_final", model, report)
    summary = stage.promote_candidates(recipe, [new], registry, tmp_path / "deploy", data=ci_data)
    assert summary["champion_pass@1"] == report["pass@1"]  # same model, same seeds
    assert summary["promoted"]  # the ci recipe's margin is 0: a tie passes


def test_the_cluster_recipes_release_values_render_with_real_helm(tmp_path: Path) -> None:
    """The 8xH200 recipe's promote values pass the chart's schema and render (helm template)."""
    from r1forge.serving.helm import chart_path, helm, release_values

    cfg = load_recipe(ROOT / "recipes/qwen2.5-math-1.5b-8xh200.yaml").promote
    assert cfg.chart == "/opt/r1forge/helm/r1forge-serving"  # where the training image has it
    cfg = cfg.model_copy(update={"chart": "helm/r1forge-serving"})
    values = release_values(cfg, {**entry(3), "name": cfg.name, "uri": "s3://bucket/m/3"})
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    docs = [
        d
        for d in yaml.safe_load_all(helm("template", "r", str(chart_path(cfg)), "-f", str(path)))
        if d
    ]
    deployment = next(d for d in docs if d["kind"] == "Deployment")
    server = deployment["spec"]["template"]["spec"]["containers"][0]
    assert server["resources"]["limits"]["nvidia.com/gpu"] in (1, "1")
    assert "--reasoning-parser" in server["args"] and "deepseek_r1" in server["args"]
    assert {d["kind"] for d in docs} >= {
        "HorizontalPodAutoscaler",
        "ServiceMonitor",
        "NetworkPolicy",
    }
