"""Asynchronous GRPO (issue 21) on CPU: the trainer and its rollout worker as two processes
over gloo (NCCL between GPUs is the same code path with another backend; it needs two GPUs
and is not run here). Weight pushes arrive whole and in place, a stalled push fails within
its timeout, staleness 0 trains exactly what the synchronous loop trains, and staleness 1
trains on batches one update old."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from safetensors.torch import load_file

from r1forge.config import load_recipe
from r1forge.errors import ConfigError
from r1forge.io import free_port
from r1forge.train.channel import TRAINER, WORKER, RolloutChannel, TransferError

from .conftest import ROOT
from .test_grpo_levers import PLUGIN, grpo_cli


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("grpo_reasoning.resources={gpus: 1}", "placement needs 2 GPUs"),
        ("grpo_reasoning.zero_stage=3", "use zero_stage < 3"),
        ("grpo_reasoning.resources={nodes: 2}", "placement runs on one node"),
    ],
)
def test_a_placement_that_cannot_run_is_refused_where_the_recipe_says_it(
    setting: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        load_recipe(
            ROOT / "recipes/ci.yaml", ["grpo_reasoning.placement={max_staleness: 1}", setting]
        )
    assert "ci.yaml:" in str(caught.value) and "grpo_reasoning" in str(caught.value)


def tiny_net(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Linear(5, 3, bias=False)).to(
        torch.float32
    )


def _peer(role: int, port: int, mode: str, out: str) -> None:
    """One side of a channel test (a spawned process)."""
    torch.set_num_threads(1)
    channel = RolloutChannel.connect("127.0.0.1", port, role, torch.device("cpu"), 3.0)
    net = tiny_net(seed=role)  # the two sides start with different weights
    tensors = [p.data for p in net.parameters()]
    pointers = [t.data_ptr() for t in tensors]
    result: dict = {}
    if mode == "push":
        for version in (1, 2):
            if role == TRAINER:
                with torch.no_grad():
                    for t in tensors:
                        t.add_(version)
            channel.push_weights(tensors, version)
            result[f"v{version}"] = [t.tolist() for t in tensors]
        result["in_place"] = pointers == [t.data_ptr() for t in net.parameters()]
        if role == WORKER:
            channel.send({"done": True}, TRAINER)
            channel.flush()
        else:
            result["message"] = channel.recv(WORKER, "the done message")
    elif role == TRAINER:  # mode "stall": the trainer never pushes
        time.sleep(6)
    else:
        began = time.monotonic()
        try:
            channel.push_weights(tensors, 7)
        except TransferError as error:
            result = {"error": str(error), "seconds": time.monotonic() - began}
    Path(out, f"{role}.json").write_text(json.dumps(result))


def run_pair(mode: str, tmp_path: Path) -> dict[int, dict]:
    port = free_port()
    context = multiprocessing.get_context("spawn")
    procs = [
        context.Process(target=_peer, args=(role, port, mode, str(tmp_path)))
        for role in (TRAINER, WORKER)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
        assert proc.exitcode == 0
    return {role: json.loads((tmp_path / f"{role}.json").read_text()) for role in (0, 1)}


def test_weight_push_gives_the_worker_the_trainers_weights_in_place(tmp_path: Path) -> None:
    sides = run_pair("push", tmp_path)
    trainer, worker = sides[TRAINER], sides[WORKER]
    start = [p.tolist() for p in tiny_net(seed=TRAINER).parameters()]
    assert trainer["v1"] != start and trainer["v2"] != trainer["v1"]  # real updates
    assert worker["v1"] == trainer["v1"] and worker["v2"] == trainer["v2"]  # bit for bit
    assert worker["in_place"] and trainer["in_place"]
    assert trainer["message"] == {"done": True}


def test_a_stalled_weight_push_fails_within_its_timeout(tmp_path: Path) -> None:
    worker = run_pair("stall", tmp_path)[WORKER]
    assert "weight push of policy version 7" in worker["error"]
    assert "stalled: not complete after 3 s" in worker["error"]
    assert 2.9 <= worker["seconds"] <= 5.0


def grpo_run(
    ci_data: Path, ci_base: Path, out: Path, *settings: str, **kw: Any
) -> subprocess.CompletedProcess[str]:
    """A 3-step GRPO run of the ci recipe with a reward that varies within half the groups
    (the ci base scores 0 on accuracy, which would leave nothing to update)."""
    plugin = out.parent / "plugin"
    plugin.mkdir(parents=True, exist_ok=True)
    (plugin / "half_informative.py").write_text(PLUGIN)
    rewards = "grpo_reasoning.rewards={half_informative: 1.0}"
    base = ("grpo_reasoning.max_steps=3", "grpo_reasoning.lr=1e-3", rewards)
    return grpo_cli(ci_data, ci_base, out, plugin, *base, *settings, **kw)


def grpo(ci_data: Path, ci_base: Path, out: Path, *settings: str) -> list[dict]:
    """A finished `grpo_run`'s per-step rows."""
    proc = grpo_run(ci_data, ci_base, out, *settings)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return step_rows(out)


