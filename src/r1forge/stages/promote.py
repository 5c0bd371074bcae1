"""Stage `promote`: the best candidate that passes the gate becomes the champion.

The candidates are evaluated checkpoints (`eval/<name>/metrics.json` beside
`models/<name>`) or distilled students (`distill/<student>`: `models/distill/<student>` and
its `eval/`). Each faces the gate (`r1forge.promotion.gate`) against the
current champion, on the same eval sets: when the champion was measured on other sets, it
is fetched and evaluated again on these. On success, in this order, each step only after
the one before it succeeded:
1. the model folder, with its model card as README.md, is published to
   `<store>/<name>/<version>` and hashed (the entry's `sha256`, which serving verifies);
2. the Helm values and manifests are rendered into the output folder (`values.yaml`,
   `manifests.yaml`, `history/values-v<version>.yaml`) and deployed (`helm template` and
   `install --dry-run=client` locally, `helm upgrade --install` on a cluster), the folder
   swapped in atomically;
3. the registry (`<registry>/models.json`) gains the entry as champion, and
   `<registry>/cards/<name>-v<version>.md` its card.
Every candidate is gated, best pass@1 first, and the best that passes is promoted; each
refused one is listed with its reasons. When none passes, nothing is published or crowned:
`release.json` says so and why, the champion's release and the registry stay as they were.
`rollback` restores the previous champion and re-renders and re-applies its values.
"""

from __future__ import annotations

import datetime
import json
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1forge.config import Recipe, recipe_dict
from r1forge.errors import ConfigError, DataError
from r1forge.io import atomic_dir, folder_sha256, write_json_atomic, write_text_atomic
from r1forge.promotion import GateDecision, gate, model_card, rank_candidates
from r1forge.registry import (
    REGISTRY_FILE,
    champion,
    crown,
    load_registry,
    next_version,
    save_registry,
)
from r1forge.registry import rollback as registry_rollback
from r1forge.stages import StageContext

log = logging.getLogger("r1forge.promote")


@dataclass
class Candidate:
    name: str
    model: Path
    metrics: dict[str, Any]


def candidate_paths(name: str, models: Path, evals: Path) -> tuple[Path, Path]:
    """(model folder, its eval metrics.json) of a candidate named in `promote.candidates`."""
    if name.startswith("distill/"):
        model = models / "distill" / name.removeprefix("distill/")
        return model, model / "eval" / "metrics.json"
    return models / name, evals / name / "metrics.json"


def load_candidates(names: list[str], models: Path, evals: Path) -> list[Candidate]:
    found = []
    for name in names:
        model, metrics = candidate_paths(name, models, evals)
        if not (model / "config.json").is_file():
            raise DataError.single(
                model, f"candidate {name!r}: not a model folder (no config.json)"
            )
        if not metrics.is_file():
            raise DataError.single(metrics, f"candidate {name!r}: not evaluated (no metrics.json)")
        found.append(Candidate(name, model, json.loads(metrics.read_text(encoding="utf-8"))))
    return found


def store_uri(store: str, registry: Path, name: str, version: int) -> str:
    """`<store>/<name>/<version>`; a local store (relative to the registry folder) as an
    absolute file:// URI."""
    if "://" in store:
        return f"{store.rstrip('/')}/{name}/{version}"
    return ((registry / store).resolve() / name / str(version)).as_uri()


def comparable_champion_metrics(
    recipe: Recipe, champ: dict[str, Any], metrics: dict[str, Any], data: Path | None
) -> dict[str, Any]:
    """The champion's metrics on the candidate's eval sets: its own when they match, else
    the champion fetched (by URI, sha256-checked) and evaluated again on those sets."""
    from r1forge.io import sha256_file
    from r1forge.serving.fetch import fetch_model
    from r1forge.stages import evaluate

    if champ["metrics"].get("eval_sets") == metrics.get("eval_sets") or data is None:
        return champ["metrics"]
    files = evaluate.eval_files(recipe.evaluate, data)
    if {f.stem: sha256_file(f) for f in files} != metrics.get("eval_sets"):
        return champ["metrics"]  # not the candidate's sets either: the gate says so
    log.info("champion v%s was measured on other eval sets: evaluating it again", champ["version"])
    with tempfile.TemporaryDirectory() as tmp:
        model = fetch_model(champ["uri"], Path(tmp) / "model", champ["sha256"])
        return evaluate.evaluate_model(recipe, model, files, Path(tmp) / "eval")


def staged_copy(source: Path, folder: Path) -> None:
    """The files a server needs from a model folder (its top level: weights, config,
    tokenizer, chat template, lineage), without run folders such as W&B's or eval samples."""
    folder.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file():
            shutil.copy2(path, folder / path.name)


def deploy(recipe: Recipe, entry: dict[str, Any], output: Path) -> dict[str, Any]:
    """Render the entry's Helm values and release into `output` (atomically) and apply them."""
    from r1forge.serving.helm import apply, release_values

    cfg = recipe.promote
    values = release_values(cfg, entry)
    with atomic_dir(output) as tmp:
        if (output / "history").is_dir():
            shutil.copytree(output / "history", tmp / "history")
        release = apply(cfg, values, tmp)
        history = tmp / "history" / f"values-v{entry['version']}.yaml"
        history.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(tmp / "values.yaml", history)
        write_json_atomic(
            tmp / "release.json",
            {
                **release,
                "deployed": True,
                "name": entry["name"],
                "version": entry["version"],
                "uri": entry["uri"],
            },
        )
    return release


