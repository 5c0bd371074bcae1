"""The recipe on Kubernetes: the compiled KFP pipeline, TrainJob/PyTorchJob manifests, RBAC,
and the KFP client calls. No Kubernetes API server or KFP backend runs here: job submission
and the client are exercised against fakes (marked below); the pipeline itself runs for real
under kfp.local in tests/test_pipeline_dvc.py, beside `dvc repro` of the same recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from r1forge.config import Resources, load_recipe
from r1forge.orchestration import TRAIN_IMAGE
from r1forge.orchestration.k8s import (
    JobFailed,
    job_outcome,
    pytorchjob_manifest,
    rbac_manifests,
    submit_and_wait,
    trainjob_manifest,
)

from .conftest import ROOT, run_cli

GPU = Resources(
    gpus=8,
    gpu_type="nvidia.com/gpu",
    nodes=2,
    cpu="32",
    memory="400Gi",
    node_selector={"pool": "h200"},
    tolerations=[{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}],
    timeout_s=7200,
    retries=2,
    caching=False,
)


def deserialize(data: Any, kind: str) -> Any:
    """Parse a manifest fragment into the Kubernetes client's typed model (fails on bad types)."""
    from kubernetes.client import ApiClient

    return ApiClient()._ApiClient__deserialize(data, kind)


