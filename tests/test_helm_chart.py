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
    "digest-values",
]
SERVER_LABELS = {
    "app.kubernetes.io/name": "r1forge-serving",
    "app.kubernetes.io/instance": RELEASE,
    "app.kubernetes.io/component": "server",
}
HEX64 = re.compile(r"^[0-9a-f]{64}$")
DIGEST = "sha256:" + "ab" * 32
API_KEY_DIR = "/var/run/secrets/r1forge/api-key"
CREDENTIALS_DIR = "/var/run/secrets/r1forge/model-credentials"
# The server pod's DNS egress rule (kube-dns in kube-system).
DNS_RULE = {
    "to": [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        }
    ],
    "ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}],
}


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
    # Pinned by tag by default; a digest is an option (image.digest, fetch.image.digest).
    assert defaults["image"]["digest"] == ""
    assert defaults["fetch"]["image"] == {"repository": "", "tag": "", "digest": ""}
    # A high uid, not the image's 1000 (checkov CKV_K8S_40).
    for ctx in (defaults["podSecurityContext"], defaults["securityContext"]):
        assert ctx["runAsNonRoot"] is True and ctx["runAsUser"] >= 10000
    # Model-fetch egress follows model.uri by default.
    assert defaults["networkPolicy"]["egress"]["modelFetch"]["enabled"] == "auto"


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
    digest = ci_values(value_set)["image"].get("digest")
    pinned = f"@{digest}" if digest else ":0.1.0"
    assert set(re.findall(r"image: (\S+)", rendered)) == {f"ghcr.io/r1forge/r1forge-serve{pinned}"}

    deploy = one(docs, "Deployment")
    assert deploy["spec"]["selector"]["matchLabels"] == SERVER_LABELS
    spec = pod_spec(docs)
    # No container takes a secret as an environment variable (checkov CKV_K8S_35).
    for pod in (spec, one(docs, "Pod")["spec"]):
        for ctr in pod.get("initContainers", []) + pod["containers"]:
            assert "envFrom" not in ctr, ctr["name"]
            assert not [e for e in ctr["env"] if "valueFrom" in e], ctr["name"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    psc = spec["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 10001
    assert psc["runAsGroup"] == psc["fsGroup"] == 10001
    assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
    for ctr in spec["initContainers"] + spec["containers"]:
        sc = ctr["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True and sc["capabilities"] == {"drop": ["ALL"]}
        assert sc["runAsUser"] == 10001
        assert ctr["resources"]["requests"] and ctr["resources"]["limits"]

    # The init container fetches and verifies the promoted model into the shared emptyDir.
    fetch = container(spec, "fetch-model", init=True)
    assert fetch["command"][:2] == ["/bin/sh", "-c"] and fetch["command"][3] == "fetch-model"
    assert fetch["command"][2].rstrip().endswith('exec python3 -m r1forge.serving.fetch "$@"')
    expected = ["--uri", model["uri"], "--sha256", model["revision"]]
    expected += ["--dest", f"/models/{model['name']}"]
    assert fetch["args"][: len(expected)] == expected
    assert fetch["image"] == container(spec, "vllm")["image"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    fetch_env = {e["name"]: e.get("value") for e in fetch["env"]}
    fetch_mounts = {m["name"]: m for m in fetch["volumeMounts"]}
    if model["credentialsSecret"]:
        # Mounted as files (the wrapper exports them to the fetcher), never env in the spec.
        assert volumes["model-credentials"]["secret"]["secretName"] == model["credentialsSecret"]
        assert fetch_mounts["model-credentials"]["mountPath"] == CREDENTIALS_DIR
        assert fetch_mounts["model-credentials"]["readOnly"] is True
        assert fetch_env["R1FORGE_CREDENTIALS_DIR"] == CREDENTIALS_DIR
    else:
        assert "model-credentials" not in volumes and "model-credentials" not in fetch_mounts
        assert "R1FORGE_CREDENTIALS_DIR" not in fetch_env
    assert "emptyDir" in volumes["models"] and volumes["models"]["emptyDir"]["sizeLimit"]
    assert volumes["shm"]["emptyDir"]["medium"] == "Memory"
    assert {"tmp", "cache"} <= set(volumes)

    # The vLLM server: reasoning parser, served name, probes on /health, key from a Secret.
    server = container(spec, "vllm")
    assert server["command"][:2] == ["/bin/sh", "-c"] and server["command"][3] == "vllm"
    script = server["command"][2]
    assert script.rstrip().endswith('exec python3 -m vllm.entrypoints.openai.api_server "$@"')
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
    # The key: a Secret mounted as a file (owner and group read only), read by the wrapper.
    assert "VLLM_API_KEY" not in env
    assert env["R1FORGE_API_KEY_FILE"]["value"] == f"{API_KEY_DIR}/api-key"
    key_volume = volumes["api-key"]["secret"]
    (item,) = key_volume["items"]
    key_ref = {"name": key_volume["secretName"], "key": item["key"]}
    assert key_ref["name"] and key_ref["key"] and item["path"] == "api-key"
    assert key_volume["defaultMode"] == 0o440
    mounts = {m["mountPath"]: m for m in server["volumeMounts"]}
    assert {"/models", "/dev/shm", "/tmp", "/cache", API_KEY_DIR} <= set(mounts)
    assert mounts[API_KEY_DIR]["readOnly"] is True and mounts[API_KEY_DIR]["name"] == "api-key"
    assert "api-key" not in {m["name"] for m in fetch["volumeMounts"]}  # the fetcher never sees it
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
    key_volume = next(v for v in spec["volumes"] if v["name"] == "api-key")["secret"]
    assert secret["metadata"]["name"] == key_volume["secretName"] == "r1forge-cpu-api-key"
    assert set(secret["data"]) == {"token"} and key_volume["items"][0]["key"] == "token"
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


# --- NetworkPolicy egress: the model fetch only, and only for a remote model ----------------


def fetch_rule(cidrs: list[str], ports: list[int]) -> dict[str, Any]:
    return {
        "to": [{"ipBlock": {"cidr": c}} for c in cidrs],
        "ports": [{"port": p, "protocol": "TCP"} for p in ports],
    }


def server_egress(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    (policy,) = [
        d
        for d in docs
        if d["kind"] == "NetworkPolicy" and d["spec"]["podSelector"]["matchLabels"] == SERVER_LABELS
    ]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    return policy["spec"]["egress"]


OPEN_443 = [DNS_RULE, fetch_rule(["0.0.0.0/0"], [443])]
FILE_URI = "model.uri=file:///mnt/registry/r1forge-tiny/7"
# (value set, --set overrides) -> the server pod's egress rules, in order.
EGRESS_CASES: dict[str, tuple[str, tuple[str, ...], list[dict[str, Any]]]] = {
    # auto (the default): remote model.uri -> DNS + 443 for the fetch.
    "s3": ("gpu-values", (), OPEN_443),
    "gs": ("autoscaling-values", (), OPEN_443),
    "dvc": ("keda-values", (), OPEN_443),
    # auto: a local model (pvc://, file:///) -> DNS only, nothing for the vLLM container.
    "pvc": ("cpu-values", (), [DNS_RULE]),
    "pvc-digest": ("digest-values", (), [DNS_RULE]),
    "file": ("gpu-values", (FILE_URI,), [DNS_RULE]),
    # Forced either way, and narrowed.
    "pvc-forced-open": (
        "cpu-values",
        ("networkPolicy.egress.modelFetch.enabled=true",),
        OPEN_443,
    ),
    "s3-forced-closed": (
        "gpu-values",
        ("networkPolicy.egress.modelFetch.enabled=false",),
        [DNS_RULE],
    ),
    "s3-narrowed": (
        "gpu-values",
        (
            "networkPolicy.egress.modelFetch.cidrs={52.92.0.0/16,3.5.0.0/19}",
            "networkPolicy.egress.modelFetch.ports={443,8443}",
        ),
        [DNS_RULE, fetch_rule(["52.92.0.0/16", "3.5.0.0/19"], [443, 8443])],
    ),
    "s3-no-dns": ("gpu-values", ("networkPolicy.egress.dns=false",), [OPEN_443[1]]),
    # No DNS and a local model: no egress at all (an empty list, not a missing one).
    "pvc-no-dns": ("cpu-values", ("networkPolicy.egress.dns=false",), []),
}


@pytest.mark.parametrize("case", sorted(EGRESS_CASES))
def test_network_policy_egress(helm: Path, tool_env: dict[str, str], case: str) -> None:
    value_set, sets, expected = EGRESS_CASES[case]
    docs = render(helm, tool_env, value_set, sets=sets)
    assert server_egress(docs) == expected
    # The helm test pod's policy never gets the fetch rule.
    test_policy = next(
        d for d in docs if d["kind"] == "NetworkPolicy" and d["metadata"]["name"].endswith("-test")
    )
    for rule in test_policy["spec"]["egress"]:
        assert all("ipBlock" not in peer for peer in rule["to"])
    # NOTES tell which egress the pod got.
    cmd = [helm, "install", RELEASE, CHART, "--dry-run=client", "--namespace", NAMESPACE]
    notes = run([*cmd, *values_args(value_set, sets=sets)], tool_env).stdout.partition("NOTES:")[2]
    line = " ".join(notes.split("Egress of the server pod", 1)[1].split())
    opened = any("ipBlock" in peer for rule in expected for peer in rule["to"])
    assert ("for the model fetch" in line) is opened, line
    assert ("no egress for the fetch" in line) is (not opened), line


# --- images pinned by digest (an option; the default is the tag) ---------------------------


def all_images(docs: list[dict[str, Any]]) -> dict[str, str]:
    spec, test_pod = pod_spec(docs), one(docs, "Pod")["spec"]
    images = {c["name"]: c["image"] for c in spec["initContainers"] + spec["containers"]}
    return {**images, "test": test_pod["containers"][0]["image"]}


def skip_annotations(doc: dict[str, Any]) -> dict[str, str]:
    annotations = doc["metadata"].get("annotations", {})
    return {k: v for k, v in annotations.items() if k.startswith("checkov.io/skip")}


def test_images_by_tag_or_digest(helm: Path, tool_env: dict[str, str]) -> None:
    repo = "ghcr.io/r1forge/r1forge-serve"
    # Default: the tag, and the CKV_K8S_43 skip (with its reason) on the Deployment and test Pod.
    docs = render(helm, tool_env, "gpu-values")
    assert set(all_images(docs).values()) == {f"{repo}:0.1.0"}
    for doc in (one(docs, "Deployment"), one(docs, "Pod")):
        skips = skip_annotations(doc).values()
        assert any(s.startswith("CKV_K8S_43=pinned by tag") for s in skips), doc["kind"]
    # image.digest: repository@digest everywhere (init container and test pod too), no skip.
    docs = render(helm, tool_env, "gpu-values", sets=(f"image.digest={DIGEST}",))
    assert set(all_images(docs).values()) == {f"{repo}@{DIGEST}"}
    assert skip_annotations(one(docs, "Deployment")) == {}
    assert "CKV_K8S_43" not in " ".join(skip_annotations(one(docs, "Pod")).values())
    # fetch.image: an image of its own for the init container, by digest or by tag.
    other = "ghcr.io/r1forge/r1forge-fetch"
    fetch_digest = "sha256:" + "cd" * 32
    sets = (f"image.digest={DIGEST}", f"fetch.image.repository={other}")
    docs = render(helm, tool_env, "gpu-values", sets=(*sets, f"fetch.image.digest={fetch_digest}"))
    images = all_images(docs)
    assert images["fetch-model"] == f"{other}@{fetch_digest}"
    assert images["vllm"] == images["test"] == f"{repo}@{DIGEST}"
    assert skip_annotations(one(docs, "Deployment")) == {}
    docs = render(helm, tool_env, "gpu-values", sets=(*sets, "fetch.image.tag=2.0.1"))
    assert all_images(docs)["fetch-model"] == f"{other}:2.0.1"
    # A tag-pinned init container brings the Deployment's skip back; the test pod keeps none.
    assert "CKV_K8S_43" in " ".join(skip_annotations(one(docs, "Deployment")).values())
    assert "CKV_K8S_43" not in " ".join(skip_annotations(one(docs, "Pod")).values())


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (("fetch.image.tag=1.0",), "fetch.image.tag and fetch.image.digest need"),
        ((f"fetch.image.digest={DIGEST}",), "fetch.image.tag and fetch.image.digest need"),
        (("fetch.image.repository=ghcr.io/x/fetch",), "needs fetch.image.tag or"),
    ],
)
def test_fetch_image_must_be_pinned(
    helm: Path, tool_env: dict[str, str], sets: tuple[str, ...], message: str
) -> None:
    cmd = [helm, "template", RELEASE, CHART, "--namespace", NAMESPACE]
    proc = run([*cmd, *values_args("gpu-values", sets=sets)], tool_env, check=False)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr


# --- the wrappers that read secrets from files ---------------------------------------------


def run_wrapper(
    ctr: dict[str, Any], tmp_path: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None]:
    """Run a container's rendered `/bin/sh -c SCRIPT NAME ARGS` with a python3 stand-in that
    records its argv and environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "record.json"
    record.unlink(missing_ok=True)
    fake = bin_dir / "python3"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, sys\n"
        f"json.dump({{'argv': sys.argv[1:], 'env': dict(os.environ)}}, open({str(record)!r}, 'w'))\n"
    )
    fake.chmod(0o755)
    base = {"PATH": f"{bin_dir}{os.pathsep}/usr/bin:/bin"}
    proc = subprocess.run(
        [*ctr["command"], *ctr["args"]],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
    )
    return proc, (json.loads(record.read_text()) if record.exists() else None)


def test_server_wrapper_exports_the_key_file_to_vllm_only(
    helm: Path, tool_env: dict[str, str], tmp_path: Path
) -> None:
    server = container(pod_spec(render(helm, tool_env, "gpu-values")), "vllm")
    assert server["command"][0] == "/bin/sh"
    key_file = tmp_path / "api-key"
    key_file.write_text("s3cret-key\n")
    proc, record = run_wrapper(server, tmp_path, {"R1FORGE_API_KEY_FILE": str(key_file)})
    assert proc.returncode == 0, proc.stderr
    assert record is not None
    assert record["argv"][:2] == ["-m", "vllm.entrypoints.openai.api_server"]
    assert record["argv"][2:] == server["args"]  # the args arrive unchanged
    assert record["env"]["VLLM_API_KEY"] == "s3cret-key"
    # An empty key (vLLM would serve /v1 without auth) or a missing file stops the container.
    key_file.write_text("")
    proc, record = run_wrapper(server, tmp_path, {"R1FORGE_API_KEY_FILE": str(key_file)})
    assert proc.returncode != 0 and record is None and "is empty" in proc.stderr
    missing = str(tmp_path / "no-such-key")
    proc, record = run_wrapper(server, tmp_path, {"R1FORGE_API_KEY_FILE": missing})
    assert proc.returncode != 0 and record is None


def test_fetch_wrapper_exports_credentials_files_like_env_from(
    helm: Path, tool_env: dict[str, str], tmp_path: Path
) -> None:
    fetch = container(pod_spec(render(helm, tool_env, "gpu-values")), "fetch-model", init=True)
    creds = tmp_path / "creds"
    # What a mounted Secret looks like: entries are links into a hidden ..data folder.
    data = creds / "..2026_12_02_00_00_00.000000001"
    data.mkdir(parents=True)
    (creds / "..data").symlink_to(data.name)
    entries = {
        "AWS_ACCESS_KEY_ID": "AKIAEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "with spaces, 'quotes' and $(not run)",
        "AWS_REGION": "from-the-secret",
        "gcs-key.json": "{}",
        "1BAD": "x",
    }
    for name, value in entries.items():
        (data / name).write_text(value)
        (creds / name).symlink_to(f"..data/{name}")
    env = {"R1FORGE_CREDENTIALS_DIR": str(creds), "AWS_REGION": "from-env"}
    proc, record = run_wrapper(fetch, tmp_path, env)
    assert proc.returncode == 0, proc.stderr
    assert record is not None
    assert record["argv"][:2] == ["-m", "r1forge.serving.fetch"]
    assert record["argv"][2:] == fetch["args"]
    got = record["env"]
    assert got["AWS_ACCESS_KEY_ID"] == "AKIAEXAMPLE"
    assert got["AWS_SECRET_ACCESS_KEY"] == entries["AWS_SECRET_ACCESS_KEY"]
    assert got["AWS_REGION"] == "from-env"  # as with envFrom, an explicit env var wins
    assert "1BAD" not in got and not any("json" in k or k.startswith("..") for k in got)
    # No credentials Secret: the fetcher just runs.
    proc, record = run_wrapper(fetch, tmp_path, {})
    assert proc.returncode == 0 and record is not None, proc.stderr
    assert not any(k.startswith("AWS_") for k in record["env"])
    # An empty mounted folder is fine too.
    empty = tmp_path / "empty"
    empty.mkdir()
    proc, record = run_wrapper(fetch, tmp_path, {"R1FORGE_CREDENTIALS_DIR": str(empty)})
    assert proc.returncode == 0 and record is not None, proc.stderr


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
    "short-digest": (("image.digest=sha256:abc123",), "/image/digest"),
    "digest-without-algorithm": (("image.digest=" + "a" * 64,), "/image/digest"),
    "upper-hex-digest": (("image.digest=sha256:" + "A" * 64,), "/image/digest"),
    "bad-fetch-digest": (("fetch.image.digest=sha512:abc",), "/fetch/image/digest"),
    "latest-fetch-tag": (("fetch.image.tag=latest",), "/fetch/image/tag"),
    "unknown-fetch-image-key": (("fetch.image.name=x",), "'name'"),
    "bad-model-fetch-egress": (
        ("networkPolicy.egress.modelFetch.enabled=yes",),
        "/networkPolicy/egress/modelFetch/enabled",
    ),
    "old-object-storage-key": (
        ("networkPolicy.egress.objectStorage.ports={443}",),
        "objectStorage",
    ),
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

DEPLOYMENT = "Deployment.release-name-r1forge-serving"
TEST_POD = "Pod.release-name-r1forge-serving-test-models"
# The only skips the chart has, as annotations on the objects they concern (no chart-wide
# skip): the helm test pod runs to completion (no probes), and images pinned by tag.
PROBE_SKIPS = {("CKV_K8S_8", TEST_POD), ("CKV_K8S_9", TEST_POD)}
DIGEST_SKIPS = {("CKV_K8S_43", DEPLOYMENT), ("CKV_K8S_43", TEST_POD)}


@pytest.fixture(scope="session")
def checkov() -> Path:
    return find_tool("checkov", ROOT / ".venv-checkov" / "bin" / "checkov")


def checkov_scan(
    checkov: Path, env: dict[str, str], *extra: str, namespace: str | None = NAMESPACE
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Scan the chart as documented: `HELM_NAMESPACE=<ns> checkov -d helm/r1forge-serving
    --framework helm --skip-download [--var-file ...]` (.checkov.yaml in the chart is read by
    checkov itself). checkov's helm runner renders with no --namespace; helm takes it from
    HELM_NAMESPACE, as `helm install -n` gives it."""
    env = {k: v for k, v in env.items() if k != "HELM_NAMESPACE"}
    if namespace:
        env["HELM_NAMESPACE"] = namespace
    cmd = [checkov, "-d", "helm/r1forge-serving", "--framework", "helm", "--skip-download"]
    proc = run([*cmd, "-o", "json", *extra], env, check=False)
    report = json.loads(proc.stdout) if proc.stdout.strip() else {}
    reports = report if isinstance(report, list) else [report]
    helm_reports = [r for r in reports if r.get("check_type") == "helm"]
    assert len(helm_reports) == 1, f"checkov scanned nothing (is helm on PATH?): {proc.stderr}"
    (helm_report,) = helm_reports
    summary = helm_report["summary"]
    assert proc.returncode == (1 if summary["failed"] else 0), proc.stderr[-3000:]
    return summary, helm_report["results"]


def short(resource: str) -> str:
    """Kind.namespace.name -> Kind.name."""
    kind, _, name = resource.split(".", 2)
    return f"{kind}.{name}"


def readme_skips() -> dict[str, str]:
    """The skip table of the chart README: check id -> reason."""
    text = (CHART / "README.md").read_text()
    section = text.split("### checkov skips", 1)[1].split("\n#", 1)[0]
    rows = re.findall(r"^\| `(CKV2?_K8S_\d+)` \|([^\n]+)$", section, re.M)
    return {check_id: rest for check_id, rest in rows}


def assert_clean_scan(
    summary: dict[str, Any], results: dict[str, Any], resources: set[str], digests: bool = False
) -> None:
    failed = [(c["check_id"], c["resource"]) for c in results["failed_checks"]]
    assert summary["failed"] == 0 and not failed, failed
    # It really scanned the chart: checks ran on the chart's own resources.
    assert summary["passed"] + summary["failed"] > 50, summary
    assert summary["resource_count"] >= len(resources), summary
    passed = results["passed_checks"]
    assert resources <= {short(c["resource"]) for c in passed}, passed
    assert any("templates/deployment.yaml" in c["file_path"] for c in passed)
    # Rendered into the release's namespace (not `default`): every resource id carries it.
    for check in passed + results["skipped_checks"]:
        assert check["resource"].split(".")[1] == NAMESPACE, check["resource"]
    # What the chart fixed passes, on the server and on the test pod: namespace (CKV_K8S_21),
    # secrets as files (CKV_K8S_35), high uid (CKV_K8S_40); image digest (CKV_K8S_43) with one.
    passed_on = {(c["check_id"], short(c["resource"])) for c in passed}
    fixed = ["CKV_K8S_21", "CKV_K8S_35", "CKV_K8S_40"] + (["CKV_K8S_43"] if digests else [])
    for check_id in fixed:
        assert {(check_id, DEPLOYMENT), (check_id, TEST_POD)} <= passed_on, check_id
    # Skips: exactly the documented ones, each with its reason (also in the README table).
    skipped = results["skipped_checks"]
    in_use = {(c["check_id"], short(c["resource"])) for c in skipped}
    assert in_use == PROBE_SKIPS | (set() if digests else DIGEST_SKIPS), in_use
    documented = readme_skips()
    for check in skipped:
        reason = check["check_result"].get("suppress_comment", "")
        assert len(reason) > 30 and reason != "No comment provided", check
        assert check["check_id"] in documented, check["check_id"]


def template_skips() -> dict[str, set[str]]:
    """Skip annotations written in the chart's templates: check id -> reasons."""
    found: dict[str, set[str]] = {}
    for path in (CHART / "templates").rglob("*"):
        if path.suffix in (".yaml", ".tpl"):
            for check_id, reason in re.findall(r"(CKV2?_K8S_\d+)=([^\"\n]*)", path.read_text()):
                found.setdefault(check_id, set()).add(reason.strip())
    return found


def test_checkov_skips_are_documented() -> None:
    config = yaml.safe_load((CHART / ".checkov.yaml").read_text())
    assert config["framework"] == ["helm"] and config["skip-download"] is True
    # No chart-wide skip, and the documented command scans the default render.
    assert not config.get("skip-check") and not config.get("var-file"), config
    skips = template_skips()
    assert set(skips) == {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_43"}, skips
    for check_id, reasons in skips.items():
        assert all(len(r) > 30 and "=" not in r for r in reasons), (check_id, reasons)
    # The README lists each skip with its reason, and nothing else.
    documented = readme_skips()
    assert set(documented) == set(skips), documented
    assert all(len(reason) > 60 for reason in documented.values()), documented


def test_checkov_default_scan(checkov: Path, tool_env: dict[str, str]) -> None:
    """The documented command on the default values (values.yaml)."""
    summary, results = checkov_scan(checkov, tool_env)
    resources = {DEPLOYMENT, TEST_POD, "Service.release-name-r1forge-serving"}
    assert_clean_scan(summary, results, {*resources, "ServiceAccount.release-name-r1forge-serving"})


def test_checkov_without_a_namespace_sees_the_default_namespace(
    checkov: Path, tool_env: dict[str, str]
) -> None:
    """Without HELM_NAMESPACE the objects render into `default`: CKV_K8S_21 fails, and only it."""
    summary, results = checkov_scan(checkov, tool_env, namespace=None)
    failed = {(c["check_id"], short(c["resource"])) for c in results["failed_checks"]}
    assert {check_id for check_id, _ in failed} == {"CKV_K8S_21"}, failed
    assert summary["failed"] == len(failed)
    assert {("CKV_K8S_21", DEPLOYMENT), ("CKV_K8S_21", TEST_POD)} <= failed


@pytest.mark.parametrize("value_set", VALUE_SETS)
def test_checkov_value_set(checkov: Path, tool_env: dict[str, str], value_set: str) -> None:
    var_file = f"helm/r1forge-serving/ci/{value_set}.yaml"
    summary, results = checkov_scan(checkov, tool_env, "--var-file", var_file)
    resources = {DEPLOYMENT, TEST_POD}
    if value_set == "ingress-netpol-values":
        resources.add("Ingress.release-name-r1forge-serving")
    api_key = ci_values(value_set).get("apiKey", {})
    if api_key.get("create"):
        resources.add(f"Secret.{api_key['secretName']}")
    digests = bool(ci_values(value_set)["image"].get("digest"))
    assert_clean_scan(summary, results, resources, digests=digests)


def test_checkov_with_a_fetch_image_of_its_own(
    checkov: Path, tool_env: dict[str, str], tmp_path: Path
) -> None:
    """fetch.image pinned by digest: no skip of CKV_K8S_43 either."""
    values = ci_values("digest-values")
    values["fetch"] = {
        "image": {"repository": "ghcr.io/r1forge/r1forge-fetch", "digest": "sha256:" + "cd" * 32}
    }
    path = tmp_path / "fetch-digest-values.yaml"
    path.write_text(yaml.safe_dump(values))
    summary, results = checkov_scan(checkov, tool_env, "--var-file", str(path))
    assert_clean_scan(summary, results, {DEPLOYMENT, TEST_POD}, digests=True)
