"""Asynchronous GRPO: a rollout worker on its own GPU samples the next batches while the
trainer updates on the current one (`grpo.placement`).

The protocol over a `RolloutChannel`, with S = `max_staleness`:
- the trainer sends a start message (first step, prompt-stream position, the policy's
  parameter names and shapes) and pushes its weights (version = updates made so far);
- the worker samples batch b once it holds a policy of version at least b - S, taking
  versions in order as the trainer pushes them, and sends each batch with its version;
- after each update the trainer sends a control message (a new version follows, or stop)
  and then the weights.

With S = 0 the worker waits for every update: the trainer trains on exactly what the
synchronous loop would (same prompts, same seeds, same policy). With S > 0 a batch is
sampled by a policy up to S updates old; truncated importance sampling weights it against
the behaviour policy's log-probs, and each step logs its staleness and mismatch KL. A
resumed run restarts the worker from the checkpointed policy and stream position: the
batches that were in flight are sampled again, from that policy.
"""

from __future__ import annotations

from typing import Any

from r1forge.config import GRPOConfig
from r1forge.data.schema import PromptItem
from r1forge.errors import ConfigError
from r1forge.rollout import RolloutEngine
from r1forge.train.channel import TRAINER, WORKER, RolloutChannel
from r1forge.train.rl import PromptStream, StepBatch, rollout_logprobs, sample_batch


def parameter_manifest(model: Any) -> list[tuple[str, tuple[int, ...], str]]:
    return [(name, tuple(p.shape), str(p.dtype)) for name, p in model.named_parameters()]


def policy_tensors(model: Any) -> list[Any]:
    """The tensors a weight push carries, in the order both sides agree on."""
    from r1forge.zero import is_partitioned

    if is_partitioned(model):
        raise ConfigError("placement needs the whole policy on the trainer's GPU (zero_stage < 3)")
    return [p.data for _, p in model.named_parameters()]


class RemoteRollouts:
    """The trainer's side: batches come from the rollout worker, weights go back to it."""

    def __init__(self, channel: RolloutChannel, cfg: GRPOConfig, process: Any = None):
        if cfg.placement is None:
            raise ConfigError("RemoteRollouts needs grpo.placement")
        self.channel, self.cfg, self.draws = channel, cfg, 0
        self.process = process  # the worker's process, when this one started it

    def start(self, step: int, draws: int, policy: Any) -> None:
        self.draws = draws
        self.channel.send(
            {
                "step": step,
                "draws": draws,
                "max_steps": self.cfg.max_steps,
                "parameters": parameter_manifest(policy),
            },
            WORKER,
        )
        self.channel.push_weights(policy_tensors(policy), step)

    def next_batch(self, step: int) -> tuple[StepBatch, int]:
        message = self.channel.recv(WORKER, f"the rollout worker's batch for step {step}")
        if message["step"] != step:
            raise RuntimeError(f"rollout worker sent step {message['step']}, expected {step}")
        self.draws = message["draws"]
        return message["batch"], message["version"]

    def publish(self, policy: Any, version: int, last: bool) -> None:
        self.channel.send({"stop": True} if last else {"version": version}, WORKER)
        if not last:
            self.channel.push_weights(policy_tensors(policy), version)


def serve_rollouts(
    channel: RolloutChannel,
    model: Any,
    engine: RolloutEngine,
    prompts: list[PromptItem],
    cfg: GRPOConfig,
) -> int:
    """The rollout worker's loop: batches for the trainer until it says stop; returns the
    number of batches sent. `engine` samples with `model`, whose weights the trainer's
    pushes overwrite in place."""
    if cfg.placement is None:
        raise ConfigError("serve_rollouts needs grpo.placement")
    staleness = cfg.placement.max_staleness
    hello = channel.recv(TRAINER, "the trainer's start message")
    if hello["parameters"] != parameter_manifest(model):
        raise ConfigError(
            "the rollout worker's model is not the trainer's policy (parameters differ)"
        )
    tensors = policy_tensors(model)
    version = hello["step"]
    channel.push_weights(tensors, version)
    engine.sync_weights(model)
    stream = PromptStream(len(prompts), cfg.prompts_per_step, cfg.seed, cfg.prompt_order, 0, 1)
    stream.draws = hello["draws"]
    sent = 0
    for step in range(hello["step"], hello["max_steps"]):
        while version < step - staleness:
            control = channel.recv(TRAINER, f"the trainer's policy version {version + 1}")
            if control.get("stop"):
                return sent
            version = control["version"]
            channel.push_weights(tensors, version)
            engine.sync_weights(model)
        batch = sample_batch(
            engine, prompts, stream, cfg, step, 0, rollout_logprobs(cfg), cfg.prompts_per_step
        )
        channel.send(
            {"step": step, "version": version, "draws": stream.draws, "batch": batch}, TRAINER
        )
        sent += 1
    while not (control := channel.recv(TRAINER, "the trainer's stop")).get("stop"):
        version = control["version"]  # a version no batch needs: taken, then dropped
        channel.push_weights(tensors, version)
    channel.flush()
    return sent
