"""Typed recipe configuration: YAML recipes parsed into pydantic models, with `--set` overrides.

A recipe has one section per stage (named as in `r1forge.stages.STAGES`); every field has a default that
works on the tiny CPU recipe. Errors name the recipe file, the line and the dotted field.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from r1forge.errors import ConfigError
from r1forge.io import write_text_atomic


class Strict(BaseModel):
    """Every section: unknown keys, a value of the wrong type (`true` for a size, "3" for a
    count) and a NaN or infinite float are errors, never silently converted."""

    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, strict=True, allow_inf_nan=False
    )


def _list_to_tuple(value: Any) -> Any:
    """YAML has no tuples: a recipe writes a pair as a list."""
    return tuple(value) if isinstance(value, list) else value


Pair = Annotated[tuple[float, float], BeforeValidator(_list_to_tuple)]


# the rejection filters (`r1forge.rejection`), in the order they are tried
RejectionReason = Literal[
    "incorrect",
    "malformed",
    "mixed_language",
    "overlong",
    "degenerate",
    "code_in_think",
    "long_paragraph",
]
# DeepSeek-R1's evaluation sampling: the evaluate stage's defaults and GRPO's held-out pass
EVAL_TEMPERATURE, EVAL_TOP_P = 0.6, 0.95
# compute precision: auto picks bf16 on a GPU, fp32 on CPU
Precision = Literal["auto", "fp32", "bf16"]
# the built-in rollout engines (`r1forge.rollout`; plugins may register more)
RolloutEngineName = Literal["transformers", "static", "vllm"]


class Resources(Strict):
    """What a stage asks of the cluster (its pipeline task, or its TrainJob when nodes > 1);
    ignored on a laptop."""

    gpus: int = Field(0, ge=0)
    gpu_type: str | None = Field(
        None, description="accelerator type, e.g. nvidia.com/gpu (default when gpus > 0)"
    )
    nodes: int = Field(1, ge=1, description="more than 1: the stage runs as a TrainJob")
    cpu: str = "2"
    memory: str = "8Gi"
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[dict[str, str]] = Field(default_factory=list)
    timeout_s: int | None = Field(None, ge=1)
    retries: int = Field(0, ge=0)
    caching: bool = True


def check_difficulties(levels: list[int]) -> list[int]:
    from r1forge.data.tasks import MAX_DIFFICULTY

    bad = [d for d in levels if not 1 <= d <= MAX_DIFFICULTY]
    if bad:
        raise ValueError(f"difficulty levels must be in 1..{MAX_DIFFICULTY}, got {bad}")
    return levels


class TaskSpec(Strict):
    weight: float = Field(1.0, gt=0)
    difficulties: list[int] = Field(default_factory=lambda: [1, 2], min_length=1)

    @field_validator("difficulties")
    @classmethod
    def _levels_exist(cls, levels: list[int]) -> list[int]:
        return check_difficulties(levels)


class ImportSpec(Strict):
    """A team's own file brought into r1forge records (see `r1forge data import`)."""

    path: str
    kind: str = Field(pattern="^(sft|prompt)$")
    output: str
    mapping: dict[str, str] = Field(default_factory=dict)
    task: str | None = None

    @field_validator("output")
    @classmethod
    def _inside_output_folder(cls, output: str) -> str:
        """The import is written into the data folder; a path that leaves it could replace
        any file the user can write."""
        path = PurePosixPath(output)
        if path.is_absolute() or ".." in path.parts or "\\" in output:
            raise ValueError(f"must be a path inside the data folder, got {output!r}")
        if path.suffix != ".jsonl":
            raise ValueError(f"must name a .jsonl file, got {output!r}")
        return output


