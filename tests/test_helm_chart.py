"""The serving Helm chart helm/r1forge-serving: lint, render + validate, schema, dry-run, checkov.

Real helm (v4), kubernetes-validate and checkov are installed by `make setup`; a missing tool
fails these tests (it never skips them), since a skipped chart check passes silently in CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "r1forge-serving"
CI = CHART / "ci"
RELEASE = "r1"
NAMESPACE = "r1forge"
VALUE_SETS = [
    "gpu-values",
    "cpu-values",
    "autoscaling-values",
    "keda-values",
    "ingress-netpol-values",
]
SERVER_LABELS = {
    "app.kubernetes.io/name": "r1forge-serving",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "server",
}
HEX64 = re.compile(r"^[0-9a-f]{64}$")


def find_tool(name: str, *extra: Path) -> Path:
    """`name` on PATH, else next to this interpreter (the venv's bin), else in `extra`."""
    candidates = [shutil.which(name), Path(sys.executable).parent / name, *extra]
    for cand in candidates:
        if cand and Path(cand).is_file() and os.access(cand, os.X_OK):
            return Path(cand)
    pytest.fail(f"{name} not found on PATH or in {Path(sys.executable).parent}: run `make setup`")


@pytest.fixture(scope="session")
def helm() -> Path:
    return find_tool("helm")


@pytest.fixture(scope="session")
def tool_env(helm: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """helm first on PATH (checkov shells out to it), private helm dirs, and no cluster."""
    home = tmp_path_factory.mktemp("helm-home")
    return {
        **os.environ,
        "PATH": f"{helm.parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-such-kubeconfig"),
    }


def run(
    cmd: list[str | Path], env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, cmd))} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


def values_args(*value_sets: str, sets: tuple[str, ...] = ()) -> list[str]:
    args = []
    for name in value_sets:
        args += ["-f", str(CI / f"{name}.yaml")]
    for item in sets:
        args += ["--set", item]
    return args


def template(helm: Path, env: dict[str, str], *value_sets: str, sets: tuple[str, ...] = ()) -> str:
    cmd = [helm, "template", RELEASE, CHART, "--namespace", NAMESPACE]
    return run([*cmd, *values_args(*value_sets, sets=sets)], env).stdout