def promote_candidates(
    recipe: Recipe,
    candidates: list[Candidate],
    registry: Path,
    output: Path,
    metrics: Path | None = None,
    data: Path | None = None,
) -> dict[str, Any]:
    """Gate every candidate, best pass@1 first; publish, deploy and crown the best that passes.

    A candidate that fails a gate rule is skipped with its reasons; when none passes nothing
    is promoted, and the outputs still say so: `output/release.json` records that nothing
    was deployed and why (the champion's release stays as it was) and the registry file is
    written unchanged, so a pipeline that declares both as outputs succeeds.
    """
    cfg = recipe.promote
    if not candidates:
        raise ConfigError("promote: no candidates")
    entries = load_registry(registry / REGISTRY_FILE)
    by_name = {c.name: c for c in candidates}
    ranked = rank_candidates({c.name: c.metrics for c in candidates})
    champ = champion(entries, cfg.name)
    yardsticks: dict[str, dict[str, Any]] = {}  # the champion's metrics, by eval sets
    decisions: dict[str, GateDecision] = {}
    for name in ranked:
        found = by_name[name]
        champ_metrics = None
        if champ:
            key = json.dumps(found.metrics.get("eval_sets"), sort_keys=True)
            if key not in yardsticks:
                yardsticks[key] = comparable_champion_metrics(recipe, champ, found.metrics, data)
            champ_metrics = yardsticks[key]
        decisions[name] = gate(name, found.metrics, champ_metrics, cfg)
    chosen = next((name for name in ranked if decisions[name].passed), None)
    table = {
        name: {
            "rank": rank,
            "pass@1": by_name[name].metrics["pass@1"],
            "format_rate": by_name[name].metrics["format_rate"],
            "passed": decisions[name].passed,
            "reasons": decisions[name].reasons,
        }
        for rank, name in enumerate(ranked, 1)
    }
    measured = by_name[chosen].metrics if chosen else None
    yardstick = next(iter(yardsticks.values()), None)
    summary: dict[str, Any] = {
        "promoted": chosen is not None,
        "candidate": chosen,
        "best": ranked[0],
        "name": cfg.name,
        "pass@1": measured["pass@1"] if measured else None,
        "format_rate": measured["format_rate"] if measured else None,
        "candidates": table,
        "champion_version": champ["version"] if champ else None,
        "champion_pass@1": yardstick["pass@1"] if yardstick else None,
        "reasons": []
        if chosen
        else [f"{name}: {'; '.join(decisions[name].reasons)}" for name in ranked],
    }
    if chosen is not None:
        best = by_name[chosen]
        summary.update(
            promote_candidate(recipe, best, decisions[chosen], entries, registry, output)
        )
        log.info("promoted %s as %s v%s", chosen, cfg.name, summary["version"])
    else:
        record_refusal(recipe, summary, champ, entries, registry, output)
        log.warning("no candidate passed the gate: nothing deployed")
    if metrics is not None:
        write_json_atomic(metrics, {"promote": summary})
    return summary


def record_refusal(
    recipe: Recipe,
    summary: dict[str, Any],
    champ: dict[str, Any] | None,
    entries: list[dict[str, Any]],
    registry: Path,
    output: Path,
) -> None:
    """Nothing passed: `output` keeps the champion's release (its values, manifests and
    history; the values rendered when the folder lacks them) and gains a `release.json`
    saying that nothing was deployed and why; the registry is written as it was."""
    from r1forge.serving.helm import release_values

    previous = output / "release.json"
    with atomic_dir(output) as tmp:
        if output.is_dir():
            shutil.copytree(output, tmp, dirs_exist_ok=True)
        if champ is not None and not (tmp / "values.yaml").is_file():
            import yaml

            write_text_atomic(
                tmp / "values.yaml",
                yaml.safe_dump(release_values(recipe.promote, champ), sort_keys=False),
            )
        write_json_atomic(
            tmp / "release.json",
            {
                "deployed": False,
                "action": "none: no candidate passed the gate",
                "reasons": summary["reasons"],
                "champion": (
                    {k: champ[k] for k in ("name", "version", "uri", "sha256")} if champ else None
                ),
                "current_release": (
                    json.loads(previous.read_text(encoding="utf-8")) if previous.is_file() else None
                ),
            },
        )
    save_registry(registry / REGISTRY_FILE, entries)


