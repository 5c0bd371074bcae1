"""Distributed training beyond one node: Kubeflow Trainer TrainJobs (or v1 PyTorchJobs).

A stage whose recipe asks for more than one node runs as a TrainJob on the
`torch-distributed` runtime: torchrun on every node reads the PET_* variables the
controller injects, DeepSpeed initialises from torchrun's environment (no SSH, no MPI).
Clusters with the older training operator get a PyTorchJob instead. The submitting
pipeline task waits for the job and fails with the job's own message. Manifests are plain
dicts built here and checked in tests; `RBAC` is what the submitting pod's ServiceAccount
needs.
"""

from __future__ import annotations

import time
from typing import Any

from r1forge.config import Resources
from r1forge.errors import R1ForgeError

TRAINER_GROUP, TRAINER_VERSION = "trainer.kubeflow.org", "v1alpha1"
OPERATOR_GROUP, OPERATOR_VERSION = "kubeflow.org", "v1"
SERVICE_ACCOUNT = "r1forge-pipeline"


def _resources(res: Resources) -> dict[str, Any]:
    requests: dict[str, Any] = {"cpu": res.cpu, "memory": res.memory}
    limits: dict[str, Any] = {}
    if res.gpus:
        requests["nvidia.com/gpu"] = str(res.gpus)
        limits["nvidia.com/gpu"] = str(res.gpus)
    return {"requests": requests, **({"limits": limits} if limits else {})}


def _env(env: dict[str, str], secrets: dict[str, dict[str, str]]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = [{"name": k, "value": v} for k, v in sorted(env.items())]
    for secret, keys in sorted(secrets.items()):
        for key, name in sorted(keys.items()):
            out.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
    return out


def _scheduling(pod: dict[str, Any], res: Resources, volume_claim: str | None) -> None:
    """Node selector, tolerations and the shared volume, on a pod spec."""
    if res.node_selector:
        pod["nodeSelector"] = dict(res.node_selector)
    if res.tolerations:
        pod["tolerations"] = [dict(t) for t in res.tolerations]
    if volume_claim:
        pod["volumes"] = [
            {"name": "workspace", "persistentVolumeClaim": {"claimName": volume_claim}}
        ]


def trainjob_manifest(
    name: str,
    namespace: str,
    image: str,
    args: list[str],
    res: Resources,
    *,
    env: dict[str, str] | None = None,
    secrets: dict[str, dict[str, str]] | None = None,
    volume_claim: str | None = None,
    mount_path: str = "/workspace",
    deadline_s: int | None = None,
    runtime: str = "torch-distributed",
) -> dict[str, Any]:
    """A TrainJob running `torchrun -m r1forge.cli ARGS` on `res.nodes` nodes."""
    trainer: dict[str, Any] = {
        "image": image,
        "command": ["torchrun", "-m", "r1forge.cli"],
        "args": args,
        "numNodes": res.nodes,
        "resourcesPerNode": _resources(res),
        "env": _env(env or {}, secrets or {}),
    }
    if res.gpus:
        trainer["numProcPerNode"] = res.gpus
    spec: dict[str, Any] = {"runtimeRef": {"name": runtime}, "trainer": trainer}
    if deadline_s:
        spec["activeDeadlineSeconds"] = deadline_s
    pod_spec: dict[str, Any] = {"serviceAccountName": SERVICE_ACCOUNT}
    _scheduling(pod_spec, res, volume_claim)
    if volume_claim:
        pod_spec["containers"] = [
            {"name": "node", "volumeMounts": [{"name": "workspace", "mountPath": mount_path}]}
        ]
    spec["runtimePatches"] = [
        {
            "manager": "r1forge",
            "trainingRuntimeSpec": {
                "template": {
                    "spec": {
                        "replicatedJobs": [
                            {"name": "node", "template": {"spec": {"template": {"spec": pod_spec}}}}
                        ]
                    }
                }
            },
        }
    ]
    return {
        "apiVersion": f"{TRAINER_GROUP}/{TRAINER_VERSION}",
        "kind": "TrainJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "r1forge"}},
        "spec": spec,
    }


def pytorchjob_manifest(
    name: str,
    namespace: str,
    image: str,
    args: list[str],
    res: Resources,
    *,
    env: dict[str, str] | None = None,
    secrets: dict[str, dict[str, str]] | None = None,
    volume_claim: str | None = None,
    mount_path: str = "/workspace",
    deadline_s: int | None = None,
) -> dict[str, Any]:
    """The same run as a training-operator v1 PyTorchJob (Master + Workers)."""
    container: dict[str, Any] = {
        "name": "pytorch",
        "image": image,
        "command": ["torchrun", "-m", "r1forge.cli"],
        "args": args,
        "resources": _resources(res),
        "env": _env(env or {}, secrets or {}),
    }
    pod: dict[str, Any] = {"serviceAccountName": SERVICE_ACCOUNT, "containers": [container]}
    _scheduling(pod, res, volume_claim)
    if volume_claim:
        container["volumeMounts"] = [{"name": "workspace", "mountPath": mount_path}]

    def replicas(n: int) -> dict[str, Any]:
        return {"replicas": n, "restartPolicy": "OnFailure", "template": {"spec": pod}}

    specs = {"Master": replicas(1)}
    if res.nodes > 1:
        specs["Worker"] = replicas(res.nodes - 1)
    run_policy: dict[str, Any] = {"cleanPodPolicy": "None", "backoffLimit": 2}
    if deadline_s:
        run_policy["activeDeadlineSeconds"] = deadline_s
    return {
        "apiVersion": f"{OPERATOR_GROUP}/{OPERATOR_VERSION}",
        "kind": "PyTorchJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"app": "r1forge"}},
        "spec": {
            "nprocPerNode": str(res.gpus) if res.gpus else "auto",
            "runPolicy": run_policy,
            "pytorchReplicaSpecs": specs,
        },
    }


def rbac_manifests(namespace: str) -> list[dict[str, Any]]:
    """ServiceAccount, Role and RoleBinding that let pipeline pods submit and watch jobs."""
    return [
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
            "rules": [
                {
                    "apiGroups": [TRAINER_GROUP],
                    "resources": ["trainjobs", "trainjobs/status"],
                    "verbs": ["create", "get", "list", "watch", "delete"],
                },
                {
                    "apiGroups": [OPERATOR_GROUP],
                    "resources": ["pytorchjobs", "pytorchjobs/status"],
                    "verbs": ["create", "get", "list", "watch", "delete"],
                },
                {
                    "apiGroups": [""],
                    "resources": ["pods", "pods/log", "events"],
                    "verbs": ["get", "list", "watch"],
                },
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": namespace},
            "subjects": [
                {"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": namespace}
            ],
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Role",
                "name": SERVICE_ACCOUNT,
            },
        },
    ]