class HeldOutSet(Strict):
    """An eval set of a task at levels training does not cover (e.g. a harder difficulty, or
    a task absent from the RL prompts): what RL transfers to, not only what it trained on."""

    task: str
    difficulties: list[int] = Field(min_length=1)
    size: int | None = Field(None, ge=1, description="default: data.eval_size")

    @field_validator("task")
    @classmethod
    def _task_exists(cls, task: str) -> str:
        from r1forge.data.tasks import TASKS

        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; known: {sorted(TASKS)}")
        return task

    @field_validator("difficulties")
    @classmethod
    def _levels_exist(cls, levels: list[int]) -> list[int]:
        return check_difficulties(levels)


class DataConfig(Strict):
    """Stage `data`: generated task sets (and imported files), deduplicated and decontaminated."""

    seed: int = 0
    tasks: dict[str, TaskSpec] = Field(default_factory=lambda: {"arithmetic": TaskSpec()})
    cold_start_size: int = Field(1000, ge=1)
    rl_prompts_size: int = Field(2000, ge=1)
    general_size: int = Field(200, ge=0)
    general_prompts_size: int = Field(50, ge=0)
    eval_size: int = Field(200, ge=1, description="per task")
    eval_difficulties: list[int] | None = None
    held_out: dict[str, HeldOutSet] = Field(
        default_factory=dict,
        description="more eval sets by name (eval/<name>.jsonl), e.g. a difficulty or task "
        "the training sets do not cover",
    )
    near_dup_threshold: float = Field(0.9, gt=0, le=1)
    decontam_ngram: int = Field(13, ge=1)
    system_prompt: str | None = None
    imports: list[ImportSpec] = Field(default_factory=list)
    resources: Resources = Field(default_factory=Resources)

    @field_validator("tasks")
    @classmethod
    def _tasks_exist(cls, tasks: dict[str, TaskSpec]) -> dict[str, TaskSpec]:
        from r1forge.data.tasks import TASKS

        unknown = sorted(set(tasks) - set(TASKS))
        if unknown:
            raise ValueError(f"unknown task(s) {unknown}; known: {sorted(TASKS)}")
        if not tasks:
            raise ValueError("name at least one task")
        return tasks

    @model_validator(mode="after")
    def _held_out_names(self) -> DataConfig:
        clash = sorted(set(self.held_out) & set(self.tasks))
        if clash:
            raise ValueError(f"held_out names {clash} are task names (eval/<task>.jsonl exists)")
        return self

    @field_validator("imports")
    @classmethod
    def _imports_replace_nothing(
        cls, imports: list[ImportSpec], info: ValidationInfo
    ) -> list[ImportSpec]:
        """An import must not silently overwrite a generated set or another import."""
        names = [*info.data.get("tasks", {}), *info.data.get("held_out", {})]
        generated = {"cold_start.jsonl", "rl_prompts.jsonl", "general.jsonl"}
        generated |= {"general_prompts.jsonl", *(f"eval/{name}.jsonl" for name in names)}
        seen: set[str] = set()
        for spec in imports:
            name = PurePosixPath(spec.output).as_posix()
            if name in generated:
                raise ValueError(f"output {spec.output!r} would replace a generated set")
            if name in seen:
                raise ValueError(f"two imports write {spec.output!r}")
            seen.add(name)
        return imports


class ArchConfig(Strict):
    """A Llama-style decoder; the defaults give about a million parameters."""

    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(4, ge=1)
    num_heads: int = Field(4, ge=1)
    num_kv_heads: int = Field(4, ge=1)
    intermediate_size: int = Field(352, ge=8)
    max_position: int = Field(512, ge=16)

    @model_validator(mode="after")
    def _heads_divide(self) -> ArchConfig:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        return self


