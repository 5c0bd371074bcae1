"""The one list of recipe stages: the CLI, `dvc.yaml` and (later) the KFP pipeline come from it.

Each stage's logic is a `run(recipe, ...)` function in its own module here; everything else
only calls it. `dvc_yaml()` renders the DVC pipeline, and a test keeps `dvc.yaml` equal to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Stage:
    """One pipeline step: `r1forge <kind>` run on its inputs, writing `output`.

    `section` is the recipe section a multi-section command runs (`--stage`); `outs` are
    what DVC tracks (default: the output); `deps` are inputs that take no option; `options`
    are further command-line flags; `persist` keeps the outs between runs (state such as
    the model registry, which each run extends).
    """

    name: str
    kind: str
    summary: str
    output: str
    inputs: dict[str, str] = field(default_factory=dict)
    params: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    section: str | None = None
    outs: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    persist: bool = False

    @property
    def metrics(self) -> str:
        return f"metrics/{self.name}.json"

    def command(self, recipe: str) -> str:
        parts = ["r1forge", self.kind, "--recipe", recipe]
        if self.section:
            parts += ["--stage", self.section]
        for option, path in self.inputs.items():
            parts += [f"--{option}", path]
        parts += self.options
        return " ".join([*parts, "--output", self.output, "--metrics", self.metrics])


GRPO_CODE = (
    "src/r1forge/stages/grpo.py",
    "src/r1forge/train",
    "src/r1forge/rollout",
    "src/r1forge/rewards",
)
EVALUATED = ("sft_cold_start", "grpo_reasoning", "sft_merged", "grpo_final", "grpo_student")

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
        section="sft_cold_start",
    ),
    Stage(
        name="select",
        kind="select",
        summary="RL prompts the cold-start model sometimes solves (pass rate over k samples)",
        output="selected/rl_prompts.jsonl",
        inputs={"data": "data", "model": "models/sft_cold_start"},
        params=("select",),
        code=("src/r1forge/stages/select.py",),
        outs=("selected",),
    ),
    Stage(
        name="grpo_reasoning",
        kind="grpo",
        summary="reasoning RL: GRPO with rule rewards on the cold-start model (DeepSpeed)",
        output="models/grpo_reasoning",
        inputs={"data": "data", "model": "models/sft_cold_start"},
        params=("grpo_reasoning",),
        code=GRPO_CODE,
        section="grpo_reasoning",
        deps=("selected",),
    ),
    Stage(
        name="sample",
        kind="sample",
        summary="rejection sampling: the RL model's verified reasoning as SFT data",
        output="synthetic/reasoning.jsonl",
        inputs={"data": "data", "model": "models/grpo_reasoning"},
        params=("sample",),
        code=("src/r1forge/stages/sample.py", "src/r1forge/rejection.py"),
        outs=("synthetic",),
    ),
    Stage(
        name="sft_merged",
        kind="sft",
        summary="SFT from the base on the sampled reasoning mixed with general data",
        output="models/sft_merged",
        inputs={"data": "data", "model": "models/base"},
        params=("sft_merged",),
        code=("src/r1forge/stages/sft.py", "src/r1forge/train", "src/r1forge/data/mix.py"),
        section="sft_merged",
        deps=("synthetic",),
    ),
    Stage(
        name="grpo_final",
        kind="grpo",
        summary="final RL over reasoning and general prompts",
        output="models/grpo_final",
        inputs={"data": "data", "model": "models/sft_merged"},
        params=("grpo_final",),
        code=GRPO_CODE,
        section="grpo_final",
    ),
    Stage(
        name="base_student",
        kind="base",
        summary="a smaller base for the students, trained like the base",
        output="models/base_student",
        inputs={"data": "data"},
        params=("base_student", "data.tasks"),
        code=(
            "src/r1forge/stages/base.py",
            "src/r1forge/models.py",
            "src/r1forge/train/pretrain.py",
        ),
        section="base_student",
    ),
    Stage(
        name="distill",
        kind="distill",
        summary="the final model's verified answers fine-tune each student (and evaluate it)",
        output="models/distill",
        inputs={"data": "data", "model": "models/grpo_final"},
        params=("distill", "evaluate"),
        code=("src/r1forge/stages/distill.py", "src/r1forge/stages/sample.py", "src/r1forge/train"),
        deps=("models/base_student",),
    ),
    Stage(
        name="sft_student",
        kind="sft",
        summary="R1 Table 6's other arm: the student's own cold-start SFT ...",
        output="models/sft_student",
        inputs={"data": "data", "model": "models/base_student"},
        params=("sft_student",),
        code=("src/r1forge/stages/sft.py", "src/r1forge/train"),
        section="sft_student",
    ),
    Stage(
        name="grpo_student",
        kind="grpo",
        summary="... then GRPO on the student with as many RL prompts as the teacher had",
        output="models/grpo_student",
        inputs={"data": "data", "model": "models/sft_student"},
        params=("grpo_student",),
        code=GRPO_CODE,
        section="grpo_student",
    ),
    *(
        Stage(
            name=f"eval_{checkpoint}",
            kind="evaluate",
            summary=f"pass@1 over k samples, cons@k and more for {checkpoint}",
            output=f"eval/{checkpoint}",
            inputs={"model": f"models/{checkpoint}"},
            params=("evaluate",),
            code=("src/r1forge/stages/evaluate.py", "src/r1forge/evaluation.py"),
            deps=("data",),
        )
        for checkpoint in EVALUATED
    ),
    Stage(
        name="promote",
        kind="promote",
        summary="the gate: the best evaluated checkpoint or student, if it beats the champion, "
        "is registered with its model card and deployed with Helm",
        output="deploy",
        params=("promote",),
        code=(
            "src/r1forge/stages/promote.py",
            "src/r1forge/promotion.py",
            "src/r1forge/registry.py",
            "src/r1forge/serving",
            "helm/r1forge-serving",
        ),
        deps=(
            *(f"models/{checkpoint}" for checkpoint in EVALUATED),
            *(f"eval/{checkpoint}" for checkpoint in EVALUATED),
            "models/distill",
        ),
        options=("--no-fail-on-refusal",),
        outs=("deploy", "registry"),
        persist=True,
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
            "deps": [*item.code, *item.inputs.values(), *item.deps],
            "params": [{recipe: list(item.params)}],
            "outs": [
                {out: {"persist": True}} if item.persist else out
                for out in item.outs or (item.output,)
            ],
            "metrics": [{item.metrics: {"cache": False}}],
        }
    # each trained model's loss / reward / accuracy curves (`dvc plots show`)
    plots = [f"{s.output}/curves.png" for s in STAGES if s.kind in ("base", "sft", "grpo")]
    return {"stages": stages, "plots": plots}
