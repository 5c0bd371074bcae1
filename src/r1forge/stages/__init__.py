"""The one list of recipe stages: the CLI, `dvc.yaml` and (later) the KFP pipeline come from it.

Each stage's logic is a `run(recipe, ...)` function in its own module here; everything else
only calls it. `dvc_yaml()` renders the DVC pipeline, and a test keeps `dvc.yaml` equal to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stage:
    name: str
    kind: str
    summary: str
    output: str
    inputs: dict[str, str] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    code: tuple[str, ...] = ()

    @property
    def metrics(self) -> str:
        return f"metrics/{self.name}.json"

    def command(self, recipe: str) -> str:
        parts = ["r1forge", self.kind, "--recipe", recipe]
        if self.name != self.kind:
            parts += ["--stage", self.name]
        for option, path in self.inputs.items():
            parts += [f"--{option}", path]
        return " ".join([*parts, "--output", self.output, "--metrics", self.metrics])


STAGES: tuple[Stage, ...] = (
    Stage(
        name="data",
        kind="data",
        summary="cold-start SFT set, RL prompts, general chat set and eval sets",
        output="data",
        params=("data",),
        code=("src/r1forge/stages/data.py", "src/r1forge/data"),
    ),
    Stage(
        name="base",
        kind="base",
        summary="the base model: a named real model, or the tiny one trained here",
        output="models/base",
        inputs={"data": "data"},
        params=("base", "data.tasks"),
        code=(
            "src/r1forge/stages/base.py",
            "src/r1forge/models.py",
            "src/r1forge/train/pretrain.py",
        ),
    ),
    Stage(
        name="sft_cold_start",
        kind="sft",
        summary="cold-start SFT of the base on chain-of-thought examples (DeepSpeed)",
        output="models/sft_cold_start",
        inputs={"data": "data", "model": "models/base"},
        params=("sft_cold_start",),
        code=("src/r1forge/stages/sft.py", "src/r1forge/train"),
    ),
    Stage(
        name="grpo_reasoning",
        kind="grpo",
        summary="reasoning RL: GRPO with rule rewards on the cold-start model (DeepSpeed)",
        output="models/grpo_reasoning",
        inputs={"data": "data", "model": "models/sft_cold_start"},
        params=("grpo_reasoning",),
        code=(
            "src/r1forge/stages/grpo.py",
            "src/r1forge/train",
            "src/r1forge/rollout",
            "src/r1forge/rewards",
        ),
    ),
)


def stage(name: str) -> Stage:
    for item in STAGES:
        if item.name == name:
            return item
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in STAGES]}")


def dvc_yaml(recipe: str = "recipes/tiny.yaml") -> dict[str, Any]:
    """The DVC pipeline of the recipe: one DVC stage per stage, params read from `recipe`."""
    stages = {}
    for item in STAGES:
        stages[item.name] = {
            "cmd": item.command(recipe),
            "deps": [*item.code, *item.inputs.values()],
            "params": [{recipe: list(item.params)}],
            "outs": [item.output],
            "metrics": [{item.metrics: {"cache": False}}],
        }
    return {"stages": stages}
