"""The whole R1 recipe as one Kubeflow pipeline, built from a recipe.

data -> base -> cold-start SFT -> GRPO -> sample -> merged SFT (from the base) -> final RL
-> distillation data -> a ParallelFor over the students; the student base -> its own cold
start -> GRPO (R1's Table 6 comparison); every checkpoint evaluated; a `dsl.If` promotion
gate on the final model's pass@1 (`promote.min_pass_at_1`), whose branch runs the promote
stage: the champion check, the registry entry, the model card and the Helm release. Per task, from the recipe section's `resources`: CPU and
memory requests, GPU type and count, node selector and tolerations for the GPU pool,
timeout, retries and caching; from `pipeline`: secrets as environment variables and a PVC
for the model cache. The recipe is the pipeline's `recipe_yaml` parameter (one line of
JSON), so a compiled pipeline carries the exact recipe it was built from.
"""

import json
from pathlib import Path
from typing import Any

import yaml
from kfp import compiler, dsl, kubernetes

from components import stages as ops
from r1forge.config import Recipe, Resources, load_recipe


def configure(task: Any, res: Resources, recipe: Recipe, name: str) -> Any:
    """Apply a stage's resources and the pipeline's cluster settings to its task, named after
    its stage in `r1forge.stages.STAGES` (a test keeps the two lists in step)."""
    task.set_display_name(name)
    task.set_cpu_request(res.cpu).set_memory_request(res.memory)
    if res.gpus:
        task.set_accelerator_type(res.gpu_type or "nvidia.com/gpu")
        task.set_accelerator_limit(res.gpus)
        kubernetes.add_toleration(
            task, key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"
        )
    for key, value in res.node_selector.items():
        kubernetes.add_node_selector(task, label_key=key, label_value=value)
    for tol in res.tolerations:
        kubernetes.add_toleration(
            task,
            key=tol.get("key"),
            operator=tol.get("operator", "Equal"),
            value=tol.get("value"),
            effect=tol.get("effect"),
        )
    if res.timeout_s:
        kubernetes.set_timeout(task, res.timeout_s)
    if res.retries:
        task.set_retry(res.retries, backoff_duration="60s")
    task.set_caching_options(res.caching)
    cfg = recipe.pipeline
    for secret, keys in cfg.secrets.items():
        kubernetes.use_secret_as_env(task, secret_name=secret, secret_key_to_env=keys)
    if cfg.model_cache_pvc:
        kubernetes.mount_pvc(task, pvc_name=cfg.model_cache_pvc, mount_path=cfg.model_cache_path)
    return task