def promote_candidate(
    recipe: Recipe,
    best: Candidate,
    decision: GateDecision,
    entries: list[dict[str, Any]],
    registry: Path,
    output: Path,
) -> dict[str, Any]:
    """Publish, deploy, then record: the registry changes only once the release is out."""
    from r1forge.serving.fetch import publish_model

    cfg = recipe.promote
    version = next_version(entries, cfg.name)
    meta = json.loads((best.model / "r1forge.json").read_text(encoding="utf-8"))
    entry: dict[str, Any] = {
        "name": cfg.name,
        "version": version,
        "sha256": None,
        "uri": store_uri(cfg.serve_from or cfg.store, registry, cfg.name, version),
        "lineage": meta.get("lineage", {}),
        "metrics": best.metrics,
        "recipe": recipe_dict(recipe),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "champion": True,
        "source": best.name,
        "card": str(registry / "cards" / f"{cfg.name}-v{version}.md"),
    }
    with tempfile.TemporaryDirectory() as tmp:
        staged = Path(tmp) / "model"
        staged_copy(best.model, staged)
        write_text_atomic(staged / "README.md", model_card(entry, decision, cfg))
        entry["sha256"] = folder_sha256(staged)
        publish_model(staged, store_uri(cfg.store, registry, cfg.name, version))
    release = deploy(recipe, entry, output)
    write_text_atomic(entry["card"], model_card(entry, decision, cfg))
    save_registry(registry / REGISTRY_FILE, crown(entries, entry))
    return {"version": version, "uri": entry["uri"], "sha256": entry["sha256"], "release": release}


def rollback(recipe: Recipe, registry: Path, output: Path) -> dict[str, Any]:
    """Restore the previous champion: the registry, then its values re-rendered and re-applied."""
    cfg = recipe.promote
    entries = load_registry(registry / REGISTRY_FILE)
    current = champion(entries, cfg.name)
    updated, restored = registry_rollback(entries, cfg.name)
    release = deploy(recipe, restored, output)
    save_registry(registry / REGISTRY_FILE, updated)
    assert current is not None
    return {
        "name": cfg.name,
        "rolled_back": current["version"],
        "restored": restored["version"],
        "uri": restored["uri"],
        "release": release,
    }


def fetch_champion(recipe: Recipe, registry: Path, cache: Path) -> tuple[Path, str]:
    """(a local copy of the registry's champion, its name): what `r1forge serve` serves by
    default; fetched by URI and sha256-checked, reused when already there."""
    from r1forge.serving.fetch import fetch_model

    cfg = recipe.promote
    entry = champion(load_registry(registry / REGISTRY_FILE), cfg.name)
    if entry is None:
        raise ConfigError(
            f"{registry / REGISTRY_FILE}: no champion named {cfg.name!r}; run r1forge promote"
        )
    folder = cache / f"{entry['name']}-v{entry['version']}"
    return fetch_model(entry["uri"], folder, entry["sha256"]), entry["name"]


def run(ctx: StageContext) -> dict[str, Any]:
    """The command's candidates (`--candidate`, default `promote.candidates`) from the model
    and eval folders; or, as a pipeline task, the one evaluated checkpoint it is given (its
    `results`), with the registry under `registry_root` (the model-cache volume)."""
    cfg = ctx.recipe.promote
    if "results" in ctx.inputs:
        report = json.loads((ctx.inputs["results"] / "metrics.json").read_text(encoding="utf-8"))
        candidates = [Candidate(ctx.options["checkpoint"], ctx.inputs["model"], report)]
        registry = Path(ctx.options["registry_root"]) / cfg.registry
    else:
        names = ctx.options.get("candidates") or cfg.candidates
        candidates = load_candidates(names, ctx.options["models"], ctx.options["evals"])
        registry = ctx.options.get("registry") or Path(cfg.registry)
    data = ctx.inputs.get("data", ctx.options.get("data"))
    return promote_candidates(ctx.recipe, candidates, registry, ctx.output, ctx.metrics, data)


def candidate_table(candidates: dict[str, dict[str, Any]]) -> str:
    """The candidates, best pass@1 first: whether each passed the gate, and why not."""
    lines = [f"{'candidate':<18} {'pass@1':>7} {'format':>7}  gate"]
    for name, row in candidates.items():
        verdict = "passed" if row["passed"] else "refused: " + "; ".join(row["reasons"])
        lines.append(f"{name:<18} {row['pass@1']:>7.3f} {row['format_rate']:>7.3f}  {verdict}")
    return "\n".join(lines)


def kept_champion(summary: dict[str, Any]) -> str:
    version = summary["champion_version"]
    return f"the champion stays v{version}" if version else "there is no champion yet"


def describe(summary: dict[str, Any], ctx: StageContext) -> str:
    table = candidate_table(summary["candidates"])
    if not summary["promoted"]:
        return table
    return (
        f"{table}\npromoted {summary['candidate']} as {summary['name']} v{summary['version']} "
        f"({summary['uri']}, sha256 {summary['sha256'][:12]}); release "
        f"{summary['release']['action']} -> {ctx.output}"
    )


def exit_status(summary: dict[str, Any], ctx: StageContext) -> tuple[int, str | None]:
    """A refusal is exit status 3 unless `--no-fail-on-refusal` (as DVC runs it)."""
    if summary["promoted"]:
        return 0, None
    message = f"no candidate passed the gate: nothing promoted, {kept_champion(summary)}"
    return (3 if ctx.options.get("fail_on_refusal", True) else 0), message
