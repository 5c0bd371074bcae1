"""The recipe as a DVC pipeline and as a KFP pipeline: generated from the stage registry,
reruns only what changed, round-trips a DVC remote, traces models to their data, and the
kfp.local run of the same recipe ends with the same metrics as `dvc repro`."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from r1forge.io import sha256_file
from r1forge.stages import STAGES, dvc_yaml

from .conftest import ROOT, dvc_workspace, run_cli, run_in


def test_committed_dvc_yaml_is_the_generated_one() -> None:
    committed = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    assert committed == dvc_yaml("recipes/tiny.yaml")
    assert list(committed["stages"]) == [s.name for s in STAGES]
    printed = run_cli("stages", "dvc-yaml").stdout
    assert yaml.safe_load(printed) == committed


def dvc(ws: Path, *args: str) -> str:
    return run_in([sys.executable, "-m", "dvc", *args], ws)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A git + DVC workspace of the ci recipe, reproduced once for the module's tests."""
    ws = dvc_workspace(tmp_path_factory.mktemp("dvc"), "recipes/ci.yaml")
    first = dvc(ws, "repro")
    assert "Running stage 'data'" in first and "Running stage 'base'" in first
    assert "Running stage 'promote'" in first
    return ws


@pytest.mark.slow
@pytest.mark.timeout(2400)  # the module's `dvc repro` (setup) plus the whole DAG under kfp.local
def test_kfp_local_run_ends_with_the_metrics_of_dvc_repro(ws: Path, tmp_path: Path) -> None:
    """The compiled DAG under kfp.local (SubprocessRunner), promotion gate included."""
    root = tmp_path / "kfp"
    proc = run_cli(
        "pipeline", "run-local", "--recipe", str(ws / "recipes/ci.yaml"), "--root", str(root)
    )
    assert "pipeline finished" in proc.stdout
    cards = [c for c in root.rglob("card") if c.is_file()]
    assert any("promotion of grpo_final" in c.read_text() for c in cards)
    # the gate's branch ran the promote stage: a registry under the run's root, a release
    entries = json.loads((root / "registry/models.json").read_text())
    assert [e["source"] for e in entries if e["champion"]] == ["grpo_final"]
    assert any((p / "manifests.yaml").is_file() for p in root.rglob("release"))
    students = {p.parent for p in root.rglob("r1forge.json") if "student-op" in str(p)}
    assert len(students) == 2  # one task per student of the ParallelFor
    # the evaluation tasks share one component: each is known by its card's title
    by_checkpoint = {}
    for card in root.rglob("card"):
        title = card.read_text().splitlines()[0]
        if title.startswith("## evaluation of "):
            report = json.loads((card.parent / "results/metrics.json").read_text())
            by_checkpoint[title.removeprefix("## evaluation of ")] = report
    kfp_final = by_checkpoint["grpo_final"]
    dvc_final = json.loads((ws / "eval/grpo_final/metrics.json").read_text())
    for key in ("pass@1", "cons@k", "greedy_accuracy", "format_rate", "mean_length"):
        assert kfp_final[key] == dvc_final[key], key


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_dvc_remote_round_trip_and_lineage(ws: Path, tmp_path: Path) -> None:
    dvc(ws, "remote", "add", "-d", "local", str(tmp_path / "remote"))
    dvc(ws, "push")
    weights = ws / "models/grpo_final/model.safetensors"
    before = sha256_file(weights)
    shutil.rmtree(ws / ".dvc/cache")
    for out in ("models", "data", "synthetic"):
        shutil.rmtree(ws / out)
    dvc(ws, "pull")
    assert sha256_file(weights) == before
    assert dvc(ws, "status").strip().endswith("Data and pipelines are up to date.")
    # lineage: the final model names every dataset it descends from, by sha256
    lineage = json.loads((ws / "models/grpo_final/r1forge.json").read_text())["lineage"]
    seen = 0
    while lineage:
        for name, digest in lineage.get("datasets", {}).items():
            assert sha256_file(Path(os.path.normpath(ws / "data" / name))) == digest, name
            seen += 1
        lineage = lineage.get("parent")
    assert seen >= 4  # final RL's prompts, merged SFT's two sets, the base's


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_promoted_model_traces_back_to_its_dataset_hashes(ws: Path) -> None:
    """From the registry's champion to the bytes of the datasets it was trained on."""
    from urllib.parse import urlparse

    from r1forge.io import folder_sha256

    entries = json.loads((ws / "registry/models.json").read_text())
    (entry,) = [e for e in entries if e["champion"]]
    assert entry["name"] == "r1forge-ci" and entry["version"] == 1
    published = Path(urlparse(entry["uri"]).path)
    assert folder_sha256(published) == entry["sha256"]  # what serving fetches and verifies
    values = yaml.safe_load((ws / "deploy/values.yaml").read_text())
    assert values["model"]["uri"] == entry["uri"] and values["model"]["revision"] == entry["sha256"]
    served = json.loads((published / "r1forge.json").read_text())["lineage"]
    assert served == entry["lineage"]
    lineage, seen = entry["lineage"], 0
    while lineage:
        for name, digest in lineage.get("datasets", {}).items():
            places = [ws / "data" / name, ws / "models/distill/data" / name]
            found = [p for p in places if Path(os.path.normpath(p)).is_file()]
            assert found and sha256_file(Path(os.path.normpath(found[0]))) == digest, name
            seen += 1
        lineage = lineage.get("parent")
    assert seen >= 2
    assert entry["metrics"]["eval_sets"] == {
        f.stem: sha256_file(f) for f in sorted((ws / "data/eval").glob("*.jsonl"))
    }


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_dvc_repro_skips_unchanged_stages(ws: Path) -> None:
    second = dvc(ws, "repro")
    assert "Running stage" not in second
    assert "Stage 'data' didn't change" in second and "Stage 'base' didn't change" in second
    assert (ws / "metrics/eval_grpo_final.json").is_file() and (ws / "synthetic").is_dir()
    # a change to the final RL section reruns only that stage and its evaluation
    recipe = ws / "recipes/ci.yaml"
    text = recipe.read_text()
    head, _, tail = text.partition("\ngrpo_final:")
    tail = tail.replace("  max_steps: 2\n", "  max_steps: 1\n", 1)
    changed = f"{head}\ngrpo_final:{tail}"
    assert changed != text
    recipe.write_text(changed)
    third = dvc(ws, "repro")
    assert "Stage 'base' didn't change" in third and "Stage 'sample' didn't change" in third
    assert "Running stage 'grpo_final'" in third and "Running stage 'eval_grpo_final'" in third
    rerun = {line.split("'")[1] for line in third.splitlines() if "Running stage" in line}
    assert rerun == {"grpo_final", "eval_grpo_final", "distill", "promote"}

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


