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
from r1forge.stages import Stage, pipeline_steps


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


# the component of each artifact shape, and the output it writes
COMPONENTS = {
    "dataset": (ops.dataset_op, "dataset"),
    "model": (ops.model_op, "model"),
    "results": (ops.evaluate_op, "results"),
    "release": (ops.promote_op, "release"),
}
TITLES = {"results": "evaluation of", "release": "promotion of"}


def resources_of(recipe: Recipe, step: Stage) -> Resources:
    section = getattr(recipe, step.section, None) if step.section else None
    return getattr(section, "resources", None) or Resources()


def enabled(recipe: Recipe, step: Stage, built: dict[str, Any]) -> bool:
    """A step runs when its recipe section exists (and, for a loop, has items) and every
    stage it reads from runs."""
    if step.section and getattr(recipe, step.section, None) is None:
        return False
    if step.fan_out and not getattr(getattr(recipe, step.section), step.fan_out):
        return False
    return all(name in built for name in (*step.inputs.values(), *step.reads))


def build(
    recipe_path: str | Path,
    overrides: list[str] | None = None,
    stages: tuple[Stage, ...] | None = None,
) -> Any:
    """The pipeline function for this recipe (sections and students fixed at compile time):
    one task per step of `r1forge.stages.pipeline_steps`, in registry order."""
    recipe_path = Path(recipe_path)
    recipe = load_recipe(recipe_path, overrides)
    # one line of JSON (which YAML reads): KFP copies defaults into the package's header
    # comment, where a multi-line string would spill into the document itself
    text = json.dumps(yaml.safe_load(recipe_path.read_text(encoding="utf-8")))
    sets = list(overrides or [])
    steps = pipeline_steps(stages)

    # where the registry (and a relative model store) lives: the model-cache volume when the
    # recipe mounts one, so that champions outlive runs; `run-local` passes its own folder
    registry_default = recipe.pipeline.model_cache_path if recipe.pipeline.model_cache_pvc else "."

    def add_task(step: Stage, common: dict[str, Any], built: dict[str, Any], root: Any) -> Any:
        arts = {name: built[producer][1] for name, producer in step.inputs.items()}
        arts.update({name: built[name][1] for name in step.reads})
        title = (
            f"{TITLES[step.artifact]} {step.inputs['model']}"
            if step.artifact in TITLES
            else step.name
        )
        res = resources_of(recipe, step)
        if step.fan_out:
            items = sorted(getattr(getattr(recipe, step.section), step.fan_out))
            with dsl.ParallelFor(items=items, name=step.fan_out) as item:
                configure(
                    ops.student_op(
                        **common,
                        title="student",
                        student=item,
                        data=arts["data"],
                        distill_data=arts["distill_data"],
                        teacher=arts["model"],
                        student_base=arts["base_student"],
                    ),
                    res,
                    recipe,
                    step.name,
                )
            return None, None
        component, output = COMPONENTS[step.artifact]
        if step.gate:
            gate_task = built[step.gate][0]
            threshold = getattr(recipe, step.section).min_pass_at_1
            with dsl.If(gate_task.outputs["Output"] >= threshold, name="promotion-gate"):
                task = component(
                    **common,
                    title=title,
                    checkpoint=step.inputs["model"],
                    registry_root=root,
                    data=arts["data"],
                    model_in=arts["model"],
                    results=arts["results"],
                )
                return configure(task, res, recipe, step.name), output
        if step.artifact == "results":
            task = component(**common, title=title, data=arts["data"], model_in=arts["model"])
            return configure(task, res, recipe, step.name), output
        extra = [name for name in arts if name not in ("data", "model")]
        task = component(
            **common,
            title=title,
            extra_input=extra[0] if extra else "",
            **({"data": arts["data"]} if "data" in arts else {}),
            **({"model_in": arts["model"]} if "model" in arts else {}),
            **({"extra": arts[extra[0]]} if extra else {}),
        )
        return configure(task, res, recipe, step.name), output

    @dsl.pipeline(name=recipe.pipeline.name, description=f"r1forge: {recipe.description}")
    def r1(
        recipe_yaml: str = text, settings: list = sets, registry_root: str = registry_default
    ) -> None:
        built: dict[str, Any] = {}  # stage name -> (task, its output artifact)
        for step in steps:
            if not enabled(recipe, step, built):
                continue
            common = {
                "recipe": recipe_yaml,
                "overrides": settings,
                "kind": step.kind,
                "section": step.section or "",
            }
            task, output = add_task(step, common, built, registry_root)
            built[step.name] = (task, task.outputs[output] if output else None)

    return r1


def compile_pipeline(
    recipe_path: str | Path, output: str | Path, overrides: list[str] | None = None
) -> Path:
    """Compile the recipe's pipeline to a KFP YAML package."""
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    compiler.Compiler().compile(build(recipe_path, overrides), str(output))
    return output