class JobFailed(R1ForgeError):
    """A distributed training job ended in failure; the message is the job's own."""


def job_outcome(manifest: dict[str, Any], status: dict[str, Any]) -> str | None:
    """'succeeded', or None while running; raises JobFailed with the job's reason and message."""
    done = {"TrainJob": "Complete", "PyTorchJob": "Succeeded"}[manifest["kind"]]
    for condition in status.get("conditions", []):
        if condition.get("status") != "True":
            continue
        if condition.get("type") == "Failed":
            name = manifest["metadata"]["name"]
            raise JobFailed(
                f"{manifest['kind']} {name} failed: {condition.get('reason', '')}: "
                f"{condition.get('message', '')}".rstrip(": ")
            )
        if condition.get("type") == done:
            return "succeeded"
    return None


def submit_and_wait(
    manifest: dict[str, Any],
    api: Any | None = None,
    poll_s: float = 30.0,
    timeout_s: float = 7 * 24 * 3600,
) -> None:
    """Create the job with the Kubernetes API (in-cluster config) and wait for its outcome."""
    if api is None:
        from kubernetes import client, config

        config.load_incluster_config()
        api = client.CustomObjectsApi()
    group, version = manifest["apiVersion"].split("/")
    plural = manifest["kind"].lower() + "s"
    namespace, name = manifest["metadata"]["namespace"], manifest["metadata"]["name"]
    api.create_namespaced_custom_object(group, version, namespace, plural, manifest)
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        job = api.get_namespaced_custom_object(group, version, namespace, plural, name)
        if job_outcome(manifest, job.get("status") or {}):
            return
        time.sleep(poll_s)
    raise JobFailed(f"{manifest['kind']} {name} did not finish within {timeout_s:.0f} s")
