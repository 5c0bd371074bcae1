"""Math answer equivalence: an exact fast path for plain numbers, math-verify for the rest.

math-verify can hang on adversarial LaTeX, and its own timeout relies on SIGALRM, which only
works on the main thread, while rewards run in trainer threads. So it runs in a persistent
worker subprocess that the parent waits on with a timeout and kills (then restarts) on expiry.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import re
import select
import subprocess
import sys
import threading
import time
from fractions import Fraction
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 5.0
MAX_ANSWER_CHARS = 1000
# Importing sympy on a loaded machine can take seconds; that is not the answer's fault.
_STARTUP_TIMEOUT = 60.0
_WORKER_SCRIPT = Path(__file__).with_name("_mathworker.py")
_PLAIN_NUMBER = re.compile(r"[+-]?(?:\d+/\d+|\d+(?:\.\d*)?|\.\d+)")


def plain_number(text: str) -> Fraction | None:
    """Exact value of an int, decimal or a/b fraction (optional sign), else None."""
    text = text.strip()
    if not _PLAIN_NUMBER.fullmatch(text):
        return None
    try:
        return Fraction(text)
    except ZeroDivisionError:
        return None


class MathWorker:
    """A lazily started math-verify subprocess, one request at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._buffer = b""

    def equal(self, gold: str, pred: str, timeout: float) -> bool:
        """Whether math-verify deems `pred` equal to `gold`; False on timeout or worker failure."""
        request = (json.dumps([gold, pred]) + "\n").encode()
        with self._lock:
            try:
                proc = self._ensure_started()
                assert proc.stdin is not None
                proc.stdin.write(request)
                proc.stdin.flush()
                return self._read_line(time.monotonic() + timeout) == b"1"
            except Exception as exc:
                # Timeout, crash or a broken pipe: the worker's state is unknown, so replace it.
                logger.info("math worker failed (%r); restarting it", exc)
                self._stop()
                return False

    def close(self) -> None:
        """Stop the worker (it would also exit by itself on EOF when we exit)."""
        with self._lock:
            self._stop()

    def _ensure_started(self) -> subprocess.Popen[bytes]:
        if self._proc is not None and self._proc.poll() is None:
            return self._proc
        self._stop()
        self._proc = subprocess.Popen(
            # -P: do not put this directory on sys.path (its modules would shadow others).
            [sys.executable, "-P", str(_WORKER_SCRIPT)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        if self._read_line(time.monotonic() + _STARTUP_TIMEOUT) != b"ready":
            raise RuntimeError("math worker did not start")
        return self._proc

    def _read_line(self, deadline: float) -> bytes:
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
                raise TimeoutError("math worker timed out")
            chunk = os.read(fd, 4096)
            if not chunk:
                raise EOFError("math worker exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def _stop(self) -> None:
        proc, self._proc, self._buffer = self._proc, None, b""
        if proc is None:
            return
        proc.kill()
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                stream.close()


class MathWorkerPool:
    """Up to `size` workers, started as needed, so one slow answer holds one worker and not a
    batch; and the verdict of each (gold, answer) pair remembered, so the same hostile answer
    sampled eight times in a group costs one timeout, not eight."""

    def __init__(self, size: int, remember: int = 4096) -> None:
        self.size = size
        self._remember = remember
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._idle: list[MathWorker] = []
        self._free = threading.Semaphore(self.size)
        self._verdicts: dict[tuple[str, str], bool] = {}

    def equal(self, gold: str, pred: str, timeout: float) -> bool:
        key = (gold, pred)
        with self._lock:
            if key in self._verdicts:
                return self._verdicts[key]
        with self._free:
            with self._lock:
                worker = self._idle.pop() if self._idle else MathWorker()
            try:
                verdict = worker.equal(gold, pred, timeout)
            finally:
                with self._lock:
                    self._idle.append(worker)
        with self._lock:
            if len(self._verdicts) >= self._remember:
                self._verdicts.pop(next(iter(self._verdicts)))
            self._verdicts[key] = verdict
        return verdict

    def workers(self) -> list[MathWorker]:
        with self._lock:
            return list(self._idle)

    def close(self) -> None:
        for worker in self.workers():
            worker.close()

    def _forget_after_fork(self) -> None:
        """In a forked child the workers belong to the parent: drop them without killing them."""
        self._reset()


# Each worker holds sympy (~100 MB) and starts only when an answer is not a plain number.
POOL = MathWorkerPool(size=max(2, min(8, os.cpu_count() or 2)))
atexit.register(POOL.close)
os.register_at_fork(after_in_child=POOL._forget_after_fork)


def math_equal(gold: str, pred: str, timeout: float = DEFAULT_TIMEOUT) -> bool:
    """Whether `pred` (a boxed answer's content) is mathematically equal to `gold`."""
    pred = pred.strip()
    if not pred or len(pred) > MAX_ANSWER_CHARS:
        return False
    gold_value, pred_value = plain_number(gold), plain_number(pred)
    if gold_value is not None and pred_value is not None:
        return gold_value == pred_value
    return POOL.equal(gold.strip(), pred, timeout)
