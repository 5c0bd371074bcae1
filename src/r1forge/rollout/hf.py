"""The transformers rollout engine: batched sampling with the policy module itself.

It samples with the very module being trained (no copy, nothing to sync; under ZeRO-3 a
dense replica refreshed after each update), in left-padded batches of up to `max_batch`
sequences, and returns each sampled token's log-probability under the sampling
distribution (temperature applied).
"""

from __future__ import annotations

from typing import Any

from r1forge.rollout import (
    Completion,
    Sampling,
    cut_at_eos,
    refuse_lengths,
    register_engine,
    sampling_module,
)


@register_engine("transformers")
class TransformersEngine:
    """Samples with `torch.manual_seed(sampling.seed)`: `prompt_seeds` are not honoured."""

    def __init__(self, model: Any, tokenizer: Any, max_batch: int = 256):
        self.model, self.tokenizer, self.max_batch = sampling_module(model), tokenizer, max_batch

    def sync_weights(self, model: Any) -> None:
        # the policy itself (already current), or under ZeRO-3 its refreshed dense replica
        self.model = sampling_module(model, self.model)

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[Completion]:
        import torch

        refuse_lengths(sampling, "transformers")
        expanded = [(i, ids) for i, ids in enumerate(prompts) for _ in range(n)]
        torch.manual_seed(sampling.seed)
        out: list[Completion] = []
        was_training = self.model.training
        self.model.eval()
        try:
            for start in range(0, len(expanded), self.max_batch):
                out += self._batch(expanded[start : start + self.max_batch], sampling)
        finally:
            self.model.train(was_training)
        return out

    def _batch(self, items: list[tuple[int, list[int]]], sampling: Sampling) -> list[Completion]:
        import torch

        device = next(self.model.parameters()).device
        pad, eos = self.tokenizer.pad_token_id, self.tokenizer.eos_token_id
        eos = None if sampling.ignore_eos else eos
        width = max(len(ids) for _, ids in items)
        input_ids = torch.full((len(items), width), pad, dtype=torch.long)
        attention = torch.zeros((len(items), width), dtype=torch.long)
        for row, (_, ids) in enumerate(items):
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
        greedy = sampling.temperature <= 0
        with torch.no_grad():
            result = self.model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention.to(device),
                max_new_tokens=sampling.max_new_tokens,
                do_sample=not greedy,
                temperature=None if greedy else sampling.temperature,
                top_p=None if greedy else sampling.top_p,
                top_k=None,
                pad_token_id=pad,
                eos_token_id=self.tokenizer.eos_token_id,
                min_new_tokens=sampling.max_new_tokens if sampling.ignore_eos else None,
                return_dict_in_generate=True,
                output_logits=sampling.logprobs,
            )
        new = result.sequences[:, width:].cpu()
        logprobs = None
        if sampling.logprobs:
            logits = torch.stack(result.logits, dim=1).float()
            if not greedy:
                logits = logits / sampling.temperature
            logprobs = torch.log_softmax(logits, dim=-1).gather(
                -1, new[:, : logits.shape[1], None].to(logits.device)
            )
            logprobs = logprobs.squeeze(-1).cpu()
        return [
            cut_at_eos(
                prompt_index,
                new[row].tolist(),
                logprobs[row].tolist() if logprobs is not None else None,
                eos,
                self.tokenizer,
            )
            for row, (prompt_index, _) in enumerate(items)
        ]
