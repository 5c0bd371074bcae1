"""The promotion gate and the model card: pure functions of metrics, lineage and config.

The gate passes a candidate only if its pass@1 and format rate reach the recipe's minimums
and its pass@1 reaches the champion's plus a margin, measured on the same eval sets (the
eval sets' sha256s must agree, or the comparison means nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from r1forge.config import PromoteConfig


@dataclass
class GateDecision:
    candidate: str
    passed: bool
    reasons: list[str] = field(default_factory=list)
    """Why it was refused (empty when it passed)."""
    checks: dict[str, Any] = field(default_factory=dict)
    """Every comparison made, passed or not, for the record."""


def rank_candidates(candidates: dict[str, dict[str, Any]]) -> list[str]:
    """Candidate names, best first: by pass@1, then cons@k, then the order listed."""
    order = list(candidates)
    return sorted(
        order,
        key=lambda n: (-candidates[n]["pass@1"], -candidates[n].get("cons@k", 0.0), order.index(n)),
    )


def best_candidate(candidates: dict[str, dict[str, Any]]) -> str:
    """The candidate with the highest pass@1 (then cons@k, then the first listed)."""
    return rank_candidates(candidates)[0]


def gate(
    name: str,
    metrics: dict[str, Any],
    champion_metrics: dict[str, Any] | None,
    cfg: PromoteConfig,
) -> GateDecision:
    """Thresholds from the recipe, then the champion (when there is one) by `champion_margin`."""
    decision = GateDecision(candidate=name, passed=True)

    def check(key: str, value: float, needed: float, label: str) -> None:
        ok = value >= needed
        decision.checks[key] = {"value": value, "needed": needed, "passed": ok}
        if not ok:
            decision.reasons.append(f"{label} {value:.4f} is below {needed:.4f}")

    check("pass@1", metrics["pass@1"], cfg.min_pass_at_1, "pass@1")
    check("format_rate", metrics["format_rate"], cfg.min_format_rate, "format rate")
    if champion_metrics is not None:
        if champion_metrics.get("eval_sets") != metrics.get("eval_sets"):
            decision.reasons.append(
                "the champion was measured on other eval sets "
                f"({champion_metrics.get('eval_sets')} vs {metrics.get('eval_sets')})"
            )
        else:
            needed = champion_metrics["pass@1"] + cfg.champion_margin
            check("champion", metrics["pass@1"], needed, "pass@1 vs the champion's (+ margin)")
    decision.passed = not decision.reasons
    return decision


def lineage_chain(lineage: dict[str, Any]) -> list[dict[str, Any]]:
    """The stages a model went through, oldest first (its lineage's parent links, unrolled)."""
    chain = []
    node: dict[str, Any] | None = lineage
    while node:
        chain.append({k: v for k, v in node.items() if k != "parent"})
        node = node.get("parent")
    return chain[::-1]


def _metrics_table(metrics: dict[str, Any]) -> list[str]:
    keys = ("pass@1", "cons@k", "greedy_accuracy", "format_rate", "language_rate", "mean_length")
    rows = {"all": metrics, **{f"task {k}": v for k, v in metrics.get("per_task", {}).items()}}
    rows.update({f"difficulty {k}": v for k, v in metrics.get("per_difficulty", {}).items()})
    lines = ["| slice | prompts | " + " | ".join(keys) + " |", "|---" * (len(keys) + 2) + "|"]
    for label, block in rows.items():
        cells = " | ".join(f"{block.get(k, float('nan')):.3f}" for k in keys)
        lines.append(f"| {label} | {block.get('n_prompts', '')} | {cells} |")
    return lines


def model_card(entry: dict[str, Any], decision: GateDecision, cfg: PromoteConfig) -> str:
    """Markdown: what the model is, its data, stages, metrics, intended use and limits."""
    metrics = entry["metrics"]
    chain = lineage_chain(entry["lineage"])
    lines = [
        f"# {entry['name']} v{entry['version']}",
        "",
        f"A reasoning model trained with r1forge (recipe `{entry['recipe'].get('name', '?')}`), "
        f"promoted from the checkpoint `{entry['source']}` on {entry['created']}.",
        "",
        *([f"- content sha256: `{entry['sha256']}`"] if entry.get("sha256") else []),
        f"- uri: `{entry['uri']}`",
        "- output format: `<think>` reasoning `</think>` then the answer in `\\boxed{}`",
        "",
        "## Data",
        "",
        "| stage | dataset | sha256 |",
        "|---|---|---|",
    ]
    for node in chain:
        for dataset, digest in node.get("datasets", {}).items():
            lines.append(f"| {node.get('stage', '?')} | `{dataset}` | `{digest[:16]}…` |")
    lines += ["", "## Stages", ""]
    for number, node in enumerate(chain, 1):
        lines.append(
            f"{number}. `{node.get('stage', '?')}` from `{node.get('init_model') or node.get('base_model', '?')}`"
            f" (code `{node.get('code_revision', '?')}`)"
        )
    lines += [
        "",
        "## Metrics",
        "",
        f"pass@1 averaged over k={metrics.get('k')} samples per prompt, cons@{metrics.get('k')} "
        "by majority vote, greedy accuracy; eval sets (sha256): "
        + ", ".join(f"`{n}` `{d[:12]}…`" for n, d in metrics.get("eval_sets", {}).items()),
        "",
        *_metrics_table(metrics),
        "",
        "## Promotion gate",
        "",
        f"min pass@1 {cfg.min_pass_at_1}, min format rate {cfg.min_format_rate}, champion margin "
        f"{cfg.champion_margin}: {'passed' if decision.passed else 'refused'}.",
        "",
        *(
            f"- {key}: {c['value']:.4f} (needed {c['needed']:.4f})"
            for key, c in decision.checks.items()
        ),
        "",
        "## Intended use",
        "",
        "Answering the kinds of checkable problems it was trained and evaluated on (the tasks "
        "above), with its reasoning shown, behind an OpenAI-compatible vLLM server "
        "(`--reasoning-parser deepseek_r1` returns the reasoning and the answer separately).",
        "",
        "## Limits",
        "",
        "- Measured only on the eval sets above; accuracy elsewhere is unknown.",
        "- Rule rewards check final answers, not the reasoning: a correct answer may follow "
        "flawed reasoning.",
        "- Reasoning can be long; budget `max_tokens` accordingly. Not for safety-critical use "
        "without a human check.",
        "",
    ]
    return "\n".join(lines)