def step_rows(out: Path) -> list[dict]:
    """The per-step training rows of a run's metrics."""
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "reward" in row]


@pytest.fixture(scope="module")
def synchronous(ci_data: Path, ci_base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("placement") / "sync"
    grpo(ci_data, ci_base, out)
    return out


def test_staleness_zero_trains_exactly_what_the_synchronous_loop_trains(
    ci_data: Path, ci_base: Path, synchronous: Path, tmp_path: Path
) -> None:
    rows = grpo(
        ci_data, ci_base, tmp_path / "async0", "grpo_reasoning.placement={max_staleness: 0}"
    )
    rows_before = step_rows(synchronous)
    a = load_file(synchronous / "model.safetensors")
    b = load_file(tmp_path / "async0" / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)
    # real updates before the later batches were sampled (step 3's groups happen to be equal)
    assert rows_before[0]["grad_norm"] > 0 and rows_before[1]["grad_norm"] > 0
    for mine, theirs in zip(rows, rows_before, strict=True):
        assert mine["staleness"] == 0
        for key in ("reward", "completion_length", "entropy", "grad_norm", "mismatch_kl"):
            assert mine[key] == theirs[key], key


def test_staleness_one_trains_on_batches_one_update_old(
    ci_data: Path, ci_base: Path, synchronous: Path, tmp_path: Path
) -> None:
    rows = grpo(
        ci_data, ci_base, tmp_path / "async1", "grpo_reasoning.placement={max_staleness: 1}"
    )
    assert [row["staleness"] for row in rows] == [0, 1, 1]
    # the first batch is the synchronous run's; the second was sampled by the policy before
    # the first update, so the trainer's log-probs differ from the sampler's there, and TIS
    # (on by default with staleness) weights each token by their ratio
    assert rows[0]["reward"] == step_rows(synchronous)[0]["reward"]
    assert rows[0]["mismatch_kl"] == pytest.approx(0.0, abs=1e-9)
    assert rows[0]["grad_norm"] > 0 and rows[1]["mismatch_kl"] > 1e-6
    config = yaml.safe_load((tmp_path / "async1" / "config.yaml").read_text())
    assert config["grpo_reasoning"]["placement"]["max_staleness"] == 1  # resolved and saved


def test_a_killed_asynchronous_run_resumes_exactly(
    ci_data: Path, ci_base: Path, synchronous: Path, tmp_path: Path
) -> None:
    """Staleness 0 resumes as the synchronous loop does: the worker restarts from the
    checkpointed policy and prompt-stream position (with staleness > 0 the batches that were
    in flight would be sampled again from that policy)."""
    placement = "grpo_reasoning.placement={max_staleness: 0, transfer_timeout_s: 60}"
    out = tmp_path / "resumed"
    killed = grpo_run(ci_data, ci_base, out, placement, env={"R1FORGE_KILL_AFTER_STEP": "2"})
    assert killed.returncode == -9
    resumed = grpo_run(ci_data, ci_base, out, placement, extra=("--resume",))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_file(synchronous / "model.safetensors")
    b = load_file(out / "model.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_run_the_collapse_guard_stops_ends_its_worker_too(
    ci_data: Path, ci_base: Path, tmp_path: Path
) -> None:
    """Stopped after step 1 while the worker, one step ahead, had already sent step 2's
    batch: the trainer's stop message ends the worker, and the stage exits cleanly."""
    rows = grpo(
        ci_data,
        ci_base,
        tmp_path / "stopped",
        "grpo_reasoning.placement={max_staleness: 1, transfer_timeout_s: 30}",
        "grpo_reasoning.collapse={min_entropy: 100.0, stop: true}",
    )
    assert [(row["step"], row["staleness"]) for row in rows] == [(1, 0)]