def set_promote_threshold(ws: Path, pass_at_1: float) -> None:
    recipe = ws / "recipes/ci.yaml"
    text = re.sub(r"\n  min_pass_at_1: .*", "", recipe.read_text())
    changed = text.replace("\npromote:\n", f"\npromote:\n  min_pass_at_1: {pass_at_1}\n", 1)
    assert changed != text
    recipe.write_text(changed)


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_refused_promotion_is_not_a_failed_pipeline(ws: Path, tmp_path: Path) -> None:
    """Issue 16: when no candidate passes the gate, `dvc repro` exits 0 (run_in checks it):
    both declared outputs are written, release.json says nothing was deployed and why, and
    the registry is unchanged; on a first run (no champion yet) as well."""
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, symlinks=True)
    registry = (copy / "registry/models.json").read_bytes()
    (champion,) = [e["version"] for e in json.loads(registry) if e["champion"]]
    values = (copy / "deploy/values.yaml").read_bytes()
    set_promote_threshold(copy, 0.5)  # the ci models solve nothing
    out = dvc(copy, "repro")
    assert {line.split("'")[1] for line in out.splitlines() if "Running stage" in line} == {
        "promote"
    }
    assert "no candidate passed the gate" in out
    release = json.loads((copy / "deploy/release.json").read_text())
    assert release["deployed"] is False and release["champion"]["version"] == champion
    assert len(release["reasons"]) == 3 and all("below 0.5000" in r for r in release["reasons"])
    assert (copy / "registry/models.json").read_bytes() == registry
    assert (copy / "deploy/values.yaml").read_bytes() == values  # the champion's release stays
    decision = json.loads((copy / "metrics/promote.json").read_text())["promote"]
    assert decision["promoted"] is False and decision["candidate"] is None
    report = run_cli("report", "--metrics", str(copy / "metrics")).stdout
    assert report.rstrip().splitlines()[-1].startswith("promoted: none")

    # the failure the issue saw: a first run, nothing to keep, nothing passes
    shutil.rmtree(copy / "deploy")
    shutil.rmtree(copy / "registry")
    set_promote_threshold(copy, 0.6)
    dvc(copy, "repro")
    release = json.loads((copy / "deploy/release.json").read_text())
    assert release["deployed"] is False and release["champion"] is None
    assert json.loads((copy / "registry/models.json").read_text()) == []
    assert "Data and pipelines are up to date." in dvc(copy, "status")
