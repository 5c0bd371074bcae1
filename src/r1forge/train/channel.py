"""The link between a GRPO trainer and its rollout worker when they run on different GPUs.

Two process groups of their own over one TCP store, outside DeepSpeed's world (so the
trainer's DeepSpeed engine never waits on the worker): `weights` (NCCL between GPUs, gloo on
CPU) carries the policy from the trainer to the worker after every update, flattened into
one buffer per dtype and copied into the worker's parameters in place; `objects` (gloo)
carries pickled batches the other way. Every wait has a deadline: a transfer that stalls
fails with a `TransferError` that says what was waited for, from whom, and for how long.
"""

from __future__ import annotations

import datetime
import pickle
import time
from collections.abc import Callable
from typing import Any

from r1forge.errors import R1ForgeError

TRAINER, WORKER = 0, 1
_BATCH_TAG = 7


class TransferError(R1ForgeError):
    """A weight push or a batch did not arrive within the channel's timeout."""


def _wait(
    start: Callable[[], Any], what: str, timeout_s: float, peer_gone: Callable[[], str | None]
) -> None:
    """Start an operation and wait for it at most `timeout_s`, else raise `TransferError`.
    Gloo's wait takes the deadline itself (a peer that died closes its socket, which fails
    the operation at once); NCCL's wait only orders streams, so its work is polled, with the
    peer process's liveness checked too."""
    try:
        work = start()
        if not _is_nccl(work):
            work.wait(datetime.timedelta(seconds=timeout_s))
            return
        deadline = time.monotonic() + timeout_s
        while not work.is_completed():
            if time.monotonic() > deadline:
                raise TransferError(f"{what} stalled: not complete after {timeout_s:g} s")
            gone = peer_gone()
            if gone:
                raise TransferError(f"{what} failed: {gone}")
            time.sleep(0.0005)
        work.wait()
    except RuntimeError as error:
        if "timed out" in str(error).lower():
            raise TransferError(f"{what} stalled: not complete after {timeout_s:g} s") from error
        reason = peer_gone() or str(error).strip().splitlines()[-1]
        raise TransferError(f"{what} failed: {reason}") from error


def _is_nccl(work: Any) -> bool:
    return "nccl" in type(work).__name__.lower()


class RolloutChannel:
    """Rank 0 is the trainer, rank 1 the rollout worker; `connect` blocks until both joined."""

    def __init__(self, weights: Any, objects: Any, rank: int, timeout_s: float):
        self.weights, self.objects, self.rank, self.timeout_s = weights, objects, rank, timeout_s
        self._sending: list[Any] = []  # a batch in flight and its buffers, kept alive
        self.peer_gone: Callable[[], str | None] = lambda: None  # why the peer cannot answer

    @classmethod
    def connect(
        cls, host: str, port: int, rank: int, device: Any, timeout_s: float
    ) -> RolloutChannel:
        from torch.distributed import PrefixStore, ProcessGroupGloo, TCPStore

        timeout = datetime.timedelta(seconds=timeout_s)
        try:
            store = TCPStore(host, port, 2, rank == TRAINER, timeout=timeout)
        except RuntimeError as error:
            peer = "rollout worker" if rank == TRAINER else "trainer"
            raise TransferError(
                f"the {peer} did not join {host}:{port} within {timeout_s:g} s: {error}"
            ) from error
        objects = ProcessGroupGloo(PrefixStore("objects", store), rank, 2, timeout)
        if getattr(device, "type", "cpu") == "cuda":
            from torch.distributed import ProcessGroupNCCL

            weights = ProcessGroupNCCL(PrefixStore("weights", store), rank, 2)
        else:
            weights = ProcessGroupGloo(PrefixStore("weights", store), rank, 2, timeout)
        return cls(weights, objects, rank, timeout_s)

    # -- weights: trainer -> worker ------------------------------------------------------

    def push_weights(self, tensors: list[Any], version: int) -> None:
        """Send (trainer) or receive in place (worker) `tensors`, the policy's parameters in
        one agreed order; one broadcast per dtype."""
        import torch
        from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

        by_dtype: dict[Any, list[Any]] = {}
        for tensor in tensors:
            by_dtype.setdefault(tensor.dtype, []).append(tensor)
        for dtype, group in by_dtype.items():
            with torch.no_grad():
                if self.rank == TRAINER:
                    flat = _flatten_dense_tensors([t.detach() for t in group])
                else:
                    flat = torch.empty(
                        sum(t.numel() for t in group), dtype=dtype, device=group[0].device
                    )
                what = (
                    f"weight push of policy version {version} ({flat.numel() * flat.element_size()} "
                    f"bytes of {dtype}) from the trainer to the rollout worker"
                )
                _wait(
                    lambda flat=flat: self.weights.broadcast(flat, TRAINER),
                    what,
                    self.timeout_s,
                    self.peer_gone,
                )
                if self.rank != TRAINER:
                    for target, value in zip(
                        group, _unflatten_dense_tensors(flat, group), strict=True
                    ):
                        target.copy_(value)

    # -- objects: worker -> trainer (and the trainer's start message the other way) --------

    def send(self, value: Any, peer: int) -> None:
        """Queue `value` (pickled) to `peer` without waiting for it to be received; the
        previous send is finished first, so at most one is in flight."""
        import torch

        self.flush()
        data = torch.frombuffer(bytearray(pickle.dumps(value)), dtype=torch.uint8)
        size = torch.tensor([data.numel()], dtype=torch.int64)
        try:
            works = [
                self.objects.send([size], peer, _BATCH_TAG),
                self.objects.send([data], peer, _BATCH_TAG),
            ]
        except RuntimeError as error:
            reason = self.peer_gone() or str(error).strip().splitlines()[-1]
            raise TransferError(f"a message to rank {peer} failed: {reason}") from error
        self._sending = [works, size, data, peer]

    def flush(self) -> None:
        if self._sending:
            works, *_, peer = self._sending
            for work in works:
                _wait(lambda w=work: w, f"a message to rank {peer}", self.timeout_s, self.peer_gone)
            self._sending = []

    def recv(self, peer: int, what: str) -> Any:
        import torch

        size = torch.zeros(1, dtype=torch.int64)
        _wait(
            lambda: self.objects.recv([size], peer, _BATCH_TAG),
            what,
            self.timeout_s,
            self.peer_gone,
        )
        data = torch.empty(int(size.item()), dtype=torch.uint8)
        _wait(
            lambda: self.objects.recv([data], peer, _BATCH_TAG),
            what,
            self.timeout_s,
            self.peer_gone,
        )
        return pickle.loads(data.numpy().tobytes())
