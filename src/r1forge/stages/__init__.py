"""The one list of recipe stages: the CLI's stage commands, `dvc.yaml`, the Kubeflow
components' dispatch and the pipeline DAG are all generated from `STAGES`.

Each stage's logic is a module here exposing `run(ctx: StageContext) -> dict` (its summary)
and, optionally, `describe(summary, ctx) -> str` (the line the CLI prints). Adding a stage is
two edits: its module and its entry below. `dvc_yaml()` renders the DVC pipeline, and a test
keeps `dvc.yaml` equal to it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Artifact = Literal["dataset", "model", "results", "release"]


@dataclass(frozen=True)
class StageContext:
    """What a stage's `run` gets: the recipe and the section it runs, its named inputs
    (`STAGES` entry's `inputs` and `reads`, as paths), where it writes, and the options a
    command adds (promote's candidates, evaluate's files, a pipeline task's student)."""

    recipe: Any
    section: str | None
    inputs: dict[str, Path]
    output: Path
    metrics: Path | None = None
    resume: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def config(self) -> Any:
        """The resolved recipe section the stage runs (None for a stage without one)."""
        return getattr(self.recipe, self.section, None) if self.section else None


@dataclass(frozen=True)
class Option:
    """A command-line option a stage adds besides its inputs: `--<name>` (a repeatable
    option when `many`), its value in `ctx.options[key]` (None: not given)."""

    name: str
    key: str
    help: str
    type: type = Path
    many: bool = False
    default: Any = None


@dataclass(frozen=True)
class Stage:
    """One pipeline step: `r1forge <kind>` run on its inputs, writing `output`.

    `inputs` maps each input option (`--data`, `--model`, ...) to the stage whose output it
    reads; `reads` are stages read without an option (through `../<folder>/` paths beside
    the data folder, or a fixed folder); `deps` are further DVC dependencies. `section` is
    the recipe section run (`--stage` when a kind runs several); `artifact` is what the
    Kubeflow task outputs; `pipeline` replaces the entry in the Kubeflow DAG by other steps
    (distillation's teacher data, then a `fan_out` task per student); `gate` names the
    evaluation whose pass@1 must reach the section's `min_pass_at_1` (a `dsl.If`).
    `flags` are extra words of the DVC command; `persist` keeps the outs between runs.
    """

    name: str
    kind: str
    summary: str
    output: str
    run: str
    inputs: dict[str, str] = field(default_factory=dict)
    reads: tuple[str, ...] = ()
    params: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    section: str | None = None
    artifact: Artifact = "model"
    help: str = ""
    options: tuple[Option, ...] = ()
    resumable: bool = False
    distributed: bool = False
    outs: tuple[str, ...] = ()
    deps: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    persist: bool = False
    pipeline: tuple[Stage, ...] | None = None
    fan_out: str | None = None
    gate: str | None = None

    @property
    def metrics(self) -> str:
        return f"metrics/{self.name}.json"

    def runner(self) -> Callable[[StageContext], dict[str, Any]]:
        """The stage's `run`, its module imported now (not at `--help`)."""
        module, _, name = self.run.partition(":")
        return getattr(importlib.import_module(module), name)

    def command(self, recipe: str, stages: tuple[Stage, ...] | None = None) -> str:
        parts = ["r1forge", self.kind, "--recipe", recipe]
        if self.section and self.section != self.kind:  # a kind's other sections: --stage
            parts += ["--stage", self.section]
        for option, producer in self.inputs.items():
            parts += [f"--{option}", output_of(producer, stages)]
        parts += self.flags
        return " ".join([*parts, "--output", self.output, "--metrics", self.metrics])


def _module(name: str) -> str:
    return f"r1forge.stages.{name}:run"


GRPO_CODE = (
    "src/r1forge/stages/grpo.py",
    "src/r1forge/train",
    "src/r1forge/rollout",
    "src/r1forge/rewards",
)
SFT_CODE = ("src/r1forge/stages/sft.py", "src/r1forge/train")
BASE_CODE = ("src/r1forge/stages/base.py", "src/r1forge/models.py", "src/r1forge/train/pretrain.py")
EVALUATED = ("sft_cold_start", "grpo_reasoning", "sft_merged", "grpo_final", "grpo_student")
DATA_HELP = "Datasets folder written by `r1forge data`."

SFT_HELP = """Supervised fine-tuning on DeepSpeed (ZeRO 0-3, LoRA optional).

Runs as one process, or as N under `torchrun --nproc_per_node N -m r1forge.cli sft ...`
or the `deepspeed` launcher; rank 0 writes the outputs."""
GRPO_HELP = """GRPO with the recipe's weighted rule rewards.

Each step samples `group_size` completions per prompt, scores them, and updates the policy
on group-relative advantages (clipped ratio, optional k3 KL to a frozen reference).
Held-out pass@1 (greedy and sampled) is logged before training and every `eval_every` steps."""


TRAINING_HELP = {"sft": SFT_HELP, "grpo": GRPO_HELP}
TRAINING_CODE = {"sft": SFT_CODE, "grpo": GRPO_CODE}


def _training(kind: str, name: str, summary: str, model: str, **extra: Any) -> Stage:
    """A DeepSpeed training stage (`sft` or `grpo`) from the `model` stage's checkpoint."""
    return Stage(
        name=name,
        kind=kind,
        summary=summary,
        output=f"models/{name}",
        run=_module(kind),
        inputs={"data": "data", "model": model},
        params=(name,),
        section=name,
        help=TRAINING_HELP[kind],
        resumable=True,
        distributed=True,
        **{"code": TRAINING_CODE[kind], **extra},
    )


def _evaluation(checkpoint: str) -> Stage:
    return Stage(
        name=f"eval_{checkpoint}",
        kind="evaluate",
        summary=f"pass@1 over k samples, cons@k and more for {checkpoint}",
        output=f"eval/{checkpoint}",
        run=_module("evaluate"),
        inputs={"model": checkpoint},
        reads=("data",),
        params=("evaluate",),
        code=("src/r1forge/stages/evaluate.py", "src/r1forge/evaluation.py"),
        section="evaluate",
        artifact="results",
        help="""R1's protocol: k samples per prompt at T=0.6, top-p 0.95 (configurable).

Reports pass@1 (mean over the k samples), cons@k (majority vote over extracted answers),
greedy accuracy, format rate, language-consistency rate and mean length, overall and per
task and difficulty.""",
        options=(
            Option(
                "data",
                "files",
                "Prompt JSONL file to evaluate on (repeatable). Default: the recipe's "
                "`evaluate.datasets` under data/, or every data/eval/*.jsonl.",
                many=True,
            ),
        ),
    )


STAGES: tuple[Stage, ...] = (
    Stage(
        name="data",
        kind="data",
        summary="cold-start SFT set, RL prompts, general chat set and eval sets",
        output="data",
        run=_module("data"),
        params=("data",),
        code=("src/r1forge/stages/data.py", "src/r1forge/data"),
        section="data",
        artifact="dataset",
        help="Generate, validate, deduplicate and decontaminate every dataset of the recipe.",
    ),
    Stage(
        name="base",
        kind="base",
        summary="the base model: a named real model, or the tiny one trained here",
        output="models/base",
        run=_module("base"),
        inputs={"data": "data"},
        params=("base", "data.tasks"),
        code=BASE_CODE,
        section="base",
        help="Fetch the recipe's named model, or train the tiny tokenizer and base model.",
    ),
    _training(
        "sft",
        "sft_cold_start",
        "cold-start SFT of the base on chain-of-thought examples (DeepSpeed)",
        model="base",
    ),
    Stage(
        name="select",
        kind="select",
        summary="RL prompts the cold-start model sometimes solves (pass rate over k samples)",
        output="selected/rl_prompts.jsonl",
        run=_module("select"),
        inputs={"data": "data", "model": "sft_cold_start"},
        params=("select",),
        code=("src/r1forge/stages/select.py",),
        section="select",
        artifact="dataset",
        outs=("selected",),
        help="""RL prompts chosen by the starting model's pass rate.

k samples per prompt with the model RL starts from; keeps the prompts whose pass rate
lies in `select.pass_rate` (default [0.01, 0.99]: solved sometimes, not always; groups
whose rewards all agree teach GRPO nothing), each with `meta.pass_rate`; `order:
easiest_first` makes it a curriculum. Point a GRPO section's `prompts` at it
(`../selected/rl_prompts.jsonl`).""",
    ),
    _training(
        "grpo",
        "grpo_reasoning",
        "reasoning RL: GRPO with rule rewards on the cold-start model (DeepSpeed)",
        model="sft_cold_start",
        reads=("select",),
    ),
    Stage(
        name="sample",
        kind="sample",
        summary="rejection sampling: the RL model's verified reasoning as SFT data",
        output="synthetic/reasoning.jsonl",
        run=_module("sample"),
        inputs={"data": "data", "model": "grpo_reasoning"},
        params=("sample",),
        code=("src/r1forge/stages/sample.py", "src/r1forge/rejection.py"),
        section="sample",
        artifact="dataset",
        outs=("synthetic",),
        help="""Rejection sampling, R1's stage 3.

k samples per prompt; keeps completions that are correct, well formed, in one language,
not overlong or degenerate, with no code block or long paragraph in the reasoning; drops
exact and near duplicates; keeps the shortest `max_per_prompt` per prompt.""",
    ),
    _training(
        "sft",
        "sft_merged",
        "SFT from the base on the sampled reasoning mixed with general data",
        model="base",
        reads=("sample",),
        code=(*SFT_CODE, "src/r1forge/data/mix.py"),
    ),
    _training(
        "grpo", "grpo_final", "final RL over reasoning and general prompts", model="sft_merged"
    ),
    Stage(
        name="base_student",
        kind="base",
        summary="a smaller base for the students, trained like the base",
        output="models/base_student",
        run=_module("base"),
        inputs={"data": "data"},
        params=("base_student", "data.tasks"),
        code=BASE_CODE,
        section="base_student",
    ),
    Stage(
        name="distill",
        kind="distill",
        summary="the final model's verified answers fine-tune each student (and evaluate it)",
        output="models/distill",
        run=_module("distill"),
        inputs={"data": "data", "model": "grpo_final"},
        reads=("base_student",),
        params=("distill", "evaluate"),
        code=("src/r1forge/stages/distill.py", "src/r1forge/stages/sample.py", "src/r1forge/train"),
        section="distill",
        help="""The teacher's verified answers fine-tune each student (R1's way).

Students are smaller pre-trained bases named in `distill.students`; each may also mix in
logit distillation (`kd`: forward or reverse KL at a temperature) when it shares the
teacher's tokenizer. Several students train in one run.""",
        # in the Kubeflow DAG: the teacher's answers once, then one task per student
        pipeline=(
            Stage(
                name="distill",
                kind="distill_data",
                summary="the teacher's verified answers (distillation data)",
                output="models/distill/data",
                run="r1forge.stages.distill:run_teacher_data",
                inputs={"data": "data", "model": "grpo_final"},
                section="distill",
                artifact="dataset",
            ),
            Stage(
                name="distill_student",
                kind="student",
                summary="one student: SFT (and KD) on the teacher's answers, then evaluation",
                output="models/distill/student",
                run="r1forge.stages.distill:run_student",
                inputs={"data": "data", "model": "grpo_final", "distill_data": "distill"},
                reads=("base_student",),
                section="distill",
                fan_out="students",
            ),
        ),
    ),
    _training(
        "sft",
        "sft_student",
        "R1 Table 6's other arm: the student's own cold-start SFT ...",
        model="base_student",
    ),
    _training(
        "grpo",
        "grpo_student",
        "... then GRPO on the student with as many RL prompts as the teacher had",
        model="sft_student",
    ),
    *(_evaluation(checkpoint) for checkpoint in EVALUATED),
    Stage(
        name="promote",
        kind="promote",
        summary="the gate: the best evaluated checkpoint or student, if it beats the champion, "
        "is registered with its model card and deployed with Helm",
        output="deploy",
        run=_module("promote"),
        params=("promote",),
        code=(
            "src/r1forge/stages/promote.py",
            "src/r1forge/promotion.py",
            "src/r1forge/registry.py",
            "src/r1forge/serving",
            "helm/r1forge-serving",
        ),
        section="promote",
        artifact="release",
        deps=(
            *(f"models/{checkpoint}" for checkpoint in EVALUATED),
            *(f"eval/{checkpoint}" for checkpoint in EVALUATED),
            "models/distill",
        ),
        flags=("--no-fail-on-refusal",),
        outs=("deploy", "registry"),
        persist=True,
        help="""Gate every candidate; register, card and deploy the best that passes.

The gate (recipe section `promote`): pass@1 and format rate at least the minimums, and
pass@1 at least the champion's plus `champion_margin` on the same eval sets. Candidates
are gated best pass@1 first; the table lists each with its pass@1, format rate and why it
was refused. The best that passes is published to `promote.store`, its Helm values and
manifests are rendered into OUTPUT and deployed (`deploy: render` runs helm template and
install --dry-run=client; `cluster` runs helm upgrade --install), and
`registry/models.json` names it champion, with its model card. When none passes nothing
is deployed: OUTPUT/release.json says why, the champion's release and registry stay.""",
        options=(
            Option(
                "candidate",
                "candidates",
                "A checkpoint to consider (repeatable): an evaluated one (models/NAME with "
                "eval/NAME/metrics.json) or distill/STUDENT. Default: the recipe's "
                "promote.candidates.",
                type=str,
                many=True,
            ),
            Option("models", "models", "Folder of the model folders.", default=Path("models")),
            Option("evals", "evals", "Folder of the eval/<name> results.", default=Path("eval")),
            Option(
                "data",
                "data",
                "Data folder, to evaluate the champion again on new eval sets.",
                default=Path("data"),
            ),
            Option(
                "registry",
                "registry",
                "Registry folder (models.json, cards/). Default: promote.registry.",
            ),
            Option(
                "fail-on-refusal/--no-fail-on-refusal",
                "fail_on_refusal",
                "Exit with status 3 when no candidate passes the gate (the DVC stage runs "
                "with --no-fail-on-refusal: a refusal is a normal outcome, recorded in the "
                "outputs).",
                type=bool,
                default=True,
            ),
        ),
        # in the Kubeflow DAG: the final model, when its pass@1 passes the gate's minimum
        pipeline=(
            Stage(
                name="promote",
                kind="promote",
                summary="promotion of the final model through the gate",
                output="deploy",
                run=_module("promote"),
                inputs={"data": "data", "model": "grpo_final", "results": "eval_grpo_final"},
                section="promote",
                artifact="release",
                gate="eval_grpo_final",
            ),
        ),
    ),
)


def stage(name: str, stages: tuple[Stage, ...] | None = None) -> Stage:
    for item in stages or STAGES:
        if item.name == name:
            return item
    raise KeyError(f"unknown stage {name!r}; stages: {[s.name for s in stages or STAGES]}")


def output_of(name: str, stages: tuple[Stage, ...] | None = None) -> str:
    """The path a stage writes (the folder of a stage whose output is one file)."""
    return stage(name, stages).output


def read_path(name: str, stages: tuple[Stage, ...] | None = None) -> str:
    """What a stage that reads `name` without an option depends on: its output, or the
    folder of an output that is one file (`selected/`, read as `../selected/...`)."""
    path = Path(output_of(name, stages))
    return str(path.parent if path.suffix else path)


def sections_of(kind: str, stages: tuple[Stage, ...] | None = None) -> list[str]:
    """The recipe sections that stages of `kind` run, in order."""
    return [s.section for s in stages or STAGES if s.kind == kind and s.section]


def kinds(stages: tuple[Stage, ...] | None = None) -> dict[str, list[Stage]]:
    """Each stage kind (one CLI command) with its stages, in registry order."""
    out: dict[str, list[Stage]] = {}
    for item in stages or STAGES:
        out.setdefault(item.kind, []).append(item)
    return out


def pipeline_steps(stages: tuple[Stage, ...] | None = None) -> list[Stage]:
    """The Kubeflow DAG's steps: each stage, or the steps that replace it there."""
    return [step for item in stages or STAGES for step in item.pipeline or (item,)]


def find(kind: str, section: str | None, stages: tuple[Stage, ...] | None = None) -> Stage:
    """The stage (or pipeline step) of this kind running this section."""
    for item in [*(stages or STAGES), *pipeline_steps(stages)]:
        if item.kind == kind and (section is None or item.section == section):
            return item
    raise KeyError(f"no stage of kind {kind!r} runs section {section!r}")


def dvc_yaml(
    recipe: str = "recipes/tiny.yaml", stages: tuple[Stage, ...] | None = None
) -> dict[str, Any]:
    """The DVC pipeline of the recipe: one DVC stage per stage, params read from `recipe`."""
    stages = stages or STAGES
    out = {}
    for item in stages:
        out[item.name] = {
            "cmd": item.command(recipe, stages),
            "deps": [
                *item.code,
                *(output_of(p, stages) for p in item.inputs.values()),
                *(read_path(name, stages) for name in item.reads),
                *item.deps,
            ],
            "params": [{recipe: list(item.params)}],
            "outs": [
                {path: {"persist": True}} if item.persist else path
                for path in item.outs or (item.output,)
            ],
            "metrics": [{item.metrics: {"cache": False}}],
        }
    # each trained model's loss / reward / accuracy curves (`dvc plots show`)
    plots = [f"{s.output}/curves.png" for s in stages if s.kind in ("base", "sft", "grpo")]
    return {"stages": out, "plots": plots}