def docs_of(rendered: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(rendered) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return sorted(d["kind"] for d in docs)


def render(helm: Path, env: dict[str, str], *value_sets: str, sets: tuple[str, ...] = ()):
    return docs_of(template(helm, env, *value_sets, sets=sets))


def pod_spec(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]


def container(spec: dict[str, Any], name: str, init: bool = False) -> dict[str, Any]:
    key = "initContainers" if init else "containers"
    return next(c for c in spec[key] if c["name"] == name)


def ci_values(name: str) -> dict[str, Any]:
    return yaml.safe_load((CI / f"{name}.yaml").read_text())


# --- files and value sets -----------------------------------------------------------------


def test_chart_files_and_value_sets_exist() -> None:
    for rel in (
        "Chart.yaml",
        "values.yaml",
        "values.schema.json",
        "README.md",
        ".helmignore",
        ".checkov.yaml",
        "templates/_helpers.tpl",
        "templates/NOTES.txt",
    ):
        assert (CHART / rel).is_file(), rel
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2" and chart["appVersion"] == "0.1.0"
    for name in VALUE_SETS:
        model = ci_values(name)["model"]
        assert model["uri"] and HEX64.match(model["revision"]), name
    # The keys `r1forge promote` writes are all in the defaults.
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(defaults["model"]) == {"name", "version", "uri", "revision", "credentialsSecret"}
    assert {"repository", "tag"} <= set(defaults["image"])
    assert defaults["image"]["tag"] == "0.1.0"


def test_schema_is_draft7_and_accepts_every_value_set() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    validator = jsonschema.Draft7Validator(schema)
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    assert schema["additionalProperties"] is False
    assert schema["properties"]["model"]["additionalProperties"] is False
    # The defaults pass (placeholders that never verify); empty uri and revision do not.
    assert not list(validator.iter_errors(defaults))
    emptied = {**defaults, "model": {**defaults["model"], "uri": "", "revision": ""}}
    errors = {"/".join(map(str, e.path)) for e in validator.iter_errors(emptied)}
    assert {"model/uri", "model/revision"} <= errors
    for name in VALUE_SETS:
        merged = json.loads(json.dumps(defaults))
        for key, value in ci_values(name).items():
            if isinstance(value, dict) and isinstance(merged.get(key), dict):
                merged[key] = {**merged[key], **value}
            else:
                merged[key] = value
        assert not list(validator.iter_errors(merged)), name


# --- helm lint ----------------------------------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_lint_strict(helm: Path, tool_env: dict[str, str], value_set: str) -> None:
    # and with each complete value set
    cmd = [helm, "lint", "--strict", CHART, "--namespace", NAMESPACE, *values_args(value_set)]
    out = run(cmd, tool_env).stdout
    assert "0 chart(s) failed" in out


def test_lint_of_the_chart_alone_and_without_a_model(helm: Path, tool_env: dict[str, str]) -> None:
    assert "0 chart(s) failed" in run([helm, "lint", "--strict", CHART], tool_env).stdout
    empty = ["--set", "model.uri=", "--set", "model.revision="]
    proc = run([helm, "lint", "--strict", CHART, *empty], tool_env, check=False)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "/model/uri" in out and "/model/revision" in out


# --- helm template + kubernetes-validate ---------------------------------------------------


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_render_validates_and_is_hardened(
    helm: Path, tool_env: dict[str, str], tmp_path: Path, value_set: str
) -> None:
    rendered = template(helm, tool_env, value_set)
    manifest = tmp_path / f"{value_set}.yaml"
    manifest.write_text(rendered)
    validate = find_tool("kubernetes-validate")
    for version in ("1.37.0", "1.25.0"):  # newest known and the chart's kubeVersion floor
        proc = run([validate, "--strict", "-k", version, manifest], tool_env, check=False)
        assert proc.returncode == 0 and "ERROR" not in proc.stdout + proc.stderr, (
            proc.stdout + proc.stderr
        )

    docs = docs_of(rendered)
    model = ci_values(value_set)["model"]
    for doc in docs:
        assert doc["metadata"]["namespace"] == NAMESPACE, doc["metadata"]["name"]
    assert "latest" not in re.findall(r"image: \S+:(\S+)", rendered)
    assert set(re.findall(r"image: (\S+)", rendered)) == {"ghcr.io/r1forge/r1forge-serve:0.1.0"}

    deploy = one(docs, "Deployment")
    assert deploy["spec"]["selector"]["matchLabels"] == SERVER_LABELS
    spec = pod_spec(docs)
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 1000
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for ctr in spec["initContainers"] + spec["containers"]:
        sc = ctr["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
        assert ctr["resources"]["requests"] and ctr["resources"]["limits"]

    # The init container fetches and verifies the promoted model into the shared emptyDir.
    fetch = container(spec, "fetch-model", init=True)
    cmd = fetch["command"] + fetch.get("args", [])
    expected = ["python3", "-m", "r1forge.serving.fetch", "--uri", model["uri"]]
    expected += ["--sha256", model["revision"], "--dest", f"/models/{model['name']}"]
    assert cmd[: len(expected)] == expected
    assert fetch["image"] == container(spec, "vllm")["image"]
    if model["credentialsSecret"]:
        assert fetch["envFrom"] == [{"secretRef": {"name": model["credentialsSecret"]}}]
    else:
        assert "envFrom" not in fetch
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert "emptyDir" in volumes["models"] and volumes["models"]["emptyDir"]["sizeLimit"]
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    assert {"tmp", "cache"} <= set(volumes)

    # The vLLM server: reasoning parser, served name, probes on /health, key from a Secret.
    server = container(spec, "vllm")
    assert server["command"] == ["python3", "-m", "vllm.entrypoints.openai.api_server"]
    args = server["args"]
    assert args[:6] == [
        "--model",
        f"/models/{model['name']}",
        "--served-model-name",
        model["name"],
        "--reasoning-parser",
        "deepseek_r1",
    ]
    for flag in ("--host", "--port", "--max-model-len", "--dtype"):
        assert flag in args
    assert args[args.index("--port") + 1] == "8000"
    assert server["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    env = {e["name"]: e for e in server["env"]}
    key_ref = env["VLLM_API_KEY"]["valueFrom"]["secretKeyRef"]
    assert key_ref["name"] and key_ref["key"]
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert {"/models", "/dev/shm", "/tmp", "/cache"} <= set(mounts)
    assert env["HF_HOME"]["value"].startswith("/cache")

    service = one(docs, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"] == SERVER_LABELS
    assert service["spec"]["ports"][0]["name"] == "http"
    assert service["spec"]["ports"][0]["port"] == 8000
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == SERVER_LABELS

    # The `helm test` hook calls GET /v1/models with the bearer key, in the serving image.
    test_pod = one(docs, "Pod")
    assert test_pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    tctr = test_pod["spec"]["containers"][0]
    assert tctr["image"] == server["image"]
    script = " ".join(tctr["command"])
    assert "urllib" in script and "Bearer" in script
    tenv = {e["name"]: e.get("value") for e in tctr["env"]}
    assert tenv["MODELS_URL"].endswith(f".{NAMESPACE}.svc:8000/v1/models")
    assert tenv["MODELS_URL"].startswith(f"http://{service['metadata']['name']}.")
    assert tenv["MODEL_NAME"] == model["name"]
    secret_volume = test_pod["spec"]["volumes"][0]["secret"]
    assert secret_volume["secretName"] == key_ref["name"]
    assert secret_volume["items"][0]["key"] == key_ref["key"]
    assert tctr["securityContext"] == server["securityContext"]
    assert test_pod["spec"]["securityContext"] == psc
    assert test_pod["spec"]["automountServiceAccountToken"] is False


def test_promote_values_alone_render(helm: Path, tool_env: dict[str, str], tmp_path: Path) -> None:
    """A values file with exactly the keys `r1forge promote` writes is enough."""
    promoted = {
        "model": {
            "name": "r1forge-tiny",
            "version": "7",
            "uri": "file:///mnt/registry/r1forge-tiny/7",
            "revision": "a" * 64,
            "credentialsSecret": "",
        },
        "image": {"repository": "ghcr.io/r1forge/r1forge-serve", "tag": ""},
    }
    path = tmp_path / "promoted.yaml"
    path.write_text(yaml.safe_dump(promoted))
    cmd = [helm, "template", RELEASE, CHART, "--namespace", NAMESPACE, "-f", path]
    docs = docs_of(run(cmd, tool_env).stdout)
    server = container(pod_spec(docs), "vllm")
    # An empty tag falls back to the chart's appVersion: still pinned.
    assert server["image"] == "ghcr.io/r1forge/r1forge-serve:0.1.0"
    assert one(docs, "Deployment")["metadata"]["annotations"]["r1forge.io/model-version"] == "7"
    assert "Secret" not in kinds(docs)  # the default references an existing Secret


def test_gpu_values(helm: Path, tool_env: dict[str, str]) -> None:
    docs = render(helm, tool_env, "gpu-values")
    spec = pod_spec(docs)
    server = container(spec, "vllm")
    assert server["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert server["resources"]["requests"]["nvidia.com/gpu"] == 2
    assert spec["nodeSelector"] == {
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": "NVIDIA-H200",
    }
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec[
        "tolerations"
    ]
    args = server["args"]
    assert args[args.index("--tensor-parallel-size") + 1] == "2"
    assert args[args.index("--gpu-memory-utilization") + 1] == "0.92"
    assert args[args.index("--dtype") + 1] == "bfloat16"
    assert args[-1] == "--enable-prefix-caching"
    assert "VLLM_CPU_KVCACHE_SPACE" not in {e["name"] for e in server["env"]}
    assert "HorizontalPodAutoscaler" not in kinds(docs)
    assert "ScaledObject" not in kinds(docs)
    assert one(docs, "Deployment")["spec"]["replicas"] == 1
    monitor = one(docs, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"] == SERVER_LABELS
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"


def test_cpu_values(helm: Path, tool_env: dict[str, str]) -> None:
    rendered = template(helm, tool_env, "cpu-values")
    assert "nvidia.com/gpu" not in rendered
    docs = docs_of(rendered)
    spec = pod_spec(docs)
    assert "nodeSelector" not in spec and "tolerations" not in spec
    server = container(spec, "vllm")
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["VLLM_CPU_KVCACHE_SPACE"] == "2"
    args = server["args"]
    assert args[args.index("--dtype") + 1] == "float32"
    assert "--gpu-memory-utilization" not in args
    # pvc:// uri: the claim (first path segment) is mounted read-only at /model-store.
    fetch = container(spec, "fetch-model", init=True)
    cmd = fetch["command"] + fetch.get("args", [])
    assert cmd[-2:] == ["--pvc-root", "/model-store"]
    assert {"name": "model-store", "mountPath": "/model-store", "readOnly": True} in fetch[
        "volumeMounts"
    ]
    store = next(v for v in spec["volumes"] if v["name"] == "model-store")
    assert store["persistentVolumeClaim"] == {"claimName": "r1forge-model-store", "readOnly": True}
    # apiKey.create: the chart makes the Secret the server reads.
    secret = one(docs, "Secret")
    key_ref = next(e for e in server["env"] if e["name"] == "VLLM_API_KEY")["valueFrom"]
    assert secret["metadata"]["name"] == key_ref["secretKeyRef"]["name"] == "r1forge-cpu-api-key"
    assert set(secret["data"]) == {"token"}
    # cpu mode turns dtype auto into cpu.dtype (bfloat16), never float16.
    docs = render(helm, tool_env, "cpu-values", sets=("vllm.dtype=auto",))
    args = container(pod_spec(docs), "vllm")["args"]
    assert args[args.index("--dtype") + 1] == "bfloat16"


def test_hpa_autoscaling(helm: Path, tool_env: dict[str, str]) -> None:
    docs = render(helm, tool_env, "autoscaling-values")
    assert "replicas" not in one(docs, "Deployment")["spec"]  # the HPA owns the count
    assert "ScaledObject" not in kinds(docs)
    hpa = one(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (1, 6)
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "vllm_num_requests_waiting"
    assert metric["pods"]["target"] == {"type": "AverageValue", "averageValue": "4"}
    # The external variant selects the model's series.
    docs = render(
        helm, tool_env, "autoscaling-values", sets=("autoscaling.hpa.metricType=External",)
    )
    (metric,) = one(docs, "HorizontalPodAutoscaler")["spec"]["metrics"]
    assert metric["external"]["metric"]["selector"]["matchLabels"] == {"model_name": "r1forge-tiny"}


def test_keda_autoscaling(helm: Path, tool_env: dict[str, str]) -> None:
    docs = render(helm, tool_env, "keda-values")
    assert "HorizontalPodAutoscaler" not in kinds(docs)
    assert "replicas" not in one(docs, "Deployment")["spec"]
    scaled = one(docs, "ScaledObject")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    assert scaled["spec"]["scaleTargetRef"]["name"] == one(docs, "Deployment")["metadata"]["name"]
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "prometheus"
    meta = trigger["metadata"]
    assert meta["query"] == 'sum(vllm:num_requests_waiting{model_name="r1forge-tiny"})'
    assert meta["threshold"] == "8"
    assert meta["serverAddress"] == "http://prometheus-operated.monitoring.svc:9090"
    # dvc:// uri: no PVC involved.
    spec = pod_spec(docs)
    assert "model-store" not in {v["name"] for v in spec["volumes"]}


def test_ingress_gateway_and_network_policy(helm: Path, tool_env: dict[str, str]) -> None:
    docs = render(helm, tool_env, "ingress-netpol-values")
    service = one(docs, "Service")["metadata"]["name"]
    ingress = one(docs, "Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "nginx"
    (rule,) = ingress["spec"]["rules"]
    (path,) = rule["http"]["paths"]
    assert path["path"] == "/v1" and path["pathType"] == "Prefix"
    assert path["backend"]["service"] == {"name": service, "port": {"name": "http"}}
    assert ingress["spec"]["tls"][0]["secretName"] == "r1forge-example-tls"

    route = one(docs, "HTTPRoute")
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [
        {"name": "shared-gateway", "namespace": "gateway-system"}
    ]
    (rrule,) = route["spec"]["rules"]
    assert rrule["backendRefs"] == [{"name": service, "port": 8000}]
    assert rrule["matches"][0]["path"] == {"type": "PathPrefix", "value": "/v1"}

    policies = {p["metadata"]["name"]: p for p in docs if p["kind"] == "NetworkPolicy"}
    server_policy = next(
        p for p in policies.values() if p["spec"]["podSelector"]["matchLabels"] == SERVER_LABELS
    )
    spec = server_policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    (ingress_rule,) = spec["ingress"]
    assert ingress_rule["ports"] == [{"port": "http", "protocol": "TCP"}]
    peers = ingress_rule["from"]
    assert {"podSelector": {}} not in peers  # allowSameNamespace: false
    allowed = [p["namespaceSelector"] for p in peers if "namespaceSelector" in p]
    assert {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}} in allowed
    listed = next(s for s in allowed if "matchExpressions" in s)["matchExpressions"][0]
    assert listed["values"] == ["ingress-nginx", "gateway-system"]
    assert any(
        p.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "test"
        for p in peers
    )
    egress_ports = [port["port"] for rule in spec["egress"] for port in rule["ports"]]
    assert sorted(egress_ports) == [53, 53, 443]
    # The helm test pod gets a policy of its own: egress to the server and DNS only.
    test_policy = next(p for p in policies.values() if p is not server_policy)
    assert test_policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == (
        "test"
    )
    assert "ingress" not in test_policy["spec"]
    assert test_policy["spec"]["egress"][0]["to"][0]["podSelector"]["matchLabels"] == (
        SERVER_LABELS
    )
    # Off when disabled, as are Ingress and HTTPRoute by default.
    docs = render(helm, tool_env, "gpu-values", sets=("networkPolicy.enabled=false",))
    assert {"NetworkPolicy", "Ingress", "HTTPRoute"}.isdisjoint(kinds(docs))


# --- the schema rejects bad values ---------------------------------------------------------

BAD_VALUES = {
    "missing-uri": (("model.uri=null",), "/model"),
    "empty-uri": (("model.uri=",), "/model/uri"),
    "unknown-scheme": (("model.uri=http://example.com/m",), "/model/uri"),
    "short-revision": (("model.revision=abc123",), "/model/revision"),
    "upper-hex-revision": (("model.revision=" + "A" * 64,), "/model/revision"),
    "missing-revision": (("model.revision=null",), "/model"),
    "unknown-top-level-key": (("replicas=2",), "'replicas'"),
    "unknown-model-key": (("model.sha=abc",), "'sha'"),
    "negative-replicas": (("replicaCount=-1",), "/replicaCount"),
    "bad-dtype": (("vllm.dtype=fp8",), "/vllm/dtype"),
    "float16-on-cpu": (("mode=cpu", "vllm.dtype=float16"), "/vllm/dtype"),
    "bad-mode": (("mode=tpu",), "/mode"),
    "zero-gpus": (("gpu.count=0",), "/gpu/count"),
    "latest-tag": (("image.tag=latest",), "/image/tag"),
    "string-max-model-len": (("vllm.maxModelLen=long",), "/vllm/maxModelLen"),
    "created-key-without-value": (("apiKey.create=true",), "/apiKey/value"),
}


@pytest.mark.parametrize("case", sorted(BAD_VALUES))
def test_schema_rejects_bad_values(helm: Path, tool_env: dict[str, str], case: str) -> None:
    sets, field = BAD_VALUES[case]
    cmd = [helm, "template", RELEASE, CHART, "--namespace", NAMESPACE]
    proc = run([*cmd, *values_args("gpu-values", sets=sets)], tool_env, check=False)
    assert proc.returncode != 0, f"{case}: rendered\n{proc.stdout[:500]}"
    assert field in proc.stderr, proc.stderr
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr


def test_hpa_cannot_scale_to_zero(helm: Path, tool_env: dict[str, str]) -> None:
    cmd = [helm, "template", RELEASE, CHART, "--namespace", NAMESPACE]
    sets = ("autoscaling.minReplicas=0",)
    proc = run([*cmd, *values_args("autoscaling-values", sets=sets)], tool_env, check=False)
    assert proc.returncode != 0 and "minReplicas" in proc.stderr
    # KEDA may scale to zero.
    docs = render(helm, tool_env, "keda-values", sets=sets)
    assert one(docs, "ScaledObject")["spec"]["minReplicaCount"] == 0


# --- helm install --dry-run=client, with no cluster ----------------------------------------


def test_install_dry_run_client_needs_no_cluster(helm: Path, tool_env: dict[str, str]) -> None:
    assert not Path(tool_env["KUBECONFIG"]).exists()
    cmd = [helm, "install", RELEASE, CHART, "--dry-run=client", "--namespace", NAMESPACE]
    out = run([*cmd, *values_args("ingress-netpol-values")], tool_env).stdout
    assert "STATUS: pending-install" in out
    hooks, _, rest = out.partition("HOOKS:")[2].partition("MANIFEST:")
    manifest, _, notes = rest.partition("NOTES:")
    assert "helm.sh/hook: test" in hooks and "/v1/models" in hooks
    docs = docs_of(manifest)
    assert {"Deployment", "Service", "Ingress", "HTTPRoute", "NetworkPolicy"} <= set(kinds(docs))
    assert "--reasoning-parser" in manifest
    assert f"helm test {RELEASE} -n {NAMESPACE}" in notes


# --- checkov -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def checkov() -> Path:
    return find_tool("checkov", ROOT / ".venv-checkov" / "bin" / "checkov")


def checkov_scan(
    checkov: Path, env: dict[str, str], *extra: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scan the chart as documented (.checkov.yaml in the chart is read by checkov itself)."""
    cmd = [checkov, "-d", "helm/r1forge-serving", "--framework", "helm", "--skip-download"]
    proc = run([*cmd, "-o", "json", *extra], env, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    reports = report if isinstance(report, list) else [report]
    helm_reports = [r for r in reports if r.get("check_type") == "helm"]
    assert len(helm_reports) == 1, f"checkov scanned nothing (is helm on PATH?): {report}"
    (helm_report,) = helm_reports
    return helm_report["summary"], helm_report["results"]


def assert_clean_scan(summary: dict[str, Any], results: dict[str, Any], resources: set[str]):
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert summary["failed"] == 0 and not failed, failed
    # It really scanned the chart: checks ran on the chart's own resources.
    assert summary["passed"] + summary["failed"] > 50, summary
    assert summary["resource_count"] >= len(resources), summary
    scanned = {
        c["resource"].split(".", 1)[0] + "." + c["resource"].rsplit(".", 1)[-1]
        for c in results["passed_checks"]
    }
    assert resources <= scanned, scanned
    assert any("templates/deployment.yaml" in c["file_path"] for c in results["passed_checks"])
    # The only in-place skips are the annotated ones on the helm test pod, each with a reason.
    for check in results["skipped_checks"]:
        assert check["check_id"] in {"CKV_K8S_8", "CKV_K8S_9"}, check["check_id"]
        assert check["resource"].endswith("-test-models")
        assert check["check_result"]["suppress_comment"], check


def test_checkov_skips_are_documented() -> None:
    config_text = (CHART / ".checkov.yaml").read_text()
    config = yaml.safe_load(config_text)
    skips = config["skip-check"]
    assert skips and all(re.match(r"^CKV2?_K8S_\d+$", s) for s in skips)
    lines = config_text.splitlines()
    for check_id in skips:
        at = lines.index(f"  - {check_id}")
        comment = []
        for line in reversed(lines[:at]):
            if not line.lstrip().startswith("#"):
                break
            comment.append(line)
        reason = " ".join(comment)
        assert check_id in reason and len(reason) > 80, f"{check_id} has no reason: {reason!r}"


def test_checkov_default_scan(checkov: Path, tool_env: dict[str, str]) -> None:
    """The documented command, configured by the chart's .checkov.yaml (all features on)."""
    summary, results = checkov_scan(checkov, tool_env)
    assert_clean_scan(
        summary,
        results,
        {
            "Deployment.release-name-r1forge-serving",
            "Pod.release-name-r1forge-serving-test-models",
            "Ingress.release-name-r1forge-serving",
            "ServiceAccount.release-name-r1forge-serving",
        },
    )


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_checkov_value_set(checkov: Path, tool_env: dict[str, str], value_set: str) -> None:
    var_file = f"helm/r1forge-serving/ci/{value_set}.yaml"
    summary, results = checkov_scan(checkov, tool_env, "--var-file", var_file)
    assert_clean_scan(
        summary,
        results,
        {
            "Deployment.release-name-r1forge-serving",
            "Pod.release-name-r1forge-serving-test-models",
        },
    )
