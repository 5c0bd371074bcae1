"""One GRPO update, term by term: r1forge's update phase against TRL's GRPOTrainer loss.

From one checkpoint and one batch sampled by r1forge's rollout engine (the recipe's), this
compares what the two trainers compute on exactly the same completions and advantages:
- the rollouts: the engine's own per-token log-probs against the trainer's (the mismatch a
  TIS correction is for), as the mean k3 KL and the largest difference;
- the log-probs: r1forge's `completion_logprobs` against TRL's per-token log-probs;
- the normaliser and the loss of each loss type;
- the gradient itself: cosine similarity and norm ratio of the two flattened gradients.

r1forge's side runs `r1forge.train.rl.update_phase` itself, over a stand-in for the
DeepSpeed engine that accumulates gradients as DeepSpeed does (the loss divided by the
accumulation steps) and never steps. TRL's side calls `GRPOTrainer.compute_loss` on each
micro-batch of its gradient-accumulation window, as its training step does.

    python benchmarks/rl_parity.py --recipe recipes/quality-h200.yaml --model SFT_DIR \\
        --data DATA_DIR --out parity.json
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


class GradientOnly:
    """Stands in for the DeepSpeed engine: forward, backward scaled by the accumulation
    steps (as DeepSpeed's scale_wrt_gas does), no optimizer step."""

    def __init__(self, module: Any, accumulation: int):
        self.module, self.accumulation = module, accumulation

    def __call__(self, *args: Any) -> Any:
        return self.module(*args)

    def backward(self, loss: Any) -> None:
        (loss / self.accumulation).backward()

    def step(self) -> None:
        pass


def flat_grad(model: Any) -> Any:
    import torch

    return torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--recipe", type=Path, default=ROOT / "recipes/quality-h200.yaml")
    parser.add_argument("--stage", default="grpo_reasoning")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--prompts", type=int, default=None, help="default: prompts_per_step")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from r1forge.config import load_recipe
    from r1forge.rollout import make_engine
    from r1forge.stages.common import dataset_path, load_prompts
    from r1forge.stages.grpo import load_policy
    from r1forge.train.engine import Dist
    from r1forge.train.grpo import group_advantages
    from r1forge.train.rl import (
        StepBatch,
        completion_logprobs,
        policy_module,
        rollout_phase,
        score_phase,
        update_phase,
    )

    sys_path = str(ROOT / "benchmarks")
    import sys

    sys.path.insert(0, sys_path)
    from rl_quality import reward_functions, trl_config_kwargs

    recipe = load_recipe(args.recipe, args.set)
    cfg = getattr(recipe, args.stage)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model, tokenizer = load_policy(args.model, cfg, bf16=cfg.precision == "bf16")
    model.to(device)
    prompts = []
    for name in cfg.prompts:
        prompts += load_prompts(dataset_path(args.data, name), tokenizer)
    n = args.prompts or cfg.prompts_per_step
    chosen = list(range(n))
    engine = make_engine(cfg.rollout_engine, model=model, tokenizer=tokenizer)
    completions = rollout_phase(engine, prompts, chosen, cfg, 0, 0, 0, logprobs=True)
    rollouts = score_phase([prompts[i] for i in chosen], completions, cfg)
    batch = StepBatch(rollouts, n, rollouts, 1, 0.0, 0.0)
    advantages = group_advantages(
        torch.tensor(rollouts.totals), cfg.group_size, cfg.advantage_scale
    )
    rows = n * cfg.group_size
    micro = min(cfg.micro_batch_size, rows)
    report: dict[str, Any] = {
        "model": str(args.model),
        "completions": rows,
        "rollout_engine": cfg.rollout_engine,
        "reward_mean": sum(rollouts.totals) / rows,
        "zero_std_groups": sum(
            1
            for g in range(n)
            if len(set(rollouts.totals[g * cfg.group_size : (g + 1) * cfg.group_size])) == 1
        ),
        "loss_types": {},
    }

    # the same completions as TRL's inputs: left-padded prompts, right-padded completions
    pad = tokenizer.pad_token_id
    prompt_width = max(len(prompts[i].ids) for i in chosen)
    width = max(len(c.token_ids) for c in completions)
    prompt_ids = torch.full((rows, prompt_width), pad, dtype=torch.long)
    prompt_mask = torch.zeros_like(prompt_ids)
    completion_ids = torch.full((rows, width), pad, dtype=torch.long)
    completion_mask = torch.zeros((rows, width), dtype=torch.long)
    sampled = torch.zeros((rows, width))
    for r, c in enumerate(completions):
        ids = prompts[chosen[r // cfg.group_size]].ids
        prompt_ids[r, prompt_width - len(ids) :] = torch.tensor(ids)
        prompt_mask[r, prompt_width - len(ids) :] = 1
        completion_ids[r, : len(c.token_ids)] = torch.tensor(c.token_ids)
        completion_mask[r, : len(c.token_ids)] = 1
        sampled[r, : len(c.logprobs)] = torch.tensor(c.logprobs)
    with torch.no_grad():
        ours = completion_logprobs(
            model,
            torch.cat([prompt_ids, completion_ids], 1).to(device),
            torch.cat([prompt_mask, completion_mask], 1).to(device),
            completion_ids.to(device),
            cfg.temperature,
        )[0].cpu()
    mask = completion_mask.float()
    log_ratio = ours - sampled
    report["rollout_vs_trainer"] = {
        "mismatch_kl_k3": float(((log_ratio.exp() - log_ratio - 1) * mask).sum() / mask.sum()),
        "max_abs_logp_diff": float((log_ratio.abs() * mask).max()),
    }

    for loss_type in ("dapo", "grpo", "dr_grpo"):
        run_cfg = cfg.model_copy(update={"loss_type": loss_type, "mu": 1, "beta": 0.0})
        # r1forge: its own update phase
        ours_model = copy.deepcopy(model)
        ours_model.zero_grad(set_to_none=True)
        stand_in = GradientOnly(policy_module(ours_model, cfg.temperature), rows // micro)
        update_phase(
            stand_in,
            batch,
            advantages,
            run_cfg,
            dist=Dist(0, 1, 0, device),
            reference=None,
            pad_id=pad,
            micro=micro,
            entropy_coef=0.0,
        )
        g_ours = flat_grad(ours_model)
        # TRL: compute_loss over its accumulation window
        trl_model = copy.deepcopy(model)
        funcs, weights = reward_functions(run_cfg)
        with tempfile.TemporaryDirectory() as tmp:
            kwargs = trl_config_kwargs(run_cfg, Path(tmp))
            trainer = GRPOTrainer(
                model=trl_model,
                reward_funcs=funcs,
                args=GRPOConfig(**kwargs, reward_weights=weights),
                train_dataset=Dataset.from_dict(
                    {
                        "prompt": ["x"] * cfg.group_size,
                        "answer": [""] * cfg.group_size,
                        "task": [""] * cfg.group_size,
                        "verifier": [""] * cfg.group_size,
                        "meta_json": [""] * cfg.group_size,
                    }
                ),
                processing_class=tokenizer,
            )
            trainer.model.train()
            trainer.model.zero_grad(set_to_none=True)
            # set by Trainer's training loop, which this calls around
            trainer.current_gradient_accumulation_steps = kwargs["gradient_accumulation_steps"]
            tokens = completion_mask.sum()
            trl_losses = []
            for s in range(0, rows, micro):
                inputs = {
                    "prompt_ids": prompt_ids[s : s + micro].to(device),
                    "prompt_mask": prompt_mask[s : s + micro].to(device),
                    "completion_ids": completion_ids[s : s + micro].to(device),
                    "completion_mask": completion_mask[s : s + micro].to(device),
                    "advantages": advantages[s : s + micro].to(device),
                    "num_items_in_batch": tokens.to(device),
                }
                loss = trainer.compute_loss(trainer.model, inputs)
                loss.backward()
                trl_losses.append(float(loss.detach()))
            g_trl = flat_grad(trainer.model)
            with torch.no_grad():
                theirs = trainer._get_per_token_logps_and_entropies(
                    trainer.model,
                    torch.cat([prompt_ids, completion_ids], 1).to(device),
                    torch.cat([prompt_mask, completion_mask], 1).to(device),
                    width,
                )[0]
        cos = float(torch.nn.functional.cosine_similarity(g_ours, g_trl, dim=0))
        report["loss_types"][loss_type] = {
            "grad_cosine": cos,
            "grad_norm_r1forge": float(g_ours.norm()),
            "grad_norm_trl": float(g_trl.norm()),
            "grad_norm_ratio": float(g_ours.norm() / g_trl.norm()) if float(g_trl.norm()) else None,
            "trl_loss_sum": sum(trl_losses),
            "max_abs_logp_diff_r1forge_vs_trl": float(((ours - theirs.cpu()).abs() * mask).max()),
        }
    print(json.dumps(report, indent=2))
    if args.out:
        from r1forge.io import write_json_atomic

        write_json_atomic(args.out, report)


if __name__ == "__main__":
    main()