class BaseConfig(Strict):
    """Stage `base`: a named real model, or (model: null) the tiny tokenizer and model trained here."""

    model: str | None = None
    revision: str | None = None
    seed: int = 0
    vocab_size: int = Field(512, ge=300)
    arch: ArchConfig = Field(default_factory=ArchConfig)
    corpus_size: int = Field(40000, ge=1)
    steps: int = Field(500, ge=1)
    batch_size: int = Field(32, ge=1)
    seq_len: int = Field(128, ge=8)
    lr: float = Field(3e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    log_every: int = Field(25, ge=1)
    threads: int | None = Field(None, ge=1, description="torch CPU threads; default: all cores")
    resources: Resources = Field(default_factory=Resources)

    @model_validator(mode="after")
    def _fits(self) -> BaseConfig:
        if self.seq_len > self.arch.max_position:
            raise ValueError(
                f"seq_len {self.seq_len} exceeds arch.max_position {self.arch.max_position}"
            )
        return self


class TrackingConfig(Strict):
    """W&B (offline unless `mode: online` and a key in WANDB_API_KEY) plus local files, always."""

    wandb: bool = True
    project: str = "r1forge"
    entity: str | None = None
    mode: Literal["offline", "online", "disabled"] = "offline"
    tags: list[str] = Field(default_factory=list)


class LoraSpec(Strict):
    r: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"]
    )


class TrainingStage(Strict):
    """What every DeepSpeed training stage (SFT, GRPO) sets the same way: ZeRO, precision,
    CPU threads, tracking and the pod's resources."""

    zero_stage: int = Field(0, ge=0, le=3)
    zero3_persistence_threshold: int = Field(
        100_000,
        ge=0,
        description="ZeRO-3: parameters with fewer elements stay whole on every rank "
        "(fewer tiny all-gathers); 0 shards every one",
    )
    precision: Precision = "auto"
    threads: int | None = Field(None, ge=1)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    resources: Resources = Field(default_factory=Resources)