def build(recipe_path: str | Path, overrides: list[str] | None = None) -> Any:
    """The pipeline function for this recipe (sections and students fixed at compile time)."""
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path, overrides)
    # one line of JSON (which YAML reads): KFP copies defaults into the package's header
    # comment, where a multi-line string would spill into the document itself
    text = json.dumps(yaml.safe_load(recipe_path.read_text(encoding="utf-8")))
    sets = list(overrides or [])
    students = sorted(recipe.distill.students)
    has_student_arm = recipe.base_student is not None

    # where the registry (and a relative model store) lives: the model-cache volume when the
    # recipe mounts one, so that champions outlive runs; `run-local` passes its own folder
    registry_default = recipe.pipeline.model_cache_path if recipe.pipeline.model_cache_pvc else "."

    @dsl.pipeline(name=recipe.pipeline.name, description=f"r1forge: {recipe.description}")
    def r1(
        recipe_yaml: str = text, settings: list = sets, registry_root: str = registry_default
    ) -> None:
        common = {"recipe": recipe_yaml, "overrides": settings}
        data = configure(ops.data_op(**common), recipe.data.resources, recipe, "data")
        base = configure(
            ops.base_op(**common, section="base", data=data.outputs["data"]),
            recipe.base.resources,
            recipe,
            "base",
        )
        evals = {}

        def evaluate(name: str, model: Any) -> Any:
            task = ops.evaluate_op(
                **common, checkpoint=name, data=data.outputs["data"], model_in=model
            )
            evals[name] = configure(task, recipe.evaluate.resources, recipe, f"eval_{name}")
            return evals[name]

        cold = configure(
            ops.sft_op(
                **common,
                section="sft_cold_start",
                data=data.outputs["data"],
                model_in=base.outputs["model"],
            ),
            recipe.sft_cold_start.resources,
            recipe,
            "sft_cold_start",
        )
        evaluate("sft_cold_start", cold.outputs["model"])
        selected = configure(
            ops.select_op(**common, data=data.outputs["data"], model_in=cold.outputs["model"]),
            recipe.select.resources,
            recipe,
            "select",
        )
        reasoning = configure(
            ops.grpo_selected_op(
                **common,
                section="grpo_reasoning",
                data=data.outputs["data"],
                selected=selected.outputs["selected"],
                model_in=cold.outputs["model"],
            ),
            recipe.grpo_reasoning.resources,
            recipe,
            "grpo_reasoning",
        )
        evaluate("grpo_reasoning", reasoning.outputs["model"])
        sampled = configure(
            ops.sample_op(**common, data=data.outputs["data"], model_in=reasoning.outputs["model"]),
            recipe.sample.resources,
            recipe,
            "sample",
        )
        merged = configure(
            ops.sft_merged_op(
                **common,
                data=data.outputs["data"],
                synthetic=sampled.outputs["synthetic"],
                model_in=base.outputs["model"],
            ),
            recipe.sft_merged.resources,
            recipe,
            "sft_merged",
        )
        evaluate("sft_merged", merged.outputs["model"])
        final = configure(
            ops.grpo_op(
                **common,
                section="grpo_final",
                data=data.outputs["data"],
                model_in=merged.outputs["model"],
            ),
            recipe.grpo_final.resources,
            recipe,
            "grpo_final",
        )
        final_eval = evaluate("grpo_final", final.outputs["model"])
        if students and has_student_arm:
            student_base = configure(
                ops.base_op(**common, section="base_student", data=data.outputs["data"]),
                recipe.base_student.resources,
                recipe,
                "base_student",
            )
            teacher_data = configure(
                ops.distill_data_op(
                    **common, data=data.outputs["data"], teacher=final.outputs["model"]
                ),
                recipe.distill.resources,
                recipe,
                "distill",
            )
            with dsl.ParallelFor(items=students, name="students") as student:
                configure(
                    ops.student_op(
                        **common,
                        student=student,
                        data=data.outputs["data"],
                        distill_data=teacher_data.outputs["distill_data"],
                        teacher=final.outputs["model"],
                        student_base=student_base.outputs["model"],
                    ),
                    recipe.distill.resources,
                    recipe,
                    "distill_student",
                )
            if recipe.sft_student and recipe.grpo_student:
                own_cold = configure(
                    ops.sft_op(
                        **common,
                        section="sft_student",
                        data=data.outputs["data"],
                        model_in=student_base.outputs["model"],
                    ),
                    recipe.sft_student.resources,
                    recipe,
                    "sft_student",
                )
                own_rl = configure(
                    ops.grpo_op(
                        **common,
                        section="grpo_student",
                        data=data.outputs["data"],
                        model_in=own_cold.outputs["model"],
                    ),
                    recipe.grpo_student.resources,
                    recipe,
                    "grpo_student",
                )
                evaluate("grpo_student", own_rl.outputs["model"])
        with dsl.If(
            final_eval.outputs["Output"] >= recipe.promote.min_pass_at_1,
            name="promotion-gate",
        ):
            configure(
                ops.promote_op(
                    **common,
                    checkpoint="grpo_final",
                    registry_root=registry_root,
                    data=data.outputs["data"],
                    model_in=final.outputs["model"],
                    results=final_eval.outputs["results"],
                ),
                recipe.promote.resources,
                recipe,
                "promote",
            )

    return r1


def compile_pipeline(
    recipe_path: str | Path, output: str | Path, overrides: list[str] | None = None
) -> Path:
    """Compile the recipe's pipeline to a KFP YAML package."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build(recipe_path, overrides), str(output))
    return output