def test_trainjob_manifest_fields_and_core_types() -> None:
    args = ["sft", "--recipe", "/workspace/recipe.yaml", "--resume"]
    job = trainjob_manifest(
        "r1forge-sft",
        "ml",
        TRAIN_IMAGE,
        args,
        GPU,
        secrets={"wandb": {"api-key": "WANDB_API_KEY"}},
        volume_claim="shared",
        deadline_s=7200,
    )
    assert job["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and job["kind"] == "TrainJob"
    spec = job["spec"]
    assert spec["runtimeRef"] == {"name": "torch-distributed"}
    trainer = spec["trainer"]
    assert trainer["command"] == ["torchrun", "-m", "r1forge.cli"] and trainer["args"] == args
    assert trainer["numNodes"] == 2 and trainer["numProcPerNode"] == 8
    assert spec["activeDeadlineSeconds"] == 7200
    resources = deserialize(trainer["resourcesPerNode"], "V1ResourceRequirements")
    assert resources.limits == {"nvidia.com/gpu": "8"} and resources.requests["memory"] == "400Gi"
    env = [deserialize(e, "V1EnvVar") for e in trainer["env"]]
    assert env[0].name == "WANDB_API_KEY" and env[0].value_from.secret_key_ref.key == "api-key"
    assert not any(e.name.startswith("PET_") for e in env)  # the controller sets those
    patch = spec["runtimePatches"][0]["trainingRuntimeSpec"]["template"]["spec"]
    pod = patch["replicatedJobs"][0]["template"]["spec"]["template"]["spec"]
    typed = deserialize(pod, "V1PodSpec")
    assert typed.service_account_name == "r1forge-pipeline"
    assert typed.node_selector == {"pool": "h200"} and typed.tolerations[0].key == "dedicated"
    assert typed.volumes[0].persistent_volume_claim.claim_name == "shared"
    assert pod["containers"] == [
        {"name": "node", "volumeMounts": [{"name": "workspace", "mountPath": "/workspace"}]}
    ]


def test_pytorchjob_manifest_master_and_workers() -> None:
    job = pytorchjob_manifest("r1forge-grpo", "ml", TRAIN_IMAGE, ["grpo"], GPU, volume_claim="s")
    assert job["apiVersion"] == "kubeflow.org/v1" and job["kind"] == "PyTorchJob"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1 and specs["Worker"]["replicas"] == 1
    pod = deserialize(specs["Worker"]["template"]["spec"], "V1PodSpec")
    assert pod.containers[0].name == "pytorch"  # the operator finds its container by name
    assert pod.containers[0].resources.limits == {"nvidia.com/gpu": "8"}
    assert job["spec"]["nprocPerNode"] == "8"


def test_rbac_lets_the_pipeline_submit_and_watch_jobs() -> None:
    account, role, binding = rbac_manifests("ml")
    assert deserialize(account, "V1ServiceAccount").metadata.name == "r1forge-pipeline"
    typed = deserialize(role, "V1Role")
    trainjobs = next(r for r in typed.rules if "trainjobs" in r.resources)
    assert {"create", "get", "watch"} <= set(trainjobs.verbs)
    assert deserialize(binding, "V1RoleBinding").role_ref.name == "r1forge-pipeline"


def test_job_outcome_and_wait_with_a_fake_api() -> None:
    """A fake stands in for the Kubernetes API (no cluster here)."""
    job = trainjob_manifest("j", "ml", TRAIN_IMAGE, [], GPU)
    assert job_outcome(job, {}) is None
    assert job_outcome(job, {"conditions": [{"type": "Complete", "status": "True"}]})
    failed = {"type": "Failed", "status": "True", "reason": "FailedJobs", "message": "OOMKilled"}
    with pytest.raises(JobFailed, match="FailedJobs: OOMKilled"):
        job_outcome(job, {"conditions": [failed]})

    class FakeApi:
        def __init__(self) -> None:
            self.created: list[Any] = []
            self.polls = 0

        def create_namespaced_custom_object(self, group, version, namespace, plural, body):
            self.created.append((group, version, namespace, plural, body["metadata"]["name"]))

        def get_namespaced_custom_object(self, group, version, namespace, plural, name):
            self.polls += 1
            done = self.polls >= 2
            return {"status": {"conditions": [{"type": "Complete", "status": str(done)}]}}

    api = FakeApi()
    submit_and_wait(job, api=api, poll_s=0.0)
    assert api.created == [("trainer.kubeflow.org", "v1alpha1", "ml", "trainjobs", "j")]
    assert api.polls == 2


def test_a_multi_node_stage_becomes_a_trainjob(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The pipeline task submits (to a fake) instead of training in its own pod."""
    from r1forge.orchestration import k8s, tasks

    submitted: list[dict[str, Any]] = []

    def fake_submit(manifest: dict[str, Any], **_: Any) -> None:
        submitted.append(manifest)
        out = tmp_path / "cache/runs/sft_cold_start/model"
        out.mkdir(parents=True)
        (out / "r1forge.json").write_text('{"metrics": {"steps": 3}}')

    monkeypatch.setattr(k8s, "submit_and_wait", fake_submit)
    text = (ROOT / "recipes/ci.yaml").read_text()
    overrides = [
        "sft_cold_start.resources={nodes: 2, gpus: 8}",
        "pipeline.shared_pvc=shared",
        f"pipeline.model_cache_path={tmp_path / 'cache'}",
    ]
    summary = tasks.run_stage(
        "sft", "sft_cold_start", text, overrides, data="/d", model="/m", output=str(tmp_path / "o")
    )
    assert summary == {"steps": 3} and (tmp_path / "o/r1forge.json").is_file()
    (job,) = submitted
    assert job["kind"] == "TrainJob" and job["spec"]["trainer"]["numNodes"] == 2
    args = job["spec"]["trainer"]["args"]
    assert args[:1] == ["sft"] and "--resume" in args and "--stage" in args


def test_submit_uploads_and_runs_with_a_fake_client(tmp_path: Path) -> None:
    """A fake stands in for kfp.Client (no KFP backend here)."""
    from r1forge.orchestration.submit import submit

    calls: list[str] = []

    class FakeClient:
        def get_pipeline_id(self, name):
            calls.append(f"lookup {name}")
            return "p1"

        def upload_pipeline_version(self, path, pipeline_version_name, pipeline_id):
            calls.append(f"version {pipeline_id}")

        def create_run_from_pipeline_package(self, path, **kwargs):
            calls.append(f"run {kwargs['experiment_name']}")
            return type("Run", (), {"run_id": "r-42"})()

    recipe = load_recipe(ROOT / "recipes/ci.yaml")
    run_id = submit("http://kfp", tmp_path / "p.yaml", recipe, "exp", client=FakeClient())
    assert run_id == "r-42" and calls == ["lookup r1forge", "version p1", "run exp"]


def test_compiled_pipeline_carries_cluster_settings(tmp_path: Path) -> None:
    out = tmp_path / "pipeline.yaml"
    overrides = [
        "grpo_reasoning.resources={gpus: 8, gpu_type: nvidia.com/gpu, memory: 400Gi, "
        "node_selector: {pool: h200}, timeout_s: 7200, retries: 2, caching: false}",
        "pipeline.secrets={wandb: {api-key: WANDB_API_KEY}}",
        "pipeline.model_cache_pvc=model-cache",
    ]
    args = ["pipeline", "compile", "--recipe", str(ROOT / "recipes/tiny.yaml"), "-o", str(out)]
    for item in overrides:
        args += ["--set", item]
    run_cli(*args)
    docs = list(yaml.safe_load_all(out.read_text()))
    spec, platform = docs[0], docs[1]
    text = out.read_text()
    assert "pip install" not in text and "kfp==" not in text  # the image carries kfp
    executors = spec["deploymentSpec"]["executors"]
    images = {e["container"]["image"] for e in executors.values()}
    assert images == {TRAIN_IMAGE} and TRAIN_IMAGE.endswith(":0.1.0")
    # grpo_reasoning: the GRPO task that reads the `select` stage's prompts
    grpo_task, grpo_exec = task_of(spec, "grpo_reasoning")
    grpo = executors[grpo_exec]["container"]["resources"]
    assert grpo["accelerator"]["resourceCount"] == "8" and grpo["cpuRequest"] == 2
    assert "comp-for-loop-2" in spec["components"]  # ParallelFor over the students
    dag = spec["root"]["dag"]["tasks"]
    gate = next(t for t in dag.values() if "triggerPolicy" in t)
    assert "condition" in gate["triggerPolicy"]
    assert (
        dag[grpo_task]["cachingOptions"] == {}
        and dag[grpo_task]["retryPolicy"]["maxRetryCount"] == 2
    )
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    grpo_k8s = k8s[grpo_exec]
    assert grpo_k8s["nodeSelector"]["labels"] == {"pool": "h200"}
    assert grpo_k8s["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert grpo_k8s["activeDeadlineSeconds"] == "7200"
    assert grpo_k8s["secretAsEnv"][0]["secretName"] == "wandb"
    assert grpo_k8s["pvcMount"][0]["mountPath"] == "/models"
    assert run_cli("pipeline", "--help").returncode == 0


def test_committed_rbac_is_the_generated_one() -> None:
    committed = list(yaml.safe_load_all((ROOT / "pipelines/rbac.yaml").read_text()))
    assert committed == rbac_manifests("kubeflow")
    printed = run_cli("pipeline", "rbac", "--namespace", "kubeflow").stdout
    assert list(yaml.safe_load_all(printed)) == committed


def task_of(spec: dict[str, Any], name: str) -> tuple[str, str]:
    """(DAG task key, executor) of the top-level task displayed as `name`: the components
    are shared by artifact shape, so a stage is found by its task's display name."""
    for key, task in spec["root"]["dag"]["tasks"].items():
        if task["taskInfo"]["name"] == name:
            component = spec["components"][task["componentRef"]["name"]]
            return key, component["executorLabel"]
    raise KeyError(name)


def task_names(spec: dict[str, Any]) -> set[str]:
    """Every task's display name in a compiled pipeline, loops and conditions included."""
    names = {t["taskInfo"]["name"] for t in spec["root"]["dag"]["tasks"].values()}
    for component in spec["components"].values():
        for task in component.get("dag", {}).get("tasks", {}).values():
            names.add(task["taskInfo"]["name"])
    return names


def test_one_list_of_stages_for_dvc_kfp_and_the_cli(tmp_path: Path) -> None:
    from r1forge.stages import STAGES

    out = tmp_path / "p.yaml"
    run_cli("pipeline", "compile", "--recipe", str(ROOT / "recipes/ci.yaml"), "-o", str(out))
    names = task_names(next(yaml.safe_load_all(out.read_text())))
    missing = {s.name for s in STAGES} - names
    assert not missing, f"stages with no pipeline task: {missing}"
    extra = {"distill_student", "students", "promotion-gate"}
    assert names - {s.name for s in STAGES} <= extra  # the loop, the gate and what they hold
    for kind in sorted({s.kind for s in STAGES}):
        assert run_cli(kind, "--help").returncode == 0


def test_cluster_recipe_compiles_with_its_gpu_pool_settings(tmp_path: Path) -> None:
    out = tmp_path / "cluster.yaml"
    recipe = ROOT / "recipes/qwen2.5-math-1.5b-8xh200.yaml"
    run_cli("pipeline", "compile", "--recipe", str(recipe), "-o", str(out))
    spec, platform = list(yaml.safe_load_all(out.read_text()))[:2]
    for stage_name in ("sft_cold_start", "grpo_reasoning"):
        executor = task_of(spec, stage_name)[1]
        res = spec["deploymentSpec"]["executors"][executor]["container"]["resources"]
        assert res["accelerator"]["resourceCount"] == "8"
        assert res["accelerator"]["resourceType"] == "nvidia.com/gpu"
        k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"][executor]
        assert k8s["nodeSelector"]["labels"] == {
            "cloud.google.com/gke-accelerator": "nvidia-h200-141gb"
        }
        assert {t["key"] for t in k8s["tolerations"]} == {"nvidia.com/gpu", "dedicated"}
        assert {s["secretName"] for s in k8s["secretAsEnv"]} == {"wandb", "hf-token", "s3-creds"}
        assert k8s["pvcMount"][0]["mountPath"] == "/models"
        assert "model-cache" in str(k8s["pvcMount"])