class SFTConfig(TrainingStage):
    """Stages `sft_cold_start` and `sft_merged`: supervised fine-tuning on DeepSpeed."""

    init_from: Literal["base", "previous"] = "base"
    datasets: list[str] = Field(default_factory=lambda: ["cold_start.jsonl"], min_length=1)
    mix: dict[str, float] = Field(
        default_factory=dict,
        description="dataset -> weight: sizes relative to the first dataset, which is kept "
        "whole (e.g. {general.jsonl: 0.33} adds general examples a third as many as reasoning)",
    )
    seed: int = 0
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="overrides epochs when set")
    micro_batch_size: int = Field(
        8, ge=1, description="rows per micro-batch (examples when packing: none)"
    )
    gradient_accumulation: int = Field(1, ge=1)
    max_seq_len: int = Field(256, ge=8)
    packing: Literal["none", "packed", "padding_free"] = "packed"
    lr: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1)
    warmup_steps: int = Field(10, ge=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: Pair = (0.9, 0.95)
    max_grad_norm: float = Field(1.0, gt=0)
    eval_fraction: float = Field(0.05, ge=0, lt=1)
    eval_every: int = Field(50, ge=1)
    save_every: int = Field(100, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(10, ge=1)
    offload_optimizer: bool = False
    master_weights: bool = Field(
        True,
        description="bf16: keep fp32 master weights (DeepSpeed's bf16 mode); false updates the bf16 "
        "weights directly, as TRL does with a bf16 model (ZeRO stage 0 only; less memory and overhead)",
    )
    gradient_checkpointing: bool = False
    attn_implementation: Literal["sdpa", "eager", "flex_attention", "varlen"] = Field(
        "sdpa",
        description="varlen: PyTorch's varlen flash kernel over packed examples (CUDA only)",
    )
    compile: bool = Field(
        False, description="torch.compile each decoder layer (GPU; fixed shapes with packing)"
    )
    lora: LoraSpec | None = None

    @model_validator(mode="after")
    def _master_weights_need_stage0(self) -> SFTConfig:
        if not self.master_weights and self.zero_stage != 0:
            raise ValueError(
                "master_weights: false needs zero_stage 0 (ZeRO partitions fp32 master weights)"
            )
        return self


class CollapseGuard(Strict):
    """Signs that RL is farming a reward instead of learning, checked over a window of steps."""

    window: int = Field(10, ge=2)
    min_entropy: float = Field(
        0.02, ge=0, description="mean token entropy (nats) below this is a collapse"
    )
    min_length: float = Field(
        8.0, ge=0, description="mean completion tokens below this is a collapse"
    )
    format_up_accuracy_down: float = Field(
        0.1,
        gt=0,
        description="format rate up and accuracy down by at least this much over the window",
    )
    stop: bool = False


class DynamicSampling(Strict):
    """DAPO's dynamic sampling: groups whose rewards are all equal teach nothing, so they are
    dropped and more prompts drawn until the batch holds `prompts_per_step` groups that do."""

    enabled: bool = False
    max_draws: int = Field(
        4,
        ge=1,
        description="draws of prompts_per_step prompts a step at most; a batch still short "
        "after them trains on the groups it has",
    )


class TruncatedIS(Strict):
    """Truncated importance sampling against rollout/trainer mismatch: each token's term is
    weighted by min(p_trainer / p_rollout, cap), from the engine's own log-probs."""

    enabled: bool | None = Field(
        None,
        description="null: on for the vllm engine (another process's kernels) and for "
        "placement.max_staleness > 0 (batches from an older policy), else off",
    )
    cap: float = Field(2.0, gt=0)


class EntropyControl(Strict):
    """An entropy bonus in the loss: a fixed `coef`, or, with a `target` (nats per token), a
    coefficient moved by `step` each step toward holding that entropy (Skywork-OR1)."""

    coef: float = Field(0.0, ge=0, description="the bonus's coefficient (the start, adaptive)")
    target: float | None = Field(None, gt=0)
    step: float = Field(1e-4, gt=0)
    coef_max: float = Field(0.005, ge=0)


class Placement(Strict):
    """Rollouts on their own GPU: a rollout worker samples the next batch while the trainer
    updates on this one; weights go from trainer to worker after every update over NCCL
    (gloo on CPU), in place, never through disk."""

    rollout_gpus: int = Field(1, ge=1, le=1, description="rollout workers (one for now)")
    train_gpus: int = Field(1, ge=1, le=1, description="trainer processes (one for now)")
    max_staleness: int = Field(
        0,
        ge=0,
        description="a batch may come from a policy at most this many updates old; 0: the "
        "worker waits for each update (today's synchronous loop, exactly)",
    )
    transfer_timeout_s: float = Field(
        300.0, gt=0, description="a weight push or a batch that takes longer fails the run"
    )


class GRPOConfig(TrainingStage):
    """Stages `grpo_reasoning` and `grpo_final`: GRPO with rule rewards on a DeepSpeed engine."""

    prompts: list[str] = Field(default_factory=lambda: ["rl_prompts.jsonl"], min_length=1)
    seed: int = 0
    max_steps: int = Field(50, ge=1)
    prompts_per_step: int = Field(16, ge=1)
    group_size: int = Field(8, ge=2)
    max_new_tokens: int = Field(96, ge=1)
    temperature: float = Field(1.0, gt=0)
    top_p: float = Field(1.0, gt=0, le=1)
    rewards: dict[str, float] = Field(default_factory=lambda: {"accuracy": 1.0, "format": 0.2})
    task_rewards: dict[str, dict[str, float]] = Field(
        default_factory=dict,
        description="per-task reward weights replacing `rewards` for that task",
    )
    reward_params: dict[str, dict[str, Any]] = Field(default_factory=dict)
    advantage_scale: Literal["group", "batch", "none"] = "group"
    loss_type: Literal["grpo", "dapo", "dr_grpo"] = "dapo"
    epsilon: float = Field(0.2, gt=0)
    epsilon_high: float | None = Field(0.28, gt=0)
    beta: float = Field(0.0, ge=0)
    mu: int = Field(1, ge=1, description="policy updates per batch of rollouts")
    mask_truncated: bool = False
    dynamic_sampling: DynamicSampling = Field(default_factory=DynamicSampling)
    tis: TruncatedIS = Field(default_factory=TruncatedIS)
    entropy: EntropyControl = Field(default_factory=EntropyControl)
    placement: Placement | None = Field(
        None, description="null: rollouts on the trainer's own GPUs, one step at a time"
    )
    prompt_order: Literal["shuffle", "file"] = Field(
        "shuffle",
        description="shuffle: each epoch in a seeded random order; file: the file's order "
        "(a curriculum, e.g. r1forge select's easiest-first)",
    )
    micro_batch_size: int = Field(32, ge=1, description="completions per forward/backward")
    lr: float = Field(5e-5, gt=0)
    warmup_steps: int = Field(0, ge=0)
    min_lr_ratio: float = Field(1.0, ge=0, le=1)
    weight_decay: float = Field(0.0, ge=0)
    betas: Pair = (0.9, 0.99)
    max_grad_norm: float = Field(1.0, gt=0)
    rollout_engine: RolloutEngineName = Field(
        "transformers",
        description="transformers: HF generate; static: r1forge's engine (continuous batching "
        "over a preallocated KV cache, prefix sharing, CUDA-graph decode on GPUs); vllm: vLLM's "
        "offline engine, weights synced in memory",
    )
    eval_every: int = Field(25, ge=1)
    eval_size: int = Field(200, ge=1, description="eval prompts per eval set")
    save_every: int = Field(25, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(1, ge=1)
    sample_table_every: int = Field(10, ge=1)
    attn_implementation: Literal["sdpa", "eager"] = "sdpa"
    collapse: CollapseGuard = Field(default_factory=CollapseGuard)

    @field_validator("rewards", "task_rewards")
    @classmethod
    def _known_rewards(cls, value: dict[str, Any]) -> dict[str, Any]:
        from r1forge.rewards import available

        tables = (
            value.values() if value and isinstance(next(iter(value.values())), dict) else [value]
        )
        for table in tables:
            unknown = sorted(set(table) - set(available()))
            if unknown:
                raise ValueError(f"unknown reward(s) {unknown}; available: {available()}")
        return value

    @model_validator(mode="after")
    def _placement_fits(self) -> GRPOConfig:
        """A split placement runs in one pod: the trainer with the whole policy, plus its
        rollout worker's GPU."""
        if self.placement is None:
            return self
        wanted = self.placement.train_gpus + self.placement.rollout_gpus
        if self.zero_stage == 3:
            raise ValueError("placement: the trainer holds the whole policy; use zero_stage < 3")
        if self.resources.nodes > 1:
            raise ValueError("placement runs on one node; set resources.nodes: 1")
        if self.resources.gpus and self.resources.gpus < wanted:
            raise ValueError(
                f"placement needs {wanted} GPUs (train_gpus + rollout_gpus) but "
                f"resources.gpus is {self.resources.gpus}"
            )
        return self


class SamplingStage(Strict):
    """What every stage that samples from a checkpoint (evaluate, select, sample) shares."""

    limit: int | None = Field(None, ge=1, description="first N prompts of each file")
    seed: int = 0
    rollout_engine: RolloutEngineName = "transformers"
    precision: Precision = "auto"
    threads: int | None = Field(None, ge=1)
    resources: Resources = Field(default_factory=Resources)


class EvalConfig(SamplingStage):
    """Stage `evaluate`: R1's protocol (k samples at T 0.6, top-p 0.95) plus a greedy pass."""

    datasets: list[str] = Field(
        default_factory=list,
        description="prompt files to evaluate on (relative to the data folder); "
        "empty: every eval/*.jsonl",
    )
    k: int = Field(4, ge=1, description="samples per prompt for pass@1 and cons@k")
    temperature: float = Field(EVAL_TEMPERATURE, gt=0)
    top_p: float = Field(EVAL_TOP_P, gt=0, le=1)
    max_new_tokens: int = Field(96, ge=1)


class SelectConfig(SamplingStage):
    """Stage `select`: RL prompts chosen by the starting model's pass rate (k samples each)."""

    prompts: list[str] = Field(default_factory=lambda: ["rl_prompts.jsonl"], min_length=1)
    k: int = Field(4, ge=1, description="samples per prompt")
    temperature: float = Field(0.6, gt=0, description="as the RL stage samples")
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(96, ge=1)
    pass_rate: Pair = Field(
        (0.01, 0.99),
        description="keep prompts whose pass rate lies in [a, b]; the default keeps those "
        "solved sometimes but not always (groups that all score alike teach GRPO nothing)",
    )
    order: Literal["shuffle", "easiest_first", "hardest_first"] = Field(
        "shuffle",
        description="the output's order; easiest_first with grpo `prompt_order: file` is a "
        "curriculum",
    )

    @model_validator(mode="after")
    def _window(self) -> SelectConfig:
        low, high = self.pass_rate
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(f"pass_rate must satisfy 0 <= a <= b <= 1, got {low, high}")
        return self


class SampleConfig(SamplingStage):
    """Stage `sample`: rejection sampling of reasoning data from a checkpoint (R1 stage 3)."""

    prompts: list[str] = Field(default_factory=lambda: ["rl_prompts.jsonl"], min_length=1)
    k: int = Field(8, ge=1, description="samples per prompt")
    temperature: float = Field(0.8, gt=0)
    top_p: float = Field(0.95, gt=0, le=1)
    max_new_tokens: int = Field(96, ge=1)
    max_per_prompt: int = Field(2, ge=1, description="accepted completions kept per prompt")
    pass_rate: Pair | None = Field(
        None, description="keep only prompts whose pass rate lies in [a, b]"
    )
    near_dup_threshold: float = Field(0.9, gt=0, le=1)
    max_paragraph_chars: int = Field(1200, ge=1)
    allow_code_in_think: bool = False
    checks: list[RejectionReason] = Field(
        default_factory=lambda: list(get_args(RejectionReason)),
        description="the filters applied (all by default; general prompts have no verifier, "
        "so a general-data set drops `incorrect`)",
    )

    @field_validator("pass_rate")
    @classmethod
    def _ordered(cls, value: Pair | None) -> Pair | None:
        if value is not None and not 0.0 <= value[0] <= value[1] <= 1.0:
            raise ValueError("must be [a, b] with 0 <= a <= b <= 1")
        return value


class KDConfig(Strict):
    """Logit distillation mixed into SFT (teacher and student must share a tokenizer)."""

    kind: Literal["forward", "reverse"] = "forward"
    temperature: float = Field(1.0, gt=0)
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the KL; 1 - alpha for CE")


class StudentConfig(Strict):
    """One student: its own (smaller, pre-trained) base, the SFT settings, optional KD."""

    model: str = Field(description="the student's base model folder")
    sft: SFTConfig = Field(default_factory=SFTConfig)
    kd: KDConfig | None = None


class DistillConfig(Strict):
    """Stage `distill`: the teacher answers, verifiers filter, students are SFT'd (R1 §2.4)."""

    teacher_samples: SampleConfig = Field(default_factory=SampleConfig)
    students: dict[str, StudentConfig] = Field(default_factory=dict)
    resources: Resources = Field(default_factory=Resources)


class PipelineConfig(Strict):
    """How the recipe runs as a Kubeflow pipeline on a cluster."""

    name: str = "r1forge"
    image: str | None = Field(None, description="training image; default: the release's")
    namespace: str = "kubeflow"
    secrets: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="Kubernetes secret -> {key: ENV_VAR}, e.g. W&B key, hub token, storage",
    )
    model_cache_pvc: str | None = Field(None, description="PVC mounted at model_cache_path")
    model_cache_path: str = "/models"
    shared_pvc: str | None = Field(
        None, description="PVC shared by multi-node jobs (checkpoints, so a retry resumes)"
    )
    job_api: Literal["trainjob", "pytorchjob"] = "trainjob"


class PromoteConfig(Strict):
    """Stage `promote`: the gate, the model registry and the Helm release of the champion."""

    name: str = Field(
        "r1forge-reasoner",
        pattern=r"^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$",
        description="the registry's model name, also the served model name",
    )
    candidates: list[str] = Field(
        default_factory=lambda: ["grpo_final"],
        min_length=1,
        description="evaluated checkpoints (eval/<name>) or students (distill/<student>); the "
        "best by pass@1 faces the gate",
    )
    min_pass_at_1: float = Field(0.0, ge=0, le=1)
    min_format_rate: float = Field(0.0, ge=0, le=1)
    champion_margin: float = Field(
        0.0, ge=0, le=1, description="pass@1 must reach the champion's plus this"
    )
    registry: str = Field("registry", description="folder of models.json and the model cards")
    store: str = Field(
        "store",
        description="where promoted model folders are published, <store>/<name>/<version>: a "
        "folder (relative: inside the registry folder), file://, s3:// or gs://",
    )
    serve_from: str | None = Field(
        None,
        description="the URI prefix the serving pods fetch from when it is not `store` itself, "
        "e.g. store /models/store on the cache PVC, serve_from pvc://model-cache/store",
    )
    chart: str = "helm/r1forge-serving"
    release: str = Field("r1forge", pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    namespace: str = "r1forge"
    values: dict[str, Any] = Field(
        default_factory=dict, description="more Helm values (mode, resources, vllm, autoscaling)"
    )
    deploy: Literal["render", "cluster"] = Field(
        "render",
        description="render: `helm template` and `helm install --dry-run=client` (no cluster); "
        "cluster: `helm upgrade --install` against the current kube context",
    )
    resources: Resources = Field(default_factory=Resources)


class Recipe(Strict):
    """A whole R1 run: one section per stage of `r1forge.stages.STAGES`."""

    name: str = "tiny"
    description: str = ""
    data: DataConfig = Field(default_factory=DataConfig)
    base: BaseConfig = Field(default_factory=BaseConfig)
    sft_cold_start: SFTConfig = Field(default_factory=SFTConfig)
    sft_merged: SFTConfig = Field(
        default_factory=lambda: SFTConfig(
            datasets=["../synthetic/reasoning.jsonl", "general.jsonl"],
            mix={"general.jsonl": 0.33},
        ),
        description="R1 stage 4: SFT from the base on rejection-sampled reasoning + general data",
    )
    grpo_reasoning: GRPOConfig = Field(default_factory=GRPOConfig)
    select: SelectConfig = Field(default_factory=SelectConfig)
    sample: SampleConfig = Field(default_factory=SampleConfig)
    grpo_final: GRPOConfig = Field(
        default_factory=lambda: GRPOConfig(
            prompts=["rl_prompts.jsonl", "general_prompts.jsonl"],
            task_rewards={"chat": {"format": 1.0}},
        ),
        description="R1 stage 5: RL over reasoning prompts (rule rewards) and general prompts "
        "(a model-based reward when the recipe names one: task_rewards.chat.reward_model)",
    )
    base_student: BaseConfig | None = Field(
        None, description="a smaller base trained like `base`, for distillation students"
    )
    distill: DistillConfig = Field(default_factory=DistillConfig)
    sft_student: SFTConfig | None = Field(
        None, description="the comparison of R1's Table 6: the student's own cold-start SFT"
    )
    grpo_student: GRPOConfig | None = Field(
        None, description="... then GRPO on the student, with as many RL prompts as the teacher's"
    )
    evaluate: EvalConfig = Field(default_factory=EvalConfig)
    promote: PromoteConfig = Field(default_factory=PromoteConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)


class _RecipeLoader(yaml.SafeLoader):
    """YAML 1.1 as PyYAML reads it, except that `1e-5` is a float (YAML 1.2), as people
    write learning rates; PyYAML would read it as the string "1e-5"."""


_RecipeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _duplicate_key(node: yaml.Node) -> tuple[str, int, int] | None:
    """(dotted key, line, first line) of the first key repeated in a mapping, else None:
    PyYAML would keep the last silently."""
    stack: list[tuple[tuple[str, ...], yaml.Node]] = [((), node)]
    visited: set[int] = set()
    while stack:
        path, item = stack.pop()
        if id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, yaml.MappingNode):
            first: dict[str, int] = {}
            for key, value in item.value:
                name = str(key.value)
                line = key.start_mark.line + 1
                if name in first:
                    return ".".join((*path, name)), line, first[name]
                first[name] = line
                stack.append(((*path, name), value))
        elif isinstance(item, yaml.SequenceNode):
            stack.extend(((*path, str(i)), v) for i, v in enumerate(item.value))
    return None


def _yaml(text: str, where: str, override: str | None = None) -> tuple[Any, yaml.Node | None]:
    """Parse YAML text into (data, node tree); ConfigError naming where:line on any fault
    (an `override` value, one --set, has no lines: its key prefixes the field instead)."""

    def at(line: int) -> str:
        return where if override else f"{where}:{line}"

    try:
        composed = yaml.compose(text, Loader=_RecipeLoader)
        duplicate = _duplicate_key(composed) if composed is not None else None
        if duplicate:
            key, line, first = duplicate
            field = f"{override}.{key}" if override else key
            again = "" if override else f" (first on line {first})"
            raise ConfigError(f"{at(line)}: field '{field}': duplicate key{again}")
        return yaml.load(text, Loader=_RecipeLoader), composed
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where_line = at(mark.line + 1) if mark else where
        raise ConfigError(f"{where_line}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"{where}: invalid YAML: nested too deeply") from None


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of a dotted location in a composed YAML tree (deepest node found)."""
    line = None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(part)), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == str(part)), None)
                return key.start_mark.line + 1 if key else line
            node = match
        elif (
            isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value)
        ):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def _set_dotted(tree: dict[str, Any], key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
        node = child
    node[parts[-1]] = value


def parse_overrides(overrides: list[str] | None) -> list[tuple[str, Any]]:
    parsed = []
    for item in overrides or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value (e.g. base.steps=100), got {item!r}")
        value = _yaml(raw, f"--set {key}", key.strip())[0] if raw.strip() else None
        parsed.append((key.strip(), value))
    return parsed


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Load a YAML recipe, apply `key=value` overrides, validate, and name file:line:field on error."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a recipe file")
    if not path.is_file():
        raise ConfigError(f"{path}: recipe file not found")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}:{line}: not valid UTF-8 ({exc.reason})") from None
    tree, composed = _yaml(text, str(path))
    tree = {} if tree is None else tree
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: a recipe is a mapping of sections, got {type(tree).__name__}")
    override_keys = set()
    for key, value in parse_overrides(overrides):
        _set_dotted(tree, key, value)
        override_keys.add(key)
    try:
        return Recipe.model_validate(tree)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            field = ".".join(str(p) for p in err["loc"])
            message = _message(err)
            override = next(
                (k for k in override_keys if field == k or field.startswith(f"{k}.")), None
            )
            if override:
                where = f"{path} (--set {override})"
            else:
                line = _line_of(composed, tuple(err["loc"]))
                where = f"{path}:{line}" if line else str(path)
            lines.append(f"{where}: field '{field}': {message}")
        raise ConfigError("\n".join(lines)) from None


def _message(err: Any) -> str:
    """A validation error as a user reads it; a wrong type or a NaN says what was given."""
    if err["type"] == "extra_forbidden":
        return "unknown field"
    message = err["msg"].removeprefix("Value error, ")
    if err["type"].endswith("_type") or err["type"] == "finite_number":
        given = yaml.safe_dump(err["input"], default_flow_style=True)
        message += f", got {given.strip().removesuffix('...').strip()}"
    return message


def recipe_dict(recipe: Recipe) -> dict[str, Any]:
    return recipe.model_dump(mode="json")


def save_resolved(recipe: Recipe, path: str | Path, section: str | None = None) -> None:
    """Save the resolved recipe (or one section of it) next to the outputs it produced."""
    payload = recipe_dict(recipe)
    if section is not None:
        payload = {"name": recipe.name, section: payload[section]}
    write_text_atomic(path, yaml.safe_dump(payload, sort_keys=False))
