"""`r1forge report`: what each finished stage of a recipe measured, from its metrics JSON;
writes `summary.json` (every evaluated checkpoint and student on the held-out sets)."""

from __future__ import annotations

from pathlib import Path


def print_report(metrics: Path) -> None:
    """Print the stage, held-out and checkpoint tables and the promotion decision; write
    `<metrics>/summary.json` when any checkpoint was evaluated."""
    import json

    from rich.console import Console
    from rich.table import Table

    from r1forge.evaluation import SUMMARY_KEYS, summary
    from r1forge.io import write_json_atomic
    from r1forge.stages import EVALUATED, STAGES
    from r1forge.stages.promote import candidate_table, kept_champion

    table = Table(title="r1forge recipe: stage metrics")
    table.add_column("stage")
    table.add_column("metrics")
    held_out = Table(title="held-out pass@1 before and after RL")
    for column in ("stage", "eval set / mode", "before", "after", "gain (points)"):
        held_out.add_column(column)
    for item in STAGES:
        if item.kind == "evaluate":
            continue  # in the checkpoint table below
        path = metrics / f"{item.name}.json"
        if not path.is_file():
            table.add_row(item.name, "[dim]not run[/dim]")
            continue
        values = json.loads(path.read_text(encoding="utf-8")).get(item.name, {})
        before, after = values.pop("eval_before", None), values.pop("eval_after", None)
        shown = ", ".join(  # scalars only: breakdowns live in the stage's own files
            f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
            for k, v in values.items()
            if not isinstance(v, dict | list)
        )
        table.add_row(item.name, shown)
        for key in sorted(before or {}):
            if key in (after or {}):
                gain = 100 * (after[key] - before[key])
                held_out.add_row(
                    item.name,
                    key.removeprefix("eval/"),
                    f"{before[key]:.3f}",
                    f"{after[key]:.3f}",
                    f"{gain:+.1f}",
                )
    console = Console()
    console.print(table)
    if held_out.row_count:
        console.print(held_out)
    reports = {}
    for name in EVALUATED:
        path = metrics / f"eval_{name}.json"
        if path.is_file():
            reports[name] = json.loads(path.read_text(encoding="utf-8"))["evaluate"]
    distilled = metrics / "distill.json"
    if distilled.is_file():
        students = json.loads(distilled.read_text(encoding="utf-8"))["distill"]["students"]
        for name, result in students.items():
            reports[f"distill/{name}"] = result["eval"]
    if reports:
        rows = summary(reports)
        checkpoints = Table(title="checkpoints on the held-out eval sets (k samples, T=0.6)")
        checkpoints.add_column("checkpoint")
        for key in SUMMARY_KEYS:
            checkpoints.add_column(key)
        for row in rows["checkpoints"]:
            checkpoints.add_row(row["name"], *(f"{row[k]:.3f}" for k in SUMMARY_KEYS))
        console.print(checkpoints)
        write_json_atomic(metrics / "summary.json", rows)
        console.print(f"written: {metrics / 'summary.json'}")
    promoted = metrics / "promote.json"
    if promoted.is_file():
        decision = json.loads(promoted.read_text(encoding="utf-8"))["promote"]
        console.print("promotion gate, best pass@1 first:", highlight=False)
        console.print(candidate_table(decision["candidates"]), highlight=False, markup=False)
        if decision["promoted"]:
            console.print(
                f"promoted: {decision['candidate']} (pass@1 {decision['pass@1']:.3f}) is "
                f"{decision['name']} v{decision['version']}, the champion; release: "
                f"{decision['release']['action']}",
                highlight=False,
            )
        else:
            kept = kept_champion(decision)
            console.print(f"promoted: none (no candidate passed the gate; {kept})", highlight=False)
